//! `fleetgate serve` settings. Every limit the server enforces is here, with its default and what
//! happens when it is hit (see the doc comment of each field, and `README.md` for the flag table).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cidr::Cidr;
use crate::fleet::retention::{Keep, Retention};
use crate::http::request::Upload;
use crate::keepalive::Keepalive;
use crate::store::disk_guard::MinFree;
use crate::terminal::Timeouts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IoMode {
    /// io_uring when the kernel and seccomp allow it, else epoll.
    Auto,
    Uring,
    Epoll,
}

/// Each shard's listen backlog: its accept queue, which the kernel caps at `net.core.somaxconn`.
/// Past it, SYNs are dropped and clients retry after 1 s, 3 s, 7 s…
pub const LISTEN_BACKLOG: i32 = 4096;

/// The `serve` settings that ask something of the machine: an address, a data directory, cores, an
/// I/O driver and a descriptor per connection. `serve` and `doctor` both take these flags (and
/// environment variables), so the doctor judges the machine for the configuration `serve` will
/// run with, defaults included.
#[derive(Clone, Debug, clap::Args)]
pub struct MachineConfig {
    /// Address every shard listens on (SO_REUSEPORT; port 0 picks one free port for all shards).
    #[arg(long, env = "FLEETGATE_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// RocksDB directory. `doctor` times fdatasync there (a temporary file, removed after) and
    /// counts its table files toward the open-file budget.
    #[arg(long, env = "FLEETGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Shard threads, one per core by default; each is pinned to a core and owns the sessions it accepts.
    #[arg(long, env = "FLEETGATE_SHARDS")]
    pub shards: Option<usize>,
    /// I/O driver. `uring` refuses to start without io_uring; `auto` falls back to epoll.
    #[arg(long, value_enum, env = "FLEETGATE_IO", default_value = "auto")]
    pub io: IoMode,
    /// Open connections per process (all shards). More: accepted and closed at once (503 / no
    /// upgrade). Each open connection is a file descriptor.
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS", default_value_t = 19_600)]
    pub max_connections: usize,
}

