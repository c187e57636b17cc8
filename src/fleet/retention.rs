//! Retention: how long each kind of record is kept. Global defaults come from `--retain-*`; a
//! device's settings (`retain_telemetry`, `retain_events`, `retain_attendance`,
//! `retain_command_history`) override them for that device.
//!
//! Enforced twice, so that neither depends on the other:
//! * reads never return a record past its retention (`cutoff_us` per read, whatever the sweep and
//!   compaction have done yet);
//! * a sweep (`sweep`, on its own thread) deletes what has passed it. Telemetry, events and
//!   punches are keyed by time within a device, so most of it is range deletes: the hot path
//!   never scans live data, and a sweep's cost is per device, not per record. The few indexes not
//!   ordered that way (the global event stream's per-device index, punches by time, command ids)
//!   are deleted key by key from a bounded scan of what is being removed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use uuid::Uuid;

use crate::fleet::registry::{Device, Registry};
use crate::store::records::{self, CommandStatus};
use crate::store::{Cf, Deletes, Store, StoreError, keys};

/// The kinds of record retention applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Events,
    Attendance,
    CommandHistory,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Telemetry,
        Kind::Events,
        Kind::Attendance,
        Kind::CommandHistory,
    ];

    /// The device setting that overrides the global retention.
    pub fn setting(self) -> &'static str {
        match self {
            Kind::Telemetry => "retain_telemetry",
            Kind::Events => "retain_events",
            Kind::Attendance => "retain_attendance",
            Kind::CommandHistory => "retain_command_history",
        }
    }
}

/// How long records of a kind are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Forever,
    For(Duration),
}

/// The shortest retention accepted: below a second the sweep could not keep up with its meaning.
const MIN_KEEP: Duration = Duration::from_secs(1);
/// The longest: a century (beyond it, `forever` says the same without overflowing time sums).
const MAX_KEEP: Duration = Duration::from_secs(100 * 365 * 86_400);

impl Keep {
    /// Parses `30s`, `15m`, `12h`, `90d`, `2w`, or `forever`.
    pub fn parse(s: &str) -> Result<Keep, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("forever") {
            return Ok(Keep::Forever);
        }
        let bad =
            || format!("{s:?}: give a duration with a unit (30s, 15m, 12h, 90d, 2w) or forever");
        let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = s.split_at(unit_at);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let d = Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?);
        if d < MIN_KEEP || d > MAX_KEEP {
            return Err(format!("{s:?}: a retention is 1s to 100 years, or forever"));
        }
        Ok(Keep::For(d))
    }

    /// The oldest record time (µs since the epoch) kept at `now_us`; `None`: everything is kept.
    pub fn cutoff_us(self, now_us: u64) -> Option<u64> {
        match self {
            Keep::Forever => None,
            Keep::For(d) => Some(now_us.saturating_sub(d.as_micros() as u64)),
        }
    }
}

/// The global retention of each kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    pub telemetry: Keep,
    pub events: Keep,
    pub attendance: Keep,
    pub command_history: Keep,
}

impl Retention {
    pub fn global(&self, kind: Kind) -> Keep {
        match kind {
            Kind::Telemetry => self.telemetry,
            Kind::Events => self.events,
            Kind::Attendance => self.attendance,
            Kind::CommandHistory => self.command_history,
        }
    }

    /// A device's retention of `kind`: its setting when it has a valid one, else the global one.
    /// Settings are validated when they are written, so an invalid one here is an older build's.
    pub fn for_settings(&self, kind: Kind, settings: &BTreeMap<String, String>) -> Keep {
        settings
            .get(kind.setting())
            .and_then(|s| Keep::parse(s).ok())
            .unwrap_or_else(|| self.global(kind))
    }

    pub fn for_device(&self, kind: Kind, dev: &Device) -> Keep {
        dev.with_record(|r| self.for_settings(kind, &r.settings))
    }

    /// The oldest record time (µs) of `kind` a read may return for `dev` at `now_us`.
    pub fn cutoff_us(&self, kind: Kind, dev: Option<&Device>, now_us: u64) -> Option<u64> {
        match dev {
            Some(d) => self.for_device(kind, d).cutoff_us(now_us),
            None => self.global(kind).cutoff_us(now_us),
        }
    }

