//! The generic device protocol on `/ws` (JSON with `"type"`), as a sans-IO codec: a text frame in,
//! a classified message or a protocol error out; and the exact frames the server sends back.
//! `docs/protocol.md` is the reference for what is accepted and answered.

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::json;

/// The largest msg_id kept for de-duplication (bytes of its JSON text).
pub const MAX_MSG_ID: usize = 128;

#[derive(Debug)]
pub enum Inbound<'v> {
    Register {
        device_id: &'v str,
        token: &'v str,
    },
    Subscribe {
        role: &'v str,
        token: Option<&'v str>,
    },
    Telemetry {
        device_id: Option<&'v str>,
        payload: &'v Value<'v>,
        ts: Option<&'v Value<'v>>,
        msg_id: Option<&'v Value<'v>>,
    },
    Event {
        device_id: Option<&'v str>,
        event_type: &'v str,
        payload: Option<&'v Value<'v>>,
        msg_id: Option<&'v Value<'v>>,
    },
    Ping,
    Pong,
    CommandResult {
        command_id: &'v str,
        ok: bool,
        payload: Option<&'v Value<'v>>,
    },
    Command {
        device_id: &'v str,
        command: &'v str,
        payload: Option<&'v Value<'v>>,
        ttl_s: Option<u64>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct ProtoError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> ProtoError {
    ProtoError {
        code,
        message: message.into(),
    }
}

/// Parses a text frame in place (simd-json rewrites the buffer while unescaping; no copy).
pub fn parse(frame: &mut [u8]) -> Result<Value<'_>, ProtoError> {
    if crate::lenient::too_deep(frame, crate::lenient::MAX_JSON_DEPTH) {
        return Err(err(
            "invalid_json",
            format!(
                "JSON nests deeper than {} levels",
                crate::lenient::MAX_JSON_DEPTH
            ),
        ));
    }
    simd_json::to_borrowed_value(frame)
        .map_err(|e| err("invalid_json", format!("malformed JSON: {e}")))
}

fn opt_str<'v>(v: &'v Value<'_>, key: &str) -> Result<Option<&'v str>, ProtoError> {
    match v.get(key) {
        None => Ok(None),
        Some(x) if x.is_null() => Ok(None),
        Some(x) => x
            .as_str()
            .map(Some)
            .ok_or_else(|| err("invalid_message", format!("`{key}` must be a string"))),
    }
}

fn req_str<'v>(v: &'v Value<'_>, key: &str) -> Result<&'v str, ProtoError> {
    opt_str(v, key)?.ok_or_else(|| err("invalid_message", format!("`{key}` is required")))
}

fn msg_id<'v>(v: &'v Value<'v>) -> Result<Option<&'v Value<'v>>, ProtoError> {
    match v.get("msg_id") {
        None => Ok(None),
        Some(m) if m.is_null() => Ok(None),
        Some(m) if m.is_str() || m.is_i64() || m.is_u64() => {
            // The bound is on the JSON text, which is what is stored (in the `msg_ids` key) and
            // echoed. `"`, `\` and control characters are escaped there, so a string's text can
            // be up to six times its length: measuring the string alone let a 126-byte string of
            // backslashes through as 254 bytes of key (found by the `generic` fuzz target).
            // Only strings holding such bytes need encoding to be measured.
            let too_long = |s: &str| {
                s.len() > MAX_MSG_ID - 2
                    || (s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
                        && json::encode(m).len() > MAX_MSG_ID)
            };
            if m.as_str().is_some_and(|s| s.is_empty() || too_long(s)) {
                return Err(err(
                    "invalid_msg_id",
                    format!(
                        "msg_id must be 1 to {} characters, and at most {MAX_MSG_ID} bytes as JSON",
                        MAX_MSG_ID - 2
                    ),
                ));
            }
            Ok(Some(m))
        }
        Some(_) => Err(err(
            "invalid_msg_id",
            "msg_id must be a string or an integer",
        )),
    }
}

