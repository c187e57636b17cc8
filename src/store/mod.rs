//! RocksDB storage: one column family per kind of record, keys laid out for the API's queries
//! (see `keys`), and writes staged per shard and committed as a group (see `commit`).
//!
//! The commit of a batch is the acknowledgement point: nothing is acked to a device before the batch
//! holding its record has been written with the WAL synced (unless the operator chose
//! `--sync-writes false`).

pub mod backup;
pub mod commit;
pub mod disk_guard;
pub mod keys;
pub mod monitor;
pub mod records;
pub mod temp;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};

use disk_guard::DiskGuard;
use uuid::Uuid;

use crate::time::{IdClock, now_ms, now_us};

/// Bumped whenever a key layout or record encoding changes; `open` refuses a newer store and
/// migrates older ones (there are none yet: version 1 is the first).
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cf {
    Meta,
    Devices,
    Telemetry,
    Events,
    EventsByDevice,
    MsgIds,
    Commands,
    CommandIds,
    Attendance,
    AttendanceByTime,
    AttendanceDedup,
    Photos,
    Pending,
    Users,
    /// Dashboard users (`accounts::User`), by username.
    Accounts,
    /// Named API tokens (`accounts::ApiToken`), by id; only the token's hash is stored.
    ApiTokens,
    /// The people registry (`people::Person`), by PIN.
    People,
    /// Webhook endpoints: `c` + id their configuration, `s` + id their delivery state.
    Webhooks,
    /// Messages for webhook endpoints, by an id from the store's clock, written with the record
    /// they tell of.
    WebhookOutbox,
    /// Each webhook endpoint's delivery attempts, by (endpoint, time).
    WebhookDeliveries,
}

impl Cf {
    pub const ALL: [Cf; 20] = [
        Cf::Meta,
        Cf::Devices,
        Cf::Telemetry,
        Cf::Events,
        Cf::EventsByDevice,
        Cf::MsgIds,
        Cf::Commands,
        Cf::CommandIds,
        Cf::Attendance,
        Cf::AttendanceByTime,
        Cf::AttendanceDedup,
        Cf::Photos,
        Cf::Pending,
        Cf::Users,
        Cf::Accounts,
        Cf::ApiTokens,
        Cf::People,
        Cf::Webhooks,
        Cf::WebhookOutbox,
        Cf::WebhookDeliveries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Devices => "devices",
            Cf::Telemetry => "telemetry",
            Cf::Events => "events",
            Cf::EventsByDevice => "events_by_device",
            Cf::MsgIds => "msg_ids",
            Cf::Commands => "commands",
            Cf::CommandIds => "command_ids",
            Cf::Attendance => "attendance",
            Cf::AttendanceByTime => "attendance_by_time",
            Cf::AttendanceDedup => "attendance_dedup",
            Cf::Photos => "photos",
            Cf::Pending => "pending",
            Cf::Users => "users",
            Cf::Accounts => "accounts",
            Cf::ApiTokens => "api_tokens",
            Cf::People => "people",
            Cf::Webhooks => "webhooks",
            Cf::WebhookOutbox => "webhook_outbox",
            Cf::WebhookDeliveries => "webhook_deliveries",
        }
    }
}

#[derive(Debug)]
pub enum StoreError {
    Db(rocksdb::Error),
    MissingCf(&'static str),
    Schema(String),
    Corrupt(String),
    /// The batch holding the record did not commit (its error is logged by the committer).
    CommitFailed,
    /// The store's directory could not be prepared.
    Io(std::io::Error),
    /// Free disk space is below `--min-free-disk`: nothing new is written (`disk_guard`).
    DiskLow,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "rocksdb: {e}"),
            StoreError::MissingCf(n) => write!(f, "column family {n} is missing"),
            StoreError::Schema(m) => write!(f, "schema: {m}"),
            StoreError::Corrupt(m) => write!(f, "corrupt record: {m}"),
            StoreError::CommitFailed => write!(f, "the group commit failed"),
            StoreError::Io(e) => write!(f, "store directory: {e}"),
            StoreError::DiskLow => write!(f, "free disk space is below --min-free-disk"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Db(e)
    }
}

