//! Record encodings. Telemetry and events are stored as the exact JSON the API returns, so a list
//! request concatenates stored values instead of re-encoding them. Devices and commands, which are
//! read-modify-written, are serde structs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commit::Staging;
use super::{Cf, Store, StoreError, keys};
use crate::json;
use crate::time::rfc3339_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Generic,
    Aiface,
    Smackbio,
    Http,
    /// ZKTeco ADMS ("iclock" push): polls over HTTP, identified by serial.
    Zkteco,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "generic" => Some(Protocol::Generic),
            "aiface" => Some(Protocol::Aiface),
            "smackbio" => Some(Protocol::Smackbio),
            "http" => Some(Protocol::Http),
            "zkteco" => Some(Protocol::Zkteco),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Generic => "generic",
            Protocol::Aiface => "aiface",
            Protocol::Smackbio => "smackbio",
            Protocol::Http => "http",
            Protocol::Zkteco => "zkteco",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: Uuid,
    pub name: String,
    pub protocol: Protocol,
    pub serial: Option<String>,
    /// SHA-256 of the device token, hex. The token itself is never stored.
    pub token_hash: String,
    pub created_at: u64,
    pub last_seen: Option<u64>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// What the device reported about itself (`devinfo`: model, firmware, …), JSON text.
    #[serde(default)]
    pub info: Option<String>,
    /// Where the server's records of each table stop, as a polling terminal (ZKTeco ADMS) last
    /// uploaded them (`ATTLOGStamp` → its `Stamp`): its handshake is told these, so it sends only
    /// what is newer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stamps: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    Queued,
    Sent,
    Acked,
    Failed,
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Queued => "queued",
            CommandStatus::Sent => "sent",
            CommandStatus::Acked => "acked",
            CommandStatus::Failed => "failed",
            CommandStatus::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommandRecord {
    pub command_id: Uuid,
    pub device_id: Uuid,
    pub seq: u64,
    pub command: String,
    /// The payload's JSON text as given.
    pub payload: String,
    pub status: CommandStatus,
    pub created_at: u64,
    pub updated_at: u64,
    pub expires_at: u64,
    /// The device's `command_result` payload, JSON text.
    pub result: Option<String>,
}

impl CommandRecord {
    /// A queued command past its TTL is expired whether or not anyone has rewritten it yet.
    pub fn effective_status(&self, now_ms: u64) -> CommandStatus {
        if self.status == CommandStatus::Queued && now_ms >= self.expires_at {
            CommandStatus::Expired
        } else {
            self.status
        }
    }

