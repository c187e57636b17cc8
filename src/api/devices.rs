//! Device routes: CRUD, token rotation, telemetry history, and the command queue.

use simd_json::prelude::*;
use uuid::Uuid;

use crate::api::answer::{page, store_error};
use crate::api::extract::{cursor, json_body, limit, parse_object};
use crate::fleet::auth;
use crate::fleet::commands::{self, EnqueueError};
use crate::fleet::provision::{NewDevice, ProvisionError, provision};
use crate::fleet::registry::Device;
use crate::http::query;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::json;
use crate::shard::local::Local;
use crate::store::records::{self, Protocol};
use crate::store::{Cf, keys};
use crate::time::{now_ms, rfc3339_ms};

const MAX_NAME: usize = 128;
const MAX_SERIAL: usize = 64;
const MAX_SETTINGS: usize = 32;
const MAX_SETTING_LEN: usize = 256;

pub fn device_json(dev: &Device, latest: Option<&str>) -> String {
    let r = dev.record();
    let mut s = String::with_capacity(256);
    s.push_str("{\"device_id\":\"");
    s.push_str(&r.device_id.to_string());
    s.push_str("\",\"name\":");
    json::push_str(&mut s, &r.name);
    s.push_str(",\"protocol\":\"");
    s.push_str(r.protocol.as_str());
    s.push_str("\",\"serial\":");
    match &r.serial {
        Some(x) => json::push_str(&mut s, x),
        None => s.push_str("null"),
    }
    s.push_str(",\"status\":\"");
    s.push_str(if dev.is_online() { "online" } else { "offline" });
    s.push_str("\",\"last_seen\":");
    match r.last_seen {
        Some(t) => {
            s.push('"');
            s.push_str(&rfc3339_ms(t));
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push_str(",\"created_at\":\"");
    s.push_str(&rfc3339_ms(r.created_at));
    s.push_str("\",\"queued_commands\":");
    s.push_str(&dev.commands.queued().to_string());
    s.push_str(",\"settings\":{");
    for (i, (k, v)) in r.settings.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        json::push_str(&mut s, k);
        s.push(':');
        json::push_str(&mut s, v);
    }
    s.push('}');
    s.push_str(",\"info\":");
    s.push_str(r.info.as_deref().unwrap_or("null"));
    if let Some(l) = latest {
        s.push_str(",\"latest_telemetry\":");
        s.push_str(l);
    }
    s.push('}');
    s
}

fn not_found() -> Response {
    Response::error(404, "not_found", "no device with this id")
}

pub fn list(local: &Local, q: &[(String, String)]) -> Response {
    let limit = match limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    // A sorted list has its own cursors (see `sorted_page`).
    let by_id = query::get(q, "sort").is_none_or(str::is_empty);
    let after = match query::get(q, "cursor").filter(|c| !c.is_empty() && by_id) {
        None => None,
        Some(c) => match Uuid::parse_str(c) {
            Ok(id) => Some(id),
            Err(_) => {
                return Response::error(
                    400,
                    "invalid_query",
                    "cursor is not one this list returned",
                );
            }
        },
    };
    let status = query::get(q, "status").filter(|s| !s.is_empty());
    if status.is_some_and(|s| s != "online" && s != "offline") {
        return Response::error(400, "invalid_query", "status must be online or offline");
    }
    let protocol = match query::get(q, "protocol").filter(|s| !s.is_empty()) {
        None => None,
        Some(p) => match Protocol::parse(p) {
            Some(p) => Some(p),
            None => {
                return Response::error(
                    400,
                    "invalid_query",
                    "protocol must be generic, aiface, smackbio or http",
                );
            }
        },
    };
    // `q`: a case-insensitive substring of the name, serial or id.
    let needle = query::get(q, "q")
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let sort = query::get(q, "sort").filter(|s| !s.is_empty());
    if sort.is_some_and(|s| !matches!(s, "name" | "last_seen" | "status")) {
        return Response::error(
            400,
            "invalid_query",
            "sort must be name, last_seen or status",
        );
    }
    let matches = |dev: &Device| {
        if status.is_some_and(|s| (s == "online") != dev.is_online()) {
            return false;
        }
        dev.with_record(|r| {
            if protocol.is_some_and(|p| r.protocol != p) {
                return false;
            }
            needle.as_ref().is_none_or(|n| {
                r.name.to_lowercase().contains(n.as_str())
                    || r.serial
                        .as_ref()
                        .is_some_and(|s| s.to_lowercase().contains(n.as_str()))
                    || dev.id.to_string().contains(n.as_str())
            })
        })
    };
    let registry = &local.fleet().registry;
    if let Some(sort) = sort {
        // Sorting needs the whole filtered list; only the matching devices are collected.
        let mut all = Vec::new();
        registry.visit_from(None, |d| {
            if matches(d) {
                all.push(d.clone());
            }
            true
        });
        return sorted_page(&all, sort, limit, q);
    }
    // By id: a walk from the cursor that stops at the page's end, holding no copy of the registry.
    let mut items = Vec::new();
    let mut last = None;
    let mut next = None;
    registry.visit_from(after, |dev| {
        if !matches(dev) {
            return true;
        }
        if items.len() == limit {
            // The cursor is the id of this page's last item; the next page starts after it.
            next = last.map(|id: Uuid| id.to_string());
            return false;
        }
        items.push(device_json(dev, None));
        last = Some(dev.id);
        true
    });
    page(&items, next)
}

/// A page of the list in another order than by id. Sorting needs the whole filtered list, so the
/// cursor is a position in it (`p<offset>`); a page may shift if devices change between pages,
/// which suits a dashboard's view of a live fleet.
fn sorted_page(
    all: &[std::sync::Arc<Device>],
    sort: &str,
    limit: usize,
    q: &[(String, String)],
) -> Response {
    let offset = match query::get(q, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.strip_prefix('p').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => {
                return Response::error(
                    400,
                    "invalid_query",
                    "cursor is not one this list returned",
                );
            }
        },
    };
    let mut rows: Vec<(&Device, String, bool, u64)> = all
        .iter()
        .map(|d| {
            let seen = d.last_seen_ms.load(std::sync::atomic::Ordering::Relaxed);
            (
                &**d,
                d.with_record(|r| r.name.to_lowercase()),
                d.is_online(),
                seen,
            )
        })
        .collect();
    match sort {
        // Most recently seen first; never seen last.
        "last_seen" => rows.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.id.cmp(&b.0.id))),
        // Online first, then by name.
        "status" => rows.sort_by(|a, b| {
            b.2.cmp(&a.2)
                .then_with(|| a.1.cmp(&b.1))
                .then(a.0.id.cmp(&b.0.id))
        }),
        _ => rows.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.id.cmp(&b.0.id))),
    }
    let items: Vec<String> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| device_json(r.0, None))
        .collect();
    let next = (offset + limit < rows.len()).then(|| format!("p{}", offset + limit));
    page(&items, next)
}