/// Table files RocksDB keeps open at once (an LRU table cache beyond it). With the 64 + 6 per
/// shard descriptors the server needs besides sessions, `--max-connections` 19,600 fits a 20,000
/// descriptor limit however large the store grows.
pub const MAX_OPEN_FILES: i32 = 256;

pub struct Store {
    db: DB,
    write_opts: WriteOptions,
    /// Issues record ids (receive time in µs, strictly increasing); see `IdClock`.
    pub ids: IdClock,
    health: WriteHealth,
    /// Refuses writes while free disk space is below the threshold; `monitor` feeds it.
    pub guard: DiskGuard,
    /// The one block cache every column family reads through, which the memtables are charged
    /// to as well (`open`).
    cache: Cache,
    /// Until when (µs) entries of the `msg_ids` family, written before msg_ids moved into the
    /// records, may still name a repeat; 0 once there are none. See `legacy_msg_id`.
    legacy_msg_ids_until: AtomicU64,
}

/// Deletes gathered by a retention sweep (`fleet::retention`), written with `apply_deletes`.
#[derive(Default)]
pub struct Deletes {
    batch: WriteBatch,
}

impl Deletes {
    /// Deletes the keys in `[from, to)`, if there are any: a range tombstone over nothing would
    /// only slow reads until compaction drops it. Returns whether it did.
    pub fn range(
        &mut self,
        store: &Store,
        cf: Cf,
        from: &[u8],
        to: &[u8],
    ) -> Result<bool, StoreError> {
        if !store.any_in(cf, from, to)? {
            return Ok(false);
        }
        self.batch.delete_range_cf(store.cf(cf)?, from, to);
        Ok(true)
    }

    pub fn key(&mut self, store: &Store, cf: Cf, key: &[u8]) -> Result<(), StoreError> {
        self.batch.delete_cf(store.cf(cf)?, key);
        Ok(())
    }
}

/// The default of `--store-memory-mb`: what RocksDB may hold in memtables, cached blocks and
/// index/filter blocks together.
pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;

/// While writes fail (disk full, I/O errors), how long and how often; for the log, `/metrics` and
/// `/healthz`. RocksDB itself decides when writes work again (see `docs/durability.md`): after a
/// disk-full error it stops taking writes, and its `SstFileManager` polls the free space every 5 s
/// and resumes (flushes the memtables, starts a new WAL) once enough is free.
#[derive(Default)]
struct WriteHealth {
    /// When the current run of failures began (ms since the epoch); 0 while writes succeed.
    failing_since: AtomicU64,
    /// Failed writes in the current run.
    failures: AtomicU64,
    /// When a "still failing" line was last logged (ms), so a full disk cannot flood the log.
    last_logged: AtomicU64,
}

/// How often a run of write failures is logged again after its first line.
const WRITE_FAILURE_LOG_EVERY_MS: u64 = 10_000;

impl Store {
    /// Opens (or creates) the store in `dir`. `memory_bytes` bounds RocksDB's memory: one LRU
    /// cache of that size holds the data blocks, the index and filter blocks (which otherwise
    /// grow with the data, unbounded), and a charge for the memtables, whose total a write
    /// buffer manager keeps at half of it by flushing early.
    pub fn open(
        dir: &Path,
        sync_writes: bool,
        msg_id_retention: Duration,
        memory_bytes: usize,
    ) -> Result<Store, StoreError> {
        let (cache, buffers) = memory(memory_bytes);
        let mut db_opts = db_options(&buffers);
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);

