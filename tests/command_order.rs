//! Commands posted concurrently for one device reach it exactly once, in sequence order, and none
//! is left `queued` (generic WebSocket protocol, both I/O drivers).
//!
//! Several poster threads each hold `CONNS_PER_POSTER` keep-alive HTTP connections and
//! `POST /api/devices/{id}/commands` on all of them at once, round after round. The server runs two
//! shards and the kernel spreads connections over the shards' SO_REUSEPORT listeners by hash of the
//! address pair, so with this many connections both shards enqueue commands for the same device at
//! the same time, each committing through its own batcher.
//!
//! * `device_registers_during_the_race`: the device registers once a quarter of the commands are
//!   created, while the rest are still being posted, and answers every `command` with a
//!   `command_result`.
//! * `device_registers_after_the_race`: the device is offline while every command is posted, then
//!   registers and must receive all of them.
//!
//! Checked in both: every created command is listed once, delivered exactly once, delivered in
//! increasing sequence order (the API shows no sequence number; the command list is ordered by it,
//! newest first), and after the race none stays `queued` (bounded wait, then failure).
//!
//! What this guards: a command's sequence number is taken before its commit, and the shards commit
//! independently, so a lower sequence number can become visible after a higher one. Delivery moves
//! the device's `delivered_through` watermark past the higher one; a command that commits below the
//! watermark afterwards must still be delivered. (Fails at 96e230f: such commands stay `queued`
//! for good; even a new registration scans only above the watermark, which only a restart
//! recomputes.)

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

for_both_drivers!(
    device_registers_during_the_race,
    device_registers_after_the_race
);

/// Poster threads.
const POSTERS: usize = 4;
/// Keep-alive connections per poster; one request in flight on each.
const CONNS_PER_POSTER: usize = 8;
/// Rounds of one POST per connection.
const ROUNDS: usize = 25;
const TOTAL: usize = POSTERS * CONNS_PER_POSTER * ROUNDS;

/// Every other limit keeps its default; the queue bound (100) must admit every command of the
/// race at once (429 `queue_full` otherwise).
const SERVER_FLAGS: [&str; 2] = ["--command-queue-limit", "100000"];

fn device_registers_during_the_race(io: &str) {
    race(io, Some(TOTAL / 4));
}

fn device_registers_after_the_race(io: &str) {
    race(io, None);
}

/// One created command: its id and the number in its payload.
#[derive(Clone, Debug)]
struct Created {
    id: String,
    n: usize,
}

/// A poster: keep-alive connections, one POST on each per round, all written before any answer
/// is read. Returns the commands created (answered 202).
fn post_commands(
    addr: &str,
    token: &str,
    device_id: &str,
    poster: usize,
    created_count: &AtomicUsize,
) -> Vec<Created> {
    let mut conns: Vec<(TcpStream, Vec<u8>)> = (0..CONNS_PER_POSTER)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect for POST");
            s.set_nodelay(true).ok();
            s.set_write_timeout(Some(SOON)).ok();
            (s, Vec::new())
        })
        .collect();
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        for (i, (s, _)) in conns.iter_mut().enumerate() {
            let n = (poster * ROUNDS + round) * CONNS_PER_POSTER + i;
            let body = enc(&json!({"command":"race","payload":{"n": n}}));
            let req = format!(
                "POST /api/devices/{device_id}/commands HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes())
                .unwrap_or_else(|e| panic!("poster {poster}: writing POST {n}: {e}"));
        }
        for (i, (s, buf)) in conns.iter_mut().enumerate() {
            let n = (poster * ROUNDS + round) * CONNS_PER_POSTER + i;
            let r = read_response(s, buf, SOON)
                .unwrap_or_else(|e| panic!("poster {poster}: no answer to POST {n}: {e}"));
            assert_eq!(
                r.status,
                202,
                "poster {poster}: POST {n}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let v = r.json();
            out.push(Created {
                id: s_owned(&v, "command_id"),
                n,
            });
            created_count.fetch_add(1, Ordering::SeqCst);
        }
    }
    out
}

fn s_owned(v: &Value, key: &str) -> String {
    s(v, key).to_string()
}

/// What the device saw: the command ids in delivery order, and anything unexpected.
#[derive(Default)]
struct DeviceLog {
    delivered: Vec<String>,
    unexpected: Vec<String>,
}

