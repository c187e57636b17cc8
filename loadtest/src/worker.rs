//! The client side: one readiness loop (mio, edge-triggered) holding every connection of this
//! process. A connection is a phase plus two byte buffers, so 15,000 of them cost a few MiB and
//! one thread.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// At most this many connections in connect/handshake/register at once: an unpaced burst of
/// thousands overflows the listen backlog and measures SYN retries instead of the server.
const MAX_SETTING_UP: usize = 256;
/// Ping interval of the idle fleet (the server closes sessions silent for 90 s).
const IDLE_PING: Duration = Duration::from_secs(30);
/// How long after the run the loop waits for outstanding acks before giving up on them.
pub const GRACE: Duration = Duration::from_secs(3);
/// Error texts kept for the report; the rest are only counted.
const MAX_SAMPLES: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    IdleFleet,
    TelemetryFlood,
    RawSink,
}

/// One worker's slice of the run, sent to a worker process as JSON on its stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    pub scenario: Scenario,
    /// Where to connect (the server, or the raw sink).
    pub target: SocketAddr,
    /// `(device_id, token)` per connection; empty credentials mean "do not register" (raw sink).
    pub devices: Vec<(String, String)>,
    /// Source addresses to bind, used round-robin; empty means "let the kernel choose".
    pub sources: Vec<IpAddr>,
    pub rate: f64,
    pub inflight: usize,
    pub duration_s: f64,
    pub payload_bytes: usize,
    pub setup_timeout_s: f64,
}

/// What a worker reports back (one JSON line on stdout for worker processes).
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
    pub pongs: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub setup_s: f64,
    pub run_s: f64,
    /// Ack latency histogram in microseconds as `(value, count)` pairs, merged by the parent.
    pub latency_us: Vec<(u64, u64)>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Connecting,
    Handshake,
    Registering,
    Ready,
}

struct Conn {
    /// Index into the slice's devices; also the mio token.
    idx: usize,
    stream: TcpStream,
    phase: Phase,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Unacked msg_ids with their send time, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    next_msg: u64,
    last_ping: Instant,
    setting_up: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Stage {
    Setup,
    Run,
    Grace,
}

struct Worker<'a> {
    spec: &'a Spec,
    out: Outcome,
    hist: Histogram<u64>,
    stage: Stage,
    run_start: Instant,
    setting_up: usize,
    mask_state: u32,
    pad: String,
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits; values beyond are clamped by saturating_record.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// Runs one slice to completion; bounded by setup timeout + duration + grace.
pub fn run(spec: &Spec) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let n = spec.devices.len();
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let now = Instant::now();
    let mut w = Worker {
        spec,
        out: Outcome::default(),
        hist: new_histogram(),
        stage: Stage::Setup,
        run_start: now,
        setting_up: 0,
        mask_state: 0x9E37_79B9 ^ std::process::id(),
        // The payload object is `{"seq":N,"pad":"…"}`; pad it to roughly --payload-bytes.
        pad: "x".repeat(spec.payload_bytes.saturating_sub(24)),
    };
    let setup_start = now;
    let setup_deadline = now + Duration::from_secs_f64(spec.setup_timeout_s);
    let mut run_end = now;
    let mut grace_end = now;
    let mut next_open = 0usize;
    let mut last_tick = now;
    loop {
        while w.stage == Stage::Setup && next_open < n && w.setting_up < MAX_SETTING_UP {
            match open(spec, next_open, &poll) {
                Ok(c) => {
                    conns[next_open] = Some(c);
                    w.setting_up += 1;
                }
                Err(e) => w.error(format!("connect: {e}")),
            }
            next_open += 1;
        }
        let timeout = if w.stage == Stage::Run && spec.rate > 0.0 {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(20)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
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
        let now = Instant::now();
        match w.stage {
            Stage::Setup => {
                let all_done = next_open == n && w.setting_up == 0;
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
                    w.out.setup_s = (now - setup_start).as_secs_f64();
                    w.stage = Stage::Run;
                    w.run_start = now;
                    run_end = now + Duration::from_secs_f64(spec.duration_s);
                    last_tick = now;
                    w.pump_all(&mut conns, &poll, now);
                }
            }
            Stage::Run => {
                if now >= run_end {
                    w.out.run_s = (now - w.run_start).as_secs_f64();
                    w.out.held = conns
                        .iter()
                        .flatten()
                        .filter(|c| c.phase == Phase::Ready)
                        .count() as u64;
                    w.stage = Stage::Grace;
                    grace_end = now + GRACE;
                } else if spec.rate > 0.0 || now - last_tick >= Duration::from_millis(100) {
                    // Rate-limited sending and idle pings are clock-driven, not ack-driven.
                    last_tick = now;
                    w.pump_all(&mut conns, &poll, now);
                }
            }
            Stage::Grace => {
                let waiting = conns.iter().flatten().any(|c| !c.inflight.is_empty());
                if !waiting || now >= grace_end {
                    break;
                }
            }
        }
    }
    // Unanswered messages are errors: the server never acked them within the grace period.
    let lost: usize = conns.iter().flatten().map(|c| c.inflight.len()).sum();
    if lost > 0 {
        w.out.errors += lost as u64;
        w.sample(format!("{lost} messages unacked after the grace period"));
    }
    for mut c in conns.into_iter().flatten() {
        // Best effort close frame (1000); the socket is dropped either way.
        let mut buf = Vec::new();
        frame::push_frame(
            &mut buf,
            OP_CLOSE,
            &1000u16.to_be_bytes(),
            Some([7, 7, 7, 7]),
        );
        let _ = c.stream.write(&buf);
    }
    w.out.latency_us = w
        .hist
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    Ok(w.out)
}

