//! HTTP/1.1 response serialisation.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra header fields. `Content-Length` and `Connection` are written by
    /// [`Response::write_to`], which owns message framing; the one exception
    /// is a 101 response, whose `Connection: Upgrade` the caller supplies.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self::text(status, "application/json", body)
    }

    /// Serialises `v` with simd-json. A failure is our bug, not the
    /// client's, so it becomes a 500 whose message names the cause.
    pub fn json_value<T: Serialize>(status: u16, v: &T) -> Self {
        match simd_json::to_vec(v) {
            Ok(body) => Self::json(status, body),
            Err(err) => Self::error(
                500,
                "internal_error",
                &format!("response serialisation failed: {err}"),
            ),
        }
    }

    /// `{"error":{"code":"...","message":"..."}}`, the one error shape every
    /// endpoint uses.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let mut body = Vec::with_capacity(32 + code.len() + message.len());
        body.extend_from_slice(b"{\"error\":{\"code\":\"");
        json_escape_into(&mut body, code);
        body.extend_from_slice(b"\",\"message\":\"");
        json_escape_into(&mut body, message);
        body.extend_from_slice(b"\"}}");
        Self::json(status, body)
    }

    pub fn text(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        debug_assert!(
            !name.eq_ignore_ascii_case("content-length")
                && !name.eq_ignore_ascii_case("transfer-encoding")
                && (self.status == 101 || !name.eq_ignore_ascii_case("connection")),
            "{name} is written by write_to"
        );
        self.headers.push((name, value));
        self
    }

    /// Serialises head and body into `out`.
    ///
    /// The status line always says HTTP/1.1, which RFC 9110 §6.2 allows
    /// for 1.0 clients too; `Connection` is always explicit because 1.0
    /// clients assume `close` without it. `Content-Length` is omitted and
    /// the body dropped only for 1xx, 204 and 304, which cannot have one.
    /// With `head_only` (a HEAD request) the head still announces the length
    /// a GET would have returned, as RFC 9110 §9.3.2 asks.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        debug_assert!((100..=999).contains(&self.status), "status {}", self.status);
        let has_body = !matches!(self.status, 100..=199 | 204 | 304);
        let send_body = has_body && !head_only;
        out.reserve(
            128 + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
                + if send_body { self.body.len() } else { 0 },
        );
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, usize::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            push_header_value(out, value);
            out.extend_from_slice(b"\r\n");
        }
        if has_body {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len());
            out.extend_from_slice(b"\r\n");
        }
        if self.status != 101 {
            out.extend_from_slice(if keep_alive {
                b"Connection: keep-alive\r\n"
            } else {
                b"Connection: close\r\n"
            });
        }
        out.extend_from_slice(b"\r\n");
        if send_body {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Writes the RFC 8259 escaped form of `s`, without surrounding quotes.
/// Only `"`, `\` and control characters need escaping; everything else,
/// including non-ASCII, is valid inside a JSON string as UTF-8, so runs of
/// plain bytes are copied in one go.
pub fn json_escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

/// Reason phrases per RFC 9110 §15. Unknown codes get an empty phrase,
/// which the status-line grammar allows.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Header values may be built from request data (a device id in a
/// `Location`), so CR, LF and NUL are replaced rather than allowed to split
/// the response.
fn push_header_value(out: &mut Vec<u8>, value: &str) {
    let unsafe_byte = |b: u8| matches!(b, b'\r' | b'\n' | 0);
    if value.bytes().any(unsafe_byte) {
        out.extend(value.bytes().map(|b| if unsafe_byte(b) { b' ' } else { b }));
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(resp: &Response, keep_alive: bool, head_only: bool) -> String {
        let mut out = Vec::new();
        resp.write_to(&mut out, keep_alive, head_only);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_response_bytes() {
        let resp = Response::json(200, b"{\"ok\":true}".to_vec());
        assert_eq!(
            written(&resp, true, false),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n{\"ok\":true}"
        );
        assert_eq!(
            written(&resp, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}"
        );
    }

    #[test]
    fn write_to_appends() {
        let mut out = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        Response::text(202, "text/plain", b"queued".to_vec()).write_to(&mut out, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nqueued"
        );
    }

    #[test]
    fn head_only_keeps_the_length_and_drops_the_body() {
        let resp = Response::text(200, "text/plain", b"hello".to_vec())
            .with_header("Cache-Control", "no-store".into());
        assert_eq!(
            written(&resp, true, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn no_length_or_body_for_204_304_and_1xx() {
        let resp = Response {
            status: 204,
            headers: Vec::new(),
            body: b"ignored".to_vec(),
        };
        assert_eq!(
            written(&resp, true, false),
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        let resp = Response {
            status: 304,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            written(&resp, false, false),
            "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn switching_protocols_leaves_connection_to_the_caller() {
        let resp = Response {
            status: 101,
            headers: Vec::new(),
            body: Vec::new(),
        }
        .with_header("Upgrade", "websocket".into())
        .with_header("Connection", "Upgrade".into())
        .with_header(
            "Sec-WebSocket-Accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
        );
        assert_eq!(
            written(&resp, true, false),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn empty_body_still_gets_content_length() {
        let resp = Response::json(201, Vec::new());
        assert_eq!(
            written(&resp, true, false),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn reason_phrases_for_every_status_we_use() {
        for (status, line) in [
            (200, "200 OK"),
            (201, "201 Created"),
            (202, "202 Accepted"),
            (204, "204 No Content"),
            (400, "400 Bad Request"),
            (401, "401 Unauthorized"),
            (403, "403 Forbidden"),
            (404, "404 Not Found"),
            (405, "405 Method Not Allowed"),
            (409, "409 Conflict"),
            (411, "411 Length Required"),
            (413, "413 Content Too Large"),
            (415, "415 Unsupported Media Type"),
            (422, "422 Unprocessable Content"),
            (426, "426 Upgrade Required"),
            (429, "429 Too Many Requests"),
            (431, "431 Request Header Fields Too Large"),
            (500, "500 Internal Server Error"),
            (501, "501 Not Implemented"),
            (503, "503 Service Unavailable"),
            (505, "505 HTTP Version Not Supported"),
            (299, "299 "),
        ] {
            let head = written(&Response::json(status, Vec::new()), true, false);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {line}\r\n")),
                "{head:?}"
            );
        }
    }

    #[test]
    fn header_values_cannot_split_the_response() {
        let resp = Response::json(201, Vec::new())
            .with_header("Location", "/devices/x\r\nSet-Cookie: a=b\0".into());
        assert!(
            written(&resp, true, false).contains("\r\nLocation: /devices/x  Set-Cookie: a=b \r\n")
        );
    }

    #[test]
    fn error_body_is_escaped_json() {
        let resp = Response::error(
            422,
            "invalid_field",
            "field \"name\"\nmust be <= 64 chars\\\u{1}",
        );
        assert_eq!(resp.status, 422);
        assert_eq!(
            resp.headers,
            vec![("Content-Type", "application/json".to_owned())]
        );
        assert_eq!(
            String::from_utf8(resp.body.clone()).unwrap(),
            r#"{"error":{"code":"invalid_field","message":"field \"name\"\nmust be <= 64 chars\\\u0001"}}"#
        );
        let mut copy = resp.body.clone();
        let parsed = simd_json::to_owned_value(&mut copy).unwrap();
        let expected = simd_json::json!({"error": {"code": "invalid_field", "message": "field \"name\"\nmust be <= 64 chars\\\u{1}"}});
        assert_eq!(parsed, expected);
    }

    #[test]
    fn json_escape_covers_every_control_character() {
        let all: String = (0u8..0x20).map(char::from).collect();
        let mut out = Vec::new();
        json_escape_into(&mut out, &all);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"
        );
        let mut out = b"x".to_vec();
        json_escape_into(&mut out, "caf\u{e9} \u{2028} / \u{7f} \"q\" \\");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "xcaf\u{e9} \u{2028} / \u{7f} \\\"q\\\" \\\\"
        );
    }

    #[test]
    fn json_value_serialises_with_serde() {
        #[derive(Serialize)]
        struct Device<'a> {
            id: &'a str,
            online: bool,
            ports: Vec<u16>,
        }
        let resp = Response::json_value(
            200,
            &Device {
                id: "d\"1",
                online: true,
                ports: vec![80, 443],
            },
        );
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.headers,
            vec![("Content-Type", "application/json".to_owned())]
        );
        assert_eq!(
            resp.body,
            br#"{"id":"d\"1","online":true,"ports":[80,443]}"#
        );
    }

    #[test]
    fn json_value_failure_is_a_500_error_body() {
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("boom"))
            }
        }
        let resp = Response::json_value(200, &Broken);
        assert_eq!(resp.status, 500);
        let body = String::from_utf8(resp.body).unwrap();
        assert!(
            body.starts_with(
                r#"{"error":{"code":"internal_error","message":"response serialisation failed: "#
            ),
            "{body}"
        );
        assert!(body.contains("boom"), "{body}");
    }
}
