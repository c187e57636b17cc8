//! Simulated devices that behave like real at-least-once clients: each keeps what the server did
//! not acknowledge and sends it again on its next connection. Used by the kill -9 tests
//! (`crash_recovery.rs`, `crash_soak.rs`) and the disk-full test (`disk_full.rs`), together with
//! the checks that every acknowledged record is stored exactly once.
//!
//! Three kinds of device, each with its own acknowledgement:
//! * `MsgIdDevice` — generic WebSocket protocol, telemetry and events with msg_ids, several in
//!   flight; acknowledged by `{"type":"ack","msg_id"}`.
//! * `PunchLog` driven over HTTP (`POST /api/device-http`, `sendlog`) or as an AiFace terminal over
//!   WebSocket (`sendlog` frames); acknowledged by `result:true`.
//! * `CommandQueue` — commands queued through the admin API for a device that is offline;
//!   acknowledged by `202`.

use super::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use fleetgate::client::Client;

// ---------------------------------------------------------------------------
// Seeded randomness (SplitMix64): the soak prints its seed so a failing run's choices replay.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// An independent generator for a worker thread.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// `FLEETGATE_SOAK_SEED` (decimal or 0x-hex) if set, else a fresh random seed.
pub fn seed_from_env() -> u64 {
    match std::env::var("FLEETGATE_SOAK_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("FLEETGATE_SOAK_SEED={s:?} is not a number"))
        }
        Err(_) => random_u64(),
    }
}

// ---------------------------------------------------------------------------
// Generic devices: telemetry and events with msg_ids

/// Event type of the events a `MsgIdDevice` sends.
pub const SOAK_EVENT: &str = "soak_event";

/// One generic device's view, carried across server lives like a real at-least-once client.
#[derive(Clone, Debug)]
pub struct MsgIdDevice {
    pub dev: Device,
    /// seqs whose ack arrived.
    pub acked: BTreeSet<u64>,
    /// seqs sent without an ack yet: sent again (same msg_id) on the next session.
    pub unacked: BTreeSet<u64>,
    pub next_seq: u64,
    /// `not_stored` answers received (each seq is then sent again).
    pub not_stored: u64,
    /// How the last session ended.
    pub ended: String,
}

impl MsgIdDevice {
    pub fn new(dev: Device) -> MsgIdDevice {
        MsgIdDevice {
            dev,
            acked: BTreeSet::new(),
            unacked: BTreeSet::new(),
            next_seq: 0,
            not_stored: 0,
            ended: String::new(),
        }
    }

    /// Whether the last session ended in a way a crash cannot explain.
    pub fn ended_badly(&self) -> bool {
        self.ended.starts_with("TIMEOUT") || self.ended.starts_with("unexpected")
    }
}

/// The frame for `seq`: msg_id `s<seq>`, payload `{"seq":seq}`; every fourth one is an event.
pub fn msg_id_frame(seq: u64) -> String {
    if seq % 4 == 3 {
        enc(
            &json!({"type":"event","event_type": SOAK_EVENT,"msg_id": format!("s{seq}"),"payload":{"seq": seq}}),
        )
    } else {
        enc(&json!({"type":"telemetry","msg_id": format!("s{seq}"),"payload":{"seq": seq}}))
    }
}

/// How a `MsgIdDevice` session sends.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Frames in flight at most.
    pub window: usize,
    /// `None`: refill the window as acks arrive (as fast as the server commits). `Some((lo, hi))`:
    /// send a burst of `window` frames, wait for all their answers, pause `lo..=hi` ms, repeat.
    pub burst_pause_ms: Option<(u64, u64)>,
}