        let descriptors = Cf::ALL.iter().map(|&cf| {
            let mut o = cf_options(&cache);
            if cf == Cf::MsgIds {
                // De-duplication memory is bounded in time: ids older than the retention are dropped
                // at compaction. The value is the receive time in µs.
                let keep_us = msg_id_retention.as_micros() as u64;
                o.set_compaction_filter("msg-id-retention", move |_level, _key, value: &[u8]| {
                    match <[u8; 8]>::try_from(value) {
                        Ok(b) if now_us().saturating_sub(u64::from_be_bytes(b)) > keep_us => {
                            Decision::Remove
                        }
                        _ => Decision::Keep,
                    }
                });
            }
            if cf == Cf::AttendanceDedup {
                // Every punch asks whether it is stored already, and is nearly always new: a
                // whole-key bloom filter over the memtable answers that miss without searching the
                // skiplist, as the table files' filters do on disk. The search was 13 % of an
                // attendance burst's CPU.
                o.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
                o.set_memtable_whole_key_filtering(true);
            }
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&db_opts, dir, descriptors)?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync_writes);
        let store = Store {
            db,
            write_opts,
            ids: IdClock::new(),
            health: WriteHealth::default(),
            guard: DiskGuard::default(),
            cache,
            legacy_msg_ids_until: AtomicU64::new(0),
        };
        metrics::gauge!("fleetgate_store_write_failing").set(0.0);
        store.check_schema()?;
        store.seed_id_clock()?;
        if store.any_in(Cf::MsgIds, &[], &[0xff; 17])? {
            let until = now_us().saturating_add(msg_id_retention.as_micros() as u64);
            store.legacy_msg_ids_until.store(until, Ordering::Relaxed);
        }
        Ok(store)
    }

    /// Whether a store written by an earlier version remembers `msg_id` of `dev` as received from
    /// `since` (µs) on. Those versions kept each msg_id under a key of its own (`msg_ids`); this
    /// one keeps it in the record (`fleet::msg_window`), so only the records of an upgraded store's
    /// last `--msg-id-retention-hours` need this read, and only until `retire_legacy_msg_ids`.
    pub fn legacy_msg_id(&self, dev: &Uuid, msg_id: &str, since: u64) -> Result<bool, StoreError> {
        if self.legacy_msg_ids_until.load(Ordering::Relaxed) == 0 {
            return Ok(false);
        }
        let at = self
            .db
            .get_pinned_cf(self.cf(Cf::MsgIds)?, keys::msg_id(dev, msg_id))?;
        Ok(at
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .is_some_and(|b| u64::from_be_bytes(b) >= since))
    }

    /// Once every entry of the `msg_ids` family is past its retention (none is written any more),
    /// deletes them all. Returns whether it did. The retention sweep calls it.
    pub fn retire_legacy_msg_ids(&self, now_us: u64) -> Result<bool, StoreError> {
        let until = self.legacy_msg_ids_until.load(Ordering::Relaxed);
        if until == 0 || now_us < until {
            return Ok(false);
        }
        self.db.delete_range_cf_opt(
            self.cf(Cf::MsgIds)?,
            &[][..],
            &[0xff; 17][..],
            &self.write_opts,
        )?;
        self.legacy_msg_ids_until.store(0, Ordering::Relaxed);
        Ok(true)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match schema_version(&self.db)? {
            None => {
                let mut b = WriteBatch::default();
                b.put_cf(self.cf(Cf::Meta)?, SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes());
                self.write(b)
            }
            Some(_) => Ok(()),
        }
    }

    /// Ids must keep increasing across restarts even if the clock stepped back: start above every
    /// id already stored.
    fn seed_id_clock(&self) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(Cf::Events)?);
        it.seek_to_last();
        if let Some(id) = it.key().and_then(keys::suffix_u64) {
            self.ids.observe(id);
        }
        it.status()?;
        // Telemetry keys are per device; the newest overall needs a scan of device prefixes, which
        // the events floor already bounds in practice (every session start writes an event).
        Ok(())
    }

    pub fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StoreError::MissingCf(cf.name()))
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn block_cache(&self) -> &Cache {
        &self.cache
    }

    /// Writes a retention sweep's deletes. Unlike `write` it is not refused below the disk guard:
    /// deleting is how space comes back.
    pub fn apply_deletes(&self, deletes: Deletes) -> Result<(), StoreError> {
        if deletes.batch.is_empty() {
            return Ok(());
        }
        self.db.write_opt(deletes.batch, &self.write_opts)?;
        Ok(())
    }

    /// One durable write (WAL synced unless `--sync-writes false`). Called by committer threads;
    /// RocksDB joins concurrent callers into one write group with one fsync.
    ///
    /// A failed write is counted (`fleetgate_store_write_errors_total`) and logged: the first of a
    /// run at once, then at most every 10 s; the first success after a run is logged too.
    pub fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.guard.is_low() {
            metrics::counter!("fleetgate_disk_guard_refused_batches_total").increment(1);
            return Err(StoreError::DiskLow);
        }
        match self.db.write_opt(batch, &self.write_opts) {
            Ok(()) => {
                if self.health.failing_since.load(Ordering::Relaxed) != 0 {
                    self.write_recovered();
                }
                Ok(())
            }
            Err(e) => {
                self.write_failed(&e);
                Err(e.into())
            }
        }
    }

    /// Whether the last write failed (until one succeeds again).
    pub fn writes_failing(&self) -> bool {
        self.health.failing_since.load(Ordering::Relaxed) != 0
    }

    fn write_failed(&self, e: &rocksdb::Error) {
        metrics::counter!("fleetgate_store_write_errors_total").increment(1);
        let h = &self.health;
        let now = now_ms().max(1);
        let n = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if h.failing_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            h.last_logged.store(now, Ordering::Relaxed);
            metrics::gauge!("fleetgate_store_write_failing").set(1.0);
            tracing::error!(
                error = %e,
                "store writes are failing: devices are answered \"not stored\" and keep their data; \
                 after a disk-full error RocksDB resumes writing by itself once enough space is free"
            );
            return;
        }
        let last = h.last_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WRITE_FAILURE_LOG_EVERY_MS
            && h.last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let since = h.failing_since.load(Ordering::Relaxed);
            tracing::error!(
                error = %e,
                failed_writes = n,
                failing_for_s = now.saturating_sub(since) / 1000,
                "store writes are still failing"
            );
        }
    }

    fn write_recovered(&self) {
        let h = &self.health;
        let since = h.failing_since.swap(0, Ordering::Relaxed);
        if since == 0 {
            return; // another committer saw the recovery first
        }
        let n = h.failures.swap(0, Ordering::Relaxed);
        metrics::gauge!("fleetgate_store_write_failing").set(0.0);
        tracing::warn!(
            failed_writes = n,
            failed_for_ms = now_ms().saturating_sub(since),
            "store writes succeed again"
        );
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Whether any key lies in `[from, to)`: one seek.
    pub fn any_in(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<bool, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        it.seek(from);
        let found = it.key().is_some_and(|k| k < to);
        it.status()?;
        Ok(found)
    }

    pub fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.is_some())
    }

    /// Visits keys that start with `prefix`, newest (largest) first, strictly below `before` when
    /// given. `visit` returns whether it took the row; the scan stops after `limit` taken rows or
    /// `budget` visited rows, and returns the key to continue from (exclusive) if rows may remain.
    pub fn scan_reverse(
        &self,
        cf: Cf,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
        budget: usize,
        visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.scan_reverse_above(cf, prefix, before, None, limit, budget, visit)
    }

    /// `scan_reverse` that ends (with nothing left to continue from) at the first key below
    /// `floor`: the lower end of a time range, or the oldest record retention still keeps.
    #[allow(clippy::too_many_arguments)]
    pub fn scan_reverse_above(
        &self,
        cf: Cf,
        prefix: &[u8],
        before: Option<&[u8]>,
        floor: Option<&[u8]>,
        limit: usize,
        budget: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        match before {
            Some(b) => {
                it.seek_for_prev(b);
                if it.key() == Some(b) {
                    it.prev();
                }
            }
            None => {
                let mut upper = prefix.to_vec();
                upper.extend_from_slice(&[0xff; 32]);
                it.seek_for_prev(&upper);
            }
        }
        let (mut taken, mut seen) = (0usize, 0usize);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || floor.is_some_and(|f| k < f) {
                break;
            }
            if taken == limit || seen == budget {
                return Ok(Some(k_after(k)));
            }
            seen += 1;
            if visit(k, v)? {
                taken += 1;
            }
            it.prev();
        }
        it.status()?;
        Ok(None)
    }

    /// Visits keys that start with `prefix`, in order from `from` (inclusive), as long as `visit`
    /// returns true.
    pub fn visit_from(
        &self,
        cf: Cf,
        prefix: &[u8],
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        it.seek(from.max(prefix));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || !visit(k, v)? {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Like `scan_reverse`, oldest first, strictly above `after` when given.
    pub fn scan_forward(
        &self,
        cf: Cf,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        match after {
            Some(a) => {
                it.seek(a);
                if it.key() == Some(a) {
                    it.next();
                }
            }
            None => it.seek(prefix),
        }
        let mut taken = 0usize;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            if taken == limit {
                return Ok(Some(k_before(k)));
            }
            if visit(k, v)? {
                taken += 1;
            }
            it.next();
        }
        it.status()?;
        Ok(None)
    }

    /// Visits the keys in `[from, to)` in order until `visit` has taken enough (it returns false
    /// with the last row it takes). Returns the key to go on from, inclusive, if the range may
    /// hold more: how an export reads its range a bounded chunk at a time.
    pub fn scan_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        it.seek(from);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let more = visit(k, v)?;
            it.next();
            if !more {
                let next = it.key().map(<[u8]>::to_vec);
                it.status()?;
                return Ok(next);
            }
        }
        it.status()?;
        Ok(None)
    }
}

