//! fleetgate: a thread-per-core gateway for device fleets. See ARCHITECTURE.md for the map.

pub mod accounts;
pub mod api;
pub mod attendance;
pub mod auth;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod device_http;
pub mod doctor;
pub mod guard;
pub mod hub;
pub mod pending;
pub mod presence;
pub mod provision;
pub mod registry;
pub mod serve;
pub mod shard;
pub mod store;
pub mod throttle;

// The sans-IO core lives in its own crate (no RocksDB, no runtime) so fuzzers and benches can
// build it alone; re-exported so the rest of the server keeps using `crate::ws` and friends.
pub use fleetgate_core::{
    aiface, generic, http, json, lenient, smackbio, terminal, time, timer_wheel, ws,
};
