//! The admin REST API (JSON over HTTP), plus `/healthz` and `/metrics`.
//!
//! Every `/api/*` route and `/metrics` require `Authorization: Bearer <admin token>`. Errors are
//! `{"error":{"code","message"}}` with the matching status. Lists are `{"items":[...],"next_cursor"}`.

pub mod attendance;
mod devices;
mod events;
mod pending;

use std::rc::Rc;

use simd_json::BorrowedValue;
use simd_json::prelude::*;
use uuid::Uuid;

use crate::auth;
use crate::http::query;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::shard::Local;

/// Items per page when the client does not say, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// What a route answers: a whole response, or a CSV export the connection streams in chunks.
pub enum Reply {
    Full(Response),
    Csv(attendance::CsvExport),
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Full(r)
    }
}

pub async fn route(local: &Rc<Local>, req: &Request, remote: &str) -> Reply {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    match segs.as_slice() {
        ["healthz"] => {
            return match req.method {
                Method::Get | Method::Head => Response::json(200, b"{\"status\":\"ok\"}".to_vec()),
                _ => method_not_allowed(),
            }
            .into();
        }
        // Devices authenticate by serial on this route, not with the admin token.
        ["api", "device-http"] => {
            return match req.method {
                Method::Post => crate::device_http::handle(local, req, remote).await,
                _ => method_not_allowed(),
            }
            .into();
        }
        _ => {}
    }
    if matches!(
        (&req.method, segs.as_slice()),
        (Method::Get, ["api", "attendance.csv"])
    ) {
        if !authorized(local, req) {
            return unauthorized(local).into();
        }
        return match attendance::csv(&query::parse(&req.query)) {
            Ok(export) => Reply::Csv(export),
            Err(r) => r.into(),
        };
    }
    admin(local, req, &segs).await.into()
}

fn unauthorized(local: &Local) -> Response {
    local.metrics.auth_failures.increment(1);
    Response::error(
        401,
        "unauthorized",
        "send Authorization: Bearer <admin token>",
    )
    .with_header("WWW-Authenticate", "Bearer".to_string())
}

async fn admin(local: &Rc<Local>, req: &Request, segs: &[&str]) -> Response {
    let protected = segs.first().is_some_and(|s| *s == "api" || *s == "metrics");
    if !protected {
        return Response::error(404, "not_found", "no such route");
    }
    if !authorized(local, req) {
        return unauthorized(local);
    }
    let q = query::parse(&req.query);
    match (&req.method, segs) {
        (Method::Get, ["metrics"]) => Response::text(
            200,
            "text/plain; version=0.0.4",
            local.shared.prometheus.render().into_bytes(),
        ),
        (Method::Get, ["api", "devices"]) => devices::list(local, &q),
        (Method::Post, ["api", "devices"]) => devices::create(local, req).await,
        (Method::Get, ["api", "devices", id]) => with_id(id, |id| devices::get(local, id)),
        (Method::Patch, ["api", "devices", id]) => match parse_id(id) {
            Ok(id) => devices::patch(local, id, req).await,
            Err(r) => r,
        },
        (Method::Delete, ["api", "devices", id]) => match parse_id(id) {
            Ok(id) => devices::delete(local, id).await,
            Err(r) => r,
        },
        (Method::Post, ["api", "devices", id, "token"]) => match parse_id(id) {
            Ok(id) => devices::rotate_token(local, id).await,
            Err(r) => r,
        },
        (Method::Get, ["api", "devices", id, "telemetry"]) => {
            with_id(id, |id| devices::telemetry(local, id, &q))
        }
        (Method::Get, ["api", "devices", id, "commands"]) => {
            with_id(id, |id| devices::commands(local, id, &q))
        }
        (Method::Post, ["api", "devices", id, "commands"]) => match parse_id(id) {
            Ok(id) => devices::send_command(local, id, req).await,
            Err(r) => r,
        },
        (Method::Get, ["api", "events"]) => events::list(local, &q),
        (Method::Get, ["api", "attendance"]) => attendance::list(local, &q),
        (Method::Get, ["api", "attendance", id, "photo"]) => attendance::photo(local, id),
        (Method::Get, ["api", "pending-devices"]) => pending::list(local),
        (Method::Post, ["api", "pending-devices", serial, "approve"]) => {
            pending::approve(local, serial, req).await
        }
        (Method::Post, ["api", "pending-devices", serial, "dismiss"])
        | (Method::Delete, ["api", "pending-devices", serial]) => {
            pending::dismiss(local, serial).await
        }
        (
            _,
            ["metrics"]
            | [
                "api",
                "devices" | "events" | "attendance" | "attendance.csv" | "pending-devices",
            ]
            | ["api", "devices", _]
            | ["api", "devices", _, "token" | "telemetry" | "commands"]
            | ["api", "pending-devices", _]
            | ["api", "pending-devices", _, "approve" | "dismiss"]
            | ["api", "attendance", _, "photo"],
        ) => method_not_allowed(),
        _ => Response::error(404, "not_found", "no such route"),
    }
}

fn method_not_allowed() -> Response {
    Response::error(
        405,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

fn authorized(local: &Local, req: &Request) -> bool {
    req.header_str("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .is_some_and(|t| auth::verify_token(t.trim(), &local.shared.admin_token))
}

fn parse_id(s: &str) -> Result<Uuid, Response> {
    Uuid::parse_str(s).map_err(|_| Response::error(404, "not_found", "no device with this id"))
}

fn with_id(s: &str, f: impl FnOnce(Uuid) -> Response) -> Response {
    match parse_id(s) {
        Ok(id) => f(id),
        Err(r) => r,
    }
}

/// A copy of a JSON request body to parse in place; a wrong content type is a 415.
fn json_body(req: &Request) -> Result<Vec<u8>, Response> {
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

fn parse_object<'a>(buf: &'a mut [u8]) -> Result<BorrowedValue<'a>, Response> {
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

fn limit(q: &[(String, String)]) -> Result<usize, Response> {
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
fn cursor(q: &[(String, String)], prefix: &[u8]) -> Result<Option<Vec<u8>>, Response> {
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

/// `{"items":[...],"next_cursor":...}` from already-encoded items.
fn page(items: &[String], next: Option<String>) -> Response {
    let mut s = String::with_capacity(32 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    s.push_str("{\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(it);
    }
    s.push_str("],\"next_cursor\":");
    match next {
        Some(c) => {
            s.push('"');
            s.push_str(&c);
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push('}');
    Response::json(200, s.into_bytes())
}

fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store error in API");
    Response::error(
        503,
        "store_unavailable",
        "the store could not complete the request; retry",
    )
}