impl MachineConfig {
    /// The shards `serve` runs: `--shards`, else one per core this process may use.
    pub fn shard_count(&self) -> usize {
        self.shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 256)
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    // The flags `doctor` takes too, to judge the machine for them.
    #[command(flatten)]
    pub machine: MachineConfig,
    /// Largest WebSocket message (bytes). Bigger: close 1009.
    #[arg(long, env = "FLEETGATE_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message: usize,
    /// Largest HTTP request body (bytes). Bigger: 413.
    #[arg(long, env = "FLEETGATE_MAX_BODY", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// fsync the WAL at every group commit. `false` risks the last milliseconds of acked data on power loss.
    #[arg(long, env = "FLEETGATE_SYNC_WRITES", default_value_t = true, action = clap::ArgAction::Set)]
    pub sync_writes: bool,
    /// Written with the bound address (`IP:PORT`) once every shard listens.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// More paths that accept WebSocket upgrades (comma-separated, each starting with `/`), beside
    /// `/ws` and `/pub/chat`, the fixed path several AiFace rebrands connect to. Any dialect may
    /// use any of them; the first frame tells them apart. At most 16.
    #[arg(long, env = "FLEETGATE_WS_PATHS", default_value = "", value_parser = parse_ws_paths)]
    pub ws_paths: WsPaths,
    /// Seconds a WebSocket may take to send its register/subscribe frame. Then: close 1008.
    #[arg(long, env = "FLEETGATE_REGISTER_TIMEOUT", default_value_t = 10)]
    pub register_timeout: u64,
    /// Seconds a generic device's WebSocket session may stay silent. Then: close 1001 and the
    /// device goes offline. Terminals, once logged in, follow their dialect's
    /// `--aiface-idle-timeout` / `--smackbio-idle-timeout` instead.
    #[arg(long, env = "FLEETGATE_WS_IDLE_TIMEOUT", default_value_t = 90)]
    pub ws_idle_timeout: u64,
    /// Seconds to receive a complete HTTP request head once its first byte arrived (slowloris). Then: 408 and close.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds an idle keep-alive HTTP connection is kept. Then: closed.
    #[arg(long, default_value_t = 60)]
    pub keepalive_timeout: u64,
    /// Commands queued per device (not yet delivered). More: 429 `queue_full`.
    #[arg(long, env = "FLEETGATE_COMMAND_QUEUE_LIMIT", default_value_t = 100)]
    pub command_queue_limit: u32,
    /// Default command time-to-live in seconds; undelivered commands then become `expired`.
    #[arg(long, default_value_t = 86_400)]
    pub command_ttl: u64,
    /// Messages queued toward one connection (acks, commands, broadcasts). A device connection that
    /// overflows is closed (1008); an admin subscriber that overflows is cut off (1013, "too slow").
    #[arg(long, default_value_t = 1024)]
    pub outbox_limit: usize,
    /// Telemetry/event frames per session waiting for their group commit. More: the session stops
    /// reading (TCP backpressure) until commits catch up.
    #[arg(long, default_value_t = 256)]
    pub inflight_limit: usize,
    /// Seconds after its last request that an HTTP device goes offline (`device_disconnected`,
    /// reason `timeout`).
    #[arg(long, env = "FLEETGATE_HTTP_OFFLINE_AFTER", default_value_t = 300)]
    pub http_offline_after: u64,
    /// Let webhook URLs name loopback, private and link-local addresses (refused otherwise: a
    /// webhook must not reach into the server's own network).
    #[arg(long, env = "FLEETGATE_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// Milliseconds a failed webhook delivery waits before its first retry; each further retry
    /// waits twice as long, up to an hour (1–3600000).
    #[arg(long, env = "FLEETGATE_WEBHOOKS_RETRY_MIN_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhooks_retry_min_ms: u64,
    /// Days the webhook outbox (and each endpoint's delivery log) is kept: how far back a replay
    /// reaches (1–365).
    #[arg(long, env = "FLEETGATE_WEBHOOKS_RETAIN_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub webhooks_retain_days: u64,
    /// Telemetry messages per second sent to webhook endpoints that take telemetry, across the
    /// fleet (bursts of a second's worth); past it, telemetry is stored but not sent, and counted
    /// in `fleetgate_webhook_telemetry_dropped_total` (1–100000).
    #[arg(long, env = "FLEETGATE_WEBHOOKS_TELEMETRY_PER_SECOND", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub webhooks_telemetry_per_second: u32,
    /// NATS servers (`nats://host:port`, comma-separated) to join a cluster through (see
    /// docs/cluster.md). Without it the node stands alone: RocksDB only, nothing else to run.
    #[arg(long, env = "FLEETGATE_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// This node's name in the cluster (1–64 of `A-Z a-z 0-9 - _`); required with `--nats`.
    #[arg(long, env = "FLEETGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// Records the export to NATS may have waiting (the outbox's bound while NATS is away); past
    /// it, records are still stored and acknowledged but not exported, and counted in
    /// `fleetgate_export_dropped_total` (1000–100000000).
    #[arg(long, env = "FLEETGATE_EXPORT_MAX_LAG", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub export_max_lag: u64,
    /// Copies JetStream keeps of each stream and bucket the first node creates: 1 with one
    /// nats-server, 3 with three clustered (so losing one loses nothing) (1–5).
    #[arg(long, env = "FLEETGATE_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
    /// Accept every unknown serial as a new device (for labs); otherwise it waits in the pending list.
    #[arg(long, env = "FLEETGATE_AUTO_APPROVE")]
    pub auto_approve: bool,
    /// Serials no device has that one source address (IPv6: one /64) may present per minute, in
    /// bursts of up to twice that; 0 = no limit. More: refused as unknown and not listed as pending
    /// (nor auto-approved), so a scanner cannot flush real terminals out of the pending list.
    #[arg(long, env = "FLEETGATE_NEW_SERIALS_PER_MINUTE", default_value_t = 10)]
    pub new_serials_per_minute: u32,
    /// Hours a msg_id is remembered for de-duplication.
    #[arg(long, default_value_t = 24)]
    pub msg_id_retention_hours: u64,
    /// How many of a device's newest msg_ids (telemetry and events) a re-send is recognised
    /// among. A device re-sends what it sent but heard no ack for, which is its newest; each
    /// remembered msg_id costs an online session 16 bytes.
    #[arg(long, default_value_t = crate::fleet::msg_window::DEFAULT_WINDOW)]
    pub msg_id_window: usize,
    /// How long telemetry is kept (`30s`, `12h`, `90d`, `2w`, `forever`); a device's setting
    /// `retain_telemetry` overrides it. Older records are no longer returned and are deleted.
    #[arg(long, env = "FLEETGATE_RETAIN_TELEMETRY", default_value = "90d", value_parser = Keep::parse)]
    pub retain_telemetry: Keep,
    /// How long events are kept (device setting `retain_events`).
    #[arg(long, env = "FLEETGATE_RETAIN_EVENTS", default_value = "365d", value_parser = Keep::parse)]
    pub retain_events: Keep,
    /// How long attendance punches (and their photos) are kept (device setting
    /// `retain_attendance`). Payroll and labour law often require years: kept forever by default.
    #[arg(long, env = "FLEETGATE_RETAIN_ATTENDANCE", default_value = "forever", value_parser = Keep::parse)]
    pub retain_attendance: Keep,
    /// How long finished commands (acked, failed, expired) are kept (device setting
    /// `retain_command_history`); queued and sent ones are always kept.
    #[arg(long, env = "FLEETGATE_RETAIN_COMMAND_HISTORY", default_value = "90d", value_parser = Keep::parse)]
    pub retain_command_history: Keep,
    /// Free space to keep on the data directory's file system: `5%`, `2GiB`, `500MB`, or `0`
    /// (off). Below it new data is answered "not stored" (devices keep it), `/healthz` says
    /// `disk_low`, and storing resumes by itself once space is back (checked every second).
    #[arg(long, env = "FLEETGATE_MIN_FREE_DISK", default_value = "5%", value_parser = MinFree::parse)]
    pub min_free_disk: MinFree,
    /// MiB RocksDB may hold in memtables, cached data blocks and index/filter blocks together
    /// (one shared cache; memtables flush early past half of it). 16 to 1048576.
    #[arg(long, env = "FLEETGATE_STORE_MEMORY_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    pub store_memory_mb: u64,

