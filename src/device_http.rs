//! `POST /api/device-http`: terminals that cannot hold a socket post JSON commands (`reg`,
//! `sendlog`, `checklive`), identified by serial number. Answers follow the connect guide:
//! `{"ret":<cmd>,"result":true|false,"cloudtime"|"reason"}`; `sendlog` answers `true` only after the
//! records are durable, so a device that hears `false` keeps its records and sends them again.

use std::sync::Arc;

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::attendance::{self, Kind};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::json;
use crate::provision::{NewDevice, ProvisionError, provision};
use crate::registry::Device;
use crate::shard::Local;
use crate::store::records::{self, Protocol, Source};
use crate::store::{Cf, keys};
use crate::time::{now_ms, now_us};

/// `cloudtime` as the guide shows it: RFC 3339, UTC, whole seconds, `Z`.
pub fn cloudtime(ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

fn ok(ret: &str, extra: &str) -> Response {
    let mut s = String::from("{\"ret\":");
    json::push_str(&mut s, ret);
    s.push_str(",\"result\":true,\"cloudtime\":\"");
    s.push_str(&cloudtime(now_ms()));
    s.push('"');
    s.push_str(extra);
    s.push('}');
    Response::json(200, s.into_bytes())
}

fn refuse(ret: &str, reason: &str) -> Response {
    let mut s = String::from("{\"ret\":");
    json::push_str(&mut s, ret);
    s.push_str(",\"result\":false,\"reason\":");
    json::push_str(&mut s, reason);
    s.push('}');
    Response::json(200, s.into_bytes())
}

pub async fn handle(local: &Local, req: &Request, remote: &str) -> Response {
    let ct = req
        .header_str("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/json") {
        return Response::error(
            400,
            "unsupported_content_type",
            "send the body as Content-Type: application/json",
        );
    }
    let mut body = crate::lenient::strip_trailing_commas(&req.body);
    if crate::lenient::too_deep(&body, crate::lenient::MAX_JSON_DEPTH) {
        return Response::error(400, "invalid_json", "the JSON nests too deep");
    }
    let v = match simd_json::to_borrowed_value(&mut body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return Response::error(400, "invalid_json", "the body must be a JSON object"),
        Err(e) => {
            return Response::error(400, "invalid_json", &format!("malformed JSON body: {e}"));
        }
    };
    let Some(cmd) = v.get("cmd").and_then(|c| c.as_str()) else {
        return Response::error(
            400,
            "invalid_message",
            "`cmd` is required (reg, sendlog or checklive)",
        );
    };
    if !matches!(cmd, "reg" | "sendlog" | "checklive") {
        return refuse(
            cmd,
            &format!("unknown cmd {cmd:?}: this endpoint takes reg, sendlog and checklive"),
        );
    }
    let sn = match v.get("sn") {
        Some(s) if s.is_str() => s.as_str().unwrap_or("").trim().to_string(),
        Some(s) if s.is_u64() || s.is_i64() => json::encode(s),
        _ => String::new(),
    };
    if sn.is_empty() || sn.len() > 64 {
        return refuse(
            cmd,
            "sn is required: the device's serial number, 1 to 64 characters",
        );
    }
    let now = now_ms();
    let devinfo = v.get("devinfo").filter(|d| d.is_object());
    let dev = match local.shared.registry.by_serial(&sn) {
        Some(d) => d,
        None if local.config().auto_approve => {
            let model = devinfo.and_then(|d| json::get_str(d, "modelname"));
            match create_for_serial(local, &sn, Protocol::Http, model, devinfo.map(json::encode))
                .await
            {
                Ok(d) => d,
                Err(e) => return refuse(cmd, &e),
            }
        }
        None => {
            let model = devinfo.and_then(|d| json::get_str(d, "modelname"));
            let firmware = devinfo.and_then(|d| json::get_str(d, "firmware"));
            local
                .shared
                .pending
                .seen(local, &sn, Protocol::Http, model, firmware, remote, now);
            return refuse(
                cmd,
                &format!(
                    "device {sn} is not approved yet: an administrator must approve it in the pending devices list"
                ),
            );
        }
    };
    local.http_seen(&dev, remote);
    match cmd {
        "reg" => register(local, &dev, &v, devinfo).await,
        "sendlog" => sendlog(local, &dev, &v).await,
        _ => ok("checklive", ""),
    }
}

/// How long (in 10 ms steps) a request waits for a concurrent creation of the same serial.
const CREATION_WAIT_STEPS: usize = 500;

/// Creates a device for a serial that presented itself (`--auto-approve`), for any protocol.
pub async fn create_for_serial(
    local: &Local,
    sn: &str,
    protocol: Protocol,
    model: Option<&str>,
    info: Option<String>,
) -> Result<Arc<Device>, String> {
    let new = NewDevice {
        name: format!("{} {sn}", model.unwrap_or("device")),
        protocol,
        serial: Some(sn.to_string()),
        settings: Default::default(),
        info,
    };
    match provision(local, new, |_| Ok(())).await {
        Ok((dev, _token)) => {
            tracing::info!(
                serial = sn,
                protocol = protocol.as_str(),
                "auto-approved a new device"
            );
            Ok(dev)
        }
        Err(ProvisionError::SerialTaken) => {
            // Another request for this serial is creating the device right now: use it once it exists.
            for _ in 0..CREATION_WAIT_STEPS {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                if let Some(d) = local.shared.registry.by_serial(sn) {
                    return Ok(d);
                }
            }
            Err(format!("device {sn} is being registered; retry"))
        }
        Err(ProvisionError::Failed(e)) => Err(e),
    }
}

async fn register(
    local: &Local,
    dev: &Arc<Device>,
    v: &Value<'_>,
    devinfo: Option<&Value<'_>>,
) -> Response {
    let mut info = String::from("{");
    if let Some(c) = v.get("cpusn") {
        info.push_str("\"cpusn\":");
        info.push_str(&json::encode(c));
    }
    if let Some(d) = devinfo {
        if info.len() > 1 {
            info.push(',');
        }
        info.push_str("\"devinfo\":");
        info.push_str(&json::encode(d));
    }
    info.push('}');
    if info.len() > 16 * 1024 {
        return refuse("reg", "devinfo is too large (16 KiB at most)");
    }
    let rec = dev.update_record(|r| r.info = Some(info));
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await
    {
        tracing::error!(error = %e, "storing devinfo failed");
        return refuse("reg", "the server could not store the registration; retry");
    }
    ok("reg", "")
}

async fn sendlog(local: &Local, dev: &Arc<Device>, v: &Value<'_>) -> Response {
    let Some(list) = v
        .get("record")
        .or_else(|| v.get("records"))
        .and_then(|r| r.as_array())
    else {
        return refuse(
            "sendlog",
            "record is required: an array of attendance records",
        );
    };
    if list.len() > attendance::MAX_RECORDS {
        return refuse(
            "sendlog",
            &format!("at most {} records per sendlog", attendance::MAX_RECORDS),
        );
    }
    let owned: Vec<simd_json::OwnedValue> = list.iter().map(|r| r.clone().into()).collect();
    match store_records(local, dev, &owned).await {
        Ok(()) => ok("sendlog", ""),
        Err(reason) => refuse("sendlog", &reason),
    }
}

/// Stores a `sendlog`'s records and waits for the commit. Punches are de-duplicated against the
/// store and within the batch; door events and unknown faces become events; a record that cannot
/// be read is kept as an `attendance_invalid` event rather than dropped (a re-send could never fix
/// it, and refusing the batch would make the device re-send it forever).
pub async fn store_records(
    local: &Local,
    dev: &Arc<Device>,
    list: &[simd_json::OwnedValue],
) -> Result<(), String> {
    let store = local.shared.store.clone();
    let rec = dev.record();
    let tz = rec
        .settings
        .get("timezone")
        .and_then(|t| jiff::tz::TimeZone::get(t).ok())
        .unwrap_or_else(jiff::tz::TimeZone::system);
    let received = now_ms();
    let mut seen = std::collections::HashSet::new();
    let mut staged_any = false;
    let ticket = local.batcher.stage(|st| {
        for raw in list {
            let p = match attendance::parse_record(raw) {
                Ok(p) => p,
                Err(e) => {
                    let mut payload = String::from("{\"error\":");
                    json::push_str(&mut payload, &e.0);
                    payload.push_str(",\"record\":");
                    payload.push_str(&json::encode(raw));
                    payload.push('}');
                    let id = store.ids.next(now_us());
                    records::stage_event(
                        st,
                        id,
                        Some(&dev.id),
                        "attendance_invalid",
                        Source::Device,
                        &payload,
                        None,
                    )?;
                    staged_any = true;
                    continue;
                }
            };
            let identity = p.identity();
            if !seen.insert(identity)
                || store.exists(
                    Cf::AttendanceDedup,
                    &attendance::dedup_key(&dev.id, &identity),
                )?
            {
                metrics::counter!("fleetgate_attendance_duplicates_total").increment(1);
                continue;
            }
            let utc_us = p
                .utc(&tz)
                .map_or(received * 1000, |t| t.as_microsecond().max(0) as u64);
            let primary = attendance::key(&dev.id, utc_us, &identity);
            let item = attendance::item_json(
                &primary,
                &dev.id,
                rec.serial.as_deref(),
                &p,
                utc_us,
                received,
                p.photo.is_some(),
            );
            match p.kind {
                Kind::Punch => {
                    attendance::stage(st, &dev.id, &primary, &identity, &item, p.photo.as_deref())?;
                    metrics::counter!("fleetgate_attendance_records_total").increment(1);
                }
                Kind::Door | Kind::UnknownFace => {
                    // Not attendance: an event, de-duplicated like a punch.
                    let kind = if p.kind == Kind::Door {
                        "door_event"
                    } else {
                        "unknown_face"
                    };
                    let id = store.ids.next(now_us());
                    records::stage_event(st, id, Some(&dev.id), kind, Source::Device, &item, None)?;
                    st.put(
                        Cf::AttendanceDedup,
                        &attendance::dedup_key(&dev.id, &identity),
                        &keys::event(id),
                    )?;
                    if let Some(ph) = &p.photo {
                        st.put(Cf::Photos, &primary, ph)?;
                    }
                }
            }
            staged_any = true;
        }
        Ok(())
    });
    let ticket = match ticket {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "staging attendance failed");
            return Err("the records could not be stored; keep them and send again".into());
        }
    };
    if staged_any && !ticket.wait().await {
        return Err("the records could not be stored; keep them and send again".into());
    }
    Ok(())
}
