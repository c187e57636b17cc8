//! `GET /api/attendance` (JSON pages), `GET /api/attendance.csv` (streamed), and photos.

use std::sync::Arc;

use simd_json::prelude::*;
use uuid::Uuid;

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::history;
use crate::api::page::key_page;
use crate::api::query::Query;
use crate::fleet::attendance::{self, csv_field};
use crate::fleet::auth;
use crate::fleet::people::People;
use crate::fleet::retention::{Cutoffs, Kind};
use crate::http::response::Response;
use crate::shard::handler::{ChunkSource, Chunked};
use crate::store::{Cf, Store, StoreError};
use crate::time::now_us;

/// Rows a filtered page may examine before returning with a cursor.
const SCAN_BUDGET: usize = 20_000;
/// Rows per chunk of a CSV export: the export holds one chunk in memory at a time.
pub const CSV_CHUNK: usize = 1000;

pub const CSV_HEADER: &str = "device_id,serial,enrollid,local_time,utc_time,received_at,mode,inout,event,temp,verifymode,name,photo_url,person_name,person_external_id\r\n";

/// The filters of both the JSON list and the CSV export.
#[derive(Clone, Debug)]
pub struct Filter {
    device: Option<Uuid>,
    enrollid: Option<u64>,
    from_us: Option<u64>,
    to_us: Option<u64>,
    /// Punches past their retention are never returned, swept or not.
    kept: Cutoffs,
}

impl Filter {
    pub fn parse(cx: &Ctx<'_>) -> Result<Filter, ApiError> {
        let q = &cx.query;
        let time = |name: &str| {
            q.time_us(
                name,
                &format!("{name} must be an RFC 3339 time such as 2026-06-12T00:00:00Z"),
            )
        };
        Ok(Filter {
            device: q.uuid("device_id")?,
            enrollid: q.u64("enrollid")?,
            from_us: time("from")?,
            to_us: time("to")?,
            kept: {
                let fleet = cx.local.fleet();
                let retention = &fleet.rules.retention;
                Cutoffs::of(&fleet.registry, retention, Kind::Attendance, now_us())
            },
        })
    }

    fn prefix(&self) -> Vec<u8> {
        self.device
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default()
    }

    pub fn cursor(&self, q: &Query) -> Result<Option<Vec<u8>>, ApiError> {
        q.key_cursor(&self.prefix())
    }
}

/// One page, newest first: the items' JSON and the key to continue from.
pub fn scan(
    store: &Store,
    f: &Filter,
    before: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    let mut items = Vec::new();
    let mut past_from = false;
    let mut keep = |dev: &Uuid, utc_us: u64, v: &[u8]| -> bool {
        if f.from_us.is_some_and(|from| utc_us < from) {
            past_from = true;
            return false;
        }
        if !f.kept.keeps(Some(dev), utc_us) {
            return false;
        }
        // The punch's own enrollid, compared exactly: an `"enrollid"` nested in the device's
        // fields must not make a record match.
        if f.enrollid.is_some() && attendance::item_enrollid(v) != f.enrollid {
            return false;
        }
        items.push(String::from_utf8_lossy(v).into_owned());
        true
    };
    let next = match f.device {
        Some(d) => {
            let upper = f
                .to_us
                .map(|t| attendance::key(&d, t.saturating_add(1), &[0; 16]).to_vec());
            let before = lower_of(before, upper.as_deref());
            let floor = f
                .kept
                .of_device(Some(&d))
                .map(|c| attendance::key(&d, c, &[0; 16]));
            store.scan_reverse_above(
                Cf::Attendance,
                d.as_bytes(),
                before.as_deref(),
                floor.as_ref().map(|k| &k[..]),
                limit,
                SCAN_BUDGET,
                |k, v| {
                    let utc = crate::store::keys::suffix_u64(&k[..24]).unwrap_or(0);
                    Ok(keep(&d, utc, v))
                },
            )?
        }
        None => {
            let upper = f.to_us.map(|t| t.saturating_add(1).to_be_bytes().to_vec());
            let before = lower_of(before, upper.as_deref());
            store.scan_reverse(
                Cf::AttendanceByTime,
                &[],
                before.as_deref(),
                limit,
                SCAN_BUDGET,
                |k, _| {
                    let Some(primary) = attendance::primary_from_time_key(k) else {
                        return Ok(false);
                    };
                    let utc = crate::store::keys::suffix_u64(&primary[..24]).unwrap_or(0);
                    let Some(dev) = crate::store::keys::uuid_prefix(&primary) else {
                        return Ok(false);
                    };
                    match store.get(Cf::Attendance, &primary)? {
                        Some(v) => Ok(keep(&dev, utc, &v)),
                        None => Ok(false),
                    }
                },
            )?
        }
    };
    Ok((items, if past_from { None } else { next }))
}

fn lower_of(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b).to_vec()),
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (None, None) => None,
    }
}

