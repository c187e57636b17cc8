//! The runtime half of a terminal session: carries out its conversation's actions (identity,
//! storage, commands) and feeds the outcomes back. The conversation decides what to say.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::fleet::provision::{self, Newcomer};
use crate::fleet::{attendance, auth, commands, enrolled, identity, webhooks};
use crate::shard::local::CloseReason;
use crate::shard::terminal::{
    MAX_UNANSWERED, POSITION_SAVE_EVERY_MS, SETTING_LOG_POSITION, SETTING_TOKEN_HASH, Staged,
    Terminal, Unanswered,
};
use crate::shard::ws_session::{Role, Session};
use crate::store::commit::Ticket;
use crate::store::records::{self, Protocol};
use crate::terminal::{
    AccessFacts, AccessPolicy, AccessRule, Action, CommandError, Identity, Known,
};
use crate::time::{now_ms, now_us, timestamp_now};

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
        let now = timestamp_now();
        let Some(t) = self.terminal() else { return };
        let was_idle = t.conv.is_idle();
        let actions = t.conv.on_frame(text, now);
        self.run_actions(actions).await;
        self.touch_terminal();
        self.after_progress(was_idle).await;
    }

    pub(super) async fn terminal_tick(&mut self) {
        let now = timestamp_now();
        let Some(t) = self.terminal() else { return };
        let was_idle = t.conv.is_idle();
        let actions = t.conv.on_tick(now);
        self.run_actions(actions).await;
        self.after_progress(was_idle).await;
    }

    /// The conversation's own jobs (clock set, backfill steps) end without a `CommandDone`: when
    /// it turns idle, queued commands that had to wait get their turn first, and only when none
    /// starts does the conversation's own work go on (`resume`).
    async fn after_progress(&mut self, was_idle: bool) {
        let idle = |s: &Self| matches!(&s.role, Role::Terminal(t) if t.conv.is_idle());
        if was_idle || !idle(self) {
            return;
        }
        self.terminal_commands().await;
        if idle(self) {
            let now = timestamp_now();
            if let Some(t) = self.terminal() {
                let actions = t.conv.resume(now);
                self.run_actions(actions).await;
            }
        }
    }

    pub(super) async fn terminal_commands(&mut self) {
        let actions = self.next_command();
        self.run_actions(actions).await;
    }

    /// Notes a log position whose logs are stored; saved at most every `POSITION_SAVE_EVERY_MS`.
    fn reached_position(&mut self, pos: u64) {
        if let Some(t) = self.terminal() {
            t.unsaved_position = Some(pos);
            if now_ms().saturating_sub(t.position_saved_ms) >= POSITION_SAVE_EVERY_MS {
                self.save_position();
            }
        }
    }

    /// The batch the oldest unanswered log frame waits for.
    pub(super) fn oldest_unanswered(&self) -> Option<&Rc<Ticket>> {
        match &self.role {
            Role::Terminal(t) => match t.unanswered.front() {
                Some(Unanswered {
                    outcome: Staged::Batch(ticket),
                    ..
                }) => Some(ticket),
                _ => None,
            },
            _ => None,
        }
    }

    /// Answers, in order, the log frames whose batches have resolved, up to the first still
    /// committing.
    pub(super) fn answer_stored(&mut self) {
        loop {
            let Some(t) = self.terminal() else { return };
            let stored = match t.unanswered.front() {
                Some(Unanswered {
                    outcome: Staged::Batch(ticket),
                    ..
                }) => match ticket.outcome() {
                    Some(ok) => ok,
                    None => return,
                },
                Some(Unanswered {
                    outcome: Staged::Known(ok),
                    ..
                }) => *ok,
                None => {
                    // The burst's queue goes back to the allocator: an idle session holds none.
                    t.unanswered = VecDeque::new();
                    return;
                }
            };
            if let Some(u) = t.unanswered.pop_front() {
                self.answer(u, stored);
            }
        }
    }

    /// Waits for every unanswered log frame's batch and answers them in order.
    pub(super) async fn answer_all(&mut self) {
        while let Some(ticket) = self.oldest_unanswered().cloned() {
            ticket.wait().await;
            self.answer_stored();
        }
        self.answer_stored();
    }

    fn answer(&mut self, u: Unanswered, stored: bool) {
        let reply = if stored {
            if let Some(p) = u.position {
                self.reached_position(p);
            }
            u.on_stored
        } else {
            let dev = self.terminal().and_then(|t| t.device().map(|d| d.id));
            tracing::warn!(device = ?dev, "terminal records not stored");
            u.on_failed
        };
        if let Some(r) = reply {
            self.send_text(&r);
        }
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
            // A stored log frame's reply waits for its batch; anything else this session says,
            // or learns from the store, comes after it.
            if !matches!(
                action,
                Action::StoreRecords { .. } | Action::CheckAccess { .. }
            ) {
                self.answer_all().await;
            }
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
                    let now = timestamp_now();
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
                    // Already this device's session (a re-login on the same socket): nothing changes.
                    if self
                        .terminal()
                        .and_then(|t| t.device())
                        .is_some_and(|d| d.id == dev.id)
                    {
                        continue;
                    }
                    let Some(crate::fleet::registry::TakenOver { claim, replaced }) =
                        self.claim(&dev).await
                    else {
                        return;
                    };
                    let protocol = self.terminal().map_or(Protocol::Aiface, |t| t.protocol);
                    // A reconnect from the same address (its old connection half-open) is routine;
                    // from another address it may be an impostor, so the operator hears of it.
                    let peer = self.ctl.client();
                    if let Some(previous) = replaced.filter(|p| p.ip() != peer.ip()) {
                        let local = self.local;
                        let (fleet, batch) = (local.fleet(), &local.batcher);
                        identity::takeover(fleet, batch, &dev, previous, peer, protocol.as_str());
                    }
                    if let Some(t) = self.terminal() {
                        t.claim = Some(claim);
                    }
                    dev.touch(now_ms());
                    self.touch_terminal();
                    self.went_online(&dev, protocol.as_str());
                    check_commands = true;
                }
                Action::CheckAccess { enrollids } => {
                    let facts = self.access_facts(enrollids);
                    let now = timestamp_now();
                    if let Some(t) = self.terminal() {
                        let more = t.conv.on_access(facts, now);
                        for a in more.into_iter().rev() {
                            work.push_front(a);
                        }
                    }
                }
                Action::SaveToken(token) => {
                    let hash = auth::hex(&auth::hash_token(&token));
                    self.update_settings(|s| {
                        s.insert(SETTING_TOKEN_HASH.into(), hash);
                    });
                }
                Action::SavePosition(pos) => {
                    if !failed_before {
                        self.reached_position(pos);
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
                    let local = self.local;
                    let staged =
                        attendance::stage_records(local.fleet(), &local.batcher, &dev, &records);
                    let outcome = match staged {
                        Ok(Some(ticket)) => {
                            self.staged(&ticket);
                            Staged::Batch(ticket)
                        }
                        Ok(None) => Staged::Known(true),
                        Err(e) => {
                            tracing::error!(error = %e, "staging attendance failed");
                            Staged::Known(false)
                        }
                    };
                    // The position these records reach is saved with their answer.
                    let position = match work.front() {
                        Some(Action::SavePosition(p)) => {
                            let p = *p;
                            work.pop_front();
                            Some(p)
                        }
                        _ => None,
                    };
                    let Some(t) = self.terminal() else { continue };
                    t.unanswered.push_back(Unanswered {
                        outcome,
                        on_stored,
                        on_failed,
                        position,
                    });
                    if t.unanswered.len() >= MAX_UNANSWERED {
                        self.answer_all().await;
                    }
                }
                Action::StoreUser {
                    enrollid,
                    backupnum,
                    payload,
                    on_stored,
                    on_failed,
                } => {
                    let Some(dev) = self.terminal().and_then(|t| t.device().cloned()) else {
                        continue;
                    };
                    let stored_at = self.local.fleet().store.ids.next(now_us());
                    let staged = self.stage(|st| {
                        enrolled::stage(st, &dev.id, enrollid, backupnum, &payload, stored_at)
                    });
                    let ok = match staged {
                        Ok(t) => t.wait().await,
                        Err(e) => {
                            tracing::error!(error = %e, "staging a terminal user failed");
                            false
                        }
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
                    let id = self.local.fleet().store.ids.next(now_us());
                    let hooks = &self.local.fleet().webhooks;
                    let staged = self.stage(|st| {
                        webhooks::stage_device_event(hooks, st, id, &dev.id, &kind, &payload, None)
                    });
                    let ticket = match staged {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::error!(error = %e, "storing a terminal event failed");
                            None
                        }
                    };
                    if self.local.fleet().has_admins() {
                        let ts = crate::time::rfc3339_ms(id / 1000);
                        self.local
                            .fleet()
                            .broadcast(crate::generic::event_broadcast(
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
                    self.ctl.request_close(CloseReason::Ws(1008, reason));
                }
                Action::Unrecognised(name) => {
                    // Debug, not info: firmware that sends an unknown message every few seconds
                    // would fill the log; the counter shows it.
                    let protocol = self.terminal().map_or("terminal", |t| t.protocol.as_str());
                    tracing::debug!(protocol, message = %name, "a terminal message this server does not know: answered with a generic success");
                    metrics::counter!("fleetgate_terminal_unrecognised_total", "protocol" => protocol)
                        .increment(1);
                }
            }
        }
    }

    /// The terminal was heard: its device is seen now, and its dialect's keepalive (Pings when
    /// it goes quiet, then the idle timeout) starts over. Before it is online the register
    /// deadline stands.
    pub(super) fn touch_terminal(&self) {
        if let Role::Terminal(t) = &self.role
            && let Some(dev) = t.device()
        {
            let now = now_ms();
            dev.touch(now);
            self.local
                .heard(self.ctl, t.keepalive(self.local.limits()), now);
        }
    }

    /// Saves the log position the terminal reached, if it has not been saved: at most every
    /// `POSITION_SAVE_EVERY_MS` while logs flow (each save rewrites the device's record, once per
    /// live punch otherwise), and when the session ends.
    pub(super) fn save_position(&mut self) {
        let Some(t) = self.terminal() else { return };
        let Some(pos) = t.unsaved_position.take() else {
            return;
        };
        t.position_saved_ms = now_ms();
        self.update_settings(|s| {
            s.insert(SETTING_LOG_POSITION.into(), pos.to_string());
        });
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

    /// Stages the terminal's records through its device claim (the slot then outlives their
    /// commit), or straight into the batch before it has one.
    fn stage(
        &mut self,
        f: impl FnOnce(&mut crate::store::commit::Staging<'_>) -> Result<(), crate::store::StoreError>,
    ) -> Result<std::rc::Rc<crate::store::commit::Ticket>, crate::store::StoreError> {
        let batch = &self.local.batcher;
        match self.terminal().and_then(|t| t.claim.as_mut()) {
            Some(claim) => claim.stage(batch, f),
            None => batch.stage(f),
        }
    }

    /// Notes a ticket of records staged for the device by other means.
    fn staged(&mut self, ticket: &std::rc::Rc<crate::store::commit::Ticket>) {
        if let Some(claim) = self.terminal().and_then(|t| t.claim.as_mut()) {
            claim.staged(ticket);
        }
    }

    /// Resolves a presented serial: the device (checking its allowed sources, cloud id and token),
    /// or the pending list.
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
        let ip = self.ctl.client().ip();
        let now = now_ms();
        let local = self.local;
        let fleet = local.fleet();
        let dev = match fleet.registry.by_serial(serial) {
            Some(d) => d,
            None => {
                let remote = self.ctl.client().to_string();
                let newcomer = Newcomer {
                    serial,
                    protocol,
                    model,
                    firmware,
                    info: None,
                    remote: &remote,
                    ip,
                };
                match provision::first_contact(fleet, &local.batcher, newcomer).await {
                    Ok(d) => d,
                    Err(_) => return Identity::Unknown,
                }
            }
        };
        // Before every other check: from outside its networks the serial is nobody, and must not
        // count toward the device's flapping ban or authentication back-off.
        if !identity::admit(&dev, ip, serial) {
            return Identity::Refused;
        }
        let settings = dev.with_record(|r| r.settings.clone());
        // The cloud id gates Register (the vendor checks it there); Login frames carry a token
        // instead, and that token was issued only after a Register that passed this check.
        let expected = settings
            .get(identity::SETTING_CLOUD_ID)
            .filter(|c| !c.is_empty());
        // Only a terminal that must show its cloud id meets the authentication back-off: serials
        // alone are not secrets, and others' failures must not refuse terminals that show none.
        if let (Some(expected), None) = (expected, token) {
            if fleet.guard.auth_wait_ms(ip, Some(serial), now) > 0 {
                return Identity::Refused;
            }
            if !identity::secret_matches(expected, cloud_id) {
                self.local.metrics.auth_failures.increment(1);
                fleet.guard.auth_failed(ip, Some(serial), now);
                return Identity::Refused;
            }
            fleet.guard.auth_ok(ip, Some(serial));
        }
        // Flapping counts connections, not frames: only the session's first identification.
        let first = self.terminal().is_some_and(|t| t.dev.is_none());
        if first && fleet.guard.registration(dev.id, now).is_err() {
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
        // The configured zone or none: never the server's own (`crate::clock`).
        let zone = dev.zone();
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
            zone,
            token: token.map(str::to_string),
            log_position,
        })
    }

    /// What the conversation needs to answer an access question: the identified device's access
    /// settings as they are now, and under `enrolled` which of `enrollids` it has a stored user
    /// for. Whatever cannot be read (settings, the store) keeps the door shut.
    fn access_facts(&mut self, enrollids: Vec<u64>) -> AccessFacts {
        let deny = AccessFacts {
            policy: AccessPolicy::DENY,
            enrolled: Vec::new(),
        };
        let Some(dev) = self.terminal().and_then(|t| t.dev.clone()) else {
            return deny;
        };
        let policy = match dev.with_record(|r| AccessPolicy::parse(&r.settings)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(device = %dev.id, error = %e, "an access setting this build does not know: access refused");
                return deny;
            }
        };
        let store = &self.local.fleet().store;
        let enrolled = match policy.rule {
            AccessRule::Enrolled => enrollids
                .into_iter()
                .filter(|&id| {
                    enrolled::is_enrolled(store, &dev.id, id).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "reading a terminal user failed; access refused");
                        false
                    })
                })
                .collect(),
            AccessRule::Allow | AccessRule::Deny => Vec::new(),
        };
        AccessFacts { policy, enrolled }
    }

    /// Starts the next queued command if the terminal is ready for one; its first frames are
    /// returned as actions. Commands the conversation refuses are recorded as failed.
    fn next_command(&mut self) -> Vec<Action> {
        let local = self.local;
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
            let fleet = local.fleet();
            let next =
                commands::take_next(&fleet.store, &fleet.webhooks, &local.batcher, &dev, now);
            let mut cmd = match next {
                Ok(Some(c)) => c,
                Ok(None) => return Vec::new(),
                Err(e) => {
                    tracing::error!(error = %e, "loading queued commands failed");
                    return Vec::new();
                }
            };
            let mut payload = cmd.payload.clone().into_bytes();
            let payload = simd_json::to_owned_value(&mut payload)
                .unwrap_or_else(|_| simd_json::OwnedValue::from(()));
            let started = t.conv.start_command(
                &cmd.command_id.to_string(),
                &cmd.command,
                &payload,
                timestamp_now(),
            );
            match started {
                Ok(actions) => {
                    commands::sent(&fleet.webhooks, &local.batcher, &mut cmd);
                    t.command = Some(cmd);
                    return actions;
                }
                Err(CommandError::Busy | CommandError::NotReady) => {
                    // Not now: it stays first in the queue for the next check.
                    dev.commands.put_back(cmd.seq);
                    return Vec::new();
                }
                Err(CommandError::Invalid(m)) => {
                    commands::fail(local.fleet(), &local.batcher, cmd, &m)
                }
            }
        }
    }

    fn command_done(&mut self, command_id: &str, ok: bool, result: String) {
        let local = self.local;
        let Some(t) = self.terminal() else { return };
        let Some(cmd) = t
            .command
            .take_if(|c| c.command_id.to_string() == command_id)
        else {
            return;
        };
        commands::finish(local.fleet(), &local.batcher, cmd, ok, Some(result));
    }
}
