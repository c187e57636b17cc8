//! NDJSON exports, oldest first, one JSON object a line: `GET /api/devices/{id}/telemetry.ndjson`
//! and `GET /api/events.ndjson`, each with `from`/`to` (RFC 3339, inclusive, on the receive time
//! as the lists filter), and never a record past its retention (`fleet::retention`). Streamed like the attendance CSV: each chunk is one bounded range scan,
//! written before the next is read, so memory stays flat whatever the range holds.

use std::sync::Arc;

use uuid::Uuid;

use crate::api::context::Ctx;
use crate::api::devices::device;
use crate::api::error::ApiError;
use crate::api::events;
use crate::api::query::Query;
use crate::fleet::retention::{Cutoffs, Kind};
use crate::shard::handler::{ChunkSource, Chunked};
use crate::store::{Cf, Store, StoreError, keys};
use crate::time::now_us;

/// A chunk ends after this many rows, or once it holds this many bytes (one row may pass it by
/// up to `--max-message`).
const CHUNK_ROWS: usize = 1000;
const CHUNK_BYTES: usize = 256 * 1024;

pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// `from` and `to` as receive times in µs: the first included and the first after the range.
fn range(q: &Query) -> Result<(u64, u64), ApiError> {
    let bound = |name: &str| {
        q.time_us(
            name,
            &format!("{name} must be an RFC 3339 time such as 2026-06-12T00:00:00Z"),
        )
    };
    let (from, to) = (bound("from")?.unwrap_or(0), bound("to")?);
    if to.is_some_and(|t| t < from) {
        return Err(ApiError::invalid_query("from is after to"));
    }
    Ok((from, to.map_or(u64::MAX, |t| t.saturating_add(1))))
}

/// What the rows of an export are, and so how each becomes a line.
enum Rows {
    /// `telemetry` rows of one device, whose id (as the JSON each line starts with) they lack:
    /// `{"device_id","ts","device_ts"?,"payload"}`.
    Telemetry { device: String },
    /// `events` rows, as the list shows them; those past their device's retention are left out
    /// (the cut-offs as of the request: the global one, and each overriding device's).
    Events(Cutoffs),
    /// `events_by_device` index entries (device ‖ event id), each line the event it names.
    DeviceEvents,
}

impl Rows {
    fn cf(&self) -> Cf {
        match self {
            Rows::Telemetry { .. } => Cf::Telemetry,
            Rows::Events(_) => Cf::Events,
            Rows::DeviceEvents => Cf::EventsByDevice,
        }
    }

