//! Webhooks: endpoints that are told what the fleet stores, signed by the Standard Webhooks
//! spec (`webhook-id`, `webhook-timestamp`, `webhook-signature`: HMAC-SHA256 of
//! `id.timestamp.body`, keyed by the endpoint's `whsec_` secret).
//!
//! Nothing committed is missed: a message is staged into the durable outbox (`webhook_outbox`,
//! keyed by an id from the store's clock) in the same batch as the record it tells of, whenever an
//! enabled endpoint subscribes to its kind. Each endpoint has a cursor into the outbox (the last
//! id it took); the sender (`crate::webhook_sender`, the app's thread per endpoint) delivers the
//! messages after the cursor one at a time, moves the cursor only past a 2xx, and retries a
//! failure with growing delays for days, until the endpoint has failed for `DISABLE_AFTER_MS`,
//! when it is disabled with a `webhook_disabled` event. So delivery is at least once (the cursor
//! is written after the answer: a crash between repeats one message, under the same id), in order
//! per endpoint. The outbox is kept `--webhooks-retain-days` and can be replayed from a time.
//!
//! This module holds the rules and the records; it does no network I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::fleet::auth;
use crate::json;
use crate::store::commit::Staging;
use crate::store::records::Source;
use crate::store::{Cf, Store, StoreError, records};
use crate::time::{now_ms, now_us, rfc3339_ms};

/// Endpoints at most (each has its own sender thread).
pub const MAX_ENDPOINTS: usize = 32;
pub const MAX_URL: usize = 2048;
pub const MAX_DESCRIPTION: usize = 256;
/// Delivery attempts after the first failure wait `retry_min_ms` × 2^(n−1), at most this.
pub const MAX_RETRY_MS: u64 = 3_600_000;
/// An endpoint that has failed every attempt for this long (and at least `MIN_FAILURES` times) is
/// disabled: three days.
pub const DISABLE_AFTER_MS: u64 = 3 * 86_400_000;
pub const MIN_FAILURES: u32 = 10;
/// A previous secret still signs (beside the new one) this long after a rotation, so receivers
/// can switch over: a day.
pub const PREVIOUS_SECRET_MS: u64 = 86_400_000;
/// Outbox entries one look for an endpoint's next message examines before it gives up for the
/// moment (kinds the endpoint does not take are skipped).
const SCAN_BUDGET: usize = 10_000;

/// An outbox entry's first byte: its kind's bit, and these flags.
/// The entry is for the cluster's export only (no endpoint takes it, or the telemetry rate kept it
/// from them): senders skip it.
const EXPORT_ONLY: u8 = 0x80;
/// The device's id (16 bytes) follows the first byte. Entries written before the export have no
/// device; the export starts after them.
const WITH_DEVICE: u8 = 0x40;
/// The record's identity (16 bytes) follows the device: a telemetry record's or event's msg_id,
/// or a punch's identity, hashed. The export names the message by it, so that the same record
/// stored on two nodes (re-sent to the second after the first died) is one message in the stream.
const WITH_IDENTITY: u8 = 0x20;
const KIND_BITS: u8 = 0x1f;

/// What an endpoint subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `attendance.punch`: every punch stored.
    Attendance,
    /// `device.online` / `device.offline`.
    DeviceStatus,
    /// `device.event`: events devices and terminals send (door events, unknown faces, …).
    Events,
    /// `command.result`: a command's outcome.
    CommandResults,
    /// `telemetry`: generic devices' telemetry, at most `--webhooks-telemetry-per-second` across
    /// the fleet (the rest is stored but not sent, and counted).
    Telemetry,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Attendance,
        Kind::DeviceStatus,
        Kind::Events,
        Kind::CommandResults,
        Kind::Telemetry,
    ];

    fn bit(self) -> u8 {
        match self {
            Kind::Attendance => 1,
            Kind::DeviceStatus => 2,
            Kind::Events => 4,
            Kind::CommandResults => 8,
            Kind::Telemetry => 16,
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Attendance => "attendance",
            Kind::DeviceStatus => "device_status",
            Kind::Events => "events",
            Kind::CommandResults => "command_results",
            Kind::Telemetry => "telemetry",
        }
    }
}

/// How an endpoint is spoken to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Preset {
    /// Standard Webhooks: the message as JSON, signed.
    Standard,
    /// ERPNext (Frappe HR): each punch posted as an employee check-in with the site's API key.
    Erpnext {
        api_key: String,
        api_secret: String,
        /// The Employee field that holds the terminal PIN (`attendance_device_id`), or whose
        /// value is the person's `external_id` when `by_external_id`.
        employee_field: String,
        by_external_id: bool,
    },
}

/// An endpoint as operators configure it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub id: u64,
    pub url: String,
    pub events: Vec<Kind>,
    pub preset: Preset,
    /// `whsec_…`: kept as it is, since signing needs it (the data directory is private).
    pub secret: String,
    /// The secret before the last rotation, and until when it still signs.
    #[serde(default)]
    pub previous_secret: Option<(String, u64)>,
    pub enabled: bool,
    #[serde(default)]
    pub description: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Where an endpoint's delivery stands; written only by its sender.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// The last outbox id delivered or skipped.
    pub cursor: u64,
    /// Failed attempts in a row, and since when.
    pub failures: u32,
    pub failing_since: Option<u64>,
    /// Not before this (ms).
    pub next_attempt_at: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub disabled_reason: Option<String>,
}

/// One endpoint, live.
#[derive(Debug)]
pub struct Endpoint {
    pub config: RwLock<Config>,
    pub state: Mutex<State>,
    /// A replay asked for through the API, applied by the sender (which alone writes the state).
    pub replay_from: Mutex<Option<u64>>,
}

