//! A really full disk: the data directory is a tmpfs of its own (`Server::start_on_tmpfs`), the test
//! fills it with a file, and devices keep writing until the store refuses.
//!
//! While it is full, every device hears "not stored" and keeps its data (generic msg_id: an
//! `error` frame `not_stored` instead of the ack; HTTP `sendlog`: `result:false`; AiFace terminal:
//! `result:false`; SmackBio terminal: `Result` `Fail`), commands cannot be queued (503), and the server keeps serving reads, the API
//! and `/healthz`. Once the file is deleted, RocksDB resumes writing by itself (no restart): the
//! devices' re-sent records are stored, each exactly once, and everything acknowledged survives a
//! kill -9 afterwards.

mod common;

use common::fleet::*;
use common::*;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

for_both_drivers!(full_disk_answers_not_stored_and_recovers);

/// RocksDB preallocates ~70 MiB for its write-ahead log and resumes after a disk-full error only
/// once 64 MiB (its memtable size) are free; the tmpfs must hold both, plus the filler.
const TMPFS_MIB: u32 = 256;
/// Bulk telemetry payload: incompressible enough that the WAL and the flushes need real space.
const BULK_PAYLOAD: usize = 150_000;
/// How long RocksDB may take to notice that space is back (it polls every 5 s) and resume.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Writes zeros to `path` until the file system refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = fs::File::create(path)
        .unwrap_or_else(|e| panic!("create the filler {}: {e}", path.display()));
    let mut written = 0u64;
    for chunk in [vec![0u8; 1 << 20], vec![0u8; 4096], vec![0u8; 1]] {
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

/// The value of a metric line `name value` (no labels) in `/metrics`.
fn metric(srv: &Server, name: &str) -> Option<f64> {
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// RocksDB's own account of the error and its recovery attempts (its info LOG, which it writes
/// with some delay), for the test output.
fn rocksdb_recovery_lines(srv: &Server) -> String {
    let log = fs::read_to_string(srv.fs_path("LOG")).unwrap_or_default();
    let mut out: Vec<&str> = Vec::new();
    for l in log.lines() {
        let keep = [
            "Set regular background error",
            "is less than required disk buffer",
            "resume requested",
            "Clearing error",
        ]
        .iter()
        .any(|k| l.contains(k));
        // One line per second is plenty: "Cannot clear" repeats every 5 s.
        if keep && out.last().map_or(true, |p| p.get(..19) != l.get(..19)) {
            out.push(l);
        }
    }
    out.join("\n")
}

fn healthz_store(srv: &Server) -> String {
    let r = srv.anonymous().get("/healthz").expect("/healthz answers");
    assert_eq!(r.status, 200, "/healthz: {}", r.text());
    let v = parse(&r.body);
    assert_eq!(s(&v, "status"), "ok");
    s(&v, "store").to_string()
}

/// Sends frame `seq` of `st` and reads its answer: `true` for the ack, `false` for `not_stored`.
fn send_seq(ws: &mut Ws, st: &mut MsgIdDevice, seq: u64) -> bool {
    st.next_seq = st.next_seq.max(seq + 1);
    st.unacked.insert(seq);
    ws.send_text(&msg_id_frame(seq));
    let m = ws.recv_json(SOON);
    assert_eq!(
        opt_s(&m, "msg_id"),
        Some(format!("s{seq}").as_str()),
        "answer to s{seq}: {}",
        enc(&m)
    );
    match (opt_s(&m, "type"), opt_s(&m, "code")) {
        (Some("ack"), _) => {
            st.unacked.remove(&seq);
            st.acked.insert(seq);
            true
        }
        (Some("error"), Some("not_stored")) => {
            st.not_stored += 1;
            false
        }
        _ => panic!("unexpected answer to s{seq}: {}", enc(&m)),
    }
}

fn bulk_frame(i: u64, pad: &str) -> String {
    enc(&json!({"type":"telemetry","msg_id": format!("b{i}"),"payload":{"bulk": i, "pad": pad}}))
}

/// Bulk telemetry for one device: every acked `b<i>` stored exactly once.
fn verify_bulk(srv: &Server, dev: &Device, acked: &[u64]) {
    // Small pages: each item carries 150 kB.
    let items = srv.list_all(&format!("/api/devices/{}/telemetry?limit=20", dev.id));
    let mut got: std::collections::BTreeMap<u64, usize> = Default::default();
    for it in &items {
        *got.entry(u(field(it, "payload"), "bulk")).or_default() += 1;
    }
    let twice: Vec<_> = got.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "bulk records stored twice: {twice:?}");
    for i in acked {
        assert!(
            got.contains_key(i),
            "acknowledged bulk record b{i} is not stored"
        );
    }
}

/// The text of the first `<name>` element of an XML frame.
fn tag<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = frame.find(&open)? + open.len();
    let end = frame[start..].find(&format!("</{name}>"))? + start;
    Some(frame[start..end].trim())
}

