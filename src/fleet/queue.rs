//! A device's command queue position, in memory: sequence numbers handed out, which of them have
//! resolved (committed or failed), how far delivery got, and how many commands wait.
//!
//! Sequence numbers are assigned when a command is enqueued, but the enqueues of one device may
//! run on several shards, whose batches commit independently — seq 6 can be durable before seq 5.
//! Delivery therefore only looks as far as the *visible* watermark (`visible_through`): the highest
//! seq at or below which every seq has resolved. A later seq waits until the earlier ones resolve,
//! so devices see their commands in the order they were assigned, and delivery never steps over
//! one still committing.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

/// A device's queue position: sequence numbers handed out, which of them have resolved, how far
/// delivery got, and how many commands wait. One short mutex per device; taken on enqueue and
/// delivery, never per telemetry message.
#[derive(Debug, Default)]
pub struct CommandQueue(Mutex<QueueState>);

#[derive(Debug, Default)]
struct QueueState {
    /// The last sequence number handed out.
    last_seq: u64,
    /// Every seq at or below this has resolved (committed or failed).
    resolved_through: u64,
    /// Resolved seqs above `resolved_through` (a later enqueue that committed first).
    resolved_ahead: BTreeSet<u64>,
    /// Every seq at or below this has left the queue (delivered, expired or answered), so a
    /// delivery scan starts after it instead of at the device's first command ever.
    delivered_through: u64,
    /// Commands reserved or queued and not yet delivered; bounded by `--command-queue-limit`.
    queued: u32,
}

impl CommandQueue {
    /// The state after a restart: every stored command has resolved.
    pub fn loaded(last_seq: u64, delivered_through: u64, queued: u32) -> CommandQueue {
        CommandQueue(Mutex::new(QueueState {
            last_seq,
            resolved_through: last_seq,
            resolved_ahead: BTreeSet::new(),
            delivered_through,
            queued,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every update below leaves the state consistent before it can panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in the queue and the next sequence number; `Err(limit)` when `limit`
    /// commands already wait.
    pub fn reserve(&self, limit: u32) -> Result<u64, u32> {
        let mut s = self.lock();
        if s.queued >= limit {
            return Err(limit);
        }
        s.queued += 1;
        s.last_seq += 1;
        Ok(s.last_seq)
    }

    /// The commit of `seq` came back (`committed`, or it failed and the place is given back).
    /// Returns whether the visible watermark moved, i.e. whether the device's session has new
    /// commands it may deliver.
    pub fn resolve(&self, seq: u64, committed: bool) -> bool {
        let mut s = self.lock();
        if !committed {
            s.queued = s.queued.saturating_sub(1);
        }
        if seq <= s.resolved_through {
            return false;
        }
        s.resolved_ahead.insert(seq);
        let before = s.resolved_through;
        loop {
            let next = s.resolved_through + 1;
            if !s.resolved_ahead.remove(&next) {
                break;
            }
            s.resolved_through = next;
        }
        s.resolved_through != before
    }

    /// Delivery may go up to this seq: all at or below it are durable (or failed and absent).
    pub fn visible_through(&self) -> u64 {
        self.lock().resolved_through
    }

    pub fn delivered_through(&self) -> u64 {
        self.lock().delivered_through
    }

    /// Delivery has passed every seq at or below `through`.
    pub fn delivered(&self, through: u64) {
        let mut s = self.lock();
        s.delivered_through = s.delivered_through.max(through);
    }

    /// One queued command left the queue (sent or expired).
    pub fn left(&self) {
        let mut s = self.lock();
        s.queued = s.queued.saturating_sub(1);
    }

    /// A command taken for delivery that the device could not start: it is queued again, first.
    pub fn put_back(&self, seq: u64) {
        let mut s = self.lock();
        s.queued += 1;
        s.delivered_through = s.delivered_through.min(seq.saturating_sub(1));
    }

    /// Commands waiting for delivery.
    pub fn queued(&self) -> u32 {
        self.lock().queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn seqs_become_visible_in_assignment_order() {
        let q = CommandQueue::default();
        let (a, b, c) = (
            q.reserve(10).unwrap(),
            q.reserve(10).unwrap(),
            q.reserve(10).unwrap(),
        );
        assert_eq!((a, b, c), (1, 2, 3));
        // 3 and 2 commit first (other shards): nothing is visible past the unresolved 1.
        assert!(!q.resolve(c, true));
        assert!(!q.resolve(b, true));
        assert_eq!(q.visible_through(), 0);
        assert!(q.resolve(a, true));
        assert_eq!(q.visible_through(), 3);
        assert_eq!(q.queued(), 3);
    }

    #[test]
    fn a_failed_commit_gives_its_place_back_and_does_not_block_later_seqs() {
        let q = CommandQueue::default();
        let a = q.reserve(2).unwrap();
        let b = q.reserve(2).unwrap();
        assert_eq!(q.reserve(2), Err(2), "the bound holds while both commit");
        assert!(!q.resolve(b, true));
        assert!(q.resolve(a, false));
        assert_eq!(q.visible_through(), 2);
        assert_eq!(q.queued(), 1);
        assert_eq!(q.reserve(2), Ok(3));
    }

    #[test]
    fn delivery_positions_move_forward_and_put_back_rewinds() {
        let q = CommandQueue::loaded(5, 2, 3);
        assert_eq!(q.visible_through(), 5);
        assert_eq!(q.delivered_through(), 2);
        q.delivered(4);
        q.delivered(3);
        assert_eq!(
            q.delivered_through(),
            4,
            "delivery never moves back by itself"
        );
        q.left();
        q.put_back(4);
        assert_eq!(q.delivered_through(), 3);
        assert_eq!(q.queued(), 3);
        assert_eq!(q.reserve(10), Ok(6), "seqs continue after the stored ones");
    }

    /// Shards race: every thread reserves and resolves in its own order. At every moment the
    /// visible watermark must stay below every seq that has not resolved yet.
    #[test]
    fn the_watermark_never_passes_an_unresolved_seq_under_a_race() {
        let q = Arc::new(CommandQueue::default());
        let unresolved = Arc::new(Mutex::new(BTreeSet::new()));
        let bad = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (q, unresolved, bad) = (q.clone(), unresolved.clone(), bad.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..2_000u64 {
                        {
                            let mut u = unresolved.lock().unwrap();
                            let seq = q.reserve(u32::MAX).unwrap();
                            u.insert(seq);
                            mine.push(seq);
                        }
                        if (i + t) % 3 == 0 {
                            // Resolve out of order: the newest first.
                            while let Some(seq) = mine.pop() {
                                let mut u = unresolved.lock().unwrap();
                                u.remove(&seq);
                                q.resolve(seq, seq % 7 != 0);
                                let visible = q.visible_through();
                                if u.first().is_some_and(|&low| visible >= low) {
                                    bad.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    for seq in mine.into_iter().rev() {
                        unresolved.lock().unwrap().remove(&seq);
                        q.resolve(seq, true);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            !bad.load(Ordering::Relaxed),
            "watermark passed an unresolved seq"
        );
        assert_eq!(q.visible_through(), 8_000, "everything resolved in the end");
    }
}
