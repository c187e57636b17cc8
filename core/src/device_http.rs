//! `POST /api/device-http` (and the paths AiFace HTTP firmware posts to), sans-IO: reading and
//! validating a legacy terminal's JSON body (`reg`, `sendlog`, `checklive`, identified by serial
//! number), and the answers: `{"ret":<cmd>,"result":true|false,"cloudtime"|"reason"}`, with
//! `cloudtime` the device's wall-clock time as the firmware sets its clock from it, and a
//! `sendlog` answer that counts and echoes like the WebSocket one. The server
//! (`fleetgate::device_http`) looks the serial up, stores, and answers; everything that needs no
//! server state is here, where it is fuzzed.

use jiff::Timestamp;
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::attendance;
use crate::clock::Clock;
use crate::http::response::Response;
use crate::json;

/// Largest device info record a `reg` may store (its JSON text).
pub const MAX_INFO: usize = 16 * 1024;
/// Longest serial number accepted.
pub const MAX_SERIAL: usize = 64;

/// The commands this endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Reg,
    Sendlog,
    Checklive,
}

impl Cmd {
    pub fn as_str(self) -> &'static str {
        match self {
            Cmd::Reg => "reg",
            Cmd::Sendlog => "sendlog",
            Cmd::Checklive => "checklive",
        }
    }
}

/// A body that names a known command and a serial.
#[derive(Debug)]
pub struct Body {
    pub cmd: Cmd,
    /// Trimmed; 1 to `MAX_SERIAL` bytes. A numeric `sn` is kept as its JSON text.
    pub sn: String,
    /// `devinfo`, when it is an object, as JSON text.
    pub devinfo: Option<String>,
    /// `devinfo.modelname` and `devinfo.firmware`, for the pending list and auto-approval.
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// `logindex` as sent (its JSON text), echoed in the `sendlog` answer.
    pub logindex: Option<String>,
    /// The device's own clock, when it shows it (`checklive` `time`, `reg` `devinfo.time`): its
    /// offset and drift by the clock rule (`crate::clock`).
    pub device_time: Option<jiff::civil::DateTime>,
    /// What the command carries. Its problems are answered only once the serial is known to
    /// belong to an approved device, so they are kept here rather than refused by `parse`.
    pub payload: Payload,
}

#[derive(Debug)]
pub enum Payload {
    /// The device info record to store (`{"cpusn":…,"devinfo":…}`), or why it is refused.
    Reg(Result<String, String>),
    /// The records as sent (not yet normalised: see `attendance::parse_record`), or why the
    /// `sendlog` is refused.
    Sendlog(Result<Vec<OwnedValue>, String>),
    Checklive,
}

/// Why a body was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not this endpoint's language at all: HTTP 400 with an error code.
    BadRequest { code: &'static str, message: String },
    /// Understood but refused: `200 {"ret":…,"result":false,"reason":…}`.
    Refused { ret: String, reason: String },
}

