//! The generic device protocol per telemetry frame (`fleetgate::generic`, `lenient`, `json`): the
//! steps `ws_session::on_text` runs on a text frame before and after the store, each alone and
//! together, and the frames the server sends back.
//!
//! simd-json parses in place, so every parse runs on a fresh copy of the frame made in the batch
//! setup (untimed).
//!
//! `cargo bench --bench generic_json`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::generic::{self, Inbound};
use fleetgate::ws::{self, Opcode};
use fleetgate::{json, lenient, raw_member};
use simd_json::prelude::*;

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A telemetry frame with msg_id and device time; its payload object is 150 bytes.
const FRAME: &str = r#"{"type":"telemetry","msg_id":"m-000042","ts":"2026-11-27T10:15:30.123Z","payload":{"temperature":22.5,"humidity":41.2,"pressure":1013.25,"battery":87,"rssi":-67,"door":"closed","firmware":"2.4.1-rc3b","uptime_s":8640000,"alarms":[]}}"#;

/// The loadtest's telemetry-flood frame (`loadtest/src/worker.rs`) with its default ~150-byte
/// payload (`--payload-bytes 150`): a sequence number and a padding string.
fn loadtest_frame() -> String {
    format!(
        r#"{{"type":"telemetry","msg_id":"42","payload":{{"seq":42,"pad":"{}"}}}}"#,
        "x".repeat(150 - 24)
    )
}

/// What `on_text` derives from a telemetry frame before it stages the record: the payload, device
/// time and msg_id as JSON text.
fn to_record(frame: &mut [u8]) -> (String, Option<String>, Option<String>) {
    let value = generic::parse(frame).expect("valid JSON");
    match generic::classify(&value, usize::MAX).expect("valid telemetry") {
        Inbound::Telemetry {
            payload,
            ts,
            msg_id,
            ..
        } => (
            json::encode(payload),
            ts.map(json::encode),
            msg_id.map(json::encode),
        ),
        other => panic!("not telemetry: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("generic_json");
    let loadtest = loadtest_frame();
    for (name, text) in [("sensor", FRAME), ("loadtest", loadtest.as_str())] {
        let frame = text.as_bytes().to_vec();
        g.throughput(Throughput::Bytes(frame.len() as u64));

        // The steps one by one.
        g.bench_function(format!("{name}/lenient_strip_trailing_commas"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| lenient::strip_trailing_commas(black_box(buf)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{name}/nesting_guard"), |b| {
            b.iter(|| lenient::too_deep(black_box(&frame), lenient::MAX_JSON_DEPTH))
        });
        g.bench_function(format!("{name}/simd_json_parse"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    simd_json::to_borrowed_value(buf)
                        .map(|v| black_box(&v).is_object())
                        .unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        // `generic::parse` = nesting guard + simd-json.
        g.bench_function(format!("{name}/parse"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| generic::parse(buf).map(|v| black_box(&v).is_object()),
                BatchSize::SmallInput,
            )
        });
        let mut parsed_buf = frame.clone();
        let parsed = generic::parse(&mut parsed_buf).unwrap();
        g.bench_function(format!("{name}/classify"), |b| {
            b.iter(|| {
                generic::classify(black_box(&parsed), usize::MAX)
                    .map(|m| matches!(m, Inbound::Telemetry { .. }))
            })
        });
        // Frames over the payload limit's fast path pay for re-encoding the payload to measure it.
        g.bench_function(format!("{name}/classify_measured"), |b| {
            b.iter(|| {
                generic::classify(black_box(&parsed), 256 * 1024)
                    .map(|m| matches!(m, Inbound::Telemetry { .. }))
            })
        });
        let Inbound::Telemetry { payload, .. } = generic::classify(&parsed, usize::MAX).unwrap()
        else {
            unreachable!()
        };
        g.bench_function(format!("{name}/encode_payload"), |b| {
            b.iter(|| json::encode(black_box(payload)))
        });
        // What replaced the re-encode: finding the payload in the untouched frame, then copying it.
        g.bench_function(format!("{name}/payload_as_received"), |b| {
            b.iter(|| {
                let f = black_box(frame.as_slice());
                raw_member::span(f, b"payload").map(|r| String::from_utf8(f[r].to_vec()))
            })
        });

        // Together: frame text in, record fields out (parse + classify + re-encode).
        g.bench_function(format!("{name}/frame_to_record"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| to_record(buf),
                BatchSize::SmallInput,
            )
        });
        // The whole sans-IO share of one message: the above, then the ack frame once committed
        // (the store's work in between is `store_commit`'s).
        let mut out = Vec::with_capacity(256);
        g.bench_function(format!("{name}/frame_to_ack"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let (_payload, _ts, msg_id) = to_record(buf);
                    out.clear();
                    let ack = generic::ack(msg_id.as_deref().unwrap());
                    ws::encode_frame(&mut out, Opcode::Text, ack.as_bytes());
                    out.len()
                },
                BatchSize::SmallInput,
            )
        });
    }

    // Server frames.
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode/ack", |b| {
        b.iter(|| generic::ack(black_box("\"m-000042\"")))
    });
    let cmd_payload = r#"{"duration_ms":3000,"door":1,"reason":"remote open by operator"}"#;
    g.bench_function("encode/command", |b| {
        b.iter(|| {
            generic::command(
                black_box("0193b0de-4151-7c3a-9d2e-5f8a1b6c4d20"),
                black_box("open_door"),
                black_box(cmd_payload),
            )
        })
    });
    g.bench_function("encode/error_with_msg_id", |b| {
        b.iter(|| {
            generic::error(
                black_box("not_stored"),
                black_box("the record could not be stored; send it again"),
                Some(black_box("\"m-000042\"")),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
