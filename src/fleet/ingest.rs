//! Storing what a registered generic device sends (telemetry, events), exactly once per msg_id.
//!
//! A record carries its msg_id and commits as one key (telemetry) or with its index entry
//! (events), and the device hears `ack` only once that batch is durable. A re-sent msg_id is
//! recognised in two places: while its first copy is still committing, by the session's in-flight
//! window (`generic::AckWindow`); after, by the session's window of the device's newest msg_ids
//! (`msg_window`), confirmed against the stored record. That is exact across reconnects because a
//! session's records are staged through its device `Claim`, which does not hand the device to a
//! newer session before they resolve; the newer session fills its window from the store.

use std::rc::Rc;

use crate::fleet::msg_window::{MsgWindow, RecordRef, Remember, fingerprint};
use crate::fleet::registry::Claim;
use crate::store::commit::{Batcher, Staging, Ticket};
use crate::store::{Store, StoreError};
use crate::time::now_us;

/// What became of a message.
pub enum Ingested {
    /// Stored before (a re-send after its ack was lost): ack it now, store nothing.
    Duplicate,
    /// Staged; answer once the ticket resolves.
    Staged(Rc<Ticket>),
}

/// Stages one record of the claim's device. `stage` writes the record with the id it is given and
/// the msg_id (JSON text) when there is one; `at` names where a record with that id is stored.
pub fn message(
    store: &Store,
    remember: Remember,
    batch: &Batcher,
    claim: &mut Claim,
    msg_id: Option<&str>,
    at: fn(u64) -> RecordRef,
    stage: impl FnOnce(&mut Staging<'_>, u64, Option<&str>) -> Result<(), StoreError>,
) -> Result<Ingested, StoreError> {
    let now = now_us();
    let remembered = match msg_id {
        Some(m) => {
            let dev = claim.device().id;
            let since = now.saturating_sub(remember.retention_us);
            let fp = fingerprint(m);
            let slot = claim.msg_window();
            if slot.is_none() {
                *slot = Some(Box::new(MsgWindow::fill(
                    store,
                    &dev,
                    remember.window,
                    since,
                )?));
            }
            let seen = match slot {
                Some(w) => w.stored(store, &dev, m, fp, since)?,
                None => false,
            };
            if seen || store.legacy_msg_id(&dev, m, since)? {
                metrics::counter!("fleetgate_duplicates_total").increment(1);
                return Ok(Ingested::Duplicate);
            }
            Some(fp)
        }
        None => None,
    };
    let id = store.ids.next(now);
    let ticket = claim.stage(batch, |st| stage(st, id, msg_id))?;
    if let (Some(fp), Some(w)) = (remembered, claim.msg_window().as_mut()) {
        w.push(fp, at(id));
    }
    Ok(Ingested::Staged(ticket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::links::SessionRef;
    use crate::fleet::registry::test_device;
    use crate::fleet::shard_stub::with_batcher;
    use crate::store::disk_guard::MinFree;
    use crate::store::records::stage_telemetry;
    use crate::store::temp::TempStore;
    use crate::store::{Cf, keys};
    use std::net::SocketAddr;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        4000,
    ));

    fn session(n: u64) -> SessionRef {
        SessionRef { shard: 0, conn: n }
    }

    /// Sends telemetry `msg_id` through `claim` and waits for its batch: `None` for a duplicate,
    /// else whether the commit succeeded.
    async fn send(
        store: &Store,
        remember: Remember,
        batcher: &Batcher,
        claim: &mut Claim,
        msg_id: &str,
    ) -> Option<bool> {
        let dev = claim.device().id;
        let ingested = message(
            store,
            remember,
            batcher,
            claim,
            Some(msg_id),
            RecordRef::Telemetry,
            |st, id, m| stage_telemetry(st, &dev, id, None, "{}", m),
        )
        .expect("stage");
        match ingested {
            Ingested::Duplicate => None,
            Ingested::Staged(t) => Some(t.wait().await),
        }
    }

    fn rows(store: &Store, dev: &uuid::Uuid) -> usize {
        let mut n = 0;
        store
            .scan_forward(
                Cf::Telemetry,
                &keys::device(dev),
                None,
                usize::MAX,
                |_, _| {
                    n += 1;
                    Ok(true)
                },
            )
            .expect("scan");
        n
    }

    /// The invariant where it lives: a msg_id acked before is a duplicate for the next session
    /// (whose window comes from the store), a msg_id whose commit failed is stored when re-sent,
    /// and a store written before msg_ids moved into the records is still honoured.
    #[test]
    fn a_msg_id_is_stored_once_across_sessions_and_again_after_a_failed_commit() {
        let tmp = TempStore::open("ingest", false).expect("store");
        let store = tmp.store().clone();
        let remember = Remember {
            window: 4,
            retention_us: 3_600_000_000,
        };
        let dev = test_device();
        with_batcher(&store, async |batcher| {
            let mut first = dev.claim(session(1), PEER).expect("slot");
            assert_eq!(
                send(&store, remember, batcher, &mut first, "\"a\"").await,
                Some(true)
            );
            assert_eq!(
                send(&store, remember, batcher, &mut first, "\"a\"").await,
                None
            );
            // `7` and `"7"` are different msg_ids.
            assert_eq!(
                send(&store, remember, batcher, &mut first, "7").await,
                Some(true)
            );
            assert_eq!(
                send(&store, remember, batcher, &mut first, "\"7\"").await,
                Some(true)
            );
            drop(first);

            // The device reconnects: the new session knows what the old one stored.
            let mut second = dev.claim(session(2), PEER).expect("slot");
            for m in ["\"a\"", "7", "\"7\""] {
                assert_eq!(
                    send(&store, remember, batcher, &mut second, m).await,
                    None,
                    "{m}"
                );
            }

            // A full disk refuses the batch: the device heard "not stored" and re-sends it.
            store
                .guard
                .set_min_free(MinFree::parse("5%").expect("parse"));
            store.guard.observe(0, 100);
            assert_eq!(
                send(&store, remember, batcher, &mut second, "\"b\"").await,
                Some(false)
            );
            store.guard.observe(100, 100);
            assert_eq!(
                send(&store, remember, batcher, &mut second, "\"b\"").await,
                Some(true)
            );
            assert_eq!(
                send(&store, remember, batcher, &mut second, "\"b\"").await,
                None
            );
            drop(second);
        });
        assert_eq!(rows(&store, &dev.id), 4, "a, 7, \"7\" and b, once each");
    }

    /// The window's bound, as documented: a msg_id older than the device's last `window` is no
    /// longer recognised; one within it is, also after the session's window was filled again.
    #[test]
    fn the_window_bounds_what_is_recognised() {
        let tmp = TempStore::open("ingest-window", false).expect("store");
        let store = tmp.store().clone();
        let remember = Remember {
            window: 2,
            retention_us: 3_600_000_000,
        };
        let dev = test_device();
        with_batcher(&store, async |batcher| {
            let mut c = dev.claim(session(1), PEER).expect("slot");
            for m in ["1", "2", "3"] {
                assert_eq!(send(&store, remember, batcher, &mut c, m).await, Some(true));
            }
            drop(c);
            let mut c = dev.claim(session(2), PEER).expect("slot");
            assert_eq!(send(&store, remember, batcher, &mut c, "3").await, None);
            assert_eq!(send(&store, remember, batcher, &mut c, "2").await, None);
            assert_eq!(
                send(&store, remember, batcher, &mut c, "1").await,
                Some(true)
            );
            drop(c);
        });
    }
}
