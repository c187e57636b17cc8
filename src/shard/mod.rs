//! A shard: one OS thread pinned to one core, running a current-thread runtime (io_uring or epoll)
//! with its own SO_REUSEPORT listener. It owns every connection it accepts, for that connection's
//! whole life; other threads reach its connections only through its `hub` inbox.

pub mod http_conn;
pub mod io;
pub mod terminal;
pub mod tls;
pub mod ws_session;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

use crate::auth::TokenHash;
use crate::config::ServeConfig;
use crate::hub::{Hub, InboxReceiver, ShardMsg};
use crate::registry::Registry;
use crate::store::Store;
use crate::store::commit::{Batcher, Committer};
use crate::time::now_ms;
use crate::timer_wheel::TimerWheel;
use io::Transport;

/// Read buffers the pool keeps per shard; more are allocated under load and freed after.
const POOL_KEEP: usize = 256;
/// Size of a pooled read buffer.
pub const POOL_BUF: usize = 16 * 1024;
/// The open batch of a shard is committed at the latest when it holds this much.
const BATCH_MAX_BYTES: usize = 4 << 20;
/// Timer resolution: deadlines fire within this of their time.
const TICK: Duration = Duration::from_millis(250);

/// What every shard shares.
pub struct Shared {
    pub config: ServeConfig,
    pub store: Arc<Store>,
    pub registry: Registry,
    pub pending: crate::pending::Pending,
    pub hub: Hub,
    pub admin_token: TokenHash,
    /// Dashboard users, sessions, login throttling and API tokens.
    pub accounts: crate::accounts::Accounts,
    /// Device messages (telemetry, events, command results) since start, for `/api/stats`.
    pub messages: std::sync::atomic::AtomicU64,
    pub prometheus: PrometheusHandle,
    pub connections: AtomicUsize,
    pub started: Instant,
    /// Abuse limits: connections per address, failed authentications, flapping devices.
    pub guard: crate::guard::Guard,
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
}

/// Something queued toward one connection.
pub enum Out {
    Text(String),
    Shared(Arc<str>),
    CommandsPending,
}

/// A connection's control block: how the rest of the shard talks to its task.
pub struct ConnCtl {
    pub id: u64,
    pub peer: SocketAddr,
    pub outbox: RefCell<VecDeque<Out>>,
    pub wake: Notify,
    pub close: Cell<Option<(u16, &'static str)>>,
    deadline: Cell<(u64, Deadline)>,
    scheduled: Cell<u64>,
    /// Whether this connection counts toward its address's limit (released when it closes).
    addr_counted: Cell<bool>,
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

    pub fn request_close(&self, code: u16, reason: &'static str) {
        if self.close.get().is_none() {
            self.close.set(Some((code, reason)));
        }
        self.wake.notify_one();
    }

    pub fn deadline(&self) -> (u64, Deadline) {
        self.deadline.get()
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
    pool: RefCell<Vec<Vec<u8>>>,
    /// Capacity of the read buffers this shard's connections hold, against `in_budget`
    /// (`--buffer-budget-mb` split over the shards).
    in_bytes: Cell<usize>,
    in_budget: usize,
    in_freed: Notify,
    next_conn: Cell<u64>,
    pub shutting_down: Cell<bool>,
    conns_gone: Notify,
    /// A handle on this shard's inbox, read only to report its depth.
    inbox: crossbeam::channel::Receiver<ShardMsg>,
}

impl Local {
    pub fn config(&self) -> &ServeConfig {
        &self.shared.config
    }

    /// A read buffer from the pool (empty, with `POOL_BUF` capacity).
    pub fn take_buf(&self) -> Vec<u8> {
        self.pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(POOL_BUF))
    }

    /// Returns a buffer; oversized ones (a large frame grew them) are freed instead of kept.
    pub fn give_buf(&self, mut buf: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if buf.capacity() == POOL_BUF && pool.len() < POOL_KEEP {
            buf.clear();
            pool.push(buf);
        }
    }

    /// A read buffer, charged to the shard's buffer budget.
    pub fn take_in_buf(&self) -> Vec<u8> {
        let buf = self.take_buf();
        self.in_bytes.set(self.in_bytes.get() + buf.capacity());
        buf
    }

    /// Returns a buffer from `take_in_buf` (grown or not), refunding the budget.
    pub fn give_in_buf(&self, buf: Vec<u8>) {
        self.in_bytes
            .set(self.in_bytes.get().saturating_sub(buf.capacity()));
        self.give_buf(buf);
        self.in_freed.notify_waiters();
    }

    /// Charges a read buffer's growth (a message larger than one read); false when that took the
    /// shard over its budget, and the message should be refused.
    pub fn in_buf_grew(&self, before: usize, after: usize) -> bool {
        if after <= before {
            return true;
        }
        self.in_bytes.set(self.in_bytes.get() + (after - before));
        let within = self.in_bytes.get() <= self.in_budget;
        if !within {
            crate::guard::hit(crate::guard::Limit::BufferBudget);
        }
        within
    }

    /// Whether a connection that holds no read buffer must wait before it takes one.
    pub fn in_budget_full(&self) -> bool {
        let full = self.in_bytes.get() + POOL_BUF > self.in_budget;
        if full {
            crate::guard::hit(crate::guard::Limit::BufferBudget);
        }
        full
    }

    /// Resolves when some read buffer is returned.
    pub fn in_buf_freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.in_freed.notified()
    }

