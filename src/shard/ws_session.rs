//! A WebSocket session on `/ws`: the upgrade, then the generic protocol for a device or an admin
//! subscriber (the first frame decides which).
//!
//! The session task owns its socket. Per loop it: queues what others sent it (outbox), turns
//! committed batches into acks, writes everything in one go, then waits for the socket, its outbox,
//! or the next commit. Reading stops while too many records wait for their commit (TCP
//! backpressure instead of unbounded memory).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use simd_json::prelude::*;
use uuid::Uuid;

use super::io::Transport;
use super::{ConnCtl, Deadline, Local, Out, flush, out_buf};
use crate::commands::{self, EnqueueError};
use crate::generic::{self, Inbound};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::json;
use crate::registry::{Device, SessionRef};
use crate::store::commit::Ticket;
use crate::store::records::{self, CommandStatus, Source};
use crate::store::{Cf, keys};
use crate::time::{now_ms, now_us, rfc3339_ms};
use crate::ws::{self, Event, Opcode};

/// Largest telemetry/event payload (JSON text). Bigger: error `payload_too_large`, session stays open.
const MAX_PAYLOAD: usize = 256 * 1024;
/// How long a registration waits for the device's previous session to let go.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a closing session waits for its last commits before answering them.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Commands delivered per delivery pass (the rest follow in the next pass).
const DELIVERY_BATCH: usize = 100;

pub async fn upgrade<T: Transport>(
    local: &Rc<Local>,
    ctl: &Rc<ConnCtl>,
    io: T,
    req: Request,
    leftover: Vec<u8>,
) {
    let headers = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
    let mut out = Vec::new();
    match ws::handshake::accept("GET", headers) {
        Ok(resp) => out_buf(local, &mut out).extend_from_slice(&resp),
        Err(e) => {
            let mut r = Response::error(e.status(), e.code(), e.message());
            for (name, value) in e.response_headers() {
                r = r.with_header(name, value.to_string());
            }
            r.write_to(out_buf(local, &mut out), false, false);
            let _ = flush(&io, local, &mut out).await;
            return;
        }
    }
    if flush(&io, local, &mut out).await.is_err() {
        return;
    }
    // A dashboard subscribes without a token: its login session comes with the upgrade request.
    let cookie_principal = cookie_principal(local, &req);
    let mut s = Session {
        local,
        ctl,
        cookie_principal,
        role: Role::Pending,
        pending: VecDeque::new(),
        pending_ids: HashMap::new(),
        out: Vec::new(),
        end_reason: None,
        rate: (local.config().max_msg_rate > 0)
            .then(|| crate::guard::MsgRate::new(local.config().max_msg_rate, now_ms())),
    };
    local.set_deadline(
        ctl,
        now_ms() + local.config().register_timeout * 1000,
        Deadline::Register,
    );
    s.run(&io, leftover).await;
    s.end().await;
}

/// The dashboard session of an upgrade request, if its cookie names a live one whose password need
/// not change, and the request comes from this server's own page. Browsers send cookies with
/// cross-site WebSocket upgrades in some cases (SameSite is not honoured everywhere), so the
/// `Origin` must match the `Host` (cross-site WebSocket hijacking).
fn cookie_principal(local: &Local, req: &Request) -> Option<crate::accounts::Principal> {
    if let Some(origin) = req.header_str("origin") {
        let host = req.header_str("host")?;
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if !origin_host.eq_ignore_ascii_case(host) {
            return None;
        }
    }
    crate::api::session_principal(local, req, now_ms()).filter(|p| !p.must_change_password)
}

pub(super) enum Role {
    Pending,
    Device(Arc<Device>),
    /// An admin subscriber; `read_only` for viewers, who may not send commands.
    Admin {
        read_only: bool,
    },
    /// A biometric terminal (AiFace JSON or SmackBio XML), driven through its sans-IO conversation.
    Terminal(Box<super::terminal::Terminal>),
}

pub(super) struct Session<'a> {
    pub(super) local: &'a Rc<Local>,
    pub(super) ctl: &'a Rc<ConnCtl>,
    /// Who the upgrade request's session cookie belongs to (for a token-less admin subscribe).
    cookie_principal: Option<crate::accounts::Principal>,
    pub(super) role: Role,
    /// Records waiting for their batch, in commit order, with the msg_id to ack.
    pending: VecDeque<(Rc<Ticket>, String)>,
    /// The msg_ids in `pending`, each with the ticket of the batch holding its first copy.
    pending_ids: HashMap<String, Rc<Ticket>>,
    out: Vec<u8>,
    /// Why the session ended, for the `device_disconnected` event: the first cause wins.
    pub(super) end_reason: Option<&'static str>,
    /// `--max-msg-rate`: frames per second this session may send before reading stops.
    rate: Option<crate::guard::MsgRate>,
}

