//! The server's half of the RFC 6455 opening handshake (section 4.2).
//!
//! No subprotocol and no extension is negotiated: `Sec-WebSocket-Protocol` and
//! `Sec-WebSocket-Extensions` offered by a client are left out of the response, which per
//! RFC 6455 4.2.2 declines them. A client offering permessage-deflate therefore sends
//! uncompressed frames, and one that sets RSV1 anyway is closed with 1002 by the decoder.

use std::fmt;

use tungstenite::handshake::derive_accept_key;

/// Why an upgrade request was refused; the runtime answers with [`status`](Self::status),
/// the [`response_headers`](Self::response_headers), and a body built from
/// [`code`](Self::code) and [`message`](Self::message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not GET.
    NotGet,
    /// No `Upgrade: websocket`, or no `upgrade` token in `Connection`: not a WebSocket request.
    MissingUpgrade,
    /// `Sec-WebSocket-Version` missing, repeated, or not 13.
    BadVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes.
    BadKey,
    /// No `Host` header.
    MissingHost,
}

impl HandshakeError {
    pub fn status(&self) -> u16 {
        match self {
            Self::NotGet => 405,
            Self::MissingUpgrade | Self::BadVersion => 426,
            Self::BadKey | Self::MissingHost => 400,
        }
    }

    /// Machine-readable error code for the response body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotGet => "method_not_allowed",
            Self::MissingUpgrade => "upgrade_required",
            Self::BadVersion => "unsupported_websocket_version",
            Self::BadKey => "bad_websocket_key",
            Self::MissingHost => "missing_host",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::NotGet => "a WebSocket upgrade must use GET",
            Self::MissingUpgrade => {
                "this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)"
            }
            Self::BadVersion => "Sec-WebSocket-Version must be 13",
            Self::BadKey => "Sec-WebSocket-Key must be the base64 of 16 bytes",
            Self::MissingHost => "the Host header is missing",
        }
    }

    /// Headers the error response must carry. RFC 9110 requires `Allow` on a 405 and
    /// `Upgrade` on a 426; an `Upgrade` header in turn needs `upgrade` listed in `Connection`
    /// (RFC 9110 7.8), which is safe to send beside the runtime's own `Connection` header
    /// since that header is a list. RFC 6455 4.4 asks for the supported version on a 426.
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::NotGet => &[("Allow", "GET")],
            Self::MissingUpgrade | Self::BadVersion => &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
            ],
            Self::BadKey | Self::MissingHost => &[],
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl std::error::Error for HandshakeError {}

/// A header that must appear exactly once: a repeated one is refused, since another party
/// on the path might read the other copy.
#[derive(Clone, Copy)]
enum Single<'h> {
    Absent,
    Once(&'h [u8]),
    Repeated,
}

impl<'h> Single<'h> {
    fn add(self, value: &'h [u8]) -> Self {
        match self {
            Self::Absent => Self::Once(value.trim_ascii()),
            Self::Once(_) | Self::Repeated => Self::Repeated,
        }
    }

    fn once(self) -> Option<&'h [u8]> {
        match self {
            Self::Once(value) => Some(value),
            Self::Absent | Self::Repeated => None,
        }
    }
}

/// Validates a WebSocket upgrade request from its method and headers (names as sent, values
/// raw) and returns the complete `101 Switching Protocols` response to write.
///
/// Header names match case-insensitively, and so do the tokens in `Upgrade` and `Connection`,
/// which may be lists (`Connection: keep-alive, Upgrade`) and may be repeated. The checks run
/// in this order, the first failure deciding the error: method, upgrade, version, key, host.
/// The HTTP version and the request target are the HTTP layer's to check.
pub fn accept<'h>(
    method: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Vec<u8>, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    let mut host = false;
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version = Single::Absent;
    let mut key = Single::Absent;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = version.add(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = key.add(value);
        }
    }
    if !(upgrade && connection_upgrade) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if version.once() != Some(b"13".as_slice()) {
        return Err(HandshakeError::BadVersion);
    }
    let key = key
        .once()
        .filter(|key| is_base64_of_16_bytes(key))
        .ok_or(HandshakeError::BadKey)?;
    if !host {
        return Err(HandshakeError::MissingHost);
    }
    let accept_key = derive_accept_key(key);
    let mut response = Vec::with_capacity(160);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    response.extend_from_slice(accept_key.as_bytes());
    response.extend_from_slice(b"\r\n\r\n");
    Ok(response)
}

/// Whether the comma-separated list `value` holds `token`, ignoring ASCII case and the
/// optional whitespace around elements.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&byte| byte == b',')
        .any(|element| element.trim_ascii().eq_ignore_ascii_case(token))
}

