//! `/api/webhooks` (admins only): endpoints told of what the fleet stores (`fleet::webhooks`),
//! their secrets (shown once, rotatable), replays and delivery logs.

use simd_json::prelude::*;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::api::page::{key_page, page};
use crate::fleet::webhooks::{
    self, Config, Kind, MAX_DESCRIPTION, MAX_ENDPOINTS, MAX_URL, PREVIOUS_SECRET_MS, Preset,
};
use crate::http::response::Response;
use crate::json;
use crate::outbound::{Target, is_internal};
use crate::time::now_ms;

fn no_endpoint() -> ApiError {
    ApiError::not_found("no such webhook endpoint")
}

fn endpoint(cx: &Ctx<'_>) -> Result<std::sync::Arc<webhooks::Endpoint>, ApiError> {
    webhooks::parse_id(cx.param("id"))
        .and_then(|id| cx.local.fleet().webhooks.get(id))
        .ok_or_else(no_endpoint)
}

fn random_failed(e: crate::fleet::auth::RandomError) -> ApiError {
    ApiError::unavailable(format!("no randomness: {e:?}"))
}

/// `url`: http(s), at most `MAX_URL`; a literal internal address (or `localhost`) is refused
/// here unless `--webhooks-allow-private`, as the sender would refuse it on every attempt.
fn url_field(cx: &Ctx<'_>, body: &JsonObject) -> Result<String, ApiError> {
    let url = body.text(
        "url",
        MAX_URL,
        &format!("`url` is required: an http:// or https:// URL of at most {MAX_URL} characters"),
    )?;
    let t = Target::parse(&url).map_err(|e| ApiError::invalid_field(format!("`url`: {e}")))?;
    let internal =
        t.host.eq_ignore_ascii_case("localhost") || t.host.parse().is_ok_and(is_internal);
    if internal && !cx.local.fleet().rules.webhooks_allow_private {
        return Err(ApiError::invalid_field(
            "`url` names an internal address: allowed only when the server runs with --webhooks-allow-private",
        ));
    }
    Ok(url)
}

fn events_field(body: &JsonObject, required: bool) -> Result<Option<Vec<Kind>>, ApiError> {
    let names = Kind::ALL.map(Kind::as_str).join(", ");
    let why = || ApiError::invalid_field(format!("`events` must be a list of some of: {names}"));
    let Some(v) = body.given("events") else {
        return if required { Err(why()) } else { Ok(None) };
    };
    let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(why)?;
    let mut out = Vec::new();
    for e in list.iter() {
        let k = e.as_str().and_then(Kind::parse).ok_or_else(why)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(Some(out))
}

fn description_field(body: &JsonObject) -> Result<Option<String>, ApiError> {
    body.opt_text(
        "description",
        MAX_DESCRIPTION,
        &format!("`description` must be 1 to {MAX_DESCRIPTION} characters, or null"),
    )
}

/// The ERPNext preset's settings: `{"api_key","api_secret","employee_field"?,"by_external_id"?}`.
fn erpnext_field(body: &JsonObject) -> Result<Preset, ApiError> {
    let why = "`erpnext` is required with the erpnext preset: {\"api_key\",\"api_secret\",\"employee_field\"?,\"by_external_id\"?}";
    let e = body
        .given("erpnext")
        .filter(|v| v.is_object())
        .ok_or_else(|| ApiError::invalid_field(why))?;
    let text = |k: &str| {
        e.get(k)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256 && !s.contains([':', '\r', '\n']))
            .map(str::to_string)
    };
    Ok(Preset::Erpnext {
        api_key: text("api_key").ok_or_else(|| ApiError::invalid_field(why))?,
        api_secret: text("api_secret").ok_or_else(|| ApiError::invalid_field(why))?,
        employee_field: match e.get("employee_field") {
            None => "attendance_device_id".into(),
            Some(_) => text("employee_field").ok_or_else(|| ApiError::invalid_field(why))?,
        },
        by_external_id: match e.get("by_external_id") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| ApiError::invalid_field(why))?,
        },
    })
}