impl Rejection {
    pub fn response(&self) -> Response {
        match self {
            Rejection::BadRequest { code, message } => Response::error(400, code, message),
            Rejection::Refused { ret, reason } => refuse(ret, reason),
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection::BadRequest {
        code,
        message: message.into(),
    }
}

fn refused(ret: &str, reason: impl Into<String>) -> Rejection {
    Rejection::Refused {
        ret: ret.to_string(),
        reason: reason.into(),
    }
}

/// Reads a request's body given its `Content-Type`. Checks, in order: JSON content type, nesting
/// depth, JSON syntax (trailing commas tolerated), an object, a known `cmd`, a serial.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Body, Rejection> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    if !ct.starts_with("application/json") {
        return Err(bad(
            "unsupported_content_type",
            "send the body as Content-Type: application/json",
        ));
    }
    // simd-json parses in place: one copy of the request's body, trimmed where firmware left
    // trailing commas.
    let mut body = body.to_vec();
    let n = crate::lenient::strip_trailing_commas(&mut body);
    body.truncate(n);
    if crate::lenient::too_deep(&body, crate::lenient::MAX_JSON_DEPTH) {
        return Err(bad("invalid_json", "the JSON nests too deep"));
    }
    let v = match simd_json::to_borrowed_value(&mut body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return Err(bad("invalid_json", "the body must be a JSON object")),
        Err(e) => return Err(bad("invalid_json", format!("malformed JSON body: {e}"))),
    };
    let Some(cmd) = v.get("cmd").and_then(|c| c.as_str()) else {
        return Err(bad(
            "invalid_message",
            "`cmd` is required (reg, sendlog or checklive)",
        ));
    };
    let cmd = match cmd {
        "reg" => Cmd::Reg,
        "sendlog" => Cmd::Sendlog,
        "checklive" => Cmd::Checklive,
        _ => {
            return Err(refused(
                cmd,
                format!("unknown cmd {cmd:?}: this endpoint takes reg, sendlog and checklive"),
            ));
        }
    };
    let sn = match v.get("sn") {
        Some(s) if s.is_str() => s.as_str().unwrap_or("").trim().to_string(),
        Some(s) if s.is_u64() || s.is_i64() => json::encode(s),
        _ => String::new(),
    };
    if sn.is_empty() || sn.len() > MAX_SERIAL {
        return Err(refused(
            cmd.as_str(),
            "sn is required: the device's serial number, 1 to 64 characters",
        ));
    }
    let devinfo = v.get("devinfo").filter(|d| d.is_object());
    let payload = match cmd {
        Cmd::Reg => {
            let mut info = String::from("{");
            if let Some(c) = v.get("cpusn") {
                info.push_str("\"cpusn\":");
                info.push_str(&json::encode(c));
            }
            if let Some(d) = devinfo {
                if info.len() > 1 {
                    info.push(',');
                }
                info.push_str("\"devinfo\":");
                info.push_str(&json::encode(d));
            }
            info.push('}');
            Payload::Reg(if info.len() > MAX_INFO {
                Err("devinfo is too large (16 KiB at most)".into())
            } else {
                Ok(info)
            })
        }
        Cmd::Sendlog => Payload::Sendlog(sendlog_records(&v)),
        Cmd::Checklive => Payload::Checklive,
    };
    Ok(Body {
        cmd,
        sn,
        devinfo: devinfo.map(json::encode),
        model: devinfo
            .and_then(|d| json::get_str(d, "modelname"))
            .map(str::to_string),
        firmware: devinfo
            .and_then(|d| json::get_str(d, "firmware"))
            .map(str::to_string),
        logindex: v.get("logindex").map(json::encode),
        device_time: v
            .get("time")
            .or_else(|| devinfo.and_then(|d| d.get("time")))
            .and_then(|t| t.as_str())
            .and_then(crate::attendance::parse_time)
            .map(|(local, _)| local),
        payload,
    })
}

/// What a command that succeeded answers besides `ret` and `result`.
#[derive(Debug, Clone, Copy)]
pub enum Done<'a> {
    /// `reg`: `nosenduser`, as the WebSocket `reg` answer and [AF-HT]'s carry it.
    Reg,
    Checklive,
    /// `sendlog`: `count`, the records in the message, and `logindex` echoed as sent (the JSON
    /// text of `Body::logindex`), as the WebSocket answer carries them (§3.3 [AF-TD]).
    Sendlog {
        count: usize,
        logindex: Option<&'a str>,
    },
}

/// `{"ret":…,"result":true,…,"cloudtime":…}`. `cloudtime` is `now` on the device's wall clock by
/// the clock rule, `YYYY-MM-DD HH:MM:SS`: the firmware sets its clock from it (§3.2 [AF-TD];
/// [AF-HT] answers `DateTime.Now` and reads times as `yyyy-MM-dd HH:mm:ss`), so a UTC instant
/// would set it off by the zone's offset. When the rule knows no zone or offset it is UTC, as the
/// store then reads the device's records (`Clock::wall_or_utc`).
pub fn ok(done: Done<'_>, now: Timestamp, clock: &Clock) -> Response {
    let ret = match done {
        Done::Reg => "reg",
        Done::Checklive => "checklive",
        Done::Sendlog { .. } => "sendlog",
    };
    let mut s = String::from("{\"ret\":\"");
    s.push_str(ret);
    s.push_str("\",\"result\":true");
    if let Done::Sendlog { count, logindex } = done {
        s.push_str(",\"count\":");
        s.push_str(&count.to_string());
        if let Some(i) = logindex {
            s.push_str(",\"logindex\":");
            s.push_str(i);
        }
    }
    s.push_str(",\"cloudtime\":\"");
    s.push_str(
        &clock
            .wall_or_utc(now)
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
    );
    s.push('"');
    if let Done::Reg = done {
        s.push_str(",\"nosenduser\":true");
    }
    s.push('}');
    Response::json(200, s.into_bytes())
}

