//! kill -9 while devices stream telemetry with msg_ids: after each restart on
//! the same data directory every acked msg_id is stored, and none twice —
//! including msg_ids a device re-sends after the crash because their ack never
//! arrived (some of those were committed before the kill).
//!
//! The long version, with attendance punches and queued commands and kills at
//! random moments, is `crash_soak.rs`; both use the clients in `common::fleet`.

mod common;

use common::fleet::*;
use common::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

for_both_drivers!(kill9_keeps_every_acked_msg_id_exactly_once);

const DEVICES: usize = 4;
const CYCLES: u64 = 3;
/// As fast as the server commits, 8 in flight per device.
const PACE: Pace = Pace {
    window: 8,
    burst_pause_ms: None,
};

fn kill9_keeps_every_acked_msg_id_exactly_once(io: &str) {
    let mut srv = Server::start(io);
    let mut states: Vec<MsgIdDevice> = (0..DEVICES)
        .map(|i| MsgIdDevice::new(srv.create_device(&format!("crash-{i}"))))
        .collect();
    let mut rng = Rng::new(random_u64());

    for cycle in 0..CYCLES {
        let progress = counters(DEVICES);
        let handles: Vec<_> = states
            .drain(..)
            .zip(progress.iter())
            .map(|(st, p)| {
                let (addr, p, mut rng) = (srv.addr().to_string(), Arc::clone(p), rng.fork());
                thread::spawn(move || {
                    stream_msg_ids(&addr, st, &p, PACE, &mut rng, Duration::from_secs(120))
                })
            })
            .collect();

        // Every device is streaming and has acks in this cycle; then let it run a moment.
        wait_until(SOON, "acks for every device", || {
            progress.iter().all(|p| p.load(Ordering::Relaxed) >= 20)
        });
        thread::sleep(Duration::from_millis(1000 + rng.below(700)));
        srv.kill9();

        states = handles
            .into_iter()
            .map(|h| h.join().expect("stream thread"))
            .collect();
        for (i, st) in states.iter().enumerate() {
            assert!(!st.ended_badly(), "cycle {cycle} device {i}: {}", st.ended);
        }

        srv.start_again();
        let checked: usize = states
            .iter()
            .map(|st| verify_msg_ids(&srv, st, &format!("after kill -9 #{cycle}")))
            .sum();
        eprintln!("cycle {cycle}: {checked} stored msg_ids verified");
    }

    // Last round: re-send whatever is still unacked on a live server; then
    // everything ever sent is stored, each exactly once.
    for st in states.iter_mut() {
        settle_msg_ids(&srv, st);
        verify_msg_ids(&srv, st, "after the last re-send");
        assert_eq!(
            st.acked.len() as u64,
            st.next_seq,
            "device {}: every seq sent was finally acked",
            st.dev.name
        );
        assert_eq!(st.not_stored, 0, "no commit failed");
    }
}
