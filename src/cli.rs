//! Command-line interface: `serve`, `doctor`, small clients of the admin API (`device`,
//! `command`, `export`), and the operator's `backup` and `restore`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use simd_json::prelude::*;

use crate::client::{Client, ClientResponse};
use crate::config::ServeConfig;
use crate::http::query::encode_component;

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
    /// Back up the data directory (store, admin token, users, devices, all records): through a
    /// running server (--url), or a stopped server's (--data-dir).
    Backup(BackupArgs),
    /// Restore a backup into a data directory no server runs on.
    Restore(RestoreArgs),
    /// Export telemetry and events as NDJSON (one JSON object a line, oldest first) through the
    /// admin API.
    Export(ExportArgs),
}

/// Which server to ask, and with what.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long = "server",
        visible_alias = "url",
        global = true,
        env = "FLEETGATE_SERVER",
        default_value = "http://127.0.0.1:3000"
    )]
    pub url: String,
    /// The admin token (see `<data-dir>/admin-token`).
    #[arg(
        long,
        global = true,
        env = "FLEETGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

#[derive(Args, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
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

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["url", "data_dir"])))]
pub struct BackupArgs {
    /// A running server's base URL (http://HOST:PORT): the server writes the backup on its own
    /// machine, so --to must be absolute there.
    #[arg(long, visible_alias = "server")]
    pub url: Option<String>,
    /// A stopped server's data directory (refused while a server runs on it).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the backup goes: a new or empty directory, outside the data directory.
    #[arg(long)]
    pub to: PathBuf,
    /// The admin token, with --url (see `<data-dir>/admin-token`).
    #[arg(long, env = "FLEETGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup: a directory `fleetgate backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to restore into: missing or empty, unless --force.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Replace whatever the data directory holds (once the backup has been copied and checked).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["telemetry", "events"])))]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: ServerArgs,
    /// Only this device (default: every device).
    #[arg(long)]
    pub device: Option<String>,
    /// The first receive time included (RFC 3339, e.g. 2026-06-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<jiff::Timestamp>,
    /// The last receive time included (RFC 3339).
    #[arg(long = "to")]
    pub until: Option<jiff::Timestamp>,
    /// Write telemetry here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub telemetry: Option<PathBuf>,
    /// Write events here (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

fn client(conn: &ServerArgs) -> Result<Client, Error> {
    authorized(&conn.url, conn.admin_token.as_deref())
}

fn authorized(url: &str, token: Option<&str>) -> Result<Client, Error> {
    let token = token.ok_or("an admin token is needed: --admin-token or FLEETGATE_ADMIN_TOKEN")?;
    Ok(Client::new(url)?.with_token(token))
}

/// The API's answer as JSON; a non-2xx status becomes an error with the API's message.
fn success(status: u16, body: &[u8]) -> Result<simd_json::OwnedValue, Error> {
    let mut b = body.to_vec();
    let v = simd_json::to_owned_value(&mut b)
        .map_err(|e| format!("HTTP {status}: the server sent invalid JSON ({e})"))?;
    if !(200..300).contains(&status) {
        let msg = v
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("request failed");
        return Err(format!("HTTP {status}: {msg}").into());
    }
    Ok(v)
}

/// Prints an API answer; a non-2xx status becomes an error with the API's message.
fn answer(
    api: &ApiArgs,
    status: u16,
    body: &[u8],
    human: impl FnOnce(&simd_json::OwnedValue) -> String,
) -> Result<(), Error> {
    let v = success(status, body)?;
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
    let c = client(&api.conn)?;
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
    let c = client(&api.conn)?;
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

/// How long `backup --url` waits for the server's answer, which comes once the whole checkpoint
/// is written: for a large store on another disk, that may be hours.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub fn run_backup(args: &BackupArgs) -> Result<(), Error> {
    // The copy holds every secret of the data directory: nobody else may read what is written.
    crate::data_dir::restrict_umask();
    let (path, bytes) = match (&args.url, &args.data_dir) {
        (Some(url), _) => {
            let to = args.to.to_str().ok_or("--to must be valid UTF-8")?;
            let mut body = String::from("{\"path\":");
            crate::json::push_str(&mut body, to);
            body.push('}');
            let r = authorized(url, args.admin_token.as_deref())?
                .with_timeout(BACKUP_TIMEOUT)
                .post_json("/api/backup", body.as_bytes())?;
            let v = success(r.status, &r.body)?;
            let bytes = v.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
            (s(&v, "path").to_string(), bytes)
        }
        (None, Some(data_dir)) => {
            let to = std::path::absolute(&args.to)?;
            let w = crate::backup::offline(data_dir, &to)?;
            (w.path.display().to_string(), w.bytes)
        }
        (None, None) => return Err("give --url (a running server) or --data-dir".into()),
    };
    println!("backup written to {path} ({bytes} bytes)");
    Ok(())
}

pub fn run_restore(args: &RestoreArgs) -> Result<(), Error> {
    crate::data_dir::restrict_umask();
    let m = crate::backup::restore(&args.from, &args.data_dir, args.force)?;
    let token = if m
        .side_files
        .iter()
        .any(|f| f == crate::data_dir::ADMIN_TOKEN)
    {
        "the admin token file included"
    } else {
        "no admin token file: the server that made it took FLEETGATE_ADMIN_TOKEN; set it again"
    };
    println!(
        "restored the backup taken {} into {} ({token}); start the server with --data-dir {}",
        m.created_at,
        args.data_dir.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// Where an export goes; counts the lines written.
struct Sink {
    out: Box<dyn Write>,
    lines: u64,
}

impl Sink {
    /// `-` is standard output; a file is created (or truncated) readable by its owner only, as
    /// everything in the data directory is.
    fn open(path: &Path) -> Result<Sink, Error> {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(std::io::stdout().lock()))
        } else {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Box::new(BufWriter::new(f))
        };
        Ok(Sink { out, lines: 0 })
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Streams one NDJSON export into `sink`; false when the path names nothing (404).
fn export_to(c: &Client, path: &str, sink: &mut Sink) -> Result<bool, Error> {
    let r: ClientResponse = c.get_to(path, sink)?;
    match r.status {
        200..=299 => Ok(true),
        404 => Ok(false),
        status => success(status, &r.body).map(|_| false),
    }
}

pub fn run_export(args: &ExportArgs) -> Result<(), Error> {
    if let (Some(from), Some(to)) = (args.from, args.until)
        && from > to
    {
        return Err("--from is after --to".into());
    }
    if args.telemetry.as_deref() == Some(Path::new("-"))
        && args.events.as_deref() == Some(Path::new("-"))
    {
        return Err(
            "telemetry and events cannot both go to standard output; give one a file".into(),
        );
    }
    let c = client(&args.conn)?;
    let mut range = String::new();
    for (name, t) in [("from", args.from), ("to", args.until)] {
        if let Some(t) = t {
            range.push_str(&format!("&{name}={}", encode_component(&t.to_string())));
        }
    }
    let device = args.device.as_deref().map(encode_component);
    if let Some(path) = &args.telemetry {
        let mut sink = Sink::open(path)?;
        let devices = match &device {
            Some(d) => vec![d.clone()],
            None => all_devices(&c)?,
        };
        for d in &devices {
            let found = export_to(
                &c,
                &format!("/api/devices/{d}/telemetry.ndjson?{range}"),
                &mut sink,
            )?;
            match (found, &device) {
                (true, _) => {}
                (false, Some(_)) => return Err(format!("no device {d}").into()),
                (false, None) => eprintln!("device {d} was deleted meanwhile; skipped"),
            }
        }
        sink.flush()?;
        eprintln!(
            "{} telemetry records of {} device(s) written to {}",
            sink.lines,
            devices.len(),
            path.display()
        );
    }
    if let Some(path) = &args.events {
        let mut sink = Sink::open(path)?;
        let filter = device
            .map(|d| format!("&device_id={d}"))
            .unwrap_or_default();
        let events = format!("/api/events.ndjson?{range}{filter}");
        if !export_to(&c, &events, &mut sink)? {
            return Err("the server has no events export (404)".into());
        }
        sink.flush()?;
        eprintln!("{} events written to {}", sink.lines, path.display());
    }
    Ok(())
}

/// Every device's id, page by page.
fn all_devices(c: &Client) -> Result<Vec<String>, Error> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c.get(&format!("/api/devices?limit=1000{cursor}"))?;
        let v = success(r.status, &r.body)?;
        for d in v
            .get("items")
            .and_then(|i| i.as_array())
            .map(|a| a.as_slice())
            .unwrap_or(&[])
        {
            ids.push(s(d, "device_id").to_string());
        }
        match v.get("next_cursor").and_then(|n| n.as_str()) {
            Some(next) => cursor = format!("&cursor={}", encode_component(next)),
            None => return Ok(ids),
        }
    }
}