/// Classifies a parsed frame. `max_payload` bounds a telemetry/event payload's JSON text
/// (`usize::MAX`: the caller knows the frame is within the limit, so nothing is measured).
pub fn classify<'v>(v: &'v Value<'v>, max_payload: usize) -> Result<Inbound<'v>, ProtoError> {
    if !v.is_object() {
        return Err(err("invalid_message", "a message must be a JSON object"));
    }
    let ty = match v.get("type") {
        Some(t) => t
            .as_str()
            .ok_or_else(|| err("invalid_message", "`type` must be a string"))?,
        None => return Err(err("invalid_message", "`type` is required")),
    };
    let payload_ok = |p: &Value<'_>| -> Result<(), ProtoError> {
        if max_payload == usize::MAX {
            return Ok(());
        }
        let n = json::encode(p).len();
        if n > max_payload {
            return Err(err(
                "payload_too_large",
                format!("payload is {n} bytes; the limit is {max_payload}"),
            ));
        }
        Ok(())
    };
    match ty {
        "register" => Ok(Inbound::Register {
            device_id: req_str(v, "device_id")?,
            token: req_str(v, "token")?,
        }),
        "subscribe" => Ok(Inbound::Subscribe {
            role: req_str(v, "role")?,
            token: opt_str(v, "token")?,
        }),
        "telemetry" => {
            let payload = v
                .get("payload")
                .ok_or_else(|| err("invalid_message", "`payload` is required"))?;
            if !payload.is_object() {
                return Err(err("invalid_message", "`payload` must be a JSON object"));
            }
            payload_ok(payload)?;
            Ok(Inbound::Telemetry {
                device_id: opt_str(v, "device_id")?,
                payload,
                ts: v.get("ts").filter(|t| !t.is_null()),
                msg_id: msg_id(v)?,
            })
        }
        "event" => {
            let payload = v.get("payload").filter(|p| !p.is_null());
            if let Some(p) = payload {
                payload_ok(p)?;
            }
            let event_type = req_str(v, "event_type")?;
            if event_type.is_empty() || event_type.len() > 64 {
                return Err(err(
                    "invalid_message",
                    "`event_type` must be 1 to 64 characters",
                ));
            }
            Ok(Inbound::Event {
                device_id: opt_str(v, "device_id")?,
                event_type,
                payload,
                msg_id: msg_id(v)?,
            })
        }
        "ping" => Ok(Inbound::Ping),
        "pong" => Ok(Inbound::Pong),
        "command_result" => {
            let ok = match req_str(v, "status")? {
                "ok" => true,
                "error" => false,
                other => {
                    return Err(err(
                        "invalid_message",
                        format!("`status` must be \"ok\" or \"error\", not {other:?}"),
                    ));
                }
            };
            let payload = v.get("payload").filter(|p| !p.is_null());
            if let Some(p) = payload {
                payload_ok(p)?;
            }
            Ok(Inbound::CommandResult {
                command_id: req_str(v, "command_id")?,
                ok,
                payload,
            })
        }
        "command" => {
            let ttl_s =
                match v.get("ttl_s") {
                    None => None,
                    Some(t) if t.is_null() => None,
                    Some(t) => Some(t.as_u64().ok_or_else(|| {
                        err("invalid_message", "`ttl_s` must be a positive integer")
                    })?),
                };
            Ok(Inbound::Command {
                device_id: req_str(v, "device_id")?,
                command: req_str(v, "command")?,
                payload: v.get("payload").filter(|p| !p.is_null()),
                ttl_s,
            })
        }
        other => Err(err(
            "unknown_type",
            format!("unknown message type {other:?}"),
        )),
    }
}

pub fn registered(device_id: &str, server_time: &str) -> String {
    format!(
        "{{\"type\":\"registered\",\"device_id\":\"{device_id}\",\"server_time\":\"{server_time}\"}}"
    )
}

pub fn subscribed(server_time: &str) -> String {
    format!("{{\"type\":\"subscribed\",\"role\":\"admin\",\"server_time\":\"{server_time}\"}}")
}

/// Tells a subscribed admin that its permissions changed while it was connected (its user was
/// demoted to viewer, or promoted back): `read_only` subscribers may watch but not send commands.
pub fn role_changed(read_only: bool) -> String {
    let role = if read_only { "viewer" } else { "admin" };
    format!("{{\"type\":\"role_changed\",\"role\":\"{role}\",\"read_only\":{read_only}}}")
}

