//! Device routes: CRUD, token rotation, telemetry history, the command queue, and the people a
//! terminal enrolled.

use std::collections::BTreeMap;
use std::sync::Arc;

use simd_json::prelude::*;
use uuid::Uuid;

use super::history;
use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::{key_page, page};
use crate::api::query::{Query, bad_cursor};
use crate::clock::Clock;
use crate::fleet::auth;
use crate::fleet::cluster;
use crate::fleet::commands::{self, EnqueueError};
use crate::fleet::provision::{NewDevice, ProvisionError, provision};
use crate::fleet::registry::Device;
use crate::fleet::retention::{self, Kind};
use crate::fleet::sources::{self, AllowedSources};
use crate::fleet::{enrolled, identity};
use crate::http::response::Response;
use crate::json;
use crate::store::records::{self, Protocol};
use crate::store::{Cf, keys};
use crate::terminal::AccessPolicy;
use crate::time::{now_ms, now_us, rfc3339_ms, timestamp_now};

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

fn no_device() -> ApiError {
    ApiError::not_found("no device with this id")
}

/// The `:id` of the path, which must be a device id; anything else names no device.
fn device_id(cx: &Ctx<'_>) -> Result<Uuid, ApiError> {
    Uuid::parse_str(cx.param("id")).map_err(|_| no_device())
}

/// The device the path names.
/// The oldest record time (µs) of `kind` the device's retention keeps now.
fn retention_cutoff(cx: &Ctx<'_>, kind: Kind, dev: &Device) -> Option<u64> {
    cx.local
        .fleet()
        .rules
        .retention
        .cutoff_us(kind, Some(dev), now_us())
}

/// `retention_cutoff` as the lowest key of the device's rows in a time-keyed column family.
fn retention_floor(cx: &Ctx<'_>, kind: Kind, dev: &Device) -> Option<[u8; 24]> {
    retention_cutoff(cx, kind, dev).map(|c| keys::telemetry(&dev.id, c))
}

pub(super) fn device(cx: &Ctx<'_>) -> Result<Arc<Device>, ApiError> {
    cx.local
        .fleet()
        .registry
        .get(&device_id(cx)?)
        .ok_or_else(no_device)
}

/// `name` of a new device (also when a pending one is approved).
pub fn new_name(body: &JsonObject) -> Result<String, ApiError> {
    body.text(
        "name",
        MAX_NAME,
        &format!("`name` is required: 1 to {MAX_NAME} characters"),
    )
}

/// `settings` if the body has it: at most `MAX_SETTINGS` string values of at most
/// `MAX_SETTING_LEN` characters; `timezone`, if set, a zone this server knows; `allowed_sources`,
/// if set, addresses and networks; `retain_*`, if set, retentions; `server_verify_access` and
/// `access_format`, if set, values the terminals' access answer knows. A `cloud_id` is kept only
/// as its hash.
pub fn settings(body: &JsonObject) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(v) = body.get("settings") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid_field(format!(
            "`settings` must be an object of at most {MAX_SETTINGS} string values of at most {MAX_SETTING_LEN} characters"
        ))
    };
    let obj = v.as_object().ok_or_else(bad)?;
    if obj.len() > MAX_SETTINGS {
        return Err(bad());
    }
    let mut out = BTreeMap::new();
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
    if let Some(tz) = out.get("timezone")
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        return Err(ApiError::invalid_field(
            "settings.timezone must be an IANA time zone name such as Europe/Berlin",
        ));
    }
    if let Some(list) = out.get(sources::SETTING)
        && let Err(e) = AllowedSources::parse(list)
    {
        return Err(ApiError::invalid_field(format!(
            "settings.allowed_sources: {e}; give addresses or networks separated by commas, such as 10.1.2.0/24, 2001:db8::/48"
        )));
    }
    retention::check_settings(&out).map_err(ApiError::invalid_field)?;
    AccessPolicy::parse(&out).map_err(ApiError::invalid_field)?;
    if let Some(c) = out.get_mut(identity::SETTING_CLOUD_ID) {
        *c = identity::secret_for_storage(c);
    }
    Ok(Some(out))
}

pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let q = &cx.query;
    let limit = q.limit()?;
    // A sorted list has its own cursors (see `sorted_page`).
    let by_id = q.given("sort").is_none();
    let after = match q.given("cursor").filter(|_| by_id) {
        None => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| bad_cursor())?),
    };
    let status = q.given("status");
    if status.is_some_and(|s| s != "online" && s != "offline") {
        return Err(ApiError::invalid_query("status must be online or offline"));
    }
    let protocol = match q.given("protocol") {
        None => None,
        Some(p) => Some(Protocol::parse(p).ok_or_else(|| {
            ApiError::invalid_query("protocol must be generic, aiface, smackbio, http or zkteco")
        })?),
    };
    // `q`: a case-insensitive substring of the name, serial or id.
    let needle = q
        .get("q")
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let sort = q.given("sort");
    if sort.is_some_and(|s| !matches!(s, "name" | "last_seen" | "status")) {
        return Err(ApiError::invalid_query(
            "sort must be name, last_seen or status",
        ));
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
    let registry = &cx.local.fleet().registry;
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
    Ok(page(&items, next))
}

