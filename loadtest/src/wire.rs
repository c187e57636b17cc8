//! How the harness frames what it sends and reads: fleetgate-core's codecs, the client's end for
//! its devices and its admin client and the server's end for the raw sink, with the harness's
//! bounds on what a misbehaving peer may make it buffer. One framer for the server, the CLI, the
//! tests and the harness means a bug in it shows up everywhere at once, not in one of four copies.

use fleetgate_core::http::client::{ClientRequest, RequestError, ResponseLimits, ResponseParser};
use fleetgate_core::ws;

/// Larger heads are not something these peers send. The server's own `--max-body` default is
/// 1 MiB, and its answers are far smaller than the 4 MiB allowed for a body.
const RESPONSE_LIMITS: ResponseLimits = ResponseLimits {
    max_head: 16 * 1024,
    max_headers: 64,
    max_response: 16 * 1024 + (4 << 20),
};

/// Refuse WebSocket messages larger than this (the server's own limit is 1 MiB).
pub const WS_LIMITS: ws::Limits = ws::Limits {
    max_message: 4 << 20,
};

/// The fixed client key: the server only echoes its hash, and a load test gains nothing from
/// a random one.
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A reader of the responses on one keep-alive connection (nothing the harness sends is HEAD).
pub fn response_parser() -> ResponseParser {
    ResponseParser::new(RESPONSE_LIMITS, false)
}

/// The content type of the API's and HTTP terminals' bodies.
pub const JSON: &str = "application/json";

/// Appends a keep-alive request with an optional body: `(content type, bytes)`.
pub fn request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    bearer: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<(), RequestError> {
    ClientRequest {
        method,
        target: path,
        host,
        bearer,
        body,
        ..ClientRequest::default()
    }
    .encode(out)
}
