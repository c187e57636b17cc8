//! Minimal HTTP/1.1 over byte buffers: requests out and responses in for the harness's HTTP
//! devices and admin client, requests in and responses out for the raw sink.
//!
//! Only what those peers use: `Content-Length` bodies (fleetgate's JSON answers always carry one;
//! chunked bodies are refused), keep-alive unless `Connection: close`. Heads and bodies are bounded
//! so a misbehaving peer cannot make the harness buffer without limit.

use crate::frame::head_end;

/// Larger heads are not something these peers send.
pub const MAX_HEAD: usize = 16 * 1024;
/// The server's own `--max-body` default is 1 MiB; answers are far smaller.
pub const MAX_BODY: usize = 4 << 20;

/// One response, parsed.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close`: the connection ends after this response.
    pub close: bool,
}

/// One request, parsed (raw sink side).
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// `Sec-WebSocket-Key` when this is a WebSocket upgrade.
    pub ws_key: Option<String>,
    pub close: bool,
}

/// Encodes a request; head and body in one buffer so they leave in one segment.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    bearer: Option<&str>,
    json_body: Option<&[u8]>,
) -> Vec<u8> {
    let body = json_body.unwrap_or(&[]);
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(t) = bearer {
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if json_body.is_some() {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if json_body.is_some() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Encodes a response (raw sink side).
pub fn response(status: u16, reason: &str, json_body: &[u8], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + json_body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            json_body.len(),
            if close { "close" } else { "keep-alive" }
        )
        .as_bytes(),
    );
    out.extend_from_slice(json_body);
    out
}

struct Head<'a> {
    first: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    len: usize,
}

fn head(buf: &[u8]) -> Result<Option<Head<'_>>, String> {
    let Some(end) = head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(format!("HTTP head over {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end - 4]).map_err(|_| "HTTP head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    Ok(Some(Head {
        first,
        headers,
        len: end,
    }))
}

impl Head<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn content_length(&self) -> Result<usize, String> {
        if self
            .get("transfer-encoding")
            .is_some_and(|t| !t.eq_ignore_ascii_case("identity"))
        {
            return Err("chunked bodies are not supported by the harness".into());
        }
        match self.get("content-length") {
            None => Ok(0),
            Some(v) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("invalid Content-Length {v:?}"))?;
                if n > MAX_BODY {
                    return Err(format!("body of {n} bytes exceeds the harness limit"));
                }
                Ok(n)
            }
        }
    }

    fn close(&self) -> bool {
        self.get("connection")
            .is_some_and(|c| c.to_ascii_lowercase().contains("close"))
    }
}

/// Parses the response at the start of `buf`: `Ok(None)` means "need more bytes"; on success the
/// caller drains the returned length.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(h) = head(buf)? else { return Ok(None) };
    let mut parts = h.first.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {:?}", truncate(h.first)));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", truncate(h.first)))?;
    let len = h.content_length()?;
    let end = h.len + len;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        Response {
            status,
            body: buf[h.len..end].to_vec(),
            close: h.close(),
        },
        end,
    )))
}

/// Parses the request at the start of `buf` (raw sink side).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, String> {
    let Some(h) = head(buf)? else { return Ok(None) };
    let mut parts = h.first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let len = h.content_length()?;
    let end = h.len + len;
    if buf.len() < end {
        return Ok(None);
    }
    let upgrade = h
        .get("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    Ok(Some((
        Request {
            method,
            path,
            body: buf[h.len..end].to_vec(),
            ws_key: h
                .get("sec-websocket-key")
                .filter(|_| upgrade)
                .map(str::to_string),
            close: h.close(),
        },
        end,
    )))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_round_trip_and_partial() {
        let r = response(202, "Accepted", br#"{"ok":true}"#, false);
        assert!(parse_response(&r[..r.len() - 1]).expect("valid").is_none());
        let (resp, used) = parse_response(&r).expect("valid").expect("complete");
        assert_eq!((resp.status, used, resp.close), (202, r.len(), false));
        assert_eq!(resp.body, br#"{"ok":true}"#);
    }

    #[test]
    fn request_round_trip() {
        let r = request("POST", "/api/x", "h:1", Some("t"), Some(b"{}"));
        let (req, used) = parse_request(&r).expect("valid").expect("complete");
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), used),
            ("POST", "/api/x", r.len())
        );
        assert_eq!(req.body, b"{}");
        assert!(req.ws_key.is_none());
    }

    #[test]
    fn chunked_and_oversized_are_refused() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n").is_err());
        assert!(parse_response(&vec![b'x'; MAX_HEAD + 1]).is_err());
    }
}