impl Session<'_> {
    pub(super) fn me(&self) -> SessionRef {
        SessionRef {
            shard: self.local.index,
            conn: self.ctl.id,
        }
    }

    pub(super) fn send_text(&mut self, text: &str) {
        ws::encode_frame(
            out_buf(self.local, &mut self.out),
            Opcode::Text,
            text.as_bytes(),
        );
    }

    pub(super) fn send_error(&mut self, code: &str, message: &str, msg_id: Option<&str>) {
        self.local.metrics.protocol_errors.increment(1);
        self.send_text(&generic::error(code, message, msg_id));
    }

    async fn run<T: Transport>(&mut self, io: &T, leftover: Vec<u8>) {
        let mut decoder = ws::Decoder::new(ws::Limits {
            max_message: self.local.config().max_message,
        });
        let mut inbuf = leftover;
        let inflight_limit = self.local.config().inflight_limit;
        loop {
            self.drain_outbox().await;
            self.drain_acks();
            if let Some((code, reason)) = self.ctl.close.get() {
                // The rare paths are boxed: an async fn's future is as large as its largest await,
                // and every idle session would otherwise carry the space of these.
                Box::pin(self.close(io, code, reason)).await;
                break;
            }
            if flush(io, self.local, &mut self.out).await.is_err() {
                self.end_reason.get_or_insert("connection lost");
                break;
            }
            // Bytes left over from the upgrade request or a previous read are decoded first.
            if !inbuf.is_empty() {
                match self.decode_all(&mut decoder, &mut inbuf).await {
                    Ok(()) => {}
                    Err((code, reason)) => {
                        self.ctl.request_close(code, reason);
                        continue;
                    }
                }
                if inbuf.is_empty() {
                    self.local.give_in_buf(std::mem::take(&mut inbuf));
                }
                if self.ctl.close.get().is_some() || !self.out.is_empty() {
                    continue;
                }
            }
            let hold = self.rate_hold();
            if self.ctl.close.get().is_some() {
                continue;
            }
            // A connection holding no buffer waits for one while the shard is over its budget.
            let starved = inbuf.capacity() == 0 && self.local.in_budget_full();
            let can_read = hold == 0
                && !starved
                && self.pending.len() < inflight_limit
                && !self.local.batcher.is_full();
            let front = self.pending.front().map(|(t, _)| t.clone());
            tokio::select! {
                biased;
                _ = self.ctl.wake.notified() => continue,
                _ = tokio::time::sleep(Duration::from_millis(hold)), if hold > 0 => continue,
                _ = self.local.in_buf_freed(), if starved => continue,
                _ = async { if let Some(t) = &front { t.wait().await; } }, if front.is_some() => continue,
                _ = self.local.batcher.room(), if !can_read && front.is_none() => continue,
                _ = tokio::time::sleep(super::terminal::TICK), if self.terminal_busy() => {
                    Box::pin(self.terminal_tick()).await;
                    continue;
                }
                r = io.readable(), if can_read => {
                    if r.is_err() {
                        self.end_reason.get_or_insert("connection lost");
                        break;
                    }
                }
            }
            if inbuf.capacity() == 0 {
                inbuf = self.local.take_in_buf();
            }
            let before = inbuf.capacity();
            let (res, buf) = io.read(inbuf).await;
            inbuf = buf;
            if !self.local.in_buf_grew(before, inbuf.capacity()) {
                self.send_error(
                    "server_busy",
                    "the server's buffer budget is exhausted; send large messages later",
                    None,
                );
                self.ctl.request_close(1013, "buffer budget exhausted");
                continue;
            }
            match res {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if inbuf.is_empty() {
                        self.local.give_in_buf(std::mem::take(&mut inbuf));
                    }
                    continue;
                }
                Ok(0) => {
                    self.end_reason.get_or_insert("connection closed");
                    break;
                }
                Err(_) => {
                    self.end_reason.get_or_insert("connection lost");
                    break;
                }
                Ok(n) => self.local.metrics.bytes_in.increment(n as u64),
            }
            if let Err((code, reason)) = self.decode_all(&mut decoder, &mut inbuf).await {
                self.ctl.request_close(code, reason);
            }
            if inbuf.is_empty() {
                self.local.give_in_buf(std::mem::take(&mut inbuf));
            }
        }
        if inbuf.capacity() > 0 {
            self.local.give_in_buf(inbuf);
        }
    }

    /// How long to stop reading for `--max-msg-rate` (0: read now). A session held back for
    /// `--rate-disconnect-after` without a pause is asked to close instead.
    fn rate_hold(&mut self) -> u64 {
        let Some(rate) = &mut self.rate else { return 0 };
        let now = now_ms();
        let (hold, started) = rate.hold_ms(now);
        if hold == 0 {
            return 0;
        }
        if started {
            crate::guard::hit(crate::guard::Limit::MsgRate);
        }
        if rate.held_for_ms(now) > self.local.config().rate_disconnect_after * 1000 {
            crate::guard::hit(crate::guard::Limit::RateDisconnect);
            self.send_error(
                "rate_limited",
                "this session kept sending faster than --max-msg-rate allows",
                None,
            );
            self.ctl.request_close(1008, "message rate exceeded");
            self.end_reason.get_or_insert("message rate exceeded");
        }
        hold
    }

    /// Decodes and handles every complete frame in `inbuf`, leaving a partial frame in place.
    async fn decode_all(
        &mut self,
        decoder: &mut ws::Decoder,
        inbuf: &mut Vec<u8>,
    ) -> Result<(), (u16, &'static str)> {
        let mut start = 0;
        let mut frames = 0u32;
        let result = loop {
            if self.ctl.close.get().is_some() {
                break Ok(());
            }
            match decoder.decode(&mut inbuf[start..]) {
                Ok(ws::Decoded { consumed, event }) => {
                    start += consumed;
                    let Some(event) = event else { break Ok(()) };
                    frames += 1;
                    match event {
                        Event::Text(text) => self.on_text(text).await,
                        Event::Binary(_) => self.send_error(
                            "invalid_message",
                            "binary frames are not part of this protocol; send JSON text",
                            None,
                        ),
                        Event::Ping(p) => {
                            let p = p.to_vec();
                            ws::encode_frame(out_buf(self.local, &mut self.out), Opcode::Pong, &p);
                        }
                        Event::Pong(_) => {}
                        Event::Close { code, .. } => {
                            self.end_reason.get_or_insert("closed by peer");
                            break Err((code.unwrap_or(1000), ""));
                        }
                    }
                    self.touch();
                }
                Err(e) => {
                    self.end_reason.get_or_insert("protocol error");
                    break Err((e.code, e.reason));
                }
            }
        };
        inbuf.drain(..start);
        if let Some(rate) = &mut self.rate
            && frames > 0
        {
            rate.spend(frames, now_ms());
        }
        result
    }

    fn touch(&self) {
        if matches!(self.role, Role::Terminal(_)) {
            return self.touch_terminal();
        }
        if let Role::Device(dev) = &self.role {
            let now = now_ms();
            dev.touch(now);
            self.local.set_deadline(
                self.ctl,
                now + self.local.config().ws_idle_timeout * 1000,
                Deadline::Idle,
            );
        }
    }

    async fn on_text(&mut self, text: &mut [u8]) {
        if matches!(self.role, Role::Pending) {
            if let Some(t) = super::terminal::sniff(text, self.local) {
                self.role = Role::Terminal(Box::new(t));
            }
        }
        if matches!(self.role, Role::Terminal(_)) {
            return Box::pin(self.terminal_frame(text)).await;
        }
        // A payload is part of its frame: a frame within the limit cannot carry a payload over it,
        // so only larger frames pay for measuring (re-encoding) the payload in `classify`.
        let payload_limit = if text.len() <= MAX_PAYLOAD {
            usize::MAX
        } else {
            MAX_PAYLOAD
        };
        let value = match generic::parse(text) {
            Ok(v) => v,
            Err(e) => {
                if matches!(self.role, Role::Pending) {
                    self.send_error(
                        "not_registered",
                        "the first frame must be a register or subscribe message",
                        None,
                    );
                    self.ctl.request_close(1008, "not registered");
                } else {
                    self.send_error(e.code, &e.message, None);
                }
                return;
            }
        };
        let msg = match generic::classify(&value, payload_limit) {
            Ok(m) => m,
            Err(e) => {
                if matches!(self.role, Role::Pending) {
                    self.send_error(
                        "not_registered",
                        "the first frame must be a register or subscribe message",
                        None,
                    );
                    self.ctl.request_close(1008, "not registered");
                } else {
                    let id = value.get("msg_id").map(json::encode);
                    self.send_error(e.code, &e.message, id.as_deref());
                }
                return;
            }
        };
        match (&self.role, msg) {
            (Role::Pending, Inbound::Register { device_id, token }) => {
                Box::pin(self.register(device_id, token)).await
            }
            (Role::Pending, Inbound::Subscribe { role, token }) => self.subscribe(role, token),
            (Role::Pending, _) => {
                self.send_error(
                    "not_registered",
                    "the first frame must be a register or subscribe message",
                    None,
                );
                self.ctl.request_close(1008, "not registered");
            }
            (_, Inbound::Ping) => {
                self.local.metrics.msg_ping.increment(1);
                self.send_text(generic::PONG);
            }
            (_, Inbound::Pong) => {}
            (_, Inbound::Register { .. } | Inbound::Subscribe { .. }) => self.send_error(
                "already_registered",
                "this session is already registered",
                None,
            ),
            (
                Role::Device(dev),
                Inbound::Telemetry {
                    device_id,
                    payload,
                    ts,
                    msg_id,
                },
            ) => {
                let dev = dev.clone();
                self.local.metrics.msg_telemetry.increment(1);
                self.local.shared.messages.fetch_add(1, Ordering::Relaxed);
                if self.mismatch(&dev, device_id, msg_id) {
                    return;
                }
                let payload = json::encode(payload);
                let ts = ts.map(json::encode);
                self.store_record(&dev, msg_id.map(json::encode), |st, id, m| {
                    records::stage_telemetry(st, &dev.id, id, ts.as_deref(), &payload, m)
                });
                if self.local.shared.hub.has_admins() {
                    self.local.broadcast(generic::telemetry_broadcast(
                        &dev.id.to_string(),
                        &rfc3339_ms(now_ms()),
                        &payload,
                    ));
                }
            }
            (
                Role::Device(dev),
                Inbound::Event {
                    device_id,
                    event_type,
                    payload,
                    msg_id,
                },
            ) => {
                let dev = dev.clone();
                self.local.metrics.msg_event.increment(1);
                self.local.shared.messages.fetch_add(1, Ordering::Relaxed);
                if self.mismatch(&dev, device_id, msg_id) {
                    return;
                }
                let payload = payload.map_or_else(|| "{}".to_string(), json::encode);
                self.store_record(&dev, msg_id.map(json::encode), |st, id, m| {
                    records::stage_event(
                        st,
                        id,
                        Some(&dev.id),
                        event_type,
                        Source::Device,
                        &payload,
                        m,
                    )
                });
                if self.local.shared.hub.has_admins() {
                    self.local.broadcast(generic::event_broadcast(
                        &dev.id.to_string(),
                        event_type,
                        &rfc3339_ms(now_ms()),
                        &payload,
                    ));
                }
            }
            (
                Role::Device(dev),
                Inbound::CommandResult {
                    command_id,
                    ok,
                    payload,
                },
            ) => {
                let dev = dev.clone();
                self.local.metrics.msg_command_result.increment(1);
                self.local.shared.messages.fetch_add(1, Ordering::Relaxed);
                self.command_result(&dev, command_id, ok, payload.map(json::encode));
            }
            (Role::Admin { read_only: true }, Inbound::Command { .. }) => {
                self.send_error("forbidden", "viewers may not send commands", None)
            }
            (
                Role::Admin { read_only: false },
                Inbound::Command {
                    device_id,
                    command,
                    payload,
                    ttl_s,
                },
            ) => {
                let payload = payload.map_or_else(|| "{}".to_string(), json::encode);
                Box::pin(self.admin_command(device_id, command, &payload, ttl_s)).await;
            }
            (_, _) => {
                self.local.metrics.msg_other.increment(1);
                self.send_error(
                    "invalid_message",
                    "this message type is not accepted in this role",
                    None,
                )
            }
        }
    }

    fn mismatch(
        &mut self,
        dev: &Device,
        device_id: Option<&str>,
        msg_id: Option<&simd_json::BorrowedValue<'_>>,
    ) -> bool {
        match device_id {
            Some(d) if Uuid::parse_str(d).ok() != Some(dev.id) => {
                let m = msg_id.map(json::encode);
                self.send_error(
                    "device_mismatch",
                    "device_id does not match the registered device",
                    m.as_deref(),
                );
                true
            }
            _ => false,
        }
    }

    /// Stages one record; with a msg_id, its ack waits for the commit and a repeat is stored once.
    fn store_record(
        &mut self,
        dev: &Device,
        msg_id: Option<String>,
        stage: impl FnOnce(
            &mut crate::store::commit::Staging<'_>,
            u64,
            Option<&str>,
        ) -> Result<(), crate::store::StoreError>,
    ) {
        if let Some(m) = &msg_id {
            if let Some(first) = self.pending_ids.get(m) {
                // Its first copy is still being committed: answer the repeat by that copy's batch
                // (not the newest batch: if the first one fails, the repeat is not stored either).
                // Batches resolve in order, so the queue still answers in order.
                let t = first.clone();
                self.pending.push_back((t, m.clone()));
                return;
            }
            match self
                .local
                .shared
                .store
                .exists(Cf::MsgIds, &keys::msg_id(&dev.id, m))
            {
                Ok(true) => {
                    metrics::counter!("fleetgate_duplicates_total").increment(1);
                    self.send_text(&generic::ack(m));
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "msg_id lookup failed");
                    self.send_error(
                        "not_stored",
                        "the record could not be stored; send it again",
                        Some(m),
                    );
                    return;
                }
            }
        }
        let id = self.local.shared.store.ids.next(now_us());
        match self
            .local
            .batcher
            .stage(|st| stage(st, id, msg_id.as_deref()))
        {
            Ok(ticket) => {
                if let Some(m) = msg_id {
                    self.pending_ids.insert(m.clone(), ticket.clone());
                    self.pending.push_back((ticket, m));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "staging a record failed");
                self.send_error(
                    "not_stored",
                    "the record could not be stored; send it again",
                    msg_id.as_deref(),
                );
            }
        }
    }

    /// Turns every resolved ticket at the front of the queue into an ack (or a "not stored" error).
    fn drain_acks(&mut self) {
        while let Some(ok) = self.pending.front().and_then(|(t, _)| t.outcome()) {
            let Some((_, m)) = self.pending.pop_front() else {
                break;
            };
            self.pending_ids.remove(&m);
            if ok {
                self.send_text(&generic::ack(&m));
            } else {
                self.send_error(
                    "not_stored",
                    "the record could not be stored; send it again",
                    Some(&m),
                );
            }
        }
    }

    async fn register(&mut self, device_id: &str, token: &str) {
        let guard = &self.local.shared.guard;
        let ip = self.ctl.peer.ip();
        let now = now_ms();
        let wait = guard.auth_wait_ms(ip, Some(device_id), now);
        if wait > 0 {
            return self.refuse_register(
                "auth_throttled",
                format!(
                    "too many failed authentications from this address or for this device; retry in {} s",
                    wait.div_ceil(1000)
                ),
                "authentication throttled",
            );
        }
        let dev = Uuid::parse_str(device_id)
            .ok()
            .and_then(|id| self.local.shared.registry.get(&id));
        let Some(dev) = dev.filter(|d| d.verify_token(token)) else {
            self.local.metrics.auth_failures.increment(1);
            guard.auth_failed(ip, Some(device_id), now);
            return self.refuse_register(
                "auth_failed",
                "unknown device_id or wrong token".to_string(),
                "authentication failed",
            );
        };
        guard.auth_ok(ip, Some(device_id));
        if let Err(ban) = guard.registration(dev.id, now) {
            return self.refuse_register(
                "banned",
                format!(
                    "this device reconnects too often (flapping); banned for {} s",
                    ban.div_ceil(1000)
                ),
                "banned for flapping",
            );
        }
        if !self.claim(&dev).await {
            return;
        }
        let now = now_ms();
        dev.touch(now);
        self.role = Role::Device(dev.clone());
        self.touch();
        metrics::gauge!("fleetgate_sessions", "protocol" => "generic").increment(1.0);
        self.send_text(&generic::registered(&dev.id.to_string(), &rfc3339_ms(now)));
        crate::presence::record(
            self.local,
            &dev,
            true,
            "registered",
            Some(&self.ctl.peer.to_string()),
        );
        self.deliver_commands(&dev);
    }

    /// Answers a registration that may not proceed, and closes the session (1008).
    fn refuse_register(&mut self, code: &str, message: String, reason: &'static str) {
        self.send_text(&generic::error(code, &message, None));
        self.ctl.request_close(1008, reason);
        self.end_reason.get_or_insert(reason);
    }

    /// One live session per device: asks the holder to close and waits for it to let go, so its
    /// last commits land before this session can write (exact de-duplication). False (with the
    /// session closing) if the holder does not let go in time.
    pub(super) async fn claim(&mut self, dev: &Device) -> bool {
        let me = self.me();
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        loop {
            let released = dev.released.notified();
            match dev.claim(me) {
                Ok(()) => return true,
                Err(holder) => {
                    self.local.shared.hub.send(
                        holder.shard,
                        crate::hub::ShardMsg::Close {
                            conn: holder.conn,
                            code: 4000,
                            reason: "replaced by a newer session",
                        },
                    );
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        self.send_error(
                            "busy",
                            "the previous session of this device did not close in time; retry",
                            None,
                        );
                        self.ctl.request_close(1013, "handover timed out");
                        return false;
                    }
                }
            }
        }
    }

    fn subscribe(&mut self, role: &str, token: Option<&str>) {
        // A token (bootstrap admin token or named API token) if sent, else the session cookie.
        let principal = match token {
            Some(t) => crate::api::bearer_principal(self.local, t, now_ms()),
            None => self.cookie_principal.take(),
        };
        let ip = self.ctl.peer.ip();
        let now = now_ms();
        let wait = self.local.shared.guard.auth_wait_ms(ip, None, now);
        if wait > 0 {
            return self.refuse_register(
                "auth_throttled",
                format!(
                    "too many failed authentications from this address; retry in {} s",
                    wait.div_ceil(1000)
                ),
                "authentication throttled",
            );
        }
        let granted = principal.filter(|_| role == "admin").map(|p| p.role);
        let Some(granted) = granted else {
            self.local.metrics.auth_failures.increment(1);
            if token.is_some() {
                self.local.shared.guard.auth_failed(ip, None, now);
            }
            self.send_text(&generic::error(
                "auth_failed",
                "subscribe needs role \"admin\" and a valid token or dashboard session",
                None,
            ));
            self.ctl.request_close(1008, "authentication failed");
            return;
        };
        self.role = Role::Admin {
            read_only: granted != crate::accounts::Role::Admin,
        };
        // Dashboards may be silent for hours; their liveness is the outbox bound and write errors.
        self.local.set_deadline(self.ctl, 0, Deadline::None);
        self.local.admins.borrow_mut().push(self.ctl.id);
        self.local.shared.hub.admin_joined();
        metrics::gauge!("fleetgate_sessions", "protocol" => "admin").increment(1.0);
        self.send_text(&generic::subscribed(&rfc3339_ms(now_ms())));
    }

    /// Sends queued commands in order, marking them sent (or expired) in the store.
    fn deliver_commands(&mut self, dev: &Device) {
        let store = self.local.shared.store.clone();
        let after = dev.delivered_through.load(Ordering::Acquire);
        let cmds = match records::commands_after(&store, &dev.id, after, DELIVERY_BATCH) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "loading queued commands failed");
                return;
            }
        };
        let now = now_ms();
        let mut through = after;
        let mut more = cmds.len() == DELIVERY_BATCH;
        for mut c in cmds {
            match c.effective_status(now) {
                CommandStatus::Queued => {
                    self.send_text(&generic::command(
                        &c.command_id.to_string(),
                        &c.command,
                        &c.payload,
                    ));
                    c.status = CommandStatus::Sent;
                    metrics::counter!("fleetgate_commands_total", "stage" => "sent").increment(1);
                }
                CommandStatus::Expired if c.status == CommandStatus::Queued => {
                    c.status = CommandStatus::Expired;
                    metrics::counter!("fleetgate_commands_total", "stage" => "expired")
                        .increment(1);
                }
                _ => {
                    through = c.seq;
                    continue;
                }
            }
            c.updated_at = now;
            through = c.seq;
            dev.queued_commands.fetch_sub(1, Ordering::AcqRel);
            if let Err(e) = self
                .local
                .batcher
                .stage(|st| records::stage_command(st, &c))
            {
                tracing::error!(error = %e, "recording command delivery failed");
                more = false;
                break;
            }
        }
        dev.delivered_through.fetch_max(through, Ordering::AcqRel);
        if more {
            self.ctl.push(Out::CommandsPending, usize::MAX);
        }
    }

    fn command_result(
        &mut self,
        dev: &Device,
        command_id: &str,
        ok: bool,
        payload: Option<String>,
    ) {
        let store = self.local.shared.store.clone();
        let found = Uuid::parse_str(command_id)
            .ok()
            .map(|id| records::get_command(&store, &id));
        let cmd = match found {
            Some(Ok(Some(c))) if c.device_id == dev.id => c,
            Some(Err(e)) => {
                tracing::error!(error = %e, "command lookup failed");
                return self.send_error(
                    "not_stored",
                    "the result could not be recorded; send it again",
                    None,
                );
            }
            _ => {
                return self.send_error(
                    "unknown_command",
                    "no command with this command_id was sent to this device",
                    None,
                );
            }
        };
        commands::finish(self.local, cmd, ok, payload);
    }

    async fn admin_command(
        &mut self,
        device_id: &str,
        command: &str,
        payload: &str,
        ttl_s: Option<u64>,
    ) {
        let dev = Uuid::parse_str(device_id)
            .ok()
            .and_then(|id| self.local.shared.registry.get(&id));
        let Some(dev) = dev else {
            return self.send_error("unknown_device", "no device with this device_id", None);
        };
        match commands::enqueue(self.local, &dev, command, payload, ttl_s).await {
            Ok(c) => self.send_text(&generic::command_queued(
                &c.command_id.to_string(),
                device_id,
                c.status.as_str(),
            )),
            Err(EnqueueError::Invalid(m)) => self.send_error("invalid_message", &m, None),
            Err(EnqueueError::QueueFull(n)) => self.send_error(
                "queue_full",
                &format!("the device already has {n} queued commands"),
                None,
            ),
            Err(EnqueueError::Store(m)) => self.send_error("not_stored", &m, None),
        }
    }

    async fn drain_outbox(&mut self) {
        loop {
            let next = self.ctl.outbox.borrow_mut().pop_front();
            match next {
                None => return,
                Some(Out::Text(t)) => self.send_text(&t),
                Some(Out::Shared(t)) => self.send_text(&t),
                Some(Out::CommandsPending) => match &self.role {
                    Role::Device(dev) => {
                        let dev = dev.clone();
                        self.deliver_commands(&dev);
                    }
                    Role::Terminal(_) => Box::pin(self.terminal_commands()).await,
                    _ => {}
                },
            }
        }
    }

    /// Closing: stop reading, answer what is still being committed (bounded), send the close frame.
    async fn close<T: Transport>(&mut self, io: &T, code: u16, reason: &'static str) {
        self.end_reason.get_or_insert(reason);
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(t) = self.pending.back().map(|(t, _)| t.clone()) {
                t.wait().await;
                self.drain_acks();
            }
        })
        .await;
        self.drain_acks();
        ws::encode_close(out_buf(self.local, &mut self.out), code, reason);
        let _ = flush(io, self.local, &mut self.out).await;
    }

    async fn end(&mut self) {
        if self.out.capacity() > 0 {
            self.local.give_buf(std::mem::take(&mut self.out));
        }
        match std::mem::replace(&mut self.role, Role::Pending) {
            Role::Device(dev) => {
                metrics::gauge!("fleetgate_sessions", "protocol" => "generic").decrement(1.0);
                let reason = self.end_reason.unwrap_or("closed");
                crate::presence::record(
                    self.local,
                    &dev,
                    false,
                    reason,
                    Some(&self.ctl.peer.to_string()),
                );
                dev.release(self.me());
            }
            Role::Admin { .. } => {
                metrics::gauge!("fleetgate_sessions", "protocol" => "admin").decrement(1.0);
                self.local
                    .admins
                    .borrow_mut()
                    .retain(|&id| id != self.ctl.id);
                self.local.shared.hub.admin_left();
            }
            Role::Terminal(t) => {
                if let Some(dev) = t.device() {
                    metrics::gauge!("fleetgate_sessions", "protocol" => t.protocol().as_str())
                        .decrement(1.0);
                    let reason = self.end_reason.unwrap_or("closed");
                    crate::presence::record(
                        self.local,
                        dev,
                        false,
                        reason,
                        Some(&self.ctl.peer.to_string()),
                    );
                    dev.release(self.me());
                }
            }
            Role::Pending => {}
        }
    }
}
