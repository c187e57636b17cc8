//! A WebSocket session on `/ws`: the upgrade, then the generic protocol for a device or an admin
//! subscriber (the first frame decides which).
//!
//! The session task owns its socket. Per loop it: queues what others sent it (outbox), turns
//! committed batches into acks, writes everything in one go, then waits for the socket, its outbox,
//! or the next commit. Reading stops while too many records wait for their commit (TCP
//! backpressure instead of unbounded memory).

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

use crate::fleet::accounts::{Principal, Role as AccountRole};
use crate::fleet::commands::{self, EnqueueError, ResultError};
use crate::fleet::ingest::{self, Ingested};
use crate::fleet::links::SessionRef;
use crate::fleet::msg_window::{MsgWindow, RecordRef};
use crate::fleet::registry::{self, Claim, Device};
use crate::fleet::{presence, principal, webhooks};
use crate::generic;
use crate::generic_session::{self, Action, Counted, Record, Stored};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::shard::io::Transport;
use crate::shard::local::{CloseReason, ConnCtl, Deadline, Local, Out, flush, out_buf};
use crate::shard::terminal::{self, Terminal};
use crate::store::commit::Ticket;
use crate::store::records;
use crate::time::{now_ms, rfc3339_ms};
use crate::ws::{self, Event, Opcode};

/// How long a registration waits for the device's previous session to let go.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a closing session waits for its last commits before answering them.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Commands delivered per delivery pass (the rest follow in the next pass).
const DELIVERY_BATCH: usize = 100;

/// A connection whose HTTP request asked for a WebSocket: what the session starts from. Boxed
/// when it is passed, so that neither future keeps room for the request while the session runs.
pub struct Upgrade<T> {
    pub io: T,
    pub request: Request,
    /// Bytes that arrived after the request (its buffer is charged to the read budget).
    pub leftover: Vec<u8>,
}

pub async fn upgrade<T: Transport>(local: &Rc<Local>, ctl: &Rc<ConnCtl>, upgrade: Box<Upgrade<T>>) {
    // Unboxed in a block of its own: a box moved out of in place keeps its allocation until the
    // end of its scope, here the session's end.
    let Upgrade {
        io,
        request,
        mut leftover,
    } = {
        let boxed = upgrade;
        *boxed
    };
    // Nothing came after the request: the session holds no buffer until its first read.
    if leftover.is_empty() && leftover.capacity() > 0 {
        local.give_in_buf(std::mem::take(&mut leftover));
    }
    // The request is consumed here: its headers are not kept for the session's lifetime. The
    // handshake's buffer is scoped to this block, so that the session's task keeps no room for it.
    let cookie_principal = {
        // The 101 and the login session, or the refusal and nothing.
        let (mut out, accepted) = match handshake(local, request) {
            Ok((out, principal)) => (out, Some(principal)),
            Err(refusal) => (refusal, None),
        };
        let written = flush(&io, local, &mut out).await.is_ok();
        match accepted {
            Some(principal) if written => principal,
            _ => {
                if leftover.capacity() > 0 {
                    local.give_in_buf(leftover);
                }
                return;
            }
        }
    };
    let mut s = Session {
        local,
        ctl,
        cookie_principal,
        role: Role::Pending,
        proto: generic_session::Session::default(),
        out: Vec::new(),
        end_reason: None,
        rate: (local.limits().max_msg_rate > 0).then(|| {
            Box::new(crate::fleet::guard::MsgRate::new(
                local.limits().max_msg_rate,
                now_ms(),
            ))
        }),
    };
    local.set_deadline(
        ctl,
        now_ms() + local.limits().register_timeout * 1000,
        Deadline::Register,
    );
    s.run(&io, leftover).await;
    s.end();
}

/// The 101 to send, and the dashboard's login session if the upgrade request's cookie names one.
type Accepted = (Vec<u8>, Option<Box<Principal>>);

/// The WebSocket handshake's answer, or the refusal to send before closing.
fn handshake(local: &Local, req: Request) -> Result<Accepted, Vec<u8>> {
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
            return Err(out);
        }
    }
    // A dashboard subscribes without a token: its login session comes with the upgrade request.
    Ok((out, cookie_principal(local, &req).map(Box::new)))
}