/// A SmackBio terminal (XML over WebSocket) with no stored logs of its own.
struct SmackBio {
    ws: tungstenite::WebSocket<TcpStream>,
    serial: String,
}

impl SmackBio {
    /// Register (→ Token), Login (→ OK).
    fn login(addr: &str, serial: &str) -> SmackBio {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("handshake");
        let mut t = SmackBio {
            ws,
            serial: serial.to_string(),
        };
        t.send(&format!("<Message><Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>{serial}</DeviceSerialNo><CloudId>soak</CloudId></Message>"));
        let reg = t.until("Register", |f| tag(f, "Response") == Some("Register"));
        assert_eq!(tag(&reg, "Result"), Some("OK"), "{reg}");
        let token = tag(&reg, "Token").expect("a token").to_string();
        t.send(&format!("<Message><Request>Login</Request><DeviceSerialNo>{serial}</DeviceSerialNo><Token>{token}</Token></Message>"));
        let login = t.until("Login", |f| tag(f, "Response") == Some("Login"));
        assert_eq!(tag(&login, "Result"), Some("OK"), "{login}");
        t
    }

    fn send(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text.to_string()))
            .expect("send");
    }

    /// Reads until a frame satisfies `want`, answering the server's requests (clock, backfill: no
    /// logs) meanwhile.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        while Instant::now() < deadline {
            let f = match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => t.to_string(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("SmackBio session ended waiting for {what}: {e}"),
            };
            if want(&f) {
                return f;
            }
            let answer = match tag(&f, "Request") {
                Some(r @ ("GetFirstGlog" | "GetNextGlog")) => {
                    format!("<Message><Response>{r}</Response><Result>Fail</Result></Message>")
                }
                Some(r) => {
                    format!("<Message><Response>{r}</Response><Result>OK</Result></Message>")
                }
                None => continue,
            };
            self.send(&answer);
        }
        panic!("no SmackBio frame with {what} within {SOON:?}");
    }

    /// Sends punch `n` as a TimeLog_v2 event and returns the answer's `Result` (`OK`, `Fail`).
    fn timelog(&mut self, log: &mut PunchLog, n: u64) -> String {
        log.next = log.next.max(n + 1);
        let time = punch_time(n).replace(' ', "-T") + "Z";
        let trans = format!("tx-{n}-{}", random_u64() % 1000);
        self.send(&format!(
            "<Message><DeviceSerialNo>{}</DeviceSerialNo><Event>TimeLog_v2</Event><LogID>{n}</LogID><Time>{time}</Time><UserID>{n}</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><TransID>{trans}</TransID></Message>",
            self.serial
        ));
        let ack = self.until("TimeLog_v2 answer", |f| tag(f, "TransID") == Some(&trans));
        assert_eq!(tag(&ack, "Response"), Some("TimeLog_v2"), "{ack}");
        let result = tag(&ack, "Result").expect("Result").to_string();
        if result == "OK" {
            log.acked.insert(n);
        } else {
            log.refused += 1;
        }
        result
    }
}

fn create_attendance_device(srv: &Server, protocol: &str, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": protocol, "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "POST /api/devices: {}", r.text());
    s(&r.json(), "device_id").to_string()
}

