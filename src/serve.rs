//! `fleetgate serve`: open the store, load the registry, bind one SO_REUSEPORT listener per shard,
//! start the shards, and wait for SIGINT/SIGTERM to shut down in order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::config::{IoMode, ServeConfig};
use crate::data_dir;
use crate::fleet::auth::{self, TokenHash};
use crate::fleet::links::Links;
use crate::fleet::registry::Registry;
use crate::fleet::state::Fleet;
use crate::shard::hub::Hub;
use crate::shard::local::Shared;
use crate::shard::run;
use crate::store::Store;
use crate::store::commit::spawn_committer;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn run(config: ServeConfig) -> Result<(), Error> {
    config.check()?;
    data_dir::restrict_umask();
    // Block the shutdown signals in every thread (threads inherit the mask); the main thread then
    // takes them synchronously with sigwait, so no handler runs in the middle of a shard's work.
    let signals = block_shutdown_signals()?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ])?
        // The one histogram that counts records, not seconds.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("fleetgate_batch_records".into()),
            &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0],
        )?
        .install_recorder()?;
    crate::metrics_catalog::describe();

    data_dir::private_data_dir(&config.machine.data_dir)?;
    let admin_token = admin_token(&config.machine.data_dir)?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::shard::tls::load_config(cert, key)?;
            tracing::info!(cert = %cert.display(), "TLS enabled: wss:// and https:// on the same port as ws:// and http://");
            Some(tls)
        }
        _ => None,
    };
    let store = Arc::new(Store::open(
        &config.machine.data_dir,
        config.sync_writes,
        Duration::from_secs(config.msg_id_retention_hours * 3600),
        usize::try_from(config.store_memory_mb << 20).unwrap_or(usize::MAX),
    )?);
    store.guard.set_min_free(config.min_free_disk);
    // Sampled before the first write, then every second until shutdown.
    let monitor =
        crate::store::monitor::Monitor::spawn(store.clone(), config.machine.data_dir.clone())?;
    let registry = Registry::load(&store)?;
    let pending =
        crate::fleet::pending::Pending::load(&store, |sn| registry.by_serial(sn).is_some())?;
    let accounts = initial_accounts(&store, &config.machine.data_dir)?;
    metrics::gauge!("fleetgate_devices").set(registry.len() as f64);
    tracing::info!(devices = registry.len(), dir = %config.machine.data_dir.display(), "store open");

    let uring = match config.machine.io {
        IoMode::Epoll => false,
        IoMode::Uring => {
            crate::shard::uring::available()
                .map_err(|e| format!("--io uring: io_uring is unavailable here: {e}"))?;
            true
        }
        IoMode::Auto => match crate::shard::uring::available() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is unavailable (kernel or seccomp); falling back to epoll");
                false
            }
        },
    };
    let shards = config.machine.shard_count();
    let listeners = bind_all(config.machine.listen, shards)?;
    let bound = listeners[0].local_addr()?;
    tracing::info!(driver = if uring { "io_uring" } else { "epoll" }, shards, addr = %bound, "I/O driver selected");

    let (hub, inboxes) = Hub::new(shards);
    let hub = Arc::new(hub);
    let ready_file = config.ready_file.clone();
    // In a cluster the admin broadcasts also go to the other nodes' admin subscribers.
    let cluster_settings = config.cluster_settings();
    let relay = cluster_settings
        .as_ref()
        .map(|_| crate::cluster::live::Relay::new(hub.clone()));
    let links: Arc<dyn Links> = match &relay {
        Some((relay, _)) => relay.clone(),
        None => hub.clone(),
    };
    let fleet = Fleet {
        store: store.clone(),
        registry,
        pending,
        new_serials: crate::fleet::new_serials::NewSerials::new(config.new_serials_per_minute),
        accounts,
        people: Arc::new(crate::fleet::people::People::load(&store)?),
        webhooks: Arc::new(
            crate::fleet::webhooks::Webhooks::load(&store)?
                .with_telemetry_rate(config.webhooks_telemetry_per_second),
        ),
        guard: crate::fleet::guard::Guard::new(&config.guard_limits()),
        admin_token,
        rules: config.rules(),
        links,
        messages: std::sync::atomic::AtomicU64::new(0),
        cluster: Default::default(),
    };
    let handler = Arc::new(crate::api::Api {
        data_dir: config.machine.data_dir.clone(),
        prometheus: prometheus.clone(),
        backups: crate::backup::OneAtATime::default(),
    });
    let shared = Arc::new(Shared {
        limits: config.runtime_limits(),
        fleet,
        hub,
        handler,
        tls,
        connections: AtomicUsize::new(0),
        large_bytes: AtomicUsize::new(0),
        started: Instant::now(),
    });

    // Before any shard stages a record, so the export misses none.
    let cluster = match (cluster_settings, relay) {
        (Some(settings), Some(relay)) => Some(crate::cluster::link::Cluster::start(
            shared.clone(),
            settings,
            relay,
        )?),
        _ => None,
    };
    let cores = core_ids();
    let mut threads = Vec::new();
    let mut committers = Vec::new();
    for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let (committer, cthread) = spawn_committer(store.clone(), format!("fg-commit-{i}"))?;
        committers.push(cthread);
        let shared = shared.clone();
        let core = cores.get(i % cores.len().max(1)).copied();
        threads.push(
            std::thread::Builder::new()
                .name(format!("fg-shard-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        pin_to_core(c);
                    }
                    if let Err(e) = run::run(i, shared, inbox, committer, listener, uring) {
                        tracing::error!(shard = i, error = %e, "shard failed");
                    }
                })?,
        );
    }
    let sweeper = retention_sweeper(shared.clone())?;
    let webhook_sender =
        crate::webhook_sender::Sender::start(shared.clone(), config.webhook_settings())?;
    let upkeep = {
        let prometheus = prometheus.clone();
        Periodic::spawn("fg-metrics", move || {
            prometheus.run_upkeep();
            METRICS_UPKEEP_EVERY
        })?
    };
    tracing::info!(addr = %bound, "fleetgate listening");
    if !config.trusted_proxies.0.is_empty() {
        let nets: Vec<String> = config
            .trusted_proxies
            .0
            .iter()
            .map(|n| n.to_string())
            .collect();
        tracing::info!(proxies = %nets.join(","), "client addresses from these proxies' PROXY headers and X-Forwarded-For are believed");
    }
    if let Some(path) = ready_file {
        data_dir::write_atomically(&path, format!("{bound}\n").as_bytes(), 0o644)?;
    }

    let sig = wait_for_signal(&signals);
    tracing::info!(
        signal = sig,
        "shutting down: closing sessions and flushing batches"
    );
    shared.hub.shutdown_all();
    for t in threads {
        let _ = t.join();
    }
    for t in committers {
        let _ = t.join();
    }
    drop(sweeper);
    drop(webhook_sender);
    drop(cluster);
    drop(upkeep);
    drop(monitor);
    store.db().flush_wal(true)?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// How often histogram samples are folded into their buckets. `install_recorder` spawns no upkeep
