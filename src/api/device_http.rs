//! `POST /api/device-http` (and `POST /`, `POST /face`, where AiFace HTTP firmware posts, see
//! `dispatch`): terminals that cannot hold a socket post JSON commands (`reg`, `sendlog`,
//! `checklive`), identified by serial number. Answers: `{"ret":<cmd>,"result":true|false,
//! "cloudtime"|"reason"}`, `cloudtime` on the device's wall clock; `sendlog` answers `true` (with
//! `count` and the echoed `logindex`) only after the records are durable, so a device that hears
//! `false` keeps its records and sends them again.

use std::net::SocketAddr;

use jiff::civil::DateTime;

use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::clock::Clock;
use crate::fleet::provision::{self, Newcomer, NotYet};
use crate::fleet::registry::Device;
use crate::fleet::{attendance, identity};
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::records::{self, Protocol};
use crate::time::timestamp_now;

// Reading the body is sans-IO and lives in the core crate, where it is fuzzed.
use fleetgate_core::device_http::{Done, Payload, ok, parse, refuse};

/// The route's path, which `firmware_post` requests are served as.
pub const ROUTE: &[&str] = &["api", "device-http"];

/// Whether a request is AiFace HTTP firmware posting where it does (protocols.md §4.1 [AF-HT]:
/// `POST /` and `POST /face`); `path` has its trailing `/` trimmed. `/` is the dashboard's page,
/// so there only a JSON body is a device (the page is never posted to); nothing else lives at
/// `/face`, so every POST there is, and a wrong body hears this endpoint's 400 rather than a 404.
pub fn firmware_post(method: Method, path: &str, content_type: Option<&str>) -> bool {
    let json = || {
        content_type.is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
    };
    method == Method::Post
        && match path {
            "" => json(),
            "/face" => true,
            _ => false,
        }
}

/// The success answer, `cloudtime` on the device's clock by the clock rule: its zone, else the
/// offset its own clock shows in this request (`device_time`), else none.
fn succeeded(dev: &Device, device_time: Option<DateTime>, done: Done<'_>) -> Response {
    let now = timestamp_now();
    let mut clock = Clock::new(dev.zone());
    if let Some(shown) = device_time {
        clock.observe(shown, now);
    }
    ok(done, now, &clock)
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
        Payload::Reg(Ok(info)) => register(local, &dev, info, body.device_time).await,
        Payload::Sendlog(Ok(records)) => {
            match attendance::store_records(fleet, &local.batcher, &dev, &records).await {
                Ok(()) => succeeded(
                    &dev,
                    body.device_time,
                    Done::Sendlog {
                        count: records.len(),
                        logindex: body.logindex.as_deref(),
                    },
                ),
                Err(reason) => refuse("sendlog", reason),
            }
        }
        Payload::Reg(Err(reason)) | Payload::Sendlog(Err(reason)) => refuse(cmd, &reason),
        Payload::Checklive => succeeded(&dev, body.device_time, Done::Checklive),
    }
}

async fn register(
    local: &Local,
    dev: &Device,
    info: String,
    device_time: Option<DateTime>,
) -> Response {
    let rec = dev.update_record(|r| r.info = Some(info));
    if let Err(e) = local
        .batcher
        .commit(|st| records::stage_device(st, &rec))
        .await
    {
        tracing::error!(error = %e, "storing devinfo failed");
        return refuse("reg", "the server could not store the registration; retry");
    }
    succeeded(dev, device_time, Done::Reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_paths_take_posts_and_leave_the_dashboard_alone() {
        let json = Some("application/json; charset=utf-8");
        for (method, path, ct, device) in [
            (Method::Post, "", json, true),
            (Method::Post, "", Some("Application/JSON"), true),
            (Method::Post, "/face", json, true),
            (Method::Post, "/face", Some("text/plain"), true),
            (Method::Post, "/face", None, true),
            // The dashboard's page: fetched, never posted JSON to.
            (Method::Get, "", None, false),
            (Method::Head, "", None, false),
            (Method::Post, "", Some("text/plain"), false),
            (Method::Post, "", None, false),
            (Method::Get, "/face", None, false),
            (Method::Post, "/index.html", json, false),
            (Method::Post, "/faces", json, false),
            (Method::Post, "/api/login", json, false),
        ] {
            assert_eq!(
                firmware_post(method, path, ct),
                device,
                "{method:?} {path:?} {ct:?}"
            );
        }
    }
}
