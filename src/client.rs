//! Minimal blocking HTTP/1.1 client on `std::net`, for the CLI
//! (`fleetgate device add ...`) and for integration tests.
//!
//! One connection per request with `Connection: close`: the CLI makes a
//! handful of calls, so connection reuse would buy nothing and would cost
//! keep-alive bookkeeping. Plain HTTP only; the gateway's admin API is
//! expected to be reached on a trusted network or through a TLS proxy.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Upper bound on head plus body we are willing to buffer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The head is re-parsed after every read until it completes, so it gets a
/// much smaller bound than the body to keep that quadratic work trivial.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 64;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct Client {
    /// `host:port`, always with an explicit port; used both to connect and
    /// as the `Host` header.
    authority: String,
    token: Option<String>,
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// Body as text; invalid UTF-8 is replaced so error bodies stay printable.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First header field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub enum ClientError {
    BadUrl(String),
    Io(io::Error),
    BadResponse(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(msg) => write!(f, "bad URL: {msg}"),
            Self::Io(err) => write!(f, "I/O error: {err}"),
            Self::BadResponse(msg) => write!(f, "bad response: {msg}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(err) => Some(err),
            Self::BadUrl(_) | Self::BadResponse(_) => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl Client {
    /// Accepts `http://host[:port]` with an optional trailing slash; the
    /// port defaults to 80. A path is refused rather than silently dropped,
    /// since a base URL with a prefix would not mean what it says.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let url = base_url.strip_suffix('/').unwrap_or(base_url);
        let Some((scheme, authority)) = url.split_once("://") else {
            return Err(ClientError::BadUrl(format!(
                "{base_url:?}: expected http://host:port"
            )));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(ClientError::BadUrl(
                "TLS not supported by the built-in client; use http:// on a trusted network or a local TLS-terminating proxy".into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(ClientError::BadUrl(format!(
                "{base_url:?}: unsupported scheme {scheme:?}, expected http://"
            )));
        }
        Ok(Self {
            authority: normalise_authority(authority)
                .map_err(|why| ClientError::BadUrl(format!("{base_url:?}: {why}")))?,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self
        }
    }

    /// Bounds connecting and every single read and write (default 30 s).
    /// Name resolution is not covered: std offers no timeout for it.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self {
            // std rejects a zero socket timeout.
            timeout: timeout.max(Duration::from_millis(1)),
            ..self
        }
    }

    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<ClientResponse, ClientError> {
        let message = self.encode_request(method, path_and_query, body)?;
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.write_all(&message)?;
        read_response(&mut stream, method == "HEAD", MAX_RESPONSE_BYTES)
    }

    pub fn get(&self, path_and_query: &str) -> Result<ClientResponse, ClientError> {
        self.request("GET", path_and_query, None)
    }

    pub fn post_json(
        &self,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<ClientResponse, ClientError> {
        self.request("POST", path_and_query, Some(("application/json", body)))
    }

    pub fn patch_json(
        &self,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<ClientResponse, ClientError> {
        self.request("PATCH", path_and_query, Some(("application/json", body)))
    }

    pub fn delete(&self, path_and_query: &str) -> Result<ClientResponse, ClientError> {
        self.request("DELETE", path_and_query, None)
    }

    /// Head and body go out as one buffer so they leave in one segment
    /// rather than stalling on Nagle's algorithm between two writes.
    fn encode_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Vec<u8>, ClientError> {
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(invalid_input(format!("invalid method {method:?}")));
        }
        if !path_and_query.starts_with('/')
            || path_and_query.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(ClientError::BadUrl(format!(
                "{path_and_query:?}: expected an absolute path without spaces or control characters"
            )));
        }
        let content_type = body.map(|(content_type, _)| content_type);
        for value in [self.token.as_deref(), content_type].into_iter().flatten() {
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(invalid_input("header value contains CR, LF or NUL".into()));
            }
        }
        let payload = body.map_or(&[][..], |(_, bytes)| bytes);
        let mut out = Vec::with_capacity(256 + payload.len());
        for part in [
            method,
            " ",
            path_and_query,
            " HTTP/1.1\r\nHost: ",
            &self.authority,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(
            concat!(
                "\r\nUser-Agent: fleetgate/",
                env!("CARGO_PKG_VERSION"),
                "\r\nConnection: close\r\n"
            )
            .as_bytes(),
        );
        if let Some(token) = &self.token {
            out.extend_from_slice(b"Authorization: Bearer ");
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(content_type) = content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // Bodiless POST/PUT/PATCH still announce a zero length: some servers
        // and proxies answer 411 otherwise.
        if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", payload.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        Ok(out)
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let mut last_err = None;
        for addr in self.authority.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(stream) => return Ok(stream),
                Err(err) => last_err = Some(err),
            }
        }
        Err(ClientError::Io(last_err.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no address", self.authority),
            )
        })))
    }
}

