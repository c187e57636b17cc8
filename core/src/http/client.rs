//! The client's end of HTTP/1.1, sans-IO: [`ClientRequest::encode`] writes a request and a
//! [`ResponseParser`] reads the answer from whatever has arrived. The CLI's blocking client, the
//! load harness's readiness loop and the integration tests' raw sockets each own their I/O and
//! share this one reading of the wire.
//!
//! Only what talking to fleetgate, or a proxy in front of it, needs: `Content-Length`, chunked
//! and read-until-close bodies, interim 1xx responses, bodiless statuses, keep-alive. Trailers
//! are read past and dropped; no transfer coding but `chunked` is accepted.

use std::fmt;

/// A request as a client sends it. `Default` leaves every optional part out, so a call names
/// only what it uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientRequest<'a> {
    pub method: &'a str,
    /// Path and query: the origin form, starting with `/`.
    pub target: &'a str,
    /// The `Host` field: `host:port`.
    pub host: &'a str,
    pub user_agent: Option<&'a str>,
    /// Sends `Connection: close`, for a client that makes one request per connection: the
    /// server then closes after answering, which also ends a body without a length. Without
    /// it the connection stays open for the next request (HTTP/1.1's default).
    pub close: bool,
    /// Sends `Authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// Content type and bytes.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// A request that cannot be written: a part would break the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The method is not an HTTP token.
    Method(String),
    /// The target is not an absolute path, or holds a space or control character.
    Target(String),
    /// A header value holds CR, LF or NUL, which would end the field early.
    HeaderValue,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method(method) => write!(f, "invalid method {method:?}"),
            Self::Target(target) => write!(
                f,
                "{target:?}: expected an absolute path without spaces or control characters"
            ),
            Self::HeaderValue => f.write_str("header value contains CR, LF or NUL"),
        }
    }
}

impl std::error::Error for RequestError {}

impl ClientRequest<'_> {
    /// Appends the request to `out`. Head and body go in one buffer so that they leave in one
    /// segment rather than stalling on Nagle's algorithm between two writes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RequestError> {
        let Self {
            method,
            target,
            host,
            user_agent,
            close,
            bearer,
            body,
        } = *self;
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(RequestError::Method(method.to_owned()));
        }
        if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(RequestError::Target(target.to_owned()));
        }
        let content_type = body.map(|(content_type, _)| content_type);
        let values = [Some(host), user_agent, bearer, content_type];
        if values
            .into_iter()
            .flatten()
            .any(|value| value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)))
        {
            return Err(RequestError::HeaderValue);
        }
        let payload = body.map_or(&[][..], |(_, bytes)| bytes);
        out.reserve(256 + payload.len());
        for part in [method, " ", target, " HTTP/1.1\r\nHost: ", host, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
        let mut field = |name: &str, value: &str| {
            for part in [name, ": ", value, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        };
        if let Some(user_agent) = user_agent {
            field("User-Agent", user_agent);
        }
        if close {
            field("Connection", "close");
        }
        if let Some(token) = bearer {
            field("Authorization", &format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            field("Content-Type", content_type);
        }
        // A bodiless POST, PUT or PATCH still announces a zero length: some servers and proxies
        // answer 411 otherwise.
        if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
            field("Content-Length", &payload.len().to_string());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(payload);
        Ok(())
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bounds on what one response may make a client buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Status line and header fields of one response, blank line included. The head is parsed
    /// again after every read until it is complete, so it gets a much smaller bound than the
    /// body, which keeps that repeated work trivial.
    pub max_head: usize,
    /// Header fields of one response.
    pub max_headers: usize,
    /// The final response as it arrives: head and body with its framing (chunk sizes).
    pub max_response: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_head: 64 * 1024,
            max_headers: 64,
            max_response: 64 * 1024 * 1024,
        }
    }
}

/// A complete response. For a 101 there is no body: the bytes after the head belong to the
/// protocol switched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header fields in arrival order, names lower-cased; values that are not UTF-8 have the
    /// offending bytes replaced.
    pub headers: Vec<(String, String)>,
    /// De-chunked when it came chunked.
    pub body: Vec<u8>,
}

