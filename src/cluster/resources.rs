//! What the link's tasks share once it has set the cluster up: the client, JetStream, the
//! buckets, this node's name; and the names of the cluster's buckets, streams and keys.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use uuid::Uuid;

pub const DEVICES_BUCKET: &str = "fleetgate-devices";
pub const COMMANDS_STREAM: &str = "FLEETGATE_COMMANDS";
pub const COMMANDS_SUBJECTS: &str = "fleetgate.commands.>";

/// A KV bucket's stream, laid out as the client lays out a bucket with one value per key. The
/// buckets are created as streams directly: the client's own bucket creation first asks for
/// account details in a shape that nats-server 2.9 (Debian's) does not answer in.
pub fn kv_bucket_stream(
    name: &str,
    description: &str,
    max_message_size: i32,
    max_age: Duration,
    duplicate_window: Duration,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_message_size,
        max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window,
        ..Default::default()
    }
}

pub fn device_key(id: &Uuid) -> String {
    format!("d.{id}")
}

/// A serial's key: hex, since serials may hold characters keys may not.
pub fn serial_key(serial: &str) -> String {
    let mut k = String::with_capacity(2 + serial.len() * 2);
    k.push_str("s.");
    for b in serial.bytes() {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// What requests are carried out with, once the link has set the cluster's buckets and streams up.
#[derive(Clone)]
pub struct Resources {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub devices: kv::Store,
    pub owners: kv::Store,
    pub nodes: kv::Store,
    pub operators: kv::Store,
    pub sessions: kv::Store,
    pub node: Arc<str>,
    pub shared: Arc<crate::shard::local::Shared>,
}
