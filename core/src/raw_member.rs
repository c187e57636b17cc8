//! Where a top-level member's value lies in JSON text, so that it can be kept as the device sent it
//! (its numbers, spacing and key order) instead of being re-encoded from the parsed value.
//!
//! simd-json parses a frame in place and overwrites its strings as it unescapes them, so the span
//! is found first, on the untouched bytes, and used only if the frame then parses. The scan is
//! written for valid JSON: on text that is not, its answer is meaningless, which is why callers
//! must not use it without the parse.

use std::ops::Range;

/// The bytes of the value of `key` in the JSON object `text`; what is inside the value, a key
/// repeated in a nested object included, is the sender's own. `None` when `text` is not an object,
/// has no such key, has it twice (a parser keeps one of the two: which is its business), or has a
/// top-level key with an escape in it (its name cannot be compared without decoding).
pub fn span(text: &[u8], key: &[u8]) -> Option<Range<usize>> {
    let mut i = skip_ws(text, 0);
    if text.get(i) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    i = skip_ws(text, i + 1);
    if text.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if text.get(i) != Some(&b'"') {
            return None;
        }
        let close = string_close(text, i)?;
        let name = &text[i + 1..close];
        if name.contains(&b'\\') {
            return None;
        }
        i = skip_ws(text, close + 1);
        if text.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(text, i + 1);
        let end = value_end(text, start)?;
        if name == key {
            if found.is_some() {
                return None;
            }
            found = Some(start..end);
        }
        i = skip_ws(text, end);
        match text.get(i)? {
            b',' => i = skip_ws(text, i + 1),
            b'}' => return found,
            _ => return None,
        }
    }
}

fn skip_ws(text: &[u8], mut i: usize) -> usize {
    while matches!(text.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index of the quote that closes the string opening at `open`.
fn string_close(text: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        match text[i] {
            b'"' => return Some(i),
            _ => i += 2,
        }
    }
}

/// The index just past the value starting at `start`.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match text.get(start)? {
        b'"' => string_close(text, start).map(|close| close + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = string_close(text, i)? + 1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            // A number or a literal: up to the next delimiter.
            let len = text[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(text.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        span(text.as_bytes(), key.as_bytes()).map(|r| &text[r])
    }

    #[test]
    fn finds_a_value_as_it_was_sent() {
        let f = r#"{"type":"telemetry","payload":{"t": 21.50, "x":[1,2,{"y":"}]"}]},"msg_id":"m"}"#;
        assert_eq!(
            member(f, "payload"),
            Some(r#"{"t": 21.50, "x":[1,2,{"y":"}]"}]}"#)
        );
        assert_eq!(member(f, "msg_id"), Some(r#""m""#));
        assert_eq!(member(f, "type"), Some(r#""telemetry""#));
        let spaced = "\r\n { \"payload\" :\t[ 1e3 , -0.0 ] , \"n\" : null }\n";
        assert_eq!(member(spaced, "payload"), Some("[ 1e3 , -0.0 ]"));
        assert_eq!(member(spaced, "n"), Some("null"));
        assert_eq!(member(r#"{"a":1,"payload":7}"#, "payload"), Some("7"));
    }

    #[test]
    fn strings_with_quotes_and_brackets_do_not_end_a_value_early() {
        let f = r#"{"payload":{"s":"a \"quoted\" } ] \\","t":"\\\""},"z":1}"#;
        assert_eq!(
            member(f, "payload"),
            Some(r#"{"s":"a \"quoted\" } ] \\","t":"\\\""}"#)
        );
        assert_eq!(member(f, "z"), Some("1"));
    }

    #[test]
    fn answers_nothing_where_a_parser_could_read_it_otherwise() {
        assert_eq!(
            member(r#"{"payload":1,"payload":2}"#, "payload"),
            None,
            "twice"
        );
        assert_eq!(
            member(r#"{"pay\u006coad":1,"payload":2}"#, "payload"),
            None,
            "escaped key"
        );
        assert_eq!(member(r#"{"payload":{"a":1}}"#, "data"), None, "absent");
        assert_eq!(member("{}", "payload"), None);
        assert_eq!(member("[1,2]", "payload"), None, "not an object");
        assert_eq!(member(r#""payload""#, "payload"), None);
        assert_eq!(member("", "payload"), None);
        // Nested keys are not top-level members.
        assert_eq!(member(r#"{"data":{"payload":1}}"#, "payload"), None);
    }

    #[test]
    fn malformed_text_ends_the_scan_without_panicking() {
        for text in [
            "{",
            r#"{"payload"#,
            r#"{"payload":"#,
            r#"{"payload":{"#,
            r#"{"payload":"abc"#,
            r#"{"payload":1"#,
            r#"{"payload":1 x}"#,
            r#"{"payload" 1}"#,
            r#"{payload:1}"#,
            r#"{"payload":]}"#,
            r#"{"payload":"\"#,
            r#"{"a":1,}"#,
            "{\"payload\":}",
        ] {
            let _ = span(text.as_bytes(), b"payload");
        }
        assert_eq!(member(r#"{"payload":]}"#, "payload"), None);
    }
}
