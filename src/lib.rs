//! fleetgate: a thread-per-core gateway for device fleets. See ARCHITECTURE.md for the map.
//!
//! Layers, each importing only those before it: the sans-IO core crate (`fleetgate-core`,
//! re-exported below) → `store` → `fleet` (the product's rules) → `shard` (the runtime: shards,
//! the I/O seam, TLS, the hub, connection loops) → the app (`api`, `dashboard`, `serve`, `cli`,
//! `client`, `cluster`, `config`, `data_dir`, `backup`, `doctor`, `metrics_catalog`, `outbound`,
//! `webhook_sender`).

pub mod store;

pub mod fleet;

pub mod shard;

pub mod api;
pub mod backup;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod data_dir;
pub mod doctor;
pub mod metrics_catalog;
pub mod outbound;
pub mod serve;
pub mod webhook_sender;

// The sans-IO core lives in its own crate (no RocksDB, no runtime) so fuzzers and benches can
// build it alone; re-exported so the rest of the server keeps using `crate::ws` and friends.
pub use fleetgate_core::{
    ack_window, aiface, cidr, clock, generic, generic_session, http, json, keepalive, lenient,
    proxy_header, raw_member, smackbio, terminal, time, timer_wheel, ws, zkteco,
};