impl Endpoint {
    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every endpoint, and which kinds any enabled one takes (read on every record staged).
#[derive(Debug, Default)]
pub struct Webhooks {
    all: RwLock<BTreeMap<u64, Arc<Endpoint>>>,
    wanted: AtomicU8,
    /// Outbox ids staged in batches that have not resolved yet, and the newest id handed out.
    /// Shards commit independently, so id 6 can be durable before id 5: a sender reads only
    /// below `visible_below`, and a late commit is never stepped over.
    inflight: Mutex<Inflight>,
    /// Telemetry messages per second across the fleet (`--webhooks-telemetry-per-second`), as a
    /// GCRA: the theoretical arrival time of the next message, in µs.
    telemetry_interval_us: AtomicU64,
    telemetry_tat_us: AtomicU64,
    /// The cluster's export (`--nats`): it takes every kind but device status, unrated.
    pub export: Export,
}

/// The cluster's share of the outbox: whether it is on, and how far behind its publisher is.
#[derive(Debug, Default)]
pub struct Export {
    on: AtomicBool,
    /// Entries for the export staged since start (plus those pending at start), and published.
    staged: AtomicU64,
    published: AtomicU64,
    /// Past this lag new records are stored and acknowledged but not exported (counted).
    max_lag: AtomicU64,
    pub connected: AtomicBool,
}

impl Export {
    /// The kinds the export takes.
    pub const KINDS: [Kind; 4] = [
        Kind::Attendance,
        Kind::Events,
        Kind::CommandResults,
        Kind::Telemetry,
    ];

    fn bits(&self) -> u8 {
        if self.on.load(Ordering::Acquire) {
            Export::KINDS.iter().fold(0, |b, k| b | k.bit())
        } else {
            0
        }
    }

    /// Turns the export on with `pending` entries already waiting after its cursor.
    pub fn start(&self, max_lag: u64, pending: u64) {
        self.max_lag.store(max_lag, Ordering::Relaxed);
        self.staged.fetch_add(pending, Ordering::Relaxed);
        self.on.store(true, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Entries staged and not yet published (an entry of a batch that failed to commit counts
    /// until the next start).
    pub fn lag(&self) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        self.staged
            .load(Ordering::Acquire)
            .saturating_sub(published)
    }

    pub fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::AcqRel);
        metrics::counter!("fleetgate_export_published_total").increment(n);
    }