    /// How often the sweep runs: a tenth of the shortest retention in force, between a second and
    /// ten minutes, so nothing outlives its retention by much more than a tenth of it.
    pub fn sweep_every(&self, devices: impl Iterator<Item = Keep>) -> Duration {
        Kind::ALL
            .iter()
            .map(|k| self.global(*k))
            .chain(devices)
            .filter_map(|k| match k {
                Keep::For(d) => Some(d / 10),
                Keep::Forever => None,
            })
            .min()
            .unwrap_or(Duration::MAX)
            .clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

/// The cut-offs of one kind as of one request: the global one, and each device's that overrides
/// it. Reads that span devices (the global event stream, punches across devices, their exports)
/// take one snapshot and check each record against it, instead of parsing a device's settings per
/// record.
#[derive(Clone, Debug, Default)]
pub struct Cutoffs {
    default: Option<u64>,
    devices: HashMap<Uuid, Option<u64>>,
}

impl Cutoffs {
    pub fn of(registry: &Registry, retention: &Retention, kind: Kind, now_us: u64) -> Cutoffs {
        let mut devices = HashMap::new();
        registry.visit_from(None, |d| {
            d.with_record(|r| {
                if r.settings.contains_key(kind.setting()) {
                    let keep = retention.for_settings(kind, &r.settings);
                    devices.insert(d.id, keep.cutoff_us(now_us));
                }
            });
            true
        });
        Cutoffs {
            default: retention.global(kind).cutoff_us(now_us),
            devices,
        }
    }

    /// The oldest record time (µs) kept for `dev` (a record of no device: the global one).
    pub fn of_device(&self, dev: Option<&Uuid>) -> Option<u64> {
        dev.and_then(|d| self.devices.get(d).copied())
            .unwrap_or(self.default)
    }

    /// Whether a record of `dev` at `time_us` is within its retention.
    pub fn keeps(&self, dev: Option<&Uuid>, time_us: u64) -> bool {
        self.of_device(dev).is_none_or(|c| time_us >= c)
    }

    /// The oldest cut-off any device (or the global retention) still keeps from; `None` when
    /// some keep everything.
    pub fn oldest(&self) -> Option<u64> {
        self.devices
            .values()
            .chain([&self.default])
            .try_fold(u64::MAX, |min, c| c.map(|c| min.min(c)))
    }
}

/// Validates a device's retention settings (`POST`/`PATCH /api/devices`).
pub fn check_settings(settings: &BTreeMap<String, String>) -> Result<(), String> {
    for kind in Kind::ALL {
        if let Some(v) = settings.get(kind.setting()) {
            Keep::parse(v).map_err(|e| format!("settings.{}: {e}", kind.setting()))?;
        }
    }
    Ok(())
}

/// Keys one sweep deletes one by one at most (indexes not ordered by time): a first sweep over
/// years of history is spread over several runs instead of one huge batch.
const MAX_POINT_DELETES: usize = 100_000;

/// What one sweep did.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    /// Range deletes issued (one per device and kind, at most).
    pub ranges: usize,
    /// Keys deleted one by one (index entries, commands).
    pub keys: usize,
    /// The per-sweep bound was reached: the next sweep goes on.
    pub more: bool,
}

/// Deletes every record past its retention at `now_us`.
pub fn sweep(
    store: &Store,
    registry: &Registry,
    retention: &Retention,
    now_us: u64,
) -> Result<Swept, StoreError> {
    let mut devices = Vec::new();
    registry.visit_from(None, |d| {
        devices.push(d.clone());
        true
    });
    let cut = |kind: Kind, d: &Device| retention.for_device(kind, d).cutoff_us(now_us);
    let mut del = Deletes::default();
    let mut swept = Swept::default();
    let mut budget = MAX_POINT_DELETES;

    // The global event stream is keyed by time alone: one range up to the oldest cutoff any
    // device (or the global retention, for events of no device) still needs.
    let oldest_events_kept = devices
        .iter()
        .map(|d| cut(Kind::Events, d))
        .chain([retention.global(Kind::Events).cutoff_us(now_us)])
        .try_fold(u64::MAX, |min, c| c.map(|c| min.min(c)));
    if let Some(g) = oldest_events_kept.filter(|g| *g > 0 && *g < u64::MAX) {
        swept.ranges +=
            usize::from(del.range(store, Cf::Events, &keys::event(0), &keys::event(g))?);
    }
    let oldest_punches_kept = devices
        .iter()
        .map(|d| cut(Kind::Attendance, d))
        .try_fold(u64::MAX, |min, c| c.map(|c| min.min(c)));

    for dev in &devices {
        let id = dev.id;
        if let Some(c) = cut(Kind::Telemetry, dev) {
            let (lo, hi) = (keys::telemetry(&id, 0), keys::telemetry(&id, c));
            swept.ranges += usize::from(del.range(store, Cf::Telemetry, &lo, &hi)?);
        }
        if let Some(c) = cut(Kind::Events, dev) {
            // Events this device keeps for less than the stream's range delete reaches.
            let from = oldest_events_kept.unwrap_or(0);
            if c > from {
                let n = delete_indexed_events(store, &mut del, &id, from, c, budget)?;
                budget -= n.min(budget);
                swept.keys += n;
            }
            let (lo, hi) = (keys::event_by_device(&id, 0), keys::event_by_device(&id, c));
            swept.ranges += usize::from(del.range(store, Cf::EventsByDevice, &lo, &hi)?);
        }
        if let Some(c) = cut(Kind::Attendance, dev) {
            let from = oldest_punches_kept.unwrap_or(0);
            if c > from {
                let n = delete_punch_time_keys(store, &mut del, &id, from, c, budget)?;
                budget -= n.min(budget);
                swept.keys += n;
            }
            let (lo, hi) = (attendance_bound(&id, 0), attendance_bound(&id, c));
            swept.ranges += usize::from(del.range(store, Cf::Attendance, &lo, &hi)?);
            swept.ranges += usize::from(del.range(store, Cf::Photos, &lo, &hi)?);
        }
        if let Some(c) = cut(Kind::CommandHistory, dev) {
            let n =
                delete_finished_commands(store, &mut del, &id, now_us / 1000, c / 1000, budget)?;
            budget -= n.min(budget);
            swept.keys += n;
        }
        if budget == 0 {
            swept.more = true;
            break;
        }
    }
    // Punches by time across devices: one range below the oldest cutoff every device needs.
    if let Some(g) = oldest_punches_kept.filter(|g| *g > 0 && *g < u64::MAX) {
        let mut hi = [0u8; 32];
        hi[..8].copy_from_slice(&g.to_be_bytes());
        swept.ranges += usize::from(del.range(store, Cf::AttendanceByTime, &[0u8; 32], &hi)?);
    }
    store.apply_deletes(del)?;
    // An upgraded store's msg_id keys, once all are past their retention.
    swept.ranges += usize::from(store.retire_legacy_msg_ids(now_us)?);
    Ok(swept)
}

/// The first `attendance` key of `dev` at `utc_us`.
fn attendance_bound(dev: &Uuid, utc_us: u64) -> [u8; 32] {
    keys::attendance(dev, utc_us, &[0u8; 16])
}

/// Deletes the global stream's entries of `dev`'s events in `[from, to)` (µs), found through its
/// index; at most `budget`.
fn delete_indexed_events(
    store: &Store,
    del: &mut Deletes,
    dev: &Uuid,
    from: u64,
    to: u64,
    budget: usize,
) -> Result<usize, StoreError> {
    let mut ids = Vec::new();
    let start = keys::event_by_device(dev, from);
    store.scan_forward(
        Cf::EventsByDevice,
        &keys::device(dev),
        Some(&start),
        budget,
        |k, _| {
            let Some(id) = keys::suffix_u64(k).filter(|id| *id < to) else {
                return Ok(false);
            };
            ids.push(id);
            Ok(true)
        },
    )?;
    // `scan_forward` starts after `start`: the key at exactly `from` is the one before it.
    if store.exists(Cf::EventsByDevice, &start)? {
        ids.push(from);
    }
    for id in &ids {
        del.key(store, Cf::Events, &keys::event(*id))?;
    }
    Ok(ids.len())
}

/// Deletes the by-time index entries of `dev`'s punches in `[from, to)` (µs); at most `budget`.
fn delete_punch_time_keys(
    store: &Store,
    del: &mut Deletes,
    dev: &Uuid,
    from: u64,
    to: u64,
    budget: usize,
) -> Result<usize, StoreError> {
    let mut n = 0;
    let mut time_keys = Vec::new();
    let start = attendance_bound(dev, from);
    let mut visit = |k: &[u8]| {
        let Ok(primary) = <[u8; 32]>::try_from(k) else {
            return false;
        };
        if u64::from_be_bytes(primary[16..24].try_into().unwrap_or([0xff; 8])) >= to {
            return false;
        }
        time_keys.push(keys::attendance_by_time(&primary));
        n += 1;
        true
    };
    if store.exists(Cf::Attendance, &start)? {
        visit(&start);
    }
    store.scan_forward(
        Cf::Attendance,
        &keys::device(dev),
        Some(&start),
        budget,
        |k, _| Ok(visit(k)),
    )?;
    for k in &time_keys {
        del.key(store, Cf::AttendanceByTime, k)?;
    }
    Ok(n)
}

/// Deletes `dev`'s finished commands (acked, failed, expired) that finished before `cutoff_ms`,
/// in delivery order, stopping at the first one still in play or newer; at most `budget`.
fn delete_finished_commands(
    store: &Store,
    del: &mut Deletes,
    dev: &Uuid,
    now_ms: u64,
    cutoff_ms: u64,
    budget: usize,
) -> Result<usize, StoreError> {
    let mut gone = Vec::new();
    store.scan_forward(Cf::Commands, &keys::device(dev), None, budget, |k, v| {
        let c: records::CommandRecord = records::decode(v)?;
        let Some(finished_at) = finished_at(&c, now_ms) else {
            return Ok(false);
        };
        if finished_at >= cutoff_ms {
            return Ok(false);
        }
        gone.push((k.to_vec(), c.command_id));
        Ok(true)
    })?;
    for (key, command_id) in &gone {
        del.key(store, Cf::Commands, key)?;
        del.key(store, Cf::CommandIds, &keys::command_id(command_id))?;
    }
    Ok(gone.len())
}

/// When a command finished (ms), or `None` while it is still queued or sent. A queued command
/// past its TTL finished when it expired, whether or not anyone rewrote it then.
pub fn finished_at(c: &records::CommandRecord, now_ms: u64) -> Option<u64> {
    match (c.status, c.effective_status(now_ms)) {
        (CommandStatus::Queued, CommandStatus::Expired) => Some(c.expires_at),
        (_, CommandStatus::Acked | CommandStatus::Failed | CommandStatus::Expired) => {
            Some(c.updated_at)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::auth;
    use crate::store::records::DeviceRecord;
    use crate::store::temp::TempStore;

    const S: u64 = 1_000_000;

    fn add(registry: &Registry, settings: &[(&str, &str)]) -> Uuid {
        let token = auth::hash_token("test-token-0123456789");
        let rec = DeviceRecord {
            device_id: Uuid::new_v4(),
            name: "d".into(),
            protocol: records::Protocol::Generic,
            serial: None,
            token_hash: auth::hex(&token),
            created_at: 0,
            last_seen: None,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            info: None,
            stamps: Default::default(),
        };
        registry.add(rec, token).id
    }

    fn put(store: &Store, cf: Cf, key: &[u8], value: &[u8]) {
        let h = store.cf(cf).expect("cf");
        store.db().put_cf(h, key, value).expect("put");
    }

    fn keys_of(store: &Store, cf: Cf, prefix: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        store
            .scan_forward(cf, prefix, None, usize::MAX, |k, _| {
                out.push(keys::suffix_u64(k).unwrap_or(u64::MAX));
                Ok(true)
            })
            .expect("scan");
        out
    }

    /// One snapshot per request: an overriding device keeps its own cut-off, others and records
    /// of no device the global one, and the stream starts at the oldest.
    #[test]
    fn cutoffs_snapshot_the_overrides_of_one_kind() {
        let tmp = TempStore::open("retention-cutoffs", false).expect("store");
        let registry = Registry::load(tmp.store()).expect("registry");
        let plain = add(&registry, &[]);
        let long = add(&registry, &[("retain_events", "100s")]);
        let r = Retention {
            telemetry: Keep::Forever,
            events: Keep::For(Duration::from_secs(10)),
            attendance: Keep::Forever,
            command_history: Keep::Forever,
        };
        let c = Cutoffs::of(&registry, &r, Kind::Events, 1_000 * S);
        assert_eq!(c.of_device(Some(&plain)), Some(990 * S));
        assert_eq!(c.of_device(Some(&long)), Some(900 * S));
        assert_eq!(c.of_device(None), Some(990 * S));
        assert!(c.keeps(Some(&long), 950 * S) && !c.keeps(Some(&plain), 950 * S));
        assert_eq!(c.oldest(), Some(900 * S));
        let all = Cutoffs::of(&registry, &r, Kind::Telemetry, 1_000 * S);
        assert_eq!(all.oldest(), None);
        assert!(all.keeps(Some(&plain), 0));
    }

    /// Telemetry and events past their retention go, newer ones stay; a device's setting
    /// overrides the global retention both ways, and the global event stream keeps what any
    /// device still needs. A second sweep finds nothing more to do.
    #[test]
    fn a_sweep_deletes_what_has_passed_its_retention_and_nothing_else() {
        let tmp = TempStore::open("retention-sweep", false).expect("store");
        let store = tmp.store();
        let registry = Registry::load(store).expect("registry");
        let plain = add(&registry, &[]);
        let short = add(
            &registry,
            &[("retain_telemetry", "10s"), ("retain_events", "10s")],
        );
        let long = add(&registry, &[("retain_events", "forever")]);
        let now = 1_000 * S;
        for dev in [plain, short, long] {
            for age in [5, 50, 500] {
                let id = now - age * S;
                put(store, Cf::Telemetry, &keys::telemetry(&dev, id), b"{}");
                // Event ids are unique across devices: a few µs apart.
                let ev = id + (dev.as_u128() % 1000) as u64;
                put(store, Cf::Events, &keys::event(ev), b"{}");
                put(
                    store,
                    Cf::EventsByDevice,
                    &keys::event_by_device(&dev, ev),
                    b"",
                );
            }
        }
        let r = Retention {
            telemetry: Keep::For(Duration::from_secs(100)),
            events: Keep::For(Duration::from_secs(100)),
            attendance: Keep::Forever,
            command_history: Keep::Forever,
        };
        let swept = sweep(store, &registry, &r, now).expect("sweep");
        assert!(!swept.more);
        let ages = |dev: &Uuid, cf: Cf| -> Vec<u64> {
            keys_of(store, cf, &keys::device(dev))
                .into_iter()
                .map(|id| (now - id + S / 2) / S)
                .collect()
        };
        assert_eq!(ages(&plain, Cf::Telemetry), [50, 5]);
        assert_eq!(ages(&short, Cf::Telemetry), [5]);
        assert_eq!(ages(&long, Cf::Telemetry), [50, 5]);
        assert_eq!(ages(&short, Cf::EventsByDevice), [5]);
        assert_eq!(ages(&long, Cf::EventsByDevice), [500, 50, 5]);
        // The stream: `long` keeps all three, `plain` two, `short` one.
        assert_eq!(keys_of(store, Cf::Events, &[]).len(), 3 + 2 + 1);
        assert_eq!(sweep(store, &registry, &r, now).expect("again").ranges, 0);
    }

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(Keep::parse("30s"), Ok(Keep::For(Duration::from_secs(30))));
        assert_eq!(
            Keep::parse("12h"),
            Ok(Keep::For(Duration::from_secs(43_200)))
        );
        assert_eq!(
            Keep::parse("90d"),
            Ok(Keep::For(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(
            Keep::parse("2w"),
            Ok(Keep::For(Duration::from_secs(14 * 86_400)))
        );
        assert_eq!(Keep::parse("Forever"), Ok(Keep::Forever));
        for bad in [
            "",
            "30",
            "s",
            "0s",
            "1y",
            "-1d",
            "1.5h",
            "99999999999999999999d",
            "40000w",
        ] {
            assert!(Keep::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cutoffs_and_overrides() {
        let r = Retention {
            telemetry: Keep::For(Duration::from_secs(10)),
            events: Keep::Forever,
            attendance: Keep::Forever,
            command_history: Keep::For(Duration::from_secs(60)),
        };
        assert_eq!(
            Keep::For(Duration::from_secs(10)).cutoff_us(60_000_000),
            Some(50_000_000)
        );
        assert_eq!(Keep::For(Duration::from_secs(10)).cutoff_us(5), Some(0));
        assert_eq!(Keep::Forever.cutoff_us(5), None);
        let mut settings = BTreeMap::new();
        settings.insert("retain_telemetry".to_string(), "1h".to_string());
        settings.insert("retain_events".to_string(), "bogus".to_string());
        assert_eq!(
            r.for_settings(Kind::Telemetry, &settings),
            Keep::For(Duration::from_secs(3600))
        );
        assert_eq!(r.for_settings(Kind::Events, &settings), Keep::Forever);
        assert!(check_settings(&settings).is_err());
        settings.remove("retain_events");
        assert!(check_settings(&settings).is_ok());
        // A tenth of the shortest retention, within 1 s .. 10 min.
        assert_eq!(r.sweep_every(std::iter::empty()), Duration::from_secs(1));
        let long = Retention {
            telemetry: Keep::For(Duration::from_secs(90 * 86_400)),
            ..r.clone()
        };
        let long = Retention {
            command_history: Keep::Forever,
            ..long
        };
        assert_eq!(
            long.sweep_every(std::iter::empty()),
            Duration::from_secs(600)
        );
        assert_eq!(
            long.sweep_every([Keep::For(Duration::from_secs(100))].into_iter()),
            Duration::from_secs(10)
        );
    }
}
