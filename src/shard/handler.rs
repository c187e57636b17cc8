//! What the app's routes answer the runtime: a whole response or a streamed body. The runtime
//! carries HTTP requests; the `Handler` (in `local`) the app wires in says what they mean.

use crate::http::response::Response;

/// What a handler answers: a whole response, or a body the connection streams chunk by chunk.
pub enum Reply {
    Full(Response),
    Chunked(Chunked),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Full(r)
    }
}

/// A `200` sent with chunked transfer encoding, one chunk in memory at a time.
pub struct Chunked {
    pub content_type: &'static str,
    /// Offered as a download under this name.
    pub filename: Option<&'static str>,
    pub body: Box<dyn ChunkSource>,
}

pub trait ChunkSource {
    /// Appends the next chunk to `out`; `Ok(false)` once the body is complete. An error ends the
    /// stream early (the head is gone already), and the client sees a short body.
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, String>;
}
