//! The admin REST API (JSON over HTTP), plus `/healthz` and `/metrics`.
//!
//! Every `/api/*` route (but login and logout) needs a principal (`accounts::Principal`): the
//! bootstrap admin token or a named API token as `Authorization: Bearer`, or a dashboard session
//! cookie. Cookie requests that change state must carry the session's `X-CSRF-Token`; viewers may
//! only read; a session whose password must change may only reach `/api/me*` and logout. `/metrics`
//! needs a bearer token or an admin session. Errors are `{"error":{"code","message"}}` with the
//! matching status. Lists are `{"items":[...],"next_cursor"}`. Other paths serve the dashboard.

pub mod attendance;
mod devices;
mod events;
mod pending;
mod users;

use std::rc::Rc;

use simd_json::BorrowedValue;
use simd_json::prelude::*;
use uuid::Uuid;

use crate::accounts::{self, Principal, Role, Via};
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
                // Liveness: the process serves. `store` tells whether writes currently fail (disk
                // full, I/O errors); devices then hear "not stored" and keep their data.
                Method::Get | Method::Head => {
                    let body: &[u8] = if local.shared.store.writes_failing() {
                        b"{\"status\":\"ok\",\"store\":\"writes_failing\"}"
                    } else {
                        b"{\"status\":\"ok\",\"store\":\"ok\"}"
                    };
                    Response::json(200, body.to_vec())
                }
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
    let protected = segs.first().is_some_and(|s| *s == "api" || *s == "metrics");
    if !protected {
        return crate::dashboard::serve(req)
            .unwrap_or_else(|| Response::error(404, "not_found", "no such route"))
            .into();
    }
    // These two need no prior authentication: login creates the session, logout ends it. Neither
    // needs the CSRF header: login has no session yet, and a forged logout only logs someone out.
    match segs.as_slice() {
        ["api", "login"] => {
            return match req.method {
                Method::Post => users::login(local, req, remote),
                _ => method_not_allowed(),
            }
            .into();
        }
        ["api", "logout"] => {
            return match req.method {
                Method::Post => users::logout(local, req),
                _ => method_not_allowed(),
            }
            .into();
        }
        _ => {}
    }
    // Only a presented bearer token counts as a failed attempt: a dashboard that is simply not
    // logged in yet must not lock its address out.
    let ip = remote.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    let bearer = req.header_str("authorization").is_some();
    if let (Some(ip), true) = (ip, bearer) {
        let wait = local
            .shared
            .guard
            .auth_wait_ms(ip, None, crate::time::now_ms());
        if wait > 0 {
            let secs = wait.div_ceil(1000);
            return Response::error(
                429,
                "auth_throttled",
                &format!("too many failed authentications from this address; retry in {secs} s"),
            )
            .with_header("Retry-After", secs.to_string())
            .into();
        }
    }
    let principal = match authenticate(local, req) {
        Some(p) => p,
        None => {
            if let (Some(ip), true) = (ip, bearer) {
                local
                    .shared
                    .guard
                    .auth_failed(ip, None, crate::time::now_ms());
            }
            return unauthorized(local).into();
        }
    };
    if let Err(r) = permit(&principal, req, &segs) {
        return r.into();
    }
    if matches!(
        (&req.method, segs.as_slice()),
        (Method::Get, ["api", "attendance.csv"])
    ) {
        return match attendance::csv(&query::parse(&req.query)) {
            Ok(export) => Reply::Csv(export),
            Err(r) => r.into(),
        };
    }
    admin(local, req, &segs, &principal, remote).await.into()
}

fn unauthorized(local: &Local) -> Response {
    local.metrics.auth_failures.increment(1);
    Response::error(
        401,
        "unauthorized",
        "log in, or send Authorization: Bearer <admin or API token>",
    )
    .with_header("WWW-Authenticate", "Bearer".to_string())
}

fn is_read(m: &Method) -> bool {
    matches!(m, Method::Get | Method::Head)
}

