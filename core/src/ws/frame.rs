//! RFC 6455 framing: decoding what the peer sends, encoding what we send. The server decodes
//! masked client frames and writes unmasked ones; [`Decoder::client`] and
//! [`super::client::encode_frame`] are the same code run from the other end.

use std::fmt;

/// Largest payload a control frame may carry (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const OPCODE: u8 = 0x0F;
const MASKED: u8 = 0x80;
const LEN7: u8 = 0x7F;
const LEN_IS_16_BIT: u8 = 126;
const LEN_IS_64_BIT: u8 = 127;
const MASK_KEY_LEN: usize = 4;

/// Frame opcodes defined by RFC 6455 5.2; the others are reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong: the opcodes with the high bit set (RFC 6455 5.5).
    pub fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// What the decoder accepts.
///
/// There is no deadline here (say, for a frame header that trickles in): the codec has no
/// clock, so the runtime enforces deadlines on its reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes, summed over its fragments. A frame whose header would take
    /// its message past this is refused with 1009 before any of its payload is awaited. Since
    /// frames are decoded whole, it also bounds the read buffer a session can need:
    /// `max_message` plus a 14-byte header.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 1 << 20,
        }
    }
}

/// A protocol violation by the client: the server sends a Close frame with `code` and
/// `reason` (see [`encode_close`]) and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseError {
    pub code: u16,
    /// Short ASCII text, well under the 123 bytes a close reason may take.
    pub reason: &'static str,
}

impl CloseError {
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;

    const fn protocol(reason: &'static str) -> Self {
        Self {
            code: Self::PROTOCOL_ERROR,
            reason,
        }
    }

    const fn invalid_payload(reason: &'static str) -> Self {
        Self {
            code: Self::INVALID_PAYLOAD,
            reason,
        }
    }