impl Response {
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

    /// The server closes the connection after this response (`Connection: close`), so the
    /// next request needs a new one. fleetgate always sends the field when it closes.
    pub fn closes(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
    }
}

/// A response that cannot be read; the connection is of no further use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    Head(httparse::Error),
    /// The head reached [`ResponseLimits::max_head`] without ending.
    HeadTooLarge(usize),
    /// The response would pass [`ResponseLimits::max_response`].
    TooLarge(usize),
    ContentLength(String),
    TransferEncoding(String),
    /// Both `Transfer-Encoding` and `Content-Length`: RFC 9112 6.3 says to treat this as an
    /// error, since the two framings disagreeing is how responses are smuggled.
    BothLengths,
    Chunked(&'static str),
    /// The connection ended before the head was complete.
    ClosedInHead,
    /// The connection ended `got` bytes into a body of `len`.
    ClosedInBody {
        got: usize,
        len: usize,
    },
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(err) => write!(f, "malformed response head: {err}"),
            Self::HeadTooLarge(max) => write!(f, "response head exceeds {max} bytes"),
            Self::TooLarge(max) => write!(f, "response exceeds {max} bytes"),
            Self::ContentLength(value) => write!(f, "invalid Content-Length {value:?}"),
            Self::TransferEncoding(value) => write!(
                f,
                "Transfer-Encoding {value:?} is not supported by the built-in client"
            ),
            Self::BothLengths => f.write_str("both Transfer-Encoding and Content-Length sent"),
            Self::Chunked(why) => write!(f, "malformed chunked body: {why}"),
            Self::ClosedInHead => {
                f.write_str("connection closed before the response head was complete")
            }
            Self::ClosedInBody { got, len } => {
                write!(f, "connection closed after {got} of {len} body bytes")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Reads one response after another from the front of a connection's read buffer.
///
/// The caller appends what it reads to one buffer and calls [`parse`](Self::parse) with all
/// of it after every read; once a response is complete it drops the `consumed` bytes (what
/// follows is the next response, or a switched protocol's bytes after a 101) and the parser
/// starts over. The buffer's prefix must not change in between. When the peer closes, the
/// caller calls [`finish`](Self::finish) instead: a body without a length ends there, and
/// anything else incomplete is an error. After an error the connection is of no further use.
///
/// Interim 1xx responses (not 101, which is final) are read past; a status outside 100-599 is
/// read as a final response, as RFC 9110 15 asks of a client. The head is parsed again on
/// each call, as the server's request parser does; a body is followed where the last call
/// left it, so reading a large chunked body stays linear.
#[derive(Debug)]
pub struct ResponseParser {
    limits: ResponseLimits,
    head_request: bool,
    state: State,
}

#[derive(Debug)]
enum State {
    /// The next head starts at `start`, past any interim responses.
    Head { start: usize },
    /// The head of the final response (which starts at `start`) has been read.
    Body {
        start: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body_start: usize,
        framing: Framing,
    },
}

#[derive(Debug)]
enum Framing {
    /// The body ends at this offset (the head's end when there is none).
    Length(usize),
    /// The body ends with the connection.
    UntilClose,
    Chunked(Chunks),
}

/// How far a chunked body has been read.
#[derive(Debug)]
struct Chunks {
    /// Offset of the first byte not yet taken apart.
    pos: usize,
    next: ChunkPart,
    body: Vec<u8>,
}

/// A complete response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
enum ChunkPart {
    /// A chunk-size line.
    Size,
    /// A chunk's data of this length, then CRLF.
    Data(usize),
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailers,
}

/// Header slots on the stack; the default limit fits, so a response head needs no allocation
/// for httparse.
const STACK_HEADERS: usize = 64;

impl ResponseParser {
    /// A parser for the responses to requests made with any method but HEAD: a HEAD request's
    /// response has no body, whatever its head announces (RFC 9110 9.3.2), and only the client
    /// knows which it sent, so `head_request` says so.
    pub fn new(limits: ResponseLimits, head_request: bool) -> Self {
        Self {
            limits,
            head_request,
            state: State::Head { start: 0 },
        }
    }

    /// Parses what has arrived: `Ok(None)` means read more and call again with the grown
    /// buffer; `Ok(Some((response, consumed)))` is a complete response, the first `consumed`
    /// bytes of `buf`.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Response, usize)>, ResponseError> {
        loop {
            match &mut self.state {
                State::Head { start } => {
                    let start = *start;
                    let Some(head) = self.parse_head(&buf[start..])? else {
                        return Ok(None);
                    };
                    let body_start = start + head.len;
                    if (100..200).contains(&head.status) && head.status != 101 {
                        self.state = State::Head { start: body_start };
                        continue;
                    }
                    let framing = self.framing(&head, start, body_start)?;
                    self.state = State::Body {
                        start,
                        status: head.status,
                        headers: head.headers,
                        body_start,
                        framing,
                    };
                }
                State::Body {
                    start,
                    status,
                    headers,
                    body_start,
                    framing,
                } => {
                    let limit = start.saturating_add(self.limits.max_response);
                    let end = match framing {
                        Framing::Length(end) if buf.len() >= *end => *end,
                        Framing::Length(_) => return Ok(None),
                        Framing::UntilClose if buf.len() > limit => {
                            return Err(ResponseError::TooLarge(self.limits.max_response));
                        }
                        Framing::UntilClose => return Ok(None),
                        Framing::Chunked(chunks) => {
                            match chunks.advance(buf, limit, self.limits.max_response)? {
                                Some(end) => end,
                                None => return Ok(None),
                            }
                        }
                    };
                    let body = match framing {
                        Framing::Chunked(chunks) => std::mem::take(&mut chunks.body),
                        Framing::Length(_) | Framing::UntilClose => buf[*body_start..end].to_vec(),
                    };
                    let response = Response {
                        status: *status,
                        headers: std::mem::take(headers),
                        body,
                    };
                    self.state = State::Head { start: 0 };
                    return Ok(Some((response, end)));
                }
            }
        }
    }

    /// The status of the final response once its head has been read, while its body may still
    /// be arriving: what a client streaming the body decides on (see [`take_body`](Self::take_body)).
    pub fn status(&self) -> Option<u16> {
        match &self.state {
            State::Body { status, .. } => Some(*status),
            State::Head { .. } => None,
        }
    }

    /// Streams the body of the final response, for one too large to hold: moves what of it has
    /// been read (de-chunked) to `out` and returns how many bytes at the front of `buf` are done
    /// with; the caller drops them before the next [`parse`](Self::parse) or
    /// [`finish`](Self::finish). The response those complete then carries only the rest of the
    /// body, and [`ResponseLimits::max_response`] bounds what is buffered at once rather than the
    /// whole response (a `Content-Length` is still checked against it). Before the head is read,
    /// it takes nothing.
    pub fn take_body(&mut self, buf: &[u8], out: &mut Vec<u8>) -> usize {
        let State::Body {
            start,
            body_start,
            framing,
            ..
        } = &mut self.state
        else {
            return 0;
        };
        let done = match framing {
            Framing::Length(end) => {
                let upto = buf.len().min(*end);
                out.extend_from_slice(buf.get(*body_start..upto).unwrap_or_default());
                *end -= upto;
                upto
            }
            Framing::UntilClose => {
                out.extend_from_slice(buf.get(*body_start..).unwrap_or_default());
                buf.len()
            }
            Framing::Chunked(chunks) => {
                out.append(&mut chunks.body);
                std::mem::take(&mut chunks.pos)
            }
        };
        // Every offset is now relative to the first byte the caller keeps.
        *start = 0;
        *body_start = 0;
        done
    }

    /// The peer closed the connection and `buf` holds all it sent: the response, if it is
    /// complete or its body ends with the connection, and how much of `buf` it took.
    pub fn finish(&mut self, buf: &[u8]) -> Result<(Response, usize), ResponseError> {
        if let Some(done) = self.parse(buf)? {
            return Ok(done);
        }
        let State::Body {
            status,
            headers,
            body_start,
            framing,
            ..
        } = std::mem::replace(&mut self.state, State::Head { start: 0 })
        else {
            return Err(ResponseError::ClosedInHead);
        };
        let body = match framing {
            Framing::Length(end) => {
                return Err(ResponseError::ClosedInBody {
                    got: buf.len().saturating_sub(body_start),
                    len: end - body_start,
                });
            }
            Framing::UntilClose => buf.get(body_start..).unwrap_or_default().to_vec(),
            Framing::Chunked(chunks) => match chunks.next {
                // The last chunk arrived; trailers cut short are no loss, as they are dropped.
                ChunkPart::Trailers => chunks.body,
                ChunkPart::Size => return Err(ResponseError::Chunked("missing chunk size")),
                ChunkPart::Data(size) if buf.len() < chunks.pos.saturating_add(size) => {
                    return Err(ResponseError::Chunked("chunk shorter than its size"));
                }
                ChunkPart::Data(_) => {
                    return Err(ResponseError::Chunked("chunk not followed by CRLF"));
                }
            },
        };
        let response = Response {
            status,
            headers,
            body,
        };
        Ok((response, buf.len()))
    }

    /// The head at the front of `buf`, once it is complete.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<Head>, ResponseError> {
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap = Vec::new();
        let slots = if self.limits.max_headers <= STACK_HEADERS {
            &mut stack[..self.limits.max_headers]
        } else {
            heap.resize(self.limits.max_headers, httparse::EMPTY_HEADER);
            &mut heap[..]
        };
        // httparse never looks past the window, which bounds the work of every re-parse.
        let window = &buf[..buf.len().min(self.limits.max_head)];
        let mut response = httparse::Response::new(slots);
        match response.parse(window) {
            Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
                // Always there once the head is complete.
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
            Ok(httparse::Status::Partial) if buf.len() >= self.limits.max_head => {
                Err(ResponseError::HeadTooLarge(self.limits.max_head))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(err) => Err(ResponseError::Head(err)),
        }
    }

    /// How the body of the final response with this head ends (RFC 9112 6.3).
    fn framing(
        &self,
        head: &Head,
        start: usize,
        body_start: usize,
    ) -> Result<Framing, ResponseError> {
        if self.head_request || matches!(head.status, 101 | 204 | 304) {
            return Ok(Framing::Length(body_start));
        }
        let field = |name: &str| head.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        match (field("transfer-encoding"), field("content-length")) {
            (Some(_), Some(_)) => Err(ResponseError::BothLengths),
            (Some(coding), None) if coding.trim().eq_ignore_ascii_case("chunked") => {
                Ok(Framing::Chunked(Chunks {
                    pos: body_start,
                    next: ChunkPart::Size,
                    body: Vec::new(),
                }))
            }
            (Some(coding), None) => Err(ResponseError::TransferEncoding(coding.clone())),
            (None, Some(value)) => {
                let len = value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| ResponseError::ContentLength(value.clone()))?;
                body_start
                    .checked_add(len)
                    .filter(|&end| end - start <= self.limits.max_response)
                    .map(Framing::Length)
                    .ok_or(ResponseError::TooLarge(self.limits.max_response))
            }
            (None, None) => Ok(Framing::UntilClose),
        }
    }
}

