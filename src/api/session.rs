//! The caller's own session and account: login, logout, who am I, and changing one's password.

use serde::Serialize;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::users::{check_new_password, hash_password, ok, password_unchanged, save_user};
use crate::fleet::accounts::{self, Login, Principal, Via};
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::time::now_ms;

#[derive(Serialize)]
struct MeJson<'a> {
    username: &'a str,
    role: &'static str,
    must_change_password: bool,
    csrf_token: Option<&'a str>,
}

fn me_json(p: &Principal) -> Response {
    let csrf = match &p.via {
        Via::Session { csrf, .. } => Some(csrf.as_str()),
        Via::AdminToken | Via::ApiToken(_) => None,
    };
    Response::json_value(
        200,
        &MeJson {
            username: &p.name,
            role: p.role.as_str(),
            must_change_password: p.must_change_password,
            csrf_token: csrf,
        },
    )
}

/// `Secure` when the login came over TLS, so the browser never sends the cookie in clear text
/// (plain HTTP stays usable for deployments without TLS or behind a proxy).
fn session_cookie(value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/",
        accounts::SESSION_COOKIE
    );
    if secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

/// Marks this browser as one that logged in before (see `accounts::KNOWN_BROWSER_COOKIE`): sent
/// back only to the login route, never readable by scripts, kept as long as the server remembers it.
fn known_browser_cookie(value: &str, secure: bool) -> String {
    let mut c = format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/api/login; Max-Age={}",
        accounts::KNOWN_BROWSER_COOKIE,
        accounts::KNOWN_BROWSER_MS / 1000
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

fn too_many(retry_after: u64) -> ApiError {
    ApiError::new(
        429,
        "too_many_attempts",
        format!("too many failed attempts; retry in {retry_after} s"),
    )
    .with_header("Retry-After", retry_after.to_string())
}

fn invalid_credentials(local: &Local) -> ApiError {
    local.metrics.auth_failures.increment(1);
    ApiError::new(401, "invalid_credentials", "wrong username or password")
}

pub fn login(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let body = JsonObject::from_request(cx.req)?;
    let why = "`username` and `password` are required strings";
    let username = body.string("username", why)?;
    let password = body.string("password", why)?;
    if username.len() > accounts::MAX_USERNAME || password.len() > accounts::MAX_PASSWORD {
        return Err(invalid_credentials(cx.local));
    }
    let now = now_ms();
    let known = cx
        .req
        .header_str("cookie")
        .and_then(|c| accounts::cookie(c, accounts::KNOWN_BROWSER_COOKIE));
    let attempt = cx.local.fleet().accounts.login(
        &cx.remote.ip().to_string(),
        username,
        password,
        known,
        now,
    );
    match attempt {
        Login::Ok {
            session_id,
            principal,
            known_browser,
        } => {
            tracing::info!(user = %principal.name, remote = %cx.remote, "dashboard login");
            let mut r = me_json(&principal).with_header(
                "Set-Cookie",
                session_cookie(&session_id, None, cx.req.secure),
            );
            if let Some(id) = known_browser {
                r = r.with_header("Set-Cookie", known_browser_cookie(&id, cx.req.secure));
            }
            Ok(r)
        }
        Login::Invalid => Err(invalid_credentials(cx.local)),
        Login::Throttled(s) => {
            cx.local.metrics.auth_failures.increment(1);
            Err(too_many(s))
        }
        Login::Unavailable(e) => Err(ApiError::unavailable(e)),
    }
}

pub fn logout(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    if let Some(id) = cx
        .req
        .header_str("cookie")
        .and_then(|c| accounts::cookie(c, accounts::SESSION_COOKIE))
    {
        cx.local.fleet().accounts.end_session(id);
    }
    Ok(ok().with_header("Set-Cookie", session_cookie("", Some(0), cx.req.secure)))
}

pub fn me(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    Ok(me_json(cx.principal()?))
}

pub async fn change_password(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let p = cx.principal()?;
    let Via::Session { id_hash, .. } = &p.via else {
        return Err(ApiError::new(
            403,
            "forbidden",
            "tokens have no password; log in as a user to change one",
        ));
    };
    let body = JsonObject::from_request(cx.req)?;
    let why = "`current_password` and `new_password` are required strings";
    let current = body.string("current_password", why)?;
    let new = body.string("new_password", why)?;
    check_new_password(new)?;
    if current.len() > accounts::MAX_PASSWORD {
        return Err(ApiError::invalid_field("the current password is wrong"));
    }
    let acc = &cx.local.fleet().accounts;
    match acc.check_password(
        &cx.remote.ip().to_string(),
        id_hash,
        &p.name,
        current,
        now_ms(),
    ) {
        Ok(()) => {}
        Err(Some(s)) => return Err(too_many(s)),
        // 400, not 401: the session is fine, only this field is wrong.
        Err(None) => {
            return Err(ApiError::new(
                400,
                "invalid_credentials",
                "the current password is wrong",
            ));
        }
    }
    // `current` has just been verified against the stored hash, so comparing the two texts says
    // whether the new password is the current one without a second argon2 run (both are the
    // caller's own input: the comparison's timing reveals nothing).
    if new == current {
        return Err(password_unchanged());
    }
    let mut user = acc
        .user(&p.name)
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    user.password_hash = hash_password(new)?;
    user.must_change_password = false;
    save_user(cx.local, &user).await?;
    acc.put_user(user);
    // A changed password logs out every other session of this user.
    acc.end_sessions_of(&p.name, Some(id_hash));
    if p.name == accounts::INITIAL_ADMIN {
        // The initial password is no longer valid; do not leave it lying around.
        let _ = std::fs::remove_file(cx.data_dir.join(crate::data_dir::INITIAL_ADMIN_PASSWORD));
    }
    Ok(ok())
}
