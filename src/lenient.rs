//! Tolerance for what terminal firmware actually sends. Some AiFace-family firmware ends arrays and
//! objects with a comma (`},]}`), which strict JSON parsers refuse.

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
    fn drops_only_trailing_commas_outside_strings() {
        assert_eq!(strip_trailing_commas(br#"{"a":[1,2,],"b":{"c":1,},}"#), br#"{"a":[1,2],"b":{"c":1}}"#);
        assert_eq!(strip_trailing_commas(br#"{"s":",]",}"#), br#"{"s":",]"}"#);
        assert_eq!(strip_trailing_commas(br#"{"s":"\",}"}"#), br#"{"s":"\",}"}"#);
        let valid = br#"{"record":[{"enrollid":1}]}"#;
        assert_eq!(strip_trailing_commas(valid), valid);
    }
}