pub async fn create(local: &Local, req: &Request) -> Response {
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = match v.get("name").and_then(|n| n.as_str()).map(str::trim) {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME => n.to_string(),
        _ => {
            return Response::error(
                400,
                "invalid_field",
                &format!("`name` is required: 1 to {MAX_NAME} characters"),
            );
        }
    };
    let protocol = match v.get("protocol").filter(|p| !p.is_null()) {
        None => Protocol::Generic,
        Some(p) => match p.as_str().and_then(Protocol::parse) {
            Some(p) => p,
            None => {
                return Response::error(
                    400,
                    "invalid_field",
                    "`protocol` must be generic, aiface, smackbio or http",
                );
            }
        },
    };
    let serial = match v.get("serial").filter(|s| !s.is_null()) {
        None => None,
        Some(s) => match s.as_str().map(str::trim) {
            Some(s) if !s.is_empty() && s.len() <= MAX_SERIAL => Some(s.to_string()),
            _ => {
                return Response::error(
                    400,
                    "invalid_field",
                    &format!("`serial` must be 1 to {MAX_SERIAL} characters"),
                );
            }
        },
    };
    let settings = match v.get("settings") {
        None => Default::default(),
        Some(s) => match settings_from(s) {
            Ok(m) => m,
            Err(r) => return r,
        },
    };
    let new = NewDevice {
        name,
        protocol,
        serial,
        settings,
        info: None,
    };
    match provision(local.fleet(), &local.batcher, new, |_| Ok(())).await {
        Ok((dev, token)) => created(&dev, &token),
        Err(ProvisionError::SerialTaken) => Response::error(
            409,
            "serial_taken",
            "another device already has this serial",
        ),
        Err(ProvisionError::Failed(e)) => store_error(e),
    }
}

