//! Named API tokens (admins only): list, create (the one time the token is shown), revoke.

use serde::Serialize;
use uuid::Uuid;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::whole;
use crate::api::users::{ok, role};
use crate::fleet::accounts::{self, ApiToken, Role};
use crate::fleet::auth;
use crate::http::response::Response;
use crate::store::Cf;
use crate::store::records;
use crate::time::{now_ms, rfc3339_ms};

#[derive(Serialize)]
struct TokenJson<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    created_at: String,
    last_used: Option<String>,
}

#[derive(Serialize)]
struct NewTokenJson<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    token: &'a str,
    created_at: String,
}

pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let tokens = cx.local.fleet().accounts.tokens();
    Ok(whole(
        tokens
            .iter()
            .map(|t| TokenJson {
                id: &t.id,
                name: &t.name,
                role: t.role.as_str(),
                created_at: rfc3339_ms(t.created_at),
                last_used: t.last_used.map(rfc3339_ms),
            })
            .collect(),
    ))
}

pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let body = JsonObject::from_request(cx.req)?;
    let name = body.text(
        "name",
        accounts::MAX_TOKEN_NAME,
        "`name` is required: 1 to 100 characters",
    )?;
    let role = role(&body)?.unwrap_or(Role::Admin);
    let secret = accounts::random_secret().map_err(ApiError::unavailable)?;
    let token = format!("{}{secret}", accounts::API_TOKEN_PREFIX);
    let hash = auth::hash_token(&token);
    let rec = ApiToken {
        id: Uuid::new_v4().to_string(),
        name,
        role,
        token_hash: auth::hex(&hash),
        created_at: now_ms(),
        last_used: None,
    };
    let v = records::encode(&rec)?;
    cx.local
        .batcher
        .commit(|st| st.put(Cf::ApiTokens, &accounts::token_key(&rec.id), &v))
        .await?;
    cx.local.fleet().accounts.insert_token(hash, rec.clone());
    Ok(Response::json_value(
        201,
        &NewTokenJson {
            id: &rec.id,
            name: &rec.name,
            role: rec.role.as_str(),
            token: &token,
            created_at: rfc3339_ms(rec.created_at),
        },
    ))
}

pub async fn delete(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    cx.local.fleet().cluster.reachable()?;
    let id = cx.param("id");
    let acc = &cx.local.fleet().accounts;
    // Out of memory first: revocation takes effect before the store write returns.
    let (hash, rec) = acc
        .remove_token(id)
        .ok_or_else(|| ApiError::not_found("no such token"))?;
    let revoked = cx
        .local
        .batcher
        .commit(|st| {
            st.delete(Cf::ApiTokens, &accounts::token_key(id))?;
            st.delete(Cf::ApiTokens, &accounts::last_used_key(id))
        })
        .await;
    if let Err(e) = revoked {
        // Not durably revoked: put it back so memory matches the store, and say so.
        acc.insert_token(hash, rec);
        return Err(e.into());
    }
    Ok(ok())
}
