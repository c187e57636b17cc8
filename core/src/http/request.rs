//! HTTP/1.1 request parsing: bytes in, [`Request`] out.
//!
//! [`parse`] is stateless: the runtime appends whatever it read to one
//! buffer per connection and calls `parse` again. Re-parsing the head on
//! every read is cheap (httparse is SIMD-accelerated and the head is capped
//! by [`Limits::max_header_bytes`]), and it keeps all connection state in
//! the runtime, which owns the buffer anyway.

use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;

use super::query::hex_value;

/// Bounds on what one request may make us buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header fields, including the blank line.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Declared `Content-Length`.
    pub max_body: usize,
    /// The one path whose bodies may be larger, if any.
    pub upload: Option<Upload>,
}

/// A path whose request bodies may exceed `Limits::max_body`: the terminals' endpoint, where a
/// `sendlog` carries a photo per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    pub path: &'static str,
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
            upload: None,
        }
    }
}

impl Limits {
    /// The largest body a request for the (decoded) `path` may declare.
    pub fn max_body_for(&self, path: &str) -> usize {
        match self.upload {
            Some(upload) if upload.path == path => upload.max_body,
            _ => self.max_body,
        }
    }
}

/// Request method. Unknown methods still parse (as `Other`) so the router
/// can answer 405 with an `Allow` header instead of us answering 400.
/// `Other` carries no name on purpose: it keeps metric labels bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    /// Method names are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Percent-decoded path without the query; see [`parse`] for what is
    /// rejected while decoding.
    pub path: String,
    /// Raw query string after `?` (`""` if none); decode it with
    /// [`super::query::parse`].
    pub query: String,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Whether the request arrived over TLS; the parser leaves it false and the runtime, which
    /// knows its transport, sets it.
    pub secure: bool,
}

impl Request {
    /// First header field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Like [`Request::header`], but `None` if the value is not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// RFC 6455 §4.2.1 opening handshake: `GET`, HTTP/1.1, and the
    /// `upgrade` / `websocket` tokens. Key and version checks are left to
    /// the WebSocket handshake code, which has to read them anyway.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == Method::Get
            && self.version == 1
            && self.has_token("connection", b"upgrade")
            && self.has_token("upgrade", b"websocket")
    }

    /// Whether any `name` field carries `token` in its comma-separated list.
    fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .any(|(_, v)| list_contains(v, token))
    }
}

/// A request we refuse, with the status and JSON error code to answer with.
/// After any `HttpError` the runtime should respond and close: the stream
/// position of the next request is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl HttpError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for HttpError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// More bytes needed. `expect_continue` is true once the head is
    /// complete, carries `Expect: 100-continue` (HTTP/1.1 only, RFC 9110
    /// §10.1.1), and no body byte has arrived yet: the runtime then writes
    /// `HTTP/1.1 100 Continue\r\n\r\n` once. (curl sends Expect for bodies
    /// over 1 KiB and otherwise stalls for a second before sending them.)
    Partial { expect_continue: bool },
    /// `consumed` = head + body bytes; pipelined bytes after it belong to
    /// the next request and stay in the runtime's buffer.
    Complete { request: Request, consumed: usize },
}

/// Header slots that live on the stack; the default limit fits, so the
/// common request never allocates for httparse.
const STACK_HEADERS: usize = 64;

