//! Dashboard accounts: users with argon2id password hashes, login sessions, login throttling, and
//! named API tokens.
//!
//! Users and API tokens are few and change rarely, so each lives in memory (loaded at start) behind
//! a mutex shared by all shards, and every change is committed to its column family (`accounts`,
//! `api_tokens`) before it is answered. Sessions are kept in memory only: a restart logs everyone
//! out, which is the safe failure. Only hashes of session ids and API tokens are kept.
//!
//! Passwords, unlike tokens, are low-entropy, so they get a deliberately slow hash (argon2id). That
//! hash runs on the shard thread that received the login and blocks it for tens of milliseconds;
//! logins and password changes are rare, so this is accepted instead of a thread hop. Throttling
//! bounds how often anyone can make a shard pay that cost with wrong guesses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::fleet::auth::{self, RandomError, TokenHash};
use crate::fleet::throttle::{Attempt, LoginPolicy, LoginThrottle, Policy};
use crate::store::records;
use crate::store::{Cf, Store, StoreError};

/// The user created on first start.
pub const INITIAL_ADMIN: &str = "admin";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fg_session";
/// Named API tokens start with this, so a bearer token says which table to look in.
pub const API_TOKEN_PREFIX: &str = "fgt_";
/// Passwords shorter than this are refused (NIST SP 800-63B asks for at least 8).
pub const MIN_PASSWORD: usize = 10;
/// Longer passwords are refused: argon2 hashes any length, but the cost must stay bounded.
pub const MAX_PASSWORD: usize = 1024;
pub const MAX_USERNAME: usize = 64;
pub const MAX_TOKEN_NAME: usize = 100;

/// Sessions kept at once; past it the least recently used is dropped (its user logs in again).
pub const MAX_SESSIONS: usize = 10_000;
/// A session unused this long is gone.
pub const SESSION_IDLE_MS: u64 = 12 * 3600 * 1000;
/// Login throttling (see `throttle::LoginThrottle`; at most 10,000 keys tracked per map):
/// - a username at one address: 5 free failures, then 1 s doubling to 15 minutes;
/// - a username over all addresses: 50 free failures, then 1 s doubling to only 60 s, and never
///   for a browser that logged in as that user before;
/// - an address over all usernames: 20 free failures, then 1 s doubling to 15 minutes, again
///   sparing known browsers.
pub const LOGIN_THROTTLE: LoginPolicy = LoginPolicy {
    pair: Policy {
        free_failures: 5,
        first_backoff_ms: 1000,
        max_backoff_ms: 15 * 60 * 1000,
        max_entries: 10_000,
    },
    user: Policy {
        free_failures: 50,
        first_backoff_ms: 1000,
        max_backoff_ms: 60 * 1000,
        max_entries: 10_000,
    },
    addr: Policy {
        free_failures: 20,
        first_backoff_ms: 1000,
        max_backoff_ms: 15 * 60 * 1000,
        max_entries: 10_000,
    },
};
/// The cookie that marks a browser that has logged in as a user before; such a browser is spared
/// the per-user and per-address ceilings that an attack elsewhere may have raised. Its value is a
/// random id known only to this process (a restart forgets it, as it forgets sessions).
pub const KNOWN_BROWSER_COOKIE: &str = "fg_known";
/// Known browsers kept at once; past it the least recently used is forgotten.
pub const MAX_KNOWN_BROWSERS: usize = 10_000;
/// A known browser not seen at a login for this long is forgotten (and its cookie expires).
pub const KNOWN_BROWSER_MS: u64 = 90 * 24 * 3600 * 1000;

/// OWASP's floor for argon2id (m = 19 MiB, t = 2, p = 1): tens of milliseconds per hash.
fn hasher() -> Argon2<'static> {
    // The parameters are constants within argon2's limits, so `new` cannot fail; the fallback keeps
    // this path free of unwrap anyway (argon2's default is the same parameter set).
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Debug)]
pub enum AccountError {
    Random(RandomError),
    Hash(String),
    Store(StoreError),
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountError::Random(e) => write!(f, "{e}"),
            AccountError::Hash(e) => write!(f, "password hashing failed: {e}"),
            AccountError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AccountError {}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        AccountError::Store(e)
    }
}

