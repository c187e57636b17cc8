//! The product's rules: which devices exist and who may speak for them, the one-session-per-device
//! claim, the durable command queue and its order, presence, provisioning, pending serials,
//! attendance and msg_id ingest, the people terminals enrolled, dashboard accounts and API
//! principals, and the abuse guard.
//!
//! This layer sits between the store and the runtime. Its functions take the fleet state
//! (`state::Fleet`) and a batch handle (the calling shard's `Batcher`), never the shard runtime: what
//! they need from the runtime (admin broadcasts, nudging or closing another shard's session) they
//! ask through `links::Links`, which the runtime implements. So every rule here can be exercised with
//! a store in a temporary directory and no sockets.

pub mod accounts;
pub mod attendance;
pub mod auth;
pub mod cluster;
pub mod commands;
pub mod enrolled;
pub mod guard;
pub mod handed_out;
pub mod identity;
pub mod ingest;
pub mod links;
pub mod msg_window;
pub mod new_serials;
pub mod pending;
pub mod people;
pub mod presence;
pub mod principal;
pub mod provision;
pub mod queue;
pub mod registry;
pub mod replica;
pub mod retention;
#[cfg(test)]
pub mod shard_stub;
pub mod sources;
pub mod state;
#[cfg(test)]
pub mod test_fleet;
pub mod throttle;
pub mod webhooks;
pub mod zkteco;
