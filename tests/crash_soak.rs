//! Crash-safety soak: devices under load are cut off by SIGKILL of the server at a random moment,
//! the server restarts on the same data directory, and everything that was acknowledged must be
//! there, exactly once.
//!
//! Each cycle runs, against one server life:
//! * generic WebSocket devices streaming telemetry and events with msg_ids (bursts of 8 in flight),
//!   sending again after each crash what was never acked, like real at-least-once clients;
//! * HTTP attendance devices posting `sendlog` batches, and an AiFace terminal sending `sendlog`
//!   frames, each re-sending its unacknowledged batch after the crash;
//! * an operator queuing commands through the admin API for devices that stay offline.
//!
//! The server is killed (SIGKILL) after a random delay, then started again on the same data
//! directory with the other I/O driver (cycles alternate uring and epoll), and the checks run:
//! every acked msg_id and punch stored exactly once, nothing stored that was never sent, every
//! command answered 202 still queued. A last round re-sends what is still unacknowledged and
//! delivers the queued commands to their devices.
//!
//! `FLEETGATE_SOAK_CYCLES` (default 20) sets the cycles; `FLEETGATE_SOAK_SEED` replays a run's
//! random choices (kill delays, batch sizes, pauses: thread timing itself cannot be replayed).
//! The result of a long run is in `docs/durability.md`.

mod common;

use common::fleet::*;
use common::*;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GENERIC: usize = 4;
const HTTP: usize = 2;
const OFFLINE: usize = 3;
/// Bursts of 8 frames in flight, then a pause: each device commits a few hundred records a second,
/// so a long run stays quick to verify.
const PACE: Pace = Pace {
    window: 8,
    burst_pause_ms: Some((5, 40)),
};
/// The kill comes this long after the server is ready (uniform, ms): from "before any device got
/// in" to "well into the load".
const KILL_AFTER_MS: (u64, u64) = (0, 1500);

fn cycles() -> u64 {
    match std::env::var("FLEETGATE_SOAK_CYCLES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLEETGATE_SOAK_CYCLES={v:?} is not a number")),
        Err(_) => 20,
    }
}

fn create_attendance_device(srv: &Server, protocol: &str, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": format!("{protocol} {serial}"), "protocol": protocol, "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "POST /api/devices: {}", r.text());
    s(&r.json(), "device_id").to_string()
}

#[derive(Default)]
struct Totals {
    msg_ids: usize,
    http_punches: usize,
    terminal_punches: usize,
    commands: usize,
}

impl Totals {
    fn of(
        generic: &[MsgIdDevice],
        http: &[PunchLog],
        term: &PunchLog,
        cmds: &[CommandQueue],
    ) -> Totals {
        Totals {
            msg_ids: generic.iter().map(|d| d.acked.len()).sum(),
            http_punches: http.iter().map(|d| d.acked.len()).sum(),
            terminal_punches: term.acked.len(),
            commands: cmds.iter().map(|c| c.acked.len()).sum(),
        }
    }
}

