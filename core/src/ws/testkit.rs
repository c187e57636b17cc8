//! Helpers for the codec's tests: building client frames, a seeded PRNG, and a driver that
//! feeds a decoder the way the runtime does.

use super::frame::{CloseError, Decoder, Event};

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

/// How a test frame writes its payload length.
#[derive(Clone, Copy)]
pub enum LenEncoding {
    Shortest,
    Bits16,
    Bits64,
}

/// A frame as a client sends it: first byte as given, masked with `key`.
pub fn client_frame_with(first: u8, payload: &[u8], key: [u8; 4], len: LenEncoding) -> Vec<u8> {
    let mut frame = vec![first];
    match len {
        LenEncoding::Shortest if payload.len() <= 125 => frame.push(0x80 | payload.len() as u8),
        LenEncoding::Shortest | LenEncoding::Bits16 if payload.len() <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// A masked client frame with the shortest length encoding; `opcode` is the raw 4 bits.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | opcode;
    client_frame_with(
        first,
        payload,
        [0x37, 0xfa, 0x21, 0x3d],
        LenEncoding::Shortest,
    )
}

/// An [`Event`] detached from the buffers it borrows, for comparing event streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<Event<'_>> for Owned {
    fn from(event: Event<'_>) -> Self {
        match event {
            Event::Text(payload) => Self::Text(payload.to_vec()),
            Event::Binary(payload) => Self::Binary(payload.to_vec()),
            Event::Ping(payload) => Self::Ping(payload.to_vec()),
            Event::Pong(payload) => Self::Pong(payload.to_vec()),
            Event::Close { code, reason } => Self::Close(code, reason.to_owned()),
        }
    }
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
