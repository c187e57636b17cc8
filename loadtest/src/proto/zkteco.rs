//! ZKTeco ADMS ("iclock" push) terminals (`shared/protocols.md` §4.2; the server's
//! `api/zkteco.rs` and `fleetgate_core::zkteco`): plain HTTP polls under `/iclock/`, each naming
//! the terminal by `SN=` in the query. The handshake `GET cdata?options=all` is answered with the
//! option block, an `ATTLOG` upload (`POST cdata?table=ATTLOG`, one tab-separated punch a line)
//! with `OK: <n>` once stored, and the poll `GET getrequest` with `OK` when no command waits. One
//! request at a time per connection, as a terminal does; the connection is kept alive.
//!
//! Serials are the harness's own (letters and digits), so they go into queries unescaped.

use super::{Inbound, Pending};

/// What an upload's body is.
pub const CONTENT_TYPE: &str = "text/plain";

/// The handshake: the terminal asks for its options.
pub fn handshake(serial: &str) -> String {
    format!("/iclock/cdata?SN={serial}&options=all&pushver=2.4.1")
}

/// Where an `ATTLOG` upload goes; `stamp` is its correlation id (the server keeps the last stored
/// one as the terminal's `ATTLOGStamp`, and ids only grow).
pub fn upload(serial: &str, stamp: u64) -> String {
    format!("/iclock/cdata?SN={serial}&table=ATTLOG&Stamp={stamp}")
}

/// The poll for commands, the terminal's heartbeat.
pub fn getrequest(serial: &str) -> String {
    format!("/iclock/getrequest?SN={serial}")
}

/// An `ATTLOG` body with `k` punches from the device's record `first` on, one line each:
/// `PIN\ttime\tstatus\tverify\tworkcode\treserved` with status 0 (check-in), verify 1
/// (fingerprint), no work code, CRLF line ends as terminals send them.
pub fn attlog(first: u64, k: u32) -> String {
    let mut s = String::with_capacity(k as usize * 36);
    for n in first..first + u64::from(k) {
        let (user, secs) = super::record(n);
        s.push_str(&format!(
            "{user}\t{}\t0\t1\t0\t0\r\n",
            super::plain_time(secs)
        ));
    }
    s
}

/// Classifies the answer to the request in flight.
pub fn parse(pending: Pending, status: u16, body: &[u8]) -> Inbound {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_end();
    // Refusals are one `ERROR: …` line; more would only bloat the error samples.
    let why = || {
        format!(
            "HTTP {status}: {}",
            text.chars().take(120).collect::<String>()
        )
    };
    let ok = status == 200;
    match pending {
        Pending::Register if ok && text.starts_with("GET OPTION FROM:") => Inbound::Registered,
        Pending::Register => Inbound::Refused(format!("handshake refused: {}", why())),
        Pending::Data(id) if ok && stored_count(text).is_some() => Inbound::Ack(id),
        Pending::Data(id) => Inbound::Nack(id, why()),
        Pending::Heartbeat if ok && text == "OK" => Inbound::Pong,
        // Commands queued by someone else (the harness sends none to these terminals): answered
        // by nobody here, and nothing the harness measures.
        Pending::Heartbeat if ok && text.starts_with("C:") => Inbound::Other,
        Pending::Heartbeat => Inbound::ServerError(format!("getrequest: {}", why())),
    }
}

/// The `n` of `OK: <n>`, the answer to a stored upload (a bare `OK` is not one).
fn stored_count(text: &str) -> Option<u64> {
    text.strip_prefix("OK:")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_body_is_one_tab_separated_punch_a_line() {
        let body = attlog(4, 3);
        let lines: Vec<&str> = body.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "5\t2026-01-01 00:00:04\t0\t1\t0\t0");
        assert!(
            lines
                .iter()
                .all(|l| l.split('\t').count() == 6 && !l.contains('\n'))
        );
        assert_eq!(body.matches("\r\n").count(), 3);
        assert!(body.ends_with("\r\n"));
        assert_eq!(
            upload("LT1N0", 7),
            "/iclock/cdata?SN=LT1N0&table=ATTLOG&Stamp=7"
        );
    }

    #[test]
    fn answers() {
        let options = b"GET OPTION FROM: LT1N0\r\nATTLOGStamp=None\r\nDelay=10\r\n";
        assert_eq!(parse(Pending::Register, 200, options), Inbound::Registered);
        let unknown = b"ERROR: device LT1N0 is not approved yet\r\n";
        assert!(matches!(
            parse(Pending::Register, 403, unknown),
            Inbound::Refused(t) if t.contains("403") && t.contains("not approved")
        ));
        assert_eq!(parse(Pending::Data(9), 200, b"OK: 3\r\n"), Inbound::Ack(9));
        assert!(matches!(
            parse(Pending::Data(9), 503, b"ERROR: store unavailable\r\n"),
            Inbound::Nack(9, t) if t.contains("store unavailable")
        ));
        assert!(matches!(
            parse(Pending::Data(9), 200, b"OK\r\n"),
            Inbound::Nack(9, _)
        ));
        assert_eq!(parse(Pending::Heartbeat, 200, b"OK\r\n"), Inbound::Pong);
        assert_eq!(
            parse(Pending::Heartbeat, 200, b"C:12:REBOOT\r\n"),
            Inbound::Other
        );
        assert!(matches!(
            parse(Pending::Heartbeat, 403, b"ERROR: no\r\n"),
            Inbound::ServerError(_)
        ));
    }
}