/// Parses one request from the start of `buf`.
///
/// Every limit is enforced as early as the bytes allow, so an oversized or
/// unsupported request is refused before its body is buffered:
/// - head over `max_header_bytes` (complete or not) → 431; more than
///   `max_headers` fields → 431;
/// - `Content-Length` over `max_body` (the upload path's own limit for it) → 413 as soon as the
///   head is complete;
///   unparsable or conflicting `Content-Length` → 400;
/// - any `Transfer-Encoding` → 501, and together with `Content-Length` →
///   400. Only `Content-Length` bodies are accepted: device firmware and
///   our own clients all send it, and chunked decoding plus the TE-versus-CL
///   precedence rules are the classic request-smuggling surface whenever a
///   proxy or load balancer sits in front of us;
/// - malformed request line or header → 400; a version other than HTTP/1.0
///   or HTTP/1.1 (including the HTTP/2 preface) → 505.
///
/// The path is percent-decoded strictly: `%` not followed by two hex digits,
/// a control character (C0, DEL or C1; decoded or raw), or a result that is
/// not UTF-8 → 400. An
/// encoded slash (`%2F`) is also 400: decoding it would let `/a%2Fb` route
/// like `/a/b`, and keeping it encoded would make `%2F` in the decoded path
/// ambiguous with a decoded `%252F`. Rejecting it keeps "split the decoded
/// path on `/`" an exact rule for the router, and no resource name of ours
/// contains a slash.
///
/// `Host` is not required (RFC 9112 §3.2 says it should be): we serve one
/// site and never route on it, so refusing minimal firmware HTTP stacks
/// that leave it out would buy nothing.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parse, HttpError> {
    if limits.max_headers <= STACK_HEADERS {
        let mut slots = [MaybeUninit::uninit(); STACK_HEADERS];
        parse_with_slots(buf, limits, &mut slots[..limits.max_headers])
    } else {
        let mut slots = vec![MaybeUninit::uninit(); limits.max_headers];
        parse_with_slots(buf, limits, &mut slots)
    }
}

fn parse_with_slots<'b>(
    buf: &'b [u8],
    limits: &Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Parse, HttpError> {
    // httparse never looks past the window, which bounds the work of every
    // re-parse while a slow client trickles in its head.
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let mut head = httparse::Request::new(&mut []);
    let head_len = match head.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_header_bytes => {
            return Err(HttpError::new(
                431,
                "headers_too_large",
                format!("request head exceeds {} bytes", limits.max_header_bytes),
            ));
        }
        Ok(httparse::Status::Partial) => {
            return Ok(Parse::Partial {
                expect_continue: false,
            });
        }
        Err(err) => return Err(head_error(err, window, limits)),
    };
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        return Err(HttpError::bad_request("incomplete request line"));
    };
    let method = Method::from_token(method);
    let (raw_path, query) = split_target(method, target)?;
    let path = decode_path(raw_path)?;

    let framing = Framing::scan(head.headers);
    let max_body = limits.max_body_for(&path);
    let body_len = framing.body_len(max_body)?;
    let total = head_len
        .checked_add(body_len)
        .ok_or_else(|| payload_too_large(max_body))?;
    if buf.len() < total {
        return Ok(Parse::Partial {
            expect_continue: version == 1 && framing.expect_continue && buf.len() == head_len,
        });
    }

    let headers = head
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let keep_alive = if version == 1 {
        !framing.close
    } else {
        framing.keep_alive && !framing.close
    };
    Ok(Parse::Complete {
        request: Request {
            method,
            path: path.into_owned(),
            query: query.to_owned(),
            headers,
            body: buf[head_len..total].to_vec(),
            keep_alive,
            version,
            secure: false,
        },
        consumed: total,
    })
}

fn head_error(err: httparse::Error, window: &[u8], limits: &Limits) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::new(
            431,
            "headers_too_large",
            format!("more than {} header fields", limits.max_headers),
        ),
        httparse::Error::Version if names_http_version(window) => HttpError::new(
            505,
            "http_version_not_supported",
            "only HTTP/1.0 and HTTP/1.1 are supported",
        ),
        other => HttpError::bad_request(format!("malformed request: {other}")),
    }
}

/// httparse reports a garbled version and a well-formed but unsupported one
/// (`HTTP/2.0`, the HTTP/2 preface `PRI * HTTP/2.0`) the same way; only
/// the latter deserves 505.
fn names_http_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    version.len() > 5 && version.starts_with(b"HTTP/") && version[5].is_ascii_digit()
}

