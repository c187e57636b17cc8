//! The store's group commit (`fleetgate::store`), on a RocksDB in a temporary directory opened
//! with `Store::open` as `serve` opens it.
//!
//! * `commit/{sync,nosync}/N`: N telemetry records with msg_id (the telemetry-flood shape: a row
//!   and its `msg_ids` entry each) staged into a shard's `Batcher` with
//!   `records::stage_telemetry`, then the batch's `Ticket` awaited: the batcher hands the batch to
//!   its committer thread, which writes it with `Store::write` (WAL fsync'd when `sync`) — the
//!   server's path from `stage` to ack. One batcher, so there is no cross-shard write group here.
//! * `stage`: the per-record share of that (row text, keys, two `WriteBatch` puts), timed alone.
//! * `msg_id_lookup`: the de-duplication point lookup each msg_id frame makes before staging.
//!
//! Directory: `$FLEETGATE_BENCH_DIR` if set, else the system temp dir; it must be on the disk
//! under test (a tmpfs makes fsync free). It is removed at the end.
//!
//! `cargo bench --bench store_commit`

use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::store::commit::{Batcher, Ticket, spawn_committer};
use fleetgate::store::temp::TempStore;
use fleetgate::store::{Cf, Store, keys, records};
use fleetgate::time::now_us;
use uuid::Uuid;

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shard's open-batch bound (`shard::BATCH_MAX_BYTES`).
const BATCH_MAX_BYTES: usize = 4 << 20;

/// The loadtest's ~150-byte telemetry payload object.
fn payload() -> String {
    format!(r#"{{"seq":42,"pad":"{}"}}"#, "x".repeat(150 - 24))
}

/// Stages one telemetry record with a fresh msg_id, as `ws_session::store_record` does.
fn stage_one(
    batcher: &Batcher,
    store: &Store,
    dev: &Uuid,
    payload: &str,
    seq: &AtomicU64,
) -> Rc<Ticket> {
    let n = seq.fetch_add(1, Ordering::Relaxed);
    let msg_id = format!("\"{n}\"");
    let id = store.ids.next(now_us());
    batcher
        .stage(|st| records::stage_telemetry(st, dev, id, None, payload, Some(&msg_id)))
        .expect("stage")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

fn commit(c: &mut Criterion) {
    let payload = payload();
    let dev = Uuid::from_u128(0x0193b0de_4151_7c3a_9d2e_5f8a1b6c4d20);
    let seq = AtomicU64::new(0);
    let rt = runtime();
    let mut g = c.benchmark_group("store_commit");
    g.sample_size(20);
    for sync in [true, false] {
        let tmp = TempStore::open(if sync { "bench-sync" } else { "bench-nosync" }, sync)
            .expect("open store");
        let (committer, thread) =
            spawn_committer(tmp.store().clone(), "bench-commit".into()).expect("committer");
        let batcher = Batcher::new(tmp.store().clone(), committer, BATCH_MAX_BYTES);
        let mode = if sync { "sync" } else { "nosync" };
        for n in [1u64, 64, 1024] {
            g.throughput(Throughput::Elements(n));
            g.bench_function(format!("commit/{mode}/{n}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        // The batcher's commit loop runs beside the stager, as on a shard.
                        let work = async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                let mut ticket = None;
                                for _ in 0..n {
                                    ticket = Some(stage_one(
                                        &batcher,
                                        tmp.store(),
                                        &dev,
                                        &payload,
                                        &seq,
                                    ));
                                }
                                assert!(ticket.unwrap().wait().await, "commit failed");
                            }
                            start.elapsed()
                        };
                        tokio::select! {
                            biased;
                            elapsed = work => elapsed,
                            _ = batcher.run() => unreachable!("the batcher is never closed here"),
                        }
                    })
                })
            });
        }

        // Staging alone, per record; batches are committed between timed runs of 1,024.
        if sync {
            g.throughput(Throughput::Elements(1));
            g.bench_function("stage", |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let chunk = left.min(1024);
                        let start = Instant::now();
                        let mut ticket = None;
                        for _ in 0..chunk {
                            ticket = Some(stage_one(&batcher, tmp.store(), &dev, &payload, &seq));
                        }
                        timed += start.elapsed();
                        let ticket = ticket.unwrap();
                        rt.block_on(async {
                            tokio::select! {
                                biased;
                                ok = ticket.wait() => assert!(ok),
                                _ = batcher.run() => unreachable!(),
                            }
                        });
                        left -= chunk;
                    }
                    timed
                })
            });
            // A msg_id not seen before (the flood's case) and one that is stored.
            let miss = keys::msg_id(&dev, "\"never-sent\"");
            g.bench_function("msg_id_lookup/miss", |b| {
                b.iter(|| tmp.store().exists(Cf::MsgIds, black_box(&miss)).unwrap())
            });
            let hit = keys::msg_id(&dev, "\"0\"");
            assert!(tmp.store().exists(Cf::MsgIds, &hit).unwrap());
            g.bench_function("msg_id_lookup/hit", |b| {
                b.iter(|| tmp.store().exists(Cf::MsgIds, black_box(&hit)).unwrap())
            });
        }

        batcher.close();
        rt.block_on(batcher.run());
        drop(batcher);
        thread.join().expect("committer thread");
    }
    g.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
