//! AiFace-family WEBSOCKET+JSON terminals (`shared/protocols.md` §3): the terminal is the client,
//! opens with `reg`, pushes punches with `sendlog` (acked by `logindex`), and answers the server's
//! requests (`getnewlog` backfill after every registration, operator commands) with `ret`.

use serde_json::Value;

use super::Inbound;

/// `reg` with the `devinfo` of §3.2's example.
pub fn register(serial: &str) -> String {
    format!(
        r#"{{"cmd":"reg","sn":"{serial}","cpusn":"123456789","devinfo":{{"modelname":"tfs30","usersize":3000,"fpsize":3000,"cardsize":3000,"pwdsize":3000,"logsize":100000,"useduser":1000,"usedfp":1000,"usedcard":2000,"usedpwd":400,"usedlog":100000,"usednewlog":5000,"fpalgo":"thbio3.0","firmware":"th600w v6.1","time":"2016-03-25 13:49:30","mac":"00-01-A9-01-00-01"}}}}"#
    )
}

/// `sendlog` with `k` records starting at the device's record `first` (§3.3's shape, without the
/// optional `image`: a photo per punch would measure photo storage, not punches).
pub fn sendlog(serial: &str, logindex: u64, first: u64, k: u32) -> String {
    let mut s = format!(
        r#"{{"cmd":"sendlog","sn":"{serial}","count":{k},"logindex":{logindex},"record":["#
    );
    for i in 0..u64::from(k) {
        let (user, secs) = super::record(first + i);
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"enrollid":{user},"time":"{}","mode":0,"inout":0,"event":0,"temp":36.5,"verifymode":13}}"#,
            super::plain_time(secs)
        ));
    }
    s.push_str("]}");
    s
}

/// An empty log page: the answer to the backfill the server starts after each `reg`
/// (§3.4 `getnewlog`: "none: count 0, from 0, to 0, record []").
fn empty_logs(name: &str) -> String {
    format!(r#"{{"ret":"{name}","result":true,"count":0,"from":0,"to":0,"record":[]}}"#)
}

/// Classifies a server message; requests from the server are answered through `replies`.
pub fn parse(text: &[u8], replies: &mut Vec<String>) -> Inbound {
    let v: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return Inbound::ServerError(format!("invalid JSON from server: {e}")),
    };
    let result = v.get("result").and_then(Value::as_bool).unwrap_or(false);
    let reason = || {
        v.get("reason")
            .map(|r| r.to_string())
            .unwrap_or_else(|| "no reason".into())
    };
    if let Some(ret) = v.get("ret").and_then(Value::as_str) {
        return match ret {
            "reg" if result => Inbound::Registered,
            "reg" => Inbound::Refused(format!("reg refused: {}", reason())),
            "sendlog" => match v.get("logindex").and_then(Value::as_u64) {
                Some(i) if result => Inbound::Ack(i),
                Some(i) => Inbound::Nack(i, reason()),
                None => Inbound::ServerError(format!("sendlog answer without logindex: {v}")),
            },
            "heartbeat" => Inbound::Pong,
            _ => Inbound::Other,
        };
    }
    match v.get("cmd").and_then(Value::as_str) {
        Some(name @ ("getnewlog" | "getalllog")) => replies.push(empty_logs(name)),
        // §3.4: the terminal reboots at once and sends nothing.
        Some("reboot") | None => {}
        Some(name) => replies.push(format!(r#"{{"ret":"{name}","result":true}}"#)),
    }
    Inbound::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_backfill_and_acks() {
        let mut r = Vec::new();
        assert_eq!(
            parse(br#"{"ret":"reg","result":true,"cloudtime":"2026-01-01 00:00:00","nosenduser":true}"#, &mut r),
            Inbound::Registered
        );
        assert_eq!(
            parse(br#"{"cmd":"getnewlog","stn":true}"#, &mut r),
            Inbound::Other
        );
        assert_eq!(r, vec![empty_logs("getnewlog")]);
        assert_eq!(
            parse(br#"{"ret":"sendlog","result":true,"count":2,"logindex":10,"cloudtime":"x","access":1}"#, &mut r),
            Inbound::Ack(10)
        );
        let s: Value = serde_json::from_str(&sendlog("SN", 3, 0, 2)).expect("valid JSON");
        assert_eq!(s["record"].as_array().map(Vec::len), Some(2));
        assert_eq!(s["record"][1]["time"], "2026-01-01 00:00:01");
        let _: Value = serde_json::from_str(&register("SN")).expect("valid JSON");
    }
}