    /// PEM certificate chain (leaf first) for `wss://` and `https://`; needs `--tls-key`. Plain
    /// `ws://` and `http://` stay available on the same port (the first byte tells them apart).
    #[arg(long, env = "FLEETGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `--tls-cert`.
    #[arg(long, env = "FLEETGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    // ---- abuse limits (docs/security.md) --------------------------------------------------------
    /// Open connections per source IP address; 0 = no limit. More: closed at once (HTTP 429).
    /// Raise it for sites that put many devices behind one NAT address, or for load tests.
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// Failed authentications (wrong device, API or admin tokens; wrong cloud ids) allowed per
    /// source address before back-off; then further failures from it are answered "throttled"
    /// (429, `auth_throttled`) for 1 s, doubling per failure up to `--auth-max-backoff`. A right
    /// token is always let in (docs/security.md).
    #[arg(long, default_value_t = 10)]
    pub auth_free_failures: u32,
    /// Longest authentication back-off, in seconds.
    #[arg(long, default_value_t = 900)]
    pub auth_max_backoff: u64,
    /// Registrations of one device within a minute before it counts as flapping and is banned for
    /// `--flap-ban` seconds (refused with `banned`); 0 = no flap detection.
    #[arg(long, default_value_t = 15)]
    pub flap_max_per_minute: u32,
    #[arg(long, default_value_t = 300)]
    pub flap_ban: u64,
    /// Frames per second one WebSocket session may send on average (bursts up to twice that); 0 =
    /// no limit. Past it the server stops reading from the session (TCP backpressure).
    #[arg(long, env = "FLEETGATE_MAX_MSG_RATE", default_value_t = 1000)]
    pub max_msg_rate: u32,
    /// Seconds a session may stay held back by `--max-msg-rate` without pause before it is closed
    /// (1008, "message rate exceeded").
    #[arg(long, default_value_t = 30)]
    pub rate_disconnect_after: u64,
    /// Seconds a write may wait for a peer that does not read; then the connection is closed.
    #[arg(long, default_value_t = 30)]
    pub write_timeout: u64,
    /// Proxies and load balancers (comma-separated CIDRs or addresses) whose word on the client's
    /// address is believed: a connection from one may open with a PROXY protocol header (v1 or
    /// v2), and its HTTP requests' `X-Forwarded-For` names the client. Throttles, per-address
    /// limits, logs and events then see the real client. From any other peer both are ignored.
    /// Connections from a trusted proxy count toward the client they carry, not the proxy.
    #[arg(long, env = "FLEETGATE_TRUSTED_PROXIES", default_value = "", value_parser = parse_networks)]
    pub trusted_proxies: Networks,
    /// MiB of read buffers all connections together may hold. Past it, connections that need a
    /// new buffer wait (backpressure) and a message that would grow a buffer is refused (1013).
    #[arg(long, env = "FLEETGATE_BUFFER_BUDGET_MB", default_value_t = 512)]
    pub buffer_budget_mb: usize,