/// `{"ret":…,"result":false,"reason":…}`.
pub fn refuse(ret: &str, reason: &str) -> Response {
    let mut s = String::from("{\"ret\":");
    json::push_str(&mut s, ret);
    s.push_str(",\"result\":false,\"reason\":");
    json::push_str(&mut s, reason);
    s.push('}');
    Response::json(200, s.into_bytes())
}

/// A `sendlog`'s records: `record` (or `records`), an array, or one punch sent as an object, as
/// firmware that sends one at a time does.
fn sendlog_records(v: &simd_json::BorrowedValue<'_>) -> Result<Vec<OwnedValue>, String> {
    let r = v.get("record").or_else(|| v.get("records"));
    if let Some(list) = r.and_then(|r| r.as_array()) {
        if list.len() > attendance::MAX_RECORDS {
            return Err(format!(
                "at most {} records per sendlog",
                attendance::MAX_RECORDS
            ));
        }
        return Ok(list.iter().map(|r| r.clone().into()).collect());
    }
    match r {
        Some(one) if one.is_object() => Ok(vec![one.clone().into()]),
        _ => Err("record is required: an array of attendance records".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;
    use jiff::tz::offset;

    fn body(text: &str) -> Body {
        match parse(Some("application/json"), text.as_bytes()) {
            Ok(b) => b,
            Err(r) => panic!("{text}: {r:?}"),
        }
    }

    fn now() -> Timestamp {
        "2026-06-12T07:00:00Z".parse().unwrap()
    }

    fn answer(done: Done<'_>, tz: &TimeZone) -> String {
        answer_by(done, &Clock::new(Some(tz.clone())))
    }

    fn answer_by(done: Done<'_>, clock: &Clock) -> String {
        String::from_utf8(ok(done, now(), clock).body).unwrap()
    }

    #[test]
    fn cloudtime_is_the_devices_wall_clock() {
        assert_eq!(
            answer(Done::Checklive, &TimeZone::fixed(offset(9))),
            r#"{"ret":"checklive","result":true,"cloudtime":"2026-06-12 16:00:00"}"#
        );
        assert_eq!(
            answer(Done::Reg, &TimeZone::UTC),
            r#"{"ret":"reg","result":true,"cloudtime":"2026-06-12 07:00:00","nosenduser":true}"#
        );
    }

    /// The clock rule without a zone: the offset the device's own clock shows (a `checklive`'s
    /// `time`, as the connect guide's examples send it), else UTC, never the server's zone.
    #[test]
    fn without_a_zone_cloudtime_keeps_the_devices_offset_or_is_left_out() {
        let b = body(r#"{"cmd":"checklive","sn":"S1","time":"2026-06-12T12:30:05.123456"}"#);
        let mut clock = Clock::new(None);
        let shown = b.device_time.expect("the device's time is read");
        assert_eq!(clock.observe(shown, now()), None);
        assert_eq!(
            answer_by(Done::Checklive, &clock),
            r#"{"ret":"checklive","result":true,"cloudtime":"2026-06-12 12:30:00"}"#
        );
        let b = body(r#"{"cmd":"reg","sn":"S1","devinfo":{"time":"2026-06-12 07:00:00"}}"#);
        assert!(b.device_time.is_some());
        assert_eq!(
            answer_by(Done::Checklive, &Clock::new(None)),
            r#"{"ret":"checklive","result":true,"cloudtime":"2026-06-12 07:00:00"}"#
        );
    }

    #[test]
    fn sendlog_answers_count_and_echo_logindex_as_sent() {
        let tz = TimeZone::fixed(offset(-3));
        for (sent, echoed) in [
            (r#""logindex":10,"#, r#""logindex":10,"#),
            (r#""logindex":"7","#, r#""logindex":"7","#),
            ("", ""),
        ] {
            let b = body(&format!(
                r#"{{"cmd":"sendlog","sn":"S1",{sent}"count":9,"record":[{{"enrollid":1,"time":"t"}},{{"enrollid":2,"time":"t"}}]}}"#
            ));
            let Payload::Sendlog(Ok(records)) = &b.payload else {
                panic!("{b:?}")
            };
            let done = Done::Sendlog {
                count: records.len(),
                logindex: b.logindex.as_deref(),
            };
            assert_eq!(
                answer(done, &tz),
                format!(
                    r#"{{"ret":"sendlog","result":true,"count":2,{echoed}"cloudtime":"2026-06-12 04:00:00"}}"#
                )
            );
        }
    }
}
