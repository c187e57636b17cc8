//! The client's end of RFC 6455 framing, for the load harness and the integration tests that
//! talk to the server byte by byte: frames a client writes are masked with a key it picks, and
//! what the server sends is read with [`Decoder::client`](super::Decoder::client). Both are the
//! server's own codec run from the other end, so there is one framer to keep right.

use super::frame::{Opcode, encode_whole};

/// Appends one complete (FIN=1) frame masked with `key`, as a client must send every frame
/// (RFC 6455 5.3), with the shortest length encoding.
///
/// The key only has to vary from frame to frame, not be unpredictable, for the peers that use
/// this (see RFC 6455 10.3 for why browsers need better): the caller picks it. A control
/// frame's payload must fit in [`MAX_CONTROL_PAYLOAD`](super::MAX_CONTROL_PAYLOAD) bytes
/// (checked in debug builds).
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], key: [u8; 4]) {
    encode_whole(out, opcode, payload, Some(key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ws::{RFC_KEY, RFC_MASKED_HELLO, RFC_UNMASKED_HELLO};
    use crate::ws::{CloseError, Decoder, Limits, OwnedEvent, encode_close};

    /// Every event a client-side decoder makes of `bytes`, or the error that stopped it.
    fn client_decode(bytes: &[u8]) -> Result<Vec<OwnedEvent>, CloseError> {
        let mut decoder = Decoder::client(Limits::default());
        let mut buf = bytes.to_vec();
        let mut start = 0;
        let mut events = Vec::new();
        loop {
            let decoded = decoder.decode(&mut buf[start..])?;
            start += decoded.consumed;
            match decoded.event {
                Some(event) => events.push(OwnedEvent::from(event)),
                None => return Ok(events),
            }
        }
    }

    #[test]
    fn encodes_the_rfc_masked_hello() {
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, b"Hello", RFC_KEY);
        assert_eq!(out, RFC_MASKED_HELLO);
    }

    #[test]
    fn the_server_decodes_what_the_client_encodes_at_every_length_form() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frame = Vec::new();
            encode_frame(&mut frame, Opcode::Binary, &payload, [1, 2, 3, 4]);
            let mut decoder = Decoder::new(Limits::default());
            let decoded = decoder
                .decode(&mut frame)
                .map(|d| (d.consumed == frame_len(len), d.event.map(OwnedEvent::from)));
            assert_eq!(
                decoded,
                Ok((true, Some(OwnedEvent::Binary(payload)))),
                "length {len}"
            );
        }
    }

    /// Header (2, 4 or 10 bytes), key and payload.
    fn frame_len(payload: usize) -> usize {
        let header = match payload {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        header + 4 + payload
    }

    #[test]
    fn a_client_decodes_what_the_server_encodes() {
        let mut stream = RFC_UNMASKED_HELLO.to_vec();
        crate::ws::encode_frame(&mut stream, Opcode::Ping, b"hb");
        encode_close(&mut stream, 1001, "going away");
        assert_eq!(
            client_decode(&stream),
            Ok(vec![
                OwnedEvent::Text(b"Hello".to_vec()),
                OwnedEvent::Ping(b"hb".to_vec()),
                OwnedEvent::Close(Some(1001), "going away".to_owned()),
            ])
        );
    }

    #[test]
    fn a_client_refuses_masked_frames_and_waits_for_partial_ones() {
        assert_eq!(
            client_decode(&RFC_MASKED_HELLO).map_err(|e| (e.code, e.reason)),
            Err((1002, "server frame masked"))
        );
        for len in 0..RFC_UNMASKED_HELLO.len() {
            assert_eq!(client_decode(&RFC_UNMASKED_HELLO[..len]), Ok(vec![]));
        }
    }
}
