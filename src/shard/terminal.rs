//! Biometric terminals on `/ws`: dialect detection, and the runtime half of the sans-IO
//! conversations in `aiface` and `smackbio`. The conversation decides what to say; this file
//! performs its actions (identity, storage, commands) and feeds the outcomes back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use simd_json::prelude::*;

use super::Local;
use super::ws_session::{Role, Session};
use crate::auth;
use crate::registry::Device;
use crate::store::Cf;
use crate::store::records::{self, CommandRecord, CommandStatus, Protocol, Source};
use crate::terminal::{Action, CommandError, Conversation, Identity, Known};
use crate::time::{now_ms, now_us};

/// How often a terminal with an outstanding command is given the time (command timeouts).
pub const TICK: Duration = Duration::from_millis(250);
/// How long a terminal has to answer a command (vendor samples: 5 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Device settings this runtime keeps for terminals.
const SETTING_TOKEN_HASH: &str = "smackbio_token_hash";
const SETTING_LOG_POSITION: &str = "log_position";
const SETTING_CLOUD_ID: &str = "cloud_id";
const SETTING_TIMEZONE: &str = "timezone";

pub struct Terminal {
    conv: Box<dyn Conversation>,
    protocol: Protocol,
    dev: Option<Arc<Device>>,
    online: bool,
    /// The command from the durable queue that the conversation is running.
    command: Option<CommandRecord>,
}

impl Terminal {
    pub fn device(&self) -> Option<&Arc<Device>> {
        self.dev.as_ref().filter(|_| self.online)
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// Decides a session's dialect from its first frame: XML → SmackBio, JSON with `"cmd"` and no
/// `"type"` → AiFace; anything else stays with the generic protocol.
pub fn sniff(frame: &[u8], local: &Local) -> Option<Terminal> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace())?;
    let timeout = COMMAND_TIMEOUT.min(Duration::from_secs(local.config().ws_idle_timeout.max(1)));
    let (conv, protocol): (Box<dyn Conversation>, Protocol) = if *first == b'<' {
        let Some(seed) = session_seed() else {
            // Tokens from a predictable seed could be guessed: refuse the session instead.
            tracing::error!("the OS random source failed; refusing a SmackBio session");
            return None;
        };
        (
            Box::new(crate::smackbio::Session::new(timeout, seed)),
            Protocol::Smackbio,
        )
    } else {
        let mut copy = crate::lenient::strip_trailing_commas(frame);
        if crate::lenient::too_deep(&copy, crate::lenient::MAX_JSON_DEPTH) {
            return None;
        }
        let v = simd_json::to_borrowed_value(&mut copy).ok()?;
        if v.get("cmd").is_none() || v.get("type").is_some() {
            return None;
        }
        (
            Box::new(crate::aiface::Session::new(timeout)),
            Protocol::Aiface,
        )
    };
    metrics::counter!("fleetgate_terminal_sessions_total", "protocol" => protocol.as_str())
        .increment(1);
    Some(Terminal {
        conv,
        protocol,
        dev: None,
        online: false,
        command: None,
    })
}

