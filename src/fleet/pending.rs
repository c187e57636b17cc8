//! Serials that tried to connect but match no device, kept until an admin approves (creating the
//! device) or dismisses them. HTTP devices and the biometric WebSocket protocols share this list.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::store::commit::{Batcher, Ticket};
use crate::store::records::{self, Protocol};
use crate::store::{Cf, Store, StoreError};

/// Serials remembered at once. Past this the longest-silent one is forgotten (a scanner sending
/// random serials must not grow memory or the store without bound).
pub const MAX_PENDING: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingDevice {
    pub serial: String,
    pub protocol: Protocol,
    pub first_seen: u64,
    pub last_seen: u64,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub remote: String,
    pub requests: u64,
}

#[derive(Default)]
pub struct Pending(Mutex<Entries>);

/// A place in the list, between pages: the (last activity, serial) of a page's last entry.
pub type Position = (u64, String);

/// The entries, with an index by last activity so that making room takes the longest-silent one
/// without scanning them all (the lock is shared by every shard).
#[derive(Default)]
struct Entries {
    map: HashMap<String, PendingDevice>,
    by_age: BTreeSet<(u64, String)>,
}

impl Entries {
    fn insert(&mut self, p: PendingDevice) {
        if let Some(old) = self.map.remove(&p.serial) {
            self.by_age.remove(&(old.last_seen, old.serial));
        }
        self.by_age.insert((p.last_seen, p.serial.clone()));
        self.map.insert(p.serial.clone(), p);
    }

    fn remove(&mut self, serial: &str) -> Option<PendingDevice> {
        let p = self.map.remove(serial)?;
        self.by_age.remove(&(p.last_seen, p.serial.clone()));
        Some(p)
    }

    /// Forgets the longest-silent entry; returns its serial.
    fn evict_oldest(&mut self) -> Option<String> {
        let (_, serial) = self.by_age.pop_first()?;
        self.map.remove(&serial);
        Some(serial)
    }
}

