//! Tolerance for what devices actually send, and a guard every JSON parse needs.
//! Some AiFace-family firmware ends arrays and objects with a comma (`},]}`), which strict JSON
//! parsers refuse.

/// Deepest JSON nesting any parser here accepts. simd-json builds values recursively: a message of
/// nothing but `[` (a 1 MiB WebSocket message holds a million) overflows the thread's stack and
/// aborts the whole process. Real device messages nest a few levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether brackets outside strings nest deeper than `max`; checked before every parse.
pub fn too_deep(text: &[u8], max: usize) -> bool {
    // Nesting can pass `max` only if more than `max` brackets open. Counting them is one
    // vectorised pass, so ordinary frames (this runs on every frame) skip the state machine.
    if text.iter().filter(|&&b| b == b'[' || b == b'{').count() <= max {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Drops, in place, every comma that is followed (after whitespace) by `]` or `}` outside strings,
/// as some firmware writes (`},]}`), and returns the text's new length. Text with no comma before a
/// closing bracket, which is nearly all of it, is only scanned: it is parsed where it lies, without
/// the byte-by-byte copy every frame used to get.
pub fn strip_trailing_commas(text: &mut [u8]) -> usize {
    if !text
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b',' && closes_after(&text[i + 1..]))
    {
        return text.len();
    }
    let (mut w, mut in_str, mut escaped) = (0, false, false);
    for i in 0..text.len() {
        let b = text[i];
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_str = true,
                b',' if closes_after(&text[i + 1..]) => continue,
                _ => {}
            }
        }
        // `w <= i`: what is written is never read again.
        text[w] = b;
        w += 1;
    }
    w
}

/// Whether the next byte that is not whitespace closes an array or object.
fn closes_after(rest: &[u8]) -> bool {
    matches!(
        rest.iter().find(|c| !c.is_ascii_whitespace()),
        Some(b']' | b'}')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings_only() {
        assert!(!too_deep(br#"{"a":[{"b":[1]}]}"#, 4));
        assert!(too_deep(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!too_deep(br#"{"s":"[[[[[[[[[["}"#, 2));
        assert!(too_deep(&vec![b'['; 1 << 20], MAX_JSON_DEPTH));
    }

    fn stripped(text: &[u8]) -> Vec<u8> {
        let mut v = text.to_vec();
        let n = strip_trailing_commas(&mut v);
        v.truncate(n);
        v
    }

    #[test]
    fn drops_only_trailing_commas_outside_strings() {
        assert_eq!(
            stripped(br#"{"a":[1,2,],"b":{"c":1,},}"#),
            br#"{"a":[1,2],"b":{"c":1}}"#
        );
        assert_eq!(stripped(br#"{"s":",]",}"#), br#"{"s":",]"}"#);
        assert_eq!(stripped(br#"{"s":"\",}"}"#), br#"{"s":"\",}"}"#);
        assert_eq!(stripped(b"[1 , \n ]"), b"[1  \n ]");
        let valid = br#"{"record":[{"enrollid":1}]}"#;
        assert_eq!(stripped(valid), valid);
        // A comma before a bracket inside a string alone: scanned, then left as it is.
        assert_eq!(stripped(br#"{"s":",}"}"#), br#"{"s":",}"}"#);
    }
}
