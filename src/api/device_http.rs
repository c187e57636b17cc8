//! `POST /api/device-http`: terminals that cannot hold a socket post JSON commands (`reg`,
//! `sendlog`, `checklive`), identified by serial number. Answers follow the connect guide:
//! `{"ret":<cmd>,"result":true|false,"cloudtime"|"reason"}`; `sendlog` answers `true` only after the
//! records are durable, so a device that hears `false` keeps its records and sends them again.

use std::net::SocketAddr;

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::fleet::provision::{self, Newcomer, NotYet};
use crate::fleet::registry::Device;
use crate::fleet::{attendance, identity};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::records::{self, Protocol};
use crate::time::now_ms;

// Reading the body is sans-IO and lives in the core crate, where it is fuzzed.
pub use fleetgate_core::device_http::cloudtime;
use fleetgate_core::device_http::{Payload, parse, refuse};

fn ok(ret: &str) -> Response {
    fleetgate_core::device_http::ok(ret, now_ms())
}

/// Every answer, refusals included, is in the device protocol's shape (`result:false` with a
/// reason, or core's 400s), which devices parse; none is an `ApiError`.
pub async fn handle(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    Ok(answer(cx.local, cx.req, cx.remote).await)
}

async fn answer(local: &Local, req: &Request, remote: SocketAddr) -> Response {
    let body = match parse(req.header_str("content-type"), &req.body) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (cmd, sn) = (body.cmd.as_str(), body.sn.as_str());
    let fleet = local.fleet();
    let ip = remote.ip();
    let dev = match fleet.registry.by_serial(sn) {
        Some(d) => d,
        None => {
            let remote = remote.to_string();
            let newcomer = Newcomer {
                serial: sn,
                protocol: Protocol::Http,
                model: body.model.as_deref(),
                firmware: body.firmware.as_deref(),
                info: body.devinfo.clone(),
                remote: &remote,
                ip,
            };
            match provision::first_contact(fleet, &local.batcher, newcomer).await {
                Ok(d) => d,
                Err(NotYet::Failed(e)) => return refuse(cmd, &e),
                Err(NotYet::Pending) => {
                    return refuse(
                        cmd,
                        &format!(
                            "device {sn} is not approved yet: an administrator must approve it in the pending devices list"
                        ),
                    );
                }
            }
        }
    };
    // Checked before the request counts as the device's: an impostor must not keep it online.
    if !identity::admit(&dev, ip, sn) {
        return refuse(cmd, "this device may not connect from this address");
    }
    local.http_seen(&dev, remote);
    match body.payload {
        Payload::Reg(Ok(info)) => register(local, &dev, info).await,
        Payload::Sendlog(Ok(records)) => {
            match attendance::store_records(fleet, &local.batcher, &dev, &records).await {
                Ok(()) => ok("sendlog"),
                Err(reason) => refuse("sendlog", reason),
            }
        }
        Payload::Reg(Err(reason)) | Payload::Sendlog(Err(reason)) => refuse(cmd, &reason),
        Payload::Checklive => ok("checklive"),
    }
}

async fn register(local: &Local, dev: &Device, info: String) -> Response {
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