/// `{"type":"error","code","message"}`, with the frame's msg_id echoed when it had one.
pub fn error(code: &str, message: &str, msg_id: Option<&str>) -> String {
    let mut s = String::with_capacity(48 + message.len());
    s.push_str("{\"type\":\"error\",\"code\":");
    json::push_str(&mut s, code);
    s.push_str(",\"message\":");
    json::push_str(&mut s, message);
    if let Some(m) = msg_id {
        s.push_str(",\"msg_id\":");
        s.push_str(m);
    }
    s.push('}');
    s
}

pub const PONG: &str = "{\"type\":\"pong\"}";

pub fn ack(msg_id_json: &str) -> String {
    format!("{{\"type\":\"ack\",\"msg_id\":{msg_id_json}}}")
}

pub fn command(command_id: &str, command: &str, payload_json: &str) -> String {
    let mut s = String::with_capacity(64 + command.len() + payload_json.len());
    s.push_str("{\"type\":\"command\",\"command_id\":\"");
    s.push_str(command_id);
    s.push_str("\",\"command\":");
    json::push_str(&mut s, command);
    s.push_str(",\"payload\":");
    s.push_str(payload_json);
    s.push('}');
    s
}

pub fn command_queued(command_id: &str, device_id: &str, status: &str) -> String {
    format!(
        "{{\"type\":\"command_queued\",\"command_id\":\"{command_id}\",\"device_id\":\"{device_id}\",\"status\":\"{status}\"}}"
    )
}

/// A command's outcome, for admin subscribers: `status` `acked` or `failed`, `result` the device's
/// answer (JSON text, `null` when none).
pub fn command_result_broadcast(
    device_id: &str,
    command_id: &str,
    command: &str,
    status: &str,
    result_json: Option<&str>,
    ts: &str,
) -> String {
    let result = result_json.unwrap_or("null");
    let mut s = String::with_capacity(160 + command.len() + result.len());
    s.push_str("{\"type\":\"command_result\",\"device_id\":\"");
    s.push_str(device_id);
    s.push_str("\",\"command_id\":\"");
    s.push_str(command_id);
    s.push_str("\",\"command\":");
    json::push_str(&mut s, command);
    s.push_str(",\"status\":\"");
    s.push_str(status);
    s.push_str("\",\"result\":");
    s.push_str(result);
    s.push_str(",\"ts\":\"");
    s.push_str(ts);
    s.push_str("\"}");
    s
}

pub fn device_status(device_id: &str, online: bool, ts: &str) -> String {
    let status = if online { "online" } else { "offline" };
    format!(
        "{{\"type\":\"device_status\",\"device_id\":\"{device_id}\",\"status\":\"{status}\",\"ts\":\"{ts}\"}}"
    )
}

pub fn telemetry_broadcast(device_id: &str, ts: &str, payload_json: &str) -> String {
    format!(
        "{{\"type\":\"telemetry\",\"device_id\":\"{device_id}\",\"ts\":\"{ts}\",\"payload\":{payload_json}}}"
    )
}