/// One session: register, send again what was never acked, then new frames, until the connection
/// ends (or `limit` passes). Counts acks in `progress`.
pub fn stream_msg_ids(
    addr: &str,
    mut st: MsgIdDevice,
    progress: &AtomicU64,
    pace: Pace,
    rng: &mut Rng,
    limit: Duration,
) -> MsgIdDevice {
    let deadline = Instant::now() + limit;
    let mut ws = match Ws::try_connect(addr) {
        Ok(ws) => ws,
        Err(e) => {
            st.ended = format!("connect failed: {e}");
            return st;
        }
    };
    let reg =
        json!({"type":"register","device_id": st.dev.id.as_str(),"token": st.dev.token.as_str()});
    if let Err(e) = ws.try_send_text(&enc(&reg)) {
        st.ended = format!("register send failed: {e}");
        return st;
    }
    match ws.recv(SOON) {
        WsEvent::Json(m) if opt_s(&m, "type") == Some("registered") => {}
        WsEvent::Timeout => {
            st.ended = "TIMEOUT: no answer to register within 20 s".into();
            return st;
        }
        WsEvent::Json(m) => {
            st.ended = format!("unexpected answer to register: {}", enc(&m));
            return st;
        }
        other => {
            st.ended = format!("register failed: {other:?}");
            return st;
        }
    }
    let mut resend: Vec<u64> = st.unacked.iter().rev().copied().collect();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    loop {
        if Instant::now() >= deadline {
            st.ended = "time limit".into();
            return st;
        }
        let refill = match pace.burst_pause_ms {
            None => true,
            Some((lo, hi)) => {
                if in_flight.is_empty() {
                    thread::sleep(Duration::from_millis(rng.between(lo, hi)));
                    true
                } else {
                    false
                }
            }
        };
        while refill && in_flight.len() < pace.window {
            let seq = resend.pop().unwrap_or_else(|| {
                st.next_seq += 1;
                st.next_seq - 1
            });
            // Unacked before the send: it may be stored even if the send fails halfway.
            st.unacked.insert(seq);
            if let Err(e) = ws.try_send_text(&msg_id_frame(seq)) {
                st.ended = format!("send failed: {e}");
                return st;
            }
            in_flight.insert(seq);
        }
        match ws.recv(SOON) {
            WsEvent::Json(m) => {
                let ty = opt_s(&m, "type");
                let code = m.get("code").and_then(|c| c.as_str());
                let seq = opt_s(&m, "msg_id")
                    .and_then(|id| id.strip_prefix('s'))
                    .and_then(|n| n.parse::<u64>().ok());
                match (ty, code, seq) {
                    (Some("ack"), _, Some(seq)) if in_flight.remove(&seq) => {
                        st.unacked.remove(&seq);
                        st.acked.insert(seq);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some("error"), Some("not_stored"), Some(seq)) if in_flight.remove(&seq) => {
                        // Kept, and sent again later in this session.
                        st.not_stored += 1;
                        resend.insert(0, seq);
                    }
                    _ => {
                        st.ended = format!("unexpected message {}", enc(&m));
                        return st;
                    }
                }
            }
            WsEvent::Timeout => {
                st.ended = "TIMEOUT: no answer within 20 s while the server was running".into();
                return st;
            }
            other => {
                st.ended = format!("session ended: {other:?}");
                return st;
            }
        }
    }
}

/// Sends every unacked frame again on a live server and waits for all acks.
pub fn settle_msg_ids(srv: &Server, st: &mut MsgIdDevice) {
    if st.unacked.is_empty() {
        return;
    }
    let mut ws = srv.device_session(&st.dev);
    for &seq in st.unacked.iter() {
        ws.send_text(&msg_id_frame(seq));
    }
    for _ in 0..st.unacked.len() {
        let a = ws.recv_type("ack", SOON);
        let seq: u64 = s(&a, "msg_id")[1..].parse().unwrap();
        st.acked.insert(seq);
    }
    st.unacked.clear();
    ws.close();
}

