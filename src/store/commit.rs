//! Group commit.
//!
//! Each shard stages the records of all its sessions into one open `WriteBatch` (`Batcher`). While
//! one batch is being committed, the next one fills; when the commit returns, the filled batch goes
//! out at once. The write itself happens on the shard's committer thread, so a shard never blocks
//! on fsync, and RocksDB merges the committers of all shards into one WAL write group: under load,
//! many records share one fsync, and at low load a record waits for at most one fsync in flight.
//!
//! Every staged record gets the batch's `Ticket`; a session acks to its device only once that
//! ticket reports success.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel;
use rocksdb::WriteBatch;
use tokio::sync::{Notify, oneshot};

use super::{Cf, Store, StoreError};

/// The batcher sends one batch and waits for it, so one slot is all the queue ever needs.
const COMMITTER_QUEUE: usize = 1;

struct Job {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), String>>,
}

/// The sending side of a shard's committer thread.
pub struct Committer {
    tx: channel::Sender<Job>,
}

/// Starts a committer thread. It ends when its `Committer` is dropped and the queue is drained.
pub fn spawn_committer(
    store: Arc<Store>,
    name: String,
) -> std::io::Result<(Committer, JoinHandle<()>)> {
    let (tx, rx) = channel::bounded::<Job>(COMMITTER_QUEUE);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let latency = metrics::histogram!("fleetgate_batch_commit_seconds");
        let records = metrics::histogram!("fleetgate_batch_records");
        while let Ok(job) = rx.recv() {
            let started = Instant::now();
            records.record(job.batch.len() as f64);
            let result = store.write(job.batch).map_err(|e| e.to_string());
            latency.record(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                // `Store::write` logs the run of failures (rate-limited: a full disk must not
                // flood the log); this line is for debugging single batches.
                tracing::debug!(error = %e, "group commit failed; its records are answered as not stored");
                metrics::counter!("fleetgate_batch_commit_failures_total").increment(1);
            }
            // The shard may have gone away during shutdown; nobody is left to tell.
            let _ = job.done.send(result);
        }
    })?;
    Ok((Committer { tx }, handle))
}

/// The outcome of one batch, shared by every record staged into it.
#[derive(Default)]
pub struct Ticket {
    outcome: Cell<Option<bool>>,
    done: Notify,
}

impl Ticket {
    /// Resolves to `true` once the batch is durable, `false` if its commit failed.
    pub async fn wait(&self) -> bool {
        loop {
            let notified = self.done.notified();
            if let Some(ok) = self.outcome.get() {
                return ok;
            }
            notified.await;
        }
    }

    pub fn outcome(&self) -> Option<bool> {
        self.outcome.get()
    }

    fn resolve(&self, ok: bool) {
        self.outcome.set(Some(ok));
        self.done.notify_waiters();
    }
}

/// A batch being filled, with the handles needed to add to it.
pub struct Staging<'a> {
    store: &'a Store,
    batch: &'a mut WriteBatch,
}

impl Staging<'_> {
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.batch.put_cf(self.store.cf(cf)?, key, value);
        Ok(())
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<(), StoreError> {
        self.batch.delete_cf(self.store.cf(cf)?, key);
        Ok(())
    }

    pub fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        self.batch.delete_range_cf(self.store.cf(cf)?, from, to);
        Ok(())
    }

    pub fn store(&self) -> &Store {
        self.store
    }
}

struct Open {
    batch: WriteBatch,
    ticket: Rc<Ticket>,
}

/// A shard's open batch and the loop that commits it. Shard-local (`Rc`): only its own tasks stage.
pub struct Batcher {
    store: Arc<Store>,
    open: RefCell<Open>,
    committer: RefCell<Option<Committer>>,
    kick: Notify,
    room: Notify,
    idle: Notify,
    in_flight: Cell<bool>,
    max_bytes: usize,
}

impl Batcher {
    /// `max_bytes` bounds the open batch; past it, stagers wait for `room()` (backpressure).
    pub fn new(store: Arc<Store>, committer: Committer, max_bytes: usize) -> Self {
        Batcher {
            store,
            open: RefCell::new(Open {
                batch: WriteBatch::default(),
                ticket: Rc::default(),
            }),
            committer: RefCell::new(Some(committer)),
            kick: Notify::new(),
            room: Notify::new(),
            idle: Notify::new(),
            in_flight: Cell::new(false),
            max_bytes,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Adds records to the open batch and returns the ticket that reports its commit.
    pub fn stage(
        &self,
        f: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
    ) -> Result<Rc<Ticket>, StoreError> {
        let mut open = self.open.borrow_mut();
        let Open { batch, ticket } = &mut *open;
        f(&mut Staging {
            store: &self.store,
            batch,
        })?;
        let ticket = ticket.clone();
        drop(open);
        self.kick.notify_one();
        Ok(ticket)
    }

    /// Bytes staged in the open batch (for the queue-depth metric).
    pub fn open_bytes(&self) -> usize {
        self.open.borrow().batch.size_in_bytes()
    }

    pub fn is_full(&self) -> bool {
        self.open.borrow().batch.size_in_bytes() >= self.max_bytes
    }

    /// Waits until the open batch has room again.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// Stages and waits for durability: for admin writes (device create, command enqueue) whose
    /// HTTP answer must not come before the data is safe.
    pub async fn commit(
        &self,
        f: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.room().await;
        let ticket = self.stage(f)?;
        if ticket.wait().await {
            Ok(())
        } else {
            Err(StoreError::CommitFailed)
        }
    }

    /// The commit loop; runs for the shard's life and returns once `close` was called and the last
    /// batch is committed.
    pub async fn run(&self) {
        loop {
            let kicked = self.kick.notified();
            let empty = self.open.borrow().batch.is_empty();
            if empty {
                if self.committer.borrow().is_none() {
                    return;
                }
                self.idle.notify_waiters();
                kicked.await;
                continue;
            }
            let Open { batch, ticket } = std::mem::replace(
                &mut *self.open.borrow_mut(),
                Open {
                    batch: WriteBatch::default(),
                    ticket: Rc::default(),
                },
            );
            self.room.notify_waiters();
            let (done_tx, done_rx) = oneshot::channel();
            let sent = self
                .committer
                .borrow()
                .as_ref()
                .map(|c| c.tx.clone())
                .map(|tx| {
                    tx.send(Job {
                        batch,
                        done: done_tx,
                    })
                });
            let ok = match sent {
                Some(Ok(())) => {
                    self.in_flight.set(true);
                    let r = matches!(done_rx.await, Ok(Ok(())));
                    self.in_flight.set(false);
                    r
                }
                _ => false,
            };
            ticket.resolve(ok);
        }
    }

    /// Waits until everything staged so far is committed (or failed).
    pub async fn flush(&self) {
        loop {
            let idle = self.idle.notified();
            if self.open.borrow().batch.is_empty() && !self.in_flight.get() {
                return;
            }
            self.kick.notify_one();
            idle.await;
        }
    }

    /// Lets `run` finish after the last batch, and ends the committer thread.
    pub fn close(&self) {
        self.committer.borrow_mut().take();
        self.kick.notify_one();
    }
}
