//! Dashboard accounts over the API: login, logout, the caller's own account, users and API tokens
//! (admin only), and the overview's counters.

use std::sync::atomic::Ordering;

use serde::Serialize;
use simd_json::prelude::*;
use uuid::Uuid;

use crate::api::answer::store_error;
use crate::api::extract::{json_body, parse_object};
use crate::fleet::accounts::{self, ApiToken, Login, Principal, Role, User, Via};
use crate::fleet::auth;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::Cf;
use crate::store::records;
use crate::time::{now_ms, rfc3339_ms};

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
        Via::Bearer => None,
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

#[derive(Serialize)]
struct UserJson<'a> {
    username: &'a str,
    role: &'static str,
    must_change_password: bool,
    created_at: String,
}

fn user_json(u: &User) -> UserJson<'_> {
    UserJson {
        username: &u.username,
        role: u.role.as_str(),
        must_change_password: u.must_change_password,
        created_at: rfc3339_ms(u.created_at),
    }
}

#[derive(Serialize)]
struct TokenJson<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    created_at: String,
    last_used: Option<String>,
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

const OK: &[u8] = b"{\"ok\":true}";

/// The client's IP address: throttling is per address, not per connection (`remote` has the port).
fn client_addr(remote: &str) -> String {
    remote
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| remote.to_string())
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

fn str_field<'v>(v: &'v simd_json::BorrowedValue<'_>, key: &str) -> Option<&'v str> {
    v.get(key).and_then(|x| x.as_str())
}

fn invalid(message: &str) -> Response {
    Response::error(400, "invalid_field", message)
}

fn too_many(retry_after: u64) -> Response {
    Response::error(
        429,
        "too_many_attempts",
        &format!("too many failed attempts; retry in {retry_after} s"),
    )
    .with_header("Retry-After", retry_after.to_string())
}

fn check_new_password(p: &str) -> Result<(), Response> {
    let n = p.chars().count();
    if n < accounts::MIN_PASSWORD || p.len() > accounts::MAX_PASSWORD {
        return Err(invalid(&format!(
            "the password must be {} to {} characters",
            accounts::MIN_PASSWORD,
            accounts::MAX_PASSWORD
        )));
    }
    Ok(())
}

fn hash_or_503(p: &str) -> Result<String, Response> {
    accounts::hash_password(p).map_err(store_error)
}

pub fn login(local: &Local, req: &Request, remote: &str) -> Response {
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(username), Some(password)) = (str_field(&v, "username"), str_field(&v, "password"))
    else {
        return invalid("`username` and `password` are required strings");
    };
    if username.len() > accounts::MAX_USERNAME || password.len() > accounts::MAX_PASSWORD {
        return invalid_credentials(local);
    }
    match local
        .fleet()
        .accounts
        .login(&client_addr(remote), username, password, now_ms())
    {
        Login::Ok {
            session_id,
            principal,
        } => {
            tracing::info!(user = %principal.name, remote, "dashboard login");
            me_json(&principal)
                .with_header("Set-Cookie", session_cookie(&session_id, None, req.secure))
        }
        Login::Invalid => invalid_credentials(local),
        Login::Throttled(s) => {
            local.metrics.auth_failures.increment(1);
            too_many(s)
        }
        Login::Unavailable(e) => store_error(e),
    }
}

fn invalid_credentials(local: &Local) -> Response {
    local.metrics.auth_failures.increment(1);
    Response::error(401, "invalid_credentials", "wrong username or password")
}

pub fn logout(local: &Local, req: &Request) -> Response {
    if let Some(id) = req
        .header_str("cookie")
        .and_then(|c| accounts::cookie(c, accounts::SESSION_COOKIE))
    {
        local.fleet().accounts.end_session(id);
    }
    Response::json(200, OK.to_vec())
        .with_header("Set-Cookie", session_cookie("", Some(0), req.secure))
}

pub fn me(p: &Principal) -> Response {
    me_json(p)
}

