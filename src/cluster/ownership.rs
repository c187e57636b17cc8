//! Who holds each device's session in the cluster, and the hand-over when it moves.
//!
//! Each device has an owner record in the `fleetgate-owners` bucket: the node, an epoch, and
//! whether the device is online there. A node takes a device with a compare-and-set on that
//! record (a new epoch), so two nodes racing for one device agree on one winner. Each node holds a
//! lease, its key in `fleetgate-nodes`, a bucket whose values expire after `LEASE` and which a
//! node renews every `RENEW_EVERY`: a node that died stops counting as an owner within `LEASE`.
//!
//! The hand-over: before a node answers a device's registration, it asks the live node that
//! owned it to let go (`fleetgate.node.<node>.release`). That node closes its session, waits until
//! every record the session staged has resolved (as on one node), and answers with the msg_ids
//! the device stored there recently, which the new node's session then treats as stored: a
//! re-send after a lost ack is acknowledged, not stored twice. Every node also watches the owner
//! records: a session of a device another node has taken is closed (a node that missed the
//! request, in a partition), and the device lists show a device online on another live node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::resources::{self, Resources};
use crate::fleet::cluster::ClusterError;
use crate::fleet::msg_window::MsgWindow;
use crate::shard::local::Shared;
use crate::store::records;
use crate::time::now_us;

pub const OWNERS_BUCKET: &str = "fleetgate-owners";
pub const NODES_BUCKET: &str = "fleetgate-nodes";
/// How long a node counts as alive after it last renewed its lease.
pub const LEASE: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long a node waits for the previous owner to let a device go (it then goes on without the
/// hand-over: that node is gone or cut off).
const RELEASE_WAIT: Duration = Duration::from_secs(3);
/// Attempts at the compare-and-set before giving up (another node kept writing the record).
const CAS_ATTEMPTS: usize = 5;
const RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    pub node: String,
    pub epoch: u64,
    pub online: bool,
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// The owner record as it stands, and its revision (None when the device never had one).
async fn current(r: &Resources, dev: Uuid) -> Result<(Option<Owner>, Option<u64>), ClusterError> {
    let entry = r.owners.entry(dev.to_string()).await.map_err(unavailable)?;
    Ok(match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            (records::decode(&e.value).ok(), Some(e.revision))
        }
        Some(e) => (None, Some(e.revision)),
        None => (None, None),
    })
}

async fn write(
    r: &Resources,
    dev: Uuid,
    owner: &Owner,
    revision: Option<u64>,
) -> Result<bool, ClusterError> {
    let body = records::encode(owner).map_err(unavailable)?;
    let key = dev.to_string();
    let written = match revision {
        Some(rev) => r.owners.update(&key, body.into(), rev).await.is_ok(),
        None => r.owners.create(&key, body.into()).await.is_ok(),
    };
    Ok(written)
}

fn owned(r: &Resources, dev: Uuid, epoch: u64) {
    if let Some(d) = r.shared.fleet.registry.get(&dev) {
        d.owned_epoch.store(epoch, Ordering::Release);
    }
}

async fn alive(r: &Resources, node: &str) -> bool {
    matches!(r.nodes.get(node).await, Ok(Some(_)))
}

/// Makes this node the device's owner, with the hand-over from a live previous owner.
pub async fn take(r: &Resources, dev: Uuid) -> Result<Vec<String>, ClusterError> {
    for _ in 0..CAS_ATTEMPTS {
        let (prev, revision) = current(r, dev).await?;
        let mut handed = Vec::new();
        if let Some(p) = &prev
            && p.node != *r.node
            && alive(r, &p.node).await
        {
            handed = ask_release(r, &p.node, dev).await;
        }
        let owner = Owner {
            node: r.node.to_string(),
            epoch: prev.as_ref().map_or(0, |p| p.epoch) + 1,
            online: true,
        };
        if write(r, dev, &owner, revision).await? {
            metrics::counter!("fleetgate_cluster_takeovers_total").increment(1);
            owned(r, dev, owner.epoch);
            return Ok(handed);
        }
    }
    Err(ClusterError::Unavailable(
        "the device's owner record kept changing".into(),
    ))
}

/// Records the device online or offline here, while this node owns it. Going online also takes
/// a device no live node owns (an HTTP device, which registers nowhere; a session that took it
/// while NATS was away), never one another live node holds: the write may be late (presence is
/// written behind), and a late write must not take a device that moved on.
pub async fn presence(r: &Resources, dev: Uuid, online: bool) -> Result<(), ClusterError> {
    for _ in 0..CAS_ATTEMPTS {
        let (prev, revision) = current(r, dev).await?;
        let mine = prev.as_ref().is_some_and(|p| p.node == *r.node);
        if !mine {
            if !online {
                return Ok(());
            }
            if let Some(p) = &prev
                && alive(r, &p.node).await
            {
                return Ok(());
            }
        }
        if mine && prev.as_ref().is_some_and(|p| p.online == online) {
            return Ok(());
        }
        let owner = Owner {
            node: r.node.to_string(),
            epoch: prev.as_ref().map_or(0, |p| p.epoch) + u64::from(!mine),
            online,
        };
        if write(r, dev, &owner, revision).await? {
            owned(r, dev, owner.epoch);
            return Ok(());
        }
    }
    Ok(())
}

