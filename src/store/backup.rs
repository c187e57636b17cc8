//! Copies of the store for backups: a RocksDB checkpoint of an open store, opening a stopped
//! server's store to take one, and telling whether a directory holds a fleetgate store.

use std::path::Path;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteOptions};

use super::{
    Cf, DEFAULT_MEMORY_BYTES, DiskGuard, Store, StoreError, WriteHealth, cf_options, db_options,
    memory, schema_version,
};
use crate::time::IdClock;

impl Store {
    /// Writes a checkpoint of the store to `target`, which must not exist: every write committed
    /// before the call is in it. RocksDB flushes the memtables, then hard-links the table files
    /// (copies them onto another file system) and copies the manifest and the live WAL into
    /// `target` with `.tmp` appended, which it renames to `target` once complete. Writes go on
    /// meanwhile; it blocks only its caller.
    pub fn checkpoint(&self, target: &Path) -> Result<(), StoreError> {
        Checkpoint::new(&self.db)?.create_checkpoint(target)?;
        Ok(())
    }

    /// Opens the store of a stopped server to take a checkpoint of it. Like the server, it holds
    /// RocksDB's lock on `dir` while open, so no server can start on it meanwhile. It creates
    /// nothing and runs no compaction: the server's msg_id retention, which compaction applies,
    /// is not known here.
    pub fn open_for_backup(dir: &Path) -> Result<Store, StoreError> {
        let names = fleetgate_cfs(dir)?;
        let (cache, buffers) = memory(DEFAULT_MEMORY_BYTES);
        let descriptors = names.iter().map(|name| {
            let mut o = cf_options(&cache);
            o.set_disable_auto_compactions(true);
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&db_options(&buffers), dir, descriptors)?;
        schema_version(&db)?.ok_or_else(|| no_schema(dir))?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(true);
        Ok(Store {
            db,
            write_opts,
            ids: IdClock::new(),
            health: WriteHealth::default(),
            guard: DiskGuard::default(),
            cache,
            legacy_msg_ids_until: Default::default(),
        })
    }
}

/// The schema version of the fleetgate store in `dir`, read without changing the store (a
/// read-only open, which takes no lock); an error if `dir` holds no RocksDB store, one that is
/// not fleetgate's, or one a newer fleetgate wrote.
pub fn inspect(dir: &Path) -> Result<u32, StoreError> {
    let names = fleetgate_cfs(dir)?;
    let db = DB::open_cf_for_read_only(&Options::default(), dir, &names, false)?;
    schema_version(&db)?.ok_or_else(|| no_schema(dir))
}

/// The column families of the RocksDB store in `dir`, if it has fleetgate's `meta`.
fn fleetgate_cfs(dir: &Path) -> Result<Vec<String>, StoreError> {
    let names = DB::list_cf(&Options::default(), dir).map_err(|e| {
        StoreError::Schema(format!("{}: no fleetgate store here ({e})", dir.display()))
    })?;
    if !names.iter().any(|n| n == Cf::Meta.name()) {
        return Err(StoreError::Schema(format!(
            "{}: a RocksDB store, but not fleetgate's",
            dir.display()
        )));
    }
    Ok(names)
}

fn no_schema(dir: &Path) -> StoreError {
    StoreError::Schema(format!(
        "{}: a store without fleetgate's schema version",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp::{Scratch, TempStore};

    #[test]
    fn a_checkpoint_holds_what_was_committed_and_opens_as_a_fleetgate_store() {
        let t = TempStore::open("checkpoint", true).expect("store");
        let mut b = rocksdb::WriteBatch::default();
        b.put_cf(t.store().cf(Cf::Devices).expect("cf"), b"k", b"v");
        t.store().write(b).expect("write");
        let scratch = Scratch::new("checkpoint");
        let target = scratch.0.join("copy");
        t.store().checkpoint(&target).expect("checkpoint");
        assert_eq!(inspect(&target).expect("a fleetgate store"), 1);
        let copy = Store::open_for_backup(&target).expect("opens");
        assert_eq!(
            copy.get(Cf::Devices, b"k").expect("read"),
            Some(b"v".to_vec())
        );
        assert!(
            t.store().checkpoint(&target).is_err(),
            "a checkpoint never writes into an existing directory"
        );
    }

    #[test]
    fn only_fleetgate_stores_pass_inspection() {
        let scratch = Scratch::new("inspect");
        let empty = scratch.0.join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        let e = inspect(&empty).expect_err("an empty directory").to_string();
        assert!(e.contains("no fleetgate store here"), "{e}");
        assert!(Store::open_for_backup(&empty).is_err());
        assert_eq!(
            std::fs::read_dir(&empty).expect("list").count(),
            0,
            "nothing was created"
        );
        let other = scratch.0.join("other");
        let mut o = Options::default();
        o.create_if_missing(true);
        drop(DB::open(&o, &other).expect("a plain RocksDB store"));
        let e = inspect(&other).expect_err("not fleetgate's").to_string();
        assert!(e.contains("not fleetgate's"), "{e}");
    }
}
