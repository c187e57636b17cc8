//! The generic protocol's msg_id window: the msg_ids a session has staged and not yet answered,
//! each with the batch that holds it. Sans-IO and generic over the batch's handle, so the rules
//! that make acks exact are tested without a store or a socket.
//!
//! Rules:
//! * Answers to staged messages go out in the order they arrived (a device may match acks by
//!   position).
//! * A msg_id repeated while its first copy is still committing is not staged again: it is
//!   answered by the first copy's batch. If that batch fails, the repeat is "not stored" too —
//!   answering it by a newer batch would ack a record that does not exist.
//! * An entry is answered only once its batch has an outcome; the front blocks those behind it.

use std::collections::{HashMap, VecDeque};

/// `T` is the handle of a batch (cloned per entry; shared by the records of one batch).
///
/// An empty window holds nothing but a null pointer: it is part of every session's state, most
/// sessions are idle most of the time, and an idle session must cost as little as it can
/// (ARCHITECTURE.md: "A held session costs its state"). The entries live in a box made on the
/// first staged msg_id and freed when the last is answered.
pub struct AckWindow<T> {
    open: Option<Box<Entries<T>>>,
}

struct Entries<T> {
    queue: VecDeque<(T, String)>,
    /// The msg_ids in `queue`, each with the batch holding its first copy.
    first: HashMap<String, T>,
}

impl<T> Default for AckWindow<T> {
    fn default() -> Self {
        AckWindow { open: None }
    }
}

/// What to tell the device about one msg_id.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ack(String),
    NotStored(String),
}

impl<T: Clone> AckWindow<T> {
    /// If `msg_id`'s first copy is still in the window, queues another answer for it behind that
    /// copy's batch and returns true: the caller must not stage it again.
    pub fn repeat(&mut self, msg_id: &str) -> bool {
        let Some(e) = self.open.as_deref_mut() else {
            return false;
        };
        match e.first.get(msg_id) {
            Some(batch) => {
                let batch = batch.clone();
                e.queue.push_back((batch, msg_id.to_string()));
                true
            }
            None => false,
        }
    }

    /// A msg_id staged in `batch`.
    pub fn staged(&mut self, msg_id: String, batch: T) {
        let e = self.open.get_or_insert_with(|| {
            Box::new(Entries {
                queue: VecDeque::new(),
                first: HashMap::new(),
            })
        });
        e.first.insert(msg_id.clone(), batch.clone());
        e.queue.push_back((batch, msg_id));
    }

    /// Answers every entry at the front whose batch has an outcome (`outcome`: Some(committed)),
    /// in order, stopping at the first still pending.
    pub fn drain(&mut self, outcome: impl Fn(&T) -> Option<bool>, mut answer: impl FnMut(Answer)) {
        let Some(e) = self.open.as_deref_mut() else {
            return;
        };
        while let Some(ok) = e.queue.front().and_then(|(t, _)| outcome(t)) {
            let Some((_, m)) = e.queue.pop_front() else {
                break;
            };
            // A repeat leaves `first` pointing at the batch it shares: removing the msg_id once
            // its first answer goes is right either way, as both answer from that batch.
            e.first.remove(&m);
            answer(if ok {
                Answer::Ack(m)
            } else {
                Answer::NotStored(m)
            });
        }
        if e.queue.is_empty() {
            self.open = None;
        }
    }

    /// Entries not yet answered (the session stops reading past its in-flight limit).
    pub fn len(&self) -> usize {
        self.open.as_ref().map_or(0, |e| e.queue.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch the oldest unanswered entry waits for.
    pub fn front(&self) -> Option<&T> {
        self.open.as_ref()?.queue.front().map(|(t, _)| t)
    }

    /// The batch the newest entry waits for: once it resolves, every entry can be answered.
    pub fn back(&self) -> Option<&T> {
        self.open.as_ref()?.queue.back().map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A batch: its outcome, set when it "commits".
    type Batch = Rc<Cell<Option<bool>>>;

    fn batch() -> Batch {
        Rc::new(Cell::new(None))
    }

    fn drain(w: &mut AckWindow<Batch>) -> Vec<Answer> {
        let mut out = Vec::new();
        w.drain(|b| b.get(), |a| out.push(a));
        out
    }

    #[test]
    fn answers_wait_for_the_commit_and_keep_arrival_order() {
        let mut w = AckWindow::default();
        let (b1, b2) = (batch(), batch());
        w.staged("\"a\"".into(), b1.clone());
        w.staged("\"b\"".into(), b1.clone());
        w.staged("\"c\"".into(), b2.clone());
        assert!(
            drain(&mut w).is_empty(),
            "nothing is acked before its commit"
        );
        b2.set(Some(true));
        assert!(
            drain(&mut w).is_empty(),
            "a later batch does not overtake an earlier one"
        );
        b1.set(Some(true));
        assert_eq!(
            drain(&mut w),
            vec![
                Answer::Ack("\"a\"".into()),
                Answer::Ack("\"b\"".into()),
                Answer::Ack("\"c\"".into())
            ]
        );
        assert!(w.is_empty());
        assert!(
            w.open.is_none(),
            "an answered-out window gives its memory back"
        );
    }

    #[test]
    fn a_repeat_in_flight_shares_its_first_copys_fate() {
        let mut w = AckWindow::default();
        let (b1, b2) = (batch(), batch());
        w.staged("\"a\"".into(), b1.clone());
        assert!(!w.repeat("\"x\""), "unknown msg_ids are staged");
        w.staged("\"x\"".into(), b2.clone());
        assert!(w.repeat("\"a\""), "the repeat is not staged again");
        b1.set(Some(false));
        b2.set(Some(true));
        assert_eq!(
            drain(&mut w),
            vec![
                Answer::NotStored("\"a\"".into()),
                Answer::Ack("\"x\"".into()),
                Answer::NotStored("\"a\"".into()),
            ],
            "the repeat is not acked by the newer batch that does not hold it"
        );
        assert!(!w.repeat("\"a\""), "answered msg_ids leave the window");
    }

    #[test]
    fn front_and_back_name_the_batches_to_wait_for() {
        let mut w = AckWindow::default();
        let (b1, b2) = (batch(), batch());
        assert!(w.front().is_none() && w.back().is_none());
        w.staged("1".into(), b1.clone());
        w.staged("2".into(), b2.clone());
        assert!(Rc::ptr_eq(w.front().unwrap(), &b1));
        assert!(Rc::ptr_eq(w.back().unwrap(), &b2));
        assert_eq!(w.len(), 2);
    }
}