/// 16 bytes encode to 22 base64 characters and `==` padding. The padding bits of the last
/// character are not required to be zero, as the accept key is derived from the text anyway.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    match key.split_last_chunk::<2>() {
        Some((chars, b"==")) => {
            chars.len() == 22
                && chars
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request of RFC 6455 1.2, whose key 1.3 works through.
    const RFC_REQUEST: [(&str, &[u8]); 7] = [
        ("Host", b"server.example.com"),
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
        ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", b"http://example.com"),
        ("Sec-WebSocket-Protocol", b"chat, superchat"),
        ("Sec-WebSocket-Version", b"13"),
    ];

    const RFC_RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    /// The RFC request with `name` replaced by `value`, or removed when `value` is `None`.
    fn request_with(
        name: &'static str,
        value: Option<&'static [u8]>,
    ) -> Vec<(&'static str, &'static [u8])> {
        let mut headers: Vec<_> = RFC_REQUEST
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect();
        headers.extend(value.map(|value| (name, value)));
        headers
    }

    #[test]
    fn answers_the_rfc_example() {
        assert_eq!(accept("GET", RFC_REQUEST).as_deref(), Ok(RFC_RESPONSE));
    }

    #[test]
    fn declines_subprotocols_and_extensions() {
        let mut headers = RFC_REQUEST.to_vec();
        headers.push((
            "Sec-WebSocket-Extensions",
            b"permessage-deflate; client_max_window_bits",
        ));
        assert_eq!(
            accept("GET", headers).as_deref(),
            Ok(RFC_RESPONSE),
            "no Sec-WebSocket-Protocol nor -Extensions"
        );
    }

    #[test]
    fn matches_names_and_tokens_ignoring_case_and_lists() {
        let headers: [(&str, &[u8]); 5] = [
            ("HOST", b"h"),
            ("upgrade", b"WebSocket"),
            ("CONNECTION", b"keep-alive,\tUpgrade "),
            ("sec-websocket-key", b" dGhlIHNhbXBsZSBub25jZQ== "),
            ("SEC-WEBSOCKET-VERSION", b"13"),
        ];
        assert_eq!(accept("GET", headers).as_deref(), Ok(RFC_RESPONSE));

        let split_across_headers: [(&str, &[u8]); 6] = [
            ("Host", b"h"),
            ("Upgrade", b"h2c, websocket"),
            ("Connection", b"keep-alive"),
            ("Connection", b"upgrade"),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", b"13"),
        ];
        assert_eq!(
            accept("GET", split_across_headers).as_deref(),
            Ok(RFC_RESPONSE)
        );
    }

    #[test]
    fn refuses_other_methods_with_405() {
        for method in ["POST", "HEAD", "get", "PUT"] {
            assert_eq!(accept(method, RFC_REQUEST), Err(HandshakeError::NotGet));
        }
        assert_eq!(HandshakeError::NotGet.status(), 405);
        assert_eq!(
            HandshakeError::NotGet.response_headers(),
            [("Allow", "GET")]
        );
    }

    #[test]
    fn refuses_requests_without_upgrade_with_426() {
        for (name, value) in [
            ("Upgrade", None),
            ("Upgrade", Some(&b"h2c"[..])),
            ("Upgrade", Some(&b"websockets"[..])),
            ("Connection", None),
            ("Connection", Some(&b"keep-alive"[..])),
            ("Connection", Some(&b"upgraded"[..])),
        ] {
            assert_eq!(
                accept("GET", request_with(name, value)),
                Err(HandshakeError::MissingUpgrade),
                "{name}: {value:?}"
            );
        }
        let error = HandshakeError::MissingUpgrade;
        assert_eq!(error.status(), 426);
        assert!(
            error
                .response_headers()
                .contains(&("Sec-WebSocket-Version", "13"))
        );
        assert!(error.response_headers().contains(&("Upgrade", "websocket")));
    }

    #[test]
    fn refuses_versions_other_than_13_with_426() {
        for value in [None, Some(&b"8"[..]), Some(&b"13, 8"[..]), Some(&b""[..])] {
            assert_eq!(
                accept("GET", request_with("Sec-WebSocket-Version", value)),
                Err(HandshakeError::BadVersion),
                "{value:?}"
            );
        }
        let mut repeated = RFC_REQUEST.to_vec();
        repeated.push(("Sec-WebSocket-Version", b"13"));
        assert_eq!(accept("GET", repeated), Err(HandshakeError::BadVersion));
        assert_eq!(HandshakeError::BadVersion.status(), 426);
        assert!(
            HandshakeError::BadVersion
                .response_headers()
                .contains(&("Sec-WebSocket-Version", "13"))
        );
    }

    #[test]
    fn refuses_keys_that_are_not_16_bytes_of_base64_with_400() {
        for value in [
            None,
            Some(&b""[..]),
            Some(&b"dGhlIHNhbXBsZSBub25jZQ="[..]),
            Some(&b"d"[..]),
            Some(&b"dGhlIHNhbXBsZSBub25jZQ==="[..]),
            Some(&b"dGhlIHNhbXBsZSBub25jZQAA"[..]),
            Some(&b"dGhlIHNhbXBsZSBub25jZ*=="[..]),
            Some(&b"dGhlIHNhbXBsZSBub25j ZQ=="[..]),
            Some(&b"dGhlIHNhbXBsZSBub25jZSB0b28gbG9uZw=="[..]),
        ] {
            assert_eq!(
                accept("GET", request_with("Sec-WebSocket-Key", value)),
                Err(HandshakeError::BadKey),
                "{value:?}"
            );
        }
        let mut repeated = RFC_REQUEST.to_vec();
        repeated.push(("sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAA=="));
        assert_eq!(accept("GET", repeated), Err(HandshakeError::BadKey));
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }

    #[test]
    fn refuses_requests_without_host_with_400() {
        assert_eq!(
            accept("GET", request_with("Host", None)),
            Err(HandshakeError::MissingHost)
        );
        assert_eq!(HandshakeError::MissingHost.status(), 400);
    }

    #[test]
    fn reports_the_first_failing_check() {
        assert_eq!(accept("POST", []), Err(HandshakeError::NotGet));
        assert_eq!(accept("GET", []), Err(HandshakeError::MissingUpgrade));
        let upgrade_only: [(&str, &[u8]); 2] =
            [("Upgrade", b"websocket"), ("Connection", b"Upgrade")];
        assert_eq!(accept("GET", upgrade_only), Err(HandshakeError::BadVersion));
    }

    #[test]
    fn errors_describe_themselves() {
        let error = HandshakeError::BadVersion;
        assert_eq!(error.code(), "unsupported_websocket_version");
        assert_eq!(error.to_string(), "426 Sec-WebSocket-Version must be 13");
    }
}
