//! Secrets: device tokens, the admin token, and how they are checked.
//!
//! Device and admin tokens are 238 bits of randomness, so a fast SHA-256 is the right hash for them:
//! brute force is out of reach whatever the hash costs, and a slow password hash would make every
//! reconnect storm a CPU storm. Only hashes are kept; comparisons are constant-time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type TokenHash = [u8; 32];

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 40 base62 characters carry 238 bits.
const TOKEN_CHARS: usize = 40;

#[derive(Debug)]
pub struct RandomError(pub getrandom::Error);

impl std::fmt::Display for RandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the OS random source failed: {}", self.0)
    }
}

impl std::error::Error for RandomError {}

/// `tok_` followed by 40 uniformly random base62 characters.
pub fn generate_token() -> Result<String, RandomError> {
    let mut out = String::with_capacity(4 + TOKEN_CHARS);
    out.push_str("tok_");
    let mut pool = [0u8; 64];
    while out.len() < 4 + TOKEN_CHARS {
        getrandom::fill(&mut pool).map_err(RandomError)?;
        // Rejection sampling: bytes >= 248 would bias the first 8 symbols (256 % 62 == 8).
        for &b in pool.iter().filter(|&&b| b < 248) {
            if out.len() == 4 + TOKEN_CHARS {
                break;
            }
            out.push(ALPHABET[(b % 62) as usize] as char);
        }
    }
    Ok(out)
}

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time check of a presented token against a stored hash.
pub fn verify_token(presented: &str, stored: &TokenHash) -> bool {
    verify_hash(&hash_token(presented), stored)
}

/// `verify_token` for a caller that already hashed the presented token (to look it up elsewhere
/// too): constant time.
pub fn verify_hash(presented: &TokenHash, stored: &TokenHash) -> bool {
    presented.ct_eq(stored).into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` in lower-case hex to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape_and_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(a.starts_with("tok_"));
        assert_eq!(a.len(), 44);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn verify_accepts_only_the_hashed_token() {
        let t = generate_token().unwrap();
        let h = hash_token(&t);
        assert!(verify_token(&t, &h));
        assert!(!verify_token("tok_wrong", &h));
        assert!(!verify_token("", &h));
    }

    #[test]
    fn hex_round_trips() {
        let h = hash_token("x");
        assert_eq!(unhex(&hex(&h)).unwrap(), h.to_vec());
        assert!(unhex("zz").is_none());
        assert!(unhex("abc").is_none());
    }
}
