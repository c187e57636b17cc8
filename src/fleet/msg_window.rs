//! A session's memory of the msg_ids its device stored recently, so that telemetry and events are
//! de-duplicated without a store read and stored with one key each.
//!
//! A device re-sends a msg_id when it did not hear the ack: the frames in flight when its
//! connection dropped. Those are its newest records, so a window of the device's last msg_ids
//! (`--msg-id-window`, within `--msg-id-retention-hours`) answers every re-send a device makes
//! after a lost ack. The window holds a 64-bit fingerprint and the record's reference, not the
//! text: a fingerprint that matches is confirmed by reading that one record, so a collision costs
//! a read and never a lost record, and a record whose batch failed is not found and is stored
//! again. Reads happen only on a fingerprint match, which for a device that does not re-send is
//! never.
//!
//! The window lives in the session's `Claim` and starts empty. On the first msg_id of a session it
//! is filled from the device's newest rows, which carry their msg_id (`records::stage_telemetry`,
//! `records::stage_event`): that is where a reconnected or restarted device's window comes from.
//! A claim exists only after the previous session's records resolved (`registry::take_over`), so
//! the rows it reads are all there is.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use uuid::Uuid;

use crate::store::{Cf, Store, StoreError, keys, records};

/// The default of `--msg-id-window`: twice the default in-flight limit, so that everything a
/// session can have in flight when its connection drops, and acks lost with it, are remembered.
pub const DEFAULT_WINDOW: usize = 512;

/// What a session's window remembers: `--msg-id-window` msg_ids, for `--msg-id-retention-hours`.
#[derive(Clone, Copy, Debug)]
pub struct Remember {
    pub window: usize,
    pub retention_us: u64,
}

/// How many rows of each kind filling a window may read, per msg_id it holds: rows without a msg_id
/// (a device's connect and disconnect events) count too, so filling one costs a bounded read,
/// once per session that sends a msg_id.
const FILL_SCAN_FACTOR: usize = 2;

/// Where a record with a msg_id is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRef {
    /// `telemetry`: device ‖ id; the row carries the msg_id.
    Telemetry(u64),
    /// `events_by_device`: device ‖ id; the index entry's value is the msg_id.
    Event(u64),
}

impl RecordRef {
    fn id(self) -> u64 {
        match self {
            RecordRef::Telemetry(id) | RecordRef::Event(id) => id,
        }
    }
}

/// The fingerprint of a msg_id's JSON text (as the device sent it: `7` and `"7"` differ).
pub fn fingerprint(msg_id_json: &str) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all a window needs; a match is
    // always confirmed against the stored record.
    let mut h = std::hash::DefaultHasher::new();
    msg_id_json.hash(&mut h);
    h.finish()
}

/// The newest msg_ids of one device, oldest first, at most `cap`.
#[derive(Debug)]
pub struct MsgWindow {
    entries: VecDeque<(u64, RecordRef)>,
    cap: usize,
    /// msg_ids (JSON text) the device stored on another node of the cluster just before it moved
    /// here, as that node handed them over: no record here to confirm them against, so they are
    /// kept whole and matched exactly. At most `cap`.
    elsewhere: std::collections::HashSet<String>,
}

impl MsgWindow {
    pub fn new(cap: usize) -> MsgWindow {
        MsgWindow {
            entries: VecDeque::new(),
            cap,
            elsewhere: Default::default(),
        }
    }

    /// Adds the msg_ids another node handed over with the device (the newest `cap` of them).
    pub fn with_elsewhere(mut self, ids: Vec<String>) -> MsgWindow {
        let skip = ids.len().saturating_sub(self.cap);
        self.elsewhere.extend(ids.into_iter().skip(skip));
        self
    }

    /// Remembers a record just staged; the oldest entry goes when the window is full.
    pub fn push(&mut self, fp: u64, at: RecordRef) {
        if self.cap == 0 {
            return;
        }
        if self.entries.len() == self.cap {
            self.entries.pop_front();
        }
        self.entries.push_back((fp, at));
    }