pub fn list(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let items: Vec<String> = cx
        .local
        .fleet()
        .webhooks
        .list()
        .iter()
        .map(|e| webhooks::to_json(e))
        .collect();
    Ok(page(&items, None))
}

pub fn get(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let e = endpoint(cx)?;
    Ok(Response::json(200, webhooks::to_json(&e).into_bytes()))
}

/// The endpoint's JSON with its new secret: the one time it is shown.
fn with_secret(e: &webhooks::Endpoint, status: u16) -> Response {
    let c = e.config();
    let mut out = webhooks::to_json(e);
    out.pop();
    if matches!(c.preset, Preset::Standard) {
        out.push_str(",\"secret\":");
        json::push_str(&mut out, &c.secret);
    }
    out.push('}');
    Response::json(status, out.into_bytes())
}

/// `POST /api/webhooks {"url","events",…}` → 201 with the endpoint and its `whsec_` secret.
pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let body = JsonObject::from_request(cx.req)?;
    if let Some(k) = body.unknown_key(&[
        "url",
        "events",
        "description",
        "preset",
        "erpnext",
        "enabled",
    ]) {
        return Err(ApiError::invalid_field(format!(
            "unknown field `{k}`: an endpoint has url, events, description, preset, erpnext, enabled"
        )));
    }
    let fleet = cx.local.fleet();
    if fleet.webhooks.len() >= MAX_ENDPOINTS {
        return Err(ApiError::conflict(format!(
            "there are {MAX_ENDPOINTS} webhook endpoints already"
        )));
    }
    let url = url_field(cx, &body)?;
    let preset = match body.opt_string("preset", "`preset` must be standard or erpnext")? {
        None | Some("standard") => Preset::Standard,
        Some("erpnext") => erpnext_field(&body)?,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "`preset` must be standard or erpnext",
            ));
        }
    };
    let events = match (&preset, events_field(&body, false)?) {
        (Preset::Erpnext { .. }, None) => vec![Kind::Attendance],
        (Preset::Erpnext { .. }, Some(e)) if e == [Kind::Attendance] => e,
        (Preset::Erpnext { .. }, Some(_)) => {
            return Err(ApiError::invalid_field(
                "the erpnext preset takes punches only: `events` is [\"attendance\"]",
            ));
        }
        // Required here: it errs when missing, so it is never None.
        (Preset::Standard, _) => events_field(&body, true)?.unwrap_or_default(),
    };
    let now = now_ms();
    let c = Config {
        id: webhooks::new_id().map_err(random_failed)?,
        url,
        events,
        preset,
        secret: webhooks::new_secret().map_err(random_failed)?,
        previous_secret: None,
        enabled: body.opt_bool("enabled").unwrap_or(true),
        description: description_field(&body)?,
        created_at: now,
        updated_at: now,
    };
    // It is told what is stored from now on: its cursor starts at the outbox's head, stored with
    // it (a restart before its first delivery must not start it at the outbox's oldest message).
    let head = webhooks::outbox_head(&fleet.store)?;
    let start = webhooks::State {
        cursor: head,
        ..webhooks::State::default()
    };
    cx.local
        .batcher
        .commit(|st| {
            webhooks::stage_config(st, &c)?;
            webhooks::stage_state(st, c.id, &start)
        })
        .await?;
    let e = fleet.webhooks.added(c, head);
    Ok(with_secret(&e, 201))
}

async fn save(cx: &Ctx<'_>, c: Config) -> Result<(), ApiError> {
    cx.local
        .batcher
        .commit(|st| webhooks::stage_config(st, &c))
        .await?;
    cx.local.fleet().webhooks.changed(c);
    Ok(())
}