pub async fn change_password(
    local: &Local,
    req: &Request,
    p: &Principal,
    remote: &str,
    data_dir: &std::path::Path,
) -> Response {
    let Via::Session { id_hash, .. } = &p.via else {
        return Response::error(
            403,
            "forbidden",
            "tokens have no password; log in as a user to change one",
        );
    };
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(current), Some(new)) = (
        str_field(&v, "current_password"),
        str_field(&v, "new_password"),
    ) else {
        return invalid("`current_password` and `new_password` are required strings");
    };
    if let Err(r) = check_new_password(new) {
        return r;
    }
    if current.len() > accounts::MAX_PASSWORD {
        return invalid("the current password is wrong");
    }
    let acc = &local.fleet().accounts;
    match acc.check_password(&client_addr(remote), &p.name, current, now_ms()) {
        Ok(()) => {}
        Err(Some(s)) => return too_many(s),
        // 400, not 401: the session is fine, only this field is wrong.
        Err(None) => {
            return Response::error(400, "invalid_credentials", "the current password is wrong");
        }
    }
    let Some(mut user) = acc.user(&p.name) else {
        return Response::error(404, "not_found", "no such user");
    };
    user.password_hash = match hash_or_503(new) {
        Ok(h) => h,
        Err(r) => return r,
    };
    user.must_change_password = false;
    if let Err(r) = save_user(local, &user).await {
        return r;
    }
    acc.put_user(user);
    // A changed password logs out every other session of this user.
    acc.end_sessions_of(&p.name, Some(id_hash));
    if p.name == accounts::INITIAL_ADMIN {
        // The initial password is no longer valid; do not leave it lying around.
        let _ = std::fs::remove_file(data_dir.join("initial-admin-password"));
    }
    Response::json(200, OK.to_vec())
}

async fn save_user(local: &Local, u: &User) -> Result<(), Response> {
    let v = records::encode(u).map_err(store_error)?;
    local
        .batcher
        .commit(|st| st.put(Cf::Accounts, u.username.as_bytes(), &v))
        .await
        .map_err(store_error)
}

pub fn list_users(local: &Local) -> Response {
    let users = local.fleet().accounts.users();
    Response::json_value(
        200,
        &Items {
            items: users.iter().map(user_json).collect(),
            next_cursor: None,
        },
    )
}

pub async fn create_user(local: &Local, req: &Request) -> Response {
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(username) = str_field(&v, "username").filter(|u| accounts::valid_username(u)) else {
        return invalid("`username` is required: 1 to 64 letters, digits, '.', '_', '-', '@'");
    };
    let Some(password) = str_field(&v, "password") else {
        return invalid("`password` is required");
    };
    if let Err(r) = check_new_password(password) {
        return r;
    }
    let role = match v.get("role").filter(|r| !r.is_null()) {
        None => Role::Viewer,
        Some(r) => match r.as_str().and_then(Role::parse) {
            Some(r) => r,
            None => return invalid("`role` must be admin or viewer"),
        },
    };
    let must_change = v
        .get("must_change_password")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let user = User {
        username: username.to_string(),
        role,
        password_hash: match hash_or_503(password) {
            Ok(h) => h,
            Err(r) => return r,
        },
        must_change_password: must_change,
        created_at: now_ms(),
    };
    let acc = &local.fleet().accounts;
    // Reserved in memory first, so two concurrent creations of one name make one user.
    if !acc.insert_new_user(user.clone()) {
        return Response::error(409, "conflict", "a user with this name exists");
    }
    if let Err(r) = save_user(local, &user).await {
        acc.remove_user(&user.username);
        return r;
    }
    Response::json_value(201, &user_json(&user))
}

pub async fn patch_user(local: &Local, req: &Request, name: &str) -> Response {
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let acc = &local.fleet().accounts;
    let Some(mut user) = acc.user(name) else {
        return Response::error(404, "not_found", "no such user");
    };
    if let Some(r) = v.get("role").filter(|r| !r.is_null()) {
        let Some(role) = r.as_str().and_then(Role::parse) else {
            return invalid("`role` must be admin or viewer");
        };
        if role != Role::Admin && user.role == Role::Admin && acc.other_admins(name) == 0 {
            return Response::error(409, "conflict", "the last admin cannot be demoted");
        }
        user.role = role;
    }
    let new_password = match v.get("password").filter(|p| !p.is_null()) {
        None => None,
        Some(p) => match p.as_str() {
            Some(p) => {
                if let Err(r) = check_new_password(p) {
                    return r;
                }
                Some(p)
            }
            None => return invalid("`password` must be a string"),
        },
    };
    if let Some(p) = new_password {
        user.password_hash = match hash_or_503(p) {
            Ok(h) => h,
            Err(r) => return r,
        };
    }
    if let Some(b) = v.get("must_change_password").and_then(|b| b.as_bool()) {
        user.must_change_password = b;
    }
    if let Err(r) = save_user(local, &user).await {
        return r;
    }
    acc.put_user(user.clone());
    if new_password.is_some() {
        acc.end_sessions_of(name, None);
    }
    Response::json_value(200, &user_json(&user))
}

