//! The client side: one readiness loop (mio, edge-triggered) holding every connection of this
//! process. A connection is a phase, two byte buffers and a reader of what the server sends, so
//! 15,000 of them cost a few MiB and one thread. The protocol modules decide what to say; this
//! loop does the I/O, the pacing and the measuring.
//!
//! Stages: `Setup` (connect and register, paced) → `Wait` (told the parent `READY`; keeps the
//! sessions alive until the shared start time) → `Run` (the measured window) → `Grace` (waits a
//! bounded time for outstanding acks).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use fleetgate_core::http::client::{Response, ResponseParser};
use fleetgate_core::ws::{self, Decoder, Opcode, OwnedEvent};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::clock::{elapsed_us, now_ns, secs_ns};
use crate::control::{Gate, Go};
use crate::proto::{Inbound, Pending, Protocol, aiface, generic, http, smackbio, zkteco};
use crate::provision::Cred;
use crate::wire;

/// Error texts kept for the report; the rest are only counted.
const MAX_SAMPLES: usize = 5;
/// Stop queueing new data on a connection whose unsent bytes reach this: the kernel's send buffer
/// is full, and growing ours would only hide that.
const WBUF_CAP: usize = 256 * 1024;
/// A reconnect that failed is tried again after this long (devices retry; an instant retry
/// would spin on a refusing server).
const RETRY_NS: u64 = 100_000_000;
/// How long the command storm's devices wait for the parent's DRAINED after their window.
const DRAIN_WAIT_NS: u64 = 60_000_000_000;
/// After DRAINED, time for the last posted commands to reach their devices.
const LAST_COMMAND_NS: u64 = 1_000_000_000;
/// How often heartbeats and clock-driven sends are checked when nothing finer is needed.
const SWEEP_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Register and stay connected, heartbeating.
    IdleFleet,
    /// Every device sends data messages as fast as its ack window (or `--rate`) allows.
    TelemetryFlood,
    /// Devices answer commands that the parent drives through the admin API.
    CommandStorm,
    /// All sessions drop at once and reconnect.
    ReconnectStorm,
    /// Every device pushes `--burst` attendance messages at the same instants.
    AttendanceBurst,
    /// `telemetry-flood` against the built-in sink instead of a server (kept for scripts).
    RawSink,
}

/// One worker's slice of the run, sent to a worker process as JSON on its stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub scenario: Scenario,
    pub protocol: Protocol,
    /// Where to connect (the server, or the raw sink).
    pub target: SocketAddr,
    pub devices: Vec<Cred>,
    /// Source addresses to bind, by connection index; empty means "let the kernel choose".
    pub sources: Vec<IpAddr>,
    /// Data messages per second per device (`telemetry-flood`); 0 = as fast as acks allow.
    pub rate: f64,
    /// Unacked data messages per device at most (HTTP and ZKTeco terminals: always 1).
    pub inflight: usize,
    pub duration_s: f64,
    pub payload_bytes: usize,
    pub setup_timeout_s: f64,
    pub records_per_msg: u32,
    pub burst: u32,
    pub burst_interval_s: f64,
    /// Heartbeat interval per device; 0 = none.
    pub heartbeat_s: f64,
    /// Connections in connect/handshake/register at once.
    pub max_connecting: usize,
    pub grace_s: f64,
}

/// What a worker reports back (one JSON line on stdout).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub connected: u64,
    pub registered: u64,
    /// Sessions still open and registered when the run window ended.
    pub held: u64,
    pub sent: u64,
    pub acked: u64,
    /// Acks that arrived inside the run window (the msgs/s numerator).
    pub acked_in_run: u64,
    pub records_acked_in_run: u64,
    pub nacked: u64,
    pub heartbeats: u64,
    pub pongs: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub setup_s: f64,
    pub run_start_ns: u64,
    pub run_s: f64,
    /// Ack latency (data message sent → ack) in µs as `(value, count)` pairs.
    pub latency_us: Vec<(u64, u64)>,
    /// Command storm: commands received, and how many of those had their result confirmed
    /// durable (fence acked).
    pub cmd_received: u64,
    pub cmd_confirmed: u64,
    /// API request sent → command frame received by the device.
    pub cmd_deliver_us: Vec<(u64, u64)>,
    /// API request sent → the device's result confirmed durable.
    pub cmd_rt_us: Vec<(u64, u64)>,
    /// Attendance bursts: completed, and bursts that began before the previous one finished.
    pub bursts_done: u64,
    pub bursts_overrun: u64,
    /// Burst start → last ack of the burst.
    pub burst_us: Vec<(u64, u64)>,
    /// Per burst round: `(start_ns, last ack of any device's burst_ns, records acked)`; the parent
    /// merges rounds by start (the same instants in every worker) into the throughput while
    /// bursts are being drained.
    pub rounds: Vec<(u64, u64, u64)>,
    /// Reconnect storm: sessions dropped, back and registered, the instant the last came back,
    /// and connect attempts that had to be repeated.
    pub dropped: u64,
    pub reconnected: u64,
    pub reconnect_last_ns: u64,
    pub reconnect_retries: u64,
    /// Drop → registered again, per session.
    pub reconnect_us: Vec<(u64, u64)>,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    Connecting,
    Handshake,
    Registering,
    Ready,
}

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Stage {
    Setup,
    Wait,
    Run,
    Grace,
}