#[test]
fn acknowledged_records_survive_sigkill_at_random_moments() {
    let cycles = cycles();
    let seed = seed_from_env();
    eprintln!(
        "crash soak: {cycles} cycles, seed {seed:#018x} (replay with FLEETGATE_SOAK_SEED={seed:#x})"
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut srv = Server::start_with(DRIVERS[0], &["--command-queue-limit", "100000"]);

    let mut generic: Vec<MsgIdDevice> = (0..GENERIC)
        .map(|i| MsgIdDevice::new(srv.create_device(&format!("soak-{i}"))))
        .collect();
    let mut http: Vec<PunchLog> = (0..HTTP)
        .map(|i| {
            let sn = format!("SOAK-HTTP-{i}");
            PunchLog::new(&create_attendance_device(&srv, "http", &sn), &sn)
        })
        .collect();
    let mut term = PunchLog::new(
        &create_attendance_device(&srv, "aiface", "SOAK-AF"),
        "SOAK-AF",
    );
    let offline: Vec<Device> = (0..OFFLINE)
        .map(|i| srv.create_device(&format!("offline-{i}")))
        .collect();
    let mut queues: Vec<CommandQueue> = offline.iter().map(|d| CommandQueue::new(&d.id)).collect();

    let mut in_flight_at_kill = 0u64;
    for cycle in 0..cycles {
        let before = Totals::of(&generic, &http, &term, &queues);
        let addr = srv.addr().to_string();
        let url = srv.url();
        let token = srv.admin_token().to_string();
        let progress = counters(GENERIC);

        let generic_h: Vec<_> = generic
            .drain(..)
            .zip(progress.iter())
            .map(|(st, p)| {
                let (addr, p, mut rng) = (addr.clone(), Arc::clone(p), rng.fork());
                thread::spawn(move || {
                    stream_msg_ids(&addr, st, &p, PACE, &mut rng, Duration::from_secs(120))
                })
            })
            .collect();
        let http_h: Vec<_> = http
            .drain(..)
            .map(|log| {
                let (url, mut rng) = (url.clone(), rng.fork());
                thread::spawn(move || http_punch_loop(&url, log, &mut rng, 20))
            })
            .collect();
        let term_h = {
            let (addr, log, mut rng) = (addr.clone(), term.clone(), rng.fork());
            thread::spawn(move || aiface_punch_loop(&addr, log, &mut rng, 10))
        };
        let cmd_h = {
            let (url, q, mut rng) = (url.clone(), std::mem::take(&mut queues), rng.fork());
            thread::spawn(move || command_loop(&url, &token, q, &mut rng, (20, 120)))
        };

        let delay = rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1);
        thread::sleep(Duration::from_millis(delay));
        let killed_io = srv.io().to_string();
        srv.kill9();

        generic = generic_h
            .into_iter()
            .map(|h| h.join().expect("generic device thread"))
            .collect();
        http = http_h
            .into_iter()
            .map(|h| h.join().expect("http device thread"))
            .collect();
        term = term_h.join().expect("terminal thread");
        let (q, cmd_end) = cmd_h.join().expect("command thread");
        queues = q;

        for d in &generic {
            assert!(
                !d.ended_badly(),
                "cycle {cycle} {}: {}",
                d.dev.name,
                d.ended
            );
            assert_eq!(
                d.not_stored, 0,
                "cycle {cycle} {}: a commit failed",
                d.dev.name
            );
        }
        for l in http.iter().chain(std::iter::once(&term)) {
            assert!(!l.ended_badly(), "cycle {cycle} {}: {}", l.serial, l.ended);
        }
        assert!(
            !cmd_end.starts_with("unexpected"),
            "cycle {cycle} commands: {cmd_end}"
        );
        in_flight_at_kill += generic.iter().map(|d| d.unacked.len() as u64).sum::<u64>()
            + http.iter().map(|l| l.pending.len() as u64).sum::<u64>()
            + term.pending.len() as u64;

        // Start again on the same data directory, with the other driver.
        srv.set_io(DRIVERS[(cycle as usize + 1) % DRIVERS.len()]);
        srv.start_again();
        let verify_started = Instant::now();
        let when = format!("cycle {cycle} (seed {seed:#x}), after SIGKILL at {delay} ms");
        let mut checked = 0;
        for d in &generic {
            checked += verify_msg_ids(&srv, d, &when);
        }
        for l in http.iter().chain(std::iter::once(&term)) {
            checked += verify_punches(&srv, l, &when);
        }
        for q in &queues {
            checked += q.verify_queued(&srv, &when);
        }
        let r = srv.anonymous().get("/healthz").expect("healthz");
        assert_eq!(r.status, 200, "{when}: /healthz {}", r.text());

        let after = Totals::of(&generic, &http, &term, &queues);
        eprintln!(
            "cycle {cycle:3} {killed_io:5} kill at {delay:4} ms: acked +{} msg_ids, +{} http punches, \
             +{} terminal punches, +{} commands; {checked} stored records verified in {:?}",
            after.msg_ids - before.msg_ids,
            after.http_punches - before.http_punches,
            after.terminal_punches - before.terminal_punches,
            after.commands - before.commands,
            verify_started.elapsed()
        );
    }

    // Last round, on a live server: everything unacknowledged is sent again, then everything ever
    // sent is stored exactly once, and the queued commands reach their devices.
    for d in generic.iter_mut() {
        settle_msg_ids(&srv, d);
        verify_msg_ids(&srv, d, "after the last re-send");
        assert_eq!(
            d.acked.len() as u64,
            d.next_seq,
            "{}: every seq sent is stored",
            d.dev.name
        );
    }
    for l in http.iter_mut() {
        while !l.pending.is_empty() {
            let r = http_sendlog(&srv.url(), l, 1).expect("sendlog on a live server");
            assert_eq!(r, Sent::Stored);
        }
        verify_punches(&srv, l, "after the last re-send");
        assert_eq!(
            l.acked.len() as u64,
            l.next - 1,
            "{}: every punch sent is stored",
            l.serial
        );
    }
    if !term.pending.is_empty() {
        let mut c = AifaceConn::connect(srv.addr(), &term.serial).expect("terminal connects");
        assert_eq!(c.sendlog(&mut term, 1).expect("sendlog"), Sent::Stored);
    }
    verify_punches(&srv, &term, "after the last re-send");
    assert_eq!(
        term.acked.len() as u64,
        term.next - 1,
        "every terminal punch sent is stored"
    );
    let mut delivered = 0;
    for (q, dev) in queues.iter().zip(&offline) {
        q.verify_queued(&srv, "before delivery");
        delivered += q.deliver_all(&srv, dev);
    }

    let t = Totals::of(&generic, &http, &term, &queues);
    for (what, n) in [
        ("msg_ids", t.msg_ids),
        ("http punches", t.http_punches),
        ("terminal punches", t.terminal_punches),
        ("commands", t.commands),
    ] {
        assert!(
            n > 0,
            "the soak acknowledged no {what} at all: nothing was tested"
        );
    }
    eprintln!(
        "crash soak done: {cycles} SIGKILL cycles in {:?}, seed {seed:#x}; acknowledged and verified \
         exactly once: {} msg_ids (telemetry + events), {} HTTP punches, {} AiFace punches; \
         {} commands acknowledged, all still queued after every restart, {delivered} delivered at \
         the end; {in_flight_at_kill} records (summed over kills) were unacknowledged when the server died and were sent again",
        started.elapsed(),
        t.msg_ids,
        t.http_punches,
        t.terminal_punches,
        t.commands,
    );
}