/// Splits the request target into raw path and raw query.
///
/// Besides origin-form (`/path?query`) this accepts absolute-form, which
/// RFC 9112 §3.2.2 requires servers to accept, and `*` for `OPTIONS`.
fn split_target(method: Method, target: &str) -> Result<(&str, &str), HttpError> {
    if target.contains('#') {
        return Err(HttpError::bad_request(
            "request target must not contain a fragment",
        ));
    }
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" && method == Method::Options {
        return Ok(("*", ""));
    } else if let Some(rest) = strip_http_scheme(target) {
        let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
        if path_start == 0 {
            return Err(HttpError::bad_request("absolute URI without a host"));
        }
        &rest[path_start..]
    } else {
        return Err(HttpError::bad_request("request target must start with '/'"));
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    Ok((if path.is_empty() { "/" } else { path }, query))
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    })
}

/// Strict percent-decoding; the rules and the `%2F` decision are documented
/// on [`parse`]. Borrows when there is nothing to decode, which is the
/// common case.
fn decode_path(raw: &str) -> Result<Cow<'_, str>, HttpError> {
    let path = if raw.contains('%') {
        percent_decode(raw)?
    } else {
        Cow::Borrowed(raw)
    };
    // Unicode's C1 controls (U+0080-U+009F, e.g. U+009B, a terminal's CSI) are control
    // characters too, whether sent raw (httparse takes any UTF-8 in the target) or encoded as two
    // bytes (`%C2%9B`), which the byte-wise check in `percent_decode` cannot see. Found by the
    // `http_request` fuzz target.
    if path.chars().any(char::is_control) {
        return Err(HttpError::bad_request("control character in the path"));
    }
    Ok(path)
}

fn percent_decode(raw: &str) -> Result<Cow<'_, str>, HttpError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(HttpError::bad_request(
                "'%' in path must be followed by two hex digits",
            ));
        };
        let decoded = hi << 4 | lo;
        if decoded == b'/' {
            return Err(HttpError::bad_request(
                "encoded '/' (%2F) is not allowed in the path",
            ));
        }
        if decoded.is_ascii_control() {
            return Err(HttpError::bad_request(
                "encoded control character in the path",
            ));
        }
        out.push(decoded);
        i += 3;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| HttpError::bad_request("path is not UTF-8 after percent-decoding"))
}

