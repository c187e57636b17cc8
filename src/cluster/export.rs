//! The export: every committed telemetry record, event, attendance punch and command result,
//! published from the node's outbox (`fleet::webhooks`, the `webhook_outbox` column, where each
//! is staged in the batch of its record) to the JetStream stream `FLEETGATE_RECORDS`, subject
//! `fleetgate.records.<kind>.<device_id>`, `Nats-Msg-Id` `<node>-<outbox id>`.
//!
//! At least once: the cursor (the last outbox id published) is written only after JetStream has
//! acknowledged every message up to it, so a crash or a lost connection re-publishes from the
//! cursor, and JetStream's duplicate window drops what it already holds. In order per device:
//! one publisher per node reads the outbox in id order, below `Webhooks::visible_below` (never
//! past a batch still in flight). It never blocks an ack: records are acknowledged at their commit,
//! and the publisher only reads what has committed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};

use crate::fleet::state::Fleet;
use crate::fleet::webhooks::{self, Export};
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
        match publish_next(&js, &fleet.store, &fleet.webhooks, node, cursor).await {
            Ok(Step::Idle) => tokio::time::sleep(IDLE_POLL).await,
            Ok(Step::Moved { to, published }) => {
                if let Err(e) = save_cursor(&fleet.store, to) {
                    // Published but not remembered: the next start publishes them again, and
                    // JetStream's duplicate window (or the consumer, by id) drops them.
                    tracing::warn!(error = %e, "export: writing the cursor failed");
                }
                cursor = to;
                export.published(published);
            }
            Err(Failure::Store(e)) => {
                tracing::error!(error = %e, "export: reading the outbox failed");
                tokio::time::sleep(RETRY).await;
            }
            Err(Failure::Nats(e)) => {
                metrics::counter!("fleetgate_export_failures_total").increment(1);
                tracing::debug!(error = %e, "export: publishing failed; retrying from the cursor");
                // The stream may have been deleted: make sure it exists before the next round.
                stream_ready = false;
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
    Moved { to: u64, published: u64 },
}

enum Failure {
    Store(StoreError),
    Nats(String),
}

/// Publishes the next window of records after `cursor`, and waits for every acknowledgement.
async fn publish_next(
    js: &jetstream::Context,
    store: &Store,
    hooks: &webhooks::Webhooks,
    node: &str,
    cursor: u64,
) -> Result<Step, Failure> {
    let below = hooks.visible_below();
    let (msgs, skipped_to) =
        webhooks::next_messages(store, cursor, below, &Export::KINDS, true, WINDOW)
            .map_err(Failure::Store)?;
    let Some(last) = msgs.last().map(|m| m.outbox_id).or(skipped_to) else {
        return Ok(Step::Idle);
    };
    let mut acks = Vec::with_capacity(msgs.len());
    for m in msgs {
        // Entries staged before the export began name no device: they were never counted.
        let Some(dev) = m.device else { continue };
        let subject = format!("fleetgate.records.{}.{dev}", m.kind.as_str());
        // A record with an identity of its own is named by it, whichever node stored it; other
        // messages by this node's outbox id.
        let id = match m.identity {
            Some(i) => format!("{dev}-{}", crate::fleet::auth::hex(&i)),
            None => format!("{node}-{:016x}", m.outbox_id),
        };
        let publish = PublishMessage::build()
            .payload(m.body.into())
            .message_id(id)
            .header("Fleetgate-Node", node);
        let ack = js
            .send_publish(subject, publish)
            .await
            .map_err(|e| Failure::Nats(e.to_string()))?;
        acks.push(ack);
    }
    let published = acks.len() as u64;
    for ack in acks {
        ack.await.map_err(|e| Failure::Nats(e.to_string()))?;
    }
    Ok(Step::Moved {
        to: last,
        published,
    })
}
