//! fleetgate: a thread-per-core gateway for device fleets. See ARCHITECTURE.md for the map.

pub mod aiface;
pub mod api;
pub mod attendance;
pub mod auth;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod device_http;
pub mod generic;
pub mod http;
pub mod hub;
pub mod json;
pub mod lenient;
pub mod pending;
pub mod presence;
pub mod provision;
pub mod registry;
pub mod serve;
pub mod shard;
pub mod smackbio;
pub mod store;
pub mod terminal;
pub mod time;
pub mod timer_wheel;
pub mod ws;