    pub fn to_api_json(&self, now_ms: u64) -> String {
        let mut s = String::with_capacity(160 + self.payload.len());
        s.push_str("{\"command_id\":\"");
        s.push_str(&self.command_id.to_string());
        s.push_str("\",\"device_id\":\"");
        s.push_str(&self.device_id.to_string());
        s.push_str("\",\"command\":");
        json::push_str(&mut s, &self.command);
        s.push_str(",\"payload\":");
        s.push_str(&self.payload);
        s.push_str(",\"status\":\"");
        s.push_str(self.effective_status(now_ms).as_str());
        s.push_str("\",\"created_at\":\"");
        s.push_str(&rfc3339_ms(self.created_at));
        s.push_str("\",\"updated_at\":\"");
        s.push_str(&rfc3339_ms(self.updated_at));
        s.push_str("\",\"expires_at\":\"");
        s.push_str(&rfc3339_ms(self.expires_at));
        s.push_str("\",\"result\":");
        s.push_str(self.result.as_deref().unwrap_or("null"));
        s.push('}');
        s
    }
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    simd_json::serde::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    let mut owned = bytes.to_vec();
    simd_json::serde::from_slice(&mut owned).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn stage_device(st: &mut Staging<'_>, d: &DeviceRecord) -> Result<(), StoreError> {
    st.put(Cf::Devices, &keys::device(&d.device_id), &encode(d)?)
}

pub fn stage_command(st: &mut Staging<'_>, c: &CommandRecord) -> Result<(), StoreError> {
    let key = keys::command(&c.device_id, c.seq);
    st.put(Cf::Commands, &key, &encode(c)?)?;
    st.put(Cf::CommandIds, &keys::command_id(&c.command_id), &key)
}

/// Removes a device and everything stored under it except the global event stream, which keeps its
/// history (events name the device id, which stays meaningful in an audit trail).
pub fn stage_device_delete(st: &mut Staging<'_>, id: &Uuid) -> Result<(), StoreError> {
    st.delete(Cf::Devices, &keys::device(id))?;
    let from = keys::telemetry(id, 0);
    let to = keys::telemetry(id, u64::MAX);
    for cf in [Cf::Telemetry, Cf::EventsByDevice, Cf::Commands] {
        st.delete_range(cf, &from, &to)?;
        st.delete(cf, &to)?;
    }
    // The people the device enrolled: keys of 24 bytes (old stores) and 25, all below the last
    // possible entry.
    let last = keys::user_entry(id, u64::MAX, u8::MAX);
    st.delete_range(Cf::Users, &keys::user(id, 0), &last)?;
    st.delete(Cf::Users, &last)?;
    Ok(())
}

/// One telemetry row: `{"ts","msg_id"?,"device_ts"?,"payload"}`, one key. The msg_id (its JSON
/// text) is in the row, right after `ts`, so that the row itself is what de-duplication reads
/// (`fleet::msg_window`): no second key to write, and none to look up for each message.
pub fn stage_telemetry(
    st: &mut Staging<'_>,
    dev: &Uuid,
    id: u64,
    device_ts: Option<&str>,
    payload: &str,
    msg_id: Option<&str>,
) -> Result<(), StoreError> {
    let v = telemetry_row(id, device_ts, payload, msg_id);
    st.put(Cf::Telemetry, &keys::telemetry(dev, id), v.as_bytes())
}

/// A telemetry row's JSON, as stored and listed.
pub fn telemetry_row(
    id: u64,
    device_ts: Option<&str>,
    payload: &str,
    msg_id: Option<&str>,
) -> String {
    let mut v = String::with_capacity(64 + payload.len() + msg_id.map_or(0, str::len));
    v.push_str(TELEMETRY_HEAD);
    v.push_str(&rfc3339_ms(id / 1000));
    v.push('"');
    if let Some(m) = msg_id {
        v.push_str(TELEMETRY_MSG_ID);
        v.push_str(m);
    }
    if let Some(t) = device_ts {
        v.push_str(",\"device_ts\":");
        v.push_str(t);
    }
    v.push_str(",\"payload\":");
    v.push_str(payload);
    v.push('}');
    v
}

const TELEMETRY_HEAD: &str = "{\"ts\":\"";
const TELEMETRY_MSG_ID: &str = ",\"msg_id\":";

/// The msg_id's JSON text in a telemetry row `stage_telemetry` wrote, if it has one. Rows written
/// before msg_ids moved into the row have none.
pub fn telemetry_msg_id(row: &[u8]) -> Option<&[u8]> {
    let rest = row.strip_prefix(TELEMETRY_HEAD.as_bytes())?;
    // The time holds no quote: the first one ends it.
    let end = rest.iter().position(|&b| b == b'"')?;
    let m = rest[end + 1..].strip_prefix(TELEMETRY_MSG_ID.as_bytes())?;
    let len = match m.first()? {
        b'"' => {
            // A JSON string: up to the first quote not escaped by an odd run of backslashes.
            let mut i = 1;
            loop {
                match *m.get(i)? {
                    b'\\' => i += 2,
                    b'"' => break i + 1,
                    _ => i += 1,
                }
            }
        }
        // An integer: up to the next field.
        _ => m.iter().position(|&b| b == b',' || b == b'}')?,
    };
    m.get(..len)
}

/// The msg_id's JSON text in an `events_by_device` entry (its value; empty when the event had none).
pub fn event_msg_id(entry: &[u8]) -> Option<&[u8]> {
    (!entry.is_empty()).then_some(entry)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Server,
    Device,
}

/// One event row: `{"id","ts","device_id","type","source","payload"}` plus its per-device index entry.
#[allow(clippy::too_many_arguments)]
pub fn stage_event(
    st: &mut Staging<'_>,
    id: u64,
    dev: Option<&Uuid>,
    kind: &str,
    source: Source,
    payload: &str,
    msg_id: Option<&str>,
) -> Result<(), StoreError> {
    let v = event_json(id, dev, kind, source, payload);
    st.put(Cf::Events, &keys::event(id), v.as_bytes())?;
    if let Some(d) = dev {
        // The index entry carries the msg_id, for de-duplication (`fleet::msg_window`).
        let m = msg_id.map_or(&b""[..], str::as_bytes);
        st.put(Cf::EventsByDevice, &keys::event_by_device(d, id), m)?;
    }
    Ok(())
}

pub fn event_json(
    id: u64,
    dev: Option<&Uuid>,
    kind: &str,
    source: Source,
    payload: &str,
) -> String {
    let mut v = String::with_capacity(128 + payload.len());
    v.push_str("{\"id\":");
    v.push_str(&id.to_string());
    v.push_str(",\"ts\":\"");
    v.push_str(&rfc3339_ms(id / 1000));
    v.push_str("\",\"device_id\":");
    match dev {
        Some(d) => {
            v.push('"');
            v.push_str(&d.to_string());
            v.push('"');
        }
        None => v.push_str("null"),
    }
    v.push_str(",\"type\":");
    json::push_str(&mut v, kind);
    v.push_str(",\"source\":\"");
    v.push_str(match source {
        Source::Server => "server",
        Source::Device => "device",
    });
    v.push_str("\",\"payload\":");
    v.push_str(payload);
    v.push('}');
    v
}

pub fn load_devices(store: &Store) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut out = Vec::new();
    store.scan_forward(Cf::Devices, &[], None, usize::MAX, |_, v| {
        out.push(decode(v)?);
        Ok(true)
    })?;
    Ok(out)
}