    // ---- biometric terminals (docs/terminals.md) -----------------------------------------------
    /// Largest WebSocket message (bytes) from a terminal once it has logged in, and largest
    /// `POST /api/device-http` body: a `sendlog` carries a photo per record. Bigger: close 1009 /
    /// HTTP 413. Until a session has logged in as a terminal, `--max-message` applies. At least
    /// `--max-message`, at most 1 GiB.
    #[arg(long, env = "FLEETGATE_TERMINAL_MAX_MESSAGE", default_value_t = 16 << 20)]
    pub terminal_max_message: usize,
    /// MiB of read buffer all connections together may hold beyond `--max-message` (and
    /// `--max-body`) each, which only terminals' photo messages and `/api/device-http` bodies
    /// need. A message that would take it past that is refused: a terminal is closed with 1013
    /// and sends again after reconnecting, an HTTP request gets 503 with `Retry-After`. Must hold
    /// one `--terminal-max-message` message.
    #[arg(long, env = "FLEETGATE_LARGE_MESSAGE_BUDGET_MB", default_value_t = 256)]
    pub large_message_budget_mb: usize,
    /// Seconds of quiet (nothing heard, not even a Pong) after which a logged-in AiFace terminal
    /// is sent a WebSocket Ping, and again every as many seconds; 0 = never. Shorter than
    /// `--aiface-idle-timeout`.
    #[arg(long, env = "FLEETGATE_AIFACE_PING_INTERVAL", default_value_t = Keepalive::AIFACE.ping_s)]
    pub aiface_ping_interval: u16,
    /// Seconds a logged-in AiFace terminal may stay quiet. Then: close 1001, the device goes
    /// offline. 1–65535.
    #[arg(long, env = "FLEETGATE_AIFACE_IDLE_TIMEOUT", default_value_t = Keepalive::AIFACE.idle_s)]
    pub aiface_idle_timeout: u16,
    /// As `--aiface-ping-interval`, for SmackBio terminals.
    #[arg(long, env = "FLEETGATE_SMACKBIO_PING_INTERVAL", default_value_t = Keepalive::SMACKBIO.ping_s)]
    pub smackbio_ping_interval: u16,
    /// As `--aiface-idle-timeout`, for SmackBio terminals.
    #[arg(long, env = "FLEETGATE_SMACKBIO_IDLE_TIMEOUT", default_value_t = Keepalive::SMACKBIO.idle_s)]
    pub smackbio_idle_timeout: u16,
    /// Seconds a terminal has to answer a quick command (a door, its clock, a setting). Then the
    /// command fails (`{"error":"timeout"}`) and its late reply is waited for as long again before
    /// the next command is sent. 1–600, and capped by the dialect's idle timeout.
    #[arg(long, env = "FLEETGATE_TERMINAL_COMMAND_TIMEOUT", default_value_t = Timeouts::VENDOR.quick.as_secs())]
    pub terminal_command_timeout: u64,
    /// Seconds for every other command, and for each page of a paged one: users and photos
    /// written or read, enrolment, wipes, log walks. At least `--terminal-command-timeout`, at
    /// most 600.
    #[arg(long, env = "FLEETGATE_TERMINAL_SLOW_COMMAND_TIMEOUT", default_value_t = Timeouts::VENDOR.long.as_secs())]
    pub terminal_slow_command_timeout: u64,
}

