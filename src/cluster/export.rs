//! The export: every committed telemetry record, event, attendance punch and command result,
//! published from the node's outbox (`fleet::webhooks`, the `webhook_outbox` column, where each
//! is staged in the batch of its record) to the JetStream stream `FLEETGATE_RECORDS`, subject
//! `fleetgate.records.<kind>.<device_id>`, `Nats-Msg-Id` the record's identity (a msg_id or a
//! punch's) or `<node>-<outbox id>`.
//!
//! At least once: the cursor (the last outbox id published) is written only after JetStream has
//! acknowledged every message up to it, so a crash or a lost connection re-publishes from the
//! cursor, and JetStream's duplicate window drops what it already holds. In order per device:
//! one publisher per node reads the outbox in id order, below `Webhooks::visible_below` (never
//! past a batch still in flight), and has at most one record of a device in flight (`window`):
//! a CI run caught a device's records landing out of order when NATS died under a window holding
//! several of them. It never blocks an ack: records are acknowledged at their commit, and the
//! publisher only reads what has committed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::fleet::state::Fleet;
use crate::fleet::webhooks::{self, Export, Message};
use crate::shard::local::Shared;
use crate::store::commit::write_now;
use crate::store::{Cf, Store, StoreError};

pub const STREAM: &str = "FLEETGATE_RECORDS";
pub const SUBJECTS: &str = "fleetgate.records.>";
/// How long JetStream remembers a message id: a re-publish within it is dropped.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Messages published before their acknowledgements are awaited.
const WINDOW: usize = 512;
/// How often an idle publisher looks for new records: the export's latency when quiet.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// The wait after a failure (NATS away, the stream missing) before trying again.
const RETRY: Duration = Duration::from_millis(500);
/// The key of the export's cursor in the webhooks column.
const CURSOR_KEY: &[u8] = b"export-cursor";

/// Reads (or, on a first start in cluster mode, sets at the outbox's present) the export's cursor,
/// and turns the export on with what waits after it.
pub fn prepare(fleet: &Fleet, max_lag: u64) -> Result<u64, StoreError> {
    let store = &fleet.store;
    let cursor = match store.get(Cf::Webhooks, CURSOR_KEY)? {
        Some(v) => v
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or_default(),
        None => {
            let head = webhooks::outbox_head(store)?;
            save_cursor(store, head)?;
            head
        }
    };
    let pending = webhooks::export_pending(store, cursor, max_lag)?;
    fleet.webhooks.export.start(max_lag, pending);
    metrics::gauge!("fleetgate_export_lag_records").set(pending as f64);
    tracing::info!(
        pending,
        "export to {STREAM}: records waiting since the last run"
    );
    Ok(cursor)
}

fn save_cursor(store: &Store, cursor: u64) -> Result<(), StoreError> {
    write_now(store, |st| {
        st.put(Cf::Webhooks, CURSOR_KEY, &cursor.to_be_bytes())
    })
}

/// The stream's configuration when this node creates it. An operator may change its limits (age,
/// size, replicas) with the `nats` CLI; a node only creates it where it is missing.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECTS.into()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

