//! `/api/people`: the person behind a PIN (list, read, create, change, delete), the devices that
//! report them enrolled, and `POST /api/people/{pin}/sync`, which writes a person to chosen
//! terminals (or removes them) through each dialect's user commands on the durable queue.

use std::sync::Arc;

use simd_json::prelude::*;
use uuid::Uuid;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::page;
use crate::clock::Clock;
use crate::fleet::commands::{self, EnqueueError};
use crate::fleet::people::{
    self, MAX_CARD, MAX_DEPARTMENT, MAX_EXTERNAL_ID, MAX_NAME, MAX_PEOPLE, MAX_PIN, PeopleError,
    Person, Privilege,
};
use crate::fleet::registry::Device;
use crate::http::response::Response;
use crate::json;
use crate::store::records::Protocol;
use crate::time::timestamp_now;

/// A device of a sync and the commands it is given, in order.
type Planned = (Arc<Device>, Vec<(&'static str, String)>);

/// Devices one sync may name.
pub const MAX_SYNC_DEVICES: usize = 1000;

const FIELDS: &[&str] = &[
    "pin",
    "name",
    "card",
    "privilege",
    "department",
    "external_id",
];

fn no_person() -> ApiError {
    ApiError::not_found("no such person")
}

fn pin(cx: &Ctx<'_>) -> Result<u64, ApiError> {
    cx.param("pin")
        .parse::<u64>()
        .ok()
        .filter(|p| (1..=MAX_PIN).contains(p))
        .ok_or_else(no_person)
}

fn failed(e: PeopleError) -> ApiError {
    match e {
        PeopleError::Exists => ApiError::conflict("a person with this PIN exists"),
        PeopleError::NotFound => no_person(),
        PeopleError::Full => ApiError::new(
            507,
            "people_full",
            format!("the registry holds its limit of {MAX_PEOPLE} people"),
        ),
        PeopleError::Store(e) => ApiError::unavailable(e),
    }
}

fn json_of(cx: &Ctx<'_>, p: &Person) -> Result<String, ApiError> {
    let fleet = cx.local.fleet();
    let on = people::enrolled_on(&fleet.store, &fleet.registry, p.pin)?;
    Ok(p.to_json(&on))
}

/// `GET /api/people?limit&cursor`: in PIN order; the cursor is the next page's first PIN.
pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let limit = cx.query.limit()?;
    let from = match cx.query.given("cursor") {
        None => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_query("cursor must be a next_cursor of this list"))?,
    };
    let (items, next) = cx.local.fleet().people.page(from, limit);
    let items = items
        .iter()
        .map(|p| json_of(cx, p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(&items, next.map(|n| n.to_string())))
}

pub fn get(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let p = cx
        .local
        .fleet()
        .people
        .get(pin(cx)?)
        .ok_or_else(no_person)?;
    Ok(Response::json(200, json_of(cx, &p)?.into_bytes()))
}

/// An optional text field for a person: given, it is 1 to `max` bytes without line breaks or
/// tabs (terminals keep it in tab-separated lines); `null` clears it.
fn opt_field(body: &JsonObject, key: &str, max: usize) -> Result<Option<String>, ApiError> {
    let v = body.opt_text(
        key,
        max,
        &format!("`{key}` must be 1 to {max} characters, or null"),
    )?;
    if v.as_ref().is_some_and(|s| s.contains(['\t', '\r', '\n'])) {
        return Err(ApiError::invalid_field(format!(
            "`{key}` must not hold tabs or line breaks"
        )));
    }
    Ok(v)
}

fn name_field(body: &JsonObject) -> Result<String, ApiError> {
    let name = body.text(
        "name",
        MAX_NAME,
        &format!("`name` is required: 1 to {MAX_NAME} characters"),
    )?;
    if name.contains(['\t', '\r', '\n']) {
        return Err(ApiError::invalid_field(
            "`name` must not hold tabs or line breaks",
        ));
    }
    Ok(name)
}

fn privilege(body: &JsonObject) -> Result<Option<Privilege>, ApiError> {
    body.opt_parsed(
        "privilege",
        Privilege::parse,
        "`privilege` must be user, manager or admin",
    )
}

fn unknown(body: &JsonObject, allowed: &[&str]) -> Result<(), ApiError> {
    match body.unknown_key(allowed) {
        Some(k) => Err(ApiError::invalid_field(format!(
            "unknown field `{k}`: a person has {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `POST /api/people {"pin","name","card"?,"privilege"?,"department"?,"external_id"?}` → 201.
pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let body = JsonObject::from_request(cx.req)?;
    unknown(&body, FIELDS)?;
    let pin = body
        .opt_u64("pin", "")
        .ok()
        .flatten()
        .filter(|p| (1..=MAX_PIN).contains(p))
        .ok_or_else(|| {
            ApiError::invalid_field(format!(
                "`pin` is required: the number the person punches with, 1 to {MAX_PIN}"
            ))
        })?;
    let p = Person {
        pin,
        name: name_field(&body)?,
        card: opt_field(&body, "card", MAX_CARD)?,
        privilege: privilege(&body)?.unwrap_or_default(),
        department: opt_field(&body, "department", MAX_DEPARTMENT)?,
        external_id: opt_field(&body, "external_id", MAX_EXTERNAL_ID)?,
        created_at: 0,
        updated_at: 0,
    };
    let local = cx.local;
    let p = people::create(&local.fleet().people, &local.batcher, p)
        .await
        .map_err(failed)?;
    Ok(Response::json(201, json_of(cx, &p)?.into_bytes()))
}

/// `PATCH /api/people/{pin}`: the fields given change; `null` clears an optional one.
pub async fn patch(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let pin = pin(cx)?;
    let body = JsonObject::from_request(cx.req)?;
    unknown(&body, &FIELDS[1..])?;
    let name = body.get("name").map(|_| name_field(&body)).transpose()?;
    let privilege = privilege(&body)?;
    let mut optional = Vec::new();
    for (key, max) in [
        ("card", MAX_CARD),
        ("department", MAX_DEPARTMENT),
        ("external_id", MAX_EXTERNAL_ID),
    ] {
        if body.get(key).is_some() {
            optional.push((key, opt_field(&body, key, max)?));
        }
    }
    let local = cx.local;
    let p = people::update(&local.fleet().people, &local.batcher, pin, |p| {
        if let Some(n) = name {
            p.name = n;
        }
        if let Some(v) = privilege {
            p.privilege = v;
        }
        for (key, v) in optional {
            match key {
                "card" => p.card = v,
                "department" => p.department = v,
                _ => p.external_id = v,
            }
        }
    })
    .await
    .map_err(failed)?;
    Ok(Response::json(200, json_of(cx, &p)?.into_bytes()))
}

/// `DELETE /api/people/{pin}` → `{"ok":true}`. The terminals keep the person until a sync
/// removes them.
pub async fn delete(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let pin = pin(cx)?;
    let local = cx.local;
    people::delete(&local.fleet().people, &local.batcher, pin)
        .await
        .map_err(failed)?;
    Ok(crate::api::users::ok())
}

/// `POST /api/people/{pin}/sync {"devices":[id…],"remove"?:bool}` → 202
/// `{"commands":[{"device_id","command_id","command"}]}`: each device's user commands queued in
/// order. Every device is checked (it exists, its dialect has user commands) before anything is
/// queued, so a bad list queues nothing.
pub async fn sync(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let pin = pin(cx)?;
    let fleet = cx.local.fleet();
    let person = fleet.people.get(pin).ok_or_else(no_person)?;
    let body = JsonObject::from_request(cx.req)?;
    unknown(&body, &["devices", "remove"])?;
    let remove = match body.given("remove") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::invalid_field("`remove` must be true or false"))?,
    };
    let why = format!("`devices` is required: 1 to {MAX_SYNC_DEVICES} device ids");
    let ids = body
        .given("devices")
        .and_then(|d| d.as_array())
        .filter(|a| !a.is_empty() && a.len() <= MAX_SYNC_DEVICES)
        .ok_or_else(|| ApiError::invalid_field(why.clone()))?;
    let mut plan: Vec<Planned> = Vec::new();
    for v in ids.iter() {
        let id = v
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::invalid_field(why.clone()))?;
        if plan.iter().any(|(d, _)| d.id == id) {
            continue;
        }
        let dev = fleet
            .registry
            .get(&id)
            .ok_or_else(|| ApiError::invalid_field(format!("no device {id}")))?;
        let protocol = dev.with_record(|r| r.protocol);
        let cmds = people::sync_commands(protocol, &person, remove)
            .map_err(|m| ApiError::invalid_field(format!("device {id}: {m}")))?;
        // A polling terminal's lines are checked now, as `send_command` checks them.
        if protocol == Protocol::Zkteco {
            let wall = Clock::new(dev.zone()).wall_or_utc(timestamp_now());
            for (command, payload) in &cmds {
                crate::zkteco::command::line(command, payload, wall)
                    .map_err(|m| ApiError::invalid_field(format!("device {id}: {m}")))?;
            }
        }
        plan.push((dev, cmds));
    }
    let local = cx.local;
    let mut out = String::from("{\"commands\":[");
    let mut first = true;
    for (dev, cmds) in plan {
        for (command, payload) in cmds {
            let c = commands::enqueue(fleet, &local.batcher, &dev, command, &payload, None)
                .await
                .map_err(|e| match e {
                    EnqueueError::Invalid(m) => {
                        ApiError::invalid_field(format!("device {}: {m}", dev.id))
                    }
                    EnqueueError::QueueFull(n) => ApiError::new(
                        429,
                        "queue_full",
                        format!("device {} already has {n} undelivered commands", dev.id),
                    ),
                    EnqueueError::Store(e) => ApiError::unavailable(e),
                    EnqueueError::Cluster(why) => ApiError::cluster_unavailable(&why),
                })?;
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(
                "{{\"device_id\":\"{}\",\"command_id\":\"{}\",\"command\":",
                dev.id, c.command_id
            ));
            json::push_str(&mut out, command);
            out.push('}');
        }
    }
    out.push_str("]}");
    Ok(Response::json(202, out.into_bytes()))
}