/// A page of the list in another order than by id. Sorting needs the whole filtered list, so the
/// cursor is a position in it (`p<offset>`); a page may shift if devices change between pages,
/// which suits a dashboard's view of a live fleet.
fn sorted_page(
    all: &[Arc<Device>],
    sort: &str,
    limit: usize,
    q: &Query,
) -> Result<Response, ApiError> {
    let offset = match q.given("cursor") {
        None => 0,
        Some(c) => c
            .strip_prefix('p')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(bad_cursor)?,
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
    Ok(page(&items, next))
}

pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let body = JsonObject::from_request(cx.req)?;
    let name = new_name(&body)?;
    let protocol = body
        .opt_parsed(
            "protocol",
            Protocol::parse,
            "`protocol` must be generic, aiface, smackbio, http or zkteco",
        )?
        .unwrap_or(Protocol::Generic);
    let serial = body.opt_text(
        "serial",
        MAX_SERIAL,
        &format!("`serial` must be 1 to {MAX_SERIAL} characters"),
    )?;
    let new = NewDevice {
        name,
        protocol,
        serial,
        settings: settings(&body)?.unwrap_or_default(),
        info: None,
    };
    let local = cx.local;
    match provision(local.fleet(), &local.batcher, new, |_| Ok(())).await {
        Ok((dev, token)) => Ok(created(&dev, &token)),
        Err(ProvisionError::SerialTaken) => Err(ApiError::new(
            409,
            "serial_taken",
            "another device already has this serial",
        )),
        Err(ProvisionError::Failed(e)) => Err(ApiError::unavailable(e)),
        Err(ProvisionError::Cluster(why)) => Err(ApiError::cluster_unavailable(&why)),
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

pub fn get(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let mut latest = None;
    let floor = retention_floor(cx, Kind::Telemetry, &dev);
    cx.local.fleet().store.scan_reverse_above(
        Cf::Telemetry,
        &keys::device(&dev.id),
        None,
        floor.as_ref().map(|f| &f[..]),
        1,
        1,
        |_, v| {
            latest = Some(String::from_utf8_lossy(v).into_owned());
            Ok(true)
        },
    )?;
    Ok(Response::json(
        200,
        device_json(&dev, latest.as_deref()).into_bytes(),
    ))
}

pub async fn patch(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let body = JsonObject::from_request(cx.req)?;
    // Unlike at creation, a `null` name is a wrong name, not a missing one.
    let name = match body.get("name") {
        None => None,
        Some(_) => Some(body.text(
            "name",
            MAX_NAME,
            &format!("`name` must be 1 to {MAX_NAME} characters"),
        )?),
    };
    let settings = settings(&body)?;
    if let Some(k) = body.unknown_key(&["name", "settings"]) {
        return Err(ApiError::invalid_field(format!(
            "`{k}` cannot be changed; PATCH takes name and settings"
        )));
    }
    let change = |r: &mut records::DeviceRecord| {
        if let Some(n) = &name {
            r.name = n.clone();
        }
        if let Some(s) = &settings {
            r.settings.extend(s.clone());
        }
    };
    // In a cluster, the cluster's registry takes the change first (every node then applies it).
    if let Some(port) = cx.local.fleet().cluster.port() {
        let mut next = cluster::shared_fields(&dev.record());
        change(&mut next);
        port.put_device(&next).await?;
    }
    let rec = dev.update_record(change);
    cx.local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await?;
    // Binding a device is how an operator answers a takeover: the session from outside goes now,
    // not when it next reconnects.
    if let Some(h) = dev.holder()
        && !dev.source_allowed(h.peer().ip())
    {
        cx.local
            .fleet()
            .links
            .close_session(h.session, 1008, "source no longer allowed");
    }
    Ok(Response::json(200, device_json(&dev, None).into_bytes()))
}

pub async fn delete(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let id = device_id(cx)?;
    let fleet = cx.local.fleet();
    let serial = fleet
        .registry
        .get(&id)
        .ok_or_else(no_device)?
        .with_record(|r| r.serial.clone());
    if let Some(port) = fleet.cluster.port() {
        port.delete_device(id, serial).await?;
    }
    // In a cluster the deletion may already have come back from NATS and been applied here.
    if let Some(dev) = fleet.registry.remove(&id)
        && let Some(s) = dev.session()
    {
        fleet.links.close_session(s, 1008, "device deleted");
    }
    cx.local
        .batcher
        .commit(|st| records::stage_device_delete(st, &id))
        .await?;
    metrics::gauge!("fleetgate_devices").set(fleet.registry.len() as f64);
    Ok(Response::json(
        200,
        format!("{{\"device_id\":\"{id}\",\"deleted\":true}}").into_bytes(),
    ))
}

pub async fn rotate_token(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let token = auth::generate_token().map_err(ApiError::unavailable)?;
    let hash = auth::hash_token(&token);
    if let Some(port) = cx.local.fleet().cluster.port() {
        let mut next = cluster::shared_fields(&dev.record());
        next.token_hash = auth::hex(&hash);
        port.put_device(&next).await?;
    }
    let rec = dev.update_record(|r| r.token_hash = auth::hex(&hash));
    cx.local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await?;
    dev.set_token(hash);
    if let Some(s) = dev.session() {
        cx.local
            .fleet()
            .links
            .close_session(s, 1008, "token rotated");
    }
    let mut body = format!("{{\"device_id\":\"{}\",\"token\":", dev.id);
    json::push_str(&mut body, &token);
    body.push('}');
    Ok(Response::json(200, body.into_bytes()))
}

pub async fn telemetry(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let q = &cx.query;
    let bound = |name: &str| q.time_us(name, &format!("{name} must be an RFC 3339 time"));
    let read = history::Read {
        what: history::What::Telemetry,
        device: dev.id,
        before: q.key_cursor(&keys::device(&dev.id))?,
        from_us: bound("from")?,
        to_us: bound("to")?,
        event_type: None,
        enrollid: None,
        limit: q.limit()?,
    };
    // In a cluster, what other nodes stored for the device is merged in.
    let (items, next) = history::page(cx.local.fleet(), read).await?;
    Ok(key_page(&items, next))
}

/// `GET /api/devices/{id}/users`: the people the terminal enrolled and sent (`senduser`), in
/// `enrollid` order, each with all its credentials.
pub fn users(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let id = device(cx)?.id;
    let limit = cx.query.limit()?;
    let from = match cx.query.key_cursor(&keys::device(&id))? {
        None => 0,
        Some(k) if k.len() == keys::user(&id, 0).len() => {
            keys::suffix_u64(&k).ok_or_else(bad_cursor)?
        }
        Some(_) => return Err(bad_cursor()),
    };
    let (items, next) = enrolled::list(&cx.local.fleet().store, &id, from, limit)?;
    Ok(key_page(
        &items,
        next.map(|enrollid| keys::user(&id, enrollid).to_vec()),
    ))
}

pub fn commands(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let limit = cx.query.limit()?;
    let prefix = keys::device(&dev.id);
    let before = cx.query.key_cursor(&prefix)?;
    let now = now_ms();
    let kept_ms = retention_cutoff(cx, Kind::CommandHistory, &dev).map(|us| us / 1000);
    let mut items = Vec::new();
    let next = cx.local.fleet().store.scan_reverse(
        Cf::Commands,
        &prefix,
        before.as_deref(),
        limit,
        usize::MAX,
        |_, v| {
            let c: records::CommandRecord = records::decode(v)?;
            // A finished command past the history's retention is gone, swept or not.
            let gone =
                kept_ms.is_some_and(|k| retention::finished_at(&c, now).is_some_and(|f| f < k));
            if gone {
                return Ok(false);
            }
            items.push(c.to_api_json(now));
            Ok(true)
        },
    )?;
    Ok(key_page(&items, next))
}

pub async fn send_command(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let dev = device(cx)?;
    let body = JsonObject::from_request(cx.req)?;
    let command = body.string("command", "`command` is required (a string)")?;
    let payload = body
        .given("payload")
        .map_or_else(|| "{}".to_string(), json::encode);
    let ttl = body.opt_u64("ttl_s", "`ttl_s` must be a positive integer")?;
    // A polling terminal cannot be asked and refused at once: what it cannot take is refused here.
    if dev.with_record(|r| r.protocol) == Protocol::Zkteco {
        let wall = Clock::new(dev.zone()).wall_or_utc(timestamp_now());
        crate::zkteco::command::line(command, &payload, wall).map_err(ApiError::invalid_field)?;
    }
    let local = cx.local;
    match commands::enqueue(local.fleet(), &local.batcher, &dev, command, &payload, ttl).await {
        Ok(c) => Ok(Response::json(202, c.to_api_json(now_ms()).into_bytes())),
        Err(EnqueueError::Invalid(m)) => Err(ApiError::invalid_field(m)),
        Err(EnqueueError::QueueFull(n)) => Err(ApiError::new(
            429,
            "queue_full",
            format!("the device already has {n} undelivered commands"),
        )),
        Err(EnqueueError::Store(e)) => Err(ApiError::unavailable(e)),
        Err(EnqueueError::Cluster(why)) => Err(ApiError::cluster_unavailable(&why)),
    }
}