struct Conn {
    /// Index into the slice's devices; also the mio token.
    idx: usize,
    stream: TcpStream,
    phase: Phase,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    reader: Reader,
    /// Unacked data messages: `(id, sent_ns, records)`, oldest first.
    inflight: VecDeque<(u64, u64, u32)>,
    next_hb_ns: u64,
    setting_up: bool,
    /// SmackBio: the token from the last `Register` answer.
    token: Option<String>,
    /// HTTP and ZKTeco: the request in flight.
    http: Option<Pending>,
    /// Command fences not yet acked: `(k, t0_ns)`.
    fences: VecDeque<(u64, u64)>,
    burst_left: u32,
    /// When the unfinished burst began; 0 = none.
    burst_start_ns: u64,
    /// Records acked in the unfinished burst.
    burst_records: u64,
}

/// What reads the server's bytes: HTTP responses (a polling terminal's answers, or a WebSocket's
/// upgrade answer), then, once upgraded, WebSocket frames.
enum Reader {
    Http(ResponseParser),
    Ws(Decoder),
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits; larger values are clamped by saturating_record.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

struct Worker<'a> {
    spec: &'a Spec,
    out: Outcome,
    hist: Histogram<u64>,
    cmd_rt: Histogram<u64>,
    cmd_deliver: Histogram<u64>,
    burst_hist: Histogram<u64>,
    reconnect_hist: Histogram<u64>,
    stage: Stage,
    run_start_ns: u64,
    setting_up: usize,
    mask_state: u32,
    pad: String,
    /// Per device, kept across reconnects: the next correlation id and the next record number.
    /// (The server remembers msg_ids for a day: a reconnected device must not reuse one.)
    ids: Vec<(u64, u64)>,
    /// Reconnect storm: when each device's session was dropped; 0 = not waiting for it.
    drop_ns: Vec<u64>,
    next_fence: u64,
    next_burst_ns: u64,
    /// Connections to open: `(index, not before ns)`, in non-decreasing time order.
    to_open: VecDeque<(usize, u64)>,
    replies: Vec<String>,
    hb_ns: u64,
}

