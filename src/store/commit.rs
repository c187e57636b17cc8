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
    /// Run once the batch resolves (or, should the batcher go away first, when the ticket does):
    /// how a session's device claim is released only after its last record is answered.
    on_resolve: RefCell<Vec<Box<dyn FnOnce()>>>,
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

    /// Runs `f` when the batch resolves; at once if it already has.
    pub fn on_resolve(&self, f: impl FnOnce() + 'static) {
        if self.outcome.get().is_some() {
            f();
        } else {
            self.on_resolve.borrow_mut().push(Box::new(f));
        }
    }

    fn resolve(&self, ok: bool) {
        self.outcome.set(Some(ok));
        self.done.notify_waiters();
        self.run_callbacks();
    }

    fn run_callbacks(&self) {
        let callbacks = std::mem::take(&mut *self.on_resolve.borrow_mut());
        for f in callbacks {
            f();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // A ticket dropped unresolved belongs to a batch that will never be answered (the shard is
        // going away): what waits on it must not wait forever.
        self.run_callbacks();
    }
}

/// One durable write from a thread outside the shards (the webhook sender): staged and written
/// at once, synced like every batch.
pub fn write_now(
    store: &Store,
    f: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let mut after = Vec::new();
    let staged = f(&mut Staging {
        store,
        batch: &mut batch,
        ticket: None,
        after: &mut after,
    });
    let written = staged.and_then(|()| store.write(batch));
    for done in after {
        done();
    }
    written
}

/// Work to run once a batch's outcome is known.
type Resolved = Box<dyn FnOnce()>;

/// A batch being filled, with the handles needed to add to it.
pub struct Staging<'a> {
    store: &'a Store,
    batch: &'a mut WriteBatch,
    /// The batch's ticket; None for `write_now`, whose write follows at once (its `after` runs
    /// then).
    ticket: Option<&'a Rc<Ticket>>,
    after: &'a mut Vec<Resolved>,
}

impl<'a> Staging<'a> {
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

    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// Runs `f` once the batch being staged has committed or failed.
    pub fn on_resolve(&mut self, f: impl FnOnce() + 'static) {
        match self.ticket {
            Some(t) => t.on_resolve(f),
            None => self.after.push(Box::new(f)),
        }
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
        // The open batch's ticket has not resolved, so nothing lands in `after`.
        let mut after = Vec::new();
        f(&mut Staging {
            store: &self.store,
            batch,
            ticket: Some(ticket),
            after: &mut after,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp::{TempStore, run_local};

    fn put(st: &mut Staging<'_>, k: &[u8]) -> Result<(), StoreError> {
        st.put(Cf::Meta, k, b"v")
    }

    #[test]
    fn tickets_resolve_in_staging_order_and_only_after_the_write() {
        let tmp = TempStore::open("commit-order", false).expect("store");
        let (committer, thread) = spawn_committer(tmp.store().clone(), "t".into()).expect("thread");
        let batcher = Rc::new(Batcher::new(tmp.store().clone(), committer, 1 << 20));
        run_local(async {
            let run = tokio::task::spawn_local({
                let b = batcher.clone();
                async move { b.run().await }
            });
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tickets = Vec::new();
            for i in 0..50u32 {
                let key = format!("k{i}");
                let t = batcher.stage(|st| put(st, key.as_bytes())).expect("stage");
                let (o, s) = (order.clone(), tmp.store().clone());
                t.on_resolve(move || {
                    // When a ticket reports, its record is readable: the ack point is the commit.
                    let there = s.get(Cf::Meta, key.as_bytes()).ok().flatten().is_some();
                    o.borrow_mut().push((i, there));
                });
                tickets.push(t);
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let last = tickets.last().cloned().expect("tickets");
            assert!(last.wait().await);
            let order = order.borrow();
            assert_eq!(order.len(), 50);
            assert!(
                order.windows(2).all(|w| w[0].0 < w[1].0),
                "out of order: {order:?}"
            );
            assert!(
                order.iter().all(|&(_, there)| there),
                "answered before durable"
            );
            batcher.close();
            run.await.expect("batcher loop");
        });
        thread.join().expect("committer");
    }

    #[test]
    fn a_failed_commit_answers_every_record_of_the_batch_as_not_stored() {
        let tmp = TempStore::open("commit-fail", false).expect("store");
        // A committer whose thread is gone: every send fails, as a dead or failing writer would.
        let (tx, rx) = channel::bounded::<Job>(COMMITTER_QUEUE);
        drop(rx);
        let batcher = Rc::new(Batcher::new(tmp.store().clone(), Committer { tx }, 1 << 20));
        run_local(async {
            let run = tokio::task::spawn_local({
                let b = batcher.clone();
                async move { b.run().await }
            });
            let a = batcher.stage(|st| put(st, b"a")).expect("stage");
            let b = batcher.stage(|st| put(st, b"b")).expect("stage");
            assert!(!a.wait().await);
            assert!(!b.wait().await);
            assert_eq!(a.outcome(), Some(false));
            assert!(
                batcher.commit(|st| put(st, b"c")).await.is_err(),
                "commit() reports the failure"
            );
            assert!(tmp.store().get(Cf::Meta, b"a").expect("get").is_none());
            batcher.close();
            run.await.expect("batcher loop");
        });
    }

    #[test]
    fn callbacks_run_once_even_if_the_ticket_is_dropped_unresolved() {
        let ran = Rc::new(Cell::new(0));
        let t = Ticket::default();
        let r = ran.clone();
        t.on_resolve(move || r.set(r.get() + 1));
        assert_eq!(ran.get(), 0);
        drop(t);
        assert_eq!(ran.get(), 1);
        let t = Ticket::default();
        t.resolve(true);
        let r = ran.clone();
        t.on_resolve(move || r.set(r.get() + 1));
        assert_eq!(ran.get(), 2, "a resolved ticket runs the callback at once");
        drop(t);
        assert_eq!(ran.get(), 2);
    }

    #[test]
    fn a_full_batch_holds_stagers_until_it_is_taken() {
        let tmp = TempStore::open("commit-full", false).expect("store");
        let (committer, thread) = spawn_committer(tmp.store().clone(), "t".into()).expect("thread");
        let batcher = Rc::new(Batcher::new(tmp.store().clone(), committer, 64));
        run_local(async {
            batcher
                .stage(|st| st.put(Cf::Meta, b"big", &[0u8; 128]))
                .expect("stage");
            assert!(batcher.is_full());
            let run = tokio::task::spawn_local({
                let b = batcher.clone();
                async move { b.run().await }
            });
            batcher.room().await;
            assert!(!batcher.is_full());
            batcher.flush().await;
            batcher.close();
            run.await.expect("batcher loop");
        });
        thread.join().expect("committer");
    }
}