fn invalid_input(message: String) -> ClientError {
    ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, message))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Validates `host[:port]` and makes the port explicit.
fn normalise_authority(authority: &str) -> Result<String, String> {
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if let Some(bad) = authority
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')))
    {
        return Err(format!(
            "unexpected {bad:?}; only http://host:port is accepted (no path, query or credentials)"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    if host.is_empty() || (host.contains([':', '[', ']']) && !bracketed) {
        return Err("invalid host (IPv6 addresses need brackets)".into());
    }
    match port {
        None => Ok(format!("{host}:80")),
        Some(port) => match port.parse::<u16>() {
            Ok(1..) => Ok(authority.to_owned()),
            _ => Err(format!("invalid port {port:?}")),
        },
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    len: usize,
}

/// Reads one response, skipping interim 1xx responses (other than 101,
/// which is final). The body is framed by Content-Length or, failing that,
/// by EOF; `Connection: close` makes the latter unambiguous.
fn read_response(
    stream: &mut impl Read,
    head_request: bool,
    cap: usize,
) -> Result<ClientResponse, ClientError> {
    let mut buf = Vec::with_capacity(8 * 1024);
    let head = loop {
        match parse_head(&buf)? {
            Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                buf.drain(..head.len);
            }
            Some(head) => break head,
            None => {
                let head_cap = cap.min(MAX_RESPONSE_HEAD);
                if buf.len() >= head_cap {
                    return Err(ClientError::BadResponse(format!(
                        "response head exceeds {head_cap} bytes"
                    )));
                }
                if read_some(stream, &mut buf, READ_CHUNK)? == 0 {
                    return Err(ClientError::BadResponse(
                        "connection closed before the response head was complete".into(),
                    ));
                }
            }
        }
    };
    let no_body = head_request || matches!(head.status, 100..=199 | 204 | 304);
    if no_body {
        return Ok(ClientResponse {
            status: head.status,
            headers: head.headers,
            body: Vec::new(),
        });
    }
    if let Some((_, te)) = head.headers.iter().find(|(n, _)| n == "transfer-encoding") {
        if !te.trim().eq_ignore_ascii_case("chunked") {
            return Err(ClientError::BadResponse(format!(
                "Transfer-Encoding {te:?} is not supported by the built-in client"
            )));
        }
        // Requests are sent with `Connection: close`, so the chunked body ends at EOF too: read
        // it whole (bounded by `cap`), then take the chunks apart.
        loop {
            if buf.len() > cap {
                return Err(too_large(cap));
            }
            if read_some(stream, &mut buf, READ_CHUNK)? == 0 {
                break;
            }
        }
        return Ok(ClientResponse {
            status: head.status,
            headers: head.headers,
            body: dechunk(&buf[head.len..])?,
        });
    }
    let content_length = head
        .headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| ClientError::BadResponse(format!("invalid Content-Length {v:?}")))
        })
        .transpose()?;
    let body = match content_length {
        Some(len) => {
            let end = head
                .len
                .checked_add(len)
                .filter(|&end| end <= cap)
                .ok_or_else(|| too_large(cap))?;
            buf.reserve(end.saturating_sub(buf.len()));
            while buf.len() < end {
                let want = (end - buf.len()).min(READ_CHUNK);
                if read_some(stream, &mut buf, want)? == 0 {
                    return Err(ClientError::BadResponse(format!(
                        "connection closed after {} of {len} body bytes",
                        buf.len() - head.len
                    )));
                }
            }
            buf[head.len..end].to_vec()
        }
        None => loop {
            if buf.len() > cap {
                return Err(too_large(cap));
            }
            if read_some(stream, &mut buf, READ_CHUNK)? == 0 {
                break buf.split_off(head.len);
            }
        },
    };
    Ok(ClientResponse {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// Decodes a complete chunked body (RFC 9112 §7.1): hex sizes (extensions ignored), data, and a
/// final zero-size chunk; trailers are skipped.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = |m: &str| ClientError::BadResponse(format!("malformed chunked body: {m}"));
    let mut out = Vec::with_capacity(data.len());
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("missing chunk size"))?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| bad("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size is not hex"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| bad("chunk shorter than its size"))?;
        out.extend_from_slice(chunk);
        data = data
            .get(size..)
            .and_then(|d| d.strip_prefix(b"\r\n"))
            .ok_or_else(|| bad("chunk not followed by CRLF"))?;
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            status: response.code.unwrap_or_default(),
            headers: response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            len,
        })),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(err) => Err(ClientError::BadResponse(format!(
            "malformed response head: {err}"
        ))),
    }
}

