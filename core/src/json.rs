//! Hand-written JSON output for hot paths, and small accessors over simd-json's borrowed values.
//!
//! Frames toward devices are built by appending to one buffer: no intermediate value tree, one
//! allocation per frame at most. Parsing is simd-json in place over the frame's own bytes.

use simd_json::BorrowedValue;
use simd_json::prelude::*;

/// Appends `s` as a JSON string literal (RFC 8259 escaping, control characters as `\u00XX`).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    // Most strings need no escape: one pass that the compiler vectorises finds that out.
    if !bytes.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    out
}

/// Serialises a parsed value (borrowed or owned) back to compact JSON text.
pub fn encode<V: Writable>(v: &V) -> String {
    v.encode()
}

/// Appends `encode(v)` to `out`, through `scratch` (kept by the caller for the next value) rather
/// than a new string per value.
pub fn push_encoded<V: Writable>(out: &mut String, v: &V, scratch: &mut Vec<u8>) {
    scratch.clear();
    // simd-json writes valid UTF-8 into a Vec, which cannot fail; if either ever did, the value
    // is written the allocating way.
    match v
        .write(scratch)
        .ok()
        .and_then(|()| std::str::from_utf8(scratch).ok())
    {
        Some(text) => out.push_str(text),
        None => out.push_str(&v.encode()),
    }
}

pub fn get_str<'v>(v: &'v BorrowedValue<'_>, key: &str) -> Option<&'v str> {
    v.get(key).and_then(|x| x.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("plain é text"), "\"plain é text\"");
        assert_eq!(quote("\u{1f}"), "\"\\u001f\"");
    }

    #[test]
    fn push_encoded_writes_what_encode_does() {
        let mut text = br#"{"a":[1,2.5,"x\"y"],"b":{"c":null,"d":true},"e":36.6}"#.to_vec();
        let v = simd_json::to_owned_value(&mut text).unwrap();
        let (mut out, mut scratch) = (String::from("["), Vec::new());
        for x in v.as_object().unwrap().values() {
            push_encoded(&mut out, x, &mut scratch);
            out.push(',');
        }
        let expected: Vec<String> = v.as_object().unwrap().values().map(encode).collect();
        assert_eq!(out, format!("[{},", expected.join(",")));
    }

    #[test]
    fn encode_round_trips_through_simd_json() {
        let mut text = br#"{"a":[1,2.5,"x\"y"],"b":{"c":null,"d":true}}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut text).unwrap();
        let mut again = encode(&v).into_bytes();
        let v2 = simd_json::to_borrowed_value(&mut again).unwrap();
        assert_eq!(v, v2);
        assert_eq!(get_str(&v2["a"][2], "nope"), None);
    }
}