/// Runs one slice to completion; every stage is bounded in time.
pub fn run(spec: &Spec, gate: &Gate) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let n = spec.devices.len();
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let start = now_ns();
    let mut w = Worker {
        spec,
        out: Outcome::default(),
        hist: new_histogram(),
        cmd_rt: new_histogram(),
        cmd_deliver: new_histogram(),
        burst_hist: new_histogram(),
        reconnect_hist: new_histogram(),
        stage: Stage::Setup,
        run_start_ns: start,
        setting_up: 0,
        mask_state: 0x9E37_79B9 ^ std::process::id(),
        // The payload object is `{"seq":N,"pad":"…"}`; pad it to roughly --payload-bytes.
        pad: "x".repeat(spec.payload_bytes.saturating_sub(24)),
        ids: vec![(0, 0); n],
        drop_ns: vec![0; n],
        next_fence: 0,
        next_burst_ns: u64::MAX,
        to_open: (0..n).map(|i| (i, start)).collect(),
        replies: Vec::new(),
        hb_ns: secs_ns(spec.heartbeat_s),
    };
    let setup_deadline = start + secs_ns(spec.setup_timeout_s);
    let mut run_end = u64::MAX;
    let mut grace_min_end = u64::MAX;
    let mut grace_end = u64::MAX;
    // Only the command storm has a sender (the parent's driver) that may outlast the window.
    let mut drained = spec.scenario != Scenario::CommandStorm;
    let mut last_sweep = start;
    loop {
        let now = now_ns();
        w.open_due(&mut conns, &poll, now);
        let timeout_ns = w.poll_timeout(now, gate);
        if let Err(e) = poll.poll(
            &mut events,
            Some(std::time::Duration::from_nanos(timeout_ns)),
        ) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            let idx = ev.token().0;
            let Some(mut c) = conns.get_mut(idx).and_then(Option::take) else {
                continue;
            };
            if w.drive(&mut c) {
                conns[idx] = Some(c);
            } else {
                w.drop_conn(c, &poll);
            }
        }
        let now = now_ns();
        match w.stage {
            Stage::Setup => {
                let all_done = w.to_open.is_empty() && w.setting_up == 0;
                if all_done || now >= setup_deadline {
                    // Connections still setting up at the deadline count as failures.
                    for slot in conns.iter_mut() {
                        if slot.as_ref().is_some_and(|c| c.setting_up)
                            && let Some(c) = slot.take()
                        {
                            w.error("setup timeout".into());
                            w.drop_conn(c, &poll);
                        }
                    }
                    let unopened = w.to_open.len();
                    if unopened > 0 {
                        w.out.errors += unopened as u64;
                        w.sample(format!(
                            "{unopened} connections not even attempted before the setup timeout"
                        ));
                        w.to_open.clear();
                    }
                    w.out.setup_s = (now - start) as f64 / 1e9;
                    w.stage = Stage::Wait;
                    gate.ready();
                }
            }
            Stage::Wait => match gate.go() {
                Go::NotYet => {}
                Go::Abort => {
                    w.sample("the parent went away before the run started".into());
                    w.out.errors += 1;
                    break;
                }
                Go::At(t) if now >= t => {
                    w.start_run(&mut conns, &poll, t);
                    run_end = t + secs_ns(spec.duration_s);
                    last_sweep = 0;
                }
                Go::At(_) => {}
            },
            Stage::Run => {
                let storm_over =
                    spec.scenario == Scenario::ReconnectStorm && w.out.reconnected >= w.out.dropped;
                if now >= run_end || storm_over {
                    w.out.run_s = (now - w.run_start_ns) as f64 / 1e9;
                    w.out.held = conns
                        .iter()
                        .flatten()
                        .filter(|c| c.phase == Phase::Ready)
                        .count() as u64;
                    w.stage = Stage::Grace;
                    gate.run_ended();
                    grace_min_end = now;
                    grace_end = now + secs_ns(spec.grace_s);
                    if !drained {
                        // Bounded even if the parent never says DRAINED.
                        grace_end += DRAIN_WAIT_NS;
                    }
                    w.to_open.clear();
                }
            }
            Stage::Grace => {
                if !drained && gate.drained() {
                    // The command driver has stopped; its last commands still have to arrive.
                    drained = true;
                    grace_min_end = now + LAST_COMMAND_NS;
                    grace_end = now + secs_ns(spec.grace_s).max(LAST_COMMAND_NS);
                }
                let waiting = conns
                    .iter()
                    .flatten()
                    .any(|c| !c.inflight.is_empty() || !c.fences.is_empty());
                if (drained && !waiting && now >= grace_min_end) || now >= grace_end {
                    break;
                }
            }
        }
        // Heartbeats, bursts and rate-limited sends are clock-driven, not event-driven.
        let burst_due = w.stage == Stage::Run && now >= w.next_burst_ns;
        let rate_due = w.stage == Stage::Run && w.flooding() && spec.rate > 0.0;
        if burst_due || rate_due || now.saturating_sub(last_sweep) >= SWEEP_NS {
            last_sweep = now;
            if burst_due {
                w.start_bursts(&mut conns, now);
            }
            w.pump_all(&mut conns, &poll, now);
        }
    }
    // Unanswered messages are errors: the server never acked them within the grace period.
    let lost: usize = conns.iter().flatten().map(|c| c.inflight.len()).sum();
    if lost > 0 {
        w.out.errors += lost as u64;
        w.sample(format!("{lost} messages unacked after the grace period"));
    }
    let unconfirmed: usize = conns.iter().flatten().map(|c| c.fences.len()).sum();
    if unconfirmed > 0 {
        w.out.errors += unconfirmed as u64;
        w.sample(format!(
            "{unconfirmed} command results not confirmed durable after the grace period"
        ));
    }
    for mut c in conns.into_iter().flatten() {
        if spec.protocol.is_websocket() && c.phase != Phase::Connecting {
            // Best effort close frame (1000); the socket is dropped either way.
            let mut buf = Vec::new();
            ws::client::encode_frame(&mut buf, Opcode::Close, &1000u16.to_be_bytes(), [7; 4]);
            let _ = c.stream.write(&buf);
        }
    }
    w.out.latency_us = pairs(&w.hist);
    w.out.cmd_rt_us = pairs(&w.cmd_rt);
    w.out.cmd_deliver_us = pairs(&w.cmd_deliver);
    w.out.burst_us = pairs(&w.burst_hist);
    w.out.reconnect_us = pairs(&w.reconnect_hist);
    Ok(w.out)
}