/// The schema version stored in `db`'s `meta`, `None` in a new store; an error if it is unreadable
/// or newer than this build knows.
fn schema_version(db: &DB) -> Result<Option<u32>, StoreError> {
    let meta = db
        .cf_handle(Cf::Meta.name())
        .ok_or(StoreError::MissingCf(Cf::Meta.name()))?;
    let Some(v) = db.get_cf(meta, SCHEMA_KEY)? else {
        return Ok(None);
    };
    let found = <[u8; 4]>::try_from(v.as_slice())
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Schema("unreadable schema version".into()))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "data was written by a newer fleetgate (schema {found}, this build knows {SCHEMA_VERSION})"
        )));
    }
    Ok(Some(found))
}

/// The options of the whole database, for the server and for a backup of a stopped one alike.
/// RocksDB's memory bound (`Store::open`): one LRU cache of `bytes` for every column family's
/// blocks, and a write-buffer manager that charges the memtables to it and flushes them early
/// past half of it.
fn memory(bytes: usize) -> (Cache, WriteBufferManager) {
    let cache = Cache::new_lru_cache(bytes);
    let buffers =
        WriteBufferManager::new_write_buffer_manager_with_cache(bytes / 2, false, cache.clone());
    (cache, buffers)
}

fn db_options(buffers: &WriteBufferManager) -> Options {
    let mut db_opts = Options::default();
    db_opts.set_write_buffer_manager(buffers);
    // Two background jobs: this box has two cores and the shards need them.
    db_opts.increase_parallelism(2);
    db_opts.set_max_background_jobs(2);
    // Concurrent writers from every shard's committer share one WAL write and one fsync.
    db_opts.set_enable_pipelined_write(true);
    db_opts.set_max_total_wal_size(256 << 20);
    // A bound on descriptors: every session is one, and the process may have 20,000 at most.
    db_opts.set_max_open_files(MAX_OPEN_FILES);
    db_opts
}

