//! How the server and the fleet are doing: `/healthz` (no authentication), `/metrics`
//! (Prometheus) and `/api/stats` (the dashboard's overview).

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::http::response::Response;

/// Liveness: the process serves. `store` tells whether writes currently fail (disk full, I/O
/// errors); devices then hear "not stored" and keep their data.
pub fn health(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let fleet = cx.local.fleet();
    let store = &fleet.store;
    let state = if store.guard.is_low() {
        "disk_low"
    } else if store.writes_failing() {
        "writes_failing"
    } else {
        "ok"
    };
    let mut body = format!("{{\"status\":\"ok\",\"store\":\"{state}\"");
    // In cluster mode: whether NATS is reachable, and how many records wait for the export.
    let export = &fleet.webhooks.export;
    if export.is_on() {
        let nats = if export.connected.load(std::sync::atomic::Ordering::Acquire) {
            "connected"
        } else {
            "disconnected"
        };
        let cluster = if fleet.cluster.is_ready() {
            "ready"
        } else {
            "starting"
        };
        body.push_str(&format!(
            ",\"cluster\":\"{cluster}\",\"nats\":\"{nats}\",\"export_lag\":{}",
            export.lag()
        ));
    }
    body.push('}');
    Ok(Response::json(200, body.into_bytes()))
}

pub fn metrics(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    Ok(Response::text(
        200,
        "text/plain; version=0.0.4",
        cx.prometheus.render().into_bytes(),
    ))
}

#[derive(Serialize)]
struct Stats {
    devices: usize,
    online: usize,
    offline: usize,
    never_seen: usize,
    pending: usize,
    messages_total: u64,
}

/// Counts for the overview. `online`, `offline` (seen before) and `never_seen` partition `devices`.
pub fn stats(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let fleet = cx.local.fleet();
    let (mut devices, mut online, mut never_seen) = (0, 0, 0);
    fleet.registry.visit_from(None, |d| {
        devices += 1;
        if d.is_online() {
            online += 1;
        } else if d.last_seen_ms.load(Ordering::Relaxed) == 0 {
            never_seen += 1;
        }
        true
    });
    Ok(Response::json_value(
        200,
        &Stats {
            devices,
            online,
            offline: devices - online - never_seen,
            never_seen,
            pending: fleet.pending.len(),
            messages_total: fleet.messages.load(Ordering::Relaxed),
        },
    ))
}