/// A 201 with the device and its token: the one time the token is shown.
pub fn created(dev: &Device, token: &str) -> Response {
    let mut body = device_json(dev, None);
    body.pop();
    body.push_str(",\"token\":");
    json::push_str(&mut body, token);
    body.push('}');
    Response::json(201, body.into_bytes())
}

pub fn settings_from(
    v: &simd_json::BorrowedValue<'_>,
) -> Result<std::collections::BTreeMap<String, String>, Response> {
    let bad = || {
        Response::error(
            400,
            "invalid_field",
            &format!(
                "`settings` must be an object of at most {MAX_SETTINGS} string values of at most {MAX_SETTING_LEN} characters"
            ),
        )
    };
    let obj = v.as_object().ok_or_else(bad)?;
    if obj.len() > MAX_SETTINGS {
        return Err(bad());
    }
    let mut out = std::collections::BTreeMap::new();
    for (k, val) in obj.iter() {
        let s = val
            .as_str()
            .filter(|s| s.len() <= MAX_SETTING_LEN)
            .ok_or_else(bad)?;
        if k.is_empty() || k.len() > 64 {
            return Err(bad());
        }
        out.insert(k.to_string(), s.to_string());
    }
    if let Some(tz) = out.get("timezone") {
        if jiff::tz::TimeZone::get(tz).is_err() {
            return Err(Response::error(
                400,
                "invalid_field",
                "settings.timezone must be an IANA time zone name such as Europe/Berlin",
            ));
        }
    }
    Ok(out)
}

pub fn get(local: &Local, id: Uuid) -> Response {
    let Some(dev) = local.fleet().registry.get(&id) else {
        return not_found();
    };
    let mut latest = None;
    let r =
        local
            .fleet()
            .store
            .scan_reverse(Cf::Telemetry, &keys::device(&id), None, 1, 1, |_, v| {
                latest = Some(String::from_utf8_lossy(v).into_owned());
                Ok(true)
            });
    if let Err(e) = r {
        return store_error(e);
    }
    Response::json(200, device_json(&dev, latest.as_deref()).into_bytes())
}

pub async fn patch(local: &Local, id: Uuid, req: &Request) -> Response {
    let Some(dev) = local.fleet().registry.get(&id) else {
        return not_found();
    };
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = match v.get("name") {
        None => None,
        Some(n) => match n.as_str().map(str::trim) {
            Some(n) if !n.is_empty() && n.len() <= MAX_NAME => Some(n.to_string()),
            _ => {
                return Response::error(
                    400,
                    "invalid_field",
                    &format!("`name` must be 1 to {MAX_NAME} characters"),
                );
            }
        },
    };
    let settings = match v.get("settings") {
        None => None,
        Some(s) => match settings_from(s) {
            Ok(m) => Some(m),
            Err(r) => return r,
        },
    };
    if let Some(k) = v
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "name" && *k != "settings"))
    {
        return Response::error(
            400,
            "invalid_field",
            &format!("`{k}` cannot be changed; PATCH takes name and settings"),
        );
    }
    let rec = dev.update_record(|r| {
        if let Some(n) = name {
            r.name = n;
        }
        if let Some(s) = settings {
            r.settings.extend(s);
        }
    });
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await
    {
        return store_error(e);
    }
    Response::json(200, device_json(&dev, None).into_bytes())
}

pub async fn delete(local: &Local, id: Uuid) -> Response {
    let Some(dev) = local.fleet().registry.remove(&id) else {
        return not_found();
    };
    if let Some(s) = dev.session() {
        local.fleet().links.close_session(s, 1008, "device deleted");
    }
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device_delete(st, &id))
        .await
    {
        return store_error(e);
    }
    metrics::gauge!("fleetgate_devices").set(local.fleet().registry.len() as f64);
    Response::json(
        200,
        format!("{{\"device_id\":\"{id}\",\"deleted\":true}}").into_bytes(),
    )
}

