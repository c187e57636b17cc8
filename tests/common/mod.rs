//! Shared fixtures for fleetgate's integration tests.
//!
//! Every test talks to a real `fleetgate serve` process through real clients:
//! the library's blocking HTTP [`Client`] for the admin API, tungstenite (client
//! side, over a plain `std::net::TcpStream` with read timeouts) for WebSocket
//! sessions, as an implementation independent of the server's codec, and raw
//! TCP for the malformed-input cases. Raw bytes are framed and responses read
//! with the codec's client end (`fleetgate::ws::encode_raw`,
//! `fleetgate::http::client`), the one the CLI and the load harness use.
//!
//! Rules the tests follow: every wait is bounded (a deadline, then a failure
//! that says what was awaited and shows the server's log); state is polled,
//! never assumed after a sleep; durations are never asserted.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use simd_json::OwnedValue as Value;
pub use simd_json::json;
pub use simd_json::prelude::*;

use fleetgate::client::Client;
use fleetgate::http::client::{Response, ResponseLimits, ResponseParser};
use fleetgate::ws::{self, LenEncoding};
use tungstenite::protocol::WebSocket;

pub mod browser;
pub mod fleet;
pub mod nats;
pub mod term;
use tungstenite::{Message, client};

/// Both I/O drivers; every scenario runs under each.
pub const DRIVERS: [&str; 2] = ["uring", "epoll"];

/// Generates one `#[test]` per scenario and I/O driver: `uring::name` and
/// `epoll::name`, each calling `name("uring")` / `name("epoll")`.
#[macro_export]
macro_rules! for_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name("uring") } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name("epoll") } )*
        }
    };
}

// ---------------------------------------------------------------------------
// JSON helpers (simd-json)

/// Parses JSON bytes; panics with the text on failure.
pub fn parse(bytes: &[u8]) -> Value {
    let mut buf = bytes.to_vec();
    simd_json::to_owned_value(&mut buf)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Encodes a value as JSON text.
pub fn enc(v: &Value) -> String {
    simd_json::to_string(v).expect("encode JSON")
}

/// Field `key` of an object as a string, or a panic that shows the value.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("expected string field {key:?} in {}", enc(v)))
}

/// Field `key` of an object as a string, if present and a string.
pub fn opt_s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// Field `key` of an object; panics when absent.
pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("expected field {key:?} in {}", enc(v)))
}

/// Field `key` as an array; panics otherwise.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(|x| x.as_array())
        .unwrap_or_else(|| panic!("expected array field {key:?} in {}", enc(v)))
}

/// Field `key` as an unsigned integer; panics otherwise.
pub fn u(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("expected integer field {key:?} in {}", enc(v)))
}

/// Asserts the error body shape `{"error":{"code":"...","message":"..."}}` and
/// returns the code.
pub fn error_code(body: &Value) -> String {
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("expected an error object, got {}", enc(body)));
    let code = s(err, "code").to_string();
    assert!(!code.is_empty(), "empty error code in {}", enc(body));
    let _ = s(err, "message");
    code
}