impl Chunks {
    /// Takes apart what has arrived of a chunked body (RFC 9112 7.1): hex sizes (extensions
    /// ignored), data, and after the zero-size chunk any trailers. Returns where the body
    /// ends once it does. Nothing may reach past `limit` (`max` bytes from the response's
    /// start).
    fn advance(
        &mut self,
        buf: &[u8],
        limit: usize,
        max: usize,
    ) -> Result<Option<usize>, ResponseError> {
        let bad = ResponseError::Chunked;
        loop {
            match self.next {
                ChunkPart::Size | ChunkPart::Trailers => {
                    let Some(line_len) = buf[self.pos..].windows(2).position(|w| w == b"\r\n")
                    else {
                        return match buf.len() > limit {
                            true => Err(ResponseError::TooLarge(max)),
                            false => Ok(None),
                        };
                    };
                    let line = &buf[self.pos..self.pos + line_len];
                    self.pos += line_len + 2;
                    if self.pos > limit {
                        return Err(ResponseError::TooLarge(max));
                    }
                    if let ChunkPart::Trailers = self.next {
                        if line.is_empty() {
                            return Ok(Some(self.pos));
                        }
                        continue;
                    }
                    let size = std::str::from_utf8(line)
                        .map_err(|_| bad("chunk size is not text"))?
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim();
                    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad("chunk size is not hex"));
                    }
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| ResponseError::TooLarge(max))?;
                    self.next = match size {
                        0 => ChunkPart::Trailers,
                        size => ChunkPart::Data(size),
                    };
                }
                ChunkPart::Data(size) => {
                    let (end, next) = self
                        .pos
                        .checked_add(size)
                        .and_then(|end| Some((end, end.checked_add(2)?)))
                        .filter(|&(_, next)| next <= limit)
                        .ok_or(ResponseError::TooLarge(max))?;
                    let Some(after) = buf.get(end..next) else {
                        return Ok(None);
                    };
                    if after != b"\r\n" {
                        return Err(bad("chunk not followed by CRLF"));
                    }
                    self.body.extend_from_slice(&buf[self.pos..end]);
                    self.pos = next;
                    self.next = ChunkPart::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(target: &'a str) -> ClientRequest<'a> {
        ClientRequest {
            method: "GET",
            target,
            host: "gw:80",
            ..ClientRequest::default()
        }
    }

    fn encoded(request: ClientRequest<'_>) -> Result<String, RequestError> {
        let mut out = Vec::new();
        request.encode(&mut out)?;
        Ok(String::from_utf8(out).expect("ASCII"))
    }

    #[test]
    fn requests_carry_the_fields_asked_for_in_a_fixed_order() {
        assert_eq!(
            encoded(get("/healthz")),
            Ok("GET /healthz HTTP/1.1\r\nHost: gw:80\r\n\r\n".to_owned())
        );
        assert_eq!(
            encoded(ClientRequest {
                method: "POST",
                user_agent: Some("ua/1"),
                close: true,
                bearer: Some("t0k"),
                body: Some(("application/json", b"{}")),
                ..get("/api/devices?x=1")
            }),
            Ok(
                "POST /api/devices?x=1 HTTP/1.1\r\nHost: gw:80\r\nUser-Agent: ua/1\r\n\
                Connection: close\r\nAuthorization: Bearer t0k\r\n\
                Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                    .to_owned()
            )
        );
        for method in ["POST", "PUT", "PATCH"] {
            assert_eq!(
                encoded(ClientRequest {
                    method,
                    ..get("/x")
                }),
                Ok(format!(
                    "{method} /x HTTP/1.1\r\nHost: gw:80\r\nContent-Length: 0\r\n\r\n"
                ))
            );
        }
        assert_eq!(
            encoded(ClientRequest {
                method: "DELETE",
                ..get("/x")
            }),
            Ok("DELETE /x HTTP/1.1\r\nHost: gw:80\r\n\r\n".to_owned())
        );
    }

    #[test]
    fn request_parts_that_would_break_the_message_are_refused() {
        for method in ["", "GE T", "GET\r\n"] {
            assert_eq!(
                encoded(ClientRequest { method, ..get("/") }),
                Err(RequestError::Method(method.to_owned()))
            );
        }
        for target in ["devices", "/a b", "/a\r\nX: y", "/\x7f", ""] {
            assert_eq!(
                encoded(get(target)),
                Err(RequestError::Target(target.to_owned()))
            );
        }
        for request in [
            ClientRequest {
                host: "gw\r\nX: y",
                ..get("/")
            },
            ClientRequest {
                bearer: Some("t\nX: y"),
                ..get("/")
            },
            ClientRequest {
                user_agent: Some("ua\0"),
                ..get("/")
            },
            ClientRequest {
                body: Some(("text/plain\r\nX: y", b"")),
                ..get("/")
            },
        ] {
            assert_eq!(encoded(request), Err(RequestError::HeaderValue));
        }
        assert_eq!(
            RequestError::Target("a b".into()).to_string(),
            "\"a b\": expected an absolute path without spaces or control characters"
        );
    }

    /// What a parser makes of `bytes` arriving whole and then ending.
    fn read(bytes: &[u8], head_request: bool, cap: usize) -> Result<Response, ResponseError> {
        let limits = ResponseLimits {
            max_head: cap.min(ResponseLimits::default().max_head),
            max_response: cap,
            ..ResponseLimits::default()
        };
        ResponseParser::new(limits, head_request)
            .finish(bytes)
            .map(|(response, _)| response)
    }

    /// Feeds `bytes` one byte more per call, as the slowest reads would, and returns every
    /// response with where it ended, then what `finish` made of the rest.
    #[allow(clippy::type_complexity)]
    fn trickle(
        bytes: &[u8],
    ) -> (
        Vec<(Response, usize)>,
        Result<(Response, usize), ResponseError>,
    ) {
        let mut parser = ResponseParser::new(ResponseLimits::default(), false);
        let mut done = Vec::new();
        let mut from = 0;
        for end in 0..=bytes.len() {
            while let Some((response, consumed)) = parser
                .parse(&bytes[from..end])
                .unwrap_or_else(|e| panic!("{e} at byte {end}"))
            {
                from += consumed;
                done.push((response, from));
            }
        }
        let last = parser.finish(&bytes[from..]);
        (done, last)
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn keep_alive_responses_are_read_one_after_another_however_the_bytes_arrive() {
        let parts: [&[u8]; 4] = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=1\r\nWiki\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive, close\r\n\r\ngone",
        ];
        let stream = parts.concat();
        let (done, last) = trickle(&stream);
        let ends: Vec<usize> = done.iter().map(|(_, end)| *end).collect();
        let responses: Vec<Response> = done.into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            responses,
            [
                response(200, &[("content-length", "2")], b"ok"),
                response(200, &[("transfer-encoding", "chunked")], b"Wiki"),
                response(204, &[("content-length", "9")], b""),
            ]
        );
        let mut end = 0;
        let part_ends: Vec<usize> = parts
            .iter()
            .map(|part| {
                end += part.len();
                end
            })
            .collect();
        assert_eq!(ends, part_ends[..3]);
        let (gone, used) = last.expect("a body that ends with the connection");
        assert_eq!(
            gone,
            response(404, &[("connection", "keep-alive, close")], b"gone")
        );
        assert_eq!(used, parts[3].len());
        assert!(gone.closes() && !responses[0].closes());
    }

    /// Feeds `bytes` in `step`-byte reads to a parser that streams the body out as it comes,
    /// dropping what it took; returns the status, the streamed body, and the most ever buffered.
    fn stream(bytes: &[u8], step: usize, limits: ResponseLimits) -> (u16, Vec<u8>, usize) {
        let mut parser = ResponseParser::new(limits, false);
        let (mut buf, mut body, mut most) = (Vec::new(), Vec::new(), 0);
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            most = most.max(buf.len());
            if let Some((response, consumed)) = parser.parse(&buf).expect("parses") {
                body.extend_from_slice(&response.body);
                assert_eq!(consumed, buf.len(), "nothing follows");
                return (response.status, body, most);
            }
            let done = parser.take_body(&buf, &mut body);
            buf.drain(..done);
        }
        let (response, _) = parser.finish(&buf).expect("ends with the connection");
        body.extend_from_slice(&response.body);
        (response.status, body, most)
    }