/// Opens a non-blocking connection from the slice's source address for connection `idx`.
fn open(spec: &Spec, idx: usize, poll: &Poll) -> io::Result<Conn> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if !spec.sources.is_empty() {
        // One address holds ~28k ephemeral ports toward one server port; spreading over
        // 127.0.0.2, .3, … keeps large fleets clear of that limit.
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
        inflight: VecDeque::new(),
        next_msg: 0,
        last_ping: Instant::now(),
        setting_up: true,
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

    fn drop_conn(&mut self, mut c: Conn, poll: &Poll) {
        if c.setting_up {
            self.setting_up -= 1;
        }
        let _ = poll.registry().deregister(&mut c.stream);
    }

    fn setup_done(&mut self, c: &mut Conn) {
        if c.setting_up {
            c.setting_up = false;
            self.setting_up -= 1;
        }
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

    fn pump_all(&mut self, conns: &mut [Option<Conn>], poll: &Poll, now: Instant) {
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

    /// Queues whatever the scenario allows this connection to send now.
    fn pump(&mut self, c: &mut Conn, now: Instant) {
        if self.stage != Stage::Run || c.phase != Phase::Ready {
            return;
        }
        if self.spec.scenario == Scenario::IdleFleet {
            if now - c.last_ping >= IDLE_PING {
                c.last_ping = now;
                let mask = self.next_mask();
                frame::push_frame(&mut c.wbuf, OP_TEXT, br#"{"type":"ping"}"#, Some(mask));
            }
            return;
        }
        let allowed = if self.spec.rate > 0.0 {
            // Token bucket from the run start: at most rate × elapsed (+1) messages so far.
            ((now - self.run_start).as_secs_f64() * self.spec.rate) as u64 + 1
        } else {
            u64::MAX
        };
        while c.inflight.len() < self.spec.inflight && c.next_msg < allowed {
            let id = c.next_msg;
            c.next_msg += 1;
            let text = format!(
                r#"{{"type":"telemetry","msg_id":"{id}","payload":{{"seq":{id},"pad":"{}"}}}}"#,
                self.pad
            );
            let mask = self.next_mask();
            frame::push_frame(&mut c.wbuf, OP_TEXT, text.as_bytes(), Some(mask));
            c.inflight.push_back((id, now));
            self.out.sent += 1;
        }
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
            c.phase = Phase::Handshake;
            let host = self.spec.target;
            c.wbuf.extend_from_slice(
                format!(
                    "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    frame::CLIENT_KEY
                )
                .as_bytes(),
            );
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => c.rbuf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error(format!("read: {e}"));
                    return false;
                }
            }
        }
        if !self.process_input(c) {
            return false;
        }
        if eof {
            self.error("server closed the connection".into());
            return false;
        }
        self.pump(c, Instant::now());
        self.flush(c)
    }

    fn process_input(&mut self, c: &mut Conn) -> bool {
        if c.phase == Phase::Handshake {
            let Some(end) = frame::head_end(&c.rbuf) else {
                return true;
            };
            if !c.rbuf.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&c.rbuf[..end.min(80)]).into_owned();
                self.error(format!("handshake refused: {}", line.trim()));
                return false;
            }
            c.rbuf.drain(..end);
            let (id, token) = &self.spec.devices[c.idx];
            if id.is_empty() {
                // Raw sink: no register step.
                c.phase = Phase::Ready;
                self.setup_done(c);
            } else {
                c.phase = Phase::Registering;
                let text = format!(r#"{{"type":"register","device_id":"{id}","token":"{token}"}}"#);
                let mask = self.next_mask();
                frame::push_frame(&mut c.wbuf, OP_TEXT, text.as_bytes(), Some(mask));
            }
        }
        let mut used = 0;
        let mut alive = true;
        while alive {
            match frame::parse_frame(&c.rbuf[used..]) {
                Ok(Some((f, k))) => {
                    used += k;
                    alive = self.on_frame(c, f);
                }
                Ok(None) => break,
                Err(e) => {
                    self.error(e);
                    alive = false;
                }
            }
        }
        c.rbuf.drain(..used);
        alive
    }

    fn on_frame(&mut self, c: &mut Conn, f: frame::Frame) -> bool {
        match f.opcode {
            OP_TEXT if f.fin => {}
            OP_PING => {
                let mask = self.next_mask();
                frame::push_frame(&mut c.wbuf, OP_PONG, &f.payload, Some(mask));
                return true;
            }
            OP_CLOSE => {
                let code = if f.payload.len() >= 2 {
                    u16::from_be_bytes([f.payload[0], f.payload[1]])
                } else {
                    1005
                };
                let reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[]));
                self.error(format!("closed by server: {code} {reason}"));
                return false;
            }
            OP_PONG => return true,
            _ => {
                self.error(format!("unexpected frame opcode {}", f.opcode));
                return true;
            }
        }
        let v: serde_json::Value = match serde_json::from_slice(&f.payload) {
            Ok(v) => v,
            Err(e) => {
                self.error(format!("invalid JSON from server: {e}"));
                return true;
            }
        };
        let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let msg_id = v.get("msg_id").map(|m| match m {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            other => other.as_u64(),
        });
        match kind {
            "registered" => {
                if c.phase == Phase::Registering {
                    c.phase = Phase::Ready;
                    c.last_ping = Instant::now();
                    self.out.registered += 1;
                    self.setup_done(c);
                }
            }
            "ack" => {
                // The server echoes msg_id; the raw sink does not, and answers in order.
                let pos = match msg_id {
                    Some(Some(id)) => c.inflight.iter().position(|(m, _)| *m == id),
                    Some(None) => None,
                    None => (!c.inflight.is_empty()).then_some(0),
                };
                match pos.and_then(|p| c.inflight.remove(p)) {
                    Some((_, sent)) => {
                        let us = sent.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        self.hist.saturating_record(us.max(1));
                        self.out.acked += 1;
                        if self.stage == Stage::Run {
                            self.out.acked_in_run += 1;
                        }
                    }
                    None => self.error("ack for an unknown msg_id".into()),
                }
            }
            "pong" => self.out.pongs += 1,
            "error" => {
                if let Some(Some(id)) = msg_id
                    && let Some(p) = c.inflight.iter().position(|(m, _)| *m == id)
                {
                    c.inflight.remove(p);
                }
                let code = v.get("code").and_then(|t| t.as_str()).unwrap_or("?");
                self.error(format!("server error frame: {code}"));
            }
            // Commands, and anything newer, are not part of these scenarios.
            _ => {}
        }
        true
    }
}
