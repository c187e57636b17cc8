//! The commands a polling terminal (ZKTeco ADMS) was handed and has not answered yet. Such a
//! terminal holds no session: it takes commands in the answer to a poll and reports on them in a
//! later request. A command stays `sent` until that report; one whose report never comes (the
//! poll's answer was lost on the way, or the terminal restarted) is handed out again, and one
//! handed out `MAX_OFFERS` times without a report fails as timed out. So a command may run twice,
//! never silently not at all.

use std::sync::{Mutex, MutexGuard};

/// Commands a terminal may hold unanswered; it is handed nothing new beyond them.
pub const MAX_HANDED_OUT: usize = 16;
/// How often one command is handed out before it fails as timed out.
pub const MAX_OFFERS: u8 = 3;
/// How long an answer may take before the command is handed out again: six polls at the
/// terminal's `Delay` of 10 s. A terminal reports on a command in the request after it ran it.
pub const REOFFER_AFTER_MS: u64 = 60_000;

#[derive(Debug, Default)]
pub struct HandedOut(Mutex<Vec<Out>>);

#[derive(Debug, Clone, Copy)]
struct Out {
    seq: u64,
    at_ms: u64,
    offers: u8,
}

/// What becomes of a command whose answer is overdue.
#[derive(Debug, PartialEq, Eq)]
pub enum Overdue {
    /// Hand it out again.
    Again(u64),
    /// Handed out `MAX_OFFERS` times: it fails as timed out, and is forgotten here.
    GaveUp(u64),
}

impl HandedOut {
    fn lock(&self) -> MutexGuard<'_, Vec<Out>> {
        // Every update leaves the list consistent before anything can panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commands `sent` before a restart: handed out again at the first poll (at most the newest
    /// `MAX_HANDED_OUT`).
    pub fn loaded(seqs: impl IntoIterator<Item = u64>) -> HandedOut {
        let mut v: Vec<Out> = seqs
            .into_iter()
            .map(|seq| Out {
                seq,
                at_ms: 0,
                offers: 1,
            })
            .collect();
        let extra = v.len().saturating_sub(MAX_HANDED_OUT);
        v.drain(..extra);
        HandedOut(Mutex::new(v))
    }

    /// Whether the terminal may be handed another command.
    pub fn has_room(&self) -> bool {
        self.lock().len() < MAX_HANDED_OUT
    }

    /// `seq` was handed out at `now_ms`.
    pub fn add(&self, seq: u64, now_ms: u64) {
        let mut v = self.lock();
        if !v.iter().any(|o| o.seq == seq) {
            v.push(Out {
                seq,
                at_ms: now_ms,
                offers: 1,
            });
        }
    }

    /// The commands whose answer is overdue at `now_ms`, oldest first: each is counted as handed
    /// out again, or given up (and forgotten) once it has been handed out `MAX_OFFERS` times.
    pub fn overdue(&self, now_ms: u64) -> Vec<Overdue> {
        let mut v = self.lock();
        let mut out = Vec::new();
        v.retain_mut(|o| {
            if now_ms.saturating_sub(o.at_ms) < REOFFER_AFTER_MS {
                return true;
            }
            if o.offers >= MAX_OFFERS {
                out.push(Overdue::GaveUp(o.seq));
                return false;
            }
            o.offers += 1;
            o.at_ms = now_ms;
            out.push(Overdue::Again(o.seq));
            true
        });
        out
    }

    /// The terminal answered `seq`: forgotten here. Whether it was waiting.
    pub fn answered(&self, seq: u64) -> bool {
        let mut v = self.lock();
        let before = v.len();
        v.retain(|o| o.seq != seq);
        v.len() != before
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_command_is_handed_out_again_then_given_up() {
        let h = HandedOut::default();
        h.add(5, 1_000);
        h.add(5, 1_500);
        assert_eq!(
            h.len(),
            1,
            "handing out the same command twice holds it once"
        );
        assert!(h.overdue(1_000 + REOFFER_AFTER_MS - 1).is_empty());
        let t1 = 1_000 + REOFFER_AFTER_MS;
        assert_eq!(h.overdue(t1), [Overdue::Again(5)]);
        assert!(
            h.overdue(t1 + 1).is_empty(),
            "the clock restarts at each offer"
        );
        let t2 = t1 + REOFFER_AFTER_MS;
        assert_eq!(h.overdue(t2), [Overdue::Again(5)]);
        assert_eq!(h.overdue(t2 + REOFFER_AFTER_MS), [Overdue::GaveUp(5)]);
        assert!(h.is_empty());
    }

    #[test]
    fn an_answer_ends_the_wait_and_room_is_bounded() {
        let h = HandedOut::default();
        for seq in 1..=MAX_HANDED_OUT as u64 {
            assert!(h.has_room());
            h.add(seq, 0);
        }
        assert!(!h.has_room());
        assert!(h.answered(3));
        assert!(!h.answered(3), "a repeated answer finds nothing");
        assert!(h.has_room());
        assert!(!h.overdue(REOFFER_AFTER_MS).contains(&Overdue::Again(3)));
    }

    #[test]
    fn commands_sent_before_a_restart_are_due_at_once() {
        let h = HandedOut::loaded(1..=40);
        assert_eq!(h.len(), MAX_HANDED_OUT);
        let due = h.overdue(REOFFER_AFTER_MS);
        assert_eq!(
            due.first(),
            Some(&Overdue::Again(25)),
            "the newest are kept"
        );
        assert_eq!(due.len(), MAX_HANDED_OUT);
    }
}