    #[test]
    fn a_streamed_body_comes_out_whole_with_bounded_buffering() {
        let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in big.chunks(1000) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut sized =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
        sized.extend_from_slice(&big);
        let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        until_close.extend_from_slice(&big);
        // Far below the body's size: only what is buffered at once counts.
        let limits = ResponseLimits {
            max_response: 16 * 1024,
            ..ResponseLimits::default()
        };
        let sized_limits = ResponseLimits {
            max_response: 1 << 20,
            ..ResponseLimits::default()
        };
        for (name, bytes, limits) in [
            ("chunked", &chunked, limits),
            ("content-length", &sized, sized_limits),
            ("until close", &until_close, limits),
        ] {
            for step in [1, 7, 4096] {
                let (status, body, most) = stream(bytes, step, limits);
                assert_eq!(status, 200, "{name}");
                assert!(body == big, "{name} in {step}-byte reads");
                assert!(most < 8 * 1024, "{name}: {most} bytes buffered");
            }
        }
    }

    #[test]
    fn the_status_is_known_before_the_body_and_nothing_is_taken_before_it() {
        let mut parser = ResponseParser::new(ResponseLimits::default(), false);
        let head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\n";
        let mut out = Vec::new();
        assert_eq!(parser.parse(&head[..10]), Ok(None));
        assert_eq!(parser.status(), None);
        assert_eq!(parser.take_body(&head[..10], &mut out), 0);
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"ab");
        assert_eq!(parser.parse(&buf), Ok(None));
        assert_eq!(parser.status(), Some(404));
        assert_eq!(parser.take_body(&buf, &mut out), buf.len());
        assert_eq!(out, b"ab");
        let (rest, consumed) = parser.parse(b"cde").expect("parses").expect("complete");
        assert_eq!(
            (rest.status, rest.body, consumed),
            (404, b"cde".to_vec(), 3)
        );
    }

    #[test]
    fn switching_protocols_leaves_the_new_protocols_bytes() {
        let stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        let mut parser = ResponseParser::new(ResponseLimits::default(), false);
        let (upgraded, consumed) = parser.parse(stream).unwrap().unwrap();
        assert_eq!((upgraded.status, consumed), (101, stream.len() - 2));
    }

    #[test]
    fn head_and_bodiless_statuses_ignore_content_length() {
        let resp = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 1024).unwrap();
        assert_eq!(
            (resp.status, resp.header("Content-Length"), resp.body.len()),
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
    fn responses_over_the_limits_are_refused() {
        let max = ResponseLimits::default().max_head;
        assert_eq!(
            read(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                false,
                100
            ),
            Err(ResponseError::TooLarge(100))
        );
        let streamed = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 200]].concat();
        assert_eq!(
            read(&streamed, false, 100),
            Err(ResponseError::TooLarge(100))
        );
        let chunked = [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &b"10\r\n0123456789abcdef\r\n".repeat(10),
        ]
        .concat();
        assert_eq!(
            read(&chunked, false, 100),
            Err(ResponseError::TooLarge(100))
        );
        let endless_size = [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            &[b'0'; 200],
        ]
        .concat();
        assert_eq!(
            read(&endless_size, false, 100),
            Err(ResponseError::TooLarge(100))
        );
        let huge_head = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'x'; 200]].concat();
        assert_eq!(
            read(&huge_head, false, 100),
            Err(ResponseError::HeadTooLarge(100))
        );
        let endless_head = [&b"HTTP/1.1 200 OK\r\nX: "[..], &vec![b'x'; max]].concat();
        assert_eq!(
            read(&endless_head, false, usize::MAX).map_err(|e| e.to_string()),
            Err("response head exceeds 65536 bytes".to_owned())
        );
        let fits = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 81]].concat();
        assert_eq!(read(&fits, false, 100).unwrap().body.len(), 81);
        let huge_chunk =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n";
        assert_eq!(
            read(huge_chunk, false, 100),
            Err(ResponseError::TooLarge(100))
        );
    }

    #[test]
    fn malformed_or_cut_responses_are_refused() {
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
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "both Transfer-Encoding and Content-Length sent",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
                "malformed chunked body: chunk shorter than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
                "malformed chunked body: chunk not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
                "malformed chunked body: chunk not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n",
                "malformed chunked body: chunk size is not hex",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\xff\r\n",
                "malformed chunked body: chunk size is not text",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                "malformed chunked body: missing chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                "connection closed after 3 of 10 body bytes",
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
            assert_eq!(
                read(response, false, 1024).map_err(|e| e.to_string()),
                Err(expected.to_owned()),
                "{}",
                String::from_utf8_lossy(response)
            );
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_and_cut_trailers_tolerated_at_close() {
        let r = read(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: t",
            false,
            1024,
        )
        .unwrap();
        assert_eq!(r.body, b"Wikipedia in \r\n\r\nchunks.");
    }
}