/// One `read` of at most `max` bytes appended to `buf`, retrying on EINTR.
fn read_some(stream: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max, 0);
    let result = loop {
        match stream.read(&mut buf[start..]) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            other => break other,
        }
    };
    buf.truncate(start + result.as_ref().map_or(0, |&n| n));
    result
}

fn too_large(cap: usize) -> ClientError {
    ClientError::BadResponse(format!("response exceeds {cap} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    const UA: &str = concat!("User-Agent: fleetgate/", env!("CARGO_PKG_VERSION"));

    /// Serves one canned response per entry of `responses`, one connection
    /// each, and returns the raw requests it received. Every wait is
    /// bounded so a broken client fails the test instead of hanging it.
    fn serve(responses: Vec<Vec<u8>>) -> (Client, JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut requests = Vec::new();
            for response in responses {
                let mut stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break stream,
                        Err(_) if Instant::now() < deadline => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(err) => panic!("no connection: {err}"),
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                requests.push(read_request(&mut stream));
                stream.write_all(&response).unwrap();
            }
            requests
        });
        (Client::new(&base).unwrap(), handle)
    }

    fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if buf.len() >= head_end + 4 + body_len {
                    return buf;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "client closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn get_sends_the_exact_request_and_parses_the_response() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\nContent-Length: 11\r\n\r\n{\"ok\":true}".to_vec(),
        ]);
        let port = client.authority.rsplit_once(':').unwrap().1.to_owned();
        let resp = client.with_token("s3cret").get("/devices?limit=2").unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "{\"ok\":true}");
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(resp.header("x-request-id"), Some("r1"));
        assert_eq!(resp.header("missing"), None);
        assert_eq!(
            resp.headers[0],
            ("content-type".to_owned(), "application/json".to_owned())
        );
        let requests = server.join().unwrap();
        assert_eq!(
            text(&requests[0]),
            format!(
                "GET /devices?limit=2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{UA}\r\nConnection: close\r\nAuthorization: Bearer s3cret\r\n\r\n"
            )
        );
    }

    #[test]
    fn json_methods_send_bodies_and_delete_does_not() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let host = client.authority.clone();
        assert_eq!(
            client
                .post_json("/devices", b"{\"id\":\"d1\"}")
                .unwrap()
                .status,
            201
        );
        assert_eq!(client.patch_json("/devices/d1", b"{}").unwrap().status, 200);
        assert_eq!(client.delete("/devices/d1").unwrap().status, 204);
        assert_eq!(
            client
                .request("POST", "/devices/d1/reboot", None)
                .unwrap()
                .status,
            202
        );
        let requests: Vec<String> = server.join().unwrap().iter().map(|r| text(r)).collect();
        assert_eq!(
            requests,
            [
                format!(
                    "POST /devices HTTP/1.1\r\nHost: {host}\r\n{UA}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"id\":\"d1\"}}"
                ),
                format!(
                    "PATCH /devices/d1 HTTP/1.1\r\nHost: {host}\r\n{UA}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                ),
                format!(
                    "DELETE /devices/d1 HTTP/1.1\r\nHost: {host}\r\n{UA}\r\nConnection: close\r\n\r\n"
                ),
                format!(
                    "POST /devices/d1/reboot HTTP/1.1\r\nHost: {host}\r\n{UA}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                ),
            ]
        );
    }

    #[test]
    fn body_without_length_is_read_until_eof() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed until close".to_vec(),
        ]);
        let resp = client.get("/metrics").unwrap();
        assert_eq!(
            (resp.status, resp.text().as_str()),
            (200, "streamed until close")
        );
        server.join().unwrap();
    }

    #[test]
    fn large_body_arrives_intact() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        response.extend_from_slice(&body);
        let (client, server) = serve(vec![response]);
        assert_eq!(client.get("/export").unwrap().body, body);
        server.join().unwrap();
    }

    #[test]
    fn truncated_body_is_a_bad_response() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        ]);
        match client.get("/") {
            Err(ClientError::BadResponse(msg)) => {
                assert_eq!(msg, "connection closed after 3 of 10 body bytes")
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn silent_server_hits_the_read_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Client::new(&format!("http://{}", listener.local_addr().unwrap()))
            .unwrap()
            .with_timeout(Duration::from_millis(100));
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            read_request(&mut stream);
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let started = Instant::now();
        match client.get("/slow") {
            Err(ClientError::Io(err)) => assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{err:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        server.join().unwrap();
    }

    #[test]
    fn refused_connection_is_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        match Client::new(&base).unwrap().get("/") {
            Err(ClientError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("{other:?}"),
        }
    }

    fn read(
        response: &[u8],
        head_request: bool,
        cap: usize,
    ) -> Result<ClientResponse, ClientError> {
        read_response(&mut &response[..], head_request, cap)
    }

    #[test]
    fn interim_responses_are_skipped() {
        let resp = read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            MAX_RESPONSE_BYTES,
        )
        .unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
        let upgraded = read(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00",
            false,
            1024,
        )
        .unwrap();
        assert_eq!((upgraded.status, upgraded.body.len()), (101, 0));
    }

    #[test]
    fn head_and_bodiless_statuses_ignore_content_length() {
        let resp = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 1024).unwrap();
        assert_eq!(
            (resp.status, resp.header("content-length"), resp.body.len()),
            (200, Some("5"), 0)
        );
        let resp = read(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            false,
            1024,
        )
        .unwrap();
        assert_eq!((resp.status, resp.body.len()), (304, 0));
    }

    #[test]
    fn responses_over_the_cap_are_refused() {
        let declared = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            false,
            100,
        );
        assert!(
            matches!(declared, Err(ClientError::BadResponse(m)) if m == "response exceeds 100 bytes")
        );
        let streamed = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 200]].concat();
        assert!(matches!(
            read(&streamed, false, 100),
            Err(ClientError::BadResponse(_))
        ));
        let huge_head = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'x'; 200]].concat();
        assert!(matches!(
            read(&huge_head, false, 100),
            Err(ClientError::BadResponse(m)) if m == "response head exceeds 100 bytes"
        ));
        let endless_head = [
            &b"HTTP/1.1 200 OK\r\nX: "[..],
            &vec![b'x'; MAX_RESPONSE_HEAD],
        ]
        .concat();
        assert!(matches!(
            read(&endless_head, false, MAX_RESPONSE_BYTES),
            Err(ClientError::BadResponse(m)) if m == "response head exceeds 65536 bytes"
        ));
        let fits = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 81]].concat();
        assert_eq!(read(&fits, false, 100).unwrap().body.len(), 81);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let r = read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
            1024,
        )
        .unwrap();
        assert_eq!(r.body, b"Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    fn malformed_responses_are_refused() {
        for (response, expected) in [
            (
                &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
                "malformed response head: invalid HTTP version",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "invalid Content-Length \"x\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Transfer-Encoding \"gzip\" is not supported by the built-in client",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
                "malformed chunked body: chunk shorter than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-",
                "connection closed before the response head was complete",
            ),
            (
                b"",
                "connection closed before the response head was complete",
            ),
        ] {
            match read(response, false, 1024) {
                Err(ClientError::BadResponse(msg)) => assert_eq!(msg, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn base_url_validation() {
        for (url, authority) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
            ("HTTP://gw.local", "gw.local:80"),
            ("http://[::1]:9000/", "[::1]:9000"),
            ("http://[::1]", "[::1]:80"),
        ] {
            assert_eq!(Client::new(url).unwrap().authority, authority, "{url}");
        }
        match Client::new("https://gw.local:8443") {
            Err(ClientError::BadUrl(msg)) => assert!(
                msg.starts_with("TLS not supported by the built-in client"),
                "{msg}"
            ),
            other => panic!("{:?}", other.map(|c| c.authority)),
        }
        for url in [
            "gw.local:8080",
            "ftp://gw",
            "http://",
            "http://gw:0",
            "http://gw:99999",
            "http://gw:",
            "http://gw/api",
            "http://gw:80//",
            "http://user@gw",
            "http://gw?x=1",
            "http://::1",
            "http://[]:80",
        ] {
            assert!(
                matches!(Client::new(url), Err(ClientError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn request_parts_that_would_break_the_message_are_refused() {
        let client = Client::new("http://127.0.0.1:9").unwrap();
        assert!(matches!(client.get("devices"), Err(ClientError::BadUrl(_))));
        assert!(matches!(client.get("/a b"), Err(ClientError::BadUrl(_))));
        assert!(matches!(
            client.get("/a\r\nX: y"),
            Err(ClientError::BadUrl(_))
        ));
        for result in [
            client.request("GE T", "/", None),
            client.request("", "/", None),
            client.request("POST", "/", Some(("text/plain\r\nX: y", b""))),
            client.clone().with_token("t\nX: y").get("/"),
        ] {
            match result {
                Err(ClientError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::InvalidInput),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn errors_display_their_cause() {
        assert_eq!(ClientError::BadUrl("x".into()).to_string(), "bad URL: x");
        assert_eq!(
            ClientError::BadResponse("y".into()).to_string(),
            "bad response: y"
        );
        let io = ClientError::from(io::Error::other("z"));
        assert_eq!(io.to_string(), "I/O error: z");
        assert!(std::error::Error::source(&io).is_some());
    }
}
