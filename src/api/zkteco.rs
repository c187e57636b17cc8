//! ZKTeco ADMS terminals (`/iclock/…`, with or without `.aspx`): they poll over plain HTTP and
//! identify themselves by serial number, like `/api/device-http`. Reading requests and writing
//! answers is `fleetgate_core::zkteco`; storing and handing out commands is `fleet::zkteco`.
//! Every answer is plain text with a `Date` header, which the terminals set their clocks from.
//!
//! Refusals keep the terminal's records: 403 for a serial that is not an approved device (it
//! waits in the pending list) or an address the device may not use, 503 when the store could not
//! take an upload. The terminal tries again after `ErrorDelay`.

use std::net::SocketAddr;

use crate::clock::Clock;
use crate::fleet::provision::{self, Newcomer, NotYet};
use crate::fleet::{identity, zkteco};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::shard::local::Local;
use crate::store::records::Protocol;
use crate::time::{now_ms, timestamp_now};
use crate::zkteco::tables::{self, PhotoError};
use crate::zkteco::{self as adms, Call, Endpoint, Options, Table};

/// Answers a request under `/iclock/`: `endpoint` is what `adms::endpoint` made of its path.
pub async fn handle(
    local: &Local,
    req: &Request,
    remote: SocketAddr,
    endpoint: Result<Endpoint, ()>,
) -> Response {
    let answer = match endpoint {
        Ok(e) => answer(local, req, remote, e).await,
        Err(()) => adms::refuse(404, "no such ADMS endpoint"),
    };
    answer.with_header("Date", adms::http_date(timestamp_now()))
}

async fn answer(local: &Local, req: &Request, remote: SocketAddr, endpoint: Endpoint) -> Response {
    let incoming = match adms::read(endpoint, req.method, &req.query, &req.body) {
        Ok(i) => i,
        Err(r) => return r.response(),
    };
    let sn = incoming.serial.as_str();
    let fleet = local.fleet();
    let ip = remote.ip();
    let dev = match fleet.registry.by_serial(sn) {
        Some(d) => d,
        None => {
            let remote = remote.to_string();
            let info = match &incoming.call {
                Call::Handshake { info } => Some(info.clone()),
                _ => None,
            };
            let newcomer = Newcomer {
                serial: sn,
                protocol: Protocol::Zkteco,
                model: Some("ZKTeco"),
                firmware: None,
                info,
                remote: &remote,
                ip,
            };
            match provision::first_contact(fleet, &local.batcher, newcomer).await {
                Ok(d) => d,
                Err(NotYet::Failed(e)) => return adms::refuse(503, &e),
                Err(NotYet::Pending) => {
                    return adms::refuse(
                        403,
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
        return adms::refuse(403, "this device may not connect from this address");
    }
    local.http_seen(&dev, remote);
    let batch = &local.batcher;
    match incoming.call {
        Call::Handshake { info } => {
            if dev.with_record(|r| r.info.is_none()) {
                zkteco::report_info(batch, &dev, &info);
            }
            let stamps: Vec<(&'static str, String)> = dev.with_record(|r| {
                ["ATTLOGStamp", "OPERLOGStamp", "ATTPHOTOStamp"]
                    .into_iter()
                    .filter_map(|n| r.stamps.get(n).map(|v| (n, v.clone())))
                    .collect()
            });
            let stamps: Vec<(&'static str, &str)> =
                stamps.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let zone = dev.zone();
            adms::options_reply(
                sn,
                &Options {
                    stamps: &stamps,
                    zone: zone.as_ref(),
                },
                timestamp_now(),
            )
        }
        Call::Upload { table, stamp, body } => {
            let stamp = table.stamp_name().zip(stamp.as_deref());
            let stored = match &table {
                Table::Attlog => zkteco::store_attlog(fleet, batch, &dev, body, stamp).await,
                Table::Operlog => {
                    zkteco::store_lines(fleet, batch, &dev, "OPERLOG", body, stamp).await
                }
                Table::Other(name) => {
                    zkteco::store_lines(fleet, batch, &dev, name, body, stamp).await
                }
                Table::Attphoto => match tables::attphoto(body) {
                    Ok(p) => zkteco::store_photo(fleet, batch, &dev, &p, stamp)
                        .await
                        .map(|()| 1),
                    // The terminal would send it again for ever, so refusing it cannot help: what
                    // it was is kept as an event (its head, which names the punch), once.
                    Err(e) => {
                        let head = String::from_utf8_lossy(&body[..body.len().min(120)])
                            .replace(['\0', '\r', '\n'], " ");
                        let why = match e {
                            PhotoError::Unnamed => "not named YYYYMMDDHHMMSS-PIN.jpg",
                            PhotoError::TooLarge => "larger than the largest photo kept",
                        };
                        let line = format!("{why} ({} bytes): {head}", body.len());
                        zkteco::store_lines(fleet, batch, &dev, "ATTPHOTO", line.as_bytes(), stamp)
                            .await
                            .map(|_| 1)
                    }
                },
                Table::Options => {
                    zkteco::report_info(batch, &dev, &tables::options(body));
                    Ok(tables::count_lines(body))
                }
            };
            match stored {
                Ok(n) => adms::stored(n),
                Err(reason) => adms::refuse(503, reason),
            }
        }
        Call::Poll { info } => {
            if let Some(i) = info {
                zkteco::report_info(batch, &dev, &i);
            }
            let wall = Clock::new(dev.zone()).wall_or_utc(timestamp_now());
            let lines = zkteco::hand_out(fleet, batch, &dev, now_ms(), wall).await;
            if lines.is_empty() {
                adms::ok()
            } else {
                adms::commands_reply(&lines)
            }
        }
        Call::Results(answers) => match zkteco::take_answers(fleet, batch, &dev, &answers).await {
            Ok(()) => adms::ok(),
            Err(reason) => adms::refuse(503, reason),
        },
        Call::Ping => adms::ok(),
    }
}
