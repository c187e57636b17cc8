//! What the product's rules need from a cluster, when the node runs with `--nats`: the cluster's
//! registry (device records and serials, shared by every node), and its durable command queue.
//! The app's `cluster` module implements `Port` over NATS JetStream; a node alone has none, and
//! every rule here then does what it always did.
//!
//! The cluster's registry is the truth in cluster mode: a change is written there first (so a
//! node that cannot reach NATS refuses it with 503 rather than diverging), then applied to the
//! node's own store and memory; what other nodes changed is applied by `replica`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use uuid::Uuid;

use crate::store::records::{CommandRecord, DeviceRecord};

/// Why the cluster could not take a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// NATS is not reachable (or did not answer in time): the change was not made anywhere.
    Unavailable(String),
    /// Another device holds this serial somewhere in the cluster.
    SerialTaken,
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Unavailable(why) => write!(f, "the cluster is unavailable: {why}"),
            ClusterError::SerialTaken => f.write_str("another device has this serial"),
        }
    }
}

pub type Reply<T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send>>;

/// The cluster as the rules see it. Every call resolves once NATS has durably taken the change
/// (or with `Unavailable`, within a bounded wait).
pub trait Port: Send + Sync {
    /// This node's name (`--node-id`).
    fn node(&self) -> &str;
    /// Takes `serial` for device `id` across the cluster; `SerialTaken` when another has it.
    fn claim_serial(&self, serial: &str, id: Uuid) -> Reply<()>;
    /// Gives a serial back (its device was deleted, or its creation failed).
    fn release_serial(&self, serial: &str) -> Reply<()>;
    /// Writes a device's registry record (created, renamed, re-configured, token rotated).
    fn put_device(&self, rec: &DeviceRecord) -> Reply<()>;
    /// Deletes a device's record, and gives its serial back.
    fn delete_device(&self, id: Uuid, serial: Option<String>) -> Reply<()>;
    /// Appends a new command to the cluster's command stream; every node applies it.
    fn enqueue_command(&self, cmd: &CommandRecord) -> Reply<()>;
    /// Makes this node the owner of `device`'s session (a compare-and-set on its owner record,
    /// with a new epoch). When another live node held it, that node closes its session, lets its
    /// records resolve, and hands over the msg_ids the device stored there recently: the answer.
    fn take_ownership(&self, device: Uuid) -> Reply<Vec<String>>;
    /// The device went online or offline here: its owner record says so (for every node's device
    /// list). Not waited for; NATS away, it is written when the device next changes.
    fn presence(&self, device: Uuid, online: bool);
    /// Asks every other live node the same question (an encoded read of a device's history) and
    /// gives the answers that came within a bounded wait.
    fn gather(&self, question: Vec<u8>) -> Reply<Vec<Vec<u8>>>;
}

/// Whether the node is in a cluster, and its port when it is (set once, at start).
#[derive(Default)]
pub struct Membership {
    port: OnceLock<Arc<dyn Port>>,
    /// Applying what the cluster said, one change at a time (a command can arrive by its stream
    /// and by the node that queued it at once).
    applying: Mutex<()>,
    /// The cluster's buckets and streams are set up and followed (the link sets it once).
    ready: std::sync::atomic::AtomicBool,
    /// NATS is connected (the link keeps it current).
    connected: std::sync::atomic::AtomicBool,
}

impl Membership {
    pub fn join(&self, port: Arc<dyn Port>) {
        let _ = self.port.set(port);
    }

    pub fn port(&self) -> Option<&Arc<dyn Port>> {
        self.port.get()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected
            .store(up, std::sync::atomic::Ordering::Release);
    }

    /// Whether a change that must reach every node can be made now: alone, always; in a cluster,
    /// while NATS is connected. Operators' credentials are changed only then, so that a
    /// revocation made here is never one the other nodes miss.
    pub fn reachable(&self) -> Result<(), ClusterError> {
        if self.port().is_none() || self.connected.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(ClusterError::Unavailable("NATS is not connected".into()))
        }
    }

    pub fn applying(&self) -> MutexGuard<'_, ()> {
        self.applying.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fields of a device's record the cluster shares: what operators set. `last_seen`, what a
/// device reported about itself (`info`) and a polling terminal's upload stamps stay with the node
/// that saw them.
pub fn shared_fields(rec: &DeviceRecord) -> DeviceRecord {
    DeviceRecord {
        last_seen: None,
        info: None,
        stamps: Default::default(),
        ..rec.clone()
    }
}
