//! For the unit tests of rules that take the whole fleet: the fleet state over a store with
//! `serve`'s default rules, and links to no runtime. Apart from `shard_stub`, which the rules'
//! own tests use, so that no rule's file imports one that imports it back.

use std::sync::Arc;

use crate::store::Store;

/// Links to no runtime: no admins, no sessions.
struct NoLinks;

impl crate::fleet::links::Links for NoLinks {
    fn has_admins(&self) -> bool {
        false
    }
    fn broadcast(&self, _: Arc<str>) {}
    fn commands_pending(&self, _: crate::fleet::links::SessionRef) {}
    fn close_session(&self, _: crate::fleet::links::SessionRef, _: u16, _: &'static str) {}
}

/// The fleet state over `store` with `serve`'s default rules, for rules that take the whole
/// fleet.
pub fn fleet(store: &Arc<Store>) -> crate::fleet::state::Fleet {
    use crate::fleet::retention::{Keep, Retention};
    crate::fleet::state::Fleet {
        store: store.clone(),
        registry: crate::fleet::registry::Registry::load(store).expect("registry"),
        pending: crate::fleet::pending::Pending::load(store, |_| false).expect("pending"),
        new_serials: crate::fleet::new_serials::NewSerials::new(10),
        accounts: crate::fleet::accounts::Accounts::load(store).expect("accounts"),
        people: Arc::new(crate::fleet::people::People::load(store).expect("people")),
        webhooks: Arc::new(crate::fleet::webhooks::Webhooks::load(store).expect("webhooks")),
        guard: crate::fleet::guard::Guard::new(&crate::fleet::guard::GuardLimits {
            max_connections_per_ip: 0,
            auth_free_failures: 5,
            auth_max_backoff_s: 60,
            flap_max_per_minute: 30,
            flap_ban_s: 60,
        }),
        admin_token: crate::fleet::auth::hash_token("admin-token-for-unit-tests"),
        rules: crate::fleet::state::Rules {
            command_queue_limit: 100,
            command_ttl_s: 3600,
            auto_approve: false,
            retention: Retention {
                telemetry: Keep::Forever,
                events: Keep::Forever,
                attendance: Keep::Forever,
                command_history: Keep::Forever,
            },
            msg_ids: crate::fleet::msg_window::Remember {
                window: 64,
                retention_us: 3_600_000_000,
            },
            webhooks_allow_private: false,
        },
        links: Arc::new(NoLinks),
        messages: std::sync::atomic::AtomicU64::new(0),
        cluster: Default::default(),
    }
}
