//! The admin REST API (JSON over HTTP), plus `/healthz` and `/metrics`.
//!
//! Every `/api/*` route (but login and logout) needs a principal (`accounts::Principal`): the
//! bootstrap admin token or a named API token as `Authorization: Bearer`, or a dashboard session
//! cookie. Cookie requests that change state must carry the session's `X-CSRF-Token`; viewers may
//! only read; a session whose password must change may only reach `/api/me*` and logout. `/metrics`
//! needs a bearer token or an admin session. Errors are `{"error":{"code","message"}}` with the
//! matching status. Lists are `{"items":[...],"next_cursor"}`. Other paths serve the dashboard.

pub mod attendance;
mod body;
mod context;
pub mod device_http;
mod devices;
mod error;
mod events;
mod page;
mod pending;
mod query;
mod session;
mod status;
mod tokens;
mod users;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::fleet::accounts::{self, Principal, Role, Via};
use crate::fleet::principal;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::shard::handler::Reply;
use crate::shard::local::{Handler, Local};
use context::Ctx;
use error::ApiError;

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

fn answer(r: Result<Response, ApiError>) -> Reply {
    r.unwrap_or_else(Response::from).into()
}

async fn route(api: &Api, local: &Rc<Local>, req: &Request, remote: &str) -> Reply {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut cx = Ctx {
        local,
        req,
        remote,
        query: query::Query::parse(&req.query),
        params: Vec::new(),
        principal: None,
        data_dir: &api.data_dir,
        prometheus: &api.prometheus,
    };
    match segs.as_slice() {
        ["healthz"] => {
            return answer(match req.method {
                Method::Get | Method::Head => status::health(&cx),
                _ => Err(ApiError::method_not_allowed()),
            });
        }
        // Devices authenticate by serial on this route, not with the admin token.
        ["api", "device-http"] => {
            return answer(match req.method {
                Method::Post => device_http::handle(&cx).await,
                _ => Err(ApiError::method_not_allowed()),
            });
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
            return answer(match req.method {
                Method::Post => session::login(&cx),
                _ => Err(ApiError::method_not_allowed()),
            });
        }
        ["api", "logout"] => {
            return answer(match req.method {
                Method::Post => session::logout(&cx),
                _ => Err(ApiError::method_not_allowed()),
            });
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
            return answer(Err(ApiError::new(
                429,
                "auth_throttled",
                format!("too many failed authentications from this address; retry in {secs} s"),
            )
            .with_header("Retry-After", secs.to_string())));
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
            local.metrics.auth_failures.increment(1);
            return answer(Err(ApiError::unauthorized()));
        }
    };
    if let Err(e) = permit(&principal, req, &segs) {
        return answer(Err(e));
    }
    cx.principal = Some(principal);
    if matches!(
        (&req.method, segs.as_slice()),
        (Method::Get, ["api", "attendance.csv"])
    ) {
        return match attendance::csv(&cx) {
            Ok(export) => Reply::Chunked(export),
            Err(e) => answer(Err(e)),
        };
    }
    answer(admin(&mut cx, &segs).await)
}

fn is_read(m: &Method) -> bool {
    matches!(m, Method::Get | Method::Head)
}

/// What a principal may do, checked before any route runs.
fn permit(p: &Principal, req: &Request, segs: &[&str]) -> Result<(), ApiError> {
    let own_account = matches!(segs, ["api", "me"] | ["api", "me", "password"]);
    if let Via::Session { csrf, .. } = &p.via {
        // Cookies ride along on cross-site requests; the CSRF header cannot.
        if !is_read(&req.method) && !accounts::csrf_ok(req.header_str("x-csrf-token"), csrf) {
            return Err(ApiError::new(
                403,
                "csrf_failed",
                "send the session's csrf_token as X-CSRF-Token",
            ));
        }
        if p.must_change_password && !own_account {
            return Err(ApiError::new(
                403,
                "password_change_required",
                "change your password first (POST /api/me/password)",
            ));
        }
        if segs == ["metrics"] && p.role != Role::Admin {
            return Err(ApiError::forbidden());
        }
    }
    if p.role == Role::Viewer && !is_read(&req.method) && !own_account {
        return Err(ApiError::forbidden());
    }
    if matches!(segs, ["api", "users" | "tokens", ..]) && p.role != Role::Admin {
        return Err(ApiError::forbidden());
    }
    Ok(())
}

async fn admin<'a>(cx: &mut Ctx<'a>, segs: &[&'a str]) -> Result<Response, ApiError> {
    let method = cx.req.method;
    match (&method, segs) {
        (Method::Get, ["metrics"]) => status::metrics(cx),
        (Method::Get, ["api", "me"]) => session::me(cx),
        (Method::Post, ["api", "me", "password"]) => session::change_password(cx).await,
        (Method::Get, ["api", "users"]) => users::list(cx),
        (Method::Post, ["api", "users"]) => users::create(cx).await,
        (Method::Patch, ["api", "users", name]) => {
            cx.params = vec![("name", *name)];
            users::patch(cx).await
        }
        (Method::Delete, ["api", "users", name]) => {
            cx.params = vec![("name", *name)];
            users::delete(cx).await
        }
        (Method::Get, ["api", "tokens"]) => tokens::list(cx),
        (Method::Post, ["api", "tokens"]) => tokens::create(cx).await,
        (Method::Delete, ["api", "tokens", id]) => {
            cx.params = vec![("id", *id)];
            tokens::delete(cx).await
        }
        (Method::Get, ["api", "stats"]) => status::stats(cx),
        (Method::Get, ["api", "devices"]) => devices::list(cx),
        (Method::Post, ["api", "devices"]) => devices::create(cx).await,
        (Method::Get, ["api", "devices", id]) => {
            cx.params = vec![("id", *id)];
            devices::get(cx)
        }
        (Method::Patch, ["api", "devices", id]) => {
            cx.params = vec![("id", *id)];
            devices::patch(cx).await
        }
        (Method::Delete, ["api", "devices", id]) => {
            cx.params = vec![("id", *id)];
            devices::delete(cx).await
        }
        (Method::Post, ["api", "devices", id, "token"]) => {
            cx.params = vec![("id", *id)];
            devices::rotate_token(cx).await
        }
        (Method::Get, ["api", "devices", id, "telemetry"]) => {
            cx.params = vec![("id", *id)];
            devices::telemetry(cx)
        }
        (Method::Get, ["api", "devices", id, "commands"]) => {
            cx.params = vec![("id", *id)];
            devices::commands(cx)
        }
        (Method::Post, ["api", "devices", id, "commands"]) => {
            cx.params = vec![("id", *id)];
            devices::send_command(cx).await
        }
        (Method::Get, ["api", "events"]) => events::list(cx),
        (Method::Get, ["api", "attendance"]) => attendance::list(cx),
        (Method::Get, ["api", "attendance", id, "photo"]) => {
            cx.params = vec![("id", *id)];
            attendance::photo(cx)
        }
        (Method::Get, ["api", "pending-devices"]) => pending::list(cx),
        (Method::Post, ["api", "pending-devices", serial, "approve"]) => {
            cx.params = vec![("serial", *serial)];
            pending::approve(cx).await
        }
        (Method::Post, ["api", "pending-devices", serial, "dismiss"])
        | (Method::Delete, ["api", "pending-devices", serial]) => {
            cx.params = vec![("serial", *serial)];
            pending::dismiss(cx).await
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
        ) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    }
}
