//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a TCP load balancer puts in
//! front of a connection to say which client it carries. Sans-IO: bytes in, the header's length
//! and the client's address out. Only connections from `--trusted-proxies` are read this way; from
//! anyone else such a header would be a forged address.
//!
//! Version 1 is one text line (`PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, at most 107 bytes);
//! version 2 is a 16-byte binary preamble and an address block whose length it states (TLVs after
//! the addresses are skipped). `LOCAL` (v2) and `UNKNOWN` (v1) headers carry no client: the
//! balancer's own health check, for instance; the connection keeps its peer address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line the specification allows, CRLF included.
pub const V1_MAX: usize = 107;
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The largest v2 header accepted: the preamble and an address block with a modest TLV section.
/// Balancers send far less (28 bytes for IPv4, 52 for IPv6, plus a few TLVs).
pub const V2_MAX: usize = 1024;
/// How much a reader must be able to look at to decide: the larger of the two maxima.
pub const MAX: usize = V2_MAX;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The connection does not start with a PROXY header.
    Absent,
    /// The bytes so far are the start of a header: read more.
    Partial,
    /// A complete header of `len` bytes. `source`: the client's address, or None when the header
    /// names none (LOCAL, UNKNOWN, or a non-IP family).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Error(pub &'static str);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid PROXY protocol header: {}", self.0)
    }
}

impl std::error::Error for Error {}

/// Reads a PROXY header at the start of `buf`, if there is one.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    if starts(buf, V2_SIG) {
        return if buf.len() < V2_SIG.len() {
            Ok(Parsed::Partial)
        } else {
            v2(buf)
        };
    }
    if starts(buf, V1_PREFIX) {
        return if buf.len() < V1_PREFIX.len() {
            Ok(Parsed::Partial)
        } else {
            v1(buf)
        };
    }
    Ok(Parsed::Absent)
}

/// Whether `buf` and `sig` agree on their common length.
fn starts(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error("v1 line longer than 107 bytes"))
        } else {
            Ok(Parsed::Partial)
        };
    };
    let line =
        std::str::from_utf8(&buf[V1_PREFIX.len()..end]).map_err(|_| Error("v1 not ASCII"))?;
    let len = end + 2;
    let mut f = line.split(' ');
    let source = match f.next() {
        Some("UNKNOWN") => None,
        Some(fam @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(_dst), Some(sport), Some(_dport), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(Error("v1 needs exactly: family, two addresses, two ports"));
            };
            let ip: IpAddr = src.parse().map_err(|_| Error("v1 source address"))?;
            if ip.is_ipv4() != (fam == "TCP4") {
                return Err(Error("v1 address does not match its family"));
            }
            let port = port(sport)?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(Error("v1 family must be TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Header { len, source })
}

/// A decimal port, without sign or leading zeros beyond "0" itself (as the specification asks).
fn port(s: &str) -> Result<u16, Error> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Error("v1 port"));
    }
    s.parse().map_err(|_| Error("v1 port"))
}

fn v2(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.len() < 16 {
        return Ok(Parsed::Partial);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Error("v2 version"));
    }
    let fam = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Err(Error("v2 header larger than 1024 bytes"));
    }
    if buf.len() < len {
        return Ok(Parsed::Partial);
    }
    let addrs = &buf[16..len];
    let source = match ver_cmd & 0x0f {
        // LOCAL: the balancer speaking for itself; the address block is to be ignored.
        0 => None,
        1 => match fam >> 4 {
            1 => {
                let a = addrs.get(..12).ok_or(Error("v2 IPv4 block too short"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[8], a[9]]),
                ))
            }
            2 => {
                let a = addrs.get(..36).ok_or(Error("v2 IPv6 block too short"))?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[..16]);
                let ip = Ipv6Addr::from(octets);
                Some(SocketAddr::new(
                    IpAddr::V6(ip),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // UNSPEC or UNIX: no IP client to speak of.
            0 | 3 => None,
            _ => return Err(Error("v2 address family")),
        },
        _ => return Err(Error("v2 command")),
    };
    Ok(Parsed::Header { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn v2_header(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_lines_give_the_client() {
        let b = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 3000\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(b),
            Ok(Parsed::Header {
                len: 44,
                source: sa("203.0.113.7:56324")
            })
        );
        let b = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 3000\r\n";
        assert_eq!(
            parse(b),
            Ok(Parsed::Header {
                len: b.len(),
                source: sa("[2001:db8::7]:4000")
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                len: 15,
                source: None
            })
        );
    }

    #[test]
    fn prefixes_wait_and_other_bytes_pass() {
        for partial in [
            &b"P"[..],
            b"PROX",
            b"PROXY TCP4 1.2.3.4",
            b"\r\n\r\n\0",
            &V2_SIG[..],
        ] {
            assert_eq!(parse(partial), Ok(Parsed::Partial), "{partial:?}");
        }
        for other in [
            &b"POST /api HTTP/1.1"[..],
            b"GET /",
            b"PUT ",
            b"\x16\x03\x01",
            b"PATCH",
        ] {
            assert_eq!(parse(other), Ok(Parsed::Absent), "{other:?}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Partial), "nothing to tell by yet");
    }

    #[test]
    fn malformed_v1_is_refused() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 x 5.6.7.8 1 2\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_MAX + 5, b'1');
        assert!(parse(&long).is_err());
    }

    #[test]
    fn v2_gives_the_client_and_skips_tlvs() {
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&3000u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0, 2, b'h', b'i']); // a NOOP TLV
        let mut h = v2_header(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len,
                source: sa("203.0.113.7:56324")
            })
        );
        assert_eq!(parse(&h[..len - 1]), Ok(Parsed::Partial));

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&4000u16.to_be_bytes());
        body.extend_from_slice(&3000u16.to_be_bytes());
        let h = v2_header(1, 0x21, &body);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: h.len(),
                source: sa("[2001:db8::7]:4000")
            })
        );
    }

    #[test]
    fn v2_local_and_bad_headers() {
        let h = v2_header(0, 0x00, &[]);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Header {
                len: 16,
                source: None
            })
        );
        assert!(
            parse(&v2_header(1, 0x11, &[1, 2, 3])).is_err(),
            "short block"
        );
        assert!(parse(&v2_header(5, 0x11, &[0; 12])).is_err(), "command");
        assert!(parse(&v2_header(1, 0x41, &[0; 12])).is_err(), "family");
        let mut h = v2_header(1, 0x11, &[0; 12]);
        h[12] = 0x11;
        assert!(parse(&h).is_err(), "version");
        let mut big = v2_header(1, 0x11, &[0; 12]);
        big[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(parse(&big).is_err(), "too large");
    }
}
