//! The durable per-device command queue, shared by the REST API, admin WebSocket sessions and the
//! device sessions that deliver it.
//!
//! A command is committed as `queued` before anyone is told it exists; the device's session then
//! delivers queued commands in sequence order (on register, and when nudged through `Links`) and
//! records `sent`, then `acked`/`failed` from the device's answer.
//!
//! Order: delivery looks only as far as the device's visible watermark (`queue::CommandQueue`), so
//! commands reach the device in the order their sequence numbers were assigned, whichever shard
//! enqueued them and whenever each commit returned.

use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use crate::fleet::cluster;
use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::fleet::webhooks;
use crate::generic;
use crate::store::commit::{Batcher, Staging, Ticket, write_now};
use crate::store::records::{self, CommandRecord, CommandStatus};
use crate::store::{Store, StoreError};
use crate::time::{now_ms, rfc3339_ms};

pub const MAX_COMMAND_NAME: usize = 64;
pub const MAX_COMMAND_PAYLOAD: usize = 64 * 1024;
/// The longest TTL a command may ask for: 30 days.
pub const MAX_TTL_S: u64 = 30 * 86_400;

/// A sequence number whose commit is under way. Resolves as failed if dropped unresolved (the
/// enqueuing task was cancelled), so the device's watermark can never stick behind it.
struct Reserved<'a> {
    dev: &'a Device,
    seq: u64,
    resolved: bool,
}

impl Reserved<'_> {
    fn resolve(mut self, committed: bool) -> bool {
        self.resolved = true;
        self.dev.commands.resolve(self.seq, committed)
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.resolved {
            self.dev.commands.resolve(self.seq, false);
        }
    }
}

#[derive(Debug)]
pub enum EnqueueError {
    Invalid(String),
    QueueFull(u32),
    Store(String),
    /// In a cluster whose command stream cannot be reached: the command was not queued.
    Cluster(String),
}

/// Validates and commits a command as `queued`, then nudges the device's live session (on
/// whatever shard) if it may now deliver something.
pub async fn enqueue(
    fleet: &Fleet,
    batch: &Batcher,
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
    let ttl = ttl_s.unwrap_or(fleet.rules.command_ttl_s);
    if ttl == 0 || ttl > MAX_TTL_S {
        return Err(EnqueueError::Invalid(format!(
            "`ttl_s` must be 1 to {MAX_TTL_S}"
        )));
    }
    if let Some(port) = fleet.cluster.port() {
        return enqueue_in_cluster(fleet, port.as_ref(), dev, command, payload_json, ttl).await;
    }
    let seq = dev
        .commands
        .reserve(fleet.rules.command_queue_limit)
        .map_err(EnqueueError::QueueFull)?;
    let reserved = Reserved {
        dev,
        seq,
        resolved: false,
    };
    let now = now_ms();
    let rec = CommandRecord {
        command_id: Uuid::new_v4(),
        device_id: dev.id,
        seq,
        command: command.to_string(),
        payload: payload_json.to_string(),
        status: CommandStatus::Queued,
        created_at: now,
        updated_at: now,
        expires_at: now + ttl * 1000,
        result: None,
    };
    let committed = batch.commit(|st| records::stage_command(st, &rec)).await;
    if reserved.resolve(committed.is_ok()) {
        nudge(fleet, dev);
    }
    committed.map_err(|e| EnqueueError::Store(e.to_string()))?;
    metrics::counter!("fleetgate_commands_total", "stage" => "queued").increment(1);
    Ok(rec)
}