/// Opens a non-blocking connection from the slice's source address for connection `idx`.
fn open(spec: &Spec, idx: usize, poll: &Poll) -> io::Result<Conn> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if !spec.sources.is_empty() {
        // One address holds ~28k ephemeral ports toward one server port; spreading over
        // 127.0.0.2, .3, … keeps large fleets (and their TIME_WAIT after a storm) clear of that.
        // IP_BIND_ADDRESS_NO_PORT leaves the port to connect(): bind(port 0) would pick one from
        // half the range by scanning the bind table, which with ~19,000 ports in use or in
        // TIME_WAIT after a reconnect storm costs milliseconds per socket and throttled the
        // harness instead of measuring the server. connect() picks by the full 4-tuple and may
        // reuse TIME_WAIT ports on loopback (tcp_tw_reuse).
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the given length; the descriptor is valid (owned by
        // `sock`). A failure only loses the optimisation.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let src = spec.sources[idx % spec.sources.len()];
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    match sock.connect(&spec.target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let mut stream = TcpStream::from_std(sock.into());
    poll.registry().register(
        &mut stream,
        Token(idx),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(Conn {
        idx,
        stream,
        phase: Phase::Connecting,
        rbuf: Vec::new(),
        wbuf: Vec::new(),
        reader: Reader::Http(wire::response_parser()),
        inflight: VecDeque::new(),
        next_hb_ns: u64::MAX,
        setting_up: true,
        token: None,
        http: None,
        fences: VecDeque::new(),
        burst_left: 0,
        burst_start_ns: 0,
        burst_records: 0,
    })
}

impl Worker<'_> {
    fn sample(&mut self, msg: String) {
        if self.out.error_samples.len() < MAX_SAMPLES {
            self.out.error_samples.push(msg);
        }
    }

    fn error(&mut self, msg: String) {
        self.out.errors += 1;
        self.sample(msg);
    }

    /// Whether this run sends data messages continuously.
    fn flooding(&self) -> bool {
        matches!(
            self.spec.scenario,
            Scenario::TelemetryFlood | Scenario::RawSink
        )
    }

    fn window(&self) -> usize {
        if !self.spec.protocol.is_websocket() {
            1
        } else {
            self.spec.inflight.max(1)
        }
    }

    fn poll_timeout(&self, now: u64, gate: &Gate) -> u64 {
        const MS: u64 = 1_000_000;
        match self.stage {
            Stage::Wait => match gate.go() {
                // The parent's GO cannot wake the poll; check it often.
                Go::NotYet => 5 * MS,
                Go::At(t) => t.saturating_sub(now).clamp(1, 20 * MS),
                Go::Abort => 1,
            },
            Stage::Run if self.flooding() && self.spec.rate > 0.0 => 2 * MS,
            Stage::Run if self.next_burst_ns != u64::MAX => {
                self.next_burst_ns.saturating_sub(now).clamp(1, 20 * MS)
            }
            _ if !self.to_open.is_empty() && self.setting_up < self.spec.max_connecting => MS,
            _ => 20 * MS,
        }
    }

    /// Opens queued connections while fewer than `max_connecting` are setting up: an unpaced
    /// burst of thousands overflows the listen backlog and measures SYN retries instead.
    fn open_due(&mut self, conns: &mut [Option<Conn>], poll: &Poll, now: u64) {
        while self.setting_up < self.spec.max_connecting.max(1) {
            let Some(&(idx, not_before)) = self.to_open.front() else {
                break;
            };
            if not_before > now {
                break;
            }
            self.to_open.pop_front();
            match open(self.spec, idx, poll) {
                Ok(c) => {
                    conns[idx] = Some(c);
                    self.setting_up += 1;
                }
                Err(e) => {
                    self.error(format!("connect: {e}"));
                    self.retry(idx, now);
                }
            }
        }
    }

    /// In a reconnect storm, a device that has not come back tries again.
    fn retry(&mut self, idx: usize, now: u64) {
        if self.stage == Stage::Run
            && self.spec.scenario == Scenario::ReconnectStorm
            && self.drop_ns[idx] != 0
        {
            self.out.reconnect_retries += 1;
            self.to_open.push_back((idx, now + RETRY_NS));
        }
    }

    fn drop_conn(&mut self, mut c: Conn, poll: &Poll) {
        if c.setting_up {
            self.setting_up -= 1;
        }
        let _ = poll.registry().deregister(&mut c.stream);
        // Lost with the connection: counted as errors like unacked messages after the grace.
        if !c.inflight.is_empty() || !c.fences.is_empty() {
            let lost = c.inflight.len() + c.fences.len();
            self.out.errors += lost as u64;
            self.sample(format!("{lost} messages unanswered on a closed connection"));
        }
        self.retry(c.idx, now_ns());
    }

    fn setup_done(&mut self, c: &mut Conn) {
        if c.setting_up {
            c.setting_up = false;
            self.setting_up -= 1;
        }
    }

    /// The run window opens at `t`, the same instant in every worker.
    fn start_run(&mut self, conns: &mut [Option<Conn>], poll: &Poll, t: u64) {
        self.stage = Stage::Run;
        self.run_start_ns = t;
        self.out.run_start_ns = t;
        match self.spec.scenario {
            Scenario::ReconnectStorm => {
                // Every registered session drops at once (the socket is closed, no close frame:
                // as when a network path fails), and every device reconnects at once.
                for slot in conns.iter_mut() {
                    let Some(c) = slot.take() else { continue };
                    let was_ready = c.phase == Phase::Ready;
                    let idx = c.idx;
                    self.drop_conn(c, poll);
                    if was_ready {
                        self.out.dropped += 1;
                        self.drop_ns[idx] = t;
                        self.to_open.push_back((idx, t));
                    }
                }
            }
            Scenario::AttendanceBurst => self.next_burst_ns = t,
            _ => {}
        }
    }

    fn start_bursts(&mut self, conns: &mut [Option<Conn>], now: u64) {
        let at = self.next_burst_ns;
        for c in conns.iter_mut().flatten() {
            if c.phase != Phase::Ready {
                continue;
            }
            if c.burst_start_ns != 0 {
                // The previous burst is still being acked: this one queues behind it.
                self.out.bursts_overrun += 1;
            } else {
                c.burst_start_ns = at;
            }
            c.burst_left += self.spec.burst;
        }
        self.out.rounds.push((at, 0, 0));
        let step = secs_ns(self.spec.burst_interval_s).max(1_000_000);
        self.next_burst_ns = at + step;
        if self.next_burst_ns <= now {
            // Far behind (the loop stalled): skip missed bursts rather than pile them up.
            self.next_burst_ns = now + step;
        }
    }

    /// A device acked its whole burst: its time, and its share of the round's throughput.
    fn burst_done(&mut self, c: &mut Conn, now: u64) {
        let start = c.burst_start_ns;
        self.burst_hist.saturating_record(elapsed_us(start, now));
        self.out.bursts_done += 1;
        if let Some(r) = self.out.rounds.iter_mut().rev().find(|r| r.0 == start) {
            r.1 = r.1.max(now);
            r.2 += c.burst_records;
        }
        c.burst_start_ns = 0;
        c.burst_records = 0;
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masking only has to vary, not be unpredictable, for a load test.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    fn pump_all(&mut self, conns: &mut [Option<Conn>], poll: &Poll, now: u64) {
        for slot in conns.iter_mut() {
            let Some(mut c) = slot.take() else { continue };
            if c.phase == Phase::Ready {
                self.pump(&mut c, now);
                if !self.flush(&mut c) {
                    self.drop_conn(c, poll);
                    continue;
                }
            }
            *slot = Some(c);
        }
    }

    /// Queues a text message: a masked frame on a WebSocket, a JSON POST to
    /// `/api/device-http` on an HTTP terminal's connection.
    fn send(&mut self, c: &mut Conn, text: &str) {
        if self.spec.protocol.is_websocket() {
            let mask = self.next_mask();
            ws::client::encode_frame(&mut c.wbuf, Opcode::Text, text.as_bytes(), mask);
        } else {
            self.request(c, "POST", http::PATH, Some((wire::JSON, text.as_bytes())));
        }
    }

    /// Queues a request on a polling terminal's keep-alive connection.
    fn request(&mut self, c: &mut Conn, method: &str, target: &str, body: Option<(&str, &[u8])>) {
        let host = self.spec.target.to_string();
        if let Err(e) = wire::request(&mut c.wbuf, method, target, &host, None, body) {
            self.error(format!("request: {e}"));
        }
    }

    fn serial<'s>(&'s self, c: &Conn) -> &'s str {
        &self.spec.devices[c.idx].id
    }

    /// Queues whatever this connection may send now: a heartbeat when due, and in the run
    /// window the scenario's data messages up to the ack window.
    fn pump(&mut self, c: &mut Conn, now: u64) {
        if c.phase != Phase::Ready {
            return;
        }
        let http_busy = |c: &Conn| c.http.is_some();
        if self.hb_ns > 0 && now >= c.next_hb_ns && !http_busy(c) {
            c.next_hb_ns = now + self.hb_ns;
            self.out.heartbeats += 1;
            match self.spec.protocol {
                Protocol::Generic => self.send(c, generic::PING),
                // AiFace terminals have no JSON heartbeat in the vendor text; the vendor demo
                // sees WebSocket pings (§3.7).
                Protocol::Aiface => {
                    let mask = self.next_mask();
                    ws::client::encode_frame(&mut c.wbuf, Opcode::Ping, b"hb", mask);
                }
                Protocol::Smackbio => {
                    let text = smackbio::keepalive(self.serial(c));
                    self.send(c, &text);
                }
                Protocol::Http => {
                    let text = http::checklive(self.serial(c));
                    self.send(c, &text);
                    c.http = Some(Pending::Heartbeat);
                }
                Protocol::Zkteco => {
                    let target = zkteco::getrequest(self.serial(c));
                    self.request(c, "GET", &target, None);
                    c.http = Some(Pending::Heartbeat);
                }
            }
        }
        if self.stage != Stage::Run {
            return;
        }
        let allowed = match self.spec.scenario {
            Scenario::TelemetryFlood | Scenario::RawSink if self.spec.rate > 0.0 => {
                // Token bucket from the run start: at most rate × elapsed (+1) messages so far.
                let elapsed = now.saturating_sub(self.run_start_ns) as f64 / 1e9;
                (elapsed * self.spec.rate) as u64 + 1
            }
            Scenario::TelemetryFlood | Scenario::RawSink => u64::MAX,
            Scenario::AttendanceBurst => u64::MAX,
            _ => return,
        };
        let window = self.window();
        while c.inflight.len() < window && c.wbuf.len() < WBUF_CAP && !http_busy(c) {
            if self.spec.scenario == Scenario::AttendanceBurst {
                if c.burst_left == 0 {
                    break;
                }
                c.burst_left -= 1;
            } else if self.ids[c.idx].0 >= allowed {
                break;
            }
            self.send_data(c, now);
        }
    }

    /// One data message with the device's next correlation id.
    fn send_data(&mut self, c: &mut Conn, now: u64) {
        let (id, first) = self.ids[c.idx];
        let k = self
            .spec
            .protocol
            .records_per_msg(self.spec.records_per_msg);
        let burst = self.spec.scenario == Scenario::AttendanceBurst;
        let serial = self.serial(c).to_string();
        let text = match self.spec.protocol {
            Protocol::Generic if burst => generic::attendance(id, first),
            Protocol::Generic => generic::telemetry(id, &self.pad),
            Protocol::Aiface => aiface::sendlog(&serial, id, first, k),
            Protocol::Smackbio => smackbio::timelog(&serial, id, first),
            Protocol::Http => http::sendlog(&serial, id, first, k),
            Protocol::Zkteco => zkteco::attlog(first, k),
        };
        self.ids[c.idx] = (id + 1, first + u64::from(k));
        if self.spec.protocol == Protocol::Zkteco {
            // The upload's id is its Stamp: the answer (`OK: <n>`) names no id, but only one
            // request is in flight per connection.
            let target = zkteco::upload(&serial, id);
            self.request(
                c,
                "POST",
                &target,
                Some((zkteco::CONTENT_TYPE, text.as_bytes())),
            );
        } else {
            self.send(c, &text);
        }
        if !self.spec.protocol.is_websocket() {
            c.http = Some(Pending::Data(id));
        }
        c.inflight.push_back((id, now, k));
        self.out.sent += 1;
    }

    /// Writes until the socket would block. Returns false if the connection failed.
    fn flush(&mut self, c: &mut Conn) -> bool {
        let mut written = 0;
        let ok = loop {
            if written == c.wbuf.len() {
                break true;
            }
            match c.stream.write(&c.wbuf[written..]) {
                Ok(0) => {
                    self.error("write returned 0".into());
                    break false;
                }
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error(format!("write: {e}"));
                    break false;
                }
            }
        };
        c.wbuf.drain(..written);
        ok
    }

    /// Handles a readiness event. Returns false if the connection is finished.
    fn drive(&mut self, c: &mut Conn) -> bool {
        if c.phase == Phase::Connecting {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                self.error(format!("connect: {e}"));
                return false;
            }
            match c.stream.peer_addr() {
                Ok(_) => {}
                // Spurious wakeup before the handshake finished.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return true,
                Err(e) => {
                    self.error(format!("connect: {e}"));
                    return false;
                }
            }
            self.out.connected += 1;
            if self.spec.protocol.is_websocket() {
                c.phase = Phase::Handshake;
                let host = self.spec.target;
                c.wbuf.extend_from_slice(
                    format!(
                        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                        wire::CLIENT_KEY
                    )
                    .as_bytes(),
                );
            } else {
                c.phase = Phase::Registering;
                if self.spec.protocol == Protocol::Zkteco {
                    let target = zkteco::handshake(self.serial(c));
                    self.request(c, "GET", &target, None);
                } else {
                    let text = http::reg(self.serial(c));
                    self.send(c, &text);
                }
                c.http = Some(Pending::Register);
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => {
                    // Parsed chunk by chunk, so the read buffer stays one message plus a chunk.
                    c.rbuf.extend_from_slice(&chunk[..k]);
                    if !self.process_input(c) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error(format!("read: {e}"));
                    return false;
                }
            }
        }
        if eof {
            self.error(format!("server closed the connection ({:?})", c.phase));
            return false;
        }
        self.pump(c, now_ns());
        self.flush(c)
    }

    /// Acts on every complete response or message in the read buffer. Returns false if the
    /// connection should end.
    fn process_input(&mut self, c: &mut Conn) -> bool {
        // Parsed into owned values before acting on them, as acting needs the whole `Conn`.
        let mut used = 0;
        let mut alive = true;
        while alive {
            match &mut c.reader {
                Reader::Http(parser) => match parser.parse(&c.rbuf[used..]) {
                    Ok(Some((resp, k))) => {
                        used += k;
                        alive = if c.phase == Phase::Handshake {
                            self.on_upgrade(c, resp)
                        } else {
                            self.on_response(c, resp)
                        };
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.error(format!("HTTP response: {e}"));
                        alive = false;
                    }
                },
                Reader::Ws(decoder) => match decoder.decode(&mut c.rbuf[used..]) {
                    Ok(decoded) => {
                        // Nonzero without an event when message fragments were taken in.
                        used += decoded.consumed;
                        match decoded.event.map(OwnedEvent::from) {
                            Some(event) => alive = self.on_frame(c, event),
                            None => break,
                        }
                    }
                    Err(e) => {
                        self.error(format!("WebSocket: {e}"));
                        alive = false;
                    }
                },
            }
        }
        c.rbuf.drain(..used);
        alive
    }

    /// The answer to the WebSocket upgrade: on 101, frames follow and the device registers.
    fn on_upgrade(&mut self, c: &mut Conn, resp: Response) -> bool {
        if resp.status != 101 {
            let body: String = resp.text().chars().take(80).collect();
            self.error(format!("handshake refused: {} {body}", resp.status));
            return false;
        }
        c.reader = Reader::Ws(Decoder::client(wire::WS_LIMITS));
        c.phase = Phase::Registering;
        let cred = &self.spec.devices[c.idx];
        let text = match self.spec.protocol {
            Protocol::Generic => generic::register(&cred.id, &cred.secret),
            Protocol::Aiface => aiface::register(&cred.id),
            Protocol::Smackbio => smackbio::register(&cred.id),
            // Polling terminals never upgrade.
            Protocol::Http | Protocol::Zkteco => String::new(),
        };
        self.send(c, &text);
        true
    }

    /// A polling terminal's answer to its request in flight.
    fn on_response(&mut self, c: &mut Conn, resp: Response) -> bool {
        let Some(pending) = c.http.take() else {
            self.error("HTTP response without a request".into());
            return false;
        };
        let inbound = if self.spec.protocol == Protocol::Zkteco {
            zkteco::parse(pending, resp.status, &resp.body)
        } else {
            http::parse(pending, resp.status, &resp.body)
        };
        if !self.on_inbound(c, inbound) {
            return false;
        }
        if resp.closes() {
            self.error(format!(
                "server closed the HTTP connection (status {})",
                resp.status
            ));
            return false;
        }
        true
    }

    fn on_frame(&mut self, c: &mut Conn, event: OwnedEvent) -> bool {
        let text = match event {
            OwnedEvent::Text(text) => text,
            OwnedEvent::Ping(payload) => {
                let mask = self.next_mask();
                ws::client::encode_frame(&mut c.wbuf, Opcode::Pong, &payload, mask);
                return true;
            }
            OwnedEvent::Close(code, reason) => {
                // 1005: the server sent no code (RFC 6455 7.1.5).
                let code = code.unwrap_or(1005);
                self.error(format!("closed by server: {code} {reason}"));
                return false;
            }
            OwnedEvent::Pong(_) => return self.on_inbound(c, Inbound::Pong),
            OwnedEvent::Binary(_) => {
                self.error("unexpected binary message".into());
                return true;
            }
        };
        let inbound = match self.spec.protocol {
            Protocol::Generic => generic::parse(&text),
            Protocol::Aiface => aiface::parse(&text, &mut self.replies),
            Protocol::Smackbio => {
                let serial = &self.spec.devices[c.idx].id;
                smackbio::parse(&text, serial, &mut c.token, &mut self.replies)
            }
            Protocol::Http | Protocol::Zkteco => Inbound::Other,
        };
        self.on_inbound(c, inbound)
    }

    /// Acts on what a message meant. Returns false if the connection should end.
    fn on_inbound(&mut self, c: &mut Conn, inbound: Inbound) -> bool {
        for text in std::mem::take(&mut self.replies) {
            self.send(c, &text);
        }
        let now = now_ns();
        match inbound {
            Inbound::Registered => {
                if c.phase == Phase::Registering {
                    c.phase = Phase::Ready;
                    self.out.registered += 1;
                    self.setup_done(c);
                    // Heartbeats are spread over the interval, not synchronised by the setup.
                    if self.hb_ns > 0 {
                        let spread = self.hb_ns / 1000 * (c.idx as u64 % 1000);
                        c.next_hb_ns = now + spread.max(self.hb_ns / 2);
                    }
                    let dropped = self.drop_ns[c.idx];
                    if dropped != 0 && self.stage == Stage::Run {
                        self.drop_ns[c.idx] = 0;
                        self.reconnect_hist
                            .saturating_record(elapsed_us(dropped, now));
                        self.out.reconnected += 1;
                        self.out.reconnect_last_ns = self.out.reconnect_last_ns.max(now);
                    }
                }
            }
            Inbound::Refused(why) => {
                self.error(why);
                return false;
            }
            Inbound::Ack(id) => match c.inflight.iter().position(|(m, _, _)| *m == id) {
                Some(p) => {
                    let (_, sent, records) = c.inflight.remove(p).unwrap_or((id, now, 1));
                    self.hist.saturating_record(elapsed_us(sent, now));
                    self.out.acked += 1;
                    if self.stage == Stage::Run {
                        self.out.acked_in_run += 1;
                        self.out.records_acked_in_run += u64::from(records);
                    }
                    if c.burst_start_ns != 0 {
                        c.burst_records += u64::from(records);
                        if c.burst_left == 0 && c.inflight.is_empty() {
                            self.burst_done(c, now);
                        }
                    }
                }
                None => self.error(format!("ack for an unknown id {id}")),
            },
            Inbound::Nack(id, why) => {
                if let Some(p) = c.inflight.iter().position(|(m, _, _)| *m == id) {
                    c.inflight.remove(p);
                }
                self.out.nacked += 1;
                self.error(format!("not stored: {why}"));
            }
            Inbound::Command { command_id, t0_ns } => {
                self.out.cmd_received += 1;
                let t0 = match t0_ns {
                    Some(t0) if t0 <= now => {
                        self.cmd_deliver.saturating_record(elapsed_us(t0, now));
                        t0
                    }
                    _ => now,
                };
                let k = self.next_fence;
                self.next_fence += 1;
                self.send(c, &generic::command_result(&command_id));
                self.send(c, &generic::fence(k));
                c.fences.push_back((k, t0));
            }
            Inbound::FenceAck(k) => match c.fences.iter().position(|(f, _)| *f == k) {
                Some(p) => {
                    let t0 = c.fences.remove(p).map_or(now, |(_, t0)| t0);
                    self.cmd_rt.saturating_record(elapsed_us(t0, now));
                    self.out.cmd_confirmed += 1;
                }
                None => self.error(format!("ack for an unknown fence {k}")),
            },
            Inbound::Pong => self.out.pongs += 1,
            Inbound::ServerError(e) => self.error(e),
            Inbound::Other => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_pairs_round_trip() {
        let mut h = new_histogram();
        h.saturating_record(5);
        h.saturating_record(5);
        h.saturating_record(1_000);
        let p = pairs(&h);
        assert_eq!(p.iter().map(|(_, n)| n).sum::<u64>(), 3);
        let _ = crate::clock::now_ns();
    }
}