/// Every acked seq is stored exactly once, no seq twice, nothing stored that was never sent.
/// Returns the number of stored records checked.
pub fn verify_msg_ids(srv: &Server, st: &MsgIdDevice, when: &str) -> usize {
    let id = &st.dev.id;
    let mut count: HashMap<u64, usize> = HashMap::new();
    let telemetry = srv.list_all(&format!("/api/devices/{id}/telemetry?limit=1000"));
    let events = srv.list_all(&format!(
        "/api/events?device_id={id}&type={SOAK_EVENT}&limit=1000"
    ));
    for it in telemetry.iter().chain(events.iter()) {
        *count.entry(u(field(it, "payload"), "seq")).or_default() += 1;
    }
    let mut dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    dups.sort();
    assert!(
        dups.is_empty(),
        "{when}: device {} stored msg_ids more than once (seq, times): {dups:?}",
        st.dev.name
    );
    let missing: Vec<_> = st.acked.iter().filter(|s| !count.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{when}: device {}: {} acknowledged msg_ids are not stored (of {} acked), e.g. {:?}",
        st.dev.name,
        missing.len(),
        st.acked.len(),
        &missing[..missing.len().min(20)]
    );
    let phantom: Vec<_> = count.keys().filter(|s| **s >= st.next_seq).collect();
    assert!(
        phantom.is_empty(),
        "{when}: device {} has stored seqs that were never sent: {phantom:?}",
        st.dev.name
    );
    telemetry.len() + events.len()
}

// ---------------------------------------------------------------------------
// Attendance punches: HTTP `sendlog` and AiFace terminals

/// Punch `n` of a device: user id `n`, local time 2026-01-01 00:00:00 plus `n` seconds (unique per
/// device, so its identity — device, user, time, event — is unique).
pub fn punch(n: u64) -> Value {
    json!({"enrollid": n, "time": punch_time(n), "mode": 1, "inout": 0, "event": 0})
}

pub fn punch_time(n: u64) -> String {
    let base: jiff::civil::DateTime = "2026-01-01T00:00:00".parse().unwrap();
    let t = base
        .checked_add(jiff::SignedDuration::from_secs(n as i64))
        .expect("punch time");
    t.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// The punches of one attendance device, as the device keeps them.
#[derive(Clone, Debug)]
pub struct PunchLog {
    pub device_id: String,
    pub serial: String,
    /// Punch numbers answered `result:true`.
    pub acked: BTreeSet<u64>,
    /// The batch sent without a `true` answer yet: sent again, as is, next time.
    pub pending: Vec<u64>,
    /// Next punch number (numbers start at 1: user id 0 is a door event).
    pub next: u64,
    /// `result:false` answers received.
    pub refused: u64,
    pub ended: String,
}

impl PunchLog {
    pub fn new(device_id: &str, serial: &str) -> PunchLog {
        PunchLog {
            device_id: device_id.to_string(),
            serial: serial.to_string(),
            acked: BTreeSet::new(),
            pending: Vec::new(),
            next: 1,
            refused: 0,
            ended: String::new(),
        }
    }

    /// The batch to send: the unacknowledged one, or `size` new punches.
    fn batch(&mut self, size: u64) -> Vec<Value> {
        if self.pending.is_empty() {
            self.pending = (self.next..self.next + size.max(1)).collect();
            self.next += size.max(1);
        }
        self.pending.iter().map(|&n| punch(n)).collect()
    }

    fn stored(&mut self) -> usize {
        let n = self.pending.len();
        self.acked.extend(self.pending.drain(..));
        n
    }

    pub fn ended_badly(&self) -> bool {
        self.ended.starts_with("TIMEOUT") || self.ended.starts_with("unexpected")
    }
}

/// What a device heard for one `sendlog`.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Stored,
    /// `result:false`, with the answer.
    Refused(String),
}

