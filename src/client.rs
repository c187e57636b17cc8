//! Minimal blocking HTTP/1.1 client on `std::net`, for the CLI
//! (`fleetgate device add ...`) and for integration tests.
//!
//! One connection per request with `Connection: close`: the CLI makes a
//! handful of calls, so connection reuse would buy nothing and would cost
//! keep-alive bookkeeping. Plain HTTP only; the gateway's admin API is
//! expected to be reached on a trusted network or through a TLS proxy.
//!
//! The wire format is the sans-IO `http::client` (fleetgate-core), which the
//! load harness and the tests' raw sockets read with too; this module is the
//! URL, the socket and the timeouts around it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::http::client::{
    ClientRequest, RequestError, ResponseError, ResponseLimits, ResponseParser,
};

/// A response: status, header fields (names lower-cased) and body.
pub use crate::http::client::Response as ClientResponse;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 * 1024;
const USER_AGENT: &str = concat!("fleetgate/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct Client {
    /// `host:port`, always with an explicit port; used both to connect and
    /// as the `Host` header.
    authority: String,
    token: Option<String>,
    timeout: Duration,
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

/// A path that cannot be sent is the URL's fault; a method or header
/// value that would break the message is the caller's invalid input.
impl From<RequestError> for ClientError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::Target(_) => Self::BadUrl(err.to_string()),
            RequestError::Method(_) | RequestError::HeaderValue => {
                Self::Io(io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))
            }
        }
    }
}

impl From<ResponseError> for ClientError {
    fn from(err: ResponseError) -> Self {
        Self::BadResponse(err.to_string())
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
        let mut stream = self.send(method, path_and_query, body)?;
        read_response(&mut stream, method == "HEAD")
    }

    /// Connects and writes the request; the answer is the caller's to read.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<TcpStream, ClientError> {
        let mut message = Vec::new();
        ClientRequest {
            method,
            target: path_and_query,
            host: &self.authority,
            user_agent: Some(USER_AGENT),
            close: true,
            bearer: self.token.as_deref(),
            body,
        }
        .encode(&mut message)?;
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.write_all(&message)?;
        Ok(stream)
    }

    pub fn get(&self, path_and_query: &str) -> Result<ClientResponse, ClientError> {
        self.request("GET", path_and_query, None)
    }

    /// A GET whose body, if the answer is a success (2xx), is written to `out` as it arrives,
    /// however large: exports. Any other answer is read whole, as `get` does, for its error
    /// message. The response returned carries no body when it went to `out`.
    pub fn get_to(
        &self,
        path_and_query: &str,
        out: &mut dyn Write,
    ) -> Result<ClientResponse, ClientError> {
        let mut stream = self.send("GET", path_and_query, None)?;
        let mut parser = ResponseParser::new(ResponseLimits::default(), false);
        let mut buf = Vec::with_capacity(READ_CHUNK);
        let mut body = Vec::new();
        let success = |status: u16| (200..300).contains(&status);
        let response = loop {
            if let Some((response, _)) = parser.parse(&buf)? {
                break response;
            }
            if parser.status().is_some_and(success) {
                let done = parser.take_body(&buf, &mut body);
                buf.drain(..done);
                out.write_all(&body)?;
                body.clear();
            }
            if read_some(&mut stream, &mut buf, READ_CHUNK)? == 0 {
                break parser.finish(&buf)?.0;
            }
        };
        if !success(response.status) {
            return Ok(response);
        }
        out.write_all(&response.body)?;
        out.flush()?;
        Ok(ClientResponse {
            body: Vec::new(),
            ..response
        })
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

/// Reads the one response on a `Connection: close` connection, whose end
/// also ends a body without a length.
fn read_response(
    stream: &mut impl Read,
    head_request: bool,
) -> Result<ClientResponse, ClientError> {
    let mut parser = ResponseParser::new(ResponseLimits::default(), head_request);
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        if let Some((response, _)) = parser.parse(&buf)? {
            return Ok(response);
        }
        if read_some(stream, &mut buf, READ_CHUNK)? == 0 {
            return Ok(parser.finish(&buf)?.0);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Parse;
    use crate::http::request::parse;
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

    /// One whole request, read with the server's own parser.
    fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            let limits = crate::http::Limits::default();
            if let Parse::Complete { consumed, .. } = parse(&buf, &limits).unwrap() {
                assert_eq!(consumed, buf.len(), "the client sent more than one request");
                return buf;
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
    fn get_to_streams_a_success_and_keeps_an_error_whole() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na\n\n\r\n2\r\nb\n\r\n0\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nwrong".to_vec(),
        ]);
        let mut out = Vec::new();
        let ok = client.get_to("/x.ndjson", &mut out).unwrap();
        assert_eq!((ok.status, ok.body.len()), (200, 0));
        assert_eq!(out, b"a\n\nb\n");
        let mut untouched = Vec::new();
        let bad = client.get_to("/x.ndjson?from=x", &mut untouched).unwrap();
        assert_eq!((bad.status, bad.text()), (400, "wrong".to_owned()));
        assert!(untouched.is_empty(), "an error body is not written out");
        server.join().unwrap();
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

    #[test]
    fn interim_and_chunked_answers_are_read_through_the_shared_parser() {
        let (client, server) = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ]);
        let resp = client.get("/api/attendance.csv").unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "Wikipedia"));
        let head = client.request("HEAD", "/api/attendance.csv", None).unwrap();
        assert_eq!((head.status, head.body.len()), (200, 0));
        match client.get("/") {
            Err(ClientError::BadResponse(msg)) => assert_eq!(
                msg,
                "Transfer-Encoding \"gzip\" is not supported by the built-in client"
            ),
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
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