/// What a principal may do, checked before any route runs.
fn permit(p: &Principal, req: &Request, segs: &[&str]) -> Result<(), Response> {
    let own_account = matches!(segs, ["api", "me"] | ["api", "me", "password"]);
    if let Via::Session { csrf, .. } = &p.via {
        // Cookies ride along on cross-site requests; the CSRF header cannot.
        if !is_read(&req.method) && !accounts::csrf_ok(req.header_str("x-csrf-token"), csrf) {
            return Err(Response::error(
                403,
                "csrf_failed",
                "send the session's csrf_token as X-CSRF-Token",
            ));
        }
        if p.must_change_password && !own_account {
            return Err(Response::error(
                403,
                "password_change_required",
                "change your password first (POST /api/me/password)",
            ));
        }
        if segs == ["metrics"] && p.role != Role::Admin {
            return Err(forbidden());
        }
    }
    if p.role == Role::Viewer && !is_read(&req.method) && !own_account {
        return Err(forbidden());
    }
    if matches!(segs, ["api", "users" | "tokens", ..]) && p.role != Role::Admin {
        return Err(forbidden());
    }
    Ok(())
}

fn forbidden() -> Response {
    Response::error(403, "forbidden", "your role does not allow this")
}

/// The caller: a bearer token (bootstrap admin token or named API token) if one is sent,
/// otherwise the session cookie. A wrong bearer token does not fall back to the cookie.
pub fn authenticate(local: &Local, req: &Request) -> Option<Principal> {
    let now = crate::time::now_ms();
    if let Some(h) = req.header_str("authorization") {
        let t = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))?
            .trim();
        return bearer_principal(local, t, now);
    }
    session_principal(local, req, now)
}

/// The principal of a bearer token; persists a named token's `last_used` at most once a minute.
pub fn bearer_principal(local: &Local, t: &str, now: u64) -> Option<Principal> {
    if auth::verify_token(t, &local.shared.admin_token) {
        return Some(Principal {
            name: "admin-token".to_string(),
            role: Role::Admin,
            via: Via::Bearer,
            must_change_password: false,
        });
    }
    if !t.starts_with(accounts::API_TOKEN_PREFIX) {
        return None;
    }
    let (tok, stale) = local.shared.accounts.api_token(t, now)?;
    if stale {
        // Not waited for: last_used is informational, and a lost update costs nothing.
        let key = accounts::last_used_key(&tok.id);
        let _ = local
            .batcher
            .stage(|st| st.put(crate::store::Cf::ApiTokens, &key, &now.to_be_bytes()));
    }
    Some(Principal {
        name: tok.name,
        role: tok.role,
        via: Via::Bearer,
        must_change_password: false,
    })
}

/// The principal of the request's `fg_session` cookie, if it names a live session.
pub fn session_principal(local: &Local, req: &Request, now: u64) -> Option<Principal> {
    let id = accounts::cookie(req.header_str("cookie")?, accounts::SESSION_COOKIE)?;
    local.shared.accounts.session(id, now)
}

async fn admin(
    local: &Rc<Local>,
    req: &Request,
    segs: &[&str],
    principal: &Principal,
    remote: &str,
) -> Response {
    let q = query::parse(&req.query);
    match (&req.method, segs) {
        (Method::Get, ["metrics"]) => Response::text(
            200,
            "text/plain; version=0.0.4",
            local.shared.prometheus.render().into_bytes(),
        ),
        (Method::Get, ["api", "me"]) => users::me(principal),
        (Method::Post, ["api", "me", "password"]) => {
            users::change_password(local, req, principal, remote).await
        }
        (Method::Get, ["api", "users"]) => users::list_users(local),
        (Method::Post, ["api", "users"]) => users::create_user(local, req).await,
        (Method::Patch, ["api", "users", name]) => users::patch_user(local, req, name).await,
        (Method::Delete, ["api", "users", name]) => {
            users::delete_user(local, name, principal).await
        }
        (Method::Get, ["api", "tokens"]) => users::list_tokens(local),
        (Method::Post, ["api", "tokens"]) => users::create_token(local, req).await,
        (Method::Delete, ["api", "tokens", id]) => users::delete_token(local, id).await,
        (Method::Get, ["api", "stats"]) => users::stats(local),
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
            | ["api", "me" | "users" | "tokens" | "stats"]
            | ["api", "me", "password"]
            | ["api", "users" | "tokens", _]
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