/// The memtable bloom filter's size as a share of the memtable's (RocksDB caps it at 0.25): 2 % of
/// a 64 MiB memtable is 1.3 MiB, over 10 bits for each dedup entry it can hold (~100 bytes each).
const MEMTABLE_BLOOM_RATIO: f64 = 0.02;

fn cf_options(cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_compression_type(DBCompressionType::Lz4);
    let mut block = BlockBasedOptions::default();
    block.set_bloom_filter(10.0, false);
    block.set_block_cache(cache);
    block.set_cache_index_and_filter_blocks(true);
    block.set_cache_index_and_filter_blocks_with_high_priority(true);
    // Partitioned index and filters: a lookup loads one 4 KiB partition, not the whole file's
    // filter. With whole-file filters in a bounded cache, the filter of a large table file (the
    // msg_id family's grow to megabytes) outgrew its cache shard and was read from the file and
    // checksummed again on every msg_id check: a one-hour soak at 20,000 msgs/s had both shards
    // at 100 % CPU in `MaybeReadBlockAndLoadToCache<ParsedFullFilterBlock>` after 30 minutes.
    block.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    block.set_partition_filters(true);
    block.set_metadata_block_size(4096);
    // The partitions' top levels and the newest files' blocks are read on every lookup: pinned.
    block.set_pin_top_level_index_and_filter(true);
    block.set_pin_l0_filter_and_index_blocks_in_cache(true);
    o.set_block_based_table_factory(&block);
    o
}