/// One HTTP `sendlog` of the pending batch (or `size` new punches). `Err` when no answer came
/// (connection refused or cut: the server died), the batch then stays pending.
pub fn http_sendlog(url: &str, log: &mut PunchLog, size: u64) -> Result<Sent, String> {
    let records = log.batch(size);
    let body = json!({"cmd":"sendlog","sn": log.serial.as_str(),"count": records.len(),"logindex": 0,"record": Value::from(records)});
    let client = Client::new(url)
        .map_err(|e| format!("client: {e:?}"))?
        .with_timeout(SOON);
    let r = client
        .post_json("/api/device-http", enc(&body).as_bytes())
        .map_err(|e| format!("{e:?}"))?;
    if r.status != 200 {
        return Err(format!("unexpected status {} {}", r.status, r.text()));
    }
    let v = parse(&r.body);
    match v.get("result").and_then(|b| b.as_bool()) {
        Some(true) => {
            log.stored();
            Ok(Sent::Stored)
        }
        Some(false) => {
            log.refused += 1;
            Ok(Sent::Refused(enc(&v)))
        }
        None => Err(format!("unexpected answer {}", enc(&v))),
    }
}

/// An HTTP device posting batches of 1..=`max_batch` punches with random pauses until the server
/// stops answering.
pub fn http_punch_loop(url: &str, mut log: PunchLog, rng: &mut Rng, max_batch: u64) -> PunchLog {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() >= deadline {
            log.ended = "time limit".into();
            return log;
        }
        let size = rng.between(1, max_batch);
        match http_sendlog(url, &mut log, size) {
            Ok(Sent::Stored) => {}
            Ok(Sent::Refused(a)) => {
                log.ended = format!("unexpected refusal {a}");
                return log;
            }
            Err(e) if e.starts_with("unexpected") => {
                log.ended = e;
                return log;
            }
            Err(e) => {
                log.ended = format!("server gone: {e}");
                return log;
            }
        }
        thread::sleep(Duration::from_millis(rng.between(0, 30)));
    }
}

/// An AiFace terminal's connection (JSON over WebSocket).
pub struct AifaceConn {
    ws: Ws,
    serial: String,
    logindex: u64,
}