    /// Whether the export is over its bound: an entry only it would take is then not staged,
    /// and counted as dropped from the export.
    fn full(&self) -> bool {
        self.lag() >= self.max_lag.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Inflight {
    ids: std::collections::BTreeSet<u64>,
    last: u64,
}

/// Telemetry messages one burst may hold beyond the rate: a second's worth.
const TELEMETRY_BURST_S: u64 = 1;

fn config_key(id: u64) -> [u8; 9] {
    let mut k = [b'c'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn state_key(id: u64) -> [u8; 9] {
    let mut k = [b's'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn delivery_key(id: u64, at_us: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&at_us.to_be_bytes());
    k
}

/// The API's name of an endpoint.
pub fn public_id(id: u64) -> String {
    format!("wh_{id:016x}")
}

pub fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("wh_")?, 16).ok()
}

/// A message's id (`webhook-id`): the outbox id, the same on every attempt and replay.
pub fn message_id(outbox_id: u64) -> String {
    format!("msg_{outbox_id:016x}")
}

impl Webhooks {
    pub fn load(store: &Store) -> Result<Webhooks, StoreError> {
        let mut all = BTreeMap::new();
        store.scan_forward(Cf::Webhooks, b"c", None, usize::MAX, |_, v| {
            let c: Config = records::decode(v)?;
            let state = match store.get(Cf::Webhooks, &state_key(c.id))? {
                Some(s) => records::decode(&s)?,
                None => State::default(),
            };
            all.insert(
                c.id,
                Arc::new(Endpoint {
                    config: RwLock::new(c),
                    state: Mutex::new(state),
                    replay_from: Mutex::new(None),
                }),
            );
            Ok(true)
        })?;
        let w = Webhooks {
            all: RwLock::new(all),
            inflight: Mutex::new(Inflight {
                ids: Default::default(),
                last: outbox_head(store)?,
            }),
            ..Webhooks::default()
        };
        w.recount();
        Ok(w)
    }

    /// Outbox ids below this are all committed (or failed and absent): every id handed out
    /// before is either resolved or in flight, and the smallest in flight bounds what is safe.
    pub fn visible_below(&self) -> u64 {
        let f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        f.ids.first().copied().unwrap_or(f.last.saturating_add(1))
    }

    /// A new outbox id, in flight until `settled`.
    fn take_id(&self, store: &Store) -> u64 {
        let mut f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let id = store.ids.next(now_us());
        f.ids.insert(id);
        f.last = f.last.max(id);
        id
    }

    fn settled(&self, id: u64) {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .remove(&id);
    }

    /// Sets the telemetry rate (messages per second, from 1).
    pub fn with_telemetry_rate(self, per_second: u32) -> Webhooks {
        let interval = 1_000_000 / u64::from(per_second.max(1));
        self.telemetry_interval_us
            .store(interval.max(1), Ordering::Relaxed);
        self
    }

    /// Whether one more telemetry message fits the rate at `now_us` (and takes its place).
    fn telemetry_admits(&self, now_us: u64) -> bool {
        let interval = self.telemetry_interval_us.load(Ordering::Relaxed).max(1);
        let burst = interval.saturating_mul(TELEMETRY_BURST_S * 1_000_000 / interval);
        let mut tat = self.telemetry_tat_us.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now_us);
            if (start + interval).saturating_sub(now_us) > burst {
                return false;
            }
            match self.telemetry_tat_us.compare_exchange_weak(
                tat,
                start + interval,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => tat = now,
            }
        }
    }

    /// Whether any enabled endpoint, or the cluster's export, takes `kind`: two atomic loads,
    /// on every record staged.
    pub fn wants(&self, kind: Kind) -> bool {
        (self.wanted.load(Ordering::Acquire) | self.export.bits()) & kind.bit() != 0
    }

    /// Whether an enabled endpoint takes `kind` (the export aside).
    fn endpoints_want(&self, kind: Kind) -> bool {
        self.wanted.load(Ordering::Acquire) & kind.bit() != 0
    }

    fn recount(&self) {
        let mut bits = 0;
        for e in self.all.read().unwrap_or_else(|p| p.into_inner()).values() {
            let c = e.config.read().unwrap_or_else(|p| p.into_inner());
            if c.enabled {
                bits |= c.events.iter().fold(0, |b, k| b | k.bit());
            }
        }
        self.wanted.store(bits, Ordering::Release);
    }

    pub fn get(&self, id: u64) -> Option<Arc<Endpoint>> {
        self.all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn list(&self) -> Vec<Arc<Endpoint>> {
        self.all
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.all.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a new endpoint into memory once its record has committed. Its cursor starts at the
    /// outbox's present: it is told what is stored from now on (a replay reaches further back).
    pub fn added(&self, c: Config, cursor: u64) -> Arc<Endpoint> {
        let e = Arc::new(Endpoint {
            config: RwLock::new(c),
            state: Mutex::new(State {
                cursor,
                ..State::default()
            }),
            replay_from: Mutex::new(None),
        });
        let id = e.config().id;
        self.all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, e.clone());
        self.recount();
        e
    }

    /// Applies a committed change of an endpoint's configuration.
    pub fn changed(&self, c: Config) {
        if let Some(e) = self.get(c.id) {
            *e.config.write().unwrap_or_else(|p| p.into_inner()) = c;
        }
        self.recount();
    }

    pub fn removed(&self, id: u64) {
        self.all
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.recount();
    }
}

/// Stages a message into the outbox, in the batch of the record it tells of, when an enabled
/// endpoint or the export takes `kind`: `{"type","timestamp","data"}` with `data` the record's
/// JSON, and the device it is about.
pub fn stage(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    kind: Kind,
    dev: &uuid::Uuid,
    msg_type: &str,
    at_ms: u64,
    data: &str,
) -> Result<(), StoreError> {
    let to_endpoints = hooks.endpoints_want(kind);
    let entry = Entry {
        kind,
        to_endpoints,
        dev,
        identity: None,
    };
    stage_entry(hooks, st, entry, msg_type, at_ms, data)
}

/// `stage`, for a record with an identity of its own (a punch's).
#[allow(clippy::too_many_arguments)]
pub fn stage_identified(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    kind: Kind,
    dev: &uuid::Uuid,
    identity: [u8; 16],
    msg_type: &str,
    at_ms: u64,
    data: &str,
) -> Result<(), StoreError> {
    let to_endpoints = hooks.endpoints_want(kind);
    let entry = Entry {
        kind,
        to_endpoints,
        dev,
        identity: Some(identity),
    };
    stage_entry(hooks, st, entry, msg_type, at_ms, data)
}

/// A record's identity from its msg_id (JSON text as sent), distinct per kind of record.
pub fn msg_id_identity(tag: &[u8], msg_id: &str) -> [u8; 16] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(tag);
    h.update(msg_id.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// What an outbox entry is about.
struct Entry<'a> {
    kind: Kind,
    to_endpoints: bool,
    dev: &'a uuid::Uuid,
    identity: Option<[u8; 16]>,
}

fn stage_entry(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    e: Entry<'_>,
    msg_type: &str,
    at_ms: u64,
    data: &str,
) -> Result<(), StoreError> {
    let Entry {
        kind,
        to_endpoints,
        dev,
        identity,
    } = e;
    let exported = hooks.export.bits() & kind.bit() != 0;
    if !to_endpoints && (!exported || hooks.export.full()) {
        if exported {
            metrics::counter!("fleetgate_export_dropped_total").increment(1);
        }
        return Ok(());
    }
    if exported {
        // Every entry of an exported kind is published, whoever else takes it.
        hooks.export.staged.fetch_add(1, Ordering::AcqRel);
    }
    let id = hooks.take_id(st.store());
    let h = hooks.clone();
    st.on_resolve(move || h.settled(id));
    let mut v = Vec::with_capacity(80 + data.len());
    let flags = if to_endpoints { 0 } else { EXPORT_ONLY };
    let with_identity = if identity.is_some() { WITH_IDENTITY } else { 0 };
    v.push(kind.bit() | WITH_DEVICE | with_identity | flags);
    v.extend_from_slice(dev.as_bytes());
    if let Some(i) = identity {
        v.extend_from_slice(&i);
    }
    v.extend_from_slice(b"{\"type\":");
    let mut t = String::new();
    json::push_str(&mut t, msg_type);
    v.extend_from_slice(t.as_bytes());
    v.extend_from_slice(b",\"timestamp\":\"");
    v.extend_from_slice(rfc3339_ms(at_ms).as_bytes());
    v.extend_from_slice(b"\",\"data\":");
    v.extend_from_slice(data.as_bytes());
    v.push(b'}');
    st.put(Cf::WebhookOutbox, &id.to_be_bytes(), &v)?;
    metrics::counter!("fleetgate_webhook_messages_total").increment(1);
    Ok(())
}

/// Stages a message for the export alone (endpoints never see it), when the export takes `kind`.
pub fn stage_export(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    kind: Kind,
    dev: &uuid::Uuid,
    msg_type: &str,
    at_ms: u64,
    data: &str,
) -> Result<(), StoreError> {
    if hooks.export.bits() & kind.bit() == 0 {
        return Ok(());
    }
    let entry = Entry {
        kind,
        to_endpoints: false,
        dev,
        identity: None,
    };
    stage_entry(hooks, st, entry, msg_type, at_ms, data)
}

/// Stages a device's event (`records::stage_event`) and, when an endpoint takes events, its
/// `device.event` message with it.
#[allow(clippy::too_many_arguments)]
pub fn stage_device_event(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    id: u64,
    dev: &uuid::Uuid,
    kind: &str,
    payload: &str,
    msg_id: Option<&str>,
) -> Result<(), StoreError> {
    records::stage_event(st, id, Some(dev), kind, Source::Device, payload, msg_id)?;
    if hooks.wants(Kind::Events) {
        let data = records::event_json(id, Some(dev), kind, Source::Device, payload);
        let entry = Entry {
            kind: Kind::Events,
            to_endpoints: hooks.endpoints_want(Kind::Events),
            dev,
            identity: msg_id.map(|m| msg_id_identity(b"event", m)),
        };
        stage_entry(hooks, st, entry, "device.event", id / 1000, &data)?;
    }
    Ok(())
}

/// Stages a telemetry row's message (`{"device_id","ts","msg_id"?,"device_ts"?,"payload"}`) when
/// the export takes telemetry, or an endpoint does and the fleet-wide rate admits it; over the
/// rate an endpoint is not sent the row (it is stored, and counted), while the export takes every
/// row.
pub fn stage_telemetry(
    hooks: &Arc<Webhooks>,
    st: &mut Staging<'_>,
    dev: &uuid::Uuid,
    row: &str,
    msg_id: Option<&str>,
    at_ms: u64,
) -> Result<(), StoreError> {
    if !hooks.wants(Kind::Telemetry) {
        return Ok(());
    }
    let mut to_endpoints = hooks.endpoints_want(Kind::Telemetry);
    if to_endpoints && !hooks.telemetry_admits(now_us()) {
        metrics::counter!("fleetgate_webhook_telemetry_dropped_total").increment(1);
        to_endpoints = false;
    }
    let rest = row.strip_prefix('{').unwrap_or(row);
    let data = format!("{{\"device_id\":\"{dev}\",{rest}");
    let entry = Entry {
        kind: Kind::Telemetry,
        to_endpoints,
        dev,
        identity: msg_id.map(|m| msg_id_identity(b"telemetry", m)),
    };
    stage_entry(hooks, st, entry, "telemetry", at_ms, &data)
}

/// A message waiting for an endpoint or the export.
#[derive(Debug, PartialEq)]
pub struct Message {
    pub outbox_id: u64,
    pub kind: Kind,
    /// The device it is about (entries staged before the export began have none).
    pub device: Option<uuid::Uuid>,
    /// The record's own identity, when it has one (`WITH_IDENTITY`).
    pub identity: Option<[u8; 16]>,
    pub body: Vec<u8>,
}

/// An outbox entry's parts.
struct Decoded<'a> {
    kind: Kind,
    export_only: bool,
    device: Option<uuid::Uuid>,
    identity: Option<[u8; 16]>,
    body: &'a [u8],
}

fn decode_entry(v: &[u8]) -> Option<Decoded<'_>> {
    let (&first, rest) = v.split_first()?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.bit() == first & KIND_BITS)?;
    if first & WITH_DEVICE == 0 {
        let (export_only, device, identity, body) = (false, None, None, rest);
        return Some(Decoded {
            kind,
            export_only,
            device,
            identity,
            body,
        });
    }
    let (dev, mut body) = rest.split_at_checked(16)?;
    let device = Some(uuid::Uuid::from_slice(dev).ok()?);
    let mut identity = None;
    if first & WITH_IDENTITY != 0 {
        let (i, after) = body.split_at_checked(16)?;
        identity = Some(i.try_into().ok()?);
        body = after;
    }
    let export_only = first & EXPORT_ONLY != 0;
    Some(Decoded {
        kind,
        export_only,
        device,
        identity,
        body,
    })
}