    fn open_conn(&self, peer: SocketAddr) -> Rc<ConnCtl> {
        // Globally unique: the shard index in the top bits.
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        let id = ((self.index as u64) << 48) | n;
        let ctl = Rc::new(ConnCtl {
            id,
            peer,
            outbox: RefCell::new(VecDeque::new()),
            wake: Notify::new(),
            close: Cell::new(None),
            deadline: Cell::new((0, Deadline::None)),
            scheduled: Cell::new(u64::MAX),
            addr_counted: Cell::new(false),
        });
        self.conns.borrow_mut().insert(id, ctl.clone());
        ctl
    }

    fn close_conn(&self, ctl: &ConnCtl) {
        self.conns.borrow_mut().remove(&ctl.id);
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if ctl.addr_counted.get() {
            self.shared.guard.disconnect(ctl.peer.ip());
        }
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

    /// A request from an HTTP device: it is online now, and goes offline after
    /// `--http-offline-after` without another. The liveness entry is scheduled on the transition
    /// only; later requests just move `last_seen`, which the entry re-checks when it fires.
    pub fn http_seen(&self, dev: &std::sync::Arc<crate::registry::Device>, remote: &str) {
        let now = now_ms();
        dev.touch(now);
        if !dev.http_online.swap(true, Ordering::AcqRel) {
            crate::presence::record(self, dev, true, "http request", Some(remote));
            let after = self.config().http_offline_after * 1000;
            self.liveness.borrow_mut().schedule(dev.id, now + after);
        }
    }

    fn tick(&self) {
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
        let now = now_ms();
        let mut silent = Vec::new();
        self.liveness.borrow_mut().advance(now, &mut silent);
        let after = self.config().http_offline_after * 1000;
        for id in silent {
            let Some(dev) = self.shared.registry.get(&id) else {
                continue;
            };
            let due = dev.last_seen_ms.load(Ordering::Acquire) + after;
            if now < due {
                self.liveness.borrow_mut().schedule(id, due);
            } else if dev.http_online.swap(false, Ordering::AcqRel) {
                crate::presence::record(self, &dev, false, "timeout", None);
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
                Deadline::KeepAlive | Deadline::Header => ctl.request_close(1001, "timeout"),
                Deadline::Register => ctl.request_close(1008, "register timeout"),
                Deadline::Idle => ctl.request_close(1001, "idle timeout"),
            }
        }
    }

    fn on_inbox(&self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Close { conn, code, reason } => {
                if let Some(c) = self.conns.borrow().get(&conn) {
                    c.request_close(code, reason);
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

    /// Delivers to local admin subscribers; one that cannot keep up is cut off, never buffered
    /// without bound.
    pub fn deliver_broadcast(&self, frame: &Arc<str>) {
        let limit = self.config().outbox_limit;
        let admins = self.admins.borrow();
        for id in admins.iter() {
            if let Some(c) = self.conns.borrow().get(id) {
                if !c.push(Out::Shared(frame.clone()), limit) {
                    metrics::counter!("fleetgate_slow_subscribers_total").increment(1);
                    c.request_close(1013, "subscriber too slow");
                }
            }
        }
    }

    /// Sends a frame to every admin subscriber on every shard (only built when there are any).
    pub fn broadcast(&self, frame: String) {
        let frame: Arc<str> = frame.into();
        self.shared.hub.broadcast(frame);
    }
}

/// Accepted sockets, per driver.
pub enum Listener {
    Uring(tokio_uring::net::TcpListener),
    Epoll(tokio::net::TcpListener),
}

/// Runs a shard to completion on the current thread. `uring` picks the driver.
pub fn run(
    index: usize,
    shared: Arc<Shared>,
    inbox: InboxReceiver,
    committer: Committer,
    listener: std::net::TcpListener,
    uring: bool,
) -> std::io::Result<()> {
    let store = shared.store.clone();
    let in_budget = (shared.config.buffer_budget_mb << 20) / shared.config.shard_count();
    let local = Rc::new(Local {
        index,
        shared,
        conns: RefCell::new(HashMap::new()),
        admins: RefCell::new(Vec::new()),
        batcher: Batcher::new(store, committer, BATCH_MAX_BYTES),
        metrics: ShardMetrics::new(index),
        wheel: RefCell::new(TimerWheel::new(TICK.as_millis() as u64, 4096, now_ms())),
        liveness: RefCell::new(TimerWheel::new(TICK.as_millis() as u64, 4096, now_ms())),
        pool: RefCell::new(Vec::new()),
        in_bytes: Cell::new(0),
        in_budget,
        in_freed: Notify::new(),
        next_conn: Cell::new(0),
        shutting_down: Cell::new(false),
        conns_gone: Notify::new(),
        inbox: inbox.rx.clone(),
    });
    if uring {
        let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(io::RING_ENTRIES))?;
        rt.block_on(async move {
            let l = tokio_uring::net::TcpListener::from_std(listener);
            shard_main(local, Listener::Uring(l), inbox).await
        });
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let set = tokio::task::LocalSet::new();
        set.block_on(&rt, async move {
            listener.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(listener)?;
            shard_main(local, Listener::Epoll(l), inbox).await;
            Ok::<_, std::io::Error>(())
        })?;
    }
    Ok(())
}

async fn shard_main(local: Rc<Local>, listener: Listener, inbox: InboxReceiver) {
    let batcher = tokio::task::spawn_local({
        let l = local.clone();
        async move { l.batcher.run().await }
    });
    let acceptor = tokio::task::spawn_local(accept_loop(local.clone(), listener));
    let ticker = tokio::task::spawn_local({
        let l = local.clone();
        async move {
            let mut iv = tokio::time::interval(TICK);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                l.tick();
            }
        }
    });
    // The inbox: drain everything queued, then sleep until the next wake-up.
    'inbox: loop {
        let woken = inbox.wake.notified();
        while let Ok(msg) = inbox.rx.try_recv() {
            if !local.on_inbox(msg) {
                break 'inbox;
            }
        }
        woken.await;
    }
    // Shutdown: stop accepting, close every connection with 1001, wait (bounded) for them to finish
    // their pending acks, then commit what is staged and stop the committer.
    local.shutting_down.set(true);
    acceptor.abort();
    let conns: Vec<_> = local.conns.borrow().values().cloned().collect();
    for c in conns {
        c.request_close(1001, "server shutting down");
    }
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        let gone = local.conns_gone.notified();
        if local.conns.borrow().is_empty() {
            break;
        }
        tokio::select! {
            _ = gone => {}
            _ = &mut deadline => {
                tracing::warn!(shard = local.index, left = local.conns.borrow().len(), "connections still open at shutdown deadline");
                break;
            }
        }
    }
    local.batcher.flush().await;
    local.batcher.close();
    let _ = batcher.await;
    ticker.abort();
}