    const TOO_BIG: Self = Self {
        code: Self::MESSAGE_TOO_BIG,
        reason: "message too big",
    };
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "websocket close {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for CloseError {}

/// One thing the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, fragments reassembled, already checked to be UTF-8. Mutable
    /// so the caller can parse JSON in place (simd-json); what it leaves there is discarded.
    Text(&'a mut [u8]),
    /// A complete binary message, fragments reassembled.
    Binary(&'a mut [u8]),
    /// The server answers with a Pong carrying the same payload (RFC 6455 5.5.2).
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `code` is `None` when the peer sent no status code; it is a valid code otherwise.
    /// The peer sends nothing after this (RFC 6455 5.5.1): the server answers with its
    /// own Close and stops decoding.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// An [`Event`] detached from the buffer it borrows, for a caller that must let go of the
/// buffer before acting on the event (the load harness's connections, tests comparing event
/// streams). The server's sessions handle the borrowed event instead, without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<Event<'_>> for OwnedEvent {
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

/// What one [`Decoder::decode`] call did.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Length of the prefix of the buffer that is done with. The caller drops it, after
    /// handling `event` (which may borrow it), before the next call. Nonzero whenever there is
    /// an event; also nonzero without one when fragments were moved to the assembly buffer.
    pub consumed: usize,
    pub event: Option<Event<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A validated frame header whose bytes (mask key included) are all present.
#[derive(Debug)]
struct Header {
    fin: bool,
    opcode: Opcode,
    /// `None` for a server's frame, which is never masked.
    mask: Option<[u8; MASK_KEY_LEN]>,
    header_len: usize,
    payload_len: usize,
}

enum HeaderParse {
    /// The header is incomplete; this many bytes are needed to learn more.
    Need(usize),
    Ready(Header),
}

/// Which end of the connection a [`Decoder`] runs at. RFC 6455 5.1: a client masks every
/// frame and a server none, and each end must close on a frame masked the other way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Role {
    #[default]
    Server,
    Client,
}

/// Decoder for the frames the peer sends; one per connection. [`Decoder::new`] is the server's
/// (masked client frames); [`Decoder::client`] is a client's (unmasked server frames), for the
/// load harness and tests that talk to the server byte by byte.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    role: Role,
    /// Kind of the fragmented message being assembled, if one is.
    assembling: Option<DataKind>,
    /// Unmasked payloads of that message's fragments so far. It keeps its memory only while
    /// a message is being assembled: see [`Decoder::decode`].
    assembly: Vec<u8>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A decoder for a client: of the unmasked frames a server sends. It checks them as the
    /// server's decoder checks a client's, and refuses a masked one.
    pub fn client(limits: Limits) -> Self {
        Self {
            limits,
            role: Role::Client,
            ..Self::default()
        }
    }

    /// Changes what the decoder accepts from the next frame header on; a message being assembled
    /// is held to the new limit from its next fragment. The server raises the limit once a session
    /// is known to be a terminal that sends photos.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes the assembly buffer holds (a fragmented message's fragments so far; 0 once the call
    /// after the message's delivery has freed it), for the runtime's memory accounting.
    pub fn assembly_capacity(&self) -> usize {
        self.assembly.capacity()
    }

    /// Decodes frames from the front of `buf`: the bytes read from the socket and not yet
    /// consumed, oldest first.
    ///
    /// Returns one of:
    /// - `consumed: 0, event: None`: the first frame is not complete yet. Read more bytes
    ///   (until `buf.len() >= bytes_needed(buf)`) and call again with `buf` extended by them.
    /// - `consumed: n > 0, event: None`: complete fragments of a message were appended to the
    ///   assembly buffer and what follows them is incomplete. Drop `n` bytes, read, call again.
    /// - `consumed: n, event: Some(event)`: handle `event`, then drop `n` bytes (they include
    ///   any fragments absorbed before the event's frame) and call again: `buf` may hold more
    ///   frames, so keep calling until a call returns no event.
    /// - `Err(e)`: the peer broke the protocol. Send a Close with `e.code` and `e.reason` (the
    ///   server: `encode_close(e.code, e.reason)`) and close; this decoder is not to be used
    ///   again.
    ///
    /// A frame is decoded only once it is wholly in `buf`. Frames are unmasked in place, so
    /// the consumed prefix of `buf` no longer holds what the client sent; the rest of `buf` is
    /// left as it was. An unfragmented Text or Binary message borrows its payload from `buf`
    /// (zero-copy); a fragmented one is copied into the assembly buffer as its fragments
    /// arrive, and borrowed from there once complete. Control frames between fragments are
    /// returned as they come.
    ///
    /// The assembly buffer is freed (capacity zero) at the start of the call after it
    /// delivers a message, rather than kept for the next one: clients rarely fragment, and
    /// every session idles, so keeping even a few KiB per idle session would cost far more
    /// memory across a fleet than the occasional reallocation costs time. As the caller calls
    /// again after every event, an idle decoder holds no heap memory.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Decoded<'a>, CloseError> {
        if self.assembling.is_none() {
            self.assembly = Vec::new();
        }
        let mut consumed = 0;
        let mut rest = buf;
        loop {
            let header = match self.parse_header(rest)? {
                HeaderParse::Need(_) => return Ok(Decoded::pending(consumed)),
                HeaderParse::Ready(header) => header,
            };
            // `rest` is moved out rather than reborrowed, so the payload can be returned with
            // the full lifetime `'a` while the loop goes on with the frames after it.
            let Some((payload, tail)) = std::mem::take(&mut rest)
                .split_at_mut_checked(header.header_len)
                .and_then(|(_, after_header)| {
                    after_header.split_at_mut_checked(header.payload_len)
                })
            else {
                return Ok(Decoded::pending(consumed));
            };
            if let Some(key) = header.mask {
                unmask(payload, key);
            }
            consumed += header.header_len + header.payload_len;
            let event = match (header.opcode, header.fin) {
                (Opcode::Ping, _) => Event::Ping(payload),
                (Opcode::Pong, _) => Event::Pong(payload),
                (Opcode::Close, _) => parse_close(payload)?,
                (Opcode::Text, true) => Event::Text(check_utf8(payload)?),
                (Opcode::Binary, true) => Event::Binary(payload),
                (Opcode::Text | Opcode::Binary, false) => {
                    self.assembling = Some(if header.opcode == Opcode::Text {
                        DataKind::Text
                    } else {
                        DataKind::Binary
                    });
                    self.assembly.extend_from_slice(payload);
                    rest = tail;
                    continue;
                }
                (Opcode::Continuation, false) => {
                    self.assembly.extend_from_slice(payload);
                    rest = tail;
                    continue;
                }
                (Opcode::Continuation, true) => {
                    self.assembly.extend_from_slice(payload);
                    match self.assembling.take() {
                        Some(DataKind::Text) => Event::Text(check_utf8(&mut self.assembly)?),
                        Some(DataKind::Binary) => Event::Binary(&mut self.assembly),
                        // parse_header refuses a continuation with nothing being assembled.
                        None => return Err(CloseError::protocol("continuation without a message")),
                    }
                }
            };
            return Ok(Decoded {
                consumed,
                event: Some(event),
            });
        }
    }

    /// Length `buf` must reach before [`decode`](Self::decode) can make progress on it:
    /// while `buf.len()` is below it, `decode(buf)` returns `consumed: 0, event: None`; once it
    /// is reached, `decode(buf)` consumes bytes or fails.
    ///
    /// The figure grows as more of the first frame's header arrives: 2 until the second byte
    /// is there, then the header's length, then the whole frame's (at most
    /// `max_message + 14`). The runtime grows its read buffer to it, and can hand the buffer
    /// back to its pool whenever `buf` is empty. It is only valid for the next `decode` call,
    /// on this `buf`, as fragments change what a frame may be.
    pub fn bytes_needed(&self, buf: &[u8]) -> usize {
        match self.parse_header(buf) {
            Ok(HeaderParse::Need(len)) => len,
            Ok(HeaderParse::Ready(header)) => header.header_len + header.payload_len,
            Err(_) => buf.len(),
        }
    }

