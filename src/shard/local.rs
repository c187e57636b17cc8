//! A shard's state: the limits and the fleet every shard shares, and what only its own thread
//! touches (connections, buffer pool, timer wheels, batcher), with the per-connection control block
//! the rest of the shard uses to talk to a connection's task.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::fleet::presence;
use crate::fleet::state::Fleet;
use crate::http::request::{Request, Upload};
use crate::keepalive::{Keepalive, Step};
use crate::shard::buf_pool::{self, BufPool};
use crate::shard::handler::Reply;
use crate::shard::hub::{Hub, ShardMsg};
use crate::shard::io::Transport;
use crate::store::commit::{Batcher, Committer};
use crate::time::now_ms;
use crate::timer_wheel::TimerWheel;

/// Size of a pooled read buffer.
pub const POOL_BUF: usize = buf_pool::BUF;
/// The open batch of a shard is committed at the latest when it holds this much.
const BATCH_MAX_BYTES: usize = 4 << 20;
/// Timer resolution: deadlines fire within this of their time.
pub const TICK: Duration = Duration::from_millis(250);

/// The runtime's limits: `serve`'s flags for connections, sessions and buffers (see
/// `config::ServeConfig`, where each one's default and behaviour on reaching it are documented).
#[derive(Clone, Debug)]
pub struct Limits {
    pub shards: usize,
    pub max_message: usize,
    pub max_body: usize,
    pub register_timeout: u64,
    pub ws_idle_timeout: u64,
    pub header_timeout: u64,
    pub keepalive_timeout: u64,
    pub max_connections: usize,
    pub outbox_limit: usize,
    pub inflight_limit: usize,
    pub http_offline_after: u64,
    pub max_msg_rate: u32,
    pub rate_disconnect_after: u64,
    pub write_timeout: u64,
    pub buffer_budget_mb: usize,
    /// `--large-message-budget-mb`, in bytes: read buffers beyond `max_message` and `max_body`,
    /// all shards together.
    pub large_budget: usize,
    /// `--terminal-max-message`: the largest message from a terminal once it is logged in.
    pub terminal_max_message: usize,
    /// The path whose bodies may be as large (`POST /api/device-http`).
    pub upload: Option<Upload>,
    /// Each terminal dialect's ping interval and idle timeout, once the session is online.
    pub aiface: Keepalive,
    pub smackbio: Keepalive,
    /// `--terminal-command-timeout` and `--terminal-slow-command-timeout`.
    pub terminal_timeouts: crate::terminal::Timeouts,
    /// `--trusted-proxies`: peers whose PROXY header and `X-Forwarded-For` name the client.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// Paths that accept WebSocket upgrades (`/ws`, `/pub/chat` and `--ws-paths`).
    pub ws_paths: Vec<String>,
}

/// Answers HTTP requests (everything but the `/ws` upgrade).
pub trait Handler: Send + Sync {
    /// The future is boxed: a route's future is large and lives for one request, so it must not
    /// size every connection's task (idle sessions included).
    fn route<'a>(
        &'a self,
        local: &'a Rc<Local>,
        req: &'a Request,
        remote: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Reply> + 'a>>;
}

/// What every shard shares.
pub struct Shared {
    pub limits: Limits,
    /// The product's state and rules.
    pub fleet: Fleet,
    pub hub: Arc<Hub>,
    /// Serves every HTTP request that is not a WebSocket upgrade (the app's routes).
    pub handler: Arc<dyn Handler>,
    pub connections: AtomicUsize,
    /// Read-buffer bytes beyond `max_message`/`max_body`, all shards together, against
    /// `Limits::large_budget`.
    pub large_bytes: AtomicUsize,
    pub started: Instant,
    /// `--tls-cert`/`--tls-key`: TLS clients are served on the same port as plain ones.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    None,
    /// Idle keep-alive HTTP connection.
    KeepAlive,
    /// An HTTP request head is arriving too slowly.
    Header,
    /// A WebSocket has not registered yet.
    Register,
    /// A registered WebSocket has been silent too long.
    Idle,
    /// A terminal has been quiet for `quiet_s` seconds: ping it, then follow its dialect's
    /// `keepalive` (seconds fit in `u16`, so this costs the control block no room).
    Ping {
        keepalive: Keepalive,
        quiet_s: u16,
    },
}

