//! Cross-shard delivery: a lock-free bounded queue per shard (crossbeam) plus a wake-up for the
//! shard's inbox task. Everything another shard, the API, or the main thread needs from a shard goes
//! through here, so a shard's sessions are only ever touched by their own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use crate::fleet::links::SessionRef;

/// Messages queued toward one shard. Past this, broadcasts to that shard are dropped (and counted)
/// rather than blocking a device's shard; commands are durable, so a dropped delivery nudge only
/// delays a command until the device's next registration.
pub const INBOX_CAPACITY: usize = 65_536;

pub enum ShardMsg {
    /// Ask a connection to close with this code and reason.
    Close {
        conn: u64,
        code: u16,
        reason: &'static str,
    },
    /// A device session has new commands in its durable queue.
    Commands { conn: u64 },
    /// A frame for every admin subscriber on the shard.
    Broadcast(Arc<str>),
    /// Stop accepting, close every session with 1001, flush, and return.
    Shutdown,
}

pub struct Inbox {
    tx: Sender<ShardMsg>,
    wake: Arc<Notify>,
}

pub struct InboxReceiver {
    pub rx: Receiver<ShardMsg>,
    pub wake: Arc<Notify>,
}

pub struct Hub {
    inboxes: Vec<Inbox>,
    admins: AtomicUsize,
}

impl Hub {
    pub fn new(shards: usize) -> (Hub, Vec<InboxReceiver>) {
        let mut inboxes = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = channel::bounded(INBOX_CAPACITY);
            let wake = Arc::new(Notify::new());
            inboxes.push(Inbox {
                tx,
                wake: wake.clone(),
            });
            receivers.push(InboxReceiver { rx, wake });
        }
        (
            Hub {
                inboxes,
                admins: AtomicUsize::new(0),
            },
            receivers,
        )
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Queues `msg` for `shard`; false if that shard's inbox is full or gone.
    pub fn send(&self, shard: usize, msg: ShardMsg) -> bool {
        let Some(inbox) = self.inboxes.get(shard) else {
            return false;
        };
        match inbox.tx.try_send(msg) {
            Ok(()) => {
                inbox.wake.notify_one();
                true
            }
            Err(TrySendError::Full(_)) => {
                metrics::counter!("fleetgate_inbox_full_total").increment(1);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Whether any admin subscriber is connected anywhere: broadcasts are only built when one is.
    pub fn has_admins(&self) -> bool {
        self.admins.load(Ordering::Relaxed) > 0
    }

    pub fn admin_joined(&self) {
        self.admins.fetch_add(1, Ordering::Relaxed);
    }

    pub fn admin_left(&self) {
        self.admins.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn broadcast(&self, frame: Arc<str>) {
        for shard in 0..self.inboxes.len() {
            self.send(shard, ShardMsg::Broadcast(frame.clone()));
        }
    }

    pub fn shutdown_all(&self) {
        for inbox in &self.inboxes {
            // Shutdown must get through even to a flooded inbox: block until there is room.
            let _ = inbox.tx.send(ShardMsg::Shutdown);
            inbox.wake.notify_one();
        }
    }
}

/// The rules reach sessions and admin subscribers on any shard through the hub.
impl crate::fleet::links::Links for Hub {
    fn has_admins(&self) -> bool {
        Hub::has_admins(self)
    }

    fn broadcast(&self, frame: Arc<str>) {
        Hub::broadcast(self, frame);
    }

    fn commands_pending(&self, session: SessionRef) {
        self.send(session.shard, ShardMsg::Commands { conn: session.conn });
    }

    fn close_session(&self, session: SessionRef, code: u16, reason: &'static str) {
        self.send(
            session.shard,
            ShardMsg::Close {
                conn: session.conn,
                code,
                reason,
            },
        );
    }
}