/// The terminals' HTTP endpoint (`api::routes`), whose bodies may reach `--terminal-max-message`
/// (`tests/terminal_timing.rs` posts a photo `sendlog` past `--max-body` to it).
pub const DEVICE_HTTP_PATH: &str = "/api/device-http";
/// The largest `--terminal-max-message`: a message is held whole in memory.
const MAX_TERMINAL_MESSAGE: usize = 1 << 30;
/// The longest terminal command timeout, in seconds.
const MAX_COMMAND_TIMEOUT: u64 = 600;

impl ServeConfig {
    /// Settings that parse but cannot work together; checked before anything starts.
    pub fn check(&self) -> Result<(), String> {
        for (dialect, keepalive) in [("aiface", self.aiface()), ("smackbio", self.smackbio())] {
            keepalive
                .check()
                .map_err(|e| format!("--{dialect}-ping-interval, --{dialect}-idle-timeout: {e}"))?;
        }
        let (quick, slow) = (
            self.terminal_command_timeout,
            self.terminal_slow_command_timeout,
        );
        if !(1..=MAX_COMMAND_TIMEOUT).contains(&quick)
            || !(quick..=MAX_COMMAND_TIMEOUT).contains(&slow)
        {
            return Err(format!(
                "--terminal-command-timeout ({quick} s) and --terminal-slow-command-timeout ({slow} s) must be 1 to {MAX_COMMAND_TIMEOUT} s, the slow one no shorter"
            ));
        }
        let terminal = self.terminal_max_message;
        if terminal < self.max_message || terminal > MAX_TERMINAL_MESSAGE {
            return Err(format!(
                "--terminal-max-message ({terminal}) must be at least --max-message ({}) and at most {MAX_TERMINAL_MESSAGE}",
                self.max_message
            ));
        }
        if terminal > self.max_message && self.large_message_budget_mb << 20 < terminal {
            return Err(format!(
                "--large-message-budget-mb ({} MiB) must hold one --terminal-max-message message ({terminal} bytes)",
                self.large_message_budget_mb
            ));
        }
        if !self.nats.is_empty() {
            let node = self.node_id.as_deref().unwrap_or_default();
            crate::cluster::link::check_node_id(node).map_err(|e| format!("--node-id: {e}"))?;
            crate::cluster::link::check_urls(&self.nats).map_err(|e| format!("--nats: {e}"))?;
        }
        Ok(())
    }

    fn aiface(&self) -> Keepalive {
        Keepalive {
            ping_s: self.aiface_ping_interval,
            idle_s: self.aiface_idle_timeout,
        }
    }

    fn smackbio(&self) -> Keepalive {
        Keepalive {
            ping_s: self.smackbio_ping_interval,
            idle_s: self.smackbio_idle_timeout,
        }
    }

