//! One thread that looks at the store from outside the write path, once a second: the free space
//! of the data directory's file system against the disk guard, and the memory and size figures an
//! operator needs to tell RocksDB's bounded caches from a leak (`/metrics`, docs/operations.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::disk_guard::{Change, statvfs};
use super::{Cf, Store};

/// How often the disk and the store are sampled. A second bounds how far past the threshold a
/// burst of writes can go (at this server's peak write rate, well under the 5 % default's room).
const EVERY: Duration = Duration::from_secs(1);

/// Per-column-family RocksDB properties summed into one gauge each.
const SUMMED: [(&str, &str); 5] = [
    (
        "rocksdb.cur-size-all-mem-tables",
        "fleetgate_store_memtable_bytes",
    ),
    (
        "rocksdb.estimate-table-readers-mem",
        "fleetgate_store_table_readers_bytes",
    ),
    ("rocksdb.total-sst-files-size", "fleetgate_store_sst_bytes"),
    (
        "rocksdb.estimate-pending-compaction-bytes",
        "fleetgate_store_pending_compaction_bytes",
    ),
    ("rocksdb.estimate-num-keys", "fleetgate_store_keys_estimate"),
];

/// The running monitor; stopping it joins the thread.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Samples once at once (so the guard holds before the first write), then every second.
    pub fn spawn(store: Arc<Store>, dir: PathBuf) -> std::io::Result<Monitor> {
        sample(&store, &dir);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fg-store-monitor".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(EVERY);
                    sample(&store, &dir);
                }
            })?;
        Ok(Monitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn sample(store: &Store, dir: &std::path::Path) {
    match statvfs(dir) {
        Ok((free, total)) => {
            metrics::gauge!("fleetgate_disk_free_bytes").set(free as f64);
            metrics::gauge!("fleetgate_disk_total_bytes").set(total as f64);
            match store.guard.observe(free, total) {
                Change::None => {}
                Change::WentLow { free, keep } => tracing::error!(
                    free_bytes = free,
                    min_free_bytes = keep,
                    "free disk space is below --min-free-disk: new data is answered \"not stored\" \
                     (devices keep it) until space is freed; reads and the API go on"
                ),
                Change::Recovered { free } => {
                    tracing::warn!(free_bytes = free, "free disk space is back: storing again")
                }
            }
            metrics::gauge!("fleetgate_disk_guard_low")
                .set(f64::from(u8::from(store.guard.is_low())));
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "could not read the data directory's free space")
        }
    }
    let db = store.db();
    for (property, gauge) in SUMMED {
        let sum: u64 = Cf::ALL
            .iter()
            .filter_map(|cf| store.cf(*cf).ok())
            .filter_map(|h| db.property_int_value_cf(h, property).ok().flatten())
            .sum();
        metrics::gauge!(gauge).set(sum as f64);
    }
    // Per family too, so an operator sees which kind of record fills the disk (and docs/operations.md
    // derives its disk-per-million-records figures from them).
    for cf in Cf::ALL {
        if let Ok(h) = store.cf(cf) {
            for (property, gauge) in [
                (
                    "rocksdb.total-sst-files-size",
                    "fleetgate_store_family_sst_bytes",
                ),
                (
                    "rocksdb.estimate-num-keys",
                    "fleetgate_store_family_keys_estimate",
                ),
            ] {
                if let Ok(Some(v)) = db.property_int_value_cf(h, property) {
                    metrics::gauge!(gauge, "family" => cf.name()).set(v as f64);
                }
            }
        }
    }
    // The block cache is one, shared by every column family.
    let cache = store.block_cache();
    metrics::gauge!("fleetgate_store_block_cache_bytes").set(cache.get_usage() as f64);
    metrics::gauge!("fleetgate_store_block_cache_pinned_bytes")
        .set(cache.get_pinned_usage() as f64);
    for (property, gauge) in [
        (
            "rocksdb.actual-delayed-write-rate",
            "fleetgate_store_delayed_write_rate",
        ),
        ("rocksdb.is-write-stopped", "fleetgate_store_write_stopped"),
    ] {
        if let Ok(Some(v)) = db.property_int_value(property) {
            metrics::gauge!(gauge).set(v as f64);
        }
    }
    if let Some(rss) = resident_bytes() {
        metrics::gauge!("fleetgate_process_resident_bytes").set(rss as f64);
    }
}

/// The process's resident set (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages.saturating_mul(p))
}
