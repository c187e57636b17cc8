//! Pending devices: serials that tried to connect, waiting for an admin's decision.

use simd_json::prelude::*;

use crate::api::answer::{page, store_error};
use crate::api::extract::{json_body, parse_object};
use crate::fleet::pending::PendingDevice;
use crate::fleet::provision::{NewDevice, ProvisionError, provision};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::json;
use crate::shard::local::Local;
use crate::store::Cf;
use crate::time::rfc3339_ms;

fn item(p: &PendingDevice) -> String {
    let mut s = String::from("{\"serial\":");
    json::push_str(&mut s, &p.serial);
    s.push_str(",\"protocol\":\"");
    s.push_str(p.protocol.as_str());
    s.push_str("\",\"first_seen\":\"");
    s.push_str(&rfc3339_ms(p.first_seen));
    s.push_str("\",\"last_seen\":\"");
    s.push_str(&rfc3339_ms(p.last_seen));
    s.push_str("\",\"model\":");
    match &p.model {
        Some(m) => json::push_str(&mut s, m),
        None => s.push_str("null"),
    }
    s.push_str(",\"firmware\":");
    match &p.firmware {
        Some(m) => json::push_str(&mut s, m),
        None => s.push_str("null"),
    }
    s.push_str(",\"remote\":");
    json::push_str(&mut s, &p.remote);
    s.push_str(",\"requests\":");
    s.push_str(&p.requests.to_string());
    s.push('}');
    s
}

pub fn list(local: &Local) -> Response {
    let items: Vec<String> = local.fleet().pending.list().iter().map(item).collect();
    page(&items, None)
}

pub async fn approve(local: &Local, serial: &str, req: &Request) -> Response {
    if local.fleet().pending.get(serial).is_none() {
        return Response::error(404, "not_found", "no pending device with this serial");
    }
    let mut body = match json_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v = match parse_object(&mut body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let name = match v.get("name").and_then(|n| n.as_str()).map(str::trim) {
        Some(n) if !n.is_empty() && n.len() <= 128 => n.to_string(),
        _ => {
            return Response::error(
                400,
                "invalid_field",
                "`name` is required: 1 to 128 characters",
            );
        }
    };
    let settings = match v.get("settings") {
        None => Default::default(),
        Some(s) => match crate::api::devices::settings_from(s) {
            Ok(m) => m,
            Err(r) => return r,
        },
    };
    // Take the entry before the commit's wait, so that of concurrent approvals exactly one
    // creates the device (provisioning also reserves the serial).
    let Some(p) = local.fleet().pending.remove(serial) else {
        return Response::error(404, "not_found", "no pending device with this serial");
    };
    let new = NewDevice {
        name,
        protocol: p.protocol,
        serial: Some(p.serial.clone()),
        settings,
        info: None,
    };
    match provision(local.fleet(), &local.batcher, new, |st| {
        st.delete(Cf::Pending, serial.as_bytes())
    })
    .await
    {
        Ok((dev, token)) => crate::api::devices::created(&dev, &token),
        Err(ProvisionError::SerialTaken) => Response::error(
            409,
            "serial_taken",
            "a device with this serial exists or is being created",
        ),
        Err(ProvisionError::Failed(e)) => {
            local.fleet().pending.restore(p);
            store_error(e)
        }
    }
}

pub async fn dismiss(local: &Local, serial: &str) -> Response {
    if local.fleet().pending.remove(serial).is_none() {
        return Response::error(404, "not_found", "no pending device with this serial");
    }
    if let Err(e) = local
        .batcher
        .commit(|st| st.delete(Cf::Pending, serial.as_bytes()))
        .await
    {
        return store_error(e);
    }
    let mut s = String::from("{\"serial\":");
    json::push_str(&mut s, serial);
    s.push_str(",\"dismissed\":true}");
    Response::json(200, s.into_bytes())
}