    pub fn register_timeout(&self) -> Duration {
        Duration::from_secs(self.register_timeout)
    }

    /// The settings of the product's rules.
    pub fn rules(&self) -> crate::fleet::state::Rules {
        crate::fleet::state::Rules {
            command_queue_limit: self.command_queue_limit,
            command_ttl_s: self.command_ttl,
            auto_approve: self.auto_approve,
            retention: Retention {
                telemetry: self.retain_telemetry,
                events: self.retain_events,
                attendance: self.retain_attendance,
                command_history: self.retain_command_history,
            },
            msg_ids: crate::fleet::msg_window::Remember {
                window: self.msg_id_window,
                retention_us: self.msg_id_retention_hours.saturating_mul(3_600_000_000),
            },
            webhooks_allow_private: self.webhooks_allow_private,
        }
    }

    /// The cluster's settings, when `--nats` names servers.
    pub fn cluster_settings(&self) -> Option<crate::cluster::link::Settings> {
        if self.nats.is_empty() {
            return None;
        }
        Some(crate::cluster::link::Settings {
            urls: self.nats.clone(),
            node: self.node_id.clone().unwrap_or_default(),
            export_max_lag: self.export_max_lag,
            replicas: usize::from(self.nats_replicas),
        })
    }

    /// The webhook sender's settings. A delivery is a success only when a 2xx comes within 15 s.
    pub fn webhook_settings(&self) -> crate::webhook_sender::Settings {
        crate::webhook_sender::Settings {
            allow_private: self.webhooks_allow_private,
            retry_min_ms: self.webhooks_retry_min_ms,
            retain_ms: self.webhooks_retain_days.saturating_mul(86_400_000),
            timeout: Duration::from_secs(15),
        }
    }

    /// The abuse guard's limits.
    pub fn guard_limits(&self) -> crate::fleet::guard::GuardLimits {
        crate::fleet::guard::GuardLimits {
            max_connections_per_ip: self.max_connections_per_ip,
            auth_free_failures: self.auth_free_failures,
            auth_max_backoff_s: self.auth_max_backoff,
            flap_max_per_minute: self.flap_max_per_minute,
            flap_ban_s: self.flap_ban,
        }
    }

    /// The runtime's limits.
    pub fn runtime_limits(&self) -> crate::shard::local::Limits {
        crate::shard::local::Limits {
            shards: self.machine.shard_count(),
            max_message: self.max_message,
            max_body: self.max_body,
            register_timeout: self.register_timeout,
            ws_idle_timeout: self.ws_idle_timeout,
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_connections: self.machine.max_connections,
            outbox_limit: self.outbox_limit,
            inflight_limit: self.inflight_limit,
            http_offline_after: self.http_offline_after,
            max_msg_rate: self.max_msg_rate,
            rate_disconnect_after: self.rate_disconnect_after,
            write_timeout: self.write_timeout,
            buffer_budget_mb: self.buffer_budget_mb,
            large_budget: self.large_message_budget_mb.saturating_mul(1 << 20),
            terminal_max_message: self.terminal_max_message,
            upload: Some(Upload {
                path: DEVICE_HTTP_PATH,
                max_body: self.terminal_max_message.max(self.max_body),
            }),
            aiface: self.aiface(),
            smackbio: self.smackbio(),
            terminal_timeouts: Timeouts {
                quick: Duration::from_secs(self.terminal_command_timeout),
                long: Duration::from_secs(self.terminal_slow_command_timeout),
            },
            trusted_proxies: self.trusted_proxies.0.clone(),
            ws_paths: DEFAULT_WS_PATHS
                .iter()
                .map(|p| p.to_string())
                .chain(self.ws_paths.0.iter().cloned())
                .collect(),
        }
    }
}

