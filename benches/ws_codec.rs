//! WebSocket codec (`fleetgate::ws`): decoding masked client text frames (header parse, in-place
//! unmasking, UTF-8 check) and encoding the server's small ack frame.
//!
//! Inputs are built once; each iteration decodes a fresh copy of the masked bytes, made in the
//! batch setup (untimed), because the decoder unmasks in place.
//!
//! `cargo bench --bench ws_codec`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::ws::{self, Decoder, Event, Limits, Opcode};
use fleetgate_core::fixtures::ws::RFC_KEY;

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The session's read buffer comes from a pool of 16 KiB buffers: a larger frame arrives over
/// several reads.
const READ_SIZE: usize = 16 * 1024;

/// A generic telemetry message of exactly `len` bytes of JSON text (ASCII).
fn telemetry_text(len: usize) -> Vec<u8> {
    let head = r#"{"type":"telemetry","msg_id":"m-000042","payload":{"temperature":22.5,"humidity":41.2,"battery":87,"note":""#;
    let tail = r#""}}"#;
    assert!(len >= head.len() + tail.len());
    let mut text = head.as_bytes().to_vec();
    text.extend((0..len - head.len() - tail.len()).map(|i| b'a' + (i % 26) as u8));
    text.extend_from_slice(tail.as_bytes());
    assert_eq!(text.len(), len);
    text
}

/// A complete client frame (FIN, text), masked with a fixed key, shortest length encoding.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    ws::client::encode_frame(&mut frame, Opcode::Text, payload, RFC_KEY);
    frame
}

/// Where each read ends: reads of at most `READ_SIZE`, and at least two (a small frame is split
/// in half).
fn read_ends(len: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (1..)
        .map(|i| i * READ_SIZE)
        .take_while(|&e| e < len)
        .collect();
    if ends.is_empty() {
        ends.push(len / 2);
    }
    ends.push(len);
    ends
}

/// Decodes every frame in `buf` the way `ws_session::decode_all` does; returns the text bytes seen.
fn decode_all(decoder: &mut Decoder, buf: &mut [u8]) -> usize {
    let mut start = 0;
    let mut seen = 0;
    loop {
        let d = decoder.decode(&mut buf[start..]).expect("valid frames");
        start += d.consumed;
        match d.event {
            Some(Event::Text(text)) => seen += black_box(text).len(),
            Some(_) => unreachable!("only text frames here"),
            None => return seen,
        }
    }
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("ws_decode");
    for len in [150usize, 1024, 64 * 1024] {
        let frame = client_text_frame(&telemetry_text(len));
        let size = if len > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        g.throughput(Throughput::Bytes(frame.len() as u64));

        // The whole frame in one read.
        g.bench_function(format!("whole/{len}"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let mut dec = Decoder::new(limits);
                    decode_all(&mut dec, buf)
                },
                size,
            )
        });

        // The frame arriving over several reads: the decoder is called after each read on all
        // that has arrived (the runtime appends to one buffer), and only the last call yields it.
        let ends = read_ends(frame.len());
        g.bench_function(format!("split{}/{len}", ends.len()), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let mut dec = Decoder::new(limits);
                    let mut seen = 0;
                    for &end in &ends {
                        seen += decode_all(&mut dec, &mut buf[..end]);
                    }
                    assert_eq!(seen, len);
                    seen
                },
                size,
            )
        });
    }

    // A telemetry flood: one 16 KiB read holds many small frames back to back.
    let one = client_text_frame(&telemetry_text(150));
    let n = READ_SIZE / one.len();
    let burst: Vec<u8> = one.iter().copied().cycle().take(n * one.len()).collect();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("burst/{n}x150"), |b| {
        b.iter_batched_ref(
            || burst.clone(),
            |buf| {
                let mut dec = Decoder::new(limits);
                decode_all(&mut dec, buf)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_encode");
    let ack = fleetgate::generic::ack("\"m-000042\"");
    g.throughput(Throughput::Bytes(ack.len() as u64));
    let mut out = Vec::with_capacity(256);
    g.bench_function("ack_frame", |b| {
        b.iter(|| {
            out.clear();
            ws::encode_frame(&mut out, Opcode::Text, black_box(ack.as_bytes()));
            black_box(out.len())
        })
    });
    // The ack text and its frame, as `Session::drain_acks` builds them per record.
    g.bench_function("ack_text_and_frame", |b| {
        b.iter(|| {
            out.clear();
            let text = fleetgate::generic::ack(black_box("\"m-000042\""));
            ws::encode_frame(&mut out, Opcode::Text, text.as_bytes());
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