    /// Reads and validates the header of the frame at the front of `buf`, failing as soon as
    /// the bytes present show a violation, before the rest of the frame arrives.
    fn parse_header(&self, buf: &[u8]) -> Result<HeaderParse, CloseError> {
        let Some(&first) = buf.first() else {
            return Ok(HeaderParse::Need(2));
        };
        // No extension is ever negotiated, so no reserved bit has a meaning (RFC 6455 5.2).
        if first & RSV != 0 {
            return Err(CloseError::protocol("reserved bits set"));
        }
        let opcode =
            Opcode::from_bits(first & OPCODE).ok_or(CloseError::protocol("reserved opcode"))?;
        let fin = first & FIN != 0;
        if opcode.is_control() {
            if !fin {
                return Err(CloseError::protocol("fragmented control frame"));
            }
        } else {
            match (opcode, self.assembling) {
                (Opcode::Continuation, None) => {
                    return Err(CloseError::protocol("continuation without a message"));
                }
                (Opcode::Text | Opcode::Binary, Some(_)) => {
                    return Err(CloseError::protocol("new message inside a fragmented one"));
                }
                _ => {}
            }
        }

        let Some(&second) = buf.get(1) else {
            return Ok(HeaderParse::Need(2));
        };
        let masked = second & MASKED != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(CloseError::protocol("client frame not masked")),
            (Role::Client, true) => return Err(CloseError::protocol("server frame masked")),
            (Role::Server, true) | (Role::Client, false) => {}
        }
        let key_len = if masked { MASK_KEY_LEN } else { 0 };
        let len7 = second & LEN7;
        if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(CloseError::protocol("control frame over 125 bytes"));
        }
        let len_bytes = match len7 {
            LEN_IS_16_BIT => 2,
            LEN_IS_64_BIT => 8,
            _ => 0,
        };
        let header_len = 2 + len_bytes + key_len;
        // A longer length encoding than needed is accepted, although RFC 6455 5.2 says
        // senders MUST use the shortest: the limit check below makes any encoding equally
        // safe, and refusing would only break sloppy clients.
        let payload_len = match len7 {
            LEN_IS_16_BIT => match array_at::<2>(buf, 2) {
                Some(bytes) => u64::from(u16::from_be_bytes(bytes)),
                None => return Ok(HeaderParse::Need(header_len)),
            },
            LEN_IS_64_BIT => match array_at::<8>(buf, 2) {
                Some(bytes) => u64::from_be_bytes(bytes),
                None => return Ok(HeaderParse::Need(header_len)),
            },
            short => u64::from(short),
        };
        if payload_len >> 63 != 0 {
            return Err(CloseError::protocol("64-bit length with the high bit set"));
        }
        if !opcode.is_control() {
            let assembled = match self.assembling {
                Some(_) => self.assembly.len(),
                None => 0,
            };
            let message_len = (assembled as u64).saturating_add(payload_len);
            if message_len > self.limits.max_message as u64 {
                return Err(CloseError::TOO_BIG);
            }
        }
        // Fits: payload_len is at most max_message (or 125), which is a usize.
        let payload_len = usize::try_from(payload_len).map_err(|_| CloseError::TOO_BIG)?;
        if header_len.checked_add(payload_len).is_none() {
            return Err(CloseError::TOO_BIG);
        }
        let mask = match masked {
            false => None,
            true => match array_at::<MASK_KEY_LEN>(buf, 2 + len_bytes) {
                Some(key) => Some(key),
                None => return Ok(HeaderParse::Need(header_len)),
            },
        };
        Ok(HeaderParse::Ready(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }
}

impl Decoded<'_> {
    fn pending(consumed: usize) -> Self {
        Self {
            consumed,
            event: None,
        }
    }
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..)?.first_chunk().copied()
}

fn check_utf8(payload: &mut [u8]) -> Result<&mut [u8], CloseError> {
    match std::str::from_utf8(payload) {
        Ok(_) => Ok(payload),
        Err(_) => Err(CloseError::invalid_payload("text is not UTF-8")),
    }
}