/// Randomness for SmackBio session tokens, drawn here so the conversation stays deterministic.
fn session_seed() -> Option<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(now_us() as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

impl Session<'_> {
    fn terminal(&mut self) -> Option<&mut Terminal> {
        match &mut self.role {
            Role::Terminal(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the conversation has something running that the clock can finish.
    pub(super) fn terminal_busy(&self) -> bool {
        matches!(&self.role, Role::Terminal(t) if !t.conv.is_idle())
    }

    pub(super) async fn terminal_frame(&mut self, text: &mut [u8]) {
        let now = jiff_now();
        let Some(t) = self.terminal() else { return };
        let was_idle = t.conv.is_idle();
        let actions = t.conv.on_frame(text, now);
        self.run_actions(actions).await;
        self.touch_terminal();
        self.after_progress(was_idle).await;
    }

    pub(super) async fn terminal_tick(&mut self) {
        let now = jiff_now();
        let Some(t) = self.terminal() else { return };
        let was_idle = t.conv.is_idle();
        let actions = t.conv.on_tick(now);
        self.run_actions(actions).await;
        self.after_progress(was_idle).await;
    }

    /// The conversation's own jobs (clock set, backfill) end without a `CommandDone`: when it turns
    /// idle, queued commands that had to wait get their turn.
    async fn after_progress(&mut self, was_idle: bool) {
        let idle_now = matches!(&self.role, Role::Terminal(t) if t.conv.is_idle());
        if !was_idle && idle_now {
            self.terminal_commands().await;
        }
    }

    pub(super) async fn terminal_commands(&mut self) {
        let actions = self.next_command();
        self.run_actions(actions).await;
    }

    /// Performs actions in order. Outcomes that produce more actions (identity answers, the next
    /// queued command) are performed next, before the rest, as the conversation expects.
    async fn run_actions(&mut self, actions: Vec<Action>) {
        let mut work: VecDeque<Action> = actions.into();
        let mut check_commands = false;
        // A backfill position may only move past logs that were stored.
        let mut store_failed = false;
        loop {
            let Some(action) = work.pop_front() else {
                if !check_commands {
                    break;
                }
                check_commands = false;
                work.extend(self.next_command());
                continue;
            };
            let failed_before = std::mem::take(&mut store_failed);
            match action {
                Action::Send(frame) => self.send_text(&frame),
                Action::Identify {
                    serial,
                    model,
                    firmware,
                    token,
                    cloud_id,
                } => {
                    let identity = self
                        .identify(
                            &serial,
                            model.as_deref(),
                            firmware.as_deref(),
                            token.as_deref(),
                            cloud_id.as_deref(),
                        )
                        .await;
                    let now = jiff_now();
                    if let Some(t) = self.terminal() {
                        let more = t.conv.on_identity(identity, now);
                        for a in more.into_iter().rev() {
                            work.push_front(a);
                        }
                    }
                }
                Action::Online => {
                    let Some(dev) = self.terminal().and_then(|t| t.dev.clone()) else {
                        continue;
                    };
                    if !self.claim(&dev).await {
                        return;
                    }
                    let protocol = self.terminal().map_or(Protocol::Aiface, |t| t.protocol);
                    if let Some(t) = self.terminal() {
                        t.online = true;
                    }
                    dev.touch(now_ms());
                    self.touch_terminal();
                    metrics::gauge!("fleetgate_sessions", "protocol" => protocol.as_str())
                        .increment(1.0);
                    crate::presence::record(
                        self.local,
                        &dev,
                        true,
                        "registered",
                        Some(&self.ctl.peer.to_string()),
                    );
                    check_commands = true;
                }
                Action::SaveToken(token) => {
                    let hash = auth::hex(&auth::hash_token(&token));
                    self.update_settings(|s| {
                        s.insert(SETTING_TOKEN_HASH.into(), hash);
                    });
                }
                Action::SavePosition(pos) => {
                    if !failed_before {
                        self.update_settings(|s| {
                            s.insert(SETTING_LOG_POSITION.into(), pos.to_string());
                        });
                    }
                }
                Action::StoreRecords {
                    records,
                    on_stored,
                    on_failed,
                } => {
                    let Some(dev) = self.terminal().and_then(|t| t.device().cloned()) else {
                        continue;
                    };
                    let reply = match crate::device_http::store_records(self.local, &dev, &records)
                        .await
                    {
                        Ok(()) => on_stored,
                        Err(reason) => {
                            tracing::warn!(device = %dev.id, reason, "terminal records not stored");
                            store_failed = true;
                            on_failed
                        }
                    };
                    if let Some(r) = reply {
                        self.send_text(&r);
                    }
                }
                Action::StoreUser {
                    enrollid,
                    payload,
                    on_stored,
                    on_failed,
                } => {
                    let Some(dev) = self.terminal().and_then(|t| t.device().cloned()) else {
                        continue;
                    };
                    let key = crate::store::keys::user(&dev.id, enrollid);
                    let ok = match self
                        .local
                        .batcher
                        .stage(|st| st.put(Cf::Users, &key, payload.as_bytes()))
                    {
                        Ok(t) => t.wait().await,
                        Err(_) => false,
                    };
                    if let Some(r) = if ok { on_stored } else { on_failed } {
                        self.send_text(&r);
                    }
                }
                Action::Event {
                    kind,
                    payload,
                    on_stored,
                    on_failed,
                } => {
                    let Some(dev) = self.terminal().and_then(|t| t.device().cloned()) else {
                        continue;
                    };
                    let id = self.local.shared.store.ids.next(now_us());
                    let staged = self.local.batcher.stage(|st| {
                        records::stage_event(
                            st,
                            id,
                            Some(&dev.id),
                            &kind,
                            Source::Device,
                            &payload,
                            None,
                        )
                    });
                    let ticket = match staged {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::error!(error = %e, "storing a terminal event failed");
                            None
                        }
                    };
                    if self.local.shared.hub.has_admins() {
                        let ts = crate::time::rfc3339_ms(id / 1000);
                        self.local.broadcast(crate::generic::event_broadcast(
                            &dev.id.to_string(),
                            &kind,
                            &ts,
                            &payload,
                        ));
                    }
                    // A reply that acknowledges the event goes out only once it is durable.
                    if on_stored.is_some() || on_failed.is_some() {
                        let ok = match ticket {
                            Some(t) => t.wait().await,
                            None => false,
                        };
                        if !ok {
                            store_failed = true;
                        }
                        if let Some(r) = if ok { on_stored } else { on_failed } {
                            self.send_text(&r);
                        }
                    }
                }
                Action::CommandDone {
                    command_id,
                    ok,
                    result,
                } => {
                    self.command_done(&command_id, ok, result);
                    check_commands = true;
                }
                Action::Close(reason) => {
                    self.end_reason.get_or_insert(reason);
                    self.ctl.request_close(1008, reason);
                }
            }
        }
    }

    pub(super) fn touch_terminal(&self) {
        if let Role::Terminal(t) = &self.role {
            if let Some(dev) = t.device() {
                let now = now_ms();
                dev.touch(now);
                self.local.set_deadline(
                    self.ctl,
                    now + self.local.config().ws_idle_timeout * 1000,
                    super::Deadline::Idle,
                );
            }
        }
    }

    fn update_settings(&mut self, f: impl FnOnce(&mut std::collections::BTreeMap<String, String>)) {
        let Some(dev) = self.terminal().and_then(|t| t.dev.clone()) else {
            return;
        };
        let rec = dev.update_record(|r| f(&mut r.settings));
        if let Err(e) = self
            .local
            .batcher
            .stage(|st| records::stage_device(st, &rec))
        {
            tracing::error!(error = %e, "saving terminal settings failed");
        }
    }

    /// Resolves a presented serial: the device (checking cloud id and token), or the pending list.
    async fn identify(
        &mut self,
        serial: &str,
        model: Option<&str>,
        firmware: Option<&str>,
        token: Option<&str>,
        cloud_id: Option<&str>,
    ) -> Identity {
        let protocol = self.terminal().map_or(Protocol::Aiface, |t| t.protocol);
        let serial = serial.trim();
        if serial.is_empty() || serial.len() > 64 {
            return Identity::Unknown;
        }
        let ip = self.ctl.peer.ip();
        let now = now_ms();
        if self.local.shared.guard.auth_wait_ms(ip, Some(serial), now) > 0 {
            return Identity::Refused;
        }
        let remote = self.ctl.peer.to_string();
        let dev = match self.local.shared.registry.by_serial(serial) {
            Some(d) => d,
            None if self.local.config().auto_approve => {
                match crate::device_http::create_for_serial(
                    self.local, serial, protocol, model, None,
                )
                .await
                {
                    Ok(d) => d,
                    Err(_) => return Identity::Unknown,
                }
            }
            None => {
                self.local.shared.pending.seen(
                    self.local,
                    serial,
                    protocol,
                    model,
                    firmware,
                    &remote,
                    now_ms(),
                );
                return Identity::Unknown;
            }
        };
        let settings = dev.record().settings;
        // The cloud id gates Register (the vendor checks it there); Login frames carry a token
        // instead, and that token was issued only after a Register that passed this check.
        if let (Some(expected), None) = (settings.get(SETTING_CLOUD_ID), token) {
            if cloud_id != Some(expected.as_str()) {
                self.local.metrics.auth_failures.increment(1);
                self.local.shared.guard.auth_failed(ip, Some(serial), now);
                return Identity::Refused;
            }
        }
        // Flapping counts connections, not frames: only the session's first identification.
        let first = self.terminal().is_some_and(|t| t.dev.is_none());
        if first && self.local.shared.guard.registration(dev.id, now).is_err() {
            return Identity::Refused;
        }
        // Only the token's hash is kept: a presented token that matches it is handed back to the
        // conversation as "the token this serial holds"; anything else as none.
        let token = token.filter(|t| {
            settings
                .get(SETTING_TOKEN_HASH)
                .and_then(|h| auth::unhex(h))
                .and_then(|h| <auth::TokenHash>::try_from(h.as_slice()).ok())
                .is_some_and(|h| auth::verify_token(t, &h))
        });
        let tz = settings
            .get(SETTING_TIMEZONE)
            .and_then(|z| jiff::tz::TimeZone::get(z).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system);
        let log_position = settings
            .get(SETTING_LOG_POSITION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let device_id = dev.id.to_string();
        if let Some(t) = self.terminal() {
            t.dev = Some(dev);
        }
        Identity::Known(Known {
            device_id,
            tz,
            token: token.map(str::to_string),
            log_position,
        })
    }

    /// Starts the next queued command if the terminal is ready for one; its first frames are
    /// returned as actions. Commands the conversation refuses are recorded as failed.
    fn next_command(&mut self) -> Vec<Action> {
        let store = self.local.shared.store.clone();
        let now = now_ms();
        loop {
            let Some(t) = self.terminal() else {
                return Vec::new();
            };
            let Some(dev) = t.device().cloned() else {
                return Vec::new();
            };
            if !t.conv.is_authenticated() || !t.conv.is_idle() || t.command.is_some() {
                return Vec::new();
            }
            let after = dev.delivered_through.load(Ordering::Acquire);
            let next = match records::commands_after(&store, &dev.id, after, 1) {
                Ok(mut c) => c.pop(),
                Err(e) => {
                    tracing::error!(error = %e, "loading queued commands failed");
                    return Vec::new();
                }
            };
            let Some(mut cmd) = next else {
                return Vec::new();
            };
            dev.delivered_through.fetch_max(cmd.seq, Ordering::AcqRel);
            if cmd.status != CommandStatus::Queued {
                continue;
            }
            dev.queued_commands.fetch_sub(1, Ordering::AcqRel);
            cmd.updated_at = now;
            if cmd.effective_status(now) == CommandStatus::Expired {
                cmd.status = CommandStatus::Expired;
                self.save_command(&cmd);
                continue;
            }
            let mut payload = cmd.payload.clone().into_bytes();
            let payload = simd_json::to_owned_value(&mut payload)
                .unwrap_or_else(|_| simd_json::OwnedValue::from(()));
            let started = t.conv.start_command(
                &cmd.command_id.to_string(),
                &cmd.command,
                &payload,
                jiff_now(),
            );
            match started {
                Ok(actions) => {
                    cmd.status = CommandStatus::Sent;
                    metrics::counter!("fleetgate_commands_total", "stage" => "sent").increment(1);
                    self.save_command(&cmd);
                    if let Some(t) = self.terminal() {
                        t.command = Some(cmd);
                    }
                    return actions;
                }
                Err(CommandError::Busy | CommandError::NotReady) => {
                    // Not now: put it back so the next check picks it up again.
                    dev.queued_commands.fetch_add(1, Ordering::AcqRel);
                    dev.delivered_through.store(cmd.seq - 1, Ordering::Release);
                    return Vec::new();
                }
                Err(CommandError::Invalid(m)) => {
                    cmd.status = CommandStatus::Failed;
                    let mut r = String::from("{\"error\":");
                    crate::json::push_str(&mut r, &m);
                    r.push('}');
                    cmd.result = Some(r);
                    metrics::counter!("fleetgate_commands_total", "stage" => "failed").increment(1);
                    self.save_command(&cmd);
                }
            }
        }
    }

    fn command_done(&mut self, command_id: &str, ok: bool, result: String) {
        let Some(t) = self.terminal() else { return };
        let Some(cmd) = t
            .command
            .take_if(|c| c.command_id.to_string() == command_id)
        else {
            return;
        };
        crate::commands::finish(self.local, cmd, ok, Some(result));
    }

    fn save_command(&self, cmd: &CommandRecord) {
        if let Err(e) = self
            .local
            .batcher
            .stage(|st| records::stage_command(st, cmd))
        {
            tracing::error!(error = %e, "recording a command's status failed");
        }
    }
}