/// What follows `cursor` and lies below `below` (`Webhooks::visible_below`) for an endpoint
/// taking `kinds`: the next message it takes, and the id the cursor may move to when the entries
/// before it were all skipped (or the look ran out of budget): `(None, Some(id))` means "nothing
/// yet, but skip to id".
pub fn next_message(
    store: &Store,
    cursor: u64,
    below: u64,
    kinds: &[Kind],
) -> Result<(Option<Message>, Option<u64>), StoreError> {
    let (mut found, skipped_to) = next_messages(store, cursor, below, kinds, false, 1)?;
    Ok((found.pop(), skipped_to))
}

/// Up to `max` messages of `kinds` after `cursor` and below `below`, for the export (which takes
/// the entries only it takes) or an endpoint (which skips them), and the id the cursor may move to
/// past entries skipped after the last one found.
pub fn next_messages(
    store: &Store,
    cursor: u64,
    below: u64,
    kinds: &[Kind],
    export: bool,
    max: usize,
) -> Result<(Vec<Message>, Option<u64>), StoreError> {
    let bits = kinds.iter().fold(0, |b, k| b | k.bit());
    let mut found = Vec::new();
    let mut skipped_to = None;
    let mut seen = 0;
    let from = cursor.saturating_add(1).to_be_bytes();
    store.visit_from(Cf::WebhookOutbox, &[], &from, |k, v| {
        seen += 1;
        let Some(id) = k.try_into().ok().map(u64::from_be_bytes) else {
            return Ok(true);
        };
        if id >= below {
            // Perhaps committed before an earlier message that is still in flight.
            return Ok(false);
        }
        match decode_entry(v) {
            Some(d) if d.kind.bit() & bits != 0 && (export || !d.export_only) => {
                found.push(Message {
                    outbox_id: id,
                    kind: d.kind,
                    device: d.device,
                    identity: d.identity,
                    body: d.body.to_vec(),
                });
                skipped_to = None;
                Ok(found.len() < max)
            }
            _ => {
                skipped_to = Some(id);
                Ok(seen < SCAN_BUDGET)
            }
        }
    })?;
    Ok((found, skipped_to))
}

