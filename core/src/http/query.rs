//! `application/x-www-form-urlencoded` query strings.
//!
//! Decoding here is deliberately lenient (unlike the strict path decoder in
//! [`super::request`]): a query value is data handed to one handler, never
//! used for routing, so a stray `%` from a hand-typed curl command should
//! reach the handler as typed instead of failing the whole request.

/// Splits `query` (the raw text after `?`) into decoded `(key, value)` pairs
/// in order of appearance.
///
/// `+` decodes to a space, `%XX` to its byte, and an invalid escape (`%zz`,
/// a trailing `%`) is kept literally. Empty segments (`a=1&&b=2`) are
/// skipped; a key without `=` gets an empty value. Bytes that decode to
/// invalid UTF-8 become U+FFFD, because every consumer wants `str`.
pub fn parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            (decode_component(key), decode_component(value))
        })
        .collect()
}

/// First value for `key`; repeated keys are legal but our APIs never rely on
/// them, so first-wins matches what every curl user expects.
pub fn get<'q>(pairs: &'q [(String, String)], key: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so the
/// result is safe in a path segment and in a query key or value alike (space
/// becomes `%20`, which [`parse`] decodes just like `+`).
pub fn encode_component(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Value of one ASCII hex digit; shared with the path decoder.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => decoded,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn splits_and_decodes_pairs_in_order() {
        assert_eq!(
            parse("limit=10&cursor=abc%3D%3D&name=front+door&x=%E2%9C%93"),
            pairs(&[
                ("limit", "10"),
                ("cursor", "abc=="),
                ("name", "front door"),
                ("x", "\u{2713}"),
            ])
        );
    }

    #[test]
    fn empty_segments_and_missing_values() {
        assert_eq!(parse(""), pairs(&[]));
        assert_eq!(
            parse("&a&&b=&=v&"),
            pairs(&[("a", ""), ("b", ""), ("", "v")])
        );
        assert_eq!(parse("a=b=c"), pairs(&[("a", "b=c")]));
    }

    #[test]
    fn invalid_escapes_are_kept_literally() {
        assert_eq!(
            parse("a=%zz&b=100%&c=%4&d=%4g%41"),
            pairs(&[("a", "%zz"), ("b", "100%"), ("c", "%4"), ("d", "%4gA")])
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(parse("k=%FF%41"), pairs(&[("k", "\u{FFFD}A")]));
    }

    #[test]
    fn get_returns_first_match() {
        let p = parse("a=1&b=2&a=3");
        assert_eq!(get(&p, "a"), Some("1"));
        assert_eq!(get(&p, "b"), Some("2"));
        assert_eq!(get(&p, "c"), None);
    }

    #[test]
    fn encode_component_escapes_all_but_unreserved() {
        assert_eq!(encode_component("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(
            encode_component("a b/c?d&e=f+g%h#\u{e9}"),
            "a%20b%2Fc%3Fd%26e%3Df%2Bg%25h%23%C3%A9"
        );
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let tricky = "k&=+% /\u{2713}\u{0}";
        let query = format!("{}={}", encode_component(tricky), encode_component(tricky));
        assert_eq!(parse(&query), pairs(&[(tricky, tricky)]));
    }
}
