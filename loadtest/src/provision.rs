//! Device provisioning through the admin API (`POST /api/devices`), as the server expects it for
//! each protocol: generic devices get an id and a token; terminals (AiFace, SmackBio, HTTP) are
//! created with a serial number and a time zone, and then present only that serial.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::admin::{self, Admin};
use crate::proto::Protocol;

/// Parallel API clients: creation is one durable write each, so a few overlap the server's
/// commit latency without flooding it.
const THREADS: usize = 4;

/// What a worker needs to authenticate one device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cred {
    /// Generic: the device id (UUID). Terminals: the serial number.
    pub id: String,
    /// Generic: the device token. Terminals: unused (they present only their serial).
    pub secret: String,
}

/// A provisioned device: the id the admin API knows it by, and its credentials.
#[derive(Clone, Debug)]
pub struct Device {
    pub device_id: String,
    pub cred: Cred,
}

/// A tag that keeps names and serials of this run apart from earlier runs on the same server.
pub fn run_tag() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:x}{:04x}", secs & 0xff_ffff, std::process::id() & 0xffff)
}

/// Credentials for the raw sink, which checks none: ids and serials only have to be distinct.
pub fn fake(protocol: Protocol, n: usize) -> Vec<Device> {
    let tag = run_tag();
    (0..n)
        .map(|i| {
            let id = match protocol {
                Protocol::Generic => format!("sink-{tag}-{i}"),
                _ => format!("LT{tag}S{i}"),
            };
            Device {
                device_id: id.clone(),
                cred: Cred {
                    id,
                    secret: "tok_sink".into(),
                },
            }
        })
        .collect()
}

/// Creates `n` devices of `protocol` and returns them in order.
pub fn create(
    addr: SocketAddr,
    admin_token: &str,
    protocol: Protocol,
    n: usize,
) -> Result<Vec<Device>, String> {
    let tag = run_tag();
    let per = n.div_ceil(THREADS);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (token, tag) = (admin_token.to_string(), tag.clone());
            std::thread::spawn(move || -> Result<Vec<Device>, String> {
                let mut api = Admin::new(addr, &token);
                let mut out = Vec::new();
                for i in (t * per)..((t + 1) * per).min(n) {
                    let serial = format!("LT{tag}N{i}");
                    let body = match protocol {
                        Protocol::Generic => format!(r#"{{"name":"lt-{tag}-{i}"}}"#),
                        // UTC keeps the harness's wall-clock record times unambiguous.
                        p => format!(
                            r#"{{"name":"lt-{tag}-{i}","protocol":"{}","serial":"{serial}","settings":{{"timezone":"UTC"}}}}"#,
                            p.api_name()
                        ),
                    };
                    let resp = api
                        .call("POST", "/api/devices", Some(body.as_bytes()), false)
                        .map_err(|e| format!("POST /api/devices: {e}"))?;
                    let v = admin::json_ok(&resp, "POST /api/devices")?;
                    let field = |k: &str| {
                        v.get(k)
                            .and_then(|x| x.as_str())
                            .map(str::to_owned)
                            .ok_or_else(|| format!("POST /api/devices: no {k} in {v}"))
                    };
                    let device_id = field("device_id")?;
                    let cred = match protocol {
                        Protocol::Generic => Cred {
                            id: device_id.clone(),
                            secret: field("token")?,
                        },
                        _ => Cred {
                            id: serial,
                            secret: String::new(),
                        },
                    };
                    out.push(Device { device_id, cred });
                }
                Ok(out)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.join().map_err(|_| "provisioning thread panicked")??);
    }
    Ok(all)
}