/// The paths that always accept WebSocket upgrades: fleetgate's own, and the one AiFace firmware
/// without a path setting connects to (`shared/protocols.md` §3.1).
pub const DEFAULT_WS_PATHS: [&str; 2] = ["/ws", "/pub/chat"];
/// Extra WebSocket paths at most (each is compared on every upgrade).
const MAX_WS_PATHS: usize = 16;

/// Extra WebSocket paths given on the command line.
#[derive(Clone, Debug, Default)]
pub struct WsPaths(pub Vec<String>);

fn parse_ws_paths(s: &str) -> Result<WsPaths, String> {
    let paths: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if paths.len() > MAX_WS_PATHS {
        return Err(format!("at most {MAX_WS_PATHS} paths"));
    }
    for p in &paths {
        let ok = p.starts_with('/')
            && p.len() <= 256
            && p.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !ok {
            return Err(format!(
                "{p:?}: a path starts with '/' and has no query, fragment or spaces"
            ));
        }
    }
    Ok(WsPaths(paths))
}

/// A list of networks given on the command line.
#[derive(Clone, Debug, Default)]
pub struct Networks(pub Vec<Cidr>);

fn parse_networks(s: &str) -> Result<Networks, String> {
    Cidr::parse_list(s).map(Networks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn serve(flags: &[&str]) -> ServeConfig {
        let args = std::iter::once("serve").chain(flags.iter().copied());
        Args::try_parse_from(args).expect("flags parse").serve
    }

    #[test]
    fn terminal_settings_default_to_the_sources_and_are_checked_together() {
        let default = serve(&[]);
        assert_eq!(default.check(), Ok(()));
        let limits = default.runtime_limits();
        assert_eq!(limits.aiface, Keepalive::AIFACE);
        assert_eq!(limits.smackbio, Keepalive::SMACKBIO);
        assert_eq!(limits.terminal_timeouts, Timeouts::VENDOR);
        assert_eq!(limits.terminal_max_message, 16 << 20);
        assert_eq!(limits.upload.map(|u| u.max_body), Some(16 << 20));
        for bad in [
            &["--aiface-ping-interval", "120"][..],
            &["--smackbio-idle-timeout", "0"],
            &[
                "--smackbio-ping-interval",
                "60",
                "--smackbio-idle-timeout",
                "30",
            ],
            &["--terminal-command-timeout", "0"],
            &["--terminal-command-timeout", "40"],
            &["--terminal-slow-command-timeout", "601"],
            &["--terminal-max-message", "1000"],
            &["--terminal-max-message", "2000000000"],
            &["--large-message-budget-mb", "8"],
        ] {
            assert!(serve(bad).check().is_err(), "{bad:?}");
        }
        // The tests' short settings; the photo limit switched off entirely.
        for good in [
            &["--aiface-ping-interval", "1", "--aiface-idle-timeout", "3"][..],
            &["--aiface-ping-interval", "0"],
            &[
                "--terminal-command-timeout",
                "1",
                "--terminal-slow-command-timeout",
                "1",
            ],
            &[
                "--terminal-max-message",
                "1048576",
                "--large-message-budget-mb",
                "0",
            ],
        ] {
            assert_eq!(serve(good).check(), Ok(()), "{good:?}");
        }
        assert!(Args::try_parse_from(["serve", "--aiface-idle-timeout", "70000"]).is_err());
    }

    #[test]
    fn websocket_paths_are_absolute_plain_and_few() {
        let ok = parse_ws_paths(" /iclock/ws, /face/chat ,").expect("valid");
        assert_eq!(ok.0, ["/iclock/ws", "/face/chat"]);
        assert!(parse_ws_paths("").expect("empty").0.is_empty());
        for bad in ["chat", "/a b", "/a?x=1", "/a#f"] {
            assert!(parse_ws_paths(bad).is_err(), "{bad:?}");
        }
        let many = vec!["/p"; MAX_WS_PATHS + 1].join(",");
        assert!(parse_ws_paths(&many).is_err());
    }
}