    /// The records whose msg_id has fingerprint `fp`, newest first.
    pub fn candidates(&self, fp: u64) -> impl Iterator<Item = RecordRef> + '_ {
        self.entries
            .iter()
            .rev()
            .filter(move |(f, _)| *f == fp)
            .map(|(_, r)| *r)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The window of `dev` as its newest stored rows give it: up to `cap` msg_ids of records with
    /// ids from `since` on, telemetry and events together, reading at most `FILL_SCAN_FACTOR`
    /// times `cap` rows of each.
    pub fn fill(
        store: &Store,
        dev: &Uuid,
        cap: usize,
        since: u64,
    ) -> Result<MsgWindow, StoreError> {
        let mut w = MsgWindow::new(cap);
        for (m, at) in Self::newest(store, dev, cap, since)? {
            w.push(fingerprint(&m), at);
        }
        Ok(w)
    }

    /// The msg_ids (JSON text) of `dev`'s newest records, oldest first, as `fill` finds them: what
    /// a node hands over with a device that moves to another node.
    pub fn recent(
        store: &Store,
        dev: &Uuid,
        cap: usize,
        since: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Self::newest(store, dev, cap, since)?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    fn newest(
        store: &Store,
        dev: &Uuid,
        cap: usize,
        since: u64,
    ) -> Result<Vec<(String, RecordRef)>, StoreError> {
        let mut found: Vec<(String, RecordRef)> = Vec::new();
        let prefix = keys::device(dev);
        let floor = keys::telemetry(dev, since);
        let budget = cap.saturating_mul(FILL_SCAN_FACTOR);
        for cf in [Cf::Telemetry, Cf::EventsByDevice] {
            store.scan_reverse_above(cf, &prefix, None, Some(&floor), cap, budget, |k, v| {
                let Some(id) = keys::suffix_u64(k) else {
                    return Ok(false);
                };
                let (msg_id, at) = match cf {
                    Cf::Telemetry => (records::telemetry_msg_id(v), RecordRef::Telemetry(id)),
                    _ => (records::event_msg_id(v), RecordRef::Event(id)),
                };
                let Some(m) = msg_id.and_then(|m| std::str::from_utf8(m).ok()) else {
                    return Ok(false);
                };
                found.push((m.to_string(), at));
                Ok(true)
            })?;
        }
        found.sort_by_key(|(_, r)| r.id());
        let skip = found.len().saturating_sub(cap);
        Ok(found.into_iter().skip(skip).collect())
    }

    /// Whether `msg_id` (JSON text, fingerprint `fp`) is stored in one of the window's records
    /// with an id from `since` on. Reads one record per fingerprint match.
    pub fn stored(
        &self,
        store: &Store,
        dev: &Uuid,
        msg_id: &str,
        fp: u64,
        since: u64,
    ) -> Result<bool, StoreError> {
        if self.elsewhere.contains(msg_id) {
            return Ok(true);
        }
        for at in self.candidates(fp).filter(|r| r.id() >= since) {
            let same = match at {
                RecordRef::Telemetry(id) => store
                    .get(Cf::Telemetry, &keys::telemetry(dev, id))?
                    .is_some_and(|v| records::telemetry_msg_id(&v) == Some(msg_id.as_bytes())),
                RecordRef::Event(id) => store
                    .get(Cf::EventsByDevice, &keys::event_by_device(dev, id))?
                    .is_some_and(|v| records::event_msg_id(&v) == Some(msg_id.as_bytes())),
            };
            if same {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::shard_stub::with_batcher;
    use crate::store::commit::Staging;
    use crate::store::records::{Source, stage_event, stage_telemetry};
    use crate::store::temp::TempStore;

    /// Stages `f` in a shard's batcher and waits for its commit, as a session does.
    fn write(tmp: &TempStore, f: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>) {
        with_batcher(tmp.store(), async |batcher| {
            let ticket = batcher.stage(f).expect("stage");
            assert!(ticket.wait().await, "committed");
        });
    }

    #[test]
    fn the_oldest_entry_leaves_a_full_window() {
        let mut w = MsgWindow::new(2);
        w.push(1, RecordRef::Telemetry(10));
        w.push(2, RecordRef::Telemetry(11));
        w.push(1, RecordRef::Event(12));
        assert_eq!(w.len(), 2);
        assert_eq!(w.candidates(1).collect::<Vec<_>>(), [RecordRef::Event(12)]);
        assert_eq!(w.candidates(3).count(), 0);
        let mut none = MsgWindow::new(0);
        none.push(1, RecordRef::Telemetry(1));
        assert!(none.is_empty());
    }

    #[test]
    fn a_match_is_confirmed_against_the_stored_record() {
        let tmp = TempStore::open("msg-window", false).expect("store");
        let dev = Uuid::from_u128(7);
        write(&tmp, |st| {
            stage_telemetry(st, &dev, 100, None, "{}", Some("\"a\""))
        });
        let store = tmp.store();
        let mut w = MsgWindow::new(8);
        // Two msg_ids given the same fingerprint: only the stored one's text is a repeat.
        w.push(42, RecordRef::Telemetry(100));
        assert!(w.stored(store, &dev, "\"a\"", 42, 0).expect("read"));
        assert!(!w.stored(store, &dev, "\"b\"", 42, 0).expect("read"));
        // A record whose batch never committed is not there: the msg_id is new.
        w.push(43, RecordRef::Telemetry(101));
        assert!(!w.stored(store, &dev, "\"c\"", 43, 0).expect("read"));
        // Older than the retention: no longer a repeat.
        assert!(!w.stored(store, &dev, "\"a\"", 42, 101).expect("read"));
    }

    /// The hand-over between nodes: what one node gives (`recent`, its newest msg_ids) the next
    /// node's window holds as stored, matched by its exact text, though no record of it is here.
    #[test]
    fn msg_ids_handed_over_from_another_node_count_as_stored() {
        let tmp = TempStore::open("msg-window-handover", false).expect("store");
        let dev = Uuid::from_u128(7);
        write(&tmp, |st| {
            for id in 1..=4u64 {
                stage_telemetry(st, &dev, id * 10, None, "{}", Some(&format!("\"t{id}\"")))?;
            }
            Ok(())
        });
        let handed = MsgWindow::recent(tmp.store(), &dev, 3, 0).expect("recent");
        assert_eq!(
            handed,
            ["\"t2\"", "\"t3\"", "\"t4\""],
            "the newest, oldest first"
        );
        let elsewhere = TempStore::open("msg-window-handover-2", false).expect("store");
        let w = MsgWindow::new(2).with_elsewhere(handed);
        let store = elsewhere.store();
        assert!(
            w.stored(store, &dev, "\"t4\"", fingerprint("\"t4\""), 0)
                .expect("read")
        );
        assert!(
            w.stored(store, &dev, "\"t3\"", fingerprint("\"t3\""), 0)
                .expect("read")
        );
        assert!(
            !w.stored(store, &dev, "\"t2\"", fingerprint("\"t2\""), 0)
                .expect("read"),
            "beyond the window's size"
        );
        assert!(
            !w.stored(store, &dev, "\"t5\"", fingerprint("\"t5\""), 0)
                .expect("read")
        );
    }

    #[test]
    fn a_window_is_filled_from_the_newest_rows_of_both_kinds() {
        let tmp = TempStore::open("msg-window", false).expect("store");
        let dev = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        write(&tmp, |st| {
            for id in 1..=5u64 {
                stage_telemetry(st, &dev, id * 10, None, "{}", Some(&format!("\"t{id}\"")))?;
                stage_event(
                    st,
                    id * 10 + 1,
                    Some(&dev),
                    "e",
                    Source::Device,
                    "{}",
                    Some(&id.to_string()),
                )?;
            }
            // Rows without a msg_id, and another device's, are not in the window.
            stage_telemetry(st, &dev, 60, None, "{}", None)?;
            stage_telemetry(st, &other, 70, None, "{}", Some("\"t5\""))
        });
        let store = tmp.store();
        let w = MsgWindow::fill(store, &dev, 4, 0).expect("fill");
        assert_eq!(w.len(), 4);
        // The newest four: t4 (40), 4 (41), t5 (50), 5 (51).
        for (m, yes) in [
            ("\"t5\"", true),
            ("5", true),
            ("\"t4\"", true),
            ("4", true),
            ("\"t3\"", false),
            ("3", false),
        ] {
            assert_eq!(
                w.stored(store, &dev, m, fingerprint(m), 0).expect("read"),
                yes,
                "{m}"
            );
        }
        // From a time on: only records since then.
        let w = MsgWindow::fill(store, &dev, 100, 45).expect("fill");
        assert_eq!(w.len(), 2);
    }
}