impl Pending {
    /// The entries on disk, but for serials that already belong to a device (`registered`): an
    /// entry staged by a request that raced the approval may have committed after it.
    pub fn load(store: &Store, registered: impl Fn(&str) -> bool) -> Result<Pending, StoreError> {
        let mut entries = Entries::default();
        store.scan_forward(Cf::Pending, &[], None, MAX_PENDING, |_, v| {
            let p: PendingDevice = records::decode(v)?;
            if !registered(&p.serial) {
                entries.insert(p);
            }
            Ok(true)
        })?;
        Ok(Pending(Mutex::new(entries)))
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Each update keeps map and index in step before anything can panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a request from an unknown serial and stages the entry; the caller waits for the
    /// returned ticket before it answers. Shards commit independently, so an entry staged and not
    /// waited for could commit after an approval or dismissal that came later (on another shard)
    /// and bring the serial back as pending at the next start.
    #[allow(clippy::too_many_arguments)]
    pub fn seen(
        &self,
        batch: &Batcher,
        serial: &str,
        protocol: Protocol,
        model: Option<&str>,
        firmware: Option<&str>,
        remote: &str,
        now: u64,
    ) -> Option<Rc<Ticket>> {
        let (entry, evicted, len) = {
            let mut entries = self.lock();
            let mut evicted = None;
            if !entries.map.contains_key(serial) && entries.map.len() >= MAX_PENDING {
                evicted = entries.evict_oldest();
            }
            let mut e = entries.remove(serial).unwrap_or_else(|| PendingDevice {
                serial: serial.to_string(),
                protocol,
                first_seen: now,
                last_seen: now,
                model: None,
                firmware: None,
                remote: remote.to_string(),
                requests: 0,
            });
            e.last_seen = now;
            e.requests += 1;
            e.remote = remote.to_string();
            if let Some(m) = model {
                e.model = Some(m.chars().take(128).collect());
            }
            if let Some(f) = firmware {
                e.firmware = Some(f.chars().take(128).collect());
            }
            entries.insert(e.clone());
            (e, evicted, entries.map.len())
        };
        let staged = batch.stage(|st| {
            if let Some(old) = &evicted {
                st.delete(Cf::Pending, old.as_bytes())?;
            }
            st.put(
                Cf::Pending,
                entry.serial.as_bytes(),
                &records::encode(&entry)?,
            )
        });
        metrics::gauge!("fleetgate_pending_devices").set(len as f64);
        staged
            .inspect_err(|e| tracing::warn!(error = %e, "recording a pending device failed"))
            .ok()
    }

    pub fn get(&self, serial: &str) -> Option<PendingDevice> {
        self.lock().map.get(serial).cloned()
    }

    /// Puts back an entry taken for an approval whose commit failed.
    pub fn restore(&self, p: PendingDevice) {
        self.lock().insert(p);
    }

    pub fn remove(&self, serial: &str) -> Option<PendingDevice> {
        self.lock().remove(serial)
    }

    /// A page of the list: up to `limit` entries after `after` (from the start when None), most
    /// recent activity first (ties by serial, descending), and the position to continue from when
    /// more follow. A walk of the activity index under the lock, stopping at the page's end: no
    /// copy of the whole list. An entry that is active again while a client pages moves to the
    /// front, so that client may not see it until it starts over.
    pub fn page(
        &self,
        after: Option<&Position>,
        limit: usize,
    ) -> (Vec<PendingDevice>, Option<Position>) {
        let entries = self.lock();
        let upper = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items = Vec::with_capacity(limit.min(entries.map.len()));
        let mut more = false;
        for (_, serial) in entries.by_age.range((Bound::Unbounded, upper)).rev() {
            if items.len() == limit {
                more = true;
                break;
            }
            if let Some(p) = entries.map.get(serial) {
                items.push(p.clone());
            }
        }
        let next = more
            .then(|| items.last().map(|p| (p.last_seen, p.serial.clone())))
            .flatten();
        (items, next)
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::shard_stub::with_batcher;
    use crate::store::temp::TempStore;

    /// `seen` on a shard's batcher, waiting as `first_contact` does.
    fn seen_and_wait(tmp: &TempStore, pending: &Pending, serial: &str) {
        with_batcher(tmp.store(), async |batcher| {
            let ticket = pending
                .seen(
                    batcher,
                    serial,
                    Protocol::Http,
                    Some("m"),
                    None,
                    "127.0.0.1:9",
                    5,
                )
                .expect("staged");
            assert!(ticket.wait().await, "committed");
        });
    }

    #[test]
    fn an_entry_is_on_disk_once_its_ticket_resolves_and_a_registered_serial_is_not_loaded() {
        let tmp = TempStore::open("pending-load", false).expect("store");
        let pending = Pending::load(tmp.store(), |_| false).expect("load");
        seen_and_wait(&tmp, &pending, "SN-KEPT");
        seen_and_wait(&tmp, &pending, "SN-APPROVED");
        // The approval's delete is lost to a put that committed after it: the registry wins.
        let loaded = Pending::load(tmp.store(), |sn| sn == "SN-APPROVED").expect("load");
        assert!(
            loaded.get("SN-KEPT").is_some(),
            "a waited-for entry is on disk"
        );
        assert!(
            loaded.get("SN-APPROVED").is_none(),
            "a device's serial is not pending"
        );
        assert_eq!(loaded.len(), 1);
    }

    fn entry(serial: &str, last_seen: u64) -> PendingDevice {
        PendingDevice {
            serial: serial.into(),
            protocol: Protocol::Http,
            first_seen: last_seen,
            last_seen,
            model: None,
            firmware: None,
            remote: "127.0.0.1:1".into(),
            requests: 1,
        }
    }

    fn pending(entries: &[(&str, u64)]) -> Pending {
        let mut e = Entries::default();
        for (serial, last_seen) in entries {
            e.insert(entry(serial, *last_seen));
        }
        Pending(Mutex::new(e))
    }

    fn serials(items: &[PendingDevice]) -> Vec<&str> {
        items.iter().map(|p| p.serial.as_str()).collect()
    }

    #[test]
    fn pages_walk_newest_first_and_end_without_a_position() {
        let p = pending(&[("a", 10), ("b", 30), ("c", 20), ("d", 30), ("e", 5)]);
        let (items, next) = p.page(None, 2);
        // Ties by serial, descending: the walk is one reverse range of the activity index.
        assert_eq!(serials(&items), ["d", "b"]);
        assert_eq!(next, Some((30, "b".to_string())));
        let (items, next) = p.page(next.as_ref(), 2);
        assert_eq!(serials(&items), ["c", "a"]);
        let (items, next) = p.page(next.as_ref(), 2);
        assert_eq!(serials(&items), ["e"]);
        assert_eq!(next, None, "the last page says so");
        // A page that exactly ends the list has no next position either.
        let (items, next) = p.page(None, 5);
        assert_eq!(items.len(), 5);
        assert_eq!(next, None);
        // A position that names no entry still places the walk.
        let (items, _) = p.page(Some(&(25, "zzz".to_string())), 10);
        assert_eq!(serials(&items), ["c", "a", "e"]);
        assert!(pending(&[]).page(None, 10).0.is_empty());
    }

    #[test]
    fn an_entry_active_again_moves_to_the_front_without_repeating_on_later_pages() {
        let p = pending(&[("a", 10), ("b", 20), ("c", 30)]);
        let (items, next) = p.page(None, 1);
        assert_eq!(serials(&items), ["c"]);
        // "c" is seen again: it stays before the position, so the next pages do not repeat it.
        p.lock().insert(entry("c", 40));
        let (items, next) = p.page(next.as_ref(), 5);
        assert_eq!(serials(&items), ["b", "a"]);
        assert_eq!(next, None);
    }

    #[test]
    fn eviction_takes_the_longest_silent_entry_and_the_index_follows_updates() {
        let mut e = Entries::default();
        e.insert(entry("a", 10));
        e.insert(entry("b", 5));
        e.insert(entry("c", 20));
        // "b" speaks again: it is no longer the oldest.
        e.insert(entry("b", 30));
        assert_eq!(e.evict_oldest().as_deref(), Some("a"));
        assert_eq!(e.evict_oldest().as_deref(), Some("c"));
        assert_eq!(e.map.len(), 1);
        assert_eq!(e.by_age.len(), 1);
        assert!(e.remove("b").is_some());
        assert!(e.by_age.is_empty());
        assert_eq!(e.evict_oldest(), None);
    }
}
