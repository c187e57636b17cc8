//! Commands across the cluster. A command is appended to the `FLEETGATE_COMMANDS` stream
//! (subject `fleetgate.commands.<device_id>`, `Nats-Msg-Id` its id) by whichever node's API took
//! it; every node reads the stream through a durable consumer of its own and applies each command
//! to its own queue, in the stream's order (`fleet::commands::apply_from_cluster`), acknowledging
//! it only once applied. The node holding the device delivers it as it always does. What becomes
//! of a command (sent, acked, failed, expired) travels as its `command.status`/`command.result`
//! in the export (`FLEETGATE_RECORDS`, `fleetgate.records.command_results.<device_id>`), which
//! every node also reads through a durable consumer and applies, skipping its own: so a command
//! reads the same on every node, and a node that was away catches up where its consumers stopped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::export::STREAM as RECORDS_STREAM;
use super::resources::{COMMANDS_STREAM, Resources};
use crate::fleet::commands::{apply_from_cluster, from_api_json};
use crate::shard::local::Shared;
use crate::store::records::{self, CommandRecord};

const RETRY: Duration = Duration::from_millis(500);
/// How long a command for a device this node does not know yet waits for the registry to bring
/// it (both arrive through NATS, on different paths).
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Which part of the cluster's traffic a consumer takes.
#[derive(Clone, Copy)]
pub enum Feed {
    /// New commands, from `FLEETGATE_COMMANDS`.
    Commands,
    /// Other nodes' statuses of commands, from the export.
    Statuses,
}

/// Follows `feed` until the link stops, consuming again after any interruption (at least once: a
/// message is acknowledged after it is applied, and applying is idempotent).
pub async fn follow(shared: Arc<Shared>, r: Resources, node: String, feed: Feed) {
    loop {
        if let Err(e) = consume(&shared, &r, &node, feed).await {
            tracing::debug!(error = %e, "cluster commands: consuming stopped; again shortly");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn consume(
    shared: &Shared,
    r: &Resources,
    node: &str,
    feed: Feed,
) -> Result<(), async_nats::Error> {
    let (stream, name, filter) = match feed {
        Feed::Commands => (COMMANDS_STREAM, format!("commands-{node}"), String::new()),
        Feed::Statuses => (
            RECORDS_STREAM,
            format!("statuses-{node}"),
            "fleetgate.records.command_results.>".to_string(),
        ),
    };
    let stream = r.js.get_stream(stream).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m?;
        let cmd = match feed {
            Feed::Commands => records::decode::<CommandRecord>(&m.payload).ok(),
            Feed::Statuses => {
                let from = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Fleetgate-Node"))
                    .map(|v| v.as_str().to_string());
                if from.as_deref() == Some(node) {
                    None
                } else {
                    status_of(&m.payload)
                }
            }
        };
        if let Some(cmd) = cmd {
            apply(shared, cmd).await;
        }
        m.ack().await?;
    }
    Ok(())
}

/// The command a `command.status`/`command.result` message of the export tells of.
fn status_of(body: &[u8]) -> Option<CommandRecord> {
    let mut b = body.to_vec();
    let v = simd_json::to_owned_value(&mut b).ok()?;
    use simd_json::prelude::*;
    let data = simd_json::to_vec(v.get("data")?).ok()?;
    from_api_json(&data)
}

async fn apply(shared: &Shared, cmd: CommandRecord) {
    let fleet = &shared.fleet;
    let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
    while fleet.registry.get(&cmd.device_id).is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = cmd.command_id;
    if let Err(e) = apply_from_cluster(fleet, cmd) {
        tracing::error!(error = %e, command = %id, "cluster commands: applying a command failed");
    }
}

/// The commands stream's configuration when this node creates it.
pub fn stream_config() -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: COMMANDS_STREAM.into(),
        subjects: vec![super::resources::COMMANDS_SUBJECTS.into()],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}
