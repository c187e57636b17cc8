//! Frames: reading what AiFace terminals send (leniently) and writing what the server sends.

use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::json;

/// Deepest nesting parsed. simd-json builds values recursively: a message of nothing but `[`
/// (a 1 MiB WebSocket message holds half a million) overflows the thread's stack and aborts the
/// whole process. Real frames nest three deep (`sendlog` → `record` → one record).
const MAX_DEPTH: usize = 32;

/// Longest serial accepted, as for HTTP devices.
const MAX_SERIAL: usize = 64;

/// Longest model or firmware name passed on; `devinfo` strings only label the pending list.
const MAX_LABEL: usize = 64;

/// Parses a text frame into a JSON object, in place (the frame's bytes are used up), tolerating
/// the trailing commas some firmware writes (`},]}`). Anything that is not an object is `None`.
pub(super) fn parse(frame: &mut [u8]) -> Option<OwnedValue> {
    let n = crate::lenient::strip_trailing_commas(frame);
    let text = &mut frame[..n];
    if crate::lenient::too_deep(text, MAX_DEPTH) {
        return None;
    }
    let v = simd_json::to_owned_value(text).ok()?;
    v.is_object().then_some(v)
}

/// The string at `key`, if it is one.
pub(super) fn str_at<'v>(v: &'v OwnedValue, key: &str) -> Option<&'v str> {
    v.get(key).and_then(|x| x.as_str())
}

/// A non-negative integer, also when firmware sends it as a numeric string (`"enrollid":"12"`).
pub(super) fn as_u64(v: &OwnedValue) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The integer at `key` (see `as_u64`).
pub(super) fn u64_at(v: &OwnedValue, key: &str) -> Option<u64> {
    v.get(key).and_then(as_u64)
}

/// The serial a `reg` presents: a string or a bare number, trimmed, 1 to 64 printable bytes.
pub(super) fn serial(msg: &OwnedValue) -> Option<String> {
    let sn = match msg.get("sn")? {
        s if s.is_str() => s.as_str()?.trim().to_string(),
        n => n.as_u64()?.to_string(),
    };
    let printable = !sn.is_empty() && sn.len() <= MAX_SERIAL && !sn.chars().any(char::is_control);
    printable.then_some(sn)
}

/// The terminal's own clock as a `reg` shows it (`devinfo.time`, its wall time), if readable.
pub(super) fn shown_time(msg: &OwnedValue) -> Option<jiff::civil::DateTime> {
    let t = msg.get("devinfo").and_then(|d| str_at(d, "time"))?;
    crate::attendance::parse_time(t).map(|(local, _)| local)
}

/// A `devinfo` label (`modelname`, `firmware`), cut to `MAX_LABEL` characters.
pub(super) fn label(msg: &OwnedValue, key: &str) -> Option<String> {
    let s = msg.get("devinfo").and_then(|d| str_at(d, key))?;
    Some(s.chars().take(MAX_LABEL).collect())
}

/// The records of a `sendlog` or of a paged reply, moved out of the message: `record`, or
/// `records` on some firmware; an array, or a single record sent as an object (firmware that sends
/// one punch at a time does). `None` when neither is one.
pub(super) fn take_records(msg: &mut OwnedValue) -> Option<Vec<OwnedValue>> {
    let obj = msg.as_object_mut()?;
    let is_records = |r: &OwnedValue| r.is_array() || r.is_object();
    let key = if obj.get("record").is_some_and(is_records) {
        "record"
    } else {
        "records"
    };
    match obj.remove(key)? {
        OwnedValue::Array(list) => Some(*list),
        one @ OwnedValue::Object(_) => Some(vec![one]),
        other => {
            // Not an array: leave it where it was, so a reply passed on as a result keeps it.
            obj.insert(key.to_string(), other);
            None
        }
    }
}

/// Brings a record to the common shape: the user id under `enrollid` (some firmware says
/// `userid`). Everything else stays as sent; what cannot be read is the store's to report.
pub(super) fn normalise(mut record: OwnedValue) -> OwnedValue {
    if let Some(obj) = record.as_object_mut()
        && !obj.contains_key("enrollid")
        && let Some(id) = obj.remove("userid")
    {
        obj.insert("enrollid".to_string(), id);
    }
    record
}

/// Whether a reply reports success. Replies without `result` (`gettime` answers only `time`)
/// count as success; `false`, `0` and `"false"` do not.
pub(super) fn result_ok(reply: &OwnedValue) -> bool {
    match reply.get("result") {
        None => true,
        Some(r) => r
            .as_bool()
            .or_else(|| r.as_u64().map(|n| n != 0))
            .or_else(|| r.as_str().map(|s| s == "true"))
            .unwrap_or(false),
    }
}

/// A JSON object written key by key, so terminals (and transcript tests) see keys in the order
/// §3 shows them, with no intermediate value tree.
pub(super) struct Obj(String);

impl Obj {
    pub(super) fn new() -> Self {
        Obj(String::from("{"))
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        json::push_str(&mut self.0, k);
        self.0.push(':');
    }

    pub(super) fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        json::push_str(&mut self.0, v);
        self
    }

    pub(super) fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub(super) fn num(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }

    /// `v` is already JSON text.
    pub(super) fn raw(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        self.0.push_str(v);
        self
    }

    pub(super) fn value(self, k: &str, v: &OwnedValue) -> Self {
        self.raw(k, &v.encode())
    }

    pub(super) fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `{"ret":<name>,"result":false,"reason":1}`: §3's generic failure answer.
pub(super) fn failed(ret: &str) -> String {
    Obj::new()
        .str("ret", ret)
        .bool("result", false)
        .num("reason", 1)
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_deep_nesting_before_parsing() {
        let mut deep = vec![b'['; 500_000];
        deep.extend(vec![b']'; 500_000]);
        assert!(parse(&mut deep).is_none());
        let nested = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&mut nested.into_bytes()).is_some());
        assert!(parse(&mut br#"{"s":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#.to_vec()).is_some());
    }

    #[test]
    fn reads_firmware_variants() {
        let mut v =
            parse(&mut br#"{"cmd":"sendlog","records":[{"userid":"7","time":"t"},],}"#.to_vec())
                .unwrap();
        let recs: Vec<String> = take_records(&mut v)
            .unwrap()
            .into_iter()
            .map(|r| normalise(r).encode())
            .collect();
        assert_eq!(recs, [r#"{"time":"t","enrollid":"7"}"#]);
        let mut v = parse(&mut br#"{"ret":"getuserlist","record":"x"}"#.to_vec()).unwrap();
        assert!(take_records(&mut v).is_none());
        assert_eq!(v.encode(), r#"{"ret":"getuserlist","record":"x"}"#);
        assert!(parse(&mut b"[1]".to_vec()).is_none());
        assert_eq!(
            serial(&parse(&mut br#"{"sn":123}"#.to_vec()).unwrap()).as_deref(),
            Some("123")
        );
        assert_eq!(
            serial(&parse(&mut br#"{"sn":" "}"#.to_vec()).unwrap()),
            None
        );
        assert_eq!(
            serial(&parse(&mut br#"{"sn":"a\nb"}"#.to_vec()).unwrap()),
            None
        );
        for (text, ok) in [
            (r#"{}"#, true),
            (r#"{"result":true}"#, true),
            (r#"{"result":false}"#, false),
            (r#"{"result":0}"#, false),
            (r#"{"result":null}"#, false),
        ] {
            assert_eq!(
                result_ok(&parse(&mut text.as_bytes().to_vec()).unwrap()),
                ok,
                "{text}"
            );
        }
    }
}
