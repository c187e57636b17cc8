//! kill -9 while devices stream telemetry with msg_ids: after each restart on
//! the same data directory every acked msg_id is stored, and none twice —
//! including msg_ids a device re-sends after the crash because their ack never
//! arrived (some of those were committed before the kill).

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

for_both_drivers!(kill9_keeps_every_acked_msg_id_exactly_once);

const DEVICES: usize = 4;
const IN_FLIGHT: usize = 8;
const CYCLES: u64 = 3;

/// One device's view, carried across crash cycles like a real at-least-once client.
#[derive(Default, Clone)]
struct DevState {
    /// seqs whose ack arrived.
    acked: BTreeSet<u64>,
    /// seqs sent without an ack yet: re-sent (same msg_id) on the next session.
    unacked: BTreeSet<u64>,
    next_seq: u64,
    /// How the last session ended.
    ended: String,
}

fn msg(seq: u64) -> String {
    enc(&json!({"type":"telemetry","msg_id": format!("s{seq}"),"payload":{"seq": seq}}))
}

/// Streams telemetry until the connection dies (bounded by `limit`).
fn stream(
    addr: String,
    dev: Device,
    mut st: DevState,
    progress: Arc<AtomicU64>,
    limit: Duration,
) -> DevState {
    let deadline = Instant::now() + limit;
    let mut ws = match Ws::try_connect(&addr) {
        Ok(ws) => ws,
        Err(e) => {
            st.ended = format!("connect failed: {e}");
            return st;
        }
    };
    if let Err(e) = ws.try_send_text(&enc(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    )) {
        st.ended = format!("register send failed: {e}");
        return st;
    }
    match ws.recv(SOON) {
        WsEvent::Json(m) if opt_s(&m, "type") == Some("registered") => {}
        other => {
            st.ended = format!("register failed: {other:?}");
            return st;
        }
    }
    // Re-send what was never acked, then new ones; at most IN_FLIGHT outstanding.
    let mut resend: Vec<u64> = st.unacked.iter().copied().collect();
    resend.reverse();
    let mut in_flight: HashSet<u64> = HashSet::new();
    loop {
        if Instant::now() >= deadline {
            st.ended = "time limit (server never killed?)".into();
            break;
        }
        while in_flight.len() < IN_FLIGHT {
            let seq = match resend.pop() {
                Some(s) => s,
                None => {
                    let s = st.next_seq;
                    st.next_seq += 1;
                    s
                }
            };
            // Counted as unacked before the send: it may be stored even if the send fails halfway.
            st.unacked.insert(seq);
            if let Err(e) = ws.try_send_text(&msg(seq)) {
                st.ended = format!("send failed: {e}");
                return st;
            }
            in_flight.insert(seq);
        }
        match ws.recv(SOON) {
            WsEvent::Json(m) => {
                if opt_s(&m, "type") != Some("ack") {
                    st.ended = format!("unexpected message {}", enc(&m));
                    return st;
                }
                let id = s(&m, "msg_id");
                let seq: u64 = id
                    .strip_prefix('s')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("ack for unknown msg_id {id:?}"));
                assert!(in_flight.remove(&seq), "ack for msg_id {id} not in flight");
                st.unacked.remove(&seq);
                st.acked.insert(seq);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            WsEvent::Timeout => {
                st.ended = "TIMEOUT: no ack within 20 s while the server was running".into();
                return st;
            }
            other => {
                st.ended = format!("session ended: {other:?}");
                return st;
            }
        }
    }
    st
}

fn kill9_keeps_every_acked_msg_id_exactly_once(io: &str) {
    let mut srv = Server::start(io);
    let devices: Vec<Device> = (0..DEVICES)
        .map(|i| srv.create_device(&format!("crash-{i}")))
        .collect();
    let mut states: Vec<DevState> = vec![DevState::default(); DEVICES];

    for cycle in 0..CYCLES {
        let progress: Vec<Arc<AtomicU64>> =
            (0..DEVICES).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let handles: Vec<_> = devices
            .iter()
            .zip(states.drain(..))
            .zip(progress.iter())
            .map(|((dev, st), p)| {
                let (addr, dev, p) = (srv.addr().to_string(), dev.clone(), p.clone());
                thread::spawn(move || stream(addr, dev, st, p, Duration::from_secs(120)))
            })
            .collect();

        // Every device is streaming and has acks in this cycle; then let it run a moment.
        wait_until(SOON, "acks for every device", || {
            progress.iter().all(|p| p.load(Ordering::Relaxed) >= 20)
        });
        thread::sleep(Duration::from_millis(1000 + (random_u64() % 700)));
        srv.kill9();

        states = handles
            .into_iter()
            .map(|h| h.join().expect("stream thread"))
            .collect();
        for (i, st) in states.iter().enumerate() {
            assert!(
                !st.ended.starts_with("TIMEOUT") && !st.ended.starts_with("unexpected"),
                "cycle {cycle} device {i}: {}",
                st.ended
            );
        }

        srv.start_again();
        verify(&srv, &devices, &states, cycle);
    }

    // Last round: re-send whatever is still unacked on a live server; then
    // everything ever sent is stored, each exactly once.
    for (dev, st) in devices.iter().zip(states.iter_mut()) {
        let mut ws = srv.device_session(dev);
        for &seq in st.unacked.iter() {
            ws.send_text(&msg(seq));
        }
        for _ in 0..st.unacked.len() {
            let a = ws.recv_type("ack", SOON);
            let seq: u64 = s(&a, "msg_id")[1..].parse().unwrap();
            st.acked.insert(seq);
        }
        st.unacked.clear();
        ws.close();
    }
    verify(&srv, &devices, &states, CYCLES);
    for (i, st) in states.iter().enumerate() {
        assert_eq!(
            st.acked.len() as u64,
            st.next_seq,
            "device {i}: every seq sent was finally acked"
        );
    }
}

/// Every acked seq present exactly once; no seq twice.
fn verify(srv: &Server, devices: &[Device], states: &[DevState], cycle: u64) {
    let mut total = 0;
    for (i, (dev, st)) in devices.iter().zip(states).enumerate() {
        let items = srv.telemetry(&dev.id);
        let mut count: HashMap<u64, usize> = HashMap::new();
        for it in &items {
            *count.entry(u(field(it, "payload"), "seq")).or_default() += 1;
        }
        let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "cycle {cycle} device {i}: msg_ids stored more than once (seq, times): {dups:?}"
        );
        let missing: Vec<_> = st.acked.iter().filter(|s| !count.contains_key(s)).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle} device {i}: {} acked msg_ids lost after kill -9 (of {} acked), e.g. {:?}",
            missing.len(),
            st.acked.len(),
            &missing[..missing.len().min(20)]
        );
        // Nothing stored that was never sent.
        assert!(
            count.keys().all(|s| *s < st.next_seq),
            "cycle {cycle} device {i}: stored a seq that was never sent"
        );
        total += st.acked.len();
    }
    eprintln!("cycle {cycle}: {total} acked msg_ids verified");
}