/// How many entries the export has waiting after `cursor` (counted up to `limit`).
pub fn export_pending(store: &Store, cursor: u64, limit: u64) -> Result<u64, StoreError> {
    let bits = Export::KINDS.iter().fold(0, |b, k| b | k.bit());
    let mut n = 0;
    let from = cursor.saturating_add(1).to_be_bytes();
    store.visit_from(Cf::WebhookOutbox, &[], &from, |_, v| {
        if decode_entry(v).is_some_and(|d| d.device.is_some() && d.kind.bit() & bits != 0) {
            n += 1;
        }
        Ok(n < limit)
    })?;
    Ok(n)
}

/// The newest outbox id (0 when empty): where a new endpoint's cursor starts.
pub fn outbox_head(store: &Store) -> Result<u64, StoreError> {
    let mut head = 0;
    store.scan_reverse(Cf::WebhookOutbox, &[], None, 1, 1, |k, _| {
        head = k.try_into().ok().map_or(0, u64::from_be_bytes);
        Ok(false)
    })?;
    Ok(head)
}

/// A new secret: `whsec_` and 32 random bytes in base64, as Standard Webhooks writes them.
pub fn new_secret() -> Result<String, auth::RandomError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(auth::RandomError)?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b)
    ))
}

/// A new endpoint id.
pub fn new_id() -> Result<u64, auth::RandomError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(auth::RandomError)?;
    Ok(u64::from_be_bytes(b) >> 1)
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one for each
/// secret that signs, space-separated. None when a secret is not `whsec_` base64 (it never is:
/// the server makes them).
pub fn signature(secrets: &[&str], msg_id: &str, timestamp_s: i64, body: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    for secret in secrets {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_")?)
            .ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        out.push(format!("v1,{sig}"));
    }
    Some(out.join(" "))
}

/// The secrets that sign at `now_ms`: the current one, and the previous one for a day after a
/// rotation.
pub fn signing_secrets(c: &Config, now_ms: u64) -> Vec<&str> {
    let mut v = vec![c.secret.as_str()];
    if let Some((s, until)) = &c.previous_secret
        && now_ms < *until
    {
        v.push(s.as_str());
    }
    v
}

/// How long after the `failures`-th failure in a row the next attempt waits.
pub fn retry_delay_ms(failures: u32, min_ms: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(30);
    min_ms
        .saturating_mul(1u64 << shift)
        .min(MAX_RETRY_MS.max(min_ms))
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx (or, for ERPNext, a check-in it already has).
    Delivered { status: u16 },
    /// Not sent, and never will be (an ERPNext punch whose person has no external id): the cursor
    /// moves past it, and the log says why.
    Skipped { reason: String },
    /// Anything else: a status, or why there was none.
    Failed { status: Option<u16>, error: String },
}

/// The state after an attempt at `now_ms` on the message `outbox_id`: a delivery moves the cursor
/// and clears the failures; a failure schedules the next attempt, and disables the endpoint once
/// it has failed for `DISABLE_AFTER_MS` (Some(reason) in the second value).
pub fn after_attempt(
    mut s: State,
    outbox_id: u64,
    outcome: &Outcome,
    now_ms: u64,
    retry_min_ms: u64,
) -> (State, Option<String>) {
    match outcome {
        Outcome::Delivered { .. } | Outcome::Skipped { .. } => {
            s.cursor = s.cursor.max(outbox_id);
            s.failures = 0;
            s.failing_since = None;
            s.next_attempt_at = 0;
            if let Outcome::Delivered { status } = outcome {
                s.last_status = Some(*status);
            }
            s.last_error = None;
            (s, None)
        }
        Outcome::Failed { status, error } => {
            s.failures = s.failures.saturating_add(1);
            let since = *s.failing_since.get_or_insert(now_ms);
            s.next_attempt_at = now_ms + retry_delay_ms(s.failures, retry_min_ms);
            s.last_status = *status;
            s.last_error = Some(error.chars().take(256).collect());
            let disable =
                s.failures >= MIN_FAILURES && now_ms.saturating_sub(since) >= DISABLE_AFTER_MS;
            let reason = disable.then(|| {
                format!(
                    "every attempt failed for {} days ({} attempts); last: {}",
                    DISABLE_AFTER_MS / 86_400_000,
                    s.failures,
                    error
                )
            });
            if let Some(r) = &reason {
                s.disabled_reason = Some(r.clone());
            }
            (s, reason)
        }
    }
}

/// Writes an endpoint's state and the attempt's line in its delivery log, at once (the sender's
/// thread, outside any shard).
pub fn record_attempt(
    store: &Store,
    id: u64,
    s: &State,
    log: &str,
    at_us: u64,
) -> Result<(), StoreError> {
    let state = records::encode(s)?;
    crate::store::commit::write_now(store, |st| {
        st.put(Cf::Webhooks, &state_key(id), &state)?;
        st.put(
            Cf::WebhookDeliveries,
            &delivery_key(id, at_us),
            log.as_bytes(),
        )
    })
}

