//! Who is calling: the bootstrap admin token, a named API token, or a dashboard session cookie,
//! resolved per request from the current records, so a role change, user deletion or token
//! revocation takes effect on the next request. A connection that outlives its request (an admin
//! WebSocket) keeps the principal and checks it again with `current` before every action and
//! whenever the accounts change.

use crate::fleet::accounts::{self, Principal, Role, Via};
use crate::fleet::auth;
use crate::fleet::state::Fleet;
use crate::http::request::Request;
use crate::store::Cf;
use crate::store::commit::Batcher;

/// The caller of an HTTP request: a bearer token (bootstrap admin token or named API token) if one
/// is sent, otherwise the session cookie. A wrong bearer token does not fall back to the cookie.
pub fn authenticate(fleet: &Fleet, batch: &Batcher, req: &Request, now: u64) -> Option<Principal> {
    if let Some(h) = req.header_str("authorization") {
        let t = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))?
            .trim();
        return bearer(fleet, batch, t, now);
    }
    session(fleet, req, now)
}

/// The principal of a bearer token; persists a named token's `last_used` at most once a minute.
pub fn bearer(fleet: &Fleet, batch: &Batcher, t: &str, now: u64) -> Option<Principal> {
    if auth::verify_token(t, &fleet.admin_token) {
        return Some(Principal {
            name: "admin-token".to_string(),
            role: Role::Admin,
            via: Via::AdminToken,
            must_change_password: false,
        });
    }
    if !t.starts_with(accounts::API_TOKEN_PREFIX) {
        return None;
    }
    let (tok, stale) = fleet.accounts.api_token(t, now)?;
    let hash = auth::hash_token(t);
    if stale {
        // Not waited for: last_used is informational, and a lost update costs nothing.
        let key = accounts::last_used_key(&tok.id);
        let _ = batch.stage(|st| st.put(Cf::ApiTokens, &key, &now.to_be_bytes()));
    }
    Some(Principal {
        name: tok.name,
        role: tok.role,
        via: Via::ApiToken(hash),
        must_change_password: false,
    })
}

/// `p` as it is now: its credential checked again against the current records. None once the
/// credential is gone (token revoked, session ended by logout or a password change, user
/// deleted); otherwise the principal with its current role. For connections that outlive the
/// request that authenticated them.
pub fn current(fleet: &Fleet, p: &Principal, now: u64) -> Option<Principal> {
    match &p.via {
        Via::AdminToken => Some(p.clone()),
        Via::ApiToken(hash) => fleet.accounts.token_by_hash(hash).map(|t| Principal {
            name: t.name,
            role: t.role,
            via: p.via.clone(),
            must_change_password: false,
        }),
        Via::Session { id_hash, .. } => fleet
            .accounts
            .session_by_hash(id_hash, now)
            .filter(|q| !q.must_change_password),
    }
}

/// The principal of the request's `fg_session` cookie, if it names a live session.
pub fn session(fleet: &Fleet, req: &Request, now: u64) -> Option<Principal> {
    let id = accounts::cookie(req.header_str("cookie")?, accounts::SESSION_COOKIE)?;
    fleet.accounts.session(id, now)
}
