//! The admin REST API (JSON over HTTP), plus `/healthz` and `/metrics`.
//!
//! Every `/api/*` route (but login and logout) needs a principal (`accounts::Principal`): the
//! bootstrap admin token or a named API token as `Authorization: Bearer`, or a dashboard session
//! cookie. Cookie requests that change state must carry the session's `X-CSRF-Token`; viewers may
//! only read; a session whose password must change may only reach `/api/me*` and logout. `/metrics`
//! needs a bearer token or an admin session. Errors are `{"error":{"code","message"}}` with the
//! matching status. Lists are `{"items":[...],"next_cursor"}`. Other paths serve the dashboard.

mod answer;
pub mod attendance;
pub mod device_http;
mod devices;
mod events;
mod extract;
mod pending;
mod users;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use metrics_exporter_prometheus::PrometheusHandle;
use uuid::Uuid;

use crate::fleet::accounts::{self, Principal, Role, Via};
use crate::fleet::principal;
use crate::http::query;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::shard::handler::Reply;
use crate::shard::local::{Handler, Local};

/// The app's HTTP routes, wired into the runtime as its `Handler`.
pub struct Api {
    /// `--data-dir`: the initial admin password's file is removed there once it is changed.
    pub data_dir: PathBuf,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
}

impl Handler for Api {
    fn route<'a>(
        &'a self,
        local: &'a Rc<Local>,
        req: &'a Request,
        remote: &'a str,
    ) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(route(self, local, req, remote))
    }
}

async fn route(api: &Api, local: &Rc<Local>, req: &Request, remote: &str) -> Reply {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    match segs.as_slice() {
        ["healthz"] => {
            return match req.method {
                // Liveness: the process serves. `store` tells whether writes currently fail (disk
                // full, I/O errors); devices then hear "not stored" and keep their data.
                Method::Get | Method::Head => {
                    let body: &[u8] = if local.fleet().store.writes_failing() {
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
                Method::Post => device_http::handle(local, req, remote).await,
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
            .fleet()
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
    let now = crate::time::now_ms();
    let principal = match principal::authenticate(local.fleet(), &local.batcher, req, now) {
        Some(p) => p,
        None => {
            if let (Some(ip), true) = (ip, bearer) {
                local
                    .fleet()
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
        return match attendance::csv(local.fleet().store.clone(), &query::parse(&req.query)) {
            Ok(export) => Reply::Chunked(export),
            Err(r) => r.into(),
        };
    }
    admin(api, local, req, &segs, &principal, remote)
        .await
        .into()
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

async fn admin(
    api: &Api,
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
            api.prometheus.render().into_bytes(),
        ),
        (Method::Get, ["api", "me"]) => users::me(principal),
        (Method::Post, ["api", "me", "password"]) => {
            users::change_password(local, req, principal, remote, &api.data_dir).await
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
