//! `GET /api/events?device_id&type&limit&cursor`: the event stream, newest first.

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::key_page;
use crate::fleet::retention::{Cutoffs, Kind};
use crate::http::response::Response;
use crate::store::{Cf, keys};
use crate::time::now_us;

/// Rows a filtered page may examine before it returns what it found with a cursor, so a rare
/// `type` never turns one request into a scan of the whole history.
const SCAN_BUDGET: usize = 20_000;

pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let q = &cx.query;
    let limit = q.limit()?;
    let kind = q.given("type");
    let type_matches = |v: &[u8]| -> bool {
        let Some(kind) = kind else { return true };
        // Cheap pre-check on the stored text, then an exact check on the parsed field.
        let needle = crate::json::quote(kind);
        if !v.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return false;
        }
        let mut b = v.to_vec();
        simd_json::to_borrowed_value(&mut b)
            .ok()
            .and_then(|x| crate::json::get_str(&x, "type").map(|t| t == kind))
            .unwrap_or(false)
    };
    let fleet = cx.local.fleet();
    let store = &fleet.store;
    let retention = &fleet.rules.retention;
    let now = now_us();
    let mut items = Vec::new();
    let next = match q.uuid("device_id")? {
        Some(dev) => {
            let prefix = keys::device(&dev);
            let before = q.key_cursor(&prefix)?;
            let device = fleet.registry.get(&dev);
            let floor = retention
                .cutoff_us(Kind::Events, device.as_deref(), now)
                .map(|c| keys::event_by_device(&dev, c));
            store.scan_reverse_above(
                Cf::EventsByDevice,
                &prefix,
                before.as_deref(),
                floor.as_ref().map(|f| &f[..]),
                limit,
                SCAN_BUDGET,
                |k, _| {
                    let Some(id) = keys::suffix_u64(k) else {
                        return Ok(false);
                    };
                    match store.get(Cf::Events, &keys::event(id))? {
                        Some(v) if type_matches(&v) => {
                            items.push(String::from_utf8_lossy(&v).into_owned());
                            Ok(true)
                        }
                        _ => Ok(false),
                    }
                },
            )
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
