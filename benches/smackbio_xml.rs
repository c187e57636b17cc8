//! SmackBio XML terminals through their sans-IO conversation (`fleetgate::smackbio::Session` via
//! `terminal::Conversation::on_frame`): the quick-xml parse of a `<Message>` into its flat tag
//! list, classification, and the actions out (the log record built in the common shape, the
//! answer frames written).
//!
//! The XML parser (`smackbio/xml.rs`) is private to the crate, so it is measured through the
//! conversation. Sessions that a frame moves on are set up per iteration, untimed.
//!
//! `cargo bench --bench smackbio_xml`

use std::sync::LazyLock;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::smackbio::{DEFAULT_COMMAND_TIMEOUT, Session};
// The vendor Register and a live punch (the attendance-burst path, photo included), as in the unit
// tests.
use fleetgate::terminal::{Action, Conversation, Identity, Known};
use fleetgate_core::fixtures::smackbio::{REGISTER, TIMELOG_V2, login, vendor};
use jiff::Timestamp;
use jiff::tz::{TimeZone, offset};

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 0x1111_1111_1111_1111;

/// The conversation's clock, parsed once (not in the timed loops).
static NOW: LazyLock<Timestamp> = LazyLock::new(|| "2026-08-29T05:00:00Z".parse().unwrap());

fn now() -> Timestamp {
    *NOW
}

fn known(token: Option<&str>) -> Identity {
    Identity::Known(Known {
        device_id: "0193b0de-4151-7c3a-9d2e-5f8a1b6c4d20".into(),
        zone: Some(TimeZone::fixed(offset(3))),
        token: token.map(str::to_owned),
        log_position: 0,
    })
}

/// The answer to `GetFirstGlog`: one stored log (protocols.md §2, its reply fields).
fn first_glog_reply() -> String {
    vendor(
        "Response",
        "GetFirstGlog",
        &[
            ("LogID", "100"),
            ("Time", "2026-08-01-T09:00:00Z"),
            ("UserID", "7"),
            ("Action", "Face"),
            ("AttendStat", "Duty On"),
            ("APStat", "None"),
            ("JobCode", "0"),
            ("Photo", "No"),
            ("BodyTemperature100", "3650"),
            ("AttendOnly", "No"),
            ("Expired", "No"),
            ("Result", "OK"),
        ],
    )
}

fn feed(s: &mut Session, text: &str) -> Vec<Action> {
    s.on_frame(&mut text.as_bytes().to_vec(), now())
}

/// Registered and logged in with the issued token; the setup's SetTime is outstanding.
fn logged_in() -> Session {
    let mut s = Session::new(DEFAULT_COMMAND_TIMEOUT, SEED);
    feed(&mut s, REGISTER);
    let token = match &s.on_identity(known(None), now())[..] {
        [Action::SaveToken(t), Action::Send(_)] => t.clone(),
        other => panic!("unexpected {other:?}"),
    };
    feed(&mut s, &login(&token));
    s.on_identity(known(Some(&token)), now());
    assert!(s.is_authenticated());
    s
}

/// Logged in, SetTime answered: the backfill's `GetFirstGlog` is outstanding.
fn awaiting_first_glog() -> Session {
    let mut s = logged_in();
    let actions = feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    assert!(matches!(&actions[..], [Action::Send(f)] if f.contains("GetFirstGlog")));
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("smackbio_xml");

    // Register on a new connection: parse, classify, the `Identify` action.
    g.throughput(Throughput::Bytes(REGISTER.len() as u64));
    g.bench_function("register", |b| {
        b.iter_batched(
            || {
                (
                    Session::new(DEFAULT_COMMAND_TIMEOUT, SEED),
                    REGISTER.as_bytes().to_vec(),
                )
            },
            |(mut s, mut f)| {
                let actions = s.on_frame(&mut f, now());
                debug_assert!(matches!(actions[..], [Action::Identify { .. }]));
                (s, actions)
            },
            BatchSize::SmallInput,
        )
    });
    // The runtime's answer to it: a token issued and the Register response written.
    g.throughput(Throughput::Elements(1));
    g.bench_function("register_identity_answer", |b| {
        b.iter_batched(
            || {
                let mut s = Session::new(DEFAULT_COMMAND_TIMEOUT, SEED);
                feed(&mut s, REGISTER);
                (s, known(None))
            },
            |(mut s, identity)| {
                let actions = s.on_identity(identity, now());
                (s, actions)
            },
            BatchSize::SmallInput,
        )
    });

    // The backfill's first reply: the log stored, the position saved, GetNextGlog sent.
    let reply = first_glog_reply();
    {
        let mut s = awaiting_first_glog();
        let actions = feed(&mut s, &reply);
        assert!(
            matches!(
                &actions[..],
                [
                    Action::StoreRecords { records, .. },
                    Action::SavePosition(101),
                    Action::Send(_)
                ] if records.len() == 1
            ),
            "{actions:?}"
        );
    }
    g.throughput(Throughput::Bytes(reply.len() as u64));
    g.bench_function("get_first_glog_reply", |b| {
        b.iter_batched(
            || (awaiting_first_glog(), reply.as_bytes().to_vec()),
            |(mut s, mut f)| {
                let actions = s.on_frame(&mut f, now());
                (s, actions)
            },
            BatchSize::SmallInput,
        )
    });

    // A live punch on a logged-in session: stored, its answer written for after the commit.
    let mut s = logged_in();
    assert!(matches!(
        &feed(&mut s, TIMELOG_V2)[..],
        [Action::StoreRecords { .. }]
    ));
    g.throughput(Throughput::Bytes(TIMELOG_V2.len() as u64));
    g.bench_function("timelog_v2_event", |b| {
        b.iter_batched_ref(
            || TIMELOG_V2.as_bytes().to_vec(),
            |f| s.on_frame(f, now()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