fn parse_close(payload: &[u8]) -> Result<Event<'_>, CloseError> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: "",
        }),
        [_] => Err(CloseError::protocol("close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !is_valid_close_code(code) {
                return Err(CloseError::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| CloseError::invalid_payload("close reason is not UTF-8"))?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// Whether a peer may put `code` in a Close frame (RFC 6455 7.4). 1004 is reserved; 1005,
/// 1006 and 1015 only stand for conditions and must never be sent. 1012-1014 are accepted
/// beyond the RFC's list because IANA registered them (service restart, try again later, bad
/// gateway) and peers do send them; the rest of 1000-2999 is reserved for future RFCs.
/// 3000-3999 are registered for libraries and 4000-4999 are private use.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `payload` with the masking key as RFC 6455 5.3 defines, from key offset 0.
fn unmask(payload: &mut [u8], key: [u8; MASK_KEY_LEN]) {
    // The key repeats every 4 bytes, so a u64 holds it twice and each 8-byte word is unmasked
    // with one XOR. Native-endian load and store keep byte i of a word paired with
    // key[i % 4] on any platform, and since no word depends on another, LLVM also widens the
    // loop to SIMD registers.
    let [a, b, c, d] = key;
    let wide_key = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, tail) = payload.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide_key).to_ne_bytes();
    }
    // Whole words span a multiple of 4 bytes, so the tail starts again at key[0].
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Appends one complete (FIN=1), unmasked frame to `out`: server frames are never masked
/// (RFC 6455 5.1). Uses the shortest length encoding.
///
/// A control frame's payload must fit in [`MAX_CONTROL_PAYLOAD`] bytes; a longer one is a bug
/// in the caller (checked in debug builds), and the client would close with 1002.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    encode_whole(out, opcode, payload, None);
}

/// One complete (FIN=1) frame with the shortest length encoding, masked with `mask` if any: what
/// a conforming peer sends, a server without a mask and a client with one.
#[inline]
pub(super) fn encode_whole(
    out: &mut Vec<u8>,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; MASK_KEY_LEN]>,
) {
    debug_assert!(
        !opcode.is_control() || payload.len() <= MAX_CONTROL_PAYLOAD,
        "control frame payload over 125 bytes"
    );
    encode_raw(
        out,
        FIN | opcode as u8,
        payload,
        mask,
        LenEncoding::Shortest,
    );
}

/// How a frame writes its payload length (RFC 6455 5.2): in the 7 bits of the second byte, or
/// after it in 16 or 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenEncoding {
    /// The shortest form that fits, which RFC 6455 5.2 requires of senders.
    Shortest,
    /// At least 16 bits, for tests of a receiver's tolerance: longer than needed for a payload
    /// under 126 bytes, widened to 64 bits for one over 65,535.
    Bits16,
    /// Always 64 bits.
    Bits64,
}

