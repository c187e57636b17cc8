//! `GET /api/events?device_id&type&limit&cursor`: the event stream, newest first.

use uuid::Uuid;

use crate::api::answer::{page, store_error};
use crate::api::extract::{cursor, limit};
use crate::fleet::auth;
use crate::http::query;
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::{Cf, keys};

/// Rows a filtered page may examine before it returns what it found with a cursor, so a rare
/// `type` never turns one request into a scan of the whole history.
const SCAN_BUDGET: usize = 20_000;

pub fn list(local: &Local, q: &[(String, String)]) -> Response {
    let limit = match limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let kind = query::get(q, "type").filter(|t| !t.is_empty());
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
    let store = &local.fleet().store;
    let mut items = Vec::new();
    let res = match query::get(q, "device_id").filter(|d| !d.is_empty()) {
        Some(d) => {
            let Ok(dev) = Uuid::parse_str(d) else {
                return Response::error(400, "invalid_query", "device_id must be a UUID");
            };
            let prefix = keys::device(&dev);
            let before = match cursor(q, &prefix) {
                Ok(c) => c,
                Err(r) => return r,
            };
            store.scan_reverse(
                Cf::EventsByDevice,
                &prefix,
                before.as_deref(),
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
            let before = match cursor(q, &[]) {
                Ok(c) => c,
                Err(r) => return r,
            };
            store.scan_reverse(
                Cf::Events,
                &[],
                before.as_deref(),
                limit,
                SCAN_BUDGET,
                |_, v| {
                    if type_matches(v) {
                        items.push(String::from_utf8_lossy(v).into_owned());
                        Ok(true)
                    } else {
                        Ok(false)
                    }
                },
            )
        }
    };
    match res {
        Ok(next) => page(&items, next.map(|k| auth::hex(&k))),
        Err(e) => store_error(e),
    }
}
