//! Reading what a request brings: a JSON body, list paging (limit and cursor).

use simd_json::BorrowedValue;
use simd_json::prelude::*;

use crate::fleet::auth;
use crate::http::query;
use crate::http::request::Request;
use crate::http::response::Response;

/// Items per page when the client does not say, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A copy of a JSON request body to parse in place; a wrong content type is a 415.
pub fn json_body(req: &Request) -> Result<Vec<u8>, Response> {
    let ct = req.header_str("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(Response::error(
            415,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    Ok(req.body.clone())
}

pub fn parse_object<'a>(buf: &'a mut [u8]) -> Result<BorrowedValue<'a>, Response> {
    if crate::lenient::too_deep(buf, crate::lenient::MAX_JSON_DEPTH) {
        return Err(Response::error(
            400,
            "invalid_json",
            "the JSON body nests too deep",
        ));
    }
    let v = simd_json::to_borrowed_value(buf)
        .map_err(|e| Response::error(400, "invalid_json", &format!("malformed JSON body: {e}")))?;
    if !v.is_object() {
        return Err(Response::error(
            400,
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    Ok(v)
}

pub fn limit(q: &[(String, String)]) -> Result<usize, Response> {
    match query::get(q, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Response::error(
                400,
                "invalid_query",
                &format!("limit must be 1 to {MAX_LIMIT}"),
            )),
        },
    }
}

/// Cursors are the hex of the store key to continue from; opaque to clients.
pub fn cursor(q: &[(String, String)], prefix: &[u8]) -> Result<Option<Vec<u8>>, Response> {
    match query::get(q, "cursor") {
        None | Some("") => Ok(None),
        Some(c) => match auth::unhex(c) {
            Some(k) if k.starts_with(prefix) => Ok(Some(k)),
            _ => Err(Response::error(
                400,
                "invalid_query",
                "cursor is not one this list returned",
            )),
        },
    }
}