/// Something queued toward one connection.
pub enum Out {
    Text(String),
    Shared(Arc<str>),
    CommandsPending,
    /// The accounts changed: an admin subscriber checks its credential again (revoked: it closes;
    /// demoted: it becomes read-only).
    Recheck,
}

/// Why a connection is asked to close. A WebSocket hears the close code and reason; an HTTP
/// connection answers the causes that concern its client (limits, a slow request head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `--max-connections` was reached when this connection was accepted.
    ConnectionLimit,
    /// `--max-connections-per-ip` was reached for this connection's address.
    AddressLimit,
    /// A keep-alive or request-head deadline passed.
    DeadlinePassed,
    /// Any other cause: the WebSocket close code and reason.
    Ws(u16, &'static str),
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::ConnectionLimit | CloseReason::AddressLimit => 1013,
            CloseReason::DeadlinePassed => 1001,
            CloseReason::Ws(code, _) => code,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::ConnectionLimit => "server at connection limit",
            CloseReason::AddressLimit => "too many connections from this address",
            CloseReason::DeadlinePassed => "timeout",
            CloseReason::Ws(_, reason) => reason,
        }
    }
}

/// A connection's control block: how the rest of the shard talks to its task.
pub struct ConnCtl {
    pub id: u64,
    /// The client as far as this server can tell: the TCP peer, or the address a trusted proxy
    /// named (PROXY header, or `X-Forwarded-For` on a WebSocket upgrade). Every per-client rule
    /// (auth throttles, per-address limits, logs and events) uses this. The peer itself is not
    /// kept: it only matters before a proxy names anyone, and every connection's control block
    /// is kept small (it lives as long as the connection, idle or not).
    client: Cell<SocketAddr>,
    pub outbox: RefCell<VecDeque<Out>>,
    pub wake: Notify,
    pub close: Cell<Option<CloseReason>>,
    /// A Ping is due on this WebSocket (its keepalive deadline fired).
    ping: Cell<bool>,
    deadline: Cell<(u64, Deadline)>,
    scheduled: Cell<u64>,
    /// Whether this connection counts toward its client's address for `--max-connections-per-ip`
    /// (released when it closes). The client does not change once counted: it is counted at
    /// accept, or, behind a trusted proxy, once the proxy has named it.
    pub(super) addr_counted: Cell<bool>,
}

impl ConnCtl {
    /// Queues a message unless the outbox is at `limit`; false means the receiver is too slow.
    pub fn push(&self, msg: Out, limit: usize) -> bool {
        let mut q = self.outbox.borrow_mut();
        if q.len() >= limit {
            return false;
        }
        q.push_back(msg);
        drop(q);
        self.wake.notify_one();
        true
    }

    pub fn request_close(&self, why: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(why));
        }
        self.wake.notify_one();
    }

    pub fn deadline(&self) -> (u64, Deadline) {
        self.deadline.get()
    }

    fn request_ping(&self) {
        self.ping.set(true);
        self.wake.notify_one();
    }

    /// Whether a Ping is due, clearing it.
    pub fn take_ping(&self) -> bool {
        self.ping.replace(false)
    }

    pub fn client(&self) -> SocketAddr {
        self.client.get()
    }

    pub(super) fn set_client(&self, client: SocketAddr) {
        self.client.set(client);
    }
}

pub struct ShardMetrics {
    pub bytes_in: metrics::Counter,
    pub bytes_out: metrics::Counter,
    pub msg_telemetry: metrics::Counter,
    pub msg_event: metrics::Counter,
    pub msg_ping: metrics::Counter,
    pub msg_command_result: metrics::Counter,
    pub msg_other: metrics::Counter,
    pub protocol_errors: metrics::Counter,
    pub auth_failures: metrics::Counter,
    pub http_requests: metrics::Counter,
    inbox_depth: metrics::Gauge,
    open_batch_bytes: metrics::Gauge,
    connections: metrics::Gauge,
    read_buffer_bytes: metrics::Gauge,
}