/// In a cluster a command is durable once the cluster's command stream has it; every node then
/// applies it to its own queue in the stream's order (`cluster::apply_command`), and the node
/// holding the device delivers it. This node applies it at once, so it lists what it answered.
async fn enqueue_in_cluster(
    fleet: &Fleet,
    port: &dyn cluster::Port,
    dev: &Arc<Device>,
    command: &str,
    payload_json: &str,
    ttl: u64,
) -> Result<CommandRecord, EnqueueError> {
    let limit = fleet.rules.command_queue_limit;
    if dev.commands.queued() >= limit {
        return Err(EnqueueError::QueueFull(limit));
    }
    let now = now_ms();
    let rec = CommandRecord {
        command_id: Uuid::new_v4(),
        device_id: dev.id,
        seq: 0,
        command: command.to_string(),
        payload: payload_json.to_string(),
        status: CommandStatus::Queued,
        created_at: now,
        updated_at: now,
        expires_at: now + ttl * 1000,
        result: None,
    };
    port.enqueue_command(&rec)
        .await
        .map_err(|e| EnqueueError::Cluster(e.to_string()))?;
    apply_from_cluster(fleet, rec.clone()).map_err(|e| EnqueueError::Store(e.to_string()))?;
    metrics::counter!("fleetgate_commands_total", "stage" => "queued").increment(1);
    Ok(rec)
}

/// How far a status is along: a command's status only ever moves forward.
fn rank(s: CommandStatus) -> u8 {
    match s {
        CommandStatus::Queued => 0,
        CommandStatus::Sent => 1,
        CommandStatus::Acked | CommandStatus::Failed | CommandStatus::Expired => 2,
    }
}