fn full_disk_answers_not_stored_and_recovers(io: &str) {
    // The guard off: this test drives RocksDB into its own disk-full state (`tests/disk_guard.rs`
    // tests the guard that keeps it out of it).
    let mut srv = Server::start_on_tmpfs(io, &["--min-free-disk", "0"], TMPFS_MIB);
    let mut generic = MsgIdDevice::new(srv.create_device("df-generic"));
    let bulk_dev = srv.create_device("df-bulk");
    let mut http = PunchLog::new(
        &create_attendance_device(&srv, "http", "DF-HTTP"),
        "DF-HTTP",
    );
    let mut term = PunchLog::new(&create_attendance_device(&srv, "aiface", "DF-AF"), "DF-AF");
    let mut smack = PunchLog::new(
        &create_attendance_device(&srv, "smackbio", "DF-SB"),
        "DF-SB",
    );
    let offline = srv.create_device("df-offline");
    let mut queue = CommandQueue::new(&offline.id);

    // 1. Room on the disk: everything is stored.
    let mut ws = srv.device_session(&generic.dev);
    for seq in 0..8 {
        assert!(
            send_seq(&mut ws, &mut generic, seq),
            "s{seq} acked before the disk is full"
        );
    }
    assert_eq!(http_sendlog(&srv.url(), &mut http, 5), Ok(Sent::Stored));
    let mut af = AifaceConn::connect(srv.addr(), &term.serial).expect("terminal registers");
    assert_eq!(af.sendlog(&mut term, 5), Ok(Sent::Stored));
    let mut sb = SmackBio::login(srv.addr(), &smack.serial);
    assert_eq!(sb.timelog(&mut smack, 1), "OK");
    queue
        .enqueue(&srv.url(), srv.admin_token())
        .expect("command queued");
    assert_eq!(healthz_store(&srv), "ok");

    // 2. Fill the disk, then write until the store refuses (the WAL's preallocated space and the
    //    memtable take the first tens of MB).
    let filler = srv.fs_path("filler");
    let filled = fill(&filler);
    eprintln!("filled the {TMPFS_MIB} MiB tmpfs with {} MiB", filled >> 20);
    let pad: String = random_bytes(BULK_PAYLOAD)
        .iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect();
    let mut bulk = srv.device_session(&bulk_dev);
    let mut bulk_acked = Vec::new();
    let refused_at = (0..2_000u64)
        .find(|&i| {
            bulk.send_text(&bulk_frame(i, &pad));
            let m = bulk.recv_json(SOON);
            match (opt_s(&m, "type"), opt_s(&m, "code")) {
                (Some("ack"), _) => {
                    bulk_acked.push(i);
                    false
                }
                (Some("error"), Some("not_stored")) => true,
                _ => panic!("unexpected answer to bulk b{i}: {}", enc(&m)),
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "the disk is full but 2000 x 150 kB were stored: writes never failed\n{}",
                srv.logs()
            )
        });
    eprintln!(
        "the store refused bulk record b{refused_at} after {} acked ({} MB)",
        bulk_acked.len(),
        bulk_acked.len() * BULK_PAYLOAD / 1_000_000
    );

    // 3. While the disk is full: "not stored" everywhere, and the server keeps serving.
    let mut failing_checks = || {
        let seq = generic.next_seq;
        for s in seq..seq + 4 {
            // s ≡ 3 (mod 4) is an event: both kinds are refused.
            assert!(
                !send_seq(&mut ws, &mut generic, s),
                "s{s} acked although the disk is full"
            );
        }
        match http_sendlog(&srv.url(), &mut http, 5) {
            Ok(Sent::Refused(a)) => {
                let v = parse(a.as_bytes());
                assert_eq!(s(&v, "ret"), "sendlog");
                assert!(!s(&v, "reason").is_empty(), "{a}");
            }
            other => panic!("HTTP sendlog on a full disk: {other:?}"),
        }
        match af.sendlog(&mut term, 5) {
            Ok(Sent::Refused(a)) => {
                assert_eq!(a, r#"{"ret":"sendlog","result":false,"reason":1}"#);
            }
            other => panic!("AiFace sendlog on a full disk: {other:?}"),
        }
        let n = smack.next;
        assert_eq!(
            sb.timelog(&mut smack, n),
            "Fail",
            "SmackBio punch {n} on a full disk"
        );
        let r = srv.post(
            &format!("/api/devices/{}/commands", offline.id),
            &json!({"command":"soak","payload":{"n": 999}}),
        );
        assert_eq!(
            r.status,
            503,
            "queuing a command on a full disk: {}",
            r.text()
        );
        assert_eq!(error_code(&r.json()), "store_unavailable");
        // Reads and the API still work.
        assert_eq!(healthz_store(&srv), "writes_failing");
        verify_punches(&srv, &http, "disk full");
        assert_eq!(srv.listed_status(&generic.dev.id), "online");
        ws.ping_pong();
    };
    failing_checks();
    let errors = metric(&srv, "fleetgate_store_write_errors_total").unwrap_or(0.0);
    assert!(
        errors >= 4.0,
        "fleetgate_store_write_errors_total is {errors}"
    );
    assert_eq!(metric(&srv, "fleetgate_store_write_failing"), Some(1.0));
    assert!(
        srv.logs().contains("store writes are failing"),
        "no log line for the failing writes\n{}",
        srv.logs()
    );
    // Still full after RocksDB's next look at the free space (every 5 s): still refused, and the
    // process is still up.
    thread::sleep(Duration::from_secs(6));
    failing_checks();
    assert!(
        srv.is_running(),
        "the server exited on a full disk\n{}",
        srv.logs()
    );

    // 4. Space returns: writes succeed again without a restart.
    fs::remove_file(&filler).expect("delete the filler");
    let freed = Instant::now();
    let probe = *generic.unacked.iter().next().unwrap();
    loop {
        if send_seq(&mut ws, &mut generic, probe) {
            break;
        }
        assert!(
            freed.elapsed() < RECOVERY_DEADLINE,
            "writes still fail {RECOVERY_DEADLINE:?} after the disk has room again\n{}",
            srv.logs()
        );
        thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "writes succeed again {:?} after the space returned; RocksDB's LOG:\n{}",
        freed.elapsed(),
        rocksdb_recovery_lines(&srv)
    );
    // The devices send again what was not stored.
    for seq in generic.unacked.clone() {
        assert!(
            send_seq(&mut ws, &mut generic, seq),
            "s{seq} after recovery"
        );
    }
    assert_eq!(http_sendlog(&srv.url(), &mut http, 5), Ok(Sent::Stored));
    assert_eq!(af.sendlog(&mut term, 5), Ok(Sent::Stored));
    // The SmackBio terminal keeps its refused logs and sends them again.
    for n in 2..smack.next {
        assert_eq!(
            sb.timelog(&mut smack, n),
            "OK",
            "SmackBio punch {n} after recovery"
        );
    }
    bulk.send_text(&bulk_frame(refused_at, &pad));
    assert_eq!(
        s(&bulk.recv_json(SOON), "type"),
        "ack",
        "bulk b{refused_at} after recovery"
    );
    bulk_acked.push(refused_at);
    queue
        .enqueue(&srv.url(), srv.admin_token())
        .expect("command queued after recovery");
    assert_eq!(healthz_store(&srv), "ok");
    assert_eq!(metric(&srv, "fleetgate_store_write_failing"), Some(0.0));
    assert!(
        srv.logs().contains("store writes succeed again"),
        "no log line for the recovery\n{}",
        srv.logs()
    );

    // 5. Exactly once, and durable: the same checks after a kill -9 and a restart on the tmpfs.
    let check = |srv: &Server, when: &str| {
        verify_msg_ids(srv, &generic, when);
        assert!(generic.unacked.is_empty());
        verify_punches(srv, &http, when);
        verify_punches(srv, &term, when);
        verify_punches(srv, &smack, when);
        assert_eq!(smack.acked.len() as u64, smack.next - 1);
        assert!(http.pending.is_empty() && term.pending.is_empty());
        queue.verify_queued(srv, when);
        verify_bulk(srv, &bulk_dev, &bulk_acked);
    };
    check(&srv, "after the disk had room again");
    drop((ws, bulk, af, sb));
    srv.kill9();
    srv.start_again();
    check(&srv, "after recovery and kill -9");
    assert_eq!(healthz_store(&srv), "ok");
}