async fn ask_release(r: &Resources, node: &str, dev: Uuid) -> Vec<String> {
    let subject = format!("fleetgate.node.{node}.release");
    let asked = r.client.request(subject, dev.to_string().into());
    match tokio::time::timeout(RELEASE_WAIT, asked).await {
        Ok(Ok(m)) => records::decode(&m.payload).unwrap_or_default(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %node, device = %dev, "cluster: the previous owner did not hand the device over");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(%node, device = %dev, "cluster: the previous owner did not answer the hand-over in time");
            Vec::new()
        }
    }
}

/// Answers other nodes' requests to let a device go, until the link stops.
pub async fn serve_release(shared: Arc<Shared>, r: Resources) {
    loop {
        let subject = format!("fleetgate.node.{}.release", r.node);
        match r.client.subscribe(subject).await {
            Ok(mut sub) => {
                while let Some(m) = sub.next().await {
                    let Some(reply) = m.reply.clone() else {
                        continue;
                    };
                    let ids = match std::str::from_utf8(&m.payload)
                        .ok()
                        .and_then(|s| s.parse::<Uuid>().ok())
                    {
                        Some(dev) => release(&shared, dev).await,
                        None => Vec::new(),
                    };
                    let body = records::encode(&ids).unwrap_or_else(|_| b"[]".to_vec());
                    let _ = r.client.publish(reply, body.into()).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster: cannot take hand-over requests yet"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Closes the device's session here, waits (bounded) for its records to resolve, and gives the
/// msg_ids the device stored here recently.
async fn release(shared: &Shared, dev: Uuid) -> Vec<String> {
    let fleet = &shared.fleet;
    let Some(d) = fleet.registry.get(&dev) else {
        return Vec::new();
    };
    if let Some(s) = d.session() {
        fleet
            .links
            .close_session(s, 4000, "replaced by a newer session");
    }
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        let released = d.released.notified();
        if d.session().is_none() {
            break;
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            tracing::warn!(device = %dev, "cluster: the session did not close in time for the hand-over");
            break;
        }
    }
    let remember = fleet.rules.msg_ids;
    let since = now_us().saturating_sub(remember.retention_us);
    MsgWindow::recent(&fleet.store, &dev, remember.window, since).unwrap_or_default()
}

/// Renews this node's lease until the link stops.
pub async fn keep_lease(r: Resources) {
    loop {
        if let Err(e) = r.nodes.put(r.node.as_ref(), "alive".into()).await {
            tracing::debug!(error = %e, "cluster: renewing the lease failed");
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Follows the owner records: closes a session here whose device another node took, and marks
/// devices online elsewhere while their owner is alive (checked every `RENEW_EVERY`).
pub async fn follow(shared: Arc<Shared>, r: Resources) {
    let mut owners: HashMap<Uuid, Owner> = HashMap::new();
    let mut live: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        let mut watch = match r.owners.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "cluster: cannot watch the owner records yet");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let Some(Ok(e)) = entry else { break };
                    let Ok(dev) = e.key.parse::<Uuid>() else { continue };
                    let owner = (e.operation == kv::Operation::Put)
                        .then(|| records::decode::<Owner>(&e.value).ok())
                        .flatten();
                    // A node not yet seen alive (it started after the last look) is looked up
                    // now, so its devices list as online without waiting for the next round.
                    if let Some(o) = &owner
                        && !live.contains(&o.node)
                        && alive(&r, &o.node).await
                    {
                        live.insert(o.node.clone());
                    }
                    apply(&shared, &r, dev, owner.as_ref(), &live);
                    match owner {
                        Some(o) => owners.insert(dev, o),
                        None => owners.remove(&dev),
                    };
                }
                _ = tick.tick() => {
                    if let Some(now_live) = live_nodes(&r).await {
                        live = now_live;
                        for (dev, o) in &owners {
                            apply(&shared, &r, *dev, Some(o), &live);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn live_nodes(r: &Resources) -> Option<HashSet<String>> {
    let mut keys = r.nodes.keys().await.ok()?;
    let mut out = HashSet::new();
    while let Some(k) = keys.next().await {
        out.insert(k.ok()?);
    }
    Some(out)
}

fn apply(shared: &Shared, r: &Resources, dev: Uuid, owner: Option<&Owner>, live: &HashSet<String>) {
    let fleet = &shared.fleet;
    let Some(d) = fleet.registry.get(&dev) else {
        return;
    };
    let other = owner.filter(|o| o.node != *r.node);
    if other.is_some_and(|o| o.epoch > d.owned_epoch.load(Ordering::Acquire))
        && let Some(s) = d.session()
    {
        fleet
            .links
            .close_session(s, 4000, "replaced by a newer session");
    }
    let elsewhere = other.is_some_and(|o| o.online && live.contains(&o.node));
    d.elsewhere.store(elsewhere, Ordering::Release);
}

/// The owners bucket and the nodes bucket, whose values expire after `LEASE`
/// (`resources::kv_bucket_stream`).
pub fn bucket_streams() -> [jetstream::stream::Config; 2] {
    let bucket = |name: &str, description: &str, max_age: Duration| {
        resources::kv_bucket_stream(name, description, 4096, max_age, Duration::from_secs(10))
    };
    [
        bucket(
            OWNERS_BUCKET,
            "fleetgate: which node holds each device's session",
            Duration::ZERO,
        ),
        bucket(NODES_BUCKET, "fleetgate: the nodes alive (leases)", LEASE),
    ]
}