/// Asserts `ts` is an RFC 3339 timestamp.
pub fn assert_rfc3339(ts: &str) {
    ts.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp: {ts:?} ({e})"));
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls `cond` until it is true or `timeout` passes, then panics with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sh -c` script of the namespace holder (`Server::start_on_tmpfs`): $1 size in MiB, $2 mount
/// point. It says `mounted` and then sleeps, keeping the namespaces (and the tmpfs) alive.
const TMPFS_HOLDER: &str = r#"mount -t tmpfs -o size="$1"m fleetgate-test "$2" || exit 97; echo mounted; exec sleep 86400"#;

const TMPFS_HELP: &str = "The disk-full tests put the data directory on a small tmpfs, mounted in \
    a user + mount namespace of their own (`unshare --user --map-root-user --mount`, then the server \
    runs in it through `nsenter`). That needs util-linux's unshare and nsenter, and unprivileged \
    user namespaces (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0) \
    or root, and a seccomp profile that allows unshare(2), setns(2) and mount(2).";

/// A tmpfs in a user + mount namespace kept alive by a sleeping holder process.
struct Tmpfs {
    holder: Child,
}

/// Generous default deadline for state that should appear "soon".
pub const SOON: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Random data and unique names

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("getrandom");
    b
}

pub fn random_u64() -> u64 {
    let b = random_bytes(8);
    u64::from_le_bytes(b.try_into().unwrap())
}

pub fn random_token() -> String {
    random_bytes(24)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "fleetgate-test-{tag}-{}-{n}-{:08x}",
        std::process::id(),
        random_u64() as u32
    ))
}

// ---------------------------------------------------------------------------
// Server fixture

/// A `fleetgate serve` child process with its own data directory.
///
/// Dropping it kills the process and removes the data directory (kept, and
/// its path printed, when the test is panicking).
pub struct Server {
    child: Option<Child>,
    io: String,
    extra: Vec<String>,
    dir: PathBuf,
    data_dir: PathBuf,
    addr: String,
    admin_token: String,
    /// The admin token is read from `<data-dir>/admin-token` rather than given in the
    /// environment (see `start_own_token`).
    own_token: bool,
    starts: u32,
    /// When set, the data directory is a tmpfs in a namespace of its own (see `start_on_tmpfs`).
    tmpfs: Option<Tmpfs>,
    /// `--listen`: `127.0.0.1:0` (a new port on every start), or a host of its own whose port,
    /// once picked, stays the same across restarts (see `start_at`).
    listen: String,
    keep_port: bool,
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl Server {
    /// Starts a server with `--io <io> --shards 2` and default limits.
    pub fn start(io: &str) -> Server {
        Self::start_with(io, &[])
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(io: &str, extra: &[&str]) -> Server {
        let dir = unique_dir(io);
        fs::create_dir_all(&dir).expect("create test dir");
        let data_dir = dir.join("data");
        let mut s = Server {
            child: None,
            io: io.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            data_dir,
            addr: String::new(),
            admin_token: format!("adm_{}", random_token()),
            own_token: false,
            starts: 0,
            tmpfs: None,
            listen: "127.0.0.1:0".into(),
            keep_port: false,
        };
        s.spawn();
        s
    }

    /// Starts a server listening on `host` (a loopback address such as `127.0.0.11`), on a port
    /// it keeps across restarts: a balancer in front of it finds it again after a kill.
    pub fn start_at(io: &str, host: &str, extra: &[&str]) -> Server {
        let dir = unique_dir(io);
        fs::create_dir_all(&dir).expect("create test dir");
        let data_dir = dir.join("data");
        let mut s = Server {
            child: None,
            io: io.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            data_dir,
            addr: String::new(),
            admin_token: format!("adm_{}", random_token()),
            own_token: false,
            starts: 0,
            tmpfs: None,
            listen: format!("{host}:0"),
            keep_port: true,
        };
        s.spawn();
        s
    }

    /// Starts a server as an operator runs one: its admin token is the one in
    /// `<data-dir>/admin-token`, generated there on first start, not one given in
    /// `FLEETGATE_ADMIN_TOKEN`. `prepare` runs first with the data directory's path (which does
    /// not exist yet), to put something there: a restored backup, say.
    pub fn start_own_token(io: &str, prepare: impl FnOnce(&Path)) -> Server {
        let dir = unique_dir(io);
        fs::create_dir_all(&dir).expect("create test dir");
        let data_dir = dir.join("data");
        prepare(&data_dir);
        let mut s = Server {
            child: None,
            io: io.to_string(),
            extra: Vec::new(),
            dir,
            data_dir,
            addr: String::new(),
            admin_token: String::new(),
            own_token: true,
            starts: 0,
            tmpfs: None,
            listen: "127.0.0.1:0".into(),
            keep_port: false,
        };
        s.spawn();
        s
    }

    /// Starts a server whose data directory is a fresh tmpfs of `mib` MiB, so a test can really
    /// fill the disk under it. A holder process mounts the tmpfs in a user + mount namespace of its
    /// own (`unshare -rm`, which needs no root) and keeps it alive; the server runs inside that
    /// namespace (`nsenter`), so `kill9`/`start_again` find the same files. The test reaches them
    /// through `/proc/<holder>/root` (see `fs_path`). Panics with an explanation if the namespace
    /// cannot be set up.
    pub fn start_on_tmpfs(io: &str, extra: &[&str], mib: u32) -> Server {
        let dir = unique_dir(io);
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir).expect("create test dir");
        let mut holder = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                TMPFS_HOLDER,
                "sh",
            ])
            .arg(mib.to_string())
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `unshare`: {e}\n{TMPFS_HELP}"));
        let mut line = String::new();
        let _ = io::BufRead::read_line(
            &mut io::BufReader::new(holder.stdout.take().expect("holder stdout")),
            &mut line,
        );
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let out = holder.wait_with_output().expect("holder output");
            panic!(
                "could not mount a tmpfs for the data directory ({}): {}\n{TMPFS_HELP}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut s = Server {
            child: None,
            io: io.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            data_dir,
            addr: String::new(),
            admin_token: format!("adm_{}", random_token()),
            own_token: false,
            starts: 0,
            tmpfs: Some(Tmpfs { holder }),
            listen: "127.0.0.1:0".into(),
            keep_port: false,
        };
        s.spawn();
        s
    }

    /// A path under the data directory as the server sees it (through its mount namespace when it
    /// runs on a tmpfs of its own).
    pub fn fs_path(&self, rel: &str) -> PathBuf {
        match &self.tmpfs {
            Some(t) => PathBuf::from(format!(
                "/proc/{}/root{}",
                t.holder.id(),
                self.data_dir.display()
            ))
            .join(rel),
            None => self.data_dir.join(rel),
        }
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("server-{n}.log"))
    }

    /// The server's stderr/stdout of the current run (and earlier runs).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            if let Ok(t) = fs::read_to_string(self.log_path(n)) {
                out.push_str(&format!("----- server run {n} (log) -----\n"));
                // Keep failures readable: the tail matters most.
                let tail: String = if t.len() > 20_000 {
                    let mut cut = t.len() - 20_000;
                    while !t.is_char_boundary(cut) {
                        cut += 1;
                    }
                    format!("[... {cut} bytes cut ...]\n{}", &t[cut..])
                } else {
                    t
                };
                out.push_str(&tail);
            }
        }
        out
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        let ready = self.dir.join("ready");
        let _ = fs::remove_file(&ready);
        let log = fs::File::create(self.log_path(self.starts)).expect("create log file");
        let log2 = log.try_clone().expect("dup log file");
        let mut cmd = match &self.tmpfs {
            None => Command::new(env!("CARGO_BIN_EXE_fleetgate")),
            Some(t) => {
                // nsenter execs the server (no --fork): the child's pid is the server's.
                let mut c = Command::new("nsenter");
                c.arg("--target")
                    .arg(t.holder.id().to_string())
                    .args(["--user", "--mount", "--preserve-credentials", "--"])
                    .arg(env!("CARGO_BIN_EXE_fleetgate"));
                c
            }
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--ready-file")
            .arg(&ready)
            .arg("--io")
            .arg(&self.io)
            .arg("--shards")
            .arg("2")
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        if self.own_token {
            cmd.env_remove("FLEETGATE_ADMIN_TOKEN");
        } else {
            cmd.env("FLEETGATE_ADMIN_TOKEN", &self.admin_token);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if self.tmpfs.is_some() => panic!("cannot run `nsenter`: {e}\n{TMPFS_HELP}"),
            Err(e) => panic!("spawn fleetgate serve: {e}"),
        };
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&ready) {
                if let Some(line) = text.strip_suffix('\n') {
                    let line = line.trim();
                    let host = self.listen.rsplit_once(':').map_or("", |(h, _)| h);
                    assert!(
                        line.starts_with(&format!("{host}:")),
                        "ready file holds {text:?}, expected {host}:PORT\n{}",
                        self.logs()
                    );
                    self.addr = line.to_string();
                    if self.keep_port {
                        self.listen = self.addr.clone();
                    }
                    if self.own_token {
                        let file = self.data_dir.join("admin-token");
                        let token = fs::read_to_string(&file)
                            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), self.logs()));
                        self.admin_token = token.trim().to_string();
                    }
                    break;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                if self.tmpfs.is_some() {
                    panic!(
                        "fleetgate serve (run through nsenter in the tmpfs namespace) exited with \
                         {status} before it was ready\n{TMPFS_HELP}\n{}",
                        self.logs()
                    );
                }
                panic!(
                    "fleetgate serve --io {} exited with {status} before it was ready\n{}",
                    self.io,
                    self.logs()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "fleetgate serve --io {} wrote no ready file within {READY_TIMEOUT:?}\n{}",
                    self.io,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        &self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The test's own directory, beside the data directory and removed with it: room for
    /// backups and exports.
    pub fn test_dir(&self) -> &Path {
        &self.dir
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// An HTTP client with the admin bearer token.
    pub fn admin(&self) -> Client {
        Client::new(&self.url())
            .expect("build HTTP client")
            .with_token(self.admin_token.as_str())
    }

    /// An HTTP client without a token.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.url()).expect("build HTTP client")
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server not running");
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within 30 s of SIGTERM\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server not running");
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }

    /// Graceful stop, then start again on the same data directory (the port
    /// changes: use `url()`/`ws_url()` afterwards).
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(
            st.success(),
            "server exited with {st} on SIGTERM (expected success)\n{}",
            self.logs()
        );
        self.spawn();
    }

    /// Start again after `kill9()`/`stop()`.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// The I/O driver the next start uses (`uring` or `epoll`).
    pub fn set_io(&mut self, io: &str) {
        self.io = io.to_string();
    }

    pub fn io(&self) -> &str {
        &self.io
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    // ---- admin API helpers -------------------------------------------------

    pub fn get(&self, path: &str) -> Resp {
        Resp::from_client(self.admin().get(path), "GET", path, self)
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        let b = enc(body);
        Resp::from_client(
            self.admin().post_json(path, b.as_bytes()),
            "POST",
            path,
            self,
        )
    }

    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        let b = enc(body);
        Resp::from_client(
            self.admin().patch_json(path, b.as_bytes()),
            "PATCH",
            path,
            self,
        )
    }

    pub fn delete(&self, path: &str) -> Resp {
        Resp::from_client(self.admin().delete(path), "DELETE", path, self)
    }

    /// Creates a generic device; asserts 201.
    pub fn create_device(&self, name: &str) -> Device {
        let r = self.post("/api/devices", &json!({ "name": name }));
        assert_eq!(r.status, 201, "POST /api/devices: {}", r.text());
        let v = r.json();
        Device {
            id: s(&v, "device_id").to_string(),
            token: s(&v, "token").to_string(),
            name: name.to_string(),
        }
    }

    /// All items of a paginated list (follows `next_cursor`, bounded).
    pub fn list_all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let p = match &cursor {
                Some(c) => format!("{path}{sep}cursor={}", pct(c)),
                None => path.to_string(),
            };
            let r = self.get(&p);
            assert_eq!(r.status, 200, "GET {p}: {}", r.text());
            let v = r.json();
            out.extend(arr(&v, "items").iter().cloned());
            match v.get("next_cursor") {
                Some(c) if c.is_null() => return out,
                Some(c) => {
                    let c = c
                        .as_str()
                        .unwrap_or_else(|| panic!("next_cursor not a string: {}", enc(&v)));
                    cursor = Some(c.to_string());
                }
                None => panic!("list without next_cursor: {}", enc(&v)),
            }
        }
        panic!("pagination of {path} did not end after 10000 pages");
    }

    /// The device as listed by `GET /api/devices` (None when not listed).
    pub fn listed_device(&self, id: &str) -> Option<Value> {
        self.list_all("/api/devices?limit=100")
            .into_iter()
            .find(|d| opt_s(d, "device_id") == Some(id))
    }

    /// The `status` the device list shows for `id`.
    pub fn listed_status(&self, id: &str) -> String {
        let d = self
            .listed_device(id)
            .unwrap_or_else(|| panic!("device {id} not in GET /api/devices"));
        s(&d, "status").to_string()
    }

    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + SOON;
        loop {
            let last = self.listed_status(id);
            if last == status {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "device {id} still listed {last:?} after {SOON:?}, expected {status:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All telemetry items of a device (newest first).
    pub fn telemetry(&self, id: &str) -> Vec<Value> {
        self.list_all(&format!("/api/devices/{id}/telemetry?limit=500"))
    }

    /// Events matching a query string such as `device_id=..&type=..`.
    pub fn events(&self, query: &str) -> Vec<Value> {
        self.list_all(&format!("/api/events?{query}&limit=200"))
    }

    /// Waits until at least one event of `type` exists for the device; returns them.
    pub fn wait_event(&self, device_id: &str, ty: &str) -> Vec<Value> {
        let mut found = Vec::new();
        wait_until(SOON, &format!("event {ty} for device {device_id}"), || {
            found = self
                .events(&format!("device_id={device_id}&type={ty}"))
                .into_iter()
                .filter(|e| opt_s(e, "type") == Some(ty))
                .collect();
            !found.is_empty()
        });
        found
    }

    pub fn commands(&self, id: &str) -> Vec<Value> {
        self.list_all(&format!("/api/devices/{id}/commands?limit=200"))
    }

    pub fn command_status(&self, device: &str, command_id: &str) -> Value {
        self.commands(device)
            .into_iter()
            .find(|c| opt_s(c, "command_id") == Some(command_id))
            .unwrap_or_else(|| panic!("command {command_id} not listed for device {device}"))
    }

    pub fn wait_command_status(&self, device: &str, command_id: &str, status: &str) -> Value {
        let deadline = Instant::now() + SOON;
        loop {
            let c = self.command_status(device, command_id);
            if opt_s(&c, "status") == Some(status) {
                return c;
            }
            if Instant::now() >= deadline {
                panic!(
                    "command {command_id} is {} after {SOON:?}, expected status {status:?}\n{}",
                    enc(&c),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POST a command; asserts 202; returns the command_id.
    pub fn send_command(&self, device: &str, command: &str, payload: Value) -> String {
        let r = self.post(
            &format!("/api/devices/{device}/commands"),
            &json!({ "command": command, "payload": payload }),
        );
        assert_eq!(r.status, 202, "POST commands: {}", r.text());
        let v = r.json();
        let st = s(&v, "status");
        assert!(
            ["queued", "sent"].contains(&st),
            "new command status {st:?}"
        );
        s(&v, "command_id").to_string()
    }

    /// Connects a WebSocket to `/ws`.
    pub fn ws(&self) -> Ws {
        Ws::connect(&self.addr)
    }

    /// Connects and registers `dev`; returns the session.
    pub fn device_session(&self, dev: &Device) -> Ws {
        let mut ws = self.ws();
        let reg = ws.register(dev);
        assert_eq!(s(&reg, "device_id"), dev.id);
        ws
    }

    /// Connects and subscribes as admin; returns the session.
    pub fn admin_session(&self) -> Ws {
        let mut ws = self.ws();
        ws.send_json(
            &json!({"type":"subscribe","role":"admin","token": self.admin_token.as_str()}),
        );
        let m = ws.recv_json(SOON);
        assert_eq!(s(&m, "type"), "subscribed", "subscribe answer: {}", enc(&m));
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The tmpfs (and what the server wrote on it) goes with its namespace.
        if let Some(mut t) = self.tmpfs.take() {
            let _ = t.holder.kill();
            let _ = t.holder.wait();
        }
        if std::thread::panicking() {
            eprintln!("test failed: server files kept in {}", self.dir.display());
            eprintln!("{}", self.logs());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Percent-encodes a query-string value (cursors are opaque).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP answer from the admin API.
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    fn from_client<E: std::fmt::Debug>(
        r: Result<fleetgate::client::ClientResponse, E>,
        method: &str,
        path: &str,
        server: &Server,
    ) -> Resp {
        match r {
            Ok(r) => Resp {
                status: r.status,
                body: r.body,
            },
            Err(e) => panic!("{method} {path} failed: {e:?}\n{}", server.logs()),
        }
    }
    pub fn text(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
    pub fn json(&self) -> Value {
        parse(&self.body)
    }
}

/// A device as created through the API.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub token: String,
    pub name: String,
}

// ---------------------------------------------------------------------------
// WebSocket client (tungstenite over std TcpStream)

/// What a bounded read produced.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame holding JSON (non-JSON text panics: the server only sends JSON).
    Json(Value),
    /// Binary data (unexpected from this server).
    Binary(Vec<u8>),
    /// WebSocket-level pong.
    Pong(Vec<u8>),
    /// A close frame from the server: code (None if no status) and reason.
    Close(Option<u16>, String),
    /// The TCP connection ended without a close frame (EOF or reset).
    Gone(String),
    /// Nothing arrived before the deadline.
    Timeout,
}

pub struct Ws {
    pub ws: WebSocket<TcpStream>,
    /// Set once a close frame has been seen.
    pub closed: Option<(Option<u16>, String)>,
}

/// Read slice: reads wake up this often to check their deadline.
const READ_SLICE: Duration = Duration::from_millis(100);

impl Ws {
    pub fn connect(addr: &str) -> Ws {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("WebSocket connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: &str) -> Result<Ws, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("tcp connect: {e}"))?;
        Self::try_over(stream, addr)
    }

    /// The WebSocket handshake over an already connected stream (e.g. from `tcp_from`).
    pub fn try_over(stream: TcpStream, addr: &str) -> Result<Ws, String> {
        stream.set_nodelay(true).ok();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let (ws, resp) = client(format!("ws://{addr}/ws"), stream)
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        if resp.status().as_u16() != 101 {
            return Err(format!("handshake status {}", resp.status()));
        }
        ws.get_ref()
            .set_read_timeout(Some(READ_SLICE))
            .map_err(|e| e.to_string())?;
        Ok(Ws { ws, closed: None })
    }

    /// A second handle on the socket, for raw frame writes.
    pub fn raw(&self) -> TcpStream {
        self.ws.get_ref().try_clone().expect("clone socket")
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    pub fn try_send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::text(text.to_string()))
            .map_err(|e| e.to_string())
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_text(&enc(v));
    }

    /// Next event within `timeout`. WebSocket pings are answered by tungstenite.
    pub fn recv(&mut self, timeout: Duration) -> WsEvent {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return WsEvent::Json(parse(t.as_bytes())),
                Ok(Message::Binary(b)) => return WsEvent::Binary(b.to_vec()),
                Ok(Message::Pong(p)) => return WsEvent::Pong(p.to_vec()),
                Ok(Message::Ping(_)) | Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(cf)) => {
                    let (code, reason) = match cf {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, String::new()),
                    };
                    self.closed = Some((code, reason.clone()));
                    return WsEvent::Close(code, reason);
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return WsEvent::Timeout;
                    }
                }
                Err(e) => return WsEvent::Gone(e.to_string()),
            }
        }
    }

    /// Next JSON message; panics on anything else.
    pub fn recv_json(&mut self, timeout: Duration) -> Value {
        match self.recv(timeout) {
            WsEvent::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Next JSON message of `type`; other messages are skipped (and returned
    /// in the panic message if none matches before the deadline).
    pub fn recv_type(&mut self, ty: &str, timeout: Duration) -> Value {
        self.recv_matching(timeout, &format!("type {ty}"), |m| {
            opt_s(m, "type") == Some(ty)
        })
    }

    /// Next JSON message for which `pred` holds, skipping others.
    pub fn recv_matching(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                WsEvent::Json(v) if pred(&v) => return v,
                WsEvent::Json(v) => {
                    if skipped.len() < 50 {
                        skipped.push(enc(&v));
                    }
                }
                WsEvent::Pong(_) | WsEvent::Binary(_) => {}
                other => panic!(
                    "waiting for a message with {what}: got {other:?}; skipped before: {skipped:?}"
                ),
            }
        }
    }

    /// Expects a close frame (skipping any messages before it); returns its code.
    pub fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                WsEvent::Close(code, _) => return code,
                WsEvent::Timeout => {
                    panic!("no close frame within {timeout:?}; messages before: {seen:?}")
                }
                WsEvent::Gone(e) => {
                    panic!(
                        "connection ended without a close frame ({e}); messages before: {seen:?}"
                    )
                }
                WsEvent::Json(v) => seen.push(enc(&v)),
                other => seen.push(format!("{other:?}")),
            }
        }
    }

    /// Expects the session to end: a close frame or the TCP connection ending.
    /// Returns the close code if there was a close frame.
    pub fn expect_end(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                WsEvent::Close(code, _) => return code,
                WsEvent::Gone(_) => return None,
                WsEvent::Timeout => panic!("session still open after {timeout:?}"),
                _ => {}
            }
        }
    }

    /// Sends a register frame and returns the `registered` answer.
    pub fn register(&mut self, dev: &Device) -> Value {
        self.send_json(
            &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
        );
        let m = self.recv_json(SOON);
        assert_eq!(s(&m, "type"), "registered", "register answer: {}", enc(&m));
        m
    }

    /// ping → pong round trip (the generic protocol's JSON ping).
    pub fn ping_pong(&mut self) {
        self.send_json(&json!({"type":"ping"}));
        let m = self.recv_type("pong", SOON);
        assert_eq!(s(&m, "type"), "pong");
    }

    /// Clean close handshake from the client side (bounded).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = self.ws.get_ref().shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------
// Raw WebSocket frames and raw HTTP

/// Encodes one client frame with the codec's frame writer. `mask` selects a
/// random masking key (clients must mask; unmasked frames are a protocol
/// violation, which some tests commit on purpose).
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | (opcode & 0x0f);
    let key = mask.then(|| random_bytes(4).try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(payload.len() + 14);
    ws::encode_raw(&mut out, first, payload, key, LenEncoding::Shortest);
    out
}

/// An HTTP response read from a raw socket: status, header fields (names
/// lower-cased) and body, de-chunked.
pub type RawResponse = Response;

/// The body of a response as JSON.
pub trait JsonBody {
    fn json(&self) -> Value;
}

impl JsonBody for RawResponse {
    fn json(&self) -> Value {
        parse(&self.body)
    }
}

/// Reads one HTTP/1.1 response from `stream` (Content-Length, chunked or
/// until the connection ends), carrying over extra bytes in `buf` for the
/// next one. Bounded by `timeout`.
pub fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<RawResponse, String> {
    let deadline = Instant::now() + timeout;
    stream.set_read_timeout(Some(READ_SLICE)).ok();
    let mut parser = ResponseParser::new(ResponseLimits::default(), false);
    let mut chunk = [0u8; 16384];
    let shown = |buf: &[u8]| String::from_utf8_lossy(&buf[..buf.len().min(2000)]).into_owned();
    let (response, consumed) = loop {
        match parser.parse(buf) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(e) => return Err(format!("{e}: {:?}", shown(buf))),
        }
        if !fill(stream, buf, &mut chunk, deadline)? {
            let n = buf.len();
            break parser
                .finish(buf)
                .map_err(|e| format!("EOF after {n} bytes ({e}): {:?}", shown(buf)))?;
        }
    };
    buf.drain(..consumed);
    Ok(response)
}

/// One read into `buf`; false at EOF.
fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
) -> Result<bool, String> {
    loop {
        match stream.read(chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "timeout; {} bytes so far: {:?}",
                        buf.len(),
                        String::from_utf8_lossy(buf)
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}

/// A TCP connection to `addr` from the loopback source address `src` (e.g. "127.0.0.2"), for
/// limits that are per source address.
pub fn tcp_from(src: &str, addr: &str) -> TcpStream {
    let to: std::net::SocketAddr = addr.parse().expect("server address");
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: std::net::SocketAddr = format!("{src}:0").parse().expect("source address");
    sock.bind(&from.into()).expect("bind source address");
    sock.connect(&to.into()).expect("connect");
    sock.into()
}

/// The value of one Prometheus sample (`name{labels}` exactly as rendered), 0 when absent.
pub fn metric(srv: &Server, sample: &str) -> f64 {
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Sends `req` on a fresh connection and reads one response.
pub fn raw_http(addr: &str, req: &[u8]) -> RawResponse {
    raw_http_on(TcpStream::connect(addr).expect("connect"), req)
}

/// `raw_http` from the loopback source address `src` (e.g. "127.0.0.2").
pub fn raw_http_from(src: &str, addr: &str, req: &[u8]) -> RawResponse {
    raw_http_on(tcp_from(src, addr), req)
}

fn raw_http_on(mut s: TcpStream, req: &[u8]) -> RawResponse {
    s.set_write_timeout(Some(Duration::from_secs(20))).ok();
    s.write_all(req).expect("write request");
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, SOON).unwrap_or_else(|e| {
        panic!(
            "no response to {:?}: {e}",
            String::from_utf8_lossy(&req[..req.len().min(300)])
        )
    })
}

/// How a raw connection ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Ending {
    /// Orderly EOF.
    Eof,
    /// Connection reset / other read error.
    Reset,
    /// Still open at the deadline.
    Open,
}

/// Reads until the peer closes or `timeout`; returns the bytes and the ending.
pub fn read_to_end_bounded(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, Ending) {
    let deadline = Instant::now() + timeout;
    stream.set_read_timeout(Some(READ_SLICE)).ok();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (out, Ending::Eof),
            Ok(n) => {
                if out.len() < 1 << 20 {
                    out.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return (out, Ending::Open);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (out, Ending::Reset),
        }
    }
}

/// Set of strings, for dedup checks.
pub fn counts<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for i in items {
        *m.entry(i.to_string()).or_insert(0) += 1;
    }
    m
}

pub fn set<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashSet<T> {
    items.into_iter().collect()
}

// ---------------------------------------------------------------------------
// Node.js test clients

/// `tests/clients`: the Node.js packages the tests drive (ws, playwright-core).
pub fn node_clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
}

/// Installs the committed lock file's packages on first use (once per test binary), so
/// `cargo test --release` needs nothing run beforehand besides having npm. Panics if that fails.
pub fn ensure_node_packages() {
    static INSTALL: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let installed = INSTALL.get_or_init(|| {
        let modules = node_clients_dir().join("node_modules");
        let present = |p: &str| modules.join(p).join("package.json").exists();
        if present("ws") && present("playwright-core") {
            return Ok(());
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(node_clients_dir())
            .output()
            .map_err(|e| format!("running `npm ci` in tests/clients failed to start: {e}"))?;
        if !out.status.success() || !present("ws") || !present("playwright-core") {
            return Err(format!(
                "`npm ci` in tests/clients failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    if let Err(e) = installed {
        panic!("the Node.js test packages are missing and could not be installed: {e}");
    }
}