/// Writes an endpoint's state alone (a cursor moved past messages it does not take, a replay).
pub fn save_state(store: &Store, id: u64, s: &State) -> Result<(), StoreError> {
    let state = records::encode(s)?;
    crate::store::commit::write_now(store, |st| st.put(Cf::Webhooks, &state_key(id), &state))
}

/// Stages an endpoint's delivery state (a new endpoint's, with its configuration).
pub fn stage_state(st: &mut Staging<'_>, id: u64, s: &State) -> Result<(), StoreError> {
    st.put(Cf::Webhooks, &state_key(id), &records::encode(s)?)
}

/// Stages an endpoint's configuration.
pub fn stage_config(st: &mut Staging<'_>, c: &Config) -> Result<(), StoreError> {
    st.put(Cf::Webhooks, &config_key(c.id), &records::encode(c)?)
}

/// Stages an endpoint's removal, with its state and delivery log.
pub fn stage_delete(st: &mut Staging<'_>, id: u64) -> Result<(), StoreError> {
    st.delete(Cf::Webhooks, &config_key(id))?;
    st.delete(Cf::Webhooks, &state_key(id))?;
    st.delete_range(
        Cf::WebhookDeliveries,
        &delivery_key(id, 0),
        &delivery_key(id, u64::MAX),
    )
}

/// A delivery log line: `{"at","msg_id","type","attempt","status","latency_ms","error"}`.
pub fn log_line(
    at_ms: u64,
    msg_id: &str,
    msg_type: &str,
    attempt: u32,
    outcome: &Outcome,
    latency_ms: u64,
) -> String {
    let (status, error) = match outcome {
        Outcome::Delivered { status } => (Some(*status), None),
        Outcome::Skipped { reason } => (None, Some(reason.as_str())),
        Outcome::Failed { status, error } => (*status, Some(error.as_str())),
    };
    let mut s = format!(
        "{{\"at\":\"{}\",\"msg_id\":\"{msg_id}\",\"type\":",
        rfc3339_ms(at_ms)
    );
    json::push_str(&mut s, msg_type);
    s.push_str(&format!(",\"attempt\":{attempt},\"status\":"));
    match status {
        Some(c) => s.push_str(&c.to_string()),
        None => s.push_str("null"),
    }
    s.push_str(&format!(",\"latency_ms\":{latency_ms},\"error\":"));
    match error {
        Some(e) => json::push_str(&mut s, e),
        None => s.push_str("null"),
    }
    s.push('}');
    s
}

/// An endpoint's delivery log, newest first: at most `limit` lines from before the key `before`
/// (a page's cursor), and the next page's cursor.
pub fn deliveries(
    store: &Store,
    id: u64,
    before: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    let mut out = Vec::new();
    let next = store.scan_reverse(
        Cf::WebhookDeliveries,
        &id.to_be_bytes(),
        before,
        limit,
        limit,
        |_, v| {
            out.push(String::from_utf8_lossy(v).into_owned());
            Ok(true)
        },
    )?;
    Ok((out, next))
}

/// Deletes outbox entries and delivery log lines older than `retain_ms` (the sender runs it
/// now and then).
pub fn sweep(store: &Store, retain_ms: u64) -> Result<(), StoreError> {
    let cut_us = now_ms().saturating_sub(retain_ms).saturating_mul(1000);
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        store.scan_forward(Cf::Webhooks, b"c", None, usize::MAX, |k, _| {
            if let Some(id) = k.get(1..9).and_then(|b| b.try_into().ok()) {
                v.push(u64::from_be_bytes(id));
            }
            Ok(true)
        })?;
        v
    };
    crate::store::commit::write_now(store, |st| {
        st.delete_range(
            Cf::WebhookOutbox,
            &0u64.to_be_bytes(),
            &cut_us.to_be_bytes(),
        )?;
        for id in &ids {
            st.delete_range(
                Cf::WebhookDeliveries,
                &delivery_key(*id, 0),
                &delivery_key(*id, cut_us),
            )?;
        }
        Ok(())
    })
}