pub fn event_broadcast(device_id: &str, event_type: &str, ts: &str, payload_json: &str) -> String {
    let mut s = String::with_capacity(96 + payload_json.len());
    s.push_str("{\"type\":\"event\",\"device_id\":\"");
    s.push_str(device_id);
    s.push_str("\",\"event_type\":");
    json::push_str(&mut s, event_type);
    s.push_str(",\"ts\":\"");
    s.push_str(ts);
    s.push_str("\",\"payload\":");
    s.push_str(payload_json);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<R>(text: &str, f: impl FnOnce(Result<Inbound<'_>, ProtoError>) -> R) -> R {
        let mut buf = text.as_bytes().to_vec();
        let v = parse(&mut buf).expect("test frames are valid JSON");
        f(classify(&v, 1024))
    }

    #[test]
    fn register_needs_device_id_and_token() {
        with(r#"{"type":"register","device_id":"d","token":"t"}"#, |r| {
            assert!(matches!(
                r,
                Ok(Inbound::Register {
                    device_id: "d",
                    token: "t"
                })
            ))
        });
        with(r#"{"type":"register","device_id":"d"}"#, |r| {
            assert_eq!(r.unwrap_err().code, "invalid_message")
        });
    }

    #[test]
    fn telemetry_accepts_the_guide_shape_and_the_reference_shape() {
        with(
            r#"{"type":"telemetry","payload":{"temperature":22.5}}"#,
            |r| {
                assert!(matches!(
                    r,
                    Ok(Inbound::Telemetry {
                        device_id: None,
                        msg_id: None,
                        ..
                    })
                ))
            },
        );
        with(
            r#"{"type":"telemetry","device_id":"x","payload":{},"msg_id":7,"ts":"2026-01-01T00:00:00Z"}"#,
            |r| {
                let Ok(Inbound::Telemetry {
                    device_id,
                    msg_id,
                    ts,
                    ..
                }) = r
                else {
                    panic!("not telemetry")
                };
                assert_eq!(device_id, Some("x"));
                assert_eq!(msg_id.map(json::encode).as_deref(), Some("7"));
                assert!(ts.is_some());
            },
        );
        with(r#"{"type":"telemetry","payload":[1]}"#, |r| {
            assert_eq!(r.unwrap_err().code, "invalid_message")
        });
    }

    #[test]
    fn oversize_payloads_and_bad_msg_ids_are_refused_by_code() {
        let big = format!(
            r#"{{"type":"telemetry","payload":{{"x":"{}"}}}}"#,
            "a".repeat(2000)
        );
        with(&big, |r| {
            assert_eq!(r.unwrap_err().code, "payload_too_large")
        });
        with(
            r#"{"type":"telemetry","payload":{},"msg_id":{"a":1}}"#,
            |r| assert_eq!(r.unwrap_err().code, "invalid_msg_id"),
        );
        with(r#"{"type":"telemetry","payload":{},"msg_id":""}"#, |r| {
            assert_eq!(r.unwrap_err().code, "invalid_msg_id")
        });
        // Measured as the JSON text that is stored: 126 characters pass, unless escaping makes
        // the text longer than 128 bytes.
        let id = |s: &str| format!(r#"{{"type":"telemetry","payload":{{}},"msg_id":"{s}"}}"#);
        with(&id(&"a".repeat(126)), |r| assert!(r.is_ok()));
        with(&id(&"a".repeat(127)), |r| {
            assert_eq!(r.unwrap_err().code, "invalid_msg_id")
        });
        with(&id(&format!("{}\\\\", "a".repeat(124))), |r| {
            assert!(r.is_ok())
        });
        with(&id(&format!("{}\\\\", "a".repeat(125))), |r| {
            assert_eq!(r.unwrap_err().code, "invalid_msg_id")
        });
    }

    #[test]
    fn unknown_and_untyped_frames_have_distinct_codes() {
        with(r#"{"type":"dance"}"#, |r| {
            assert_eq!(r.unwrap_err().code, "unknown_type")
        });
        with(r#"{"cmd":"reg"}"#, |r| {
            assert_eq!(r.unwrap_err().code, "invalid_message")
        });
        with(r#"[1,2]"#, |r| {
            assert_eq!(r.unwrap_err().code, "invalid_message")
        });
        let mut bad = b"{nope".to_vec();
        assert_eq!(parse(&mut bad).unwrap_err().code, "invalid_json");
    }

    #[test]
    fn absurd_nesting_is_refused_before_parsing() {
        let mut deep = vec![b'['; 1 << 20];
        assert_eq!(parse(&mut deep).unwrap_err().code, "invalid_json");
    }

    #[test]
    fn command_result_status_is_ok_or_error() {
        with(
            r#"{"type":"command_result","command_id":"c","status":"ok","payload":{"x":1}}"#,
            |r| {
                assert!(matches!(
                    r,
                    Ok(Inbound::CommandResult {
                        command_id: "c",
                        ok: true,
                        payload: Some(_)
                    })
                ))
            },
        );
        with(
            r#"{"type":"command_result","command_id":"c","status":"maybe"}"#,
            |r| assert_eq!(r.unwrap_err().code, "invalid_message"),
        );
    }

    #[test]
    fn outbound_frames_are_valid_json_with_escaping() {
        for s in [
            error("auth_failed", "bad \"token\"", Some("\"m1\"")),
            command("c1", "un\"lock", "{}"),
            event_broadcast("d", "door\n", "t", "{}"),
            registered("d", "t"),
            ack("5"),
        ] {
            let mut b = s.clone().into_bytes();
            assert!(simd_json::to_owned_value(&mut b).is_ok(), "{s}");
        }
        assert_eq!(ack("\"a\""), r#"{"type":"ack","msg_id":"a"}"#);
    }
}