impl From<RandomError> for AccountError {
    fn from(e: RandomError) -> Self {
        AccountError::Random(e)
    }
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Checks `password` against a PHC string (argon2's verify compares in constant time). The
/// parameters come from the stored hash, so raising them later keeps old hashes valid.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => hasher().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the username does not exist, so an unknown user costs the same
/// time as a wrong password and login timing does not reveal which users exist.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default())
}

/// A random secret: 40 base62 characters (238 bits).
pub fn random_secret() -> Result<String, RandomError> {
    let t = auth::generate_token()?;
    Ok(t.trim_start_matches("tok_").to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    pub must_change_password: bool,
    pub created_at: u64,
}

impl User {
    /// Whether `candidate` is this user's current password: one argon2 verification.
    pub fn has_password(&self, candidate: &str) -> bool {
        verify_password(candidate, &self.password_hash)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex: the token itself is shown once and never stored.
    pub token_hash: String,
    pub created_at: u64,
    pub last_used: Option<u64>,
}

/// How a request proved who it is, naming the credential so that a long-lived connection can be
/// checked against it again later (revocation). CSRF applies only to cookie (ambient) credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// The bootstrap admin token (fixed for the life of the process).
    AdminToken,
    /// A named API token, by the hash of its secret.
    ApiToken(TokenHash),
    Session {
        csrf: String,
        id_hash: TokenHash,
    },
}

impl Via {
    /// Bearer credentials are sent explicitly with each request; cookies ride along on their own.
    pub fn is_bearer(&self) -> bool {
        !matches!(self, Via::Session { .. })
    }
}

/// Who is calling. Resolved per request from the current user record, so role changes and
/// deletions take effect at once.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
    pub must_change_password: bool,
}

struct KnownBrowser {
    username: String,
    last_used_ms: u64,
}

struct SessionEntry {
    username: String,
    csrf: String,
    last_used_ms: u64,
}

/// What a login attempt came to.
pub enum Login {
    Ok {
        session_id: String,
        principal: Principal,
        /// A new known-browser id to set as `KNOWN_BROWSER_COOKIE`, unless the browser already
        /// presented a valid one for this user.
        known_browser: Option<String>,
    },
    Invalid,
    /// Throttled: retry after this many seconds.
    Throttled(u64),
    /// The credentials were right but no session could be made (the OS random source failed).
    Unavailable(String),
}

/// A change to operators' credentials, as a cluster carries it between nodes (`Accounts::apply`
/// takes other nodes' changes; `replicate_to` hands this node's to the cluster).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum OperatorChange {
    User(User),
    UserGone {
        username: String,
    },
    Token(ApiToken),
    TokenGone {
        token_hash: String,
    },
    Session {
        id_hash: String,
        username: String,
        csrf: String,
        at_ms: u64,
    },
    SessionGone {
        id_hash: String,
    },
}

type Replicate = Box<dyn Fn(OperatorChange) + Send + Sync>;