/// Answers a request of the server the way a terminal with no stored logs does.
fn aiface_answer(m: &Value) -> Option<String> {
    match opt_s(m, "cmd") {
        Some("getnewlog") | Some("getalllog") => Some(
            r#"{"ret":"getnewlog","result":true,"count":0,"from":0,"to":0,"record":[]}"#
                .replace("getnewlog", opt_s(m, "cmd").unwrap()),
        ),
        Some(c) => Some(format!(r#"{{"ret":"{c}","result":true}}"#)),
        None => None,
    }
}

impl AifaceConn {
    /// Connects and registers (`reg` → `ret reg` with `result:true`).
    pub fn connect(addr: &str, serial: &str) -> Result<AifaceConn, String> {
        let mut ws = Ws::try_connect(addr)?;
        let reg = json!({"cmd":"reg","sn": serial,"cpusn":"soak","devinfo":{"modelname":"AI07F","firmware":"ai806"}});
        ws.try_send_text(&enc(&reg))?;
        let mut c = AifaceConn {
            ws,
            serial: serial.to_string(),
            logindex: 0,
        };
        let ans = c.until_ret("reg")?;
        if ans.get("result").and_then(|b| b.as_bool()) != Some(true) {
            return Err(format!("unexpected answer to reg: {}", enc(&ans)));
        }
        Ok(c)
    }

    /// Reads until the reply `ret` arrives, answering the server's own requests meanwhile.
    fn until_ret(&mut self, ret: &str) -> Result<Value, String> {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.recv(left) {
                WsEvent::Json(m) if opt_s(&m, "ret") == Some(ret) => return Ok(m),
                WsEvent::Json(m) => {
                    if let Some(a) = aiface_answer(&m) {
                        self.ws.try_send_text(&a)?;
                    }
                }
                WsEvent::Timeout => {
                    return Err(format!("TIMEOUT: no ret {ret} within {SOON:?}"));
                }
                WsEvent::Pong(_) | WsEvent::Binary(_) => {}
                other => return Err(format!("session ended: {other:?}")),
            }
        }
    }

    /// One `sendlog` of the pending batch (or `size` new punches).
    pub fn sendlog(&mut self, log: &mut PunchLog, size: u64) -> Result<Sent, String> {
        let records = log.batch(size);
        self.logindex += 1;
        let frame = json!({"cmd":"sendlog","sn": self.serial.as_str(),"count": records.len(),"logindex": self.logindex,"record": Value::from(records)});
        self.ws.try_send_text(&enc(&frame))?;
        let ans = self.until_ret("sendlog")?;
        match ans.get("result").and_then(|b| b.as_bool()) {
            Some(true) => {
                if ans.get("logindex").and_then(|i| i.as_u64()) != Some(self.logindex) {
                    return Err(format!(
                        "unexpected sendlog answer for logindex {}: {}",
                        self.logindex,
                        enc(&ans)
                    ));
                }
                log.stored();
                Ok(Sent::Stored)
            }
            Some(false) => {
                log.refused += 1;
                Ok(Sent::Refused(enc(&ans)))
            }
            None => Err(format!("unexpected sendlog answer {}", enc(&ans))),
        }
    }
}

/// An AiFace terminal: connects, then sends batches of 1..=`max_batch` punches with random pauses
/// until the connection ends.
pub fn aiface_punch_loop(addr: &str, mut log: PunchLog, rng: &mut Rng, max_batch: u64) -> PunchLog {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn = match AifaceConn::connect(addr, &log.serial) {
        Ok(c) => c,
        Err(e) => {
            log.ended = e;
            return log;
        }
    };
    loop {
        if Instant::now() >= deadline {
            log.ended = "time limit".into();
            return log;
        }
        let size = rng.between(1, max_batch);
        match conn.sendlog(&mut log, size) {
            Ok(Sent::Stored) => {}
            Ok(Sent::Refused(a)) => {
                log.ended = format!("unexpected refusal {a}");
                return log;
            }
            Err(e) => {
                log.ended = e;
                return log;
            }
        }
        thread::sleep(Duration::from_millis(rng.between(0, 30)));
    }
}

/// Every acknowledged punch is listed exactly once; nothing listed that was never sent. Returns
/// the number of punches listed.
pub fn verify_punches(srv: &Server, log: &PunchLog, when: &str) -> usize {
    let items = srv.list_all(&format!(
        "/api/attendance?device_id={}&limit=1000",
        log.device_id
    ));
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for it in &items {
        let n = u(it, "enrollid");
        assert_eq!(
            opt_s(it, "local_time"),
            Some(punch_time(n).as_str()),
            "{when}: punch {n} of {} stored with another time: {}",
            log.serial,
            enc(it)
        );
        *count.entry(n).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dups.is_empty(),
        "{when}: {} stored punches more than once (punch, times): {dups:?}",
        log.serial
    );
    let missing: Vec<_> = log
        .acked
        .iter()
        .filter(|n| !count.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{when}: {}: {} acknowledged punches are not stored (of {}), e.g. {:?}",
        log.serial,
        missing.len(),
        log.acked.len(),
        &missing[..missing.len().min(20)]
    );
    let phantom: Vec<_> = count.keys().filter(|n| **n >= log.next).collect();
    assert!(
        phantom.is_empty(),
        "{when}: {} has stored punches that were never sent: {phantom:?}",
        log.serial
    );
    items.len()
}

// ---------------------------------------------------------------------------
// Commands queued for offline devices

/// Commands queued for one device that stays offline.
#[derive(Clone, Debug, Default)]
pub struct CommandQueue {
    pub device_id: String,
    /// command_id → its number, for commands answered 202.
    pub acked: BTreeMap<String, u64>,
    /// Numbers of requests that got no answer (the server died): the command may or may not exist.
    pub unanswered: BTreeSet<u64>,
    pub next: u64,
}

impl CommandQueue {
    pub fn new(device_id: &str) -> CommandQueue {
        CommandQueue {
            device_id: device_id.to_string(),
            ..Default::default()
        }
    }

    /// POST one command (`soak`, payload `{"n":…}`). `Err` when no answer came.
    pub fn enqueue(&mut self, url: &str, admin_token: &str) -> Result<(), String> {
        let n = self.next;
        self.next += 1;
        let body = json!({"command":"soak","payload":{"n": n}});
        let client = Client::new(url)
            .map_err(|e| format!("client: {e:?}"))?
            .with_token(admin_token)
            .with_timeout(SOON);
        let r = match client.post_json(
            &format!("/api/devices/{}/commands", self.device_id),
            enc(&body).as_bytes(),
        ) {
            Ok(r) => r,
            Err(e) => {
                self.unanswered.insert(n);
                return Err(format!("{e:?}"));
            }
        };
        if r.status != 202 {
            return Err(format!("unexpected status {} {}", r.status, r.text()));
        }
        let v = parse(&r.body);
        self.acked.insert(s(&v, "command_id").to_string(), n);
        Ok(())
    }

    /// Every acknowledged command is still listed as `queued`; the only others are requests that
    /// got no answer (each at most once). Returns the number listed.
    pub fn verify_queued(&self, srv: &Server, when: &str) -> usize {
        let listed = srv.list_all(&format!(
            "/api/devices/{}/commands?limit=200",
            self.device_id
        ));
        let mut seen_n: BTreeMap<u64, usize> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for c in &listed {
            assert_eq!(
                opt_s(c, "status"),
                Some("queued"),
                "{when}: a command for an offline device is not queued: {}",
                enc(c)
            );
            ids.insert(s(c, "command_id").to_string());
            let n = u(field(c, "payload"), "n");
            *seen_n.entry(n).or_default() += 1;
            if let Some(&want) = self.acked.get(s(c, "command_id")) {
                assert_eq!(want, n, "{when}: command payload changed: {}", enc(c));
            } else {
                assert!(
                    self.unanswered.contains(&n),
                    "{when}: a command that was never acknowledged nor left unanswered is queued: {}",
                    enc(c)
                );
            }
        }
        let dups: Vec<_> = seen_n.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "{when}: commands queued twice: {dups:?}");
        let lost: Vec<_> = self.acked.keys().filter(|id| !ids.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{when}: {} acknowledged commands are no longer queued (of {}): {:?}",
            lost.len(),
            self.acked.len(),
            &lost[..lost.len().min(10)]
        );
        listed.len()
    }

    /// The device connects and receives every queued command, each once. Returns how many.
    pub fn deliver_all(&self, srv: &Server, dev: &Device) -> usize {
        let listed = srv.list_all(&format!(
            "/api/devices/{}/commands?limit=200",
            self.device_id
        ));
        let want: BTreeSet<String> = listed
            .iter()
            .map(|c| s(c, "command_id").to_string())
            .collect();
        let mut ws = srv.device_session(dev);
        let mut got: BTreeSet<String> = BTreeSet::new();
        while got.len() < want.len() {
            let m = ws.recv_type("command", SOON);
            let id = s(&m, "command_id").to_string();
            assert!(
                want.contains(&id),
                "delivered a command never queued: {}",
                enc(&m)
            );
            assert!(got.insert(id), "command delivered twice: {}", enc(&m));
        }
        ws.ping_pong();
        ws.close();
        got.len()
    }
}

/// Queues commands (pausing `lo..=hi` ms between them) until the server stops answering.
pub fn command_loop(
    url: &str,
    admin_token: &str,
    mut queues: Vec<CommandQueue>,
    rng: &mut Rng,
    pause_ms: (u64, u64),
) -> (Vec<CommandQueue>, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() >= deadline {
            return (queues, "time limit".into());
        }
        let i = rng.below(queues.len() as u64) as usize;
        if let Err(e) = queues[i].enqueue(url, admin_token) {
            return (queues, e);
        }
        thread::sleep(Duration::from_millis(rng.between(pause_ms.0, pause_ms.1)));
    }
}

/// A shared counter per worker, for "has every device made progress" checks.
pub fn counters(n: usize) -> Vec<Arc<AtomicU64>> {
    (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect()
}
