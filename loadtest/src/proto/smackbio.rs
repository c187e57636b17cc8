//! SmackBio XML terminals (`shared/protocols.md` §2, vendor dialect): `Register` → token →
//! `Login` → events (`TimeLog_v2` acked by `TransID`, `KeepAlive`), and the server's requests
//! (`SetTime` and the `GetFirstGlog` backfill after every login, operator commands) answered with
//! a `Response` of the same name.

use super::Inbound;

/// §2.3 step 1, the vendor-document frame (`CloudId` empty: the harness sets no cloud id).
pub fn register(serial: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Message>\r\n<Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>{serial}</DeviceSerialNo><CloudId></CloudId>\r\n</Message>"
    )
}

/// §2.3 step 3.
pub fn login(serial: &str, token: &str) -> String {
    format!(
        "<Message><Request>Login</Request><DeviceSerialNo>{serial}</DeviceSerialNo><Token>{token}</Token></Message>"
    )
}

/// §2.4's exact `TimeLog_v2` frame with the device's record `n`, `Photo` `No` (no `LogImage`).
pub fn timelog(serial: &str, trans_id: u64, n: u64) -> String {
    let (user, secs) = super::record(n);
    format!(
        "<?xml version=\"1.0\"?>\r\n<Message>\r\n<TerminalType>M82</TerminalType><TerminalID>1</TerminalID><DeviceSerialNo>{serial}</DeviceSerialNo><Event>TimeLog_v2</Event><LogID>{n}</LogID><UtcTimezoneMinutes>0</UtcTimezoneMinutes><Time>{}</Time><UserID>{user}</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><TransID>{trans_id}</TransID>\r\n</Message>",
        super::smackbio_time(secs)
    )
}

/// §2.4's `KeepAlive` frame.
pub fn keepalive(serial: &str) -> String {
    format!(
        "<Message><DeviceSerialNo>{serial}</DeviceSerialNo><Event>KeepAlive</Event><DevTime>2026-08-29-T08:00:00Z</DevTime></Message>"
    )
}

/// The trimmed text of the first `<tag>…</tag>`, as the vendor code reads tags by name anywhere.
pub fn tag<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find("</")?;
    Some(text[start..start + len].trim())
}

fn response(name: &str, result: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Response>{name}</Response>\r\n\t<Result>{result}</Result>\r\n</Message>"
    )
}

/// Classifies a server frame. A `Register` answer stores the token in `token` and queues the
/// `Login`; server requests are answered through `replies`.
pub fn parse(
    text: &[u8],
    serial: &str,
    token: &mut Option<String>,
    replies: &mut Vec<String>,
) -> Inbound {
    let Ok(text) = std::str::from_utf8(text) else {
        return Inbound::ServerError("server frame is not UTF-8".into());
    };
    let ok = tag(text, "Result").is_some_and(|r| r.eq_ignore_ascii_case("OK"));
    if let Some(name) = tag(text, "Response") {
        let result = || tag(text, "Result").unwrap_or("no Result").to_string();
        return match name {
            "Register" => match tag(text, "Token") {
                Some(t) if ok => {
                    replies.push(login(serial, t));
                    *token = Some(t.to_string());
                    Inbound::Other
                }
                _ => Inbound::Refused(format!("Register: {}", result())),
            },
            "Login" if ok => Inbound::Registered,
            "Login" => Inbound::Refused(format!("Login: {}", result())),
            "TimeLog_v2" => match tag(text, "TransID").and_then(|t| t.parse().ok()) {
                Some(id) if ok => Inbound::Ack(id),
                Some(id) => Inbound::Nack(id, result()),
                None => Inbound::ServerError("TimeLog_v2 answer without our TransID".into()),
            },
            "KeepAlive" => Inbound::Pong,
            _ => Inbound::Other,
        };
    }
    match tag(text, "Request") {
        // An empty log store: the vendor PHP sample reads `Fail` as "no more logs".
        Some(name @ ("GetFirstGlog" | "GetNextGlog")) => replies.push(response(name, "Fail")),
        Some("Restart") | None => {}
        Some(name) => replies.push(response(name, "OK")),
    }
    Inbound::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_login_and_acks() {
        let (mut token, mut r) = (None, Vec::new());
        let reg = "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Response>Register</Response>\r\n\t<DeviceSerialNo>S</DeviceSerialNo>\r\n\t<Token>ab-cd</Token>\r\n\t<Result>OK</Result>\r\n</Message>";
        assert_eq!(
            parse(reg.as_bytes(), "S", &mut token, &mut r),
            Inbound::Other
        );
        assert_eq!(token.as_deref(), Some("ab-cd"));
        assert_eq!(r, vec![login("S", "ab-cd")]);
        let ack = "<?xml version=\"1.0\"?><Message><Response>TimeLog_v2</Response><Result>OK</Result><TransID>17</TransID></Message>";
        assert_eq!(
            parse(ack.as_bytes(), "S", &mut token, &mut r),
            Inbound::Ack(17)
        );
        r.clear();
        let req = "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Request>GetFirstGlog</Request>\r\n\t<BeginLogPos>0</BeginLogPos>\r\n</Message>";
        parse(req.as_bytes(), "S", &mut token, &mut r);
        assert!(r[0].contains("<Result>Fail</Result>"));
        assert!(timelog("S", 3, 0).contains("<Time>2026-01-01-T00:00:00Z</Time>"));
    }
}