/// A stored punch's item with its `person` (`{"name","external_id"}` from the people registry,
/// as it is now) when its PIN has one: added at read time, so a person renamed or added later
/// shows on every punch.
fn with_person(item: String, people: &People) -> String {
    let person = attendance::item_enrollid(item.as_bytes()).and_then(|pin| people.on_punch(pin));
    match (person, item.strip_suffix('}')) {
        (Some(p), Some(body)) => format!("{body},\"person\":{p}}}"),
        _ => item,
    }
}

pub async fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let f = Filter::parse(cx)?;
    let limit = cx.query.limit()?;
    let before = f.cursor(&cx.query)?;
    let fleet = cx.local.fleet();
    let (items, next) = match f.device {
        // One device's punches: in a cluster, what other nodes stored for it is merged in.
        Some(device) => {
            let read = history::Read {
                what: history::What::Attendance,
                device,
                before,
                from_us: f.from_us,
                to_us: f.to_us,
                event_type: None,
                enrollid: f.enrollid,
                limit,
            };
            history::page(fleet, read).await?
        }
        None => scan(&fleet.store, &f, before.as_deref(), limit)?,
    };
    let items: Vec<String> = items
        .into_iter()
        .map(|it| with_person(it, &fleet.people))
        .collect();
    Ok(key_page(&items, next))
}

/// A CSV export in progress: the filter and where the next chunk starts.
struct CsvExport {
    store: Arc<Store>,
    people: Arc<People>,
    filter: Filter,
    header_sent: bool,
    next: Option<Vec<u8>>,
    done: bool,
}

impl ChunkSource for CsvExport {
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        if !self.header_sent {
            self.header_sent = true;
            out.extend_from_slice(CSV_HEADER.as_bytes());
        }
        self.rows(out).map_err(|e| e.to_string())
    }
}

impl CsvExport {
    /// Appends the next chunk of rows to `out`; `Ok(false)` once the export is complete.
    fn rows(&mut self, out: &mut Vec<u8>) -> Result<bool, StoreError> {
        if self.done {
            return Ok(false);
        }
        let (items, next) = scan(&self.store, &self.filter, self.next.as_deref(), CSV_CHUNK)?;
        let mut s = String::with_capacity(items.len() * 160);
        for it in items {
            let mut b = it.into_bytes();
            let Ok(v) = simd_json::to_borrowed_value(&mut b) else {
                continue;
            };
            let field = |k: &str| -> String {
                match v.get(k) {
                    None => String::new(),
                    Some(x) if x.is_str() => x.as_str().unwrap_or("").to_string(),
                    Some(x) if x.is_null() => String::new(),
                    Some(x) => crate::json::encode(x),
                }
            };
            let dev_field = |k: &str| -> String {
                match v.get("fields").and_then(|f| f.get(k)) {
                    None => String::new(),
                    Some(x) if x.is_str() => x.as_str().unwrap_or("").to_string(),
                    Some(x) => crate::json::encode(x),
                }
            };
            let cols = [
                field("device_id"),
                field("serial"),
                field("enrollid"),
                field("local_time"),
                field("utc_time"),
                field("received_at"),
                dev_field("mode"),
                dev_field("inout"),
                dev_field("event"),
                dev_field("temp"),
                dev_field("verifymode"),
                dev_field("name"),
                field("photo_url"),
            ];
            let person = v
                .get("enrollid")
                .and_then(|x| x.as_u64())
                .and_then(|pin| self.people.get(pin));
            let cols = cols.into_iter().chain([
                person.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                person.and_then(|p| p.external_id).unwrap_or_default(),
            ]);
            for (i, c) in cols.enumerate() {
                if i > 0 {
                    s.push(',');
                }
                csv_field(&mut s, &c);
            }
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
        self.done = next.is_none();
        self.next = next;
        Ok(true)
    }
}

/// The `attendance.csv` download, streamed one chunk of rows at a time.
pub fn csv(cx: &Ctx<'_>) -> Result<Chunked, ApiError> {
    let filter = Filter::parse(cx)?;
    Ok(Chunked {
        content_type: "text/csv; charset=utf-8",
        filename: Some("attendance.csv"),
        body: Box::new(CsvExport {
            store: cx.local.fleet().store.clone(),
            people: cx.local.fleet().people.clone(),
            filter,
            header_sent: false,
            next: None,
            done: false,
        }),
    })
}

pub fn photo(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let no_photo = || ApiError::not_found("no such photo");
    let key = auth::unhex(cx.param("id"))
        .filter(|k| k.len() == 32)
        .ok_or_else(no_photo)?;
    // A photo goes with its punch: past the punch's retention it is gone, swept or not.
    let dev = crate::store::keys::uuid_prefix(&key).ok_or_else(no_photo)?;
    let utc = crate::store::keys::suffix_u64(&key[..24]).ok_or_else(no_photo)?;
    let fleet = cx.local.fleet();
    let cutoff = fleet.rules.retention.cutoff_us(
        Kind::Attendance,
        fleet.registry.get(&dev).as_deref(),
        now_us(),
    );
    if cutoff.is_some_and(|c| utc < c) {
        return Err(no_photo());
    }
    let jpeg = cx
        .local
        .fleet()
        .store
        .get(Cf::Photos, &key)?
        .ok_or_else(no_photo)?;
    Ok(Response::text(200, "image/jpeg", jpeg))
}