impl ShardMetrics {
    fn new(shard: usize) -> Self {
        let msg = |t: &'static str| metrics::counter!("fleetgate_messages_total", "type" => t);
        let depth = |q: &'static str| metrics::gauge!("fleetgate_queue_depth", "queue" => q, "shard" => shard.to_string());
        ShardMetrics {
            bytes_in: metrics::counter!("fleetgate_bytes_received_total"),
            bytes_out: metrics::counter!("fleetgate_bytes_sent_total"),
            msg_telemetry: msg("telemetry"),
            msg_event: msg("event"),
            msg_ping: msg("ping"),
            msg_command_result: msg("command_result"),
            msg_other: msg("other"),
            protocol_errors: metrics::counter!("fleetgate_protocol_errors_total"),
            auth_failures: metrics::counter!("fleetgate_auth_failures_total"),
            http_requests: metrics::counter!("fleetgate_http_requests_total"),
            inbox_depth: depth("inbox"),
            open_batch_bytes: depth("open_batch_bytes"),
            connections: metrics::gauge!("fleetgate_connections", "shard" => shard.to_string()),
            read_buffer_bytes: depth("read_buffer_bytes"),
        }
    }
}

/// The shard's own state; only its thread touches it.
pub struct Local {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub conns: RefCell<HashMap<u64, Rc<ConnCtl>>>,
    pub admins: RefCell<Vec<u64>>,
    pub batcher: Batcher,
    pub metrics: ShardMetrics,
    wheel: RefCell<TimerWheel<u64>>,
    /// HTTP devices this shard saw come online, checked for silence.
    liveness: RefCell<TimerWheel<uuid::Uuid>>,
    pool: RefCell<BufPool>,
    /// Capacity of the read buffers this shard's connections hold, against `in_budget`
    /// (`--buffer-budget-mb` split over the shards), up to `large_above` per buffer; beyond it,
    /// the process-wide `Shared::large_bytes`.
    in_bytes: Cell<usize>,
    in_budget: usize,
    large_above: usize,
    in_freed: Notify,
    next_conn: Cell<u64>,
    pub shutting_down: Cell<bool>,
    pub(super) conns_gone: Notify,
    /// A handle on this shard's inbox, read only to report its depth.
    inbox: crossbeam::channel::Receiver<ShardMsg>,
    /// The accounts' generation this shard's admin subscribers were last checked against.
    accounts_seen: Cell<u64>,
}