/// What the header fields say about message framing and the connection,
/// gathered without allocating so a `Partial` answer stays cheap.
struct Framing {
    content_length: ContentLength,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContentLength {
    Absent,
    Valid(u64),
    Invalid,
    Conflicting,
}

impl Framing {
    fn scan(headers: &[httparse::Header<'_>]) -> Self {
        let mut framing = Self {
            content_length: ContentLength::Absent,
            transfer_encoding: false,
            close: false,
            keep_alive: false,
            expect_continue: false,
        };
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                framing.content_length = merge_content_length(framing.content_length, header.value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                framing.transfer_encoding = true;
            } else if name.eq_ignore_ascii_case("connection") {
                framing.close |= list_contains(header.value, b"close");
                framing.keep_alive |= list_contains(header.value, b"keep-alive");
            } else if name.eq_ignore_ascii_case("expect") {
                framing.expect_continue |=
                    trim_ows(header.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        framing
    }

    fn body_len(&self, max_body: usize) -> Result<usize, HttpError> {
        if self.transfer_encoding {
            return Err(if self.content_length == ContentLength::Absent {
                HttpError::new(
                    501,
                    "not_implemented",
                    "Transfer-Encoding is not supported; send the body with Content-Length",
                )
            } else {
                HttpError::bad_request("both Transfer-Encoding and Content-Length are present")
            });
        }
        match self.content_length {
            ContentLength::Absent => Ok(0),
            ContentLength::Invalid => Err(HttpError::bad_request("invalid Content-Length")),
            ContentLength::Conflicting => {
                Err(HttpError::bad_request("conflicting Content-Length values"))
            }
            ContentLength::Valid(len) => usize::try_from(len)
                .ok()
                .filter(|&len| len <= max_body)
                .ok_or_else(|| payload_too_large(max_body)),
        }
    }
}

fn payload_too_large(max_body: usize) -> HttpError {
    HttpError::new(
        413,
        "payload_too_large",
        format!("request body exceeds {max_body} bytes"),
    )
}

/// Folds one more `Content-Length` field into what was seen so far.
/// Repeats, as separate fields or as a list, are accepted only when every
/// value is equal (RFC 9110 §8.6); anything else is a smuggling attempt or
/// a broken client.
fn merge_content_length(seen: ContentLength, value: &[u8]) -> ContentLength {
    value.split(|&b| b == b',').fold(seen, |seen, item| {
        match (seen, parse_decimal(trim_ows(item))) {
            (ContentLength::Invalid | ContentLength::Conflicting, _) => seen,
            (_, None) => ContentLength::Invalid,
            (ContentLength::Absent, Some(len)) => ContentLength::Valid(len),
            (ContentLength::Valid(a), Some(b)) if a == b => seen,
            (ContentLength::Valid(_), Some(_)) => ContentLength::Conflicting,
        }
    })
}

/// `1*DIGIT`, without sign or whitespace. A value too large for u64 is
/// still a well-formed length, so it saturates and then fails the body
/// limit with 413 instead of being called malformed.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn list_contains(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse(buf, &Limits::default()) {
            Ok(Parse::Complete { request, consumed }) => (request, consumed),
            other => panic!(
                "expected Complete for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn status_of(buf: &[u8], limits: &Limits) -> u16 {
        match parse(buf, limits) {
            Err(err) => err.status,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn error(buf: &[u8]) -> HttpError {
        match parse(buf, &Limits::default()) {
            Err(err) => err,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn partial(buf: &[u8]) -> bool {
        match parse(buf, &Limits::default()) {
            Ok(Parse::Partial { expect_continue }) => expect_continue,
            other => panic!("expected Partial, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_simple_get() {
        let buf =
            b"GET /devices/abc?limit=10&cursor=x HTTP/1.1\r\nHost: gw\r\nX-Trace-ID: t1 \r\n\r\n";
        let (req, consumed) = complete(buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(
            req,
            Request {
                method: Method::Get,
                path: "/devices/abc".into(),
                query: "limit=10&cursor=x".into(),
                headers: vec![
                    ("host".into(), b"gw".to_vec()),
                    ("x-trace-id".into(), b"t1".to_vec()),
                ],
                body: Vec::new(),
                keep_alive: true,
                version: 1,
                secure: false,
            }
        );
        assert_eq!(req.header("X-Trace-Id"), Some(&b"t1"[..]));
        assert_eq!(req.header_str("host"), Some("gw"));
        assert_eq!(req.header("missing"), None);
    }

    #[test]
    fn header_str_rejects_non_utf8_values() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nX-Raw: \xff\xfe\r\n\r\n");
        assert_eq!(req.header("x-raw"), Some(&b"\xff\xfe"[..]));
        assert_eq!(req.header_str("x-raw"), None);
    }

    #[test]
    fn body_and_pipelined_request() {
        let first = b"POST /events HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let second = b"DELETE /devices/d1 HTTP/1.1\r\n\r\n";
        let buf = [&first[..], &second[..]].concat();
        let (req, consumed) = complete(&buf);
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.body, b"hello");
        assert_eq!(consumed, first.len());
        let (next, consumed) = complete(&buf[consumed..]);
        assert_eq!(next.method, Method::Delete);
        assert_eq!(next.path, "/devices/d1");
        assert!(next.body.is_empty());
        assert_eq!(consumed, second.len());
    }

    #[test]
    fn one_byte_at_a_time_is_partial_until_the_last_byte() {
        let buf = b"PATCH /devices/caf%C3%A9?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"on\":true}";
        for end in 0..buf.len() {
            assert_eq!(
                parse(&buf[..end], &Limits::default()),
                Ok(Parse::Partial {
                    expect_continue: false
                }),
                "prefix of {end} bytes"
            );
        }
        let (req, consumed) = complete(buf);
        assert_eq!(consumed, buf.len());
        assert_eq!(req.method, Method::Patch);
        assert_eq!(req.path, "/devices/caf\u{e9}");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.body, b"{\"on\":true}");
        assert_eq!(req.header_str("content-type"), Some("application/json"));
    }

    #[test]
    fn leading_blank_lines_are_skipped_and_consumed() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (req, consumed) = complete(buf);
        assert_eq!(req.path, "/");
        assert_eq!(consumed, buf.len());
    }

    #[test]
    fn methods() {
        for (token, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("PATCH", Method::Patch),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PROPFIND", Method::Other),
            ("get", Method::Other),
        ] {
            let (req, _) = complete(format!("{token} / HTTP/1.1\r\n\r\n").as_bytes());
            assert_eq!(req.method, method, "{token}");
        }
    }

    #[test]
    fn head_over_the_limit_is_431_complete_or_not() {
        let limits = Limits {
            max_header_bytes: 64,
            ..Limits::default()
        };
        let long = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(60));
        assert_eq!(status_of(long.as_bytes(), &limits), 431);
        let complete_but_long = format!("{long}\r\n");
        assert_eq!(status_of(complete_but_long.as_bytes(), &limits), 431);
        let exact = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(37));
        assert_eq!(exact.len(), 64);
        assert!(matches!(
            parse(exact.as_bytes(), &limits),
            Ok(Parse::Complete { consumed: 64, .. })
        ));
        assert_eq!(
            parse(&exact.as_bytes()[..63], &limits),
            Ok(Parse::Partial {
                expect_continue: false
            })
        );
    }

    #[test]
    fn body_does_not_count_towards_the_head_limit() {
        let limits = Limits {
            max_header_bytes: 64,
            ..Limits::default()
        };
        let buf = format!(
            "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
            "b".repeat(100)
        );
        assert!(matches!(
            parse(buf.as_bytes(), &limits),
            Ok(Parse::Complete { .. })
        ));
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let three = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(matches!(
            parse(three.as_bytes(), &limits),
            Ok(Parse::Complete { .. })
        ));
        let four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n";
        let err = parse(four.as_bytes(), &limits).unwrap_err();
        assert_eq!((err.status, err.code), (431, "headers_too_large"));
    }

    #[test]
    fn more_header_slots_than_fit_on_the_stack() {
        let limits = Limits {
            max_headers: 100,
            ..Limits::default()
        };
        let fields: String = (0..100).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let buf = format!("GET / HTTP/1.1\r\n{fields}\r\n");
        match parse(buf.as_bytes(), &limits) {
            Ok(Parse::Complete { request, .. }) => {
                assert_eq!(request.headers.len(), 100);
                assert_eq!(request.header_str("x-99"), Some("99"));
            }
            other => panic!("{other:?}"),
        }
        let over = format!("GET / HTTP/1.1\r\n{fields}X-100: 1\r\n\r\n");
        assert_eq!(status_of(over.as_bytes(), &limits), 431);
        assert_eq!(status_of(buf.as_bytes(), &Limits::default()), 431);
    }

    #[test]
    fn content_length_over_max_body_is_413_from_the_head_alone() {
        let limits = Limits {
            max_body: 10,
            ..Limits::default()
        };
        let err = parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", &limits).unwrap_err();
        assert_eq!((err.status, err.code), (413, "payload_too_large"));
        assert_eq!(
            status_of(
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                &limits
            ),
            413
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n", &limits),
            Ok(Parse::Partial {
                expect_continue: false
            })
        );
    }

    #[test]
    fn the_upload_path_has_its_own_body_limit() {
        let limits = Limits {
            max_body: 10,
            upload: Some(Upload {
                path: "/api/device-http",
                max_body: 20,
            }),
            ..Limits::default()
        };
        let head = |path: &str, len: usize| {
            format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{}",
                "b".repeat(len)
            )
        };
        assert!(matches!(
            parse(head("/api/device-http", 20).as_bytes(), &limits),
            Ok(Parse::Complete { .. })
        ));
        let err = parse(head("/api/device-http", 21).as_bytes(), &limits).unwrap_err();
        assert_eq!(err.message, "request body exceeds 20 bytes");
        // Other paths, including ones that only start like it, keep the general limit.
        for path in ["/api/devices", "/api/device-http/x", "/api/device-httpx"] {
            let err = parse(head(path, 11).as_bytes(), &limits).unwrap_err();
            assert_eq!((err.status, err.code), (413, "payload_too_large"), "{path}");
        }
        // The path is compared without its query and decoded, as the router sees it.
        for path in ["/api/device-http?sn=1", "/api/device%2Dhttp"] {
            assert!(
                matches!(
                    parse(head(path, 20).as_bytes(), &limits),
                    Ok(Parse::Complete { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn invalid_content_length_is_400() {
        for value in ["abc", "-1", "+5", "5 5", "0x10", "5,", "", "1.0"] {
            let buf = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            let err = error(buf.as_bytes());
            assert_eq!((err.status, err.code), (400, "bad_request"), "{value:?}");
        }
    }

    #[test]
    fn repeated_content_length_must_agree() {
        let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
        assert_eq!(error(conflicting).status, 400);
        assert_eq!(
            error(b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd").status,
            400
        );
        let agreeing = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 03\r\n\r\nabcX";
        let (req, consumed) = complete(agreeing);
        assert_eq!(
            (req.body.as_slice(), consumed),
            (&b"abc"[..], agreeing.len() - 1)
        );
        let (req, _) = complete(b"POST / HTTP/1.1\r\nContent-Length: 3 , 3\r\n\r\nabc");
        assert_eq!(req.body, b"abc");
    }

    #[test]
    fn transfer_encoding_is_501_and_400_with_content_length() {
        for te in ["chunked", "gzip, chunked", "identity"] {
            let buf = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            let err = error(buf.as_bytes());
            assert_eq!((err.status, err.code), (501, "not_implemented"), "{te}");
            assert!(err.message.contains("Content-Length"));
        }
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(error(both).status, 400);
        let both = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(error(both).status, 400);
    }

    #[test]
    fn malformed_request_lines_are_400() {
        for buf in [
            &b"GET\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/1.1x\r\n\r\n",
            b"GET devices HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            let err = error(buf);
            assert_eq!(
                (err.status, err.code),
                (400, "bad_request"),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn other_http_versions_are_505() {
        for buf in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"PRI * HTTP/2",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/0.9\r\n\r\n",
            b"GET / HTTP/3\r\n\r\n",
        ] {
            let err = error(buf);
            assert_eq!(
                (err.status, err.code),
                (505, "http_version_not_supported"),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn path_percent_decoding() {
        let (req, _) = complete(b"GET /devices/a%20b/%E2%9C%93%7e?q=%2F HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/devices/a b/\u{2713}~");
        assert_eq!(req.query, "q=%2F");
        let (req, _) = complete(b"GET /a+b HTTP/1.1\r\n\r\n");
        assert_eq!(req.path, "/a+b");
        for bad in [
            "%2F", "%2f", "%zz", "%4", "%", "%4g", "%00", "%0A", "%7F", "%FF", "%C3", "%C2%9B",
            "\u{9b}", "\u{85}",
        ] {
            let buf = format!("GET /devices/x{bad}y HTTP/1.1\r\n\r\n");
            assert_eq!(error(buf.as_bytes()).status, 400, "{bad}");
        }
    }

    #[test]
    fn absolute_and_asterisk_forms() {
        let (req, _) = complete(b"GET http://gw.example:8080/devices?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/devices", "x=1"));
        let (req, _) = complete(b"GET HTTPS://gw.example HTTP/1.1\r\n\r\n");
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/", ""));
        let (req, _) = complete(b"GET http://gw?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/", "x=1"));
        assert_eq!(error(b"GET http:///x HTTP/1.1\r\n\r\n").status, 400);
        let (req, _) = complete(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!((req.method, req.path.as_str()), (Method::Options, "*"));
    }

    #[test]
    fn keep_alive_defaults_and_overrides() {
        for (head, expected) in [
            ("GET / HTTP/1.1\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n", false),
            (
                "GET / HTTP/1.1\r\nConnection: upgrade\r\nConnection: close\r\n",
                false,
            ),
            ("GET / HTTP/1.1\r\nConnection: closed\r\n", true),
            ("GET / HTTP/1.0\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n", true),
            ("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n", false),
        ] {
            let (req, _) = complete(format!("{head}\r\n").as_bytes());
            assert_eq!(req.keep_alive, expected, "{head:?}");
        }
        let (req, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(req.version, 0);
    }

    #[test]
    fn expect_continue_is_signalled_only_while_the_body_is_missing() {
        let head = b"PUT /config HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n";
        assert!(!partial(&head[..head.len() - 1]));
        assert!(partial(head));
        let with_some_body = [&head[..], b"ab"].concat();
        assert!(!partial(&with_some_body));
        let (req, consumed) = complete(&[&head[..], b"abcd"].concat());
        assert_eq!(
            (req.body.as_slice(), consumed),
            (&b"abcd"[..], head.len() + 4)
        );

        let http10 = b"PUT /config HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        assert!(!partial(http10));
        let no_expect = b"PUT /config HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
        assert!(!partial(no_expect));
        let empty_body =
            b"PUT /config HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n";
        complete(empty_body);
    }

    #[test]
    fn oversized_body_with_expect_is_refused_instead_of_continued() {
        let limits = Limits {
            max_body: 10,
            ..Limits::default()
        };
        let buf = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2048\r\n\r\n";
        assert_eq!(status_of(buf, &limits), 413);
    }

    #[test]
    fn websocket_upgrade_detection() {
        let upgrade = b"GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(complete(upgrade).0.is_websocket_upgrade());
        for not_upgrade in [
            &b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"POST /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(
                !complete(not_upgrade).0.is_websocket_upgrade(),
                "{:?}",
                String::from_utf8_lossy(not_upgrade)
            );
        }
    }

    /// xorshift64: deterministic, dependency-free noise.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        const SEEDS: &[&[u8]] = &[
            b"GET /devices/a%20b?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST /events HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
            b"PUT http://gw/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3, 3\r\n\r\nabc",
        ];
        const ALPHABET: &[u8] = b"GET /%2F0aA:\r\n\t ,HTTP/1.0-\xff\x00";
        let tight = Limits {
            max_header_bytes: 96,
            max_headers: 4,
            max_body: 8,
            upload: None,
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut completes, mut partials, mut errors) = (0, 0, 0);
        for round in 0..30_000 {
            let mut buf = if round % 3 == 0 {
                (0..rng.below(256)).map(|_| rng.next() as u8).collect()
            } else {
                SEEDS[rng.below(SEEDS.len())].to_vec()
            };
            for _ in 0..rng.below(6) {
                let at = rng.below(buf.len() + 1);
                match rng.below(4) {
                    0 if at < buf.len() => buf[at] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => buf.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    2 => buf.truncate(at),
                    _ => buf.insert(at, rng.next() as u8),
                }
            }
            for limits in [&Limits::default(), &tight] {
                match parse(&buf, limits) {
                    Ok(Parse::Complete { request, consumed }) => {
                        assert!(consumed <= buf.len());
                        assert!(request.body.len() <= limits.max_body);
                        assert!(request.headers.len() <= limits.max_headers);
                        completes += 1;
                    }
                    Ok(Parse::Partial { .. }) => partials += 1,
                    Err(err) => {
                        assert!(matches!(err.status, 400 | 413 | 431 | 501 | 505), "{err}");
                        errors += 1;
                    }
                }
            }
        }
        // Unless the mutations reach every outcome, this test proves little.
        assert!(
            completes > 1_000 && partials > 1_000 && errors > 1_000,
            "{completes} complete, {partials} partial, {errors} errors"
        );
    }
}