/// The API's JSON of an endpoint (never its secret, nor ERPNext's API secret).
pub fn to_json(e: &Endpoint) -> String {
    let c = e.config();
    let s = e.state().clone();
    let mut out = format!("{{\"id\":\"{}\",\"url\":", public_id(c.id));
    json::push_str(&mut out, &c.url);
    out.push_str(",\"events\":[");
    for (i, k) in c.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{}\"", k.as_str()));
    }
    out.push_str("],\"preset\":");
    match &c.preset {
        Preset::Standard => out.push_str("\"standard\""),
        Preset::Erpnext { .. } => out.push_str("\"erpnext\""),
    }
    out.push_str(&format!(",\"enabled\":{},\"description\":", c.enabled));
    match &c.description {
        Some(d) => json::push_str(&mut out, d),
        None => out.push_str("null"),
    }
    out.push_str(&format!(
        ",\"created_at\":\"{}\",\"updated_at\":\"{}\",\"delivery\":{{\"failures\":{},\"failing_since\":",
        rfc3339_ms(c.created_at),
        rfc3339_ms(c.updated_at),
        s.failures
    ));
    match s.failing_since {
        Some(t) => out.push_str(&format!("\"{}\"", rfc3339_ms(t))),
        None => out.push_str("null"),
    }
    out.push_str(",\"next_attempt_at\":");
    match s.next_attempt_at {
        0 => out.push_str("null"),
        t => out.push_str(&format!("\"{}\"", rfc3339_ms(t))),
    }
    out.push_str(",\"last_status\":");
    match s.last_status {
        Some(c) => out.push_str(&c.to_string()),
        None => out.push_str("null"),
    }
    out.push_str(",\"last_error\":");
    match &s.last_error {
        Some(e) => json::push_str(&mut out, e),
        None => out.push_str("null"),
    }
    out.push_str(",\"disabled_reason\":");
    match &s.disabled_reason {
        Some(r) => json::push_str(&mut out, r),
        None => out.push_str("null"),
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp::TempStore;

    const DEV: uuid::Uuid = uuid::Uuid::from_u128(7);

    /// The export takes every record of its kinds, with the device it is about, in outbox order,
    /// beside endpoints that each see only what they take: an entry only the export takes never
    /// reaches an endpoint, and telemetry over the endpoints' rate still reaches the export.
    #[test]
    fn the_export_takes_every_record_and_endpoints_only_theirs() {
        let tmp = TempStore::open("webhooks-export", false).expect("store");
        let store = tmp.store().clone();
        let hooks = Arc::new(Webhooks::default().with_telemetry_rate(1));
        hooks.added(standard(1, vec![Kind::Telemetry]), 0);
        hooks.export.start(1000, 0);
        crate::store::commit::write_now(&store, |st| {
            for n in 0..5 {
                let msg_id = format!("\"t{n}\"");
                let row = format!("{{\"n\":{n}}}");
                stage_telemetry(&hooks, st, &DEV, &row, Some(&msg_id), 1)?;
            }
            stage(&hooks, st, Kind::Events, &DEV, "device.event", 2, "{}")?;
            stage(
                &hooks,
                st,
                Kind::DeviceStatus,
                &DEV,
                "device.online",
                3,
                "{}",
            )
        })
        .expect("write");
        let below = hooks.visible_below();
        let (all, _) = next_messages(&store, 0, below, &Export::KINDS, true, 100).expect("scan");
        let kinds: Vec<Kind> = all.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [[Kind::Telemetry; 5].as_slice(), &[Kind::Events]].concat()
        );
        assert!(all.iter().all(|m| m.device == Some(DEV)));
        // Telemetry is named by its msg_id, the same on whichever node stores it; the event
        // without one by its place in this node's outbox.
        assert_eq!(
            all[0].identity,
            Some(msg_id_identity(b"telemetry", "\"t0\""))
        );
        assert_ne!(all[0].identity, all[1].identity);
        assert_eq!(all[5].identity, None);
        assert!(all.windows(2).all(|w| w[0].outbox_id < w[1].outbox_id));
        assert_eq!(hooks.export.lag(), 6, "device status is not exported");
        // The endpoint's rate (1/s, a burst of one) let only the first telemetry row through.
        let mut cursor = 0;
        let mut seen = Vec::new();
        while let (Some(m), _) =
            next_message(&store, cursor, below, &[Kind::Telemetry]).expect("scan")
        {
            cursor = m.outbox_id;
            seen.push(String::from_utf8_lossy(&m.body).into_owned());
        }
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("\"n\":0"), "{seen:?}");
        hooks.export.published(6);
        assert_eq!(hooks.export.lag(), 0);
    }

    /// Past its bound the export stops taking records (they are still stored): the outbox does
    /// not grow without end while NATS is away.
    #[test]
    fn the_export_stops_growing_at_its_bound() {
        let tmp = TempStore::open("webhooks-export-bound", false).expect("store");
        let store = tmp.store().clone();
        let hooks = Arc::new(Webhooks::default());
        hooks.export.start(3, 1);
        crate::store::commit::write_now(&store, |st| {
            for _ in 0..5 {
                stage(&hooks, st, Kind::Events, &DEV, "device.event", 2, "{}")?;
            }
            Ok(())
        })
        .expect("write");
        assert_eq!(export_pending(&store, 0, 100).expect("count"), 2);
        assert_eq!(hooks.export.lag(), 3);
    }

    /// The Standard Webhooks spec's own example: secret, id, timestamp, body and signature.
    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        let two = signature(&[secret, secret], "m", 1, b"x").expect("signs");
        assert_eq!(two.split(' ').count(), 2);
        assert_eq!(signature(&["nope"], "m", 1, b"x"), None);
    }

    #[test]
    fn retries_grow_to_an_hour_and_an_endpoint_failing_for_days_is_disabled() {
        assert_eq!(retry_delay_ms(1, 5_000), 5_000);
        assert_eq!(retry_delay_ms(2, 5_000), 10_000);
        assert_eq!(retry_delay_ms(5, 5_000), 80_000);
        assert_eq!(retry_delay_ms(40, 5_000), MAX_RETRY_MS);
        let fail = Outcome::Failed {
            status: Some(503),
            error: "HTTP 503".into(),
        };
        let mut s = State::default();
        let mut now = 1_000;
        let mut reason = None;
        while reason.is_none() {
            let (next, r) = after_attempt(s, 7, &fail, now, 5_000);
            assert_eq!(next.cursor, 0, "a failure never moves the cursor");
            now = next.next_attempt_at;
            s = next;
            reason = r;
        }
        assert!(s.failures >= MIN_FAILURES);
        assert!(now - 1_000 >= DISABLE_AFTER_MS);
        assert!(s.disabled_reason.is_some());
        let (ok, none) = after_attempt(s, 7, &Outcome::Delivered { status: 204 }, now, 5_000);
        assert_eq!((ok.cursor, ok.failures, ok.failing_since), (7, 0, None));
        assert_eq!(none, None);
    }

    #[test]
    fn telemetry_messages_keep_to_their_rate() {
        let hooks = Webhooks::default().with_telemetry_rate(10);
        let t0 = 5_000_000;
        let burst = (0..100).filter(|_| hooks.telemetry_admits(t0)).count();
        assert_eq!(burst, 10, "a second's worth at once");
        assert!(!hooks.telemetry_admits(t0 + 50_000));
        assert!(
            hooks.telemetry_admits(t0 + 100_000),
            "one more each tenth of a second"
        );
        assert!(!hooks.telemetry_admits(t0 + 100_000));
        let later = (0..100)
            .filter(|_| hooks.telemetry_admits(t0 + 60_000_000))
            .count();
        assert_eq!(later, 10, "an idle minute is not saved up");
    }

    /// An enabled Standard Webhooks endpoint taking `events`.
    fn standard(id: u64, events: Vec<Kind>) -> Config {
        Config {
            id,
            url: "http://x".into(),
            events,
            preset: Preset::Standard,
            secret: "whsec_AA==".into(),
            previous_secret: None,
            enabled: true,
            description: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Nothing committed is missed across shards: a message whose batch commits after a later
    /// one's is not stepped over, because a sender reads only below the oldest one in flight.
    #[test]
    fn a_late_commit_is_never_stepped_over() {
        use crate::fleet::shard_stub::with_batcher;
        let tmp = TempStore::open("webhooks-late", false).expect("store");
        let store = tmp.store().clone();
        let hooks = Arc::new(Webhooks::default());
        hooks.added(standard(1, vec![Kind::Attendance]), 0);
        let kinds = [Kind::Attendance];
        with_batcher(&store, async |batcher| {
            // A shard stages message A; its batch has not committed yet.
            let slow = batcher
                .stage(|st| {
                    stage(
                        &hooks,
                        st,
                        Kind::Attendance,
                        &DEV,
                        "attendance.punch",
                        1,
                        "{}",
                    )
                })
                .expect("stage");
            // Another shard's message B, later, commits first.
            crate::store::commit::write_now(&store, |st| {
                stage(
                    &hooks,
                    st,
                    Kind::Attendance,
                    &DEV,
                    "attendance.punch",
                    2,
                    "{}",
                )
            })
            .expect("write");
            let (none, skip) =
                next_message(&store, 0, hooks.visible_below(), &kinds).expect("scan");
            assert_eq!((none, skip), (None, None), "B waits behind A");
            assert!(slow.wait().await);
            let (a, _) = next_message(&store, 0, hooks.visible_below(), &kinds).expect("scan");
            let a = a.expect("A, now committed");
            let (b, _) =
                next_message(&store, a.outbox_id, hooks.visible_below(), &kinds).expect("scan");
            assert!(b.expect("then B").outbox_id > a.outbox_id);
        });
    }

    /// Nothing committed is missed, where it lives: a message staged with its record is found by
    /// an endpoint taking its kind, in order, and skipped by one that does not take it.
    #[test]
    fn the_outbox_gives_each_endpoint_its_kinds_in_order() {
        let tmp = TempStore::open("webhooks", false).expect("store");
        let store = tmp.store().clone();
        let hooks = Arc::new(Webhooks::default());
        hooks.added(standard(1, vec![Kind::Attendance, Kind::CommandResults]), 0);
        assert!(hooks.wants(Kind::Attendance) && !hooks.wants(Kind::Events));
        // No endpoint takes events yet: none is staged.
        crate::store::commit::write_now(&store, |st| {
            stage(&hooks, st, Kind::Events, &DEV, "device.event", 0, "{}")
        })
        .expect("write");
        assert_eq!(outbox_head(&store).expect("head"), 0);
        let mut events = hooks.get(1).expect("endpoint").config();
        events.id = 2;
        events.events = vec![Kind::Events];
        hooks.added(events, 0);
        crate::store::commit::write_now(&store, |st| {
            stage(
                &hooks,
                st,
                Kind::Attendance,
                &DEV,
                "attendance.punch",
                1,
                "{\"n\":1}",
            )?;
            stage(
                &hooks,
                st,
                Kind::Events,
                &DEV,
                "device.event",
                2,
                "{\"n\":2}",
            )?;
            stage(
                &hooks,
                st,
                Kind::CommandResults,
                &DEV,
                "command.result",
                3,
                "{\"n\":3}",
            )
        })
        .expect("write");
        let (first, _) = next_message(
            &store,
            0,
            hooks.visible_below(),
            &[Kind::Attendance, Kind::CommandResults],
        )
        .expect("scan");
        let first = first.expect("a message");
        assert_eq!(first.kind, Kind::Attendance);
        assert!(first.body.ends_with(b",\"data\":{\"n\":1}}"));
        let (second, _) = next_message(
            &store,
            first.outbox_id,
            hooks.visible_below(),
            &[Kind::Attendance, Kind::CommandResults],
        )
        .expect("scan");
        let second = second.expect("a message");
        assert_eq!(
            second.kind,
            Kind::CommandResults,
            "the event is not its kind"
        );
        assert!(
            second.outbox_id > first.outbox_id + 1,
            "the event between was skipped"
        );
        let (none, skipped) = next_message(
            &store,
            second.outbox_id,
            hooks.visible_below(),
            &[Kind::Attendance],
        )
        .expect("scan");
        assert_eq!((none, skipped), (None, None));
        let (events, _) =
            next_message(&store, 0, hooks.visible_below(), &[Kind::Events]).expect("scan");
        assert_eq!(events.map(|m| m.kind), Some(Kind::Events));
        // Past the last message it takes, an endpoint's cursor may skip what it does not take.
        let (none, skipped) = next_message(
            &store,
            first.outbox_id,
            hooks.visible_below(),
            &[Kind::Attendance],
        )
        .expect("scan");
        assert_eq!((none, skipped), (None, Some(second.outbox_id)));
        assert_eq!(outbox_head(&store).expect("head"), second.outbox_id);
    }
}