impl Local {
    /// A shard's state; `inbox` is read only to report its depth.
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        committer: Committer,
        inbox: crossbeam::channel::Receiver<ShardMsg>,
    ) -> Local {
        let store = shared.fleet.store.clone();
        let in_budget = (shared.limits.buffer_budget_mb << 20) / shared.limits.shards.max(1);
        let large_above = shared.limits.max_message.max(shared.limits.max_body);
        let accounts_seen = shared.fleet.accounts.generation();
        Local {
            index,
            shared,
            conns: RefCell::new(HashMap::new()),
            admins: RefCell::new(Vec::new()),
            batcher: Batcher::new(store, committer, BATCH_MAX_BYTES),
            metrics: ShardMetrics::new(index),
            wheel: RefCell::new(TimerWheel::new(TICK.as_millis() as u64, 4096, now_ms())),
            liveness: RefCell::new(TimerWheel::new(TICK.as_millis() as u64, 4096, now_ms())),
            pool: RefCell::new(BufPool::default()),
            in_bytes: Cell::new(0),
            in_budget,
            large_above,
            in_freed: Notify::new(),
            accounts_seen: Cell::new(accounts_seen),
            next_conn: Cell::new(0),
            shutting_down: Cell::new(false),
            conns_gone: Notify::new(),
            inbox,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    pub fn fleet(&self) -> &Fleet {
        &self.shared.fleet
    }

    /// A read buffer from the pool (empty, with `POOL_BUF` capacity).
    pub fn take_buf(&self) -> Vec<u8> {
        self.pool.borrow_mut().take()
    }

    /// Returns a buffer; oversized ones (a large frame grew them) are freed instead of kept.
    pub fn give_buf(&self, buf: Vec<u8>) {
        self.pool.borrow_mut().give(buf);
    }

    /// A read buffer, charged to the shard's buffer budget.
    pub fn take_in_buf(&self) -> Vec<u8> {
        let buf = self.take_buf();
        self.in_buf_resized(0, buf.capacity());
        buf
    }

    /// Returns a buffer from `take_in_buf` (grown or not), refunding the budget.
    pub fn give_in_buf(&self, buf: Vec<u8>) {
        self.in_buf_resized(buf.capacity(), 0);
        self.give_buf(buf);
        self.in_freed.notify_waiters();
    }

    /// Charges a read buffer's growth (a message larger than one read); false when that took the
    /// shard over its budget, and the message should be refused.
    pub fn in_buf_grew(&self, before: usize, after: usize) -> bool {
        after <= before || self.in_buf_resized(before, after)
    }

    /// Moves a read buffer's charge from `before` to `after` bytes (growth, or a refund). The
    /// first `large_above` bytes of a buffer, what any message or body within the general limits
    /// needs, count toward this shard's budget; bytes beyond, which only a logged-in terminal's
    /// photos and the upload path's bodies reach, toward the process-wide large-message budget,
    /// so that a few terminals uploading at once neither starve the shard's other connections
    /// nor fail for its share of `--buffer-budget-mb`. False when growth took either past its
    /// budget: the charge stays until the buffer is returned, and the message should be refused.
    pub fn in_buf_resized(&self, before: usize, after: usize) -> bool {
        let split = |cap: usize| {
            (
                cap.min(self.large_above),
                cap.saturating_sub(self.large_above),
            )
        };
        let ((small_before, large_before), (small_after, large_after)) =
            (split(before), split(after));
        let small = (self.in_bytes.get() + small_after).saturating_sub(small_before);
        self.in_bytes.set(small);
        let mut within = true;
        if small_after > small_before && small > self.in_budget {
            crate::fleet::guard::hit(crate::fleet::guard::Limit::BufferBudget);
            within = false;
        }
        let large = &self.shared.large_bytes;
        if large_after > large_before {
            let total = large.fetch_add(large_after - large_before, Ordering::Relaxed)
                + (large_after - large_before);
            if total > self.limits().large_budget {
                crate::fleet::guard::hit(crate::fleet::guard::Limit::LargeMessageBudget);
                within = false;
            }
        } else if large_before > large_after {
            large.fetch_sub(large_before - large_after, Ordering::Relaxed);
        }
        within
    }

    /// Whether a connection that holds no read buffer must wait before it takes one.
    pub fn in_budget_full(&self) -> bool {
        let full = self.in_bytes.get() + POOL_BUF > self.in_budget;
        if full {
            crate::fleet::guard::hit(crate::fleet::guard::Limit::BufferBudget);
        }
        full
    }

    /// Resolves when some read buffer is returned.
    pub fn in_buf_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.in_freed.notified()
    }

    pub(super) fn open_conn(&self, peer: SocketAddr) -> Rc<ConnCtl> {
        // Globally unique: the shard index in the top bits.
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        let id = ((self.index as u64) << 48) | n;
        let ctl = Rc::new(ConnCtl {
            id,
            client: Cell::new(peer),
            outbox: RefCell::new(VecDeque::new()),
            wake: Notify::new(),
            close: Cell::new(None),
            ping: Cell::new(false),
            deadline: Cell::new((0, Deadline::None)),
            scheduled: Cell::new(u64::MAX),
            addr_counted: Cell::new(false),
        });
        self.conns.borrow_mut().insert(id, ctl.clone());
        ctl
    }

    pub(super) fn close_conn(&self, ctl: &ConnCtl) {
        self.conns.borrow_mut().remove(&ctl.id);
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        self.uncount_connection(ctl);
        if self.conns.borrow().is_empty() {
            self.conns_gone.notify_waiters();
        }
    }

    /// Sets when `ctl` expires and why. Moving a deadline later is free (the wheel entry re-checks
    /// when it fires); moving it earlier adds an entry.
    pub fn set_deadline(&self, ctl: &ConnCtl, at_ms: u64, kind: Deadline) {
        ctl.deadline.set((at_ms, kind));
        if kind != Deadline::None && at_ms < ctl.scheduled.get() {
            ctl.scheduled.set(at_ms);
            self.wheel.borrow_mut().schedule(ctl.id, at_ms);
        }
    }

    /// A WebSocket's peer was heard at `now`: its next keepalive deadline (a Ping, or the close).
    pub fn heard(&self, ctl: &ConnCtl, keepalive: Keepalive, now: u64) {
        self.keepalive_step(ctl, keepalive, keepalive.heard(now));
    }

    fn keepalive_step(&self, ctl: &ConnCtl, keepalive: Keepalive, step: Step) {
        match step {
            Step::Ping { at_ms, quiet_s } => {
                self.set_deadline(ctl, at_ms, Deadline::Ping { keepalive, quiet_s })
            }
            Step::Close { at_ms } => self.set_deadline(ctl, at_ms, Deadline::Idle),
        }
    }

    /// A request from an HTTP device: it is online now, and goes offline after
    /// `--http-offline-after` without another. The liveness entry is scheduled on the transition
    /// only; later requests just move `last_seen`, which the entry re-checks when it fires.
    pub fn http_seen(&self, dev: &crate::fleet::registry::Device, remote: SocketAddr) {
        let now = now_ms();
        dev.touch(now);
        if !dev.http_online.swap(true, Ordering::AcqRel) {
            let fleet = self.fleet();
            presence::record(
                fleet,
                &self.batcher,
                dev,
                true,
                "http request",
                Some(&remote.to_string()),
            );
            let after = self.limits().http_offline_after * 1000;
            self.liveness.borrow_mut().schedule(dev.id, now + after);
        }
    }

    pub(super) fn tick(&self) {
        self.recheck_admins();
        self.pool.borrow_mut().trim();
        self.metrics.inbox_depth.set(self.inbox.len() as f64);
        self.metrics
            .open_batch_bytes
            .set(self.batcher.open_bytes() as f64);
        self.metrics
            .connections
            .set(self.conns.borrow().len() as f64);
        self.metrics
            .read_buffer_bytes
            .set(self.in_bytes.get() as f64);
        // Process-wide: every shard sets the same value.
        metrics::gauge!("fleetgate_large_message_bytes")
            .set(self.shared.large_bytes.load(Ordering::Relaxed) as f64);
        let now = now_ms();
        let mut silent = Vec::new();
        self.liveness.borrow_mut().advance(now, &mut silent);
        let after = self.limits().http_offline_after * 1000;
        for id in silent {
            let Some(dev) = self.fleet().registry.get(&id) else {
                continue;
            };
            let due = dev.last_seen_ms.load(Ordering::Acquire) + after;
            if now < due {
                self.liveness.borrow_mut().schedule(id, due);
            } else if dev.http_online.swap(false, Ordering::AcqRel) {
                presence::record(self.fleet(), &self.batcher, &dev, false, "timeout", None);
            }
        }
        let mut fired = Vec::new();
        self.wheel.borrow_mut().advance(now, &mut fired);
        for id in fired {
            let Some(ctl) = self.conns.borrow().get(&id).cloned() else {
                continue;
            };
            ctl.scheduled.set(u64::MAX);
            let (at, kind) = ctl.deadline.get();
            match kind {
                Deadline::None => {}
                _ if at > now => self.set_deadline(&ctl, at, kind),
                Deadline::KeepAlive | Deadline::Header => {
                    ctl.request_close(CloseReason::DeadlinePassed)
                }
                Deadline::Register => ctl.request_close(CloseReason::Ws(1008, "register timeout")),
                Deadline::Idle => ctl.request_close(CloseReason::Ws(1001, "idle timeout")),
                Deadline::Ping { keepalive, quiet_s } => {
                    ctl.request_ping();
                    self.keepalive_step(&ctl, keepalive, keepalive.after_ping(at, quiet_s));
                }
            }
        }
    }

    pub(super) fn on_inbox(&self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Close { conn, code, reason } => {
                if let Some(c) = self.conns.borrow().get(&conn) {
                    c.request_close(CloseReason::Ws(code, reason));
                }
            }
            ShardMsg::Commands { conn } => {
                if let Some(c) = self.conns.borrow().get(&conn) {
                    // Never dropped for a full outbox: one pending nudge is enough.
                    if !c
                        .outbox
                        .borrow()
                        .iter()
                        .any(|o| matches!(o, Out::CommandsPending))
                    {
                        c.outbox.borrow_mut().push_back(Out::CommandsPending);
                    }
                    c.wake.notify_one();
                }
            }
            ShardMsg::Broadcast(frame) => self.deliver_broadcast(&frame),
            ShardMsg::Shutdown => return false,
        }
        true
    }

    /// When the accounts changed since the last tick, asks every admin subscriber on this shard to
    /// check its credential again. Polled from the tick, not pushed through the inbox, so a
    /// revocation reaches every shard within one tick even when an inbox is full.
    fn recheck_admins(&self) {
        let now = self.fleet().accounts.generation();
        if self.accounts_seen.replace(now) == now {
            return;
        }
        for id in self.admins.borrow().iter() {
            if let Some(c) = self.conns.borrow().get(id) {
                // Never dropped for a full outbox, and one pending re-check is enough.
                if !c.outbox.borrow().iter().any(|o| matches!(o, Out::Recheck)) {
                    c.outbox.borrow_mut().push_back(Out::Recheck);
                }
                c.wake.notify_one();
            }
        }
    }

    /// Whether `ip` is one of `--trusted-proxies`.
    pub fn trusted_proxy(&self, ip: IpAddr) -> bool {
        crate::cidr::any_contains(&self.limits().trusted_proxies, ip)
    }

    /// Releases what `count_connection` counted, if anything.
    pub(super) fn uncount_connection(&self, ctl: &ConnCtl) {
        if ctl.addr_counted.replace(false) {
            self.fleet().guard.disconnect(ctl.client().ip());
        }
    }

    /// Counts `ctl` toward its client's open connections; false (and the connection asked to
    /// close) when that address is at `--max-connections-per-ip`.
    pub(super) fn count_connection(&self, ctl: &ConnCtl) -> bool {
        if self.fleet().guard.connect(ctl.client().ip()) {
            ctl.addr_counted.set(true);
            true
        } else {
            ctl.request_close(CloseReason::AddressLimit);
            false
        }
    }

    /// Delivers to local admin subscribers; one that cannot keep up is cut off, never buffered
    /// without bound.
    pub fn deliver_broadcast(&self, frame: &Arc<str>) {
        let limit = self.limits().outbox_limit;
        let admins = self.admins.borrow();
        for id in admins.iter() {
            if let Some(c) = self.conns.borrow().get(id)
                && !c.push(Out::Shared(frame.clone()), limit)
            {
                metrics::counter!("fleetgate_slow_subscribers_total").increment(1);
                c.request_close(CloseReason::Ws(1013, "subscriber too slow"));
            }
        }
    }
}

