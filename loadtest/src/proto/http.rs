//! Terminals that post JSON to `POST /api/device-http` (`shared/protocols.md` §4.1; the server's
//! `device_http.rs`): `reg` once, then `sendlog` and `checklive`, each answered in the response
//! body with `{"ret","result":true|false,…}`. One request at a time per connection, as a device
//! does; the connection is kept alive.

use serde_json::Value;

use super::{Inbound, Pending};

pub const PATH: &str = "/api/device-http";

pub fn reg(serial: &str) -> String {
    format!(
        r#"{{"cmd":"reg","sn":"{serial}","devinfo":{{"modelname":"AiFace","firmware":"ai518_fp26v_v1.27","usersize":3000,"logsize":100000}}}}"#
    )
}

/// The AiFace `sendlog` body (§4.1: the same JSON as over the WebSocket).
pub fn sendlog(serial: &str, logindex: u64, first: u64, k: u32) -> String {
    super::aiface::sendlog(serial, logindex, first, k)
}

pub fn checklive(serial: &str) -> String {
    format!(r#"{{"cmd":"checklive","sn":"{serial}"}}"#)
}

/// Classifies the answer to the request in flight.
pub fn parse(pending: Pending, status: u16, body: &[u8]) -> Inbound {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Inbound::ServerError(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ));
        }
    };
    let result = status == 200 && v.get("result").and_then(Value::as_bool) == Some(true);
    let why = || {
        v.get("reason")
            .or_else(|| v.get("error"))
            .map(|r| r.to_string())
            .unwrap_or_else(|| format!("HTTP {status}"))
    };
    match pending {
        Pending::Register if result => Inbound::Registered,
        Pending::Register => Inbound::Refused(format!("reg refused: {}", why())),
        Pending::Data(id) if result => Inbound::Ack(id),
        Pending::Data(id) => Inbound::Nack(id, why()),
        Pending::Heartbeat if result => Inbound::Pong,
        Pending::Heartbeat => Inbound::ServerError(format!("checklive: {}", why())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ok = br#"{"ret":"sendlog","result":true,"cloudtime":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(parse(Pending::Data(4), 200, ok), Inbound::Ack(4));
        let no = br#"{"ret":"reg","result":false,"reason":"not approved"}"#;
        assert!(matches!(
            parse(Pending::Register, 200, no),
            Inbound::Refused(_)
        ));
        let _: Value = serde_json::from_str(&reg("S")).expect("valid JSON");
    }
}