pub struct Accounts {
    /// Where this node's changes go in a cluster (set once, at start).
    replicate: std::sync::OnceLock<Replicate>,
    users: Mutex<HashMap<String, User>>,
    tokens: Mutex<HashMap<TokenHash, ApiToken>>,
    sessions: Mutex<HashMap<TokenHash, SessionEntry>>,
    throttle: Mutex<LoginThrottle>,
    /// Browsers that logged in successfully, by the hash of their `KNOWN_BROWSER_COOKIE`.
    known: Mutex<HashMap<TokenHash, KnownBrowser>>,
    /// Moves on every change that can revoke or demote a credential (token deleted, session ended,
    /// user changed or deleted). Long-lived connections that rest on a credential (admin
    /// WebSockets) watch it and check their credential again when it moves.
    generation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (every update is one insert or
    // remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Accounts {
    /// Loads users and API tokens from the store.
    pub fn load(store: &Store) -> Result<Accounts, StoreError> {
        let mut users = HashMap::new();
        store.scan_forward(Cf::Accounts, b"", None, usize::MAX, |_, v| {
            let u: User = records::decode(v)?;
            users.insert(u.username.clone(), u);
            Ok(true)
        })?;
        let mut tokens = HashMap::new();
        store.scan_forward(Cf::ApiTokens, TOKEN_PREFIX, None, usize::MAX, |_, v| {
            let mut t: ApiToken = records::decode(v)?;
            if let Some(b) = store.get(Cf::ApiTokens, &last_used_key(&t.id))? {
                t.last_used = <[u8; 8]>::try_from(b.as_slice())
                    .ok()
                    .map(u64::from_be_bytes);
            }
            let hash = auth::unhex(&t.token_hash)
                .and_then(|h| TokenHash::try_from(h.as_slice()).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("api token {} hash", t.id)))?;
            tokens.insert(hash, t);
            Ok(true)
        })?;
        Ok(Accounts {
            replicate: std::sync::OnceLock::new(),
            users: Mutex::new(users),
            tokens: Mutex::new(tokens),
            sessions: Mutex::new(HashMap::new()),
            throttle: Mutex::new(LoginThrottle::new(LOGIN_THROTTLE)),
            known: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// Hands every later change of users, API tokens and sessions made on this node to `f` (the
    /// cluster, which tells the other nodes).
    pub fn replicate_to(&self, f: impl Fn(OperatorChange) + Send + Sync + 'static) {
        let _ = self.replicate.set(Box::new(f));
    }

    fn told(&self, c: OperatorChange) {
        if let Some(f) = self.replicate.get() {
            f(c);
        }
    }

    /// Applies another node's change, in memory and in this node's store (users and tokens;
    /// sessions live in memory, as on one node). Idempotent.
    pub fn apply(&self, store: &Store, c: OperatorChange) -> Result<(), StoreError> {
        use crate::store::commit::write_now;
        let unhash = |h: &str| auth::unhex(h).and_then(|v| TokenHash::try_from(v.as_slice()).ok());
        match c {
            OperatorChange::User(u) => {
                let v = records::encode(&u)?;
                write_now(store, |st| st.put(Cf::Accounts, u.username.as_bytes(), &v))?;
                lock(&self.users).insert(u.username.clone(), u);
            }
            OperatorChange::UserGone { username } => {
                write_now(store, |st| st.delete(Cf::Accounts, username.as_bytes()))?;
                lock(&self.users).remove(&username);
                lock(&self.sessions).retain(|_, s| s.username != username);
                lock(&self.known).retain(|_, k| k.username != username);
            }
            OperatorChange::Token(t) => {
                let Some(hash) = unhash(&t.token_hash) else {
                    return Ok(());
                };
                let v = records::encode(&t)?;
                write_now(store, |st| st.put(Cf::ApiTokens, &token_key(&t.id), &v))?;
                lock(&self.tokens).insert(hash, t);
            }
            OperatorChange::TokenGone { token_hash } => {
                let Some(hash) = unhash(&token_hash) else {
                    return Ok(());
                };
                let gone = lock(&self.tokens).remove(&hash);
                if let Some(t) = gone {
                    write_now(store, |st| {
                        st.delete(Cf::ApiTokens, &token_key(&t.id))?;
                        st.delete(Cf::ApiTokens, &last_used_key(&t.id))
                    })?;
                }
            }
            OperatorChange::Session {
                id_hash,
                username,
                csrf,
                at_ms,
            } => {
                if let Some(hash) = unhash(&id_hash) {
                    let mut sessions = lock(&self.sessions);
                    if sessions.len() < MAX_SESSIONS || sessions.contains_key(&hash) {
                        let e = sessions.entry(hash).or_insert(SessionEntry {
                            username,
                            csrf,
                            last_used_ms: at_ms,
                        });
                        e.last_used_ms = e.last_used_ms.max(at_ms);
                    }
                }
            }
            OperatorChange::SessionGone { id_hash } => {
                if let Some(hash) = unhash(&id_hash) {
                    lock(&self.sessions).remove(&hash);
                }
            }
        }
        self.changed();
        Ok(())
    }

    /// See `generation` on the struct.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called after the change is in memory, so a connection that sees the new generation also
    /// sees the change.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// On first start (no users at all), creates `admin` with a random password that must be
    /// changed at first login, and returns that password. Written straight to the store: this runs
    /// before the shards (and their batchers) exist.
    pub fn bootstrap(&self, store: &Store, now: u64) -> Result<Option<String>, AccountError> {
        if !lock(&self.users).is_empty() {
            return Ok(None);
        }
        let password = random_secret()?;
        let user = User {
            username: INITIAL_ADMIN.to_string(),
            role: Role::Admin,
            password_hash: hash_password(&password)?,
            must_change_password: true,
            created_at: now,
        };
        let mut b = WriteBatch::default();
        b.put_cf(
            store.cf(Cf::Accounts)?,
            user.username.as_bytes(),
            records::encode(&user)?,
        );
        store.write(b)?;
        lock(&self.users).insert(user.username.clone(), user);
        Ok(Some(password))
    }

    // ---- users -----------------------------------------------------------------------------

    pub fn user(&self, name: &str) -> Option<User> {
        lock(&self.users).get(name).cloned()
    }

    /// All users, by name.
    pub fn users(&self) -> Vec<User> {
        let mut v: Vec<User> = lock(&self.users).values().cloned().collect();
        v.sort_by(|a, b| a.username.cmp(&b.username));
        v
    }

    /// Reserves `user.username` in memory; false if taken. The caller commits, and calls
    /// `remove_user` if the commit fails.
    pub fn insert_new_user(&self, user: User) -> bool {
        let mut users = lock(&self.users);
        if users.contains_key(&user.username) {
            return false;
        }
        users.insert(user.username.clone(), user.clone());
        drop(users);
        self.told(OperatorChange::User(user));
        true
    }

    /// Replaces a user's record after its commit; a user deleted meanwhile stays deleted.
    pub fn put_user(&self, user: User) {
        let kept = match lock(&self.users).get_mut(&user.username) {
            Some(u) => {
                *u = user.clone();
                true
            }
            None => false,
        };
        if kept {
            self.told(OperatorChange::User(user));
        }
        self.changed();
    }

    pub fn remove_user(&self, name: &str) -> Option<User> {
        let u = lock(&self.users).remove(name);
        if u.is_some() {
            self.told(OperatorChange::UserGone {
                username: name.to_string(),
            });
        }
        self.end_sessions_of(name, None);
        // A user created later under the same name is someone else.
        lock(&self.known).retain(|_, k| k.username != name);
        u
    }

    /// How many admins there are besides `except` (the last admin may not be demoted or deleted).
    pub fn other_admins(&self, except: &str) -> usize {
        lock(&self.users)
            .values()
            .filter(|u| u.role == Role::Admin && u.username != except)
            .count()
    }

    // ---- login and sessions -----------------------------------------------------------------

    /// Checks a username and password from `addr` (an IP address), throttled as
    /// `LOGIN_THROTTLE` says; `known` is the browser's `KNOWN_BROWSER_COOKIE`, if it sent one. On
    /// success opens a session.
    pub fn login(
        &self,
        addr: &str,
        username: &str,
        password: &str,
        known: Option<&str>,
        now: u64,
    ) -> Login {
        let trusted = known.is_some_and(|k| self.known_browser(k, username, now));
        // A known browser counts as itself, not as its address: a guesser behind the same NAT
        // cannot lock it out. Keyed by the hash, so the cookie itself is never kept.
        let known_key = known
            .filter(|_| trusted)
            .map(|k| auth::hex(&auth::hash_token(k)));
        let from = Attempt {
            addr,
            known: known_key.as_deref(),
        };
        let wait = lock(&self.throttle).wait_ms(from, username, now);
        if wait > 0 {
            return Login::Throttled(wait.div_ceil(1000));
        }
        let user = self.user(username);
        // Verified outside every lock: this is the slow part.
        let ok = match &user {
            Some(u) => verify_password(password, &u.password_hash),
            None => {
                verify_password(password, dummy_hash());
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            lock(&self.throttle).fail(from, username, now);
            return Login::Invalid;
        };
        lock(&self.throttle).succeed(from, username);
        let known_browser = if trusted {
            None
        } else {
            match self.remember_browser(username, now) {
                Ok(id) => Some(id),
                Err(e) => return Login::Unavailable(e.to_string()),
            }
        };
        match self.open_session(&user.username, now) {
            Ok((session_id, csrf, id_hash)) => Login::Ok {
                session_id,
                principal: Principal {
                    name: user.username,
                    role: user.role,
                    via: Via::Session { csrf, id_hash },
                    must_change_password: user.must_change_password,
                },
                known_browser,
            },
            Err(e) => Login::Unavailable(e.to_string()),
        }
    }

    /// Whether `cookie` marks a browser that logged in as `username` before; touching it restarts
    /// its clock.
    fn known_browser(&self, cookie: &str, username: &str, now: u64) -> bool {
        let mut known = lock(&self.known);
        match known.get_mut(&auth::hash_token(cookie)) {
            Some(k)
                if k.username == username
                    && now.saturating_sub(k.last_used_ms) < KNOWN_BROWSER_MS =>
            {
                k.last_used_ms = now;
                true
            }
            _ => false,
        }
    }

    /// Remembers a browser that just logged in as `username`; returns its cookie value.
    fn remember_browser(&self, username: &str, now: u64) -> Result<String, RandomError> {
        let id = random_secret()?;
        let mut known = lock(&self.known);
        if known.len() >= MAX_KNOWN_BROWSERS {
            known.retain(|_, k| now.saturating_sub(k.last_used_ms) < KNOWN_BROWSER_MS);
        }
        if known.len() >= MAX_KNOWN_BROWSERS
            && let Some(k) = known
                .iter()
                .min_by_key(|(_, k)| k.last_used_ms)
                .map(|(k, _)| *k)
        {
            known.remove(&k);
        }
        known.insert(
            auth::hash_token(&id),
            KnownBrowser {
                username: username.to_string(),
                last_used_ms: now,
            },
        );
        Ok(id)
    }

    /// Throttled re-check of a logged-in user's password (changing it needs the current one):
    /// `Err(None)` when wrong, `Err(Some(seconds))` when throttled.
    pub fn check_password(
        &self,
        addr: &str,
        session: &TokenHash,
        username: &str,
        password: &str,
        now: u64,
    ) -> Result<(), Option<u64>> {
        // The caller holds a live session of this user: only that session's own slate applies.
        let session = auth::hex(session);
        let from = Attempt {
            addr,
            known: Some(&session),
        };
        let wait = lock(&self.throttle).wait_ms(from, username, now);
        if wait > 0 {
            return Err(Some(wait.div_ceil(1000)));
        }
        let ok = self
            .user(username)
            .is_some_and(|u| verify_password(password, &u.password_hash));
        if !ok {
            lock(&self.throttle).fail(from, username, now);
            return Err(None);
        }
        lock(&self.throttle).succeed(from, username);
        Ok(())
    }

    /// Returns (session id for the cookie, CSRF token, hash of the id).
    fn open_session(
        &self,
        username: &str,
        now: u64,
    ) -> Result<(String, String, TokenHash), RandomError> {
        let id = random_secret()?;
        let csrf = random_secret()?;
        let hash = auth::hash_token(&id);
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| now.saturating_sub(s.last_used_ms) < SESSION_IDLE_MS);
        }
        if sessions.len() >= MAX_SESSIONS {
            // A linear scan, but only when 10,000 sessions are live and someone logs in.
            if let Some(k) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(k, _)| *k)
            {
                sessions.remove(&k);
            }
        }
        sessions.insert(
            hash,
            SessionEntry {
                username: username.to_string(),
                csrf: csrf.clone(),
                last_used_ms: now,
            },
        );
        drop(sessions);
        self.told(OperatorChange::Session {
            id_hash: auth::hex(&hash),
            username: username.to_string(),
            csrf: csrf.clone(),
            at_ms: now,
        });
        Ok((id, csrf, hash))
    }

    /// The principal of a session cookie value, if the session is live and its user still exists.
    /// Touching it restarts its idle clock.
    pub fn session(&self, session_id: &str, now: u64) -> Option<Principal> {
        self.session_by_hash(&auth::hash_token(session_id), now)
    }

    /// The principal of a live session, by the hash of its id (what a connection that rests on the
    /// session keeps).
    pub fn session_by_hash(&self, hash: &TokenHash, now: u64) -> Option<Principal> {
        let hash = *hash;
        let (username, csrf) = {
            let mut sessions = lock(&self.sessions);
            let s = sessions.get_mut(&hash)?;
            if now.saturating_sub(s.last_used_ms) >= SESSION_IDLE_MS {
                sessions.remove(&hash);
                return None;
            }
            s.last_used_ms = now;
            (s.username.clone(), s.csrf.clone())
        };
        let user = self.user(&username)?;
        Some(Principal {
            name: user.username,
            role: user.role,
            via: Via::Session {
                csrf,
                id_hash: hash,
            },
            must_change_password: user.must_change_password,
        })
    }

    pub fn end_session(&self, session_id: &str) {
        let hash = auth::hash_token(session_id);
        lock(&self.sessions).remove(&hash);
        self.told(OperatorChange::SessionGone {
            id_hash: auth::hex(&hash),
        });
        self.changed();
    }

    /// Ends every session of `username` except `keep` (after a password change or deletion): in
    /// a cluster every node knows every session, so this node names each one ended.
    pub fn end_sessions_of(&self, username: &str, keep: Option<&TokenHash>) {
        let mut ended = Vec::new();
        lock(&self.sessions).retain(|h, s| {
            let stays = s.username != username || Some(h) == keep;
            if !stays {
                ended.push(*h);
            }
            stays
        });
        for h in ended {
            self.told(OperatorChange::SessionGone {
                id_hash: auth::hex(&h),
            });
        }
        self.changed();
    }

    // ---- API tokens ----------------------------------------------------------------------

    /// The token's record if `hash` is the hash of a live API token; marks it used. Returns whether
    /// `last_used` moved by more than a minute, so the caller can persist it without a write per
    /// request.
    pub fn api_token(&self, hash: &TokenHash, now: u64) -> Option<(ApiToken, bool)> {
        let mut tokens = lock(&self.tokens);
        // The map lookup hashes and compares the SHA-256 of the token, never the token itself, so
        // its timing reveals nothing usable about the secret.
        let t = tokens.get_mut(hash)?;
        let stale = t.last_used.is_none_or(|l| now.saturating_sub(l) > 60_000);
        t.last_used = Some(now);
        Some((t.clone(), stale))
    }

    /// The live API token with this hash, without marking it used (a re-check, not a use).
    pub fn token_by_hash(&self, hash: &TokenHash) -> Option<ApiToken> {
        lock(&self.tokens).get(hash).cloned()
    }

    pub fn tokens(&self) -> Vec<ApiToken> {
        let mut v: Vec<ApiToken> = lock(&self.tokens).values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    pub fn insert_token(&self, hash: TokenHash, t: ApiToken) {
        lock(&self.tokens).insert(hash, t.clone());
        self.told(OperatorChange::Token(t));
    }

    /// Revokes at once: the next request with it fails.
    pub fn remove_token(&self, id: &str) -> Option<(TokenHash, ApiToken)> {
        let mut tokens = lock(&self.tokens);
        let hash = tokens.iter().find(|(_, t)| t.id == id).map(|(h, _)| *h)?;
        let removed = tokens.remove(&hash).map(|t| (hash, t));
        drop(tokens);
        self.told(OperatorChange::TokenGone {
            token_hash: auth::hex(&hash),
        });
        self.changed();
        removed
    }
}

/// Keys in `api_tokens`: the record under `t/<id>`, its `last_used` (u64 ms, big-endian) under
/// `u/<id>`. `last_used` is written without waiting and may land after a revocation's delete (from
/// another shard's batch); kept apart, such a straggler can only leave an orphan `u/` key, never
/// bring a revoked token back.
const TOKEN_PREFIX: &[u8] = b"t/";

pub fn token_key(id: &str) -> Vec<u8> {
    [TOKEN_PREFIX, id.as_bytes()].concat()
}

pub fn last_used_key(id: &str) -> Vec<u8> {
    [b"u/".as_slice(), id.as_bytes()].concat()
}

/// Constant-time comparison of a presented CSRF token with the session's.
pub fn csrf_ok(presented: Option<&str>, expected: &str) -> bool {
    presented.is_some_and(|p| p.as_bytes().ct_eq(expected.as_bytes()).into())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

/// A username: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_USERNAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Accounts with no store behind them, for the unit tests of the rules that use them.
#[cfg(test)]
pub(crate) fn in_memory() -> Accounts {
    Accounts {
        replicate: std::sync::OnceLock::new(),
        users: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        throttle: Mutex::new(LoginThrottle::new(LOGIN_THROTTLE)),
        known: Mutex::new(HashMap::new()),
        generation: AtomicU64::new(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        in_memory()
    }

    fn with_user(a: &Accounts, name: &str, pw: &str, role: Role) {
        assert!(a.insert_new_user(User {
            username: name.into(),
            role,
            password_hash: hash_password(pw).unwrap(),
            must_change_password: false,
            created_at: 0,
        }));
    }

    /// What one node does to operators, another node applying its changes does too: the
    /// session made on the first works on the second, and its end, a revoked token and a removed
    /// user end there as well.
    #[test]
    fn changes_told_on_one_node_hold_on_another() {
        let tmp = crate::store::temp::TempStore::open("accounts-cluster", false).expect("store");
        let (here, there) = (accounts(), accounts());
        let told = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        here.replicate_to(move |c| lock(&sink).push(c));
        let pass = |to: &Accounts| {
            for c in std::mem::take(&mut *lock(&told)) {
                to.apply(tmp.store(), c).expect("apply");
            }
        };
        with_user(&here, "ann", "password-123", Role::Admin);
        let (id, _, _) = here.open_session("ann", 1_000).expect("session");
        let hash = auth::hash_token("a-token-secret");
        here.insert_token(
            hash,
            ApiToken {
                id: "tok1".into(),
                name: "ci".into(),
                role: Role::Admin,
                token_hash: auth::hex(&hash),
                created_at: 1,
                last_used: None,
            },
        );
        pass(&there);
        assert!(
            there.session(&id, 2_000).is_some(),
            "the session holds there"
        );
        assert!(
            there.token_by_hash(&hash).is_some(),
            "the token holds there"
        );
        let before = there.generation();
        here.end_session(&id);
        here.remove_token("tok1");
        pass(&there);
        assert!(
            there.session(&id, 2_000).is_none(),
            "the logout holds there"
        );
        assert!(
            there.token_by_hash(&hash).is_none(),
            "the revocation holds there"
        );
        assert!(
            there.generation() > before,
            "connections resting on them look again"
        );
        let (id2, _, _) = here.open_session("ann", 3_000).expect("session");
        here.remove_user("ann");
        pass(&there);
        assert!(there.user("ann").is_none());
        assert!(
            there.session(&id2, 4_000).is_none(),
            "the user's sessions went with them"
        );
    }

    #[test]
    fn argon2id_hashes_verify_and_differ() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert_ne!(h, hash_password("correct horse").unwrap());
    }

    #[test]
    fn a_user_has_their_current_password_only() {
        let a = accounts();
        with_user(&a, "ann", "password-123", Role::Viewer);
        let u = a.user("ann").expect("ann");
        assert!(u.has_password("password-123"));
        assert!(!u.has_password("password-1234"));
        assert!(!u.has_password(""));
    }

    #[test]
    fn login_opens_a_session_that_resolves_and_expires_when_idle() {
        let a = accounts();
        with_user(&a, "ann", "password-123", Role::Viewer);
        let Login::Ok {
            session_id,
            principal,
            ..
        } = a.login("10.0.0.1", "ann", "password-123", None, 1000)
        else {
            panic!("login failed")
        };
        assert_eq!(principal.role, Role::Viewer);
        let p = a.session(&session_id, 2000).expect("live session");
        assert_eq!(p.name, "ann");
        assert!(matches!(p.via, Via::Session { .. }));
        // Used at 2000; still live just before the idle limit, gone at it.
        assert!(a.session(&session_id, 2000 + SESSION_IDLE_MS - 1).is_some());
        let last = 2000 + SESSION_IDLE_MS - 1;
        assert!(a.session(&session_id, last + SESSION_IDLE_MS).is_none());
        assert!(a.session("nonsense", 0).is_none());
    }

    #[test]
    fn deleted_users_lose_their_sessions_and_logout_ends_one() {
        let a = accounts();
        with_user(&a, "bob", "password-123", Role::Admin);
        let Login::Ok { session_id, .. } = a.login("ip", "bob", "password-123", None, 0) else {
            panic!()
        };
        a.end_session(&session_id);
        assert!(a.session(&session_id, 1).is_none());
        let Login::Ok { session_id, .. } = a.login("ip", "bob", "password-123", None, 0) else {
            panic!()
        };
        a.remove_user("bob");
        assert!(a.session(&session_id, 1).is_none());
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recent_goes_first() {
        let a = accounts();
        with_user(&a, "u", "password-123", Role::Viewer);
        let (first, _, _) = a.open_session("u", 0).unwrap();
        for i in 1..MAX_SESSIONS as u64 {
            a.open_session("u", i).unwrap();
        }
        let touched = MAX_SESSIONS as u64;
        assert!(
            a.session(&first, touched).is_some(),
            "touched: now the most recent"
        );
        let (newest, _, _) = a.open_session("u", touched + 1).unwrap();
        assert_eq!(lock(&a.sessions).len(), MAX_SESSIONS);
        assert!(a.session(&first, touched + 2).is_some());
        assert!(a.session(&newest, touched + 2).is_some());
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let pair = LOGIN_THROTTLE.pair;
        assert_eq!(pair.backoff_ms(4), 0);
        assert_eq!(pair.backoff_ms(5), 1000);
        assert_eq!(pair.backoff_ms(6), 2000);
        assert_eq!(pair.backoff_ms(9), 16000);
        assert_eq!(pair.backoff_ms(100), pair.max_backoff_ms);
        // The per-user ceiling slows, it never locks out for long.
        assert_eq!(LOGIN_THROTTLE.user.backoff_ms(1000), 60_000);
    }

    fn ok(l: &Login) -> bool {
        matches!(l, Login::Ok { .. })
    }

    #[test]
    fn a_lockout_from_one_address_leaves_the_user_free_elsewhere() {
        let a = accounts();
        with_user(&a, "cat", "password-123", Role::Admin);
        for _ in 0..LOGIN_THROTTLE.pair.free_failures {
            assert!(matches!(
                a.login("1.1.1.1", "cat", "bad", None, 0),
                Login::Invalid
            ));
        }
        // The guessing address waits, even with the right password.
        assert!(matches!(
            a.login("1.1.1.1", "cat", "password-123", None, 10),
            Login::Throttled(1)
        ));
        // The user, from anywhere else, does not.
        assert!(ok(&a.login("2.2.2.2", "cat", "password-123", None, 10)));
        // After the back-off the guessing address may try again.
        assert!(ok(&a.login("1.1.1.1", "cat", "password-123", None, 1010)));
    }

    #[test]
    fn a_distributed_guesser_is_slowed_but_a_known_browser_gets_in() {
        let a = accounts();
        with_user(&a, "cat", "password-123", Role::Admin);
        let Login::Ok {
            known_browser: Some(known),
            ..
        } = a.login("9.9.9.9", "cat", "password-123", None, 0)
        else {
            panic!("first login: a known-browser id is issued")
        };
        for i in 0..LOGIN_THROTTLE.user.free_failures {
            let bot = format!("10.0.{}.{}", i / 200, i % 200);
            assert!(matches!(
                a.login(&bot, "cat", "bad", None, 1),
                Login::Invalid
            ));
        }
        assert!(matches!(
            a.login("3.3.3.3", "cat", "password-123", None, 2),
            Login::Throttled(_)
        ));
        match a.login("3.3.3.3", "cat", "password-123", Some(&known), 2) {
            Login::Ok { known_browser, .. } => {
                assert_eq!(known_browser, None, "the browser keeps its id")
            }
            _ => panic!("the known browser is let in"),
        }
        // The known-browser id is the user's, not a pass for anyone else.
        with_user(&a, "dog", "password-456", Role::Admin);
        let mut dog_bad = 0;
        for i in 0..LOGIN_THROTTLE.user.free_failures {
            let bot = format!("10.1.{}.{}", i / 200, i % 200);
            if matches!(a.login(&bot, "dog", "bad", None, 3), Login::Invalid) {
                dog_bad += 1;
            }
        }
        assert_eq!(dog_bad, LOGIN_THROTTLE.user.free_failures);
        assert!(matches!(
            a.login("3.3.3.3", "dog", "password-456", Some(&known), 4),
            Login::Throttled(_)
        ));
    }

    #[test]
    fn api_tokens_resolve_until_revoked() {
        let a = accounts();
        let tok = format!("{API_TOKEN_PREFIX}{}", random_secret().unwrap());
        let h = auth::hash_token(&tok);
        a.insert_token(
            h,
            ApiToken {
                id: "t1".into(),
                name: "ci".into(),
                role: Role::Viewer,
                token_hash: auth::hex(&h),
                created_at: 0,
                last_used: None,
            },
        );
        let (t, stale) = a.api_token(&auth::hash_token(&tok), 5).unwrap();
        assert_eq!((t.name.as_str(), t.role, stale), ("ci", Role::Viewer, true));
        assert!(!a.api_token(&auth::hash_token(&tok), 6).unwrap().1);
        assert!(a.api_token(&auth::hash_token("fgt_other"), 7).is_none());
        assert!(a.remove_token("t1").is_some());
        assert!(a.api_token(&auth::hash_token(&tok), 8).is_none());
    }

    #[test]
    fn cookies_and_usernames_parse() {
        assert_eq!(
            cookie("a=1; fg_session=xyz; b=2", "fg_session"),
            Some("xyz")
        );
        assert_eq!(cookie("fg_session2=1", "fg_session"), None);
        assert!(valid_username("ann.b-c_d@x"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(csrf_ok(Some("abc"), "abc"));
        assert!(!csrf_ok(Some("abd"), "abc"));
        assert!(!csrf_ok(None, "abc"));
    }
}