/// The cursor of a reverse scan is exclusive, so a page that stopped *at* key `k` (not yet visited)
/// continues "before" the key just above it: `k` followed by a zero byte sorts right after `k`.
fn k_after(k: &[u8]) -> Vec<u8> {
    let mut c = k.to_vec();
    c.push(0);
    c
}

/// The forward counterpart: continue "after" a key just below `k`. Keys here are fixed-length
/// big-endian, so decrementing the last byte sequence gives the predecessor of the same length.
fn k_before(k: &[u8]) -> Vec<u8> {
    let mut c = k.to_vec();
    for b in c.iter_mut().rev() {
        if *b == 0 {
            *b = 0xff;
        } else {
            *b -= 1;
            break;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store from before msg_ids moved into the records: its `msg_ids` keys still name repeats
    /// for their retention, and the sweep deletes them all once that has passed.
    #[test]
    fn an_upgraded_stores_msg_ids_are_honoured_then_retired() {
        // Not `temp::Scratch`: `temp` imports this module.
        let dir = std::env::temp_dir().join(format!("fleetgate-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dev = Uuid::from_u128(9);
        let hour = Duration::from_secs(3600);
        let received = now_us();
        {
            let store = Store::open(&dir, false, hour, DEFAULT_MEMORY_BYTES).expect("open");
            assert!(!store.legacy_msg_id(&dev, "\"a\"", 0).expect("read"));
            let cf = store.cf(Cf::MsgIds).expect("cf");
            let key = keys::msg_id(&dev, "\"a\"");
            store
                .db()
                .put_cf(cf, key, received.to_be_bytes())
                .expect("put");
        }
        let store = Store::open(&dir, false, hour, DEFAULT_MEMORY_BYTES).expect("reopen");
        assert!(store.legacy_msg_id(&dev, "\"a\"", received).expect("read"));
        assert!(!store.legacy_msg_id(&dev, "\"b\"", 0).expect("read"));
        assert!(
            !store
                .legacy_msg_id(&dev, "\"a\"", received + 1)
                .expect("read"),
            "too old"
        );
        assert!(
            !store.retire_legacy_msg_ids(now_us()).expect("retire"),
            "not yet"
        );
        let later = now_us() + 2 * hour.as_micros() as u64;
        assert!(store.retire_legacy_msg_ids(later).expect("retire"));
        assert!(!store.legacy_msg_id(&dev, "\"a\"", 0).expect("read"));
        assert!(
            !store.any_in(Cf::MsgIds, &[], &[0xff; 17]).expect("seek"),
            "deleted"
        );
        drop(store);
        let store = Store::open(&dir, false, hour, DEFAULT_MEMORY_BYTES).expect("reopen");
        assert!(
            !store.retire_legacy_msg_ids(later).expect("retire"),
            "nothing left to retire"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
