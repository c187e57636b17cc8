//! WebSocket (RFC 6455) codec, sans-IO: bytes in, events and bytes out. It owns no socket,
//! thread or clock, so the runtime decides when to read, write and time out, and the codec can
//! be tested and fuzzed on plain byte strings.
//!
//! A session runs [`handshake::accept`] on the upgrade request and writes the 101 response
//! it returns (or the error status), then feeds what it reads to a [`Decoder`] and writes
//! what [`encode_frame`] and [`encode_close`] produce. No extension or subprotocol is ever
//! negotiated, which is why the decoder refuses any frame with a reserved bit set.
//!
//! [`client`] is the other end of the same codec, for the load harness and the tests.

pub mod client;
pub mod frame;
pub mod handshake;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;

pub use frame::{
    CloseError, Decoded, Decoder, Event, LenEncoding, Limits, MAX_CONTROL_PAYLOAD, Opcode,
    OwnedEvent, encode_close, encode_frame, encode_raw,
};