/// `PATCH /api/webhooks/{id} {"url"?,"events"?,"description"?,"enabled"?}`. Enabling an endpoint
/// that was disabled (by hand or after days of failures) starts it afresh from where its cursor
/// stands.
pub async fn patch(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let e = endpoint(cx)?;
    let body = JsonObject::from_request(cx.req)?;
    if let Some(k) = body.unknown_key(&["url", "events", "description", "enabled"]) {
        return Err(ApiError::invalid_field(format!(
            "unknown field `{k}`: a PATCH changes url, events, description, enabled"
        )));
    }
    let mut c = e.config();
    if body.get("url").is_some() {
        c.url = url_field(cx, &body)?;
    }
    if let Some(events) = events_field(&body, false)? {
        if matches!(c.preset, Preset::Erpnext { .. }) && events != [Kind::Attendance] {
            return Err(ApiError::invalid_field(
                "the erpnext preset takes punches only: `events` is [\"attendance\"]",
            ));
        }
        c.events = events;
    }
    if body.get("description").is_some() {
        c.description = description_field(&body)?;
    }
    let enabling = body.opt_bool("enabled") == Some(true) && !c.enabled;
    if let Some(on) = body.opt_bool("enabled") {
        c.enabled = on;
    }
    c.updated_at = now_ms().max(c.updated_at);
    save(cx, c).await?;
    if enabling {
        let cursor = e.state().cursor;
        *e.replay_from.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor + 1);
        e.state().disabled_reason = None;
    }
    Ok(Response::json(200, webhooks::to_json(&e).into_bytes()))
}

pub async fn delete(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let e = endpoint(cx)?;
    let id = e.config().id;
    cx.local
        .batcher
        .commit(|st| webhooks::stage_delete(st, id))
        .await?;
    cx.local.fleet().webhooks.removed(id);
    Ok(crate::api::users::ok())
}

/// `POST /api/webhooks/{id}/rotate-secret` → the endpoint with its new secret; the old one still
/// signs (a second signature) for a day.
pub async fn rotate_secret(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let e = endpoint(cx)?;
    let mut c = e.config();
    if !matches!(c.preset, Preset::Standard) {
        return Err(ApiError::invalid_field(
            "an erpnext endpoint signs nothing: change its API key in ERPNext and here",
        ));
    }
    let now = now_ms();
    let old = std::mem::replace(
        &mut c.secret,
        webhooks::new_secret().map_err(random_failed)?,
    );
    c.previous_secret = Some((old, now + PREVIOUS_SECRET_MS));
    c.updated_at = now;
    save(cx, c).await?;
    Ok(with_secret(&e, 200))
}

/// `POST /api/webhooks/{id}/replay {"from"}`: every message from that time on is delivered again
/// (as far back as the outbox keeps, `--webhooks-retain-days`).
pub fn replay(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let e = endpoint(cx)?;
    let body = JsonObject::from_request(cx.req)?;
    let why = "`from` is required: an RFC 3339 time such as 2026-06-12T00:00:00Z";
    let from = body
        .string("from", why)?
        .parse::<jiff::Timestamp>()
        .map_err(|_| ApiError::invalid_field(why))?;
    let from_us = from.as_microsecond().max(1) as u64;
    *e.replay_from.lock().unwrap_or_else(|p| p.into_inner()) = Some(from_us);
    let mut out = String::from("{\"ok\":true,\"from\":");
    json::push_str(&mut out, &from.to_string());
    out.push('}');
    Ok(Response::json(202, out.into_bytes()))
}

/// `GET /api/webhooks/{id}/deliveries?limit&cursor`: attempts, newest first.
pub fn deliveries(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let id = endpoint(cx)?.config().id;
    let limit = cx.query.limit()?;
    let before = cx.query.key_cursor(&id.to_be_bytes())?;
    let (items, next) =
        webhooks::deliveries(&cx.local.fleet().store, id, before.as_deref(), limit)?;
    Ok(key_page(&items, next))
}
