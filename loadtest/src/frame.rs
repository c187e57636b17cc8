//! Minimal RFC 6455 framing over plain byte buffers.
//!
//! The harness keeps every socket in one readiness loop, so it frames its own buffers instead of
//! wrapping each socket in a stateful WebSocket object: a connection is two `Vec<u8>` and a phase.

/// Opcodes the harness sends or reacts to.
pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The fixed client key: the server only echoes its hash, and a load test gains nothing from
/// a random one.
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Refuse frames larger than this, so a misbehaving peer cannot make the harness buffer without
/// bound (the server's own limit is 1 MiB).
pub const MAX_FRAME: u64 = 4 << 20;

/// Appends one final frame. Clients must mask (RFC 6455 §5.3); servers must not.
pub fn push_frame(buf: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    buf.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        buf.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(mask_bit | 126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(mask_bit | 127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            buf.extend_from_slice(&key);
            buf.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        }
        None => buf.extend_from_slice(payload),
    }
}

/// One parsed frame: `payload` is already unmasked.
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Parses the frame at the start of `buf`. `Ok(None)` means "need more bytes"; on success the
/// caller drains `consumed` bytes.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes exceeds the harness limit"));
    }
    let mut key = None;
    if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        key = Some([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
    }
    let end = pos + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let mut payload = buf[pos..end].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i & 3];
        }
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        end,
    )))
}

/// Position just past the blank line that ends an HTTP head, if it has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_masked_and_long() {
        for len in [0usize, 5, 125, 126, 70_000] {
            let payload = vec![b'x'; len];
            let mut buf = Vec::new();
            push_frame(&mut buf, OP_TEXT, &payload, Some([1, 2, 3, 4]));
            let (f, used) = parse_frame(&buf).expect("valid").expect("complete");
            assert_eq!(used, buf.len());
            assert_eq!(f.payload, payload);
            assert!(parse_frame(&buf[..buf.len() - 1]).expect("valid").is_none());
        }
    }
}