/// Applies a command the cluster told of (its command stream, or another node's status of it)
/// to this node's queue: added when new (with the next sequence number here, so commands of one
/// device queue in the stream's order), its status moved forward when it has advanced, never
/// back. Idempotent, and one at a time per node. Returns whether anything changed; a command for
/// a device this node does not have changes nothing.
pub fn apply_from_cluster(fleet: &Fleet, mut cmd: CommandRecord) -> Result<bool, StoreError> {
    let _one = fleet.cluster.applying();
    let Some(dev) = fleet.registry.get(&cmd.device_id) else {
        return Ok(false);
    };
    match records::get_command(&fleet.store, &cmd.command_id)? {
        None => {
            let queued = cmd.status == CommandStatus::Queued;
            let Ok(seq) = dev.commands.reserve(u32::MAX) else {
                return Ok(false);
            };
            cmd.seq = seq;
            let written = write_now(&fleet.store, |st| records::stage_command(st, &cmd));
            if written.is_ok() && !queued {
                dev.commands.left();
            }
            if dev.commands.resolve(seq, written.is_ok()) && queued {
                nudge(fleet, &dev);
            }
            written.map(|()| true)
        }
        Some(mine) if rank(cmd.status) > rank(mine.status) => {
            if mine.status == CommandStatus::Queued {
                dev.commands.left();
            }
            let next = CommandRecord {
                status: cmd.status,
                updated_at: cmd.updated_at,
                result: cmd.result,
                ..mine
            };
            write_now(&fleet.store, |st| records::stage_command(st, &next))?;
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

/// A command as `CommandRecord::to_api_json` wrote it (what the export carries), or None.
pub fn from_api_json(body: &[u8]) -> Option<CommandRecord> {
    use simd_json::prelude::*;
    let mut b = body.to_vec();
    let v = simd_json::to_owned_value(&mut b).ok()?;
    let time = |k: &str| -> Option<u64> {
        let t: jiff::Timestamp = v.get_str(k)?.parse().ok()?;
        u64::try_from(t.as_millisecond()).ok()
    };
    let status = match v.get_str("status")? {
        "queued" => CommandStatus::Queued,
        "sent" => CommandStatus::Sent,
        "acked" => CommandStatus::Acked,
        "failed" => CommandStatus::Failed,
        "expired" => CommandStatus::Expired,
        _ => return None,
    };
    let result = match v.get("result") {
        None => None,
        Some(r) if r.is_null() => None,
        Some(r) => Some(simd_json::to_string(r).ok()?),
    };
    Some(CommandRecord {
        command_id: v.get_str("command_id")?.parse().ok()?,
        device_id: v.get_str("device_id")?.parse().ok()?,
        seq: 0,
        command: v.get_str("command")?.to_string(),
        payload: simd_json::to_string(v.get("payload")?).ok()?,
        status,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        expires_at: time("expires_at")?,
        result,
    })
}

pub(crate) fn nudge(fleet: &Fleet, dev: &Device) {
    if let Some(s) = dev.session() {
        fleet.links.commands_pending(s);
    }
}

/// Records what the device answered: `acked` or `failed`, with its result (JSON text).
/// Returns the ticket of the batch holding the new status, for a caller that answers only once it
/// is durable.
pub fn finish(
    fleet: &Fleet,
    batch: &Batcher,
    mut cmd: CommandRecord,
    ok: bool,
    result: Option<String>,
) -> Option<Rc<Ticket>> {
    cmd.status = if ok {
        CommandStatus::Acked
    } else {
        CommandStatus::Failed
    };
    cmd.result = result;
    cmd.updated_at = now_ms();
    metrics::counter!("fleetgate_commands_total", "stage" => cmd.status.as_str()).increment(1);
    settle(fleet, batch, &cmd)
}

/// Stages a command's outcome and, once it is durable, tells the admin subscribers
/// (`command_result`): what they are shown is what a reload would show.
fn settle(fleet: &Fleet, batch: &Batcher, cmd: &CommandRecord) -> Option<Rc<Ticket>> {
    let ticket = batch
        .stage(|st| {
            records::stage_command(st, cmd)?;
            if fleet.webhooks.wants(webhooks::Kind::CommandResults) {
                let data = cmd.to_api_json(cmd.updated_at);
                let kind = webhooks::Kind::CommandResults;
                let at = cmd.updated_at;
                let dev = &cmd.device_id;
                webhooks::stage(&fleet.webhooks, st, kind, dev, "command.result", at, &data)?;
            }
            Ok(())
        })
        .inspect_err(|e| tracing::error!(error = %e, "recording a command's status failed"))
        .ok()?;
    if fleet.has_admins() {
        let frame = generic::command_result_broadcast(
            &cmd.device_id.to_string(),
            &cmd.command_id.to_string(),
            &cmd.command,
            cmd.status.as_str(),
            cmd.result.as_deref(),
            &rfc3339_ms(cmd.updated_at),
        );
        let links = fleet.links.clone();
        let resolved = Rc::downgrade(&ticket);
        ticket.on_resolve(move || {
            if resolved.upgrade().and_then(|t| t.outcome()) == Some(true) {
                links.broadcast(frame.into());
            }
        });
    }
    Some(ticket)
}

#[derive(Debug)]
pub enum ResultError {
    /// No command with this id was sent to this device.
    Unknown,
    Store(StoreError),
}

/// A generic device's `command_result`: records it against the device's own command.
pub fn result(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    command_id: &str,
    ok: bool,
    payload: Option<String>,
) -> Result<(), ResultError> {
    let id = Uuid::parse_str(command_id).map_err(|_| ResultError::Unknown)?;
    match records::get_command(&fleet.store, &id) {
        Ok(Some(c)) if c.device_id == dev.id => {
            finish(fleet, batch, c, ok, payload);
            Ok(())
        }
        Ok(_) => Err(ResultError::Unknown),
        Err(e) => Err(ResultError::Store(e)),
    }
}

/// Delivers up to `max` queued commands in sequence order through `send`, recording each as
/// `sent` (or `expired`, unsent). Returns whether more may be waiting (the caller delivers again).
pub fn deliver(
    store: &Store,
    hooks: &Arc<webhooks::Webhooks>,
    batch: &Batcher,
    dev: &Device,
    now: u64,
    max: usize,
    mut send: impl FnMut(&CommandRecord),
) -> Result<bool, StoreError> {
    // The watermark is read before the scan: everything at or below it is already in the store.
    let visible = dev.commands.visible_through();
    let after = dev.commands.delivered_through();
    let cmds = records::commands_after(store, &dev.id, after, max)?;
    let mut more = cmds.len() == max;
    let mut through = after;
    let mut result = Ok(());
    for mut c in cmds {
        if c.seq > visible {
            // An earlier seq is still committing; its commit nudges the session again.
            more = false;
            break;
        }
        through = c.seq;
        match c.effective_status(now) {
            CommandStatus::Queued => {
                send(&c);
                c.status = CommandStatus::Sent;
                metrics::counter!("fleetgate_commands_total", "stage" => "sent").increment(1);
            }
            CommandStatus::Expired if c.status == CommandStatus::Queued => {
                c.status = CommandStatus::Expired;
                metrics::counter!("fleetgate_commands_total", "stage" => "expired").increment(1);
            }
            _ => continue,
        }
        c.updated_at = now;
        dev.commands.left();
        if let Err(e) = batch.stage(|st| stage_status(hooks, st, &c)) {
            result = Err(e);
            break;
        }
    }
    dev.commands.delivered(through);
    result.map(|()| more)
}

/// For terminals, which run one command at a time: the next queued command in sequence order,
/// taken out of the queue (expired ones on the way are recorded as such). The caller records it
/// `sent` ([`sent`]), gives it back (`CommandQueue::put_back`) or fails it ([`fail`]).
pub fn take_next(
    store: &Store,
    hooks: &Arc<webhooks::Webhooks>,
    batch: &Batcher,
    dev: &Device,
    now: u64,
) -> Result<Option<CommandRecord>, StoreError> {
    loop {
        let visible = dev.commands.visible_through();
        let after = dev.commands.delivered_through();
        let Some(mut cmd) = records::commands_after(store, &dev.id, after, 1)?.pop() else {
            return Ok(None);
        };
        if cmd.seq > visible {
            return Ok(None);
        }
        dev.commands.delivered(cmd.seq);
        if cmd.status != CommandStatus::Queued {
            continue;
        }
        dev.commands.left();
        cmd.updated_at = now;
        if cmd.effective_status(now) == CommandStatus::Expired {
            cmd.status = CommandStatus::Expired;
            metrics::counter!("fleetgate_commands_total", "stage" => "expired").increment(1);
            save(hooks, batch, &cmd);
            continue;
        }
        return Ok(Some(cmd));
    }
}

/// A command handed to the device. Returns the ticket of the batch holding the new status, for a
/// caller whose device may answer through another shard (a polling terminal), where the answer's
/// status must not commit before this one.
pub fn sent(
    hooks: &Arc<webhooks::Webhooks>,
    batch: &Batcher,
    cmd: &mut CommandRecord,
) -> Option<Rc<Ticket>> {
    cmd.status = CommandStatus::Sent;
    metrics::counter!("fleetgate_commands_total", "stage" => "sent").increment(1);
    save(hooks, batch, cmd)
}

/// A command the device's protocol cannot carry out: failed, with the reason as its result.
pub fn fail(fleet: &Fleet, batch: &Batcher, mut cmd: CommandRecord, reason: &str) {
    cmd.status = CommandStatus::Failed;
    let mut r = String::from("{\"error\":");
    crate::json::push_str(&mut r, reason);
    r.push('}');
    cmd.result = Some(r);
    metrics::counter!("fleetgate_commands_total", "stage" => "failed").increment(1);
    settle(fleet, batch, &cmd);
}

/// Stages a command's new status without waiting: the status is the record of what happened, and
/// a lost update (a failing disk) is logged, not retried.
fn save(
    hooks: &Arc<webhooks::Webhooks>,
    batch: &Batcher,
    cmd: &CommandRecord,
) -> Option<Rc<Ticket>> {
    batch
        .stage(|st| stage_status(hooks, st, cmd))
        .inspect_err(|e| tracing::error!(error = %e, "recording a command's status failed"))
        .ok()
}

/// Stages a command's new status; in a cluster its `command.status` goes to the export with it,
/// which is how the other nodes learn that it was sent (or expired) and list it so.
fn stage_status(
    hooks: &Arc<webhooks::Webhooks>,
    st: &mut Staging<'_>,
    cmd: &CommandRecord,
) -> Result<(), StoreError> {
    records::stage_command(st, cmd)?;
    let at = cmd.updated_at;
    let data = cmd.to_api_json(at);
    let (kind, dev) = (webhooks::Kind::CommandResults, &cmd.device_id);
    webhooks::stage_export(hooks, st, kind, dev, "command.status", at, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_reservation_resolves_as_failed() {
        let dev = crate::fleet::registry::test_device();
        let seq = dev.commands.reserve(5).unwrap();
        drop(Reserved {
            dev: &dev,
            seq,
            resolved: false,
        });
        assert_eq!(dev.commands.visible_through(), seq);
        assert_eq!(dev.commands.queued(), 0);
    }
}
