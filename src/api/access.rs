//! Who may call the signed routes: authentication (failed bearer tokens are throttled) and
//! the permission rules, checked before any route runs, for unknown paths too.
//!
//! Cookie requests that change state must carry the session's `X-CSRF-Token`; viewers may only
//! read; a session whose password must change may only reach `/api/me*` and logout; users,
//! tokens and backups are the admins'; `/metrics` needs a bearer token or an admin session.

use std::net::SocketAddr;

use crate::api::error::ApiError;
use crate::fleet::accounts::{self, Principal, Role, Via};
use crate::fleet::principal;
use crate::http::request::{Method, Request};
use crate::shard::local::Local;
use crate::time::now_ms;

/// The principal behind `req`, if it may go on to the route at `segs`.
pub fn admit(
    local: &Local,
    req: &Request,
    remote: SocketAddr,
    segs: &[&str],
) -> Result<Principal, ApiError> {
    let Some(principal) = principal::authenticate(local.fleet(), &local.batcher, req, now_ms())
    else {
        local.metrics.auth_failures.increment(1);
        // Only a presented bearer token counts as a failed attempt: a dashboard that is simply not
        // logged in yet must not count against its address. A right token never gets here, so no
        // one's failures can lock it out; the throttle only changes how failures are answered.
        if req.header_str("authorization").is_some() {
            let wait = local.fleet().guard.token_failed(remote.ip(), now_ms());
            if wait > 0 {
                let secs = wait.div_ceil(1000);
                return Err(ApiError::new(
                    429,
                    "auth_throttled",
                    format!("too many failed authentications from this address; retry in {secs} s"),
                )
                .with_header("Retry-After", secs.to_string()));
            }
        }
        return Err(ApiError::unauthorized());
    };
    permit(
        &principal,
        &req.method,
        req.header_str("x-csrf-token"),
        segs,
    )?;
    Ok(principal)
}

fn is_read(m: &Method) -> bool {
    matches!(m, Method::Get | Method::Head)
}

/// What a principal may do: `method` on the path `segs`, with the CSRF header `csrf_header`.
fn permit(
    p: &Principal,
    method: &Method,
    csrf_header: Option<&str>,
    segs: &[&str],
) -> Result<(), ApiError> {
    let own_account = matches!(segs, ["api", "me"] | ["api", "me", "password"]);
    if let Via::Session { csrf, .. } = &p.via {
        // Cookies ride along on cross-site requests; the CSRF header cannot.
        if !is_read(method) && !accounts::csrf_ok(csrf_header, csrf) {
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
    if p.role == Role::Viewer && !is_read(method) && !own_account {
        return Err(ApiError::forbidden());
    }
    if matches!(
        segs,
        ["api", "users" | "tokens" | "backup" | "webhooks", ..]
    ) && p.role != Role::Admin
    {
        return Err(ApiError::forbidden());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, session: bool, must_change_password: bool) -> Principal {
        Principal {
            name: "ann".to_string(),
            role,
            via: if session {
                Via::Session {
                    csrf: "c".to_string(),
                    id_hash: [0; 32],
                }
            } else {
                Via::AdminToken
            },
            must_change_password,
        }
    }

    fn code(p: &Principal, method: Method, csrf: Option<&str>, path: &str) -> Option<&'static str> {
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        permit(p, &method, csrf, &segs).err().map(|e| e.code)
    }

    #[test]
    fn viewers_read_and_change_only_their_own_password() {
        let v = who(Role::Viewer, false, false);
        assert_eq!(code(&v, Method::Get, None, "/api/devices"), None);
        assert_eq!(
            code(&v, Method::Post, None, "/api/devices"),
            Some("forbidden")
        );
        assert_eq!(code(&v, Method::Post, None, "/api/me/password"), None);
        assert_eq!(code(&v, Method::Get, None, "/api/users"), Some("forbidden"));
        assert_eq!(
            code(&v, Method::Get, None, "/api/tokens/x"),
            Some("forbidden")
        );
        assert_eq!(
            code(&v, Method::Post, None, "/api/backup"),
            Some("forbidden")
        );
        // A viewer's bearer token may scrape metrics; a viewer's session may not.
        assert_eq!(code(&v, Method::Get, None, "/metrics"), None);
        let vs = who(Role::Viewer, true, false);
        assert_eq!(code(&vs, Method::Get, None, "/metrics"), Some("forbidden"));
    }

    #[test]
    fn sessions_change_state_only_with_the_csrf_header() {
        let s = who(Role::Admin, true, false);
        assert_eq!(code(&s, Method::Get, None, "/api/devices"), None);
        assert_eq!(code(&s, Method::Head, None, "/api/devices"), None);
        assert_eq!(
            code(&s, Method::Post, None, "/api/devices"),
            Some("csrf_failed")
        );
        assert_eq!(
            code(&s, Method::Delete, Some("x"), "/api/x"),
            Some("csrf_failed")
        );
        assert_eq!(code(&s, Method::Post, Some("c"), "/api/devices"), None);
        // Bearer tokens are not ambient credentials: no header needed.
        let b = who(Role::Admin, false, false);
        assert_eq!(code(&b, Method::Post, None, "/api/devices"), None);
    }

    #[test]
    fn a_password_that_must_change_allows_only_the_own_account() {
        let s = who(Role::Admin, true, true);
        assert_eq!(
            code(&s, Method::Get, None, "/api/devices"),
            Some("password_change_required")
        );
        assert_eq!(code(&s, Method::Get, None, "/api/me"), None);
        assert_eq!(code(&s, Method::Post, Some("c"), "/api/me/password"), None);
    }
}
