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

/// Copies `src`, dropping every comma that is followed (after whitespace) by `]` or `}`, outside
/// strings. Valid JSON passes through unchanged.
pub fn strip_trailing_commas(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut in_str = false;
    let mut escaped = false;
    for (i, &b) in src.iter().enumerate() {
        if in_str {
            out.push(b);
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
            b',' => {
                let next = src[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if matches!(next, Some(b']' | b'}')) {
                    continue;
                }
            }
            _ => {}
        }
        out.push(b);
    }
    out
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

    #[test]
    fn drops_only_trailing_commas_outside_strings() {
        assert_eq!(
            strip_trailing_commas(br#"{"a":[1,2,],"b":{"c":1,},}"#),
            br#"{"a":[1,2],"b":{"c":1}}"#
        );
        assert_eq!(strip_trailing_commas(br#"{"s":",]",}"#), br#"{"s":",]"}"#);
        assert_eq!(
            strip_trailing_commas(br#"{"s":"\",}"}"#),
            br#"{"s":"\",}"}"#
        );
        let valid = br#"{"record":[{"enrollid":1}]}"#;
        assert_eq!(strip_trailing_commas(valid), valid);
    }
}
