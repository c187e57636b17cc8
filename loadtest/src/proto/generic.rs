//! The generic JSON protocol (`docs/protocol.md`, `shared/protocols.md` §1.3).

use serde_json::Value;

use super::Inbound;

/// Fence ids are sent as `"f<k>"` so they never collide with numeric data msg_ids.
const FENCE_PREFIX: char = 'f';

pub fn register(device_id: &str, token: &str) -> String {
    format!(r#"{{"type":"register","device_id":"{device_id}","token":"{token}"}}"#)
}

pub const PING: &str = r#"{"type":"ping"}"#;

/// A telemetry frame with a msg_id: acked only once committed. `pad` sizes the payload.
pub fn telemetry(id: u64, pad: &str) -> String {
    format!(r#"{{"type":"telemetry","msg_id":"{id}","payload":{{"seq":{id},"pad":"{pad}"}}}}"#)
}

/// An attendance punch as a generic `event` with a msg_id (the generic protocol has no punch
/// message of its own; `event` is how a device reports one).
pub fn attendance(id: u64, n: u64) -> String {
    let (user, secs) = super::record(n);
    format!(
        r#"{{"type":"event","event_type":"attendance","msg_id":"{id}","payload":{{"enrollid":{user},"time":"{}"}}}}"#,
        super::plain_time(secs)
    )
}

pub fn command_result(command_id: &str) -> String {
    format!(
        r#"{{"type":"command_result","command_id":"{command_id}","status":"ok","payload":{{}}}}"#
    )
}

/// Sent right after a `command_result`. The server stages both into its shard's batch in arrival
/// order and commits batches in order, and it acks a msg_id only once the batch holding it is on
/// disk: so this ack means the command's result is durable too. The command's own status change
/// is not announced to anyone (no ack, no admin broadcast), so this is the cheapest observable
/// "result recorded" on every command.
pub fn fence(k: u64) -> String {
    format!(r#"{{"type":"telemetry","msg_id":"{FENCE_PREFIX}{k}","payload":{{"fence":{k}}}}}"#)
}

enum Id {
    Data(u64),
    Fence(u64),
}

fn msg_id(v: &Value) -> Option<Id> {
    match v.get("msg_id")? {
        Value::String(s) => match s.strip_prefix(FENCE_PREFIX) {
            Some(k) => k.parse().ok().map(Id::Fence),
            None => s.parse().ok().map(Id::Data),
        },
        n => n.as_u64().map(Id::Data),
    }
}

pub fn parse(text: &[u8]) -> Inbound {
    let v: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return Inbound::ServerError(format!("invalid JSON from server: {e}")),
    };
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "registered" => Inbound::Registered,
        "ack" => match msg_id(&v) {
            Some(Id::Data(id)) => Inbound::Ack(id),
            Some(Id::Fence(k)) => Inbound::FenceAck(k),
            None => Inbound::ServerError(format!("ack without a msg_id of ours: {v}")),
        },
        "pong" => Inbound::Pong,
        "command" => {
            let command_id = v
                .get("command_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let t0_ns = v
                .get("payload")
                .and_then(|p| p.get("t0"))
                .and_then(Value::as_u64);
            Inbound::Command { command_id, t0_ns }
        }
        "error" => {
            let code = v.get("code").and_then(Value::as_str).unwrap_or("?");
            match (code, msg_id(&v)) {
                ("auth_failed" | "not_registered", _) => Inbound::Refused(code.to_string()),
                (_, Some(Id::Data(id))) => Inbound::Nack(id, code.to_string()),
                _ => Inbound::ServerError(format!("server error frame: {code}")),
            }
        }
        _ => Inbound::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_fences_and_commands() {
        assert_eq!(parse(br#"{"type":"ack","msg_id":"42"}"#), Inbound::Ack(42));
        assert_eq!(
            parse(br#"{"type":"ack","msg_id":"f7"}"#),
            Inbound::FenceAck(7)
        );
        assert_eq!(
            parse(br#"{"type":"command","command_id":"c1","command":"lt","payload":{"t0":99}}"#),
            Inbound::Command {
                command_id: "c1".into(),
                t0_ns: Some(99)
            }
        );
        assert_eq!(
            parse(br#"{"type":"error","code":"not_stored","msg_id":"3"}"#),
            Inbound::Nack(3, "not_stored".into())
        );
        let f: Value = serde_json::from_str(&fence(5)).expect("valid JSON");
        assert_eq!(f["msg_id"], "f5");
        let a: Value = serde_json::from_str(&attendance(1, 0)).expect("valid JSON");
        assert_eq!(a["payload"]["time"], "2026-01-01 00:00:00");
    }
}
