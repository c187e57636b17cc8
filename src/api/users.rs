//! Dashboard users (admins only): list, create, change, delete; and the password rules the
//! caller's own password change follows too.

use serde::Serialize;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::whole;
use crate::fleet::accounts::{self, Role, User, Via};
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::Cf;
use crate::store::records;
use crate::time::{now_ms, rfc3339_ms};

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

/// `{"ok":true}`: done, nothing more to say.
pub fn ok() -> Response {
    Response::json(200, b"{\"ok\":true}".to_vec())
}

fn no_user() -> ApiError {
    ApiError::not_found("no such user")
}

pub fn check_new_password(p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if n < accounts::MIN_PASSWORD || p.len() > accounts::MAX_PASSWORD {
        return Err(ApiError::invalid_field(format!(
            "the password must be {} to {} characters",
            accounts::MIN_PASSWORD,
            accounts::MAX_PASSWORD
        )));
    }
    Ok(())
}

/// A password change must change the password: accepting the current one again would let a
/// forced change (the initial password, or one an admin handed out) pass with no new secret.
pub fn password_unchanged() -> ApiError {
    ApiError::new(
        400,
        "password_unchanged",
        "the new password must differ from the current one",
    )
}

pub fn hash_password(p: &str) -> Result<String, ApiError> {
    accounts::hash_password(p).map_err(ApiError::unavailable)
}

pub async fn save_user(local: &Local, u: &User) -> Result<(), ApiError> {
    let v = records::encode(u)?;
    local
        .batcher
        .commit(|st| st.put(Cf::Accounts, u.username.as_bytes(), &v))
        .await?;
    Ok(())
}

/// `role`, if given (users and tokens alike).
pub fn role(body: &JsonObject) -> Result<Option<Role>, ApiError> {
    body.opt_parsed("role", Role::parse, "`role` must be admin or viewer")
}

pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let users = cx.local.fleet().accounts.users();
    Ok(whole(users.iter().map(user_json).collect()))
}

pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let body = JsonObject::from_request(cx.req)?;
    let why = "`username` is required: 1 to 64 letters, digits, '.', '_', '-', '@'";
    let username = body.string("username", why)?;
    if !accounts::valid_username(username) {
        return Err(ApiError::invalid_field(why));
    }
    let password = body.string("password", "`password` is required")?;
    check_new_password(password)?;
    let role = role(&body)?.unwrap_or(Role::Viewer);
    let user = User {
        username: username.to_string(),
        role,
        password_hash: hash_password(password)?,
        must_change_password: body.opt_bool("must_change_password").unwrap_or(false),
        created_at: now_ms(),
    };
    let acc = &cx.local.fleet().accounts;
    // Reserved in memory first, so two concurrent creations of one name make one user.
    if !acc.insert_new_user(user.clone()) {
        return Err(ApiError::conflict("a user with this name exists"));
    }
    if let Err(e) = save_user(cx.local, &user).await {
        acc.remove_user(&user.username);
        return Err(e);
    }
    Ok(Response::json_value(201, &user_json(&user)))
}

pub async fn patch(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let name = cx.param("name");
    let body = JsonObject::from_request(cx.req)?;
    let acc = &cx.local.fleet().accounts;
    let mut user = acc.user(name).ok_or_else(no_user)?;
    if let Some(role) = role(&body)? {
        if role != Role::Admin && user.role == Role::Admin && acc.other_admins(name) == 0 {
            return Err(ApiError::conflict("the last admin cannot be demoted"));
        }
        user.role = role;
    }
    let new_password = body.opt_string("password", "`password` must be a string")?;
    if let Some(p) = new_password {
        check_new_password(p)?;
        // Checked against the stored hash once, before the new one is computed.
        if user.has_password(p) {
            return Err(password_unchanged());
        }
        user.password_hash = hash_password(p)?;
    }
    if let Some(b) = body.opt_bool("must_change_password") {
        user.must_change_password = b;
    }
    save_user(cx.local, &user).await?;
    acc.put_user(user.clone());
    if new_password.is_some() {
        acc.end_sessions_of(name, None);
    }
    Ok(Response::json_value(200, &user_json(&user)))
}

pub async fn delete(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let name = cx.param("name");
    let p = cx.principal()?;
    let acc = &cx.local.fleet().accounts;
    if matches!(p.via, Via::Session { .. }) && p.name == name {
        return Err(ApiError::conflict("you cannot delete yourself"));
    }
    let user = acc.user(name).ok_or_else(no_user)?;
    if user.role == Role::Admin && acc.other_admins(name) == 0 {
        return Err(ApiError::conflict("the last admin cannot be deleted"));
    }
    cx.local
        .batcher
        .commit(|st| st.delete(Cf::Accounts, name.as_bytes()))
        .await?;
    acc.remove_user(name);
    Ok(ok())
}