/// Appends one frame built as given, conforming or not: `first` is its first byte verbatim
/// (FIN, RSV bits and opcode bits), the payload is masked with `mask` when there is one, and
/// its length is written as `len` says. The one frame writer behind [`encode_frame`] and
/// [`super::client::encode_frame`]; called directly, it writes what tests and fuzzers need to
/// send a receiver, such as reserved opcodes, unmasked client frames or long length forms.
// Inlined so that the constant arguments of the server's path (no mask, shortest length) fold
// away, leaving the ack frame's encoding as cheap as a writer of its own.
#[inline]
pub fn encode_raw(
    out: &mut Vec<u8>,
    first: u8,
    payload: &[u8],
    mask: Option<[u8; MASK_KEY_LEN]>,
    len: LenEncoding,
) {
    out.reserve(2 + 8 + MASK_KEY_LEN + payload.len());
    out.push(first);
    let mask_bit = if mask.is_some() { MASKED } else { 0 };
    match (len, u16::try_from(payload.len())) {
        (LenEncoding::Shortest, Ok(short @ 0..=125)) => out.push(mask_bit | short as u8),
        (LenEncoding::Shortest | LenEncoding::Bits16, Ok(medium)) => {
            out.push(mask_bit | LEN_IS_16_BIT);
            out.extend_from_slice(&medium.to_be_bytes());
        }
        _ => {
            out.push(mask_bit | LEN_IS_64_BIT);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        // Masking and unmasking are the same XOR, from key offset 0.
        unmask(&mut out[start..], key);
    }
}

/// Appends a Close frame with `code` and `reason` to `out`, cutting `reason` at a character
/// boundary so the payload stays within the 125 bytes of a control frame.
///
/// `code` must be one a peer may send (1000-1003, 1007-1014, 3000-4999; checked in debug
/// builds): 1005, 1006 and 1015 describe closes without a frame and are never sent.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    debug_assert!(
        is_valid_close_code(code),
        "close code {code} may not be sent"
    );
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    // Terminates: 0 is always a character boundary.
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    out.reserve(4 + reason.len());
    out.push(FIN | Opcode::Close as u8);
    out.push((2 + reason.len()) as u8);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::testkit::{
        LenEncoding, Outcome, Owned, XorShift, client_frame, client_frame_with, drive,
    };

    const CONTINUATION: u8 = 0x0;
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;

    use crate::fixtures::ws::RFC_MASKED_HELLO;

    fn decode_all(bytes: &[u8]) -> Outcome {
        drive(&mut Decoder::default(), [bytes])
    }

    fn error_code(bytes: &[u8]) -> Option<u16> {
        decode_all(bytes).1.map(|error| error.code)
    }

    /// One decode call on a fresh decoder, as (consumed, event).
    fn decode_once(
        decoder: &mut Decoder,
        bytes: &[u8],
    ) -> Result<(usize, Option<Owned>), CloseError> {
        let mut buf = bytes.to_vec();
        decoder
            .decode(&mut buf)
            .map(|decoded| (decoded.consumed, decoded.event.map(Owned::from)))
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    #[test]
    fn decodes_rfc_masked_hello_in_place() {
        let mut buf = RFC_MASKED_HELLO;
        let payload_at = buf[6..].as_ptr();
        let decoded = Decoder::default().decode(&mut buf).map(|decoded| {
            let Some(Event::Text(text)) = decoded.event else {
                panic!("expected text, got {:?}", decoded.event);
            };
            assert!(
                std::ptr::eq(text.as_ptr(), payload_at),
                "payload copied, not borrowed"
            );
            (decoded.consumed, text.to_vec())
        });
        assert_eq!(decoded, Ok((11, b"Hello".to_vec())));
        assert_eq!(&buf[6..], b"Hello");
    }

    #[test]
    fn decodes_rfc_masked_pong() {
        let mut pong = RFC_MASKED_HELLO;
        pong[0] = 0x8a;
        assert_eq!(
            decode_all(&pong),
            (vec![Owned::Pong(b"Hello".to_vec())], None)
        );
    }

    #[test]
    fn reassembles_rfc_fragmented_hello() {
        let first = client_frame(false, TEXT, b"Hel");
        let last = client_frame(true, CONTINUATION, b"lo");
        // The same first bytes as RFC 6455 5.7's unmasked fragments, 0x01 and 0x80.
        assert_eq!((first[0], last[0]), (0x01, 0x80));
        assert_eq!(
            decode_all(&[first, last].concat()),
            (vec![Owned::Text(b"Hello".to_vec())], None)
        );
    }

    #[test]
    fn encodes_rfc_examples() {
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        out.clear();
        encode_frame(&mut out, Opcode::Ping, b"Hello");
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        out.clear();
        encode_frame(&mut out, Opcode::Binary, &[7; 256]);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);

        out.clear();
        encode_frame(&mut out, Opcode::Binary, &[7; 65536]);
        assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0]);
        assert_eq!(out.len(), 10 + 65536);
    }

    #[test]
    fn encodes_shortest_length_at_boundaries() {
        for (len, header) in [
            (0, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = vec![0xAA];
            encode_frame(&mut out, Opcode::Binary, &vec![0; len]);
            assert_eq!(out[1..1 + header.len()], header, "length {len}");
            assert_eq!(
                out.len(),
                1 + header.len() + len,
                "appends after existing bytes"
            );
        }
    }

    #[test]
    fn encodes_close_frames() {
        let mut out = Vec::new();
        encode_close(&mut out, 1000, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xE8]);

        out.clear();
        encode_close(&mut out, 1009, "big");
        assert_eq!(out, [0x88, 0x05, 0x03, 0xF1, b'b', b'i', b'g']);
    }

    #[test]
    fn truncates_close_reason_at_char_boundary() {
        for (reason, kept) in [
            ("a".repeat(200), 123),
            // 2-byte characters: 61 of them fill 122 bytes, a 62nd would need 124.
            ("é".repeat(100), 122),
            // 1 + 40 * 3 = 121 bytes; the 41st euro sign would end at byte 124.
            (format!("a{}", "€".repeat(60)), 121),
            ("short".to_owned(), 5),
        ] {
            let mut out = Vec::new();
            encode_close(&mut out, 1001, &reason);
            assert_eq!(usize::from(out[1]), 2 + kept);
            assert_eq!(out.len(), 4 + kept);
            assert_eq!(&out[4..], &reason.as_bytes()[..kept]);
        }
    }

    #[test]
    fn refuses_unmasked_frames_from_their_second_byte() {
        let unmasked_hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(error_code(&unmasked_hello), Some(1002));
        assert_eq!(error_code(&unmasked_hello[..2]), Some(1002));
    }

    #[test]
    fn refuses_reserved_bits_from_the_first_byte() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(error_code(&[0x81 | rsv]), Some(1002), "rsv {rsv:#x}");
            let mut frame = client_frame(true, TEXT, b"hi");
            frame[0] |= rsv;
            assert_eq!(error_code(&frame), Some(1002), "rsv {rsv:#x}");
        }
    }

    #[test]
    fn refuses_reserved_opcodes() {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(
                error_code(&[0x80 | opcode]),
                Some(1002),
                "opcode {opcode:#x}"
            );
            assert_eq!(error_code(&client_frame(true, opcode, b"")), Some(1002));
        }
    }

    #[test]
    fn refuses_fragmented_control_frames() {
        for opcode in [CLOSE, PING, PONG] {
            assert_eq!(error_code(&client_frame(false, opcode, b"")), Some(1002));
        }
    }

    #[test]
    fn limits_control_payloads_to_125_bytes() {
        assert_eq!(
            decode_all(&client_frame(true, PING, &[1; 125])),
            (vec![Owned::Ping(vec![1; 125])], None)
        );
        for opcode in [CLOSE, PING, PONG] {
            let frame = client_frame(true, opcode, &[1; 126]);
            assert_eq!(error_code(&frame), Some(1002));
            assert_eq!(error_code(&frame[..2]), Some(1002), "known from the header");
        }
    }

    #[test]
    fn refuses_one_byte_close_payload() {
        assert_eq!(error_code(&client_frame(true, CLOSE, &[0x03])), Some(1002));
    }

    #[test]
    fn decodes_close_with_and_without_code() {
        assert_eq!(
            decode_all(&client_frame(true, CLOSE, b"")),
            (vec![Owned::Close(None, String::new())], None)
        );
        assert_eq!(
            decode_all(&client_frame(
                true,
                CLOSE,
                &close_payload(1000, "fin ✓".as_bytes())
            )),
            (vec![Owned::Close(Some(1000), "fin ✓".to_owned())], None)
        );
    }

    #[test]
    fn checks_close_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert_eq!(
                decode_all(&client_frame(true, CLOSE, &close_payload(code, b"x"))),
                (vec![Owned::Close(Some(code), "x".to_owned())], None),
                "code {code}"
            );
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                error_code(&client_frame(true, CLOSE, &close_payload(code, b""))),
                Some(1002),
                "code {code}"
            );
        }
    }

    #[test]
    fn refuses_close_reason_not_utf8() {
        let frame = client_frame(true, CLOSE, &close_payload(1000, &[b'o', 0xFF, b'k']));
        assert_eq!(error_code(&frame), Some(1007));
    }

    #[test]
    fn refuses_continuation_without_message() {
        assert_eq!(
            error_code(&client_frame(true, CONTINUATION, b"x")),
            Some(1002)
        );
        assert_eq!(
            error_code(&client_frame(false, CONTINUATION, b"x")),
            Some(1002)
        );
        let after_complete = [
            client_frame(true, TEXT, b"a"),
            client_frame(true, CONTINUATION, b"b"),
        ];
        assert_eq!(
            decode_all(&after_complete.concat()),
            (
                vec![Owned::Text(b"a".to_vec())],
                Some(CloseError::protocol("continuation without a message"))
            )
        );
    }

    #[test]
    fn refuses_new_message_inside_fragmented_one() {
        for (start, intruder) in [
            (TEXT, TEXT),
            (TEXT, BINARY),
            (BINARY, TEXT),
            (BINARY, BINARY),
        ] {
            for intruder_fin in [true, false] {
                let stream = [
                    client_frame(false, start, b"a"),
                    client_frame(intruder_fin, intruder, b"b"),
                ];
                assert_eq!(error_code(&stream.concat()), Some(1002));
            }
        }
    }

    #[test]
    fn refuses_64_bit_length_with_high_bit_before_mask_key() {
        let header = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(error_code(&header), Some(1002));
    }

    #[test]
    fn accepts_non_minimal_length_encodings() {
        for encoding in [LenEncoding::Bits16, LenEncoding::Bits64] {
            let frame = client_frame_with(0x81, b"Hello", [1, 2, 3, 4], encoding);
            assert_eq!(
                decode_all(&frame),
                (vec![Owned::Text(b"Hello".to_vec())], None)
            );
        }
    }

    #[test]
    fn refuses_oversized_frame_from_its_header() {
        let mut two_mib_header = vec![0x82, 0xFF];
        two_mib_header.extend_from_slice(&(2u64 << 20).to_be_bytes());
        assert_eq!(error_code(&two_mib_header), Some(1009));

        let mut decoder = Decoder::new(Limits { max_message: 16 });
        assert_eq!(
            decode_once(&mut decoder, &client_frame(true, BINARY, &[9; 16])),
            Ok((22, Some(Owned::Binary(vec![9; 16]))))
        );
        let too_big = client_frame(true, BINARY, &[9; 17]);
        assert_eq!(
            decode_once(&mut decoder, &too_big[..2]),
            Err(CloseError::TOO_BIG)
        );
    }

    #[test]
    fn refuses_oversized_fragmented_message_from_the_header_that_overflows() {
        let mut decoder = Decoder::new(Limits { max_message: 16 });
        let first = client_frame(false, TEXT, &[b'a'; 10]);
        let ping = client_frame(true, PING, &[0; 20]);
        let overflow = client_frame(true, CONTINUATION, &[b'a'; 7]);
        assert_eq!(decode_once(&mut decoder, &first), Ok((16, None)));
        assert_eq!(
            decode_once(&mut decoder, &ping),
            Ok((26, Some(Owned::Ping(vec![0; 20])))),
            "control frames do not count towards the message"
        );
        assert_eq!(
            decode_once(&mut decoder, &overflow[..2]),
            Err(CloseError::TOO_BIG)
        );
    }

    #[test]
    fn a_raised_limit_applies_from_the_next_header_and_to_a_message_in_progress() {
        let mut decoder = Decoder::new(Limits { max_message: 16 });
        let big = client_frame(true, TEXT, &[b'a'; 20]);
        assert_eq!(
            decode_once(&mut decoder, &big[..2]),
            Err(CloseError::TOO_BIG)
        );
        // As the server does once a session turns out to be a terminal that sends photos.
        let mut decoder = Decoder::new(Limits { max_message: 16 });
        let first = client_frame(false, TEXT, &[b'a'; 10]);
        assert_eq!(decode_once(&mut decoder, &first), Ok((16, None)));
        assert_eq!(decoder.assembly_capacity(), 10);
        decoder.set_limits(Limits { max_message: 32 });
        let last = client_frame(true, CONTINUATION, &[b'a'; 20]);
        assert_eq!(
            decode_once(&mut decoder, &last),
            Ok((26, Some(Owned::Text(vec![b'a'; 30]))))
        );
        // The assembly buffer is let go by the next call, whatever it finds.
        assert_eq!(decode_once(&mut decoder, &[]), Ok((0, None)));
        assert_eq!(decoder.assembly_capacity(), 0);
        assert_eq!(
            decode_once(&mut decoder, &client_frame(true, BINARY, &[1; 33])[..2]),
            Err(CloseError::TOO_BIG)
        );
    }

    #[test]
    fn refuses_text_not_utf8() {
        for bad in [&b"\xFF"[..], b"\xC0\xAF", b"\xED\xA0\x80", b"ok\xE2\x82"] {
            assert_eq!(
                error_code(&client_frame(true, TEXT, bad)),
                Some(1007),
                "{bad:?}"
            );
            let (head, tail) = bad.split_at(1);
            let fragmented = [
                client_frame(false, TEXT, head),
                client_frame(true, CONTINUATION, tail),
            ];
            assert_eq!(
                error_code(&fragmented.concat()),
                Some(1007),
                "{bad:?} fragmented"
            );
        }
    }

    #[test]
    fn reassembles_characters_split_across_fragments() {
        let euro = "€".as_bytes();
        let stream = [
            client_frame(false, TEXT, &euro[..1]),
            client_frame(false, CONTINUATION, &euro[1..2]),
            client_frame(true, CONTINUATION, &euro[2..]),
        ];
        assert_eq!(
            decode_all(&stream.concat()),
            (vec![Owned::Text(euro.to_vec())], None)
        );
    }

    #[test]
    fn binary_need_not_be_utf8() {
        let stream = [
            client_frame(true, BINARY, b"\xFF\xFE"),
            client_frame(false, BINARY, b"\xC0"),
            client_frame(true, CONTINUATION, b"\xAF"),
        ];
        assert_eq!(
            decode_all(&stream.concat()),
            (
                vec![
                    Owned::Binary(b"\xFF\xFE".to_vec()),
                    Owned::Binary(b"\xC0\xAF".to_vec())
                ],
                None
            )
        );
    }

    #[test]
    fn decodes_empty_messages_and_fragments() {
        let stream = [
            client_frame(true, TEXT, b""),
            client_frame(true, BINARY, b""),
            client_frame(false, TEXT, b""),
            client_frame(false, CONTINUATION, b""),
            client_frame(true, CONTINUATION, b""),
        ];
        assert_eq!(
            decode_all(&stream.concat()),
            (
                vec![
                    Owned::Text(vec![]),
                    Owned::Binary(vec![]),
                    Owned::Text(vec![])
                ],
                None
            )
        );
    }

    #[test]
    fn returns_control_frames_between_fragments_at_once() {
        let first = client_frame(false, TEXT, b"Hel");
        let ping = client_frame(true, PING, b"p");
        let last = client_frame(true, CONTINUATION, b"lo");
        let mut decoder = Decoder::default();
        assert_eq!(
            decode_once(
                &mut decoder,
                &[first.clone(), ping.clone(), last.clone()].concat()
            ),
            Ok((first.len() + ping.len(), Some(Owned::Ping(b"p".to_vec()))))
        );
        assert_eq!(
            decode_once(&mut decoder, &last),
            Ok((last.len(), Some(Owned::Text(b"Hello".to_vec()))))
        );
    }

    #[test]
    fn reports_fragments_consumed_while_the_next_frame_is_incomplete() {
        let first = client_frame(false, BINARY, b"abc");
        let second = client_frame(false, CONTINUATION, b"de");
        let last = client_frame(true, CONTINUATION, b"f");
        let mut decoder = Decoder::default();
        let start = [first.clone(), second.clone(), last[..3].to_vec()].concat();
        assert_eq!(
            decode_once(&mut decoder, &start),
            Ok((first.len() + second.len(), None))
        );
        assert_eq!(decoder.bytes_needed(&last[..3]), 6, "its header");
        assert_eq!(decoder.bytes_needed(&last[..6]), last.len());
        assert_eq!(
            decode_once(&mut decoder, &last),
            Ok((last.len(), Some(Owned::Binary(b"abcdef".to_vec()))))
        );
    }

    #[test]
    fn waits_for_whole_frames_without_touching_them() {
        let mut decoder = Decoder::default();
        let needed: Vec<usize> = (0..RFC_MASKED_HELLO.len())
            .map(|len| decoder.bytes_needed(&RFC_MASKED_HELLO[..len]))
            .collect();
        assert_eq!(needed, [2, 2, 6, 6, 6, 6, 11, 11, 11, 11, 11]);
        for len in 0..RFC_MASKED_HELLO.len() {
            let mut partial = RFC_MASKED_HELLO[..len].to_vec();
            assert_eq!(
                decoder.decode(&mut partial),
                Ok(Decoded {
                    consumed: 0,
                    event: None
                })
            );
            assert_eq!(partial, RFC_MASKED_HELLO[..len], "still masked");
        }

        let medium = client_frame(true, BINARY, &[0; 300]);
        assert_eq!(decoder.bytes_needed(&medium[..2]), 8);
        assert_eq!(decoder.bytes_needed(&medium[..8]), 308);
        let large = client_frame_with(0x82, &[0; 300], [0; 4], LenEncoding::Bits64);
        assert_eq!(decoder.bytes_needed(&large[..2]), 14);
        assert_eq!(decoder.bytes_needed(&large[..14]), 314);
    }

    #[test]
    fn frees_the_assembly_buffer_after_a_message() {
        let mut decoder = Decoder::default();
        let stream = [
            client_frame(false, TEXT, &[b'x'; 5000]),
            client_frame(true, CONTINUATION, b"y"),
        ]
        .concat();
        let mut buf = stream.clone();
        let decoded = decoder
            .decode(&mut buf)
            .map(|decoded| (decoded.consumed, decoded.event.map(Owned::from)));
        let mut message = vec![b'x'; 5000];
        message.push(b'y');
        assert_eq!(decoded, Ok((stream.len(), Some(Owned::Text(message)))));
        assert!(decoder.assembly.capacity() >= 5001);
        assert_eq!(
            decoder.decode(&mut []),
            Ok(Decoded {
                consumed: 0,
                event: None
            })
        );
        assert_eq!(decoder.assembly.capacity(), 0);
    }

    #[test]
    fn decodes_consecutive_frames_from_one_buffer() {
        let stream = [
            client_frame(true, PING, b"1"),
            client_frame(true, TEXT, b"{\"type\":\"ping\"}"),
            client_frame(true, BINARY, &[0, 1, 2]),
            client_frame(true, PONG, b""),
            client_frame(true, CLOSE, &close_payload(1001, b"")),
        ];
        assert_eq!(
            decode_all(&stream.concat()),
            (
                vec![
                    Owned::Ping(b"1".to_vec()),
                    Owned::Text(b"{\"type\":\"ping\"}".to_vec()),
                    Owned::Binary(vec![0, 1, 2]),
                    Owned::Pong(vec![]),
                    Owned::Close(Some(1001), String::new()),
                ],
                None
            )
        );
    }

    #[test]
    fn unmasks_like_the_bytewise_definition() {
        let mut rng = XorShift::new(0x5EED);
        for len in 0..70 {
            let key = [
                rng.next() as u8,
                rng.next() as u8,
                rng.next() as u8,
                rng.next() as u8,
            ];
            let data = rng.bytes(len);
            let mut fast = data.clone();
            unmask(&mut fast, key);
            let bytewise: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, bytewise, "length {len}");
        }
    }

    #[test]
    fn close_error_displays_code_and_reason() {
        assert_eq!(
            CloseError::TOO_BIG.to_string(),
            "websocket close 1009: message too big"
        );
    }
}
