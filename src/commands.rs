//! The durable per-device command queue, shared by the REST API and admin WebSocket sessions.
//!
//! A command is committed as `queued` before anyone is told it exists; the device's session then
//! delivers queued commands in sequence order (on register, and when nudged through the hub) and
//! records `sent`, then `acked`/`failed` from the device's `command_result`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use crate::hub::ShardMsg;
use crate::registry::Device;
use crate::shard::Local;
use crate::store::records::{self, CommandRecord, CommandStatus};
use crate::time::now_ms;

pub const MAX_COMMAND_NAME: usize = 64;
pub const MAX_COMMAND_PAYLOAD: usize = 64 * 1024;
/// The longest TTL a command may ask for: 30 days.
pub const MAX_TTL_S: u64 = 30 * 86_400;

#[derive(Debug)]
pub enum EnqueueError {
    Invalid(String),
    QueueFull(u32),
    Store(String),
}

/// Records what the device answered: `acked` or `failed`, with its result (JSON text).
pub fn finish(local: &Local, mut cmd: CommandRecord, ok: bool, result: Option<String>) {
    cmd.status = if ok {
        CommandStatus::Acked
    } else {
        CommandStatus::Failed
    };
    cmd.result = result;
    cmd.updated_at = now_ms();
    metrics::counter!("fleetgate_commands_total", "stage" => cmd.status.as_str()).increment(1);
    if let Err(e) = local.batcher.stage(|st| records::stage_command(st, &cmd)) {
        tracing::error!(error = %e, "recording a command result failed");
    }
}

pub async fn enqueue(
    local: &Local,
    dev: &Arc<Device>,
    command: &str,
    payload_json: &str,
    ttl_s: Option<u64>,
) -> Result<CommandRecord, EnqueueError> {
    if command.is_empty() || command.len() > MAX_COMMAND_NAME {
        return Err(EnqueueError::Invalid(format!(
            "`command` must be 1 to {MAX_COMMAND_NAME} characters"
        )));
    }
    if payload_json.len() > MAX_COMMAND_PAYLOAD {
        return Err(EnqueueError::Invalid(format!(
            "`payload` must be at most {MAX_COMMAND_PAYLOAD} bytes of JSON"
        )));
    }
    let ttl = ttl_s.unwrap_or(local.config().command_ttl);
    if ttl == 0 || ttl > MAX_TTL_S {
        return Err(EnqueueError::Invalid(format!(
            "`ttl_s` must be 1 to {MAX_TTL_S}"
        )));
    }
    let limit = local.config().command_queue_limit;
    // Reserve the slot first so concurrent enqueues cannot overshoot the bound.
    if dev.queued_commands.fetch_add(1, Ordering::AcqRel) >= limit {
        dev.queued_commands.fetch_sub(1, Ordering::AcqRel);
        return Err(EnqueueError::QueueFull(limit));
    }
    let now = now_ms();
    let rec = CommandRecord {
        command_id: Uuid::new_v4(),
        device_id: dev.id,
        seq: dev.next_command_seq(),
        command: command.to_string(),
        payload: payload_json.to_string(),
        status: CommandStatus::Queued,
        created_at: now,
        updated_at: now,
        expires_at: now + ttl * 1000,
        result: None,
    };
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_command(st, &rec))
        .await
    {
        dev.queued_commands.fetch_sub(1, Ordering::AcqRel);
        return Err(EnqueueError::Store(e.to_string()));
    }
    metrics::counter!("fleetgate_commands_total", "stage" => "queued").increment(1);
    if let Some(s) = dev.session() {
        local
            .shared
            .hub
            .send(s.shard, ShardMsg::Commands { conn: s.conn });
    }
    Ok(rec)
}