pub async fn delete_user(local: &Local, name: &str, p: &Principal) -> Response {
    let acc = &local.fleet().accounts;
    if matches!(p.via, Via::Session { .. }) && p.name == name {
        return Response::error(409, "conflict", "you cannot delete yourself");
    }
    let Some(user) = acc.user(name) else {
        return Response::error(404, "not_found", "no such user");
    };
    if user.role == Role::Admin && acc.other_admins(name) == 0 {
        return Response::error(409, "conflict", "the last admin cannot be deleted");
    }
    if let Err(e) = local
        .batcher
        .commit(|st| st.delete(Cf::Accounts, name.as_bytes()))
        .await
    {
        return store_error(e);
    }
    acc.remove_user(name);
    Response::json(200, OK.to_vec())
}

pub fn list_tokens(local: &Local) -> Response {
    let tokens = local.fleet().accounts.tokens();
    Response::json_value(
        200,
        &Items {
            items: tokens
                .iter()
                .map(|t| TokenJson {
                    id: &t.id,
                    name: &t.name,
                    role: t.role.as_str(),
                    created_at: rfc3339_ms(t.created_at),
                    last_used: t.last_used.map(rfc3339_ms),
                })
                .collect(),
            next_cursor: None,
        },
    )
}

#[derive(Serialize)]
struct NewTokenJson<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    token: &'a str,
    created_at: String,
}

pub async fn create_token(local: &Local, req: &Request) -> Response {
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(name) = str_field(&v, "name")
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= accounts::MAX_TOKEN_NAME)
    else {
        return invalid("`name` is required: 1 to 100 characters");
    };
    let role = match v.get("role").filter(|r| !r.is_null()) {
        None => Role::Admin,
        Some(r) => match r.as_str().and_then(Role::parse) {
            Some(r) => r,
            None => return invalid("`role` must be admin or viewer"),
        },
    };
    let secret = match accounts::random_secret() {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let token = format!("{}{secret}", accounts::API_TOKEN_PREFIX);
    let hash = auth::hash_token(&token);
    let rec = ApiToken {
        id: Uuid::new_v4().to_string(),
        name: name.to_string(),
        role,
        token_hash: auth::hex(&hash),
        created_at: now_ms(),
        last_used: None,
    };
    let v = match records::encode(&rec) {
        Ok(v) => v,
        Err(e) => return store_error(e),
    };
    if let Err(e) = local
        .batcher
        .commit(|st| st.put(Cf::ApiTokens, &accounts::token_key(&rec.id), &v))
        .await
    {
        return store_error(e);
    }
    local.fleet().accounts.insert_token(hash, rec.clone());
    Response::json_value(
        201,
        &NewTokenJson {
            id: &rec.id,
            name: &rec.name,
            role: rec.role.as_str(),
            token: &token,
            created_at: rfc3339_ms(rec.created_at),
        },
    )
}

pub async fn delete_token(local: &Local, id: &str) -> Response {
    let acc = &local.fleet().accounts;
    // Out of memory first: revocation takes effect before the store write returns.
    let Some((hash, rec)) = acc.remove_token(id) else {
        return Response::error(404, "not_found", "no such token");
    };
    if let Err(e) = local
        .batcher
        .commit(|st| {
            st.delete(Cf::ApiTokens, &accounts::token_key(id))?;
            st.delete(Cf::ApiTokens, &accounts::last_used_key(id))
        })
        .await
    {
        // Not durably revoked: put it back so memory matches the store, and say so.
        acc.insert_token(hash, rec);
        return store_error(e);
    }
    Response::json(200, OK.to_vec())
}

#[derive(Serialize)]
struct Stats {
    devices: usize,
    online: usize,
    offline: usize,
    never_seen: usize,
    pending: usize,
    messages_total: u64,
}

/// Counts for the overview. `online`, `offline` (seen before) and `never_seen` partition `devices`.
pub fn stats(local: &Local) -> Response {
    let (mut devices, mut online, mut never_seen) = (0, 0, 0);
    local.fleet().registry.visit_from(None, |d| {
        devices += 1;
        if d.is_online() {
            online += 1;
        } else if d.last_seen_ms.load(Ordering::Relaxed) == 0 {
            never_seen += 1;
        }
        true
    });
    Response::json_value(
        200,
        &Stats {
            devices,
            online,
            offline: devices - online - never_seen,
            never_seen,
            pending: local.fleet().pending.len(),
            messages_total: local.fleet().messages.load(Ordering::Relaxed),
        },
    )
}
