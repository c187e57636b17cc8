//! A store in a fresh directory, removed when dropped: for the unit tests of the layers above the
//! store and for the benches, which open it exactly as `serve` does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Store, StoreError};

/// The default `--msg-id-retention-hours`.
const MSG_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

pub struct TempStore {
    dir: PathBuf,
    store: Option<Arc<Store>>,
}

impl TempStore {
    /// Opens a store under `$FLEETGATE_BENCH_DIR` if set (benches measure the disk the server
    /// runs on), else the system temp dir. `sync`: fsync the WAL at every commit, as `serve` does.
    pub fn open(name: &str, sync: bool) -> Result<TempStore, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("FLEETGATE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!(
            "fleetgate-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(StoreError::Io)?;
        let store = Store::open(&dir, sync, MSG_ID_RETENTION, super::DEFAULT_MEMORY_BYTES)?;
        Ok(TempStore {
            dir,
            store: Some(Arc::new(store)),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        // Only `drop` takes it out.
        self.store.as_ref().expect("store is open until drop")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        // Batchers and committers hold clones; once they are gone this closes the DB.
        drop(self.store.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An empty directory of its own in the system temp dir, removed when dropped: for unit tests
/// that write beside a store (backups, restores).
#[cfg(test)]
pub(crate) struct Scratch(pub PathBuf);

#[cfg(test)]
impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fleetgate-scratch-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` to completion on a current-thread runtime inside a `LocalSet`, as a shard runs its
/// tasks: for the unit tests of code that stages into a `Batcher`.
#[cfg(test)]
pub(crate) fn run_local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}
