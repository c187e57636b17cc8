//! `GET /api/events?device_id&type&limit&cursor`: the event stream, newest first.

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::history;
use crate::api::page::key_page;
use crate::fleet::retention::{Cutoffs, Kind};
use crate::http::response::Response;
use crate::store::{Cf, keys};
use crate::time::now_us;

/// Rows a filtered page may examine before it returns what it found with a cursor, so a rare
/// `type` never turns one request into a scan of the whole history.
const SCAN_BUDGET: usize = 20_000;

pub async fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let q = &cx.query;
    let limit = q.limit()?;
    let kind = q.given("type");
    let type_matches = |v: &[u8]| history::type_matches(v, kind);
    let fleet = cx.local.fleet();
    let store = &fleet.store;
    let retention = &fleet.rules.retention;
    let now = now_us();
    let mut items = Vec::new();
    let next = match q.uuid("device_id")? {
        Some(dev) => {
            // One device's events: in a cluster, what other nodes stored for it is merged in.
            let read = history::Read {
                what: history::What::Events,
                device: dev,
                before: q.key_cursor(&keys::device(&dev))?,
                from_us: None,
                to_us: None,
                event_type: kind.map(str::to_string),
                enrollid: None,
                limit,
            };
            let (items, next) = history::page(fleet, read).await?;
            return Ok(key_page(&items, next));
        }
        None => {
            let before = q.key_cursor(&[])?;
            // Events of devices that keep them longer than the default are still in the stream.
            let kept = Cutoffs::of(&fleet.registry, retention, Kind::Events, now);
            let floor = kept.oldest().map(keys::event);
            store.scan_reverse_above(
                Cf::Events,
                &[],
                before.as_deref(),
                floor.as_ref().map(|f| &f[..]),
                limit,
                SCAN_BUDGET,
                |k, v| {
                    let id = keys::suffix_u64(k).unwrap_or(0);
                    if type_matches(v) && kept.keeps(device_of(v).as_ref(), id) {
                        items.push(String::from_utf8_lossy(v).into_owned());
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                },
            )
        }
    }?;
    Ok(key_page(&items, next))
}

/// The `device_id` an event names, read from its stored JSON.
pub(super) fn device_of(v: &[u8]) -> Option<uuid::Uuid> {
    let mut b = v.to_vec();
    let x = simd_json::to_borrowed_value(&mut b).ok()?;
    crate::json::get_str(&x, "device_id")?.parse().ok()
}