    fn line(&self, store: &Store, k: &[u8], v: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
        match self {
            Rows::Telemetry { device } => {
                let rest = v.strip_prefix(b"{").ok_or_else(|| {
                    StoreError::Corrupt("a telemetry row that is no JSON object".into())
                })?;
                out.extend_from_slice(device.as_bytes());
                if rest != b"}" {
                    out.push(b',');
                }
                out.extend_from_slice(rest);
            }
            Rows::Events(kept) => {
                let id = keys::suffix_u64(k).unwrap_or(0);
                if !kept.keeps(events::device_of(v).as_ref(), id) {
                    return Ok(());
                }
                out.extend_from_slice(v);
            }
            Rows::DeviceEvents => {
                let id = keys::suffix_u64(k)
                    .ok_or_else(|| StoreError::Corrupt("a short events_by_device key".into()))?;
                // The index entry commits with its event, so a missing event is none.
                let Some(event) = store.get(Cf::Events, &keys::event(id))? else {
                    return Ok(());
                };
                out.extend_from_slice(&event);
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

/// A range of rows read a chunk at a time: where the next chunk starts and where the range ends.
struct Export {
    store: Arc<Store>,
    rows: Rows,
    next: Option<Vec<u8>>,
    end: Vec<u8>,
}

impl ChunkSource for Export {
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        let Some(from) = self.next.take() else {
            return Ok(false);
        };
        let mut taken = 0;
        let (store, rows) = (&self.store, &self.rows);
        self.next = store
            .scan_range(rows.cf(), &from, &self.end, |k, v| {
                rows.line(store, k, v, out)?;
                taken += 1;
                Ok(taken < CHUNK_ROWS && out.len() < CHUNK_BYTES)
            })
            .map_err(|e| e.to_string())?;
        Ok(self.next.is_some())
    }
}

fn ndjson(body: Export, filename: &'static str) -> Chunked {
    Chunked {
        content_type: CONTENT_TYPE,
        filename: Some(filename),
        body: Box::new(body),
    }
}

/// `GET /api/devices/{id}/telemetry.ndjson?from&to`
pub fn telemetry(cx: &Ctx<'_>) -> Result<Chunked, ApiError> {
    let dev = device(cx)?;
    let id = dev.id;
    let (from, end) = range(&cx.query)?;
    // Nothing past the device's retention, swept or not.
    let retention = &cx.local.fleet().rules.retention;
    let from = from.max(
        retention
            .cutoff_us(Kind::Telemetry, Some(&dev), now_us())
            .unwrap_or(0),
    );
    Ok(ndjson(
        Export {
            store: cx.local.fleet().store.clone(),
            rows: Rows::Telemetry {
                device: format!("{{\"device_id\":\"{id}\""),
            },
            next: Some(keys::telemetry(&id, from).to_vec()),
            end: end_key(&id, end),
        },
        "telemetry.ndjson",
    ))
}

/// `GET /api/events.ndjson?device_id&from&to`
pub fn events(cx: &Ctx<'_>) -> Result<Chunked, ApiError> {
    let (from, end) = range(&cx.query)?;
    let fleet = cx.local.fleet();
    let (retention, now) = (&fleet.rules.retention, now_us());
    let store = fleet.store.clone();
    let body = match cx.query.uuid("device_id")? {
        Some(dev) => {
            let device = fleet.registry.get(&dev);
            let kept = retention.cutoff_us(Kind::Events, device.as_deref(), now);
            Export {
                store,
                rows: Rows::DeviceEvents,
                next: Some(keys::event_by_device(&dev, from.max(kept.unwrap_or(0))).to_vec()),
                end: end_key(&dev, end),
            }
        }
        None => {
            let kept = Cutoffs::of(&fleet.registry, retention, Kind::Events, now);
            // The stream starts at the oldest cut-off any device still keeps.
            let oldest = kept.oldest().unwrap_or(0);
            Export {
                store,
                rows: Rows::Events(kept),
                next: Some(keys::event(from.max(oldest)).to_vec()),
                end: end_bytes(end),
            }
        }
    };
    Ok(ndjson(body, "events.ndjson"))
}

/// The first key after a device's range: its prefix with the end time, or past all its keys
/// when the range is open.
fn end_key(dev: &Uuid, end: u64) -> Vec<u8> {
    let mut k = keys::device(dev).to_vec();
    k.extend_from_slice(&end_bytes(end));
    k
}

/// An exclusive end of `u64::MAX` stands for "no end": a key one byte longer sorts after every
/// 8-byte suffix.
fn end_bytes(end: u64) -> Vec<u8> {
    let mut b = end.to_be_bytes().to_vec();
    if end == u64::MAX {
        b.push(0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_checked() {
        assert_eq!(range(&Query::parse("")), Ok((0, u64::MAX)));
        assert_eq!(
            range(&Query::parse(
                "from=1970-01-01T00:00:01Z&to=1970-01-01T00:00:02Z"
            )),
            Ok((1_000_000, 2_000_001))
        );
        let e = range(&Query::parse(
            "from=1970-01-01T00:00:02Z&to=1970-01-01T00:00:01Z",
        ))
        .expect_err("backwards");
        assert_eq!((e.status, e.message.as_str()), (400, "from is after to"));
        let e = range(&Query::parse("to=yesterday")).expect_err("not a time");
        assert_eq!(
            e.message,
            "to must be an RFC 3339 time such as 2026-06-12T00:00:00Z"
        );
    }

    #[test]
    fn an_open_end_sorts_after_every_key_of_its_prefix() {
        let d = Uuid::from_u128(7);
        assert!(keys::telemetry(&d, u64::MAX).as_slice() < end_key(&d, u64::MAX).as_slice());
        assert!(
            end_key(&d, u64::MAX).as_slice() < keys::telemetry(&Uuid::from_u128(8), 0).as_slice()
        );
        assert!(keys::event(u64::MAX).as_slice() < end_bytes(u64::MAX).as_slice());
        assert_eq!(end_key(&d, 5).as_slice(), keys::telemetry(&d, 5).as_slice());
    }
}
