//! Who is calling: the bootstrap admin token, a named API token, or a dashboard session cookie,
//! resolved per request from the current records, so a role change, user deletion or token
//! revocation takes effect on the next request. A connection that outlives its request (an admin
//! WebSocket) keeps the principal and checks it again with `current` before every action and
//! whenever the accounts change.

use crate::fleet::accounts::{self, Accounts, Principal, Role, Via};
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
    // Hashed once: the admin token and the API tokens are both known only by their hashes.
    let hash = auth::hash_token(t);
    if auth::verify_hash(&hash, &fleet.admin_token) {
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
    let (tok, stale) = fleet.accounts.api_token(&hash, now)?;
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
pub fn current(accounts: &Accounts, p: &Principal, now: u64) -> Option<Principal> {
    match &p.via {
        Via::AdminToken => Some(p.clone()),
        Via::ApiToken(hash) => accounts.token_by_hash(hash).map(|t| Principal {
            name: t.name,
            role: t.role,
            via: p.via.clone(),
            must_change_password: false,
        }),
        Via::Session { id_hash, .. } => accounts
            .session_by_hash(id_hash, now)
            .filter(|q| !q.must_change_password),
    }
}

/// The principal of the request's `fg_session` cookie, if it names a live session.
pub fn session(fleet: &Fleet, req: &Request, now: u64) -> Option<Principal> {
    let id = accounts::cookie(req.header_str("cookie")?, accounts::SESSION_COOKIE)?;
    fleet.accounts.session(id, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::accounts::{ApiToken, Login, User, hash_password, in_memory};

    fn user(a: &Accounts, name: &str, role: Role) {
        assert!(a.insert_new_user(User {
            username: name.into(),
            role,
            password_hash: hash_password("password-123").unwrap(),
            must_change_password: false,
            created_at: 0,
        }));
    }

    fn session(a: &Accounts, name: &str) -> (String, Principal) {
        match a.login("10.0.0.1", name, "password-123", None, 0) {
            Login::Ok {
                session_id,
                principal,
                ..
            } => (session_id, principal),
            _ => panic!("login"),
        }
    }

    #[test]
    fn a_session_principal_lasts_until_its_session_or_user_goes_and_follows_the_role() {
        let a = in_memory();
        user(&a, "ann", Role::Admin);
        let (id, p) = session(&a, "ann");
        let before = a.generation();
        assert_eq!(current(&a, &p, 1).map(|q| q.role), Some(Role::Admin));
        let mut demoted = a.user("ann").unwrap();
        demoted.role = Role::Viewer;
        a.put_user(demoted);
        assert!(
            a.generation() > before,
            "a change live connections must notice"
        );
        assert_eq!(current(&a, &p, 2).map(|q| q.role), Some(Role::Viewer));
        a.end_session(&id);
        assert!(current(&a, &p, 3).is_none(), "logged out");

        let (_, p) = session(&a, "ann");
        a.end_sessions_of("ann", None);
        assert!(current(&a, &p, 4).is_none(), "password changed elsewhere");
        let (_, p) = session(&a, "ann");
        a.remove_user("ann");
        assert!(current(&a, &p, 5).is_none(), "user deleted");
    }

    #[test]
    fn a_token_principal_lasts_until_the_token_is_revoked() {
        let a = in_memory();
        let secret = "fgt_0123456789abcdefghij0123456789abcdefgh";
        let hash = auth::hash_token(secret);
        a.insert_token(
            hash,
            ApiToken {
                id: "t1".into(),
                name: "ci".into(),
                role: Role::Admin,
                token_hash: auth::hex(&hash),
                created_at: 0,
                last_used: None,
            },
        );
        let p = Principal {
            name: "ci".into(),
            role: Role::Admin,
            via: Via::ApiToken(hash),
            must_change_password: false,
        };
        assert!(current(&a, &p, 1).is_some());
        let before = a.generation();
        a.remove_token("t1");
        assert!(a.generation() > before);
        assert!(current(&a, &p, 2).is_none());
        // The bootstrap admin token cannot be revoked while the server runs.
        let admin = Principal {
            via: Via::AdminToken,
            ..p
        };
        assert!(current(&a, &admin, 3).is_some());
    }
}
