//! The live view across the cluster: what a node broadcasts to its admin subscribers (devices
//! connecting and disconnecting, telemetry, events, command results) goes to every other node's
//! admin subscribers too, over plain NATS (`fleetgate.live.<node>`: a live view, not a record;
//! the records themselves are in the export).
//!
//! `Relay` wraps the runtime's hub as the fleet's `Links`: it builds frames when any node has an
//! admin subscriber (nodes with one say so on `fleetgate.admins.<node>` every `HEARTBEAT`), and
//! hands each frame to the link over a bounded channel (full, the frame is dropped for the other
//! nodes and counted: a slow NATS never holds a shard up).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::resources::Resources;
use crate::fleet::links::{Links, SessionRef};
use crate::shard::hub::Hub;
use crate::time::now_ms;

/// Frames waiting for the link to publish them.
pub const MAX_WAITING: usize = 4096;
/// How often a node with admin subscribers says so; another node builds frames for it until
/// `REMOTE_ADMINS_FOR` after the last word.
const HEARTBEAT: Duration = Duration::from_secs(1);
const REMOTE_ADMINS_FOR: u64 = 3_000;
const RETRY: Duration = Duration::from_millis(500);

pub struct Relay {
    hub: Arc<Hub>,
    out: mpsc::Sender<Arc<str>>,
    /// Until when (ms) another node is known to have admin subscribers.
    remote_admins_until: AtomicU64,
}

impl Relay {
    pub fn new(hub: Arc<Hub>) -> (Arc<Relay>, mpsc::Receiver<Arc<str>>) {
        let (out, rx) = mpsc::channel(MAX_WAITING);
        let relay = Relay {
            hub,
            out,
            remote_admins_until: AtomicU64::new(0),
        };
        (Arc::new(relay), rx)
    }

    fn remote_admins(&self) -> bool {
        self.remote_admins_until.load(Ordering::Relaxed) > now_ms()
    }
}

impl Links for Relay {
    fn has_admins(&self) -> bool {
        self.hub.has_admins() || self.remote_admins()
    }

    fn broadcast(&self, frame: Arc<str>) {
        if self.hub.has_admins() {
            self.hub.broadcast(frame.clone());
        }
        if self.remote_admins() && self.out.try_send(frame).is_err() {
            metrics::counter!("fleetgate_cluster_live_dropped_total").increment(1);
        }
    }

    fn commands_pending(&self, session: SessionRef) {
        self.hub.commands_pending(session);
    }

    fn close_session(&self, session: SessionRef, code: u16, reason: &'static str) {
        self.hub.close_session(session, code, reason);
    }
}

/// Publishes this node's frames, says when it has admin subscribers, and passes other nodes'
/// frames to its own, until the link stops.
pub async fn run(relay: Arc<Relay>, mut frames: mpsc::Receiver<Arc<str>>, r: Resources) {
    let own = format!("fleetgate.live.{}", r.node);
    let publisher = {
        let client = r.client.clone();
        let own = own.clone();
        tokio::spawn(async move {
            while let Some(f) = frames.recv().await {
                let bytes = f.as_bytes().to_vec();
                let _ = client.publish(own.clone(), bytes.into()).await;
            }
        })
    };
    let heartbeat = {
        let (client, relay) = (r.client.clone(), relay.clone());
        let subject = format!("fleetgate.admins.{}", r.node);
        tokio::spawn(async move {
            loop {
                if relay.hub.has_admins() {
                    let _ = client.publish(subject.clone(), "1".into()).await;
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    let _stop = Abort(vec![publisher, heartbeat]);
    let admins_own = format!("fleetgate.admins.{}", r.node);
    loop {
        let subs = (
            r.client.subscribe("fleetgate.live.*").await,
            r.client.subscribe("fleetgate.admins.*").await,
        );
        let (Ok(mut live), Ok(mut admins)) = subs else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        loop {
            tokio::select! {
                m = live.next() => {
                    let Some(m) = m else { break };
                    if m.subject.as_str() == own || !relay.hub.has_admins() {
                        continue;
                    }
                    if let Ok(text) = std::str::from_utf8(&m.payload) {
                        relay.hub.broadcast(text.into());
                    }
                }
                m = admins.next() => {
                    let Some(m) = m else { break };
                    if m.subject.as_str() != admins_own {
                        relay
                            .remote_admins_until
                            .store(now_ms() + REMOTE_ADMINS_FOR, Ordering::Relaxed);
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

struct Abort(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Abort {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