/// The device: waits until `start_after` commands exist, registers, then answers every `command`
/// with an ok `command_result` until `stop` is set.
fn run_device(
    addr: &str,
    dev: &Device,
    start_after: usize,
    created_count: &AtomicUsize,
    delivered_count: &AtomicUsize,
    registered: &AtomicBool,
    stop: &AtomicBool,
) -> DeviceLog {
    let deadline = Instant::now() + Duration::from_secs(60);
    while created_count.load(Ordering::SeqCst) < start_after {
        assert!(
            Instant::now() < deadline,
            "the posters never created {start_after} commands"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let mut ws = Ws::connect(addr);
    ws.register(dev);
    registered.store(true, Ordering::SeqCst);
    let mut log = DeviceLog::default();
    while !stop.load(Ordering::SeqCst) {
        match ws.recv(Duration::from_millis(200)) {
            WsEvent::Json(m) if opt_s(&m, "type") == Some("command") => {
                let id = s_owned(&m, "command_id");
                ws.send_json(
                    &json!({"type":"command_result","command_id": id.as_str(),"status":"ok","payload":{}}),
                );
                log.delivered.push(id);
                delivered_count.fetch_add(1, Ordering::SeqCst);
            }
            WsEvent::Json(m) => log.unexpected.push(enc(&m)),
            WsEvent::Timeout | WsEvent::Pong(_) => {}
            other => {
                log.unexpected.push(format!("session ended: {other:?}"));
                break;
            }
        }
    }
    ws.close();
    log
}

/// `register_after`: `Some(k)` registers the device once `k` commands exist (during the race);
/// `None` registers it after every POST was answered.
fn race(io: &str, register_after: Option<usize>) {
    let srv = Server::start_with(io, &SERVER_FLAGS);
    let dev = srv.create_device("commanded");
    let addr = srv.addr().to_string();
    let token = srv.admin_token().to_string();

    let created_count = AtomicUsize::new(0);
    let delivered_count = AtomicUsize::new(0);
    let registered = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let device_log = Mutex::new(None);

    let created: Vec<Created> = thread::scope(|sc| {
        let device = |start_after: usize| {
            let log = run_device(
                &addr,
                &dev,
                start_after,
                &created_count,
                &delivered_count,
                &registered,
                &stop,
            );
            *device_log.lock().unwrap() = Some(log);
        };
        let dev_thread = register_after.map(|k| sc.spawn(move || device(k)));
        let posters: Vec<_> = (0..POSTERS)
            .map(|p| {
                let (addr, token, id, cc) = (&addr, &token, &dev.id, &created_count);
                sc.spawn(move || post_commands(addr, token, id, p, cc))
            })
            .collect();
        let created: Vec<Created> = posters
            .into_iter()
            .flat_map(|h| h.join().expect("poster thread panicked"))
            .collect();
        assert_eq!(created.len(), TOTAL);
        let dev_thread = dev_thread.unwrap_or_else(|| sc.spawn(move || device(0)));
        if register_after.is_some() {
            assert!(
                registered.load(Ordering::SeqCst),
                "{io}: the device registered only after the race; make the race longer"
            );
        }

        // Bounded wait: every command delivered and none left queued.
        let deadline = Instant::now() + SOON;
        while Instant::now() < deadline {
            if delivered_count.load(Ordering::SeqCst) >= TOTAL && queued(&srv, &dev.id) == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
        dev_thread.join().expect("device thread panicked");
        created
    });
    let log = device_log.into_inner().unwrap().expect("device log");

    // The list is newest first, i.e. by descending sequence number: reversed, the position of a
    // command is its rank in sequence order.
    let mut listed = srv.commands(&dev.id);
    listed.reverse();
    let rank: HashMap<String, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, c)| (s_owned(c, "command_id"), i))
        .collect();
    let status: HashMap<String, String> = listed
        .iter()
        .map(|c| (s_owned(c, "command_id"), s_owned(c, "status")))
        .collect();

    let mut problems = Vec::new();
    if listed.len() != TOTAL || created.iter().any(|c| !rank.contains_key(&c.id)) {
        problems.push(format!(
            "{} commands listed for {TOTAL} created (each must be listed once)",
            listed.len()
        ));
    }
    if !log.unexpected.is_empty() {
        problems.push(format!(
            "the device got unexpected messages: {:?}",
            &log.unexpected[..log.unexpected.len().min(10)]
        ));
    }
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &log.delivered {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let twice = times.values().filter(|n| **n > 1).count();
    if twice > 0 {
        problems.push(format!("{twice} commands delivered more than once"));
    }
    let never: Vec<&Created> = created
        .iter()
        .filter(|c| !times.contains_key(c.id.as_str()))
        .collect();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &never {
        *by_status
            .entry(status.get(&c.id).map_or("unlisted", |s| s.as_str()))
            .or_default() += 1;
    }
    if !never.is_empty() {
        problems.push(format!(
            "{} of {TOTAL} commands never delivered after {SOON:?} (by status now: {by_status:?}; \
             e.g. payload n = {:?}, sequence ranks {:?})",
            never.len(),
            never.iter().take(10).map(|c| c.n).collect::<Vec<_>>(),
            never
                .iter()
                .take(10)
                .filter_map(|c| rank.get(&c.id))
                .collect::<Vec<_>>()
        ));
    }
    let left_queued = status.values().filter(|s| *s == "queued").count();
    if left_queued > 0 {
        problems.push(format!("{left_queued} commands left `queued`"));
    }
    let ranks: Vec<usize> = log
        .delivered
        .iter()
        .filter_map(|id| rank.get(id).copied())
        .collect();
    let inversions: Vec<(usize, usize)> = ranks
        .windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| (w[0], w[1]))
        .collect();
    if !inversions.is_empty() {
        problems.push(format!(
            "{} deliveries not in increasing sequence order (rank before, rank after): {:?}",
            inversions.len(),
            &inversions[..inversions.len().min(10)]
        ));
    }
    let when = match register_after {
        Some(k) => format!("device registered after {k} of {TOTAL} commands were created"),
        None => format!("device registered after all {TOTAL} commands were created"),
    };
    assert!(
        problems.is_empty(),
        "{io}, {when}, {} delivered:\n  {}",
        log.delivered.len(),
        problems.join("\n  ")
    );
}

/// Commands of the device listed as `queued`.
fn queued(srv: &Server, device_id: &str) -> usize {
    srv.commands(device_id)
        .iter()
        .filter(|c| opt_s(c, "status") == Some("queued"))
        .count()
}