/// task, and until one runs (or a scrape renders) every sample is kept: without a Prometheus
/// scraping, memory would grow with every batch committed.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A named thread that runs `tick` until dropped, waiting whatever `tick` returns between runs;
/// dropping it wakes, stops and joins the thread.
struct Periodic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    fn spawn(
        name: &str,
        mut tick: impl FnMut() -> Duration + Send + 'static,
    ) -> std::io::Result<Periodic> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let wait = tick();
                    std::thread::park_timeout(wait);
                }
            })?;
        Ok(Periodic {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The thread that deletes records past their retention (`fleet::retention::sweep`), as often as
/// the shortest retention in force asks.
fn retention_sweeper(shared: Arc<Shared>) -> std::io::Result<Periodic> {
    use crate::fleet::retention::{self, Kind};
    Periodic::spawn("fg-retention", move || {
        let fleet = &shared.fleet;
        let rules = &fleet.rules.retention;
        let started = Instant::now();
        let now = crate::time::now_us();
        match retention::sweep(&fleet.store, &fleet.registry, rules, now) {
            Ok(swept) => {
                metrics::counter!("fleetgate_retention_sweeps_total").increment(1);
                metrics::counter!("fleetgate_retention_deleted_keys_total")
                    .increment(swept.keys as u64);
                tracing::debug!(
                    ?swept,
                    took_ms = started.elapsed().as_millis() as u64,
                    "retention sweep"
                );
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; the next one retries"),
        }
        let mut overrides = Vec::new();
        fleet.registry.visit_from(None, |d| {
            d.with_record(|r| {
                for kind in Kind::ALL {
                    if r.settings.contains_key(kind.setting()) {
                        overrides.push(rules.for_settings(kind, &r.settings));
                    }
                }
            });
            true
        });
        rules.sweep_every(overrides.into_iter())
    })
}

/// `FLEETGATE_ADMIN_TOKEN` if set; otherwise the token in `<data-dir>/admin-token`, created (mode
/// 0600) and logged once on first start. Only its hash stays in memory.
fn admin_token(dir: &Path) -> Result<TokenHash, Error> {
    if let Ok(t) = std::env::var("FLEETGATE_ADMIN_TOKEN") {
        let t = t.trim();
        if t.len() < 16 {
            return Err("FLEETGATE_ADMIN_TOKEN must be at least 16 characters".into());
        }
        return Ok(auth::hash_token(t));
    }
    let path = dir.join(data_dir::ADMIN_TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(auth::hash_token(t.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = auth::generate_token()?;
            data_dir::write_atomically(&path, format!("{t}\n").as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), token = %t, "generated the admin token (shown once; it is also in this file)");
            Ok(auth::hash_token(&t))
        }
        Err(e) => Err(format!("reading {}: {e}", path.display()).into()),
    }
}

/// Loads the dashboard accounts; on first start (no users) creates `admin` with a random password,
/// written to `<data-dir>/initial-admin-password` (mode 0600) and logged once. This is independent
/// of the bootstrap admin token: `FLEETGATE_ADMIN_TOKEN` does not replace the dashboard's user.
fn initial_accounts(store: &Store, dir: &Path) -> Result<crate::fleet::accounts::Accounts, Error> {
    let accounts = crate::fleet::accounts::Accounts::load(store)?;
    if let Some(password) = accounts.bootstrap(store, crate::time::now_ms())? {
        let path = dir.join(data_dir::INITIAL_ADMIN_PASSWORD);
        data_dir::write_atomically(&path, format!("{password}\n").as_bytes(), 0o600)?;
        tracing::info!(
            user = crate::fleet::accounts::INITIAL_ADMIN,
            password = %password,
            path = %path.display(),
            "created the dashboard user (shown once; also in this file; change it at first login)"
        );
    }
    Ok(accounts)
}

/// One listener per shard on the same address. With port 0 the first picks a port and the rest
/// join it, so every shard serves the same port.
fn bind_all(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let s = Socket::new(
            Domain::for_address(addr),
            Type::STREAM,
            Some(SockProtocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(crate::config::LISTEN_BACKLOG)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

fn core_ids() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: as above; pinning the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin shard thread to its core");
        }
    }
}

fn block_shutdown_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset manipulation on a local set, then masking the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` holds only blocked signals; sigwait writes the one taken into `sig`.
        if unsafe { libc::sigwait(set, &mut sig) } == 0 {
            return sig;
        }
    }
}