async fn accept_loop(local: Rc<Local>, listener: Listener) {
    loop {
        let accepted = match &listener {
            Listener::Uring(l) => l.accept().await.and_then(|(s, peer)| {
                s.set_nodelay(true)?;
                io::reap_dead_peers(std::os::fd::AsRawFd::as_raw_fd(&s))?;
                Ok((Conn::Uring(io::UringStream::new(s)?), peer))
            }),
            Listener::Epoll(l) => l.accept().await.and_then(|(s, peer)| {
                s.set_nodelay(true)?;
                io::reap_dead_peers(std::os::fd::AsRawFd::as_raw_fd(&s))?;
                Ok((Conn::Epoll(io::EpollStream(s)), peer))
            }),
        };
        match accepted {
            Ok((conn, peer)) => {
                let n = local.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let ctl = local.open_conn(peer);
                if n > local.config().max_connections {
                    metrics::counter!("fleetgate_connections_refused_total").increment(1);
                    ctl.request_close(1013, "server at connection limit");
                } else if local.shared.guard.connect(peer.ip()) {
                    ctl.addr_counted.set(true);
                } else {
                    ctl.request_close(1013, "too many connections from this address");
                }
                let l = local.clone();
                tokio::task::spawn_local(async move {
                    match conn {
                        Conn::Uring(s) => http_conn::serve(&l, &ctl, s).await,
                        Conn::Epoll(s) => http_conn::serve(&l, &ctl, s).await,
                    }
                    l.close_conn(&ctl);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                metrics::counter!("fleetgate_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Conn {
    Uring(io::UringStream),
    Epoll(io::EpollStream),
}

/// Writes `out` (if non-empty) and returns its buffer to the pool, so a connection holds no write
/// buffer between bursts.
pub async fn flush<T: Transport>(io: &T, local: &Local, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let n = out.len();
    // A peer that stops reading must not hold its session (and its buffers) forever.
    let wait = Duration::from_secs(local.config().write_timeout.max(1));
    match tokio::time::timeout(wait, io.write_all(std::mem::take(out))).await {
        Ok((res, buf)) => {
            local.give_buf(buf);
            local.metrics.bytes_out.increment(n as u64);
            res
        }
        Err(_) => {
            crate::guard::hit(crate::guard::Limit::WriteTimeout);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer did not read for --write-timeout",
            ))
        }
    }
}

/// Makes sure `out` has a pooled buffer before frames are appended to it.
pub fn out_buf<'a>(local: &Local, out: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
    if out.capacity() == 0 {
        *out = local.take_buf();
    }
    out
}
