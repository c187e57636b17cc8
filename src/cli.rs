//! Command-line interface: `serve`, and small clients of the admin API (`device`, `command`).

use clap::{Args, Parser, Subcommand};
use simd_json::prelude::*;

use crate::client::Client;
use crate::config::ServeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "fleetgate",
    version,
    about = "Gateway for device fleets: WebSocket and HTTP devices, biometric terminals, live dashboard"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeConfig),
    /// Manage devices through the admin API.
    Device {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Send commands to devices through the admin API.
    Command {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        action: CommandAction,
    },
    /// Check this machine against tuning/README.md (io_uring, limits, sysctls, CPUs, fsync
    /// latency) and print what to change. Exit status 1 if any check FAILs.
    Doctor(crate::doctor::args::DoctorArgs),
}

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "FLEETGATE_SERVER",
        default_value = "http://127.0.0.1:3000"
    )]
    pub server: String,
    /// The admin token (see `<data-dir>/admin-token`).
    #[arg(
        long,
        global = true,
        env = "FLEETGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Print the API's JSON answer as is.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum DeviceAction {
    /// Create a device; prints its id and token (the token is shown only once).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "generic")]
        protocol: String,
        #[arg(long)]
        serial: Option<String>,
    },
    /// List devices with their status.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Issue a new token; the old one stops working at once.
    RotateToken { device_id: String },
    /// Delete a device and its data.
    Delete { device_id: String },
}

#[derive(Subcommand, Debug)]
pub enum CommandAction {
    /// Queue a command for a device (delivered now if online, else when it registers).
    Send {
        device_id: String,
        command: String,
        /// JSON payload.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Seconds before an undelivered command expires.
        #[arg(long)]
        ttl: Option<u64>,
    },
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn client(api: &ApiArgs) -> Result<Client, Error> {
    let token = api
        .admin_token
        .as_deref()
        .ok_or("an admin token is needed: --admin-token or FLEETGATE_ADMIN_TOKEN")?;
    Ok(Client::new(&api.server)?.with_token(token))
}

/// Prints an API answer; a non-2xx status becomes an error with the API's message.
fn answer(
    api: &ApiArgs,
    status: u16,
    body: &[u8],
    human: impl FnOnce(&simd_json::OwnedValue) -> String,
) -> Result<(), Error> {
    let mut b = body.to_vec();
    let v = simd_json::to_owned_value(&mut b)
        .map_err(|e| format!("the server sent invalid JSON ({e})"))?;
    if !(200..300).contains(&status) {
        let msg = v
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("request failed");
        return Err(format!("HTTP {status}: {msg}").into());
    }
    if api.json {
        println!("{}", String::from_utf8_lossy(body));
    } else {
        println!("{}", human(&v));
    }
    Ok(())
}

fn s<'a>(v: &'a simd_json::OwnedValue, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("-")
}

pub fn run_device(api: &ApiArgs, action: &DeviceAction) -> Result<(), Error> {
    let c = client(api)?;
    match action {
        DeviceAction::Add {
            name,
            protocol,
            serial,
        } => {
            let mut body = String::from("{\"name\":");
            crate::json::push_str(&mut body, name);
            body.push_str(",\"protocol\":");
            crate::json::push_str(&mut body, protocol);
            if let Some(sn) = serial {
                body.push_str(",\"serial\":");
                crate::json::push_str(&mut body, sn);
            }
            body.push('}');
            let r = c.post_json("/api/devices", body.as_bytes())?;
            answer(api, r.status, &r.body, |v| {
                format!(
                    "device_id: {}\ntoken:     {}\n(the token is shown only now)",
                    s(v, "device_id"),
                    s(v, "token")
                )
            })
        }
        DeviceAction::List { limit } => {
            let r = c.get(&format!("/api/devices?limit={limit}"))?;
            answer(api, r.status, &r.body, |v| {
                let mut out = format!(
                    "{:<36}  {:<8}  {:<8}  NAME",
                    "DEVICE_ID", "STATUS", "PROTOCOL"
                );
                for d in v
                    .get("items")
                    .and_then(|i| i.as_array())
                    .map(|a| a.as_slice())
                    .unwrap_or(&[])
                {
                    out.push_str(&format!(
                        "\n{:<36}  {:<8}  {:<8}  {}",
                        s(d, "device_id"),
                        s(d, "status"),
                        s(d, "protocol"),
                        s(d, "name")
                    ));
                }
                out
            })
        }
        DeviceAction::RotateToken { device_id } => {
            let r = c.request("POST", &format!("/api/devices/{device_id}/token"), None)?;
            answer(api, r.status, &r.body, |v| {
                format!("token: {}\n(the old token no longer works)", s(v, "token"))
            })
        }
        DeviceAction::Delete { device_id } => {
            let r = c.delete(&format!("/api/devices/{device_id}"))?;
            answer(api, r.status, &r.body, |_| format!("deleted {device_id}"))
        }
    }
}

pub fn run_command(api: &ApiArgs, action: &CommandAction) -> Result<(), Error> {
    let c = client(api)?;
    match action {
        CommandAction::Send {
            device_id,
            command,
            payload,
            ttl,
        } => {
            let mut check = payload.clone().into_bytes();
            simd_json::to_owned_value(&mut check)
                .map_err(|e| format!("--payload is not JSON: {e}"))?;
            let mut body = String::from("{\"command\":");
            crate::json::push_str(&mut body, command);
            body.push_str(",\"payload\":");
            body.push_str(payload);
            if let Some(t) = ttl {
                body.push_str(&format!(",\"ttl_s\":{t}"));
            }
            body.push('}');
            let r = c.post_json(
                &format!("/api/devices/{device_id}/commands"),
                body.as_bytes(),
            )?;
            answer(api, r.status, &r.body, |v| {
                format!(
                    "command_id: {}\nstatus:     {}",
                    s(v, "command_id"),
                    s(v, "status")
                )
            })
        }
    }
}