/// Writes `out` (if non-empty) and returns its buffer to the pool, so a connection holds no write
/// buffer between bursts.
pub async fn flush<T: Transport>(io: &T, local: &Local, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let n = out.len();
    // A peer that stops reading must not hold its session (and its buffers) forever.
    let wait = Duration::from_secs(local.limits().write_timeout.max(1));
    let write = std::pin::pin!(io.write_all(std::mem::take(out)));
    let within = Within {
        fut: write,
        wait,
        timer: None,
    };
    match within.await {
        Some((res, buf)) => {
            local.give_buf(buf);
            local.metrics.bytes_out.increment(n as u64);
            res
        }
        None => {
            crate::fleet::guard::hit(crate::fleet::guard::Limit::WriteTimeout);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer did not read for --write-timeout",
            ))
        }
    }
}

/// The output of the future `fut` points to, or `None` once `wait` has passed without it. The
/// timer is set up (boxed) only when the future has to wait: most writes complete at once, and
/// every session's task would otherwise keep room for a timer at its every flush. A plain struct
/// rather than an async fn, so that the future is stored once, by its caller.
struct Within<'a, F: Future> {
    fut: Pin<&'a mut F>,
    wait: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = this.fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        let wait = this.wait;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
        timer.as_mut().poll(cx).map(|()| None)
    }
}

/// Makes sure `out` has a pooled buffer before frames are appended to it.
pub fn out_buf<'a>(local: &Local, out: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
    if out.capacity() == 0 {
        *out = local.take_buf();
    }
    out
}
