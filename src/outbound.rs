//! Outbound HTTP(S) requests to operators' endpoints (webhooks): one POST, blocking, on the
//! sender's own thread. Bounded in every way a far end could abuse: one deadline for the whole
//! exchange (connect, TLS, write, answer), an answer of at most `MAX_ANSWER` bytes, redirects not
//! followed (a 3xx is a failure), and targets on loopback, private, link-local or otherwise
//! internal addresses refused unless the operator allows them (`--webhooks-allow-private`): a
//! webhook URL must not become a way to reach the server's own network. The address checked is the
//! address connected to, so a name cannot resolve differently between the two.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::http::client::{Response, ResponseLimits, ResponseParser};

/// The largest answer read (head and body); longer ones fail the attempt.
pub const MAX_ANSWER: usize = 64 * 1024;

/// A URL an endpoint may have: `http://` or `https://`, a host, an optional port and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, from the `/` on.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("a URL starts with http:// or https://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err("a URL starts with http:// or https://".into()),
        };
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("a URL holds no spaces or control characters".into());
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err("a URL carries no user name or password".into());
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 host is written [addr]")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| "the port is a number")?,
                None if after.is_empty() => default_port,
                None => return Err("unexpected text after the host".into()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| "the port is a number")?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err("a URL names a host (and a port from 1)".into());
        }
        Ok(Target {
            https,
            host,
            port,
            path,
        })
    }

    /// `Host:` as the request writes it.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Addresses a webhook may not reach unless allowed: this host, private networks (RFC 1918,
/// unique local), link-local (cloud metadata services live there), shared address space,
/// unspecified, broadcast, multicast, documentation and benchmarking ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// What an attempt came to: the far end's answer, or why there was none.
pub type Answer = Result<Response, String>;

/// POSTs `body` to `target` with `headers` (beside `Host`, `Content-Type: application/json`,
/// `Content-Length`, `Connection: close`), all within `timeout`.
pub fn post(
    target: &Target,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    allow_internal: bool,
) -> Answer {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    if !allow_internal && let Some(a) = addrs.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{} resolves to {}, an internal address: allowed only when the server runs with --webhooks-allow-private",
            target.host,
            a.ip()
        ));
    }
    let mut last = format!("{} resolved to no address", target.host);
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => return exchange(tcp, target, headers, body, deadline),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// The TLS client's configuration: Mozilla's roots (`webpki-roots`), ring, TLS 1.2 and 1.3.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| format!("TLS: {e}"))
        })
        .clone()
}

/// Every read and write gets what is left of the deadline.
struct Deadline<S> {
    inner: S,
    tcp: TcpStream,
    deadline: Instant,
}

impl<S> Deadline<S> {
    fn arm(&self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ));
        }
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl<S: Read> Read for Deadline<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Deadline<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.arm()?;
        self.inner.flush()
    }
}

fn exchange(
    tcp: TcpStream,
    target: &Target,
    headers: &[(&str, String)],
    body: &[u8],
    deadline: Instant,
) -> Answer {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fleetgate-webhooks/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let tcp2 = tcp.try_clone().map_err(|e| e.to_string())?;
    if target.https {
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| format!("{} is not a name TLS can check", target.host))?;
        let conn =
            rustls::ClientConnection::new(tls_config()?, name).map_err(|e| format!("TLS: {e}"))?;
        let stream = rustls::StreamOwned::new(conn, tcp);
        talk(
            Deadline {
                inner: stream,
                tcp: tcp2,
                deadline,
            },
            head.as_bytes(),
            body,
        )
    } else {
        talk(
            Deadline {
                inner: tcp,
                tcp: tcp2,
                deadline,
            },
            head.as_bytes(),
            body,
        )
    }
}

fn talk<S: Read + Write>(mut s: S, head: &[u8], body: &[u8]) -> Answer {
    s.write_all(head)
        .and_then(|()| s.write_all(body))
        .and_then(|()| s.flush())
        .map_err(|e| format!("sending: {e}"))?;
    let limits = ResponseLimits {
        max_head: 16 * 1024,
        max_headers: 64,
        max_response: MAX_ANSWER,
    };
    let mut parser = ResponseParser::new(limits, false);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((r, _)) = parser.parse(&buf).map_err(|e| format!("answer: {e}"))? {
            return Ok(r);
        }
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        if n == 0 {
            return parser
                .finish(&buf)
                .map(|(r, _)| r)
                .map_err(|e| format!("answer: {e}"));
        }
        if buf.len() + n > MAX_ANSWER {
            return Err(format!("the answer is longer than {MAX_ANSWER} bytes"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_strictly() {
        let t = Target::parse("https://hr.example.com/hooks/in?x=1").expect("parses");
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hr.example.com", 443, "/hooks/in?x=1")
        );
        assert_eq!(t.host_header(), "hr.example.com");
        let t = Target::parse("http://127.0.0.1:8080").expect("parses");
        assert_eq!((t.port, t.path.as_str()), (8080, "/"));
        assert_eq!(t.host_header(), "127.0.0.1:8080");
        let t = Target::parse("http://[::1]:9/a#frag").expect("parses");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 9, "/a"));
        assert_eq!(t.host_header(), "[::1]:9");
        for bad in [
            "ftp://x",
            "x.example.com",
            "http://",
            "http://user:pw@x/",
            "http://x:notaport/",
            "http://x:0/",
            "http://x/a b",
            "http://[::1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_told_apart() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn internal_targets_are_refused_unless_allowed() {
        let t = Target::parse("http://127.0.0.1:9/").expect("parses");
        let e = post(&t, &[], b"{}", Duration::from_secs(1), false).expect_err("refused");
        assert!(e.contains("--webhooks-allow-private"), "{e}");
    }
}
