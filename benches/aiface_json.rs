//! AiFace-family JSON terminals through their sans-IO conversation (`fleetgate::aiface::Session`
//! via `terminal::Conversation::on_frame`): the lenient parse (trailing commas stripped in place,
//! nesting guard, simd-json owned value), the message's handling, and the actions out
//! (records moved out and normalised, the access question answered as the runtime does under the
//! default settings, the `sendlog` answer written for after the commit).
//!
//! The codec (`aiface/frame.rs`) is private to the crate, so it is measured through the
//! conversation, which adds little around it. Frames are copied in the batch setup (untimed).
//!
//! `cargo bench --bench aiface_json`

use std::sync::LazyLock;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::aiface::{DEFAULT_TIMEOUT, Session};
// protocols.md §3.2's `reg` and an empty backfill page, as in the unit tests.
use fleetgate::terminal::{AccessFacts, Action, Conversation, Identity, Known};
use fleetgate_core::fixtures::aiface::{EMPTY_LOG_PAGE, REG};
use jiff::Timestamp;
use jiff::tz::{TimeZone, offset};

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A `sendlog` of `n` records in §3.3's shape, one line per record and a trailing comma after the
/// last one (some firmware writes `},]`), so the lenient pass has work to do.
fn sendlog(n: usize) -> String {
    let mut s = format!(
        "{{\n \"cmd\": \"sendlog\",\n \"sn\": \"ZX0006827500\",\n \"count\": {n},\n \"logindex\": 10,\n \"record\": [\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            " {{ \"enrollid\": {}, \"time\": \"2026-11-27 13:{:02}:{:02}\", \"mode\": 8, \"inout\": {}, \"event\": 0, \"temp\": 36.{}, \"verifymode\": 13 }},\n",
            1000 + i,
            (i / 60) % 60,
            i % 60,
            i % 2,
            i % 10,
        ));
    }
    s.push_str(" ]\n}");
    s
}

/// The conversation's clock, parsed once (not in the timed loops).
static NOW: LazyLock<Timestamp> = LazyLock::new(|| "2026-11-27T12:00:00Z".parse().unwrap());

fn now() -> Timestamp {
    *NOW
}

fn known() -> Identity {
    Identity::Known(Known {
        device_id: "0193b0de-4151-7c3a-9d2e-5f8a1b6c4d20".into(),
        zone: Some(TimeZone::fixed(offset(2))),
        token: None,
        log_position: 0,
    })
}

fn frame(s: &mut Session, text: &str) -> Vec<Action> {
    s.on_frame(&mut text.as_bytes().to_vec(), now())
}

/// A `sendlog` frame through the conversation, its access question answered with the default
/// settings (`allow`, which reads nothing from the store).
fn sendlog_actions(s: &mut Session, f: &mut [u8]) -> Vec<Action> {
    let asked = s.on_frame(f, now());
    debug_assert!(matches!(asked[..], [Action::CheckAccess { .. }]));
    s.on_access(AccessFacts::default(), now())
}

/// Registered, with the backfill answered (no new logs): the state a live terminal is in.
fn registered() -> Session {
    let mut s = Session::new(DEFAULT_TIMEOUT);
    assert!(matches!(frame(&mut s, REG)[..], [Action::Identify { .. }]));
    s.on_identity(known(), now());
    assert!(frame(&mut s, EMPTY_LOG_PAGE).is_empty());
    assert!(s.is_idle());
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("aiface_json");

    // `reg` on a new connection: parse, serial and labels, and the `Identify` action.
    g.throughput(Throughput::Bytes(REG.len() as u64));
    g.bench_function("reg", |b| {
        b.iter_batched(
            || (Session::new(DEFAULT_TIMEOUT), REG.as_bytes().to_vec()),
            |(mut s, mut f)| {
                let actions = s.on_frame(&mut f, now());
                debug_assert!(matches!(actions[..], [Action::Identify { .. }]));
                (s, actions)
            },
            BatchSize::SmallInput,
        )
    });
    // The runtime's answer to it: the `reg` reply and the backfill request.
    g.throughput(Throughput::Elements(1));
    g.bench_function("reg_identity_answer", |b| {
        b.iter_batched(
            || {
                let mut s = Session::new(DEFAULT_TIMEOUT);
                frame(&mut s, REG);
                (s, known())
            },
            |(mut s, identity)| {
                let actions = s.on_identity(identity, now());
                (s, actions)
            },
            BatchSize::SmallInput,
        )
    });

    // `sendlog` on a registered session: after the access question, its records go out in one
    // `StoreRecords` action.
    let mut s = registered();
    for n in [1usize, 10, 100] {
        let text = sendlog(n);
        let actions = sendlog_actions(&mut s, &mut text.as_bytes().to_vec());
        match &actions[..] {
            [Action::StoreRecords { records, .. }] => assert_eq!(records.len(), n),
            other => panic!("unexpected actions {other:?}"),
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("sendlog/{n}_records/{}B", text.len()), |b| {
            b.iter_batched_ref(
                || text.as_bytes().to_vec(),
                |f| sendlog_actions(&mut s, f),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