pub async fn rotate_token(local: &Local, id: Uuid) -> Response {
    let Some(dev) = local.fleet().registry.get(&id) else {
        return not_found();
    };
    let token = match auth::generate_token() {
        Ok(t) => t,
        Err(e) => return store_error(e),
    };
    let hash = auth::hash_token(&token);
    let rec = dev.update_record(|r| r.token_hash = auth::hex(&hash));
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await
    {
        return store_error(e);
    }
    dev.set_token(hash);
    if let Some(s) = dev.session() {
        local.fleet().links.close_session(s, 1008, "token rotated");
    }
    let mut body = format!("{{\"device_id\":\"{id}\",\"token\":");
    json::push_str(&mut body, &token);
    body.push('}');
    Response::json(200, body.into_bytes())
}

pub fn telemetry(local: &Local, id: Uuid, q: &[(String, String)]) -> Response {
    if local.fleet().registry.get(&id).is_none() {
        return not_found();
    }
    let limit = match limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let prefix = keys::device(&id);
    let mut before = match cursor(q, &prefix) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let bound = |name: &str| -> Result<Option<u64>, Response> {
        match query::get(q, name).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<jiff::Timestamp>()
                .map(|t| Some(t.as_microsecond().max(0) as u64))
                .map_err(|_| {
                    Response::error(
                        400,
                        "invalid_query",
                        &format!("{name} must be an RFC 3339 time"),
                    )
                }),
        }
    };
    let (from, to) = match (bound("from"), bound("to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(t) = to {
        let upper = keys::telemetry(&id, t.saturating_add(1)).to_vec();
        if before.as_ref().is_none_or(|b| *b > upper) {
            before = Some(upper);
        }
    }
    let mut items = Vec::new();
    let mut stopped_early = false;
    let r = local.fleet().store.scan_reverse(
        Cf::Telemetry,
        &prefix,
        before.as_deref(),
        limit,
        usize::MAX,
        |k, v| {
            if from.is_some_and(|f| keys::suffix_u64(k).is_some_and(|ts| ts < f)) {
                stopped_early = true;
                return Ok(false);
            }
            items.push(String::from_utf8_lossy(v).into_owned());
            Ok(true)
        },
    );
    match r {
        Ok(next) => page(
            &items,
            next.filter(|_| !stopped_early).map(|k| auth::hex(&k)),
        ),
        Err(e) => store_error(e),
    }
}

pub fn commands(local: &Local, id: Uuid, q: &[(String, String)]) -> Response {
    if local.fleet().registry.get(&id).is_none() {
        return not_found();
    }
    let limit = match limit(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let prefix = keys::device(&id);
    let before = match cursor(q, &prefix) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = now_ms();
    let mut items = Vec::new();
    let r = local.fleet().store.scan_reverse(
        Cf::Commands,
        &prefix,
        before.as_deref(),
        limit,
        usize::MAX,
        |_, v| {
            let c: records::CommandRecord = records::decode(v)?;
            items.push(c.to_api_json(now));
            Ok(true)
        },
    );
    match r {
        Ok(next) => page(&items, next.map(|k| auth::hex(&k))),
        Err(e) => store_error(e),
    }
}

pub async fn send_command(local: &Local, id: Uuid, req: &Request) -> Response {
    let Some(dev) = local.fleet().registry.get(&id) else {
        return not_found();
    };
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(command) = v.get("command").and_then(|c| c.as_str()) else {
        return Response::error(400, "invalid_field", "`command` is required (a string)");
    };
    let payload = v
        .get("payload")
        .filter(|p| !p.is_null())
        .map_or_else(|| "{}".to_string(), json::encode);
    let ttl = match v.get("ttl_s").filter(|t| !t.is_null()) {
        None => None,
        Some(t) => match t.as_u64() {
            Some(t) => Some(t),
            None => {
                return Response::error(400, "invalid_field", "`ttl_s` must be a positive integer");
            }
        },
    };
    match commands::enqueue(local.fleet(), &local.batcher, &dev, command, &payload, ttl).await {
        Ok(c) => Response::json(202, c.to_api_json(now_ms()).into_bytes()),
        Err(EnqueueError::Invalid(m)) => Response::error(400, "invalid_field", &m),
        Err(EnqueueError::QueueFull(n)) => Response::error(
            429,
            "queue_full",
            &format!("the device already has {n} undelivered commands"),
        ),
        Err(EnqueueError::Store(e)) => store_error(e),
    }
}