/// The dashboard session of an upgrade request, if its cookie names a live one whose password need
/// not change, and the request comes from this server's own page. Browsers send cookies with
/// cross-site WebSocket upgrades in some cases (SameSite is not honoured everywhere), so the
/// `Origin` must match the `Host` (cross-site WebSocket hijacking).
fn cookie_principal(local: &Local, req: &Request) -> Option<Principal> {
    if let Some(origin) = req.header_str("origin") {
        let host = req.header_str("host")?;
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if !origin_host.eq_ignore_ascii_case(host) {
            return None;
        }
    }
    principal::session(local.fleet(), req, now_ms()).filter(|p| !p.must_change_password)
}

pub(super) enum Role {
    Pending,
    /// A registered generic device; the claim is its device's one session slot.
    Device(Claim),
    /// An admin subscriber, with the credential it subscribed with: checked again before every
    /// command and whenever the accounts change (whether it may send commands is the generic
    /// session's rule, kept in step with the principal's current role). Boxed: every session's
    /// state is as large as its largest role, and idle device sessions must not carry room for a
    /// principal.
    Admin(Box<Principal>),
    /// A biometric terminal (AiFace JSON or SmackBio XML), driven through its sans-IO conversation.
    Terminal(Box<Terminal>),
}

pub(super) struct Session<'a> {
    pub(super) local: &'a Rc<Local>,
    pub(super) ctl: &'a Rc<ConnCtl>,
    /// Who the upgrade request's session cookie belongs to (for a token-less admin subscribe).
    cookie_principal: Option<Box<Principal>>,
    pub(super) role: Role,
    /// The generic protocol's rules (roles, msg_id window, ack order), sans-IO; this session
    /// carries out its actions. Unused by terminals, which have their own conversation.
    proto: generic_session::Session<Rc<Ticket>>,
    out: Vec<u8>,
    /// Why the session ended, for the `device_disconnected` event: the first cause wins.
    pub(super) end_reason: Option<&'static str>,
    /// `--max-msg-rate`: frames per second this session may send before reading stops. Boxed, as
    /// are the role's larger variants: this struct is part of every held session's task, whose
    /// allocation is rounded up to a size class (ARCHITECTURE.md: "A held session costs its state").
    rate: Option<Box<crate::fleet::guard::MsgRate>>,
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

    /// `inbuf`: the bytes that came after the upgrade request.
    async fn run<T: Transport>(&mut self, io: &T, mut inbuf: Vec<u8>) {
        let mut decoder = ws::Decoder::new(self.message_limits());
        // What the decoder's assembly buffer (a fragmented message) is charged to the budgets.
        let mut assembly = 0;
        let inflight_limit = self.local.limits().inflight_limit;
        loop {
            self.drain_outbox().await;
            self.drain_acks();
            self.answer_stored();
            if self.ctl.take_ping() {
                ws::encode_frame(out_buf(self.local, &mut self.out), Opcode::Ping, b"");
            }
            if let Some(why) = self.ctl.close.get() {
                // The rare paths are boxed: an async fn's future is as large as its largest await,
                // and every idle session would otherwise carry the space of these. A terminal's
                // stored log frames are answered before it is closed.
                Box::pin(async {
                    self.answer_all().await;
                    self.close(io, why).await
                })
                .await;
                break;
            }
            if flush(io, self.local, &mut self.out).await.is_err() {
                self.end_reason.get_or_insert("connection lost");
                break;
            }
            // Bytes left over from the upgrade request or a previous read are decoded first.
            if !inbuf.is_empty() {
                match Box::pin(self.decode_all(&mut decoder, &mut assembly, &mut inbuf)).await {
                    Ok(()) => {}
                    Err((code, reason)) => {
                        self.ctl.request_close(CloseReason::Ws(code, reason));
                        continue;
                    }
                }
                if inbuf.is_empty() {
                    self.local.give_in_buf(std::mem::take(&mut inbuf));
                } else {
                    self.make_room(&mut decoder, &mut inbuf);
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
                && self.proto.in_flight() < inflight_limit
                && !self.local.batcher.is_full();
            let front = self
                .proto
                .oldest_batch()
                .or_else(|| self.oldest_unanswered())
                .cloned();
            let idle = can_read && front.is_none() && !self.terminal_busy();
            let readable = if idle {
                // Where a held session spends its life: only its socket and its wake are waited
                // on, so that its suspended task holds nothing else (the waits below are boxed).
                tokio::select! {
                    biased;
                    _ = self.ctl.wake.notified() => continue,
                    r = io.readable() => r,
                }
            } else {
                match Box::pin(self.wait_busy(io, hold, starved, can_read, front)).await {
                    Some(r) => r,
                    None => continue,
                }
            };
            if readable.is_err() {
                self.end_reason.get_or_insert("connection lost");
                break;
            }
            if inbuf.capacity() == 0 {
                inbuf = self.local.take_in_buf();
            }
            let before = inbuf.capacity();
            let (res, buf) = io.read(inbuf).await;
            inbuf = buf;
            if !self.local.in_buf_grew(before, inbuf.capacity()) {
                self.over_budget();
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
            // Boxed (one allocation per read): handling a frame can wait (a registration's
            // hand-over, a terminal's answers), and an idle session must not keep room for it.
            let decoded = Box::pin(self.decode_all(&mut decoder, &mut assembly, &mut inbuf)).await;
            if let Err((code, reason)) = decoded {
                self.ctl.request_close(CloseReason::Ws(code, reason));
            }
            if inbuf.is_empty() {
                self.local.give_in_buf(std::mem::take(&mut inbuf));
            } else {
                self.make_room(&mut decoder, &mut inbuf);
            }
        }
        if inbuf.capacity() > 0 {
            self.local.give_in_buf(inbuf);
        }
        self.local.in_buf_resized(assembly, 0);
    }

    /// The wait of a session with something under way (records being committed, a rate hold, a
    /// starved read, a terminal's pending answers): `Some` when the socket is readable (or failed),
    /// `None` when something else woke the session.
    async fn wait_busy<T: Transport>(
        &mut self,
        io: &T,
        hold: u64,
        starved: bool,
        can_read: bool,
        front: Option<Rc<Ticket>>,
    ) -> Option<std::io::Result<()>> {
        tokio::select! {
            biased;
            _ = self.ctl.wake.notified() => None,
            _ = tokio::time::sleep(Duration::from_millis(hold)), if hold > 0 => None,
            _ = self.local.in_buf_freed(), if starved => None,
            _ = async { if let Some(t) = &front { t.wait().await; } }, if front.is_some() => None,
            _ = self.local.batcher.room(), if !can_read && front.is_none() => None,
            _ = tokio::time::sleep(terminal::TICK), if self.terminal_busy() => {
                Box::pin(self.terminal_tick()).await;
                None
            }
            r = io.readable(), if can_read => Some(r),
        }
    }

    /// What the decoder accepts now. Before the first frame names a dialect, and until a terminal
    /// has logged in, the general `--max-message`: every dialect's first messages (register,
    /// subscribe, `reg`, Register, Login) are small, and an unauthenticated peer must not make the
    /// server hold more. A logged-in terminal may send `--terminal-max-message` (a `sendlog` with
    /// a photo per record, a SmackBio log with its image).
    fn message_limits(&self) -> ws::Limits {
        let limits = self.local.limits();
        let max_message = match &self.role {
            Role::Terminal(t) if t.claim.is_some() => {
                limits.terminal_max_message.max(limits.max_message)
            }
            _ => limits.max_message,
        };
        ws::Limits { max_message }
    }

    /// A frame whose header has come and that is larger than the read buffer gets room for all
    /// of it at once, charged now: a budget that cannot hold it refuses it before its payload is
    /// read, one that can keeps the room for it whatever arrives meanwhile, and the buffer does not
    /// double past it on the way (a whole read's room is left at the end).
    fn make_room(&mut self, decoder: &mut ws::Decoder, inbuf: &mut Vec<u8>) {
        decoder.set_limits(self.message_limits());
        let need = decoder.bytes_needed(inbuf);
        let before = inbuf.capacity();
        if need <= before || self.ctl.close.get().is_some() {
            return;
        }
        inbuf.reserve_exact(need - inbuf.len() + crate::shard::io::MIN_READ);
        if !self.local.in_buf_grew(before, inbuf.capacity()) {
            self.over_budget();
        }
    }

    /// A message that the read-buffer budgets cannot hold: refused, and the session closed with
    /// 1013 (try again later). A generic device or subscriber is told why; a terminal speaks no
    /// such frame, and sends again what it was not answered once it reconnects.
    fn over_budget(&mut self) {
        if !matches!(self.role, Role::Terminal(_)) {
            self.send_error(
                "server_busy",
                "the server's buffer budget is exhausted; send large messages later",
                None,
            );
        }
        self.ctl
            .request_close(CloseReason::Ws(1013, "buffer budget exhausted"));
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
            crate::fleet::guard::hit(crate::fleet::guard::Limit::MsgRate);
        }
        if rate.held_for_ms(now) > self.local.limits().rate_disconnect_after * 1000 {
            crate::fleet::guard::hit(crate::fleet::guard::Limit::RateDisconnect);
            self.send_error(
                "rate_limited",
                "this session kept sending faster than --max-msg-rate allows",
                None,
            );
            self.ctl
                .request_close(CloseReason::Ws(1008, "message rate exceeded"));
            self.end_reason.get_or_insert("message rate exceeded");
        }
        hold
    }

    /// Decodes and handles every complete frame in `inbuf`, leaving a partial frame in place.
    /// `assembly`: what the decoder's assembly buffer is charged to the read-buffer budgets, moved
    /// to what it holds now.
    async fn decode_all(
        &mut self,
        decoder: &mut ws::Decoder,
        assembly: &mut usize,
        inbuf: &mut Vec<u8>,
    ) -> Result<(), (u16, &'static str)> {
        let mut start = 0;
        let mut frames = 0u32;
        let result = loop {
            if self.ctl.close.get().is_some() {
                break Ok(());
            }
            // A frame may have made this session a logged-in terminal.
            decoder.set_limits(self.message_limits());
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
        let held = decoder.assembly_capacity();
        if !self
            .local
            .in_buf_resized(std::mem::replace(assembly, held), held)
        {
            self.over_budget();
        }
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
        if let Role::Device(claim) = &self.role {
            let now = now_ms();
            claim.device().touch(now);
            self.local.set_deadline(
                self.ctl,
                now + self.local.limits().ws_idle_timeout * 1000,
                Deadline::Idle,
            );
        }
    }

    async fn on_text(&mut self, text: &mut [u8]) {
        if matches!(self.role, Role::Pending)
            && let Some(t) = terminal::sniff(text, self.local)
        {
            self.role = Role::Terminal(Box::new(t));
        }
        if matches!(self.role, Role::Terminal(_)) {
            return Box::pin(self.terminal_frame(text)).await;
        }
        let actions = self.proto.on_frame(text);
        self.perform(actions).await;
    }

    /// Carries out the generic session's actions in order; the answers they produce (a
    /// registration's outcome, a store's) are carried out next, before the rest.
    async fn perform(&mut self, actions: Vec<Action>) {
        let mut work: VecDeque<Action> = actions.into();
        while let Some(action) = work.pop_front() {
            let answer = match action {
                Action::Send(frame) => {
                    self.send_text(&frame);
                    continue;
                }
                Action::Register { device_id, token } => {
                    Box::pin(self.register(&device_id, &token)).await
                }
                Action::Subscribe { role, token } => self.subscribe(&role, token.as_deref()),
                Action::Store { record, msg_id } => self.store(record, msg_id),
                Action::Seen(record) => {
                    self.publish(&record);
                    continue;
                }
                Action::CommandResult {
                    command_id,
                    ok,
                    payload,
                } => self.command_result(&command_id, ok, payload),
                Action::Command {
                    device_id,
                    command,
                    payload,
                    ttl_s,
                } => Box::pin(self.admin_command(&device_id, &command, &payload, ttl_s)).await,
                Action::Count(c) => {
                    self.count(c);
                    continue;
                }
                Action::Close(code, reason) => {
                    self.end_reason.get_or_insert(reason);
                    self.ctl.request_close(CloseReason::Ws(code, reason));
                    continue;
                }
            };
            for a in answer.into_iter().rev() {
                work.push_front(a);
            }
        }
    }

    fn count(&self, c: Counted) {
        let m = &self.local.metrics;
        let message = match c {
            Counted::Telemetry => Some(&m.msg_telemetry),
            Counted::Event => Some(&m.msg_event),
            Counted::CommandResult => Some(&m.msg_command_result),
            Counted::Ping => {
                m.msg_ping.increment(1);
                None
            }
            Counted::Other => {
                m.msg_other.increment(1);
                None
            }
            Counted::ProtocolError => {
                m.protocol_errors.increment(1);
                None
            }
        };
        if let Some(counter) = message {
            counter.increment(1);
            self.local.fleet().messages.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stages a record of the registered device through its claim; the answer goes back to the
    /// generic session, which acks once the batch commits.
    fn store(&mut self, record: Record, msg_id: Option<String>) -> Vec<Action> {
        let Role::Device(claim) = &mut self.role else {
            return Vec::new();
        };
        let local = self.local;
        let dev = claim.device().id;
        let ingested = match &record {
            Record::Telemetry { payload, ts } => ingest::message(
                &local.fleet().store,
                local.fleet().rules.msg_ids,
                &local.batcher,
                claim,
                msg_id.as_deref(),
                RecordRef::Telemetry,
                |st, id, m| {
                    records::stage_telemetry(st, &dev, id, ts.as_deref(), payload, m)?;
                    let hooks = &local.fleet().webhooks;
                    if hooks.wants(webhooks::Kind::Telemetry) {
                        let row = records::telemetry_row(id, ts.as_deref(), payload, m);
                        webhooks::stage_telemetry(hooks, st, &dev, &row, m, id / 1000)?;
                    }
                    Ok(())
                },
            ),
            Record::Event {
                event_type,
                payload,
            } => ingest::message(
                &local.fleet().store,
                local.fleet().rules.msg_ids,
                &local.batcher,
                claim,
                msg_id.as_deref(),
                RecordRef::Event,
                |st, id, m| {
                    webhooks::stage_device_event(
                        &local.fleet().webhooks,
                        st,
                        id,
                        &dev,
                        event_type,
                        payload,
                        m,
                    )
                },
            ),
        };
        let outcome = match ingested {
            Ok(Ingested::Duplicate) => Stored::Duplicate,
            Ok(Ingested::Staged(ticket)) => Stored::Staged(ticket),
            Err(e) => {
                tracing::error!(error = %e, "storing a record failed");
                Stored::Failed
            }
        };
        self.publish(&record);
        self.proto.stored(msg_id, outcome)
    }

    /// Shows a device's record to the admin subscribers (live telemetry and events).
    fn publish(&self, record: &Record) {
        let fleet = self.local.fleet();
        let Role::Device(claim) = &self.role else {
            return;
        };
        if !fleet.has_admins() {
            return;
        }
        let id = claim.device().id.to_string();
        let ts = rfc3339_ms(now_ms());
        fleet.broadcast(match record {
            Record::Telemetry { payload, .. } => generic::telemetry_broadcast(&id, &ts, payload),
            Record::Event {
                event_type,
                payload,
            } => generic::event_broadcast(&id, event_type, &ts, payload),
        });
    }

    /// Answers every msg_id whose batch has resolved, in arrival order.
    fn drain_acks(&mut self) {
        for a in self.proto.acks(|t| t.outcome()) {
            match a {
                Action::Send(frame) => self.send_text(&frame),
                Action::Count(c) => self.count(c),
                // Acks are frames and counts only; nothing else is asked of the runtime here.
                _ => {}
            }
        }
    }

    async fn register(&mut self, device_id: &str, token: &str) -> Vec<Action> {
        let fleet = self.local.fleet();
        let guard = &fleet.guard;
        let ip = self.ctl.client().ip();
        let now = now_ms();
        let dev = Uuid::parse_str(device_id)
            .ok()
            .and_then(|id| fleet.registry.get(&id));
        // Before the token: from outside its networks nobody may guess it.
        if let Some(d) = &dev
            && !crate::fleet::identity::admit(d, ip, device_id)
        {
            return self.refuse(
                "source_not_allowed",
                "this device may not connect from this address",
                (1008, "source not allowed"),
            );
        }
        // Then the token, before any throttle: a right one is let in whatever others failed from
        // this address or for this device id (see `Guard::token_failed`).
        let Some(dev) = dev.filter(|d| d.verify_token(token)) else {
            self.local.metrics.auth_failures.increment(1);
            let wait = guard.token_failed(ip, now);
            if wait > 0 {
                return self.refuse(
                    "auth_throttled",
                    &format!(
                        "too many failed authentications from this address; retry in {} s",
                        wait.div_ceil(1000)
                    ),
                    (1008, "authentication throttled"),
                );
            }
            return self.refuse(
                "auth_failed",
                "unknown device_id or wrong token",
                (1008, "authentication failed"),
            );
        };
        if let Err(ban) = guard.registration(dev.id, now) {
            return self.refuse(
                "banned",
                &format!(
                    "this device reconnects too often (flapping); banned for {} s",
                    ban.div_ceil(1000)
                ),
                (1008, "banned for flapping"),
            );
        }
        let links = fleet.links.as_ref();
        let (me, peer) = (self.me(), self.ctl.client());
        // A generic device proves a token, so a takeover is the device itself: nothing to report.
        let Some(registry::TakenOver { mut claim, .. }) =
            registry::take_over(links, &dev, me, peer, HANDOVER_WAIT).await
        else {
            self.local.metrics.protocol_errors.increment(1);
            return self.refuse(
                "busy",
                "the previous session of this device did not close in time; retry",
                (1013, "handover timed out"),
            );
        };
        self.take_from_cluster(&dev, Some(&mut claim)).await;
        let now = now_ms();
        dev.touch(now);
        self.role = Role::Device(claim);
        self.touch();
        let registered = self.proto.registered(dev.id.to_string(), &rfc3339_ms(now));
        self.send_text(&registered);
        self.went_online(&dev, "generic");
        self.deliver_commands(&dev);
        Vec::new()
    }

    /// This session became its device's live one: counted, and announced (event + broadcast).
    /// Generic devices and terminals alike.
    pub(super) fn went_online(&self, dev: &Device, protocol: &'static str) {
        metrics::gauge!("fleetgate_sessions", "protocol" => protocol).increment(1.0);
        let peer = self.ctl.client().to_string();
        let fleet = self.local.fleet();
        presence::record(
            fleet,
            &self.local.batcher,
            dev,
            true,
            "registered",
            Some(&peer),
        );
    }

    /// The device's live session ends: the counterpart of `went_online`.
    fn went_offline(&self, dev: &Device, protocol: &'static str) {
        metrics::gauge!("fleetgate_sessions", "protocol" => protocol).decrement(1.0);
        let peer = self.ctl.client().to_string();
        let reason = self.end_reason.unwrap_or("closed");
        let fleet = self.local.fleet();
        presence::record(fleet, &self.local.batcher, dev, false, reason, Some(&peer));
    }

    /// A registration or subscription that may not proceed: the session answers and closes.
    fn refuse(&mut self, code: &str, message: &str, close: (u16, &'static str)) -> Vec<Action> {
        self.proto.refused(code, message, close)
    }

    fn subscribe(&mut self, role: &str, token: Option<&str>) -> Vec<Action> {
        // A token (bootstrap admin token or named API token) if sent, else the session cookie.
        let principal = match token {
            Some(t) => principal::bearer(self.local.fleet(), &self.local.batcher, t, now_ms()),
            None => self.cookie_principal.take().map(|p| *p),
        };
        let Some(principal) = principal.filter(|_| role == "admin") else {
            self.local.metrics.auth_failures.increment(1);
            // As for HTTP: only a presented token counts, and only a wrong one is ever throttled.
            let ip = self.ctl.client().ip();
            if token.is_some() && self.local.fleet().guard.token_failed(ip, now_ms()) > 0 {
                return self.refuse(
                    "auth_throttled",
                    "too many failed authentications from this address; retry later",
                    (1008, "authentication throttled"),
                );
            }
            return self.refuse(
                "auth_failed",
                "subscribe needs role \"admin\" and a valid token or dashboard session",
                (1008, "authentication failed"),
            );
        };
        let read_only = principal.role != AccountRole::Admin;
        self.role = Role::Admin(Box::new(principal));
        // Dashboards may be silent for hours; their liveness is the outbox bound and write errors.
        self.local.set_deadline(self.ctl, 0, Deadline::None);
        self.local.admins.borrow_mut().push(self.ctl.id);
        self.local.shared.hub.admin_joined();
        metrics::gauge!("fleetgate_sessions", "protocol" => "admin").increment(1.0);
        let subscribed = self.proto.subscribed(read_only, &rfc3339_ms(now_ms()));
        vec![Action::Send(subscribed)]
    }

    /// One live session per device: the holder is asked to close, and its slot passes once every
    /// record it staged has resolved (exact de-duplication). None (with the session closing) if
    /// the holder does not let go in time. For terminals, which claim on their `Online` action.
    pub(super) async fn claim(
        &mut self,
        dev: &std::sync::Arc<Device>,
    ) -> Option<registry::TakenOver> {
        let links = self.local.fleet().links.as_ref();
        let taken =
            registry::take_over(links, dev, self.me(), self.ctl.client(), HANDOVER_WAIT).await;
        if taken.is_some() {
            self.take_from_cluster(dev, None).await;
        }
        if taken.is_none() {
            self.send_error(
                "busy",
                "the previous session of this device did not close in time; retry",
                None,
            );
            self.ctl
                .request_close(CloseReason::Ws(1013, "handover timed out"));
        }
        taken
    }

    /// In a cluster, makes this node the device's owner before the session goes on: the node that
    /// held it closes its session and hands over the msg_ids the device stored there recently,
    /// which this session's window then treats as stored. NATS away, the device is served here
    /// all the same (a re-send of a record stored on another node may then be stored again).
    async fn take_from_cluster(
        &self,
        dev: &std::sync::Arc<Device>,
        claim: Option<&mut registry::Claim>,
    ) {
        let fleet = self.local.fleet();
        let Some(port) = fleet.cluster.port() else {
            return;
        };
        dev.owned_epoch
            .store(registry::TAKING, std::sync::atomic::Ordering::Release);
        match port.take_ownership(dev.id).await {
            Ok(ids) => {
                if let Some(claim) = claim
                    && !ids.is_empty()
                {
                    let remember = fleet.rules.msg_ids;
                    let since = crate::time::now_us().saturating_sub(remember.retention_us);
                    match MsgWindow::fill(&fleet.store, &dev.id, remember.window, since) {
                        Ok(w) => *claim.msg_window() = Some(Box::new(w.with_elsewhere(ids))),
                        Err(e) => {
                            tracing::error!(error = %e, "reading the device's msg_ids failed")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(device = %dev.id, error = %e, "the cluster could not record this node as the device's owner; serving it here")
            }
        }
    }

    /// Sends queued commands in order, marking them sent (or expired) in the store.
    fn deliver_commands(&mut self, dev: &Device) {
        let local = self.local;
        let mut frames = Vec::new();
        let delivered = commands::deliver(
            &local.fleet().store,
            &local.fleet().webhooks,
            &local.batcher,
            dev,
            now_ms(),
            DELIVERY_BATCH,
            |c| {
                frames.push(generic::command(
                    &c.command_id.to_string(),
                    &c.command,
                    &c.payload,
                ))
            },
        );
        for f in frames {
            self.send_text(&f);
        }
        match delivered {
            Ok(true) => {
                self.ctl.push(Out::CommandsPending, usize::MAX);
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "delivering queued commands failed"),
        }
    }

    fn command_result(
        &mut self,
        command_id: &str,
        ok: bool,
        payload: Option<String>,
    ) -> Vec<Action> {
        let Role::Device(claim) = &self.role else {
            return Vec::new();
        };
        let dev = claim.device().clone();
        let local = self.local;
        let recorded =
            commands::result(local.fleet(), &local.batcher, &dev, command_id, ok, payload);
        match recorded {
            Ok(()) => {}
            Err(ResultError::Store(e)) => {
                tracing::error!(error = %e, "command lookup failed");
                self.send_error(
                    "not_stored",
                    "the result could not be recorded; send it again",
                    None,
                );
            }
            Err(ResultError::Unknown) => self.send_error(
                "unknown_command",
                "no command with this command_id was sent to this device",
                None,
            ),
        }
        Vec::new()
    }

    async fn admin_command(
        &mut self,
        device_id: &str,
        command: &str,
        payload: &str,
        ttl_s: Option<u64>,
    ) -> Vec<Action> {
        // Authorised against the principal as it is now, not as it was at subscribe.
        if !self.recheck_admin() {
            if self.ctl.close.get().is_none() {
                self.send_error("forbidden", "viewers may not send commands", None);
            }
            return Vec::new();
        }
        let fleet = self.local.fleet();
        let dev = Uuid::parse_str(device_id)
            .ok()
            .and_then(|id| fleet.registry.get(&id));
        let Some(dev) = dev else {
            self.send_error("unknown_device", "no device with this device_id", None);
            return Vec::new();
        };
        match commands::enqueue(fleet, &self.local.batcher, &dev, command, payload, ttl_s).await {
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
            Err(EnqueueError::Cluster(m)) => self.send_error("cluster_unavailable", &m, None),
        }
        Vec::new()
    }

    async fn drain_outbox(&mut self) {
        loop {
            let next = self.ctl.outbox.borrow_mut().pop_front();
            match next {
                None => return,
                Some(Out::Text(t)) => self.send_text(&t),
                Some(Out::Shared(t)) => self.send_text(&t),
                Some(Out::CommandsPending) => match &self.role {
                    Role::Device(claim) => {
                        let dev = claim.device().clone();
                        self.deliver_commands(&dev);
                    }
                    Role::Terminal(_) => Box::pin(self.terminal_commands()).await,
                    _ => {}
                },
                Some(Out::Recheck) => {
                    self.recheck_admin();
                }
            }
        }
    }

    /// Checks an admin subscriber's credential against the accounts as they are now. Revoked
    /// (token deleted, logged out, password changed elsewhere, user deleted): the subscriber is
    /// told and closed, and false is returned. Demoted or promoted: it is told, and its commands
    /// follow the new role; a viewer's commands are then refused by the generic session.
    fn recheck_admin(&mut self) -> bool {
        let Role::Admin(p) = &self.role else {
            return false;
        };
        let Some(now) = principal::current(&self.local.fleet().accounts, p, now_ms()) else {
            tracing::info!(principal = %p.name, "admin subscriber's credential revoked: closing");
            self.send_error(
                "credential_revoked",
                "the token or session this subscription rests on is no longer valid; subscribe again",
                None,
            );
            self.end_reason.get_or_insert("credential revoked");
            self.ctl
                .request_close(CloseReason::Ws(1008, "credential revoked"));
            return false;
        };
        let read_only = now.role != AccountRole::Admin;
        if let Some(frame) = self.proto.admin_role(read_only) {
            self.send_text(&frame);
        }
        self.role = Role::Admin(Box::new(now));
        !read_only
    }

    /// Closing: stop reading, answer what is still being committed (bounded), send the close frame.
    async fn close<T: Transport>(&mut self, io: &T, why: CloseReason) {
        self.end_reason.get_or_insert(why.reason());
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(t) = self.proto.newest_batch().cloned() {
                t.wait().await;
                self.drain_acks();
            }
        })
        .await;
        self.drain_acks();
        ws::encode_close(out_buf(self.local, &mut self.out), why.code(), why.reason());
        let _ = flush(io, self.local, &mut self.out).await;
    }

    /// The session is over. Its device goes offline, and its claim is dropped: the slot passes to
    /// a newer session only once everything this one staged has resolved (see `Claim`).
    fn end(&mut self) {
        // The position the terminal's logs reached, saved before its claim is let go.
        self.save_position();
        if self.out.capacity() > 0 {
            self.local.give_buf(std::mem::take(&mut self.out));
        }
        match std::mem::replace(&mut self.role, Role::Pending) {
            // The claim is dropped at the end of the arm, after the offline event is staged.
            Role::Device(claim) => self.went_offline(claim.device(), "generic"),
            Role::Admin(_) => {
                metrics::gauge!("fleetgate_sessions", "protocol" => "admin").decrement(1.0);
                self.local
                    .admins
                    .borrow_mut()
                    .retain(|&id| id != self.ctl.id);
                self.local.shared.hub.admin_left();
            }
            Role::Terminal(t) => {
                if let Some(dev) = t.device() {
                    self.went_offline(dev, t.protocol().as_str());
                }
            }
            Role::Pending => {}
        }
    }
}
