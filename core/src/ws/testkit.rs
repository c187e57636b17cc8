//! Helpers for the codec's tests: building client frames, a seeded PRNG, and a driver that
//! feeds a decoder the way the runtime does.

use super::frame::{CloseError, Decoder, encode_raw};
pub use super::frame::{LenEncoding, OwnedEvent as Owned};
use crate::fixtures::ws::RFC_KEY;

/// xorshift64: deterministic, dependency-free randomness for property tests.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..bound` for tests; `bound` must be nonzero.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A frame as a client sends it: first byte as given, masked with `key`.
pub fn client_frame_with(first: u8, payload: &[u8], key: [u8; 4], len: LenEncoding) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_raw(&mut frame, first, payload, Some(key), len);
    frame
}

/// A masked client frame with the shortest length encoding; `opcode` is the raw 4 bits.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | opcode;
    client_frame_with(first, payload, RFC_KEY, LenEncoding::Shortest)
}

/// What a decoder made of a byte stream: its events, then the error that ended it if any.
pub type Outcome = (Vec<Owned>, Option<CloseError>);

/// Feeds `chunks` to a fresh decoder one after another, as successive socket reads, and
/// decodes like the runtime: call until no event, drop what was consumed, read on. Also
/// checks on every call that `bytes_needed` predicts exactly when a call makes progress.
pub fn drive<'c>(decoder: &mut Decoder, chunks: impl IntoIterator<Item = &'c [u8]>) -> Outcome {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let needed = decoder.bytes_needed(&buf);
            let len = buf.len();
            let (consumed, event) = match decoder.decode(&mut buf) {
                Ok(decoded) => (decoded.consumed, decoded.event.map(Owned::from)),
                Err(error) => {
                    assert!(needed <= len, "error before bytes_needed was reached");
                    return (events, Some(error));
                }
            };
            assert!(consumed <= len);
            assert_eq!(
                needed > len,
                consumed == 0 && event.is_none(),
                "bytes_needed {needed} for {len} buffered bytes mispredicts progress"
            );
            assert!(
                event.is_none() || consumed > 0,
                "event without consuming bytes"
            );
            buf.drain(..consumed);
            match event {
                Some(event) => events.push(event),
                None => break,
            }
        }
    }
    (events, None)
}
