//! Cluster mode (`serve --nats URL --node-id NAME`): nodes joined through NATS JetStream. Each
//! node still acknowledges device data at its own RocksDB commit; the cluster is told afterwards.
//!
//! `link` runs the NATS client (async-nats) on its own thread with its own tokio runtime, so a
//! shard never waits on the network; `export` publishes the node's committed records from the
//! outbox to the `FLEETGATE_RECORDS` stream.

pub mod commands;
pub mod export;
pub mod history;
pub mod link;
pub mod live;
pub mod operators;
pub mod ownership;
pub mod port;
pub mod registry;
pub mod resources;