pub async fn run(shared: Arc<Shared>, client: async_nats::Client, node: &str, mut cursor: u64) {
    let js = jetstream::new(client.clone());
    let fleet = &shared.fleet;
    let export = &fleet.webhooks.export;
    let gauges = tokio::spawn(report(shared.clone(), client.clone()));
    let _stop_gauges = AbortOnDrop(gauges);
    let mut stream_ready = false;
    // Records published past the cursor (acknowledged while an earlier one was not).
    let mut done = BTreeSet::new();
    loop {
        if !stream_ready {
            match js.get_or_create_stream(stream_config()).await {
                Ok(_) => stream_ready = true,
                Err(e) => {
                    tracing::debug!(error = %e, "export: the stream is not reachable yet");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        match publish_next(&js, &fleet.store, &fleet.webhooks, node, cursor, &mut done).await {
            Ok(Step::Idle) => tokio::time::sleep(IDLE_POLL).await,
            Ok(Step::Moved {
                to,
                published,
                failed,
            }) => {
                if to != cursor {
                    if let Err(e) = save_cursor(&fleet.store, to) {
                        // Published but not remembered: the next start publishes them again,
                        // and JetStream's duplicate window (or the consumer, by id) drops them.
                        tracing::warn!(error = %e, "export: writing the cursor failed");
                    }
                    cursor = to;
                }
                export.published(published);
                if let Some(e) = failed {
                    metrics::counter!("fleetgate_export_failures_total").increment(1);
                    tracing::debug!(error = %e, "export: publishing failed; retrying");
                    // The stream may have been deleted: make sure it exists before the next round.
                    stream_ready = false;
                    tokio::time::sleep(RETRY).await;
                } else if published == 0 && to == cursor {
                    // Nothing movable yet (entries only another batch's commit will free).
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "export: reading the outbox failed");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Keeps `/healthz` and the gauges current, whatever the publisher is waiting on.
async fn report(shared: Arc<Shared>, client: async_nats::Client) {
    let export = &shared.fleet.webhooks.export;
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        export.connected.store(connected, Ordering::Release);
        shared.fleet.cluster.set_connected(connected);
        metrics::gauge!("fleetgate_export_connected").set(if connected { 1.0 } else { 0.0 });
        metrics::gauge!("fleetgate_export_lag_records").set(export.lag() as f64);
        tokio::time::sleep(REPORT_EVERY).await;
    }
}

const REPORT_EVERY: Duration = Duration::from_millis(250);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Step {
    Idle,
    /// The cursor may move to `to`; `published` more records were acknowledged; `failed`
    /// when some of the window were not (they are tried again).
    Moved {
        to: u64,
        published: u64,
        failed: Option<String>,
    },
}

/// How long one publish, or its acknowledgement, may take (the client may hold it while it
/// reconnects).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How far past the cursor one round looks for records to publish.
const SCAN: usize = 4 * WINDOW;

/// The next window: records not yet published, at most one per device and `WINDOW` in all. A
/// device's next record is published only once the one before it is acknowledged: were two of
/// one device in flight and the first lost (NATS dying under it) while the client delivered the
/// second after reconnecting, the second would land first; so order per device holds through any
/// failure.
fn window<'a>(msgs: &'a [Message], done: &BTreeSet<u64>) -> Vec<&'a Message> {
    let mut devices = HashSet::new();
    let mut out = Vec::new();
    for m in msgs {
        let Some(dev) = m.device else { continue };
        if done.contains(&m.outbox_id) {
            continue;
        }
        // A device's later records wait behind its earliest unpublished one.
        if devices.insert(dev) {
            out.push(m);
            if out.len() == WINDOW {
                break;
            }
        }
    }
    out
}

/// The cursor after a round: past every record published (and every entry without a device) in
/// outbox order, up to the first that is not; past `skipped_to` (entries the export does not
/// take) when every record scanned is.
fn advance(
    cursor: u64,
    scanned: &[Message],
    done: &mut BTreeSet<u64>,
    skipped_to: Option<u64>,
) -> u64 {
    let mut to = cursor;
    for m in scanned {
        if m.device.is_some() && !done.remove(&m.outbox_id) {
            return to;
        }
        to = m.outbox_id;
    }
    skipped_to.map_or(to, |s| s.max(to))
}

/// Publishes the next window of records after `cursor`, and waits for every acknowledgement.
async fn publish_next(
    js: &jetstream::Context,
    store: &Store,
    hooks: &webhooks::Webhooks,
    node: &str,
    cursor: u64,
    done: &mut BTreeSet<u64>,
) -> Result<Step, StoreError> {
    let below = hooks.visible_below();
    let (msgs, skipped_to) =
        webhooks::next_messages(store, cursor, below, &Export::KINDS, true, SCAN)?;
    if msgs.is_empty() && skipped_to.is_none() {
        return Ok(Step::Idle);
    }
    let mut acks = Vec::new();
    let mut failed = None;
    for m in window(&msgs, done) {
        let Some(dev) = m.device else { continue };
        let subject = format!("fleetgate.records.{}.{dev}", m.kind.as_str());
        // A record with an identity of its own is named by it, whichever node stored it; other
        // messages by this node's outbox id.
        let id = match m.identity {
            Some(i) => format!("{dev}-{}", crate::fleet::auth::hex(&i)),
            None => format!("{node}-{:016x}", m.outbox_id),
        };
        let publish = PublishMessage::build()
            .payload(m.body.clone().into())
            .message_id(id)
            .header("Fleetgate-Node", node);
        match tokio::time::timeout(ACK_WAIT, js.send_publish(subject, publish)).await {
            Ok(Ok(ack)) => acks.push((m.outbox_id, ack)),
            Ok(Err(e)) => {
                failed = Some(e.to_string());
                break;
            }
            Err(_) => {
                failed = Some("publishing did not start in time".into());
                break;
            }
        }
    }
    // Awaited together: a window lost with NATS costs one wait, not one per record.
    let answers = futures_util::future::join_all(
        acks.into_iter()
            .map(|(id, ack)| async move { (id, tokio::time::timeout(ACK_WAIT, ack).await) }),
    )
    .await;
    let mut published = 0;
    for (id, answer) in answers {
        match answer {
            Ok(Ok(_)) => {
                done.insert(id);
                published += 1;
            }
            Ok(Err(e)) => failed = Some(e.to_string()),
            Err(_) => failed = Some("no acknowledgement in time".into()),
        }
    }
    Ok(Step::Moved {
        to: advance(cursor, &msgs, done, skipped_to),
        published,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::webhooks::Kind;

    fn msg(id: u64, dev: u128) -> Message {
        Message {
            outbox_id: id,
            kind: Kind::Telemetry,
            device: Some(uuid::Uuid::from_u128(dev)),
            identity: None,
            body: Vec::new(),
        }
    }

    /// One record per device in flight: a device's next record waits until its earlier one is
    /// acknowledged, so a window lost in the middle can never put a later record first; the
    /// cursor moves only past what is published, in order.
    #[test]
    fn a_device_has_one_record_in_flight_and_the_cursor_stops_at_the_first_gap() {
        let all = [msg(1, 7), msg(2, 7), msg(3, 8), msg(4, 9), msg(5, 7)];
        // What a round scans: the outbox after the cursor.
        let after = |c: u64| -> Vec<Message> {
            all.iter()
                .filter(|m| m.outbox_id > c)
                .map(|m| msg(m.outbox_id, m.device.map_or(0, |d| d.as_u128())))
                .collect()
        };
        let msgs = after(0);
        let mut done = BTreeSet::new();
        let first: Vec<u64> = window(&msgs, &done).iter().map(|m| m.outbox_id).collect();
        assert_eq!(
            first,
            [1, 3, 4],
            "device 7's second record waits for its first"
        );
        // 3 and 4 are acknowledged, 1 is lost: the cursor stays before 1.
        done.extend([3, 4]);
        assert_eq!(advance(0, &msgs, &mut done, None), 0);
        let again: Vec<u64> = window(&msgs, &done).iter().map(|m| m.outbox_id).collect();
        assert_eq!(again, [1], "only device 7's earliest goes again");
        done.insert(1);
        assert_eq!(advance(0, &msgs, &mut done, None), 1);
        let msgs = after(1);
        let next: Vec<u64> = window(&msgs, &done).iter().map(|m| m.outbox_id).collect();
        assert_eq!(next, [2]);
        done.insert(2);
        assert_eq!(advance(1, &msgs, &mut done, None), 4, "past 2, 3 and 4");
        let msgs = after(4);
        done.insert(5);
        assert_eq!(
            advance(4, &msgs, &mut done, Some(9)),
            9,
            "past the entries skipped after"
        );
        assert!(done.is_empty(), "what the cursor passed is forgotten");
    }
}