pub fn load_commands(store: &Store, dev: &Uuid) -> Result<Vec<CommandRecord>, StoreError> {
    let mut out = Vec::new();
    store.scan_forward(
        Cf::Commands,
        &keys::device(dev),
        None,
        usize::MAX,
        |_, v| {
            out.push(decode(v)?);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Commands of `dev` with a sequence number above `after`, oldest first, at most `limit`.
pub fn commands_after(
    store: &Store,
    dev: &Uuid,
    after: u64,
    limit: usize,
) -> Result<Vec<CommandRecord>, StoreError> {
    let mut out = Vec::new();
    let from = keys::command(dev, after);
    store.scan_forward(
        Cf::Commands,
        &keys::device(dev),
        Some(&from),
        limit,
        |_, v| {
            out.push(decode(v)?);
            Ok(true)
        },
    )?;
    Ok(out)
}

pub fn get_command(store: &Store, command_id: &Uuid) -> Result<Option<CommandRecord>, StoreError> {
    let Some(key) = store.get(Cf::CommandIds, &keys::command_id(command_id))? else {
        return Ok(None);
    };
    match store.get(Cf::Commands, &key)? {
        Some(v) => Ok(Some(decode(&v)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_telemetry_rows_msg_id_is_read_back_as_written() {
        let ids = [
            r#""a""#,
            "7",
            "-12",
            r#""with \"quotes\" and \\""#,
            r#""\\""#,
            r#""comma, and } brace""#,
        ];
        for m in ids {
            for ts in [None, Some(r#""2026-01-01T00:00:00Z""#)] {
                let row =
                    telemetry_row(1_781_258_400_123_000, ts, r#"{"msg_id":"inner"}"#, Some(m));
                let mut bytes = row.clone().into_bytes();
                assert!(simd_json::to_borrowed_value(&mut bytes).is_ok(), "{row}");
                assert_eq!(
                    telemetry_msg_id(row.as_bytes()),
                    Some(m.as_bytes()),
                    "{row}"
                );
            }
        }
        // Rows without one, and rows written before msg_ids were kept in the row.
        let row = telemetry_row(1, None, r#"{"msg_id":"inner"}"#, None);
        assert_eq!(telemetry_msg_id(row.as_bytes()), None);
        let old = br#"{"ts":"2026-01-01T00:00:00.000Z","payload":{"msg_id":"x"}}"#;
        assert_eq!(telemetry_msg_id(old), None);
        assert_eq!(
            telemetry_msg_id(br#"{"ts":"x","msg_id":"unterminated"#),
            None
        );
        assert_eq!(event_msg_id(b""), None);
        assert_eq!(event_msg_id(b"7"), Some(&b"7"[..]));
    }

    #[test]
    fn event_json_is_valid_and_escaped() {
        let d = Uuid::from_u128(7);
        let mut s = event_json(
            1_781_258_400_123_000,
            Some(&d),
            "door \"x\"",
            Source::Device,
            "{}",
        )
        .into_bytes();
        let v = simd_json::to_owned_value(&mut s).unwrap();
        use simd_json::prelude::*;
        assert_eq!(v.get("type").and_then(|t| t.as_str()), Some("door \"x\""));
        assert_eq!(
            v.get("ts").and_then(|t| t.as_str()),
            Some("2026-06-12T10:00:00.123Z")
        );
        assert_eq!(v.get("source").and_then(|t| t.as_str()), Some("device"));
    }

    #[test]
    fn queued_commands_expire_lazily() {
        let c = CommandRecord {
            command_id: Uuid::nil(),
            device_id: Uuid::nil(),
            seq: 1,
            command: "unlock".into(),
            payload: "{}".into(),
            status: CommandStatus::Queued,
            created_at: 0,
            updated_at: 0,
            expires_at: 100,
            result: None,
        };
        assert_eq!(c.effective_status(99), CommandStatus::Queued);
        assert_eq!(c.effective_status(100), CommandStatus::Expired);
        let back: CommandRecord = decode(&encode(&c).unwrap()).unwrap();
        assert_eq!(back.command, "unlock");
    }
}
