//! The fleet's state, shared by every shard, and the product's own settings.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::fleet::accounts::Accounts;
use crate::fleet::auth::TokenHash;
use crate::fleet::guard::Guard;
use crate::fleet::links::Links;
use crate::fleet::new_serials::NewSerials;
use crate::fleet::pending::Pending;
use crate::fleet::registry::Registry;
use crate::store::Store;

/// The product's own settings (the rest of `serve`'s flags belong to the runtime and the app).
#[derive(Clone, Debug)]
pub struct Rules {
    /// Commands queued per device and not yet delivered (`--command-queue-limit`).
    pub command_queue_limit: u32,
    /// Default command time-to-live in seconds (`--command-ttl`).
    pub command_ttl_s: u64,
    /// Unknown serials become devices at once instead of waiting in the pending list.
    pub auto_approve: bool,
    /// How long each kind of record is kept (`--retain-*`; devices may override).
    pub retention: crate::fleet::retention::Retention,
    /// Which msg_ids a session recognises as re-sent (`--msg-id-window`,
    /// `--msg-id-retention-hours`).
    pub msg_ids: crate::fleet::msg_window::Remember,
    /// Webhook URLs may name internal addresses (`--webhooks-allow-private`).
    pub webhooks_allow_private: bool,
}

/// Everything the rules work on, shared by every shard.
pub struct Fleet {
    pub store: Arc<Store>,
    pub registry: Registry,
    pub pending: Pending,
    /// How many serials no device has each address may present (`--new-serials-per-minute`).
    pub new_serials: NewSerials,
    /// Dashboard users, sessions, login throttling and API tokens.
    pub accounts: Accounts,
    /// The person behind each PIN (shared with CSV exports, which outlive their request).
    pub people: Arc<crate::fleet::people::People>,
    /// Webhook endpoints (shared with their sender threads).
    pub webhooks: Arc<crate::fleet::webhooks::Webhooks>,
    /// Abuse limits: connections per address, failed authentications, flapping devices.
    pub guard: Guard,
    /// The bootstrap admin token's hash.
    pub admin_token: TokenHash,
    pub rules: Rules,
    pub links: Arc<dyn Links>,
    /// Device messages (telemetry, events, command results) since start, for `/api/stats`.
    pub messages: AtomicU64,
    /// The cluster this node joined (`--nats`), if any.
    pub cluster: crate::fleet::cluster::Membership,
}

impl Fleet {
    pub fn has_admins(&self) -> bool {
        self.links.has_admins()
    }

    /// Sends a frame to every admin subscriber (callers check `has_admins` before building one).
    pub fn broadcast(&self, frame: String) {
        self.links.broadcast(frame.into());
    }
}
