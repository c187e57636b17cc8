//! `POST /api/device-http`: terminals that cannot hold a socket post JSON commands (`reg`,
//! `sendlog`, `checklive`), identified by serial number. Answers follow the connect guide:
//! `{"ret":<cmd>,"result":true|false,"cloudtime"|"reason"}`; `sendlog` answers `true` only after the
//! records are durable, so a device that hears `false` keeps its records and sends them again.

use std::sync::Arc;

use crate::http::request::Request;
use crate::http::response::Response;
use crate::provision::{NewDevice, ProvisionError, provision};
use crate::registry::Device;
use crate::shard::Local;
use crate::store::records::{self, Protocol, Source};
use crate::store::{Cf, keys};
use crate::time::{now_ms, now_us};
use crate::{attendance, attendance::Kind, json};

// Reading the body is sans-IO and lives in the core crate, where it is fuzzed.
pub use fleetgate_core::device_http::cloudtime;
use fleetgate_core::device_http::{Payload, parse, refuse};

fn ok(ret: &str) -> Response {
    fleetgate_core::device_http::ok(ret, now_ms())
}

pub async fn handle(local: &Local, req: &Request, remote: &str) -> Response {
    let body = match parse(req.header_str("content-type"), &req.body) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (cmd, sn) = (body.cmd.as_str(), body.sn.as_str());
    let dev = match local.shared.registry.by_serial(sn) {
        Some(d) => d,
        None if local.config().auto_approve => {
            let model = body.model.as_deref();
            match create_for_serial(local, sn, Protocol::Http, model, body.devinfo.clone()).await {
                Ok(d) => d,
                Err(e) => return refuse(cmd, &e),
            }
        }
        None => {
            local.shared.pending.seen(
                local,
                sn,
                Protocol::Http,
                body.model.as_deref(),
                body.firmware.as_deref(),
                remote,
                now_ms(),
            );
            return refuse(
                cmd,
                &format!(
                    "device {sn} is not approved yet: an administrator must approve it in the pending devices list"
                ),
            );
        }
    };
    local.http_seen(&dev, remote);
    match body.payload {
        Payload::Reg(Ok(info)) => register(local, &dev, info).await,
        Payload::Sendlog(Ok(records)) => match store_records(local, &dev, &records).await {
            Ok(()) => ok("sendlog"),
            Err(reason) => refuse("sendlog", &reason),
        },
        Payload::Reg(Err(reason)) | Payload::Sendlog(Err(reason)) => refuse(cmd, &reason),
        Payload::Checklive => ok("checklive"),
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

async fn register(local: &Local, dev: &Arc<Device>, info: String) -> Response {
    let rec = dev.update_record(|r| r.info = Some(info));
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await
    {
        tracing::error!(error = %e, "storing devinfo failed");
        return refuse("reg", "the server could not store the registration; retry");
    }
    ok("reg")
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
