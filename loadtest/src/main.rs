//! `loadtest`: fleetgate's load-test harness (issue 6).
//!
//! The parent provisions devices through the admin API (or targets the built-in raw sink),
//! splits them into slices, runs each slice in a worker process (a re-executed
//! `loadtest --worker`, see `control`), starts every worker's run window at the same instant,
//! drives commands through the admin API for the command storm, samples the server's RSS and CPU
//! from /proc, and merges the results into one report.

mod admin;
mod clock;
mod cmdstorm;
mod control;
mod procstat;
mod proto;
mod provision;
mod report;
mod sink;
mod wire;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use clock::{now_ns, secs_ns};
use proto::Protocol;
use worker::{Outcome, Scenario, Spec};

/// Connections per process: the box allows 20,000 open files per process, and the worker needs
/// some for itself.
const MAX_PER_PROCESS: usize = 15_000;
/// Connections per source address before the next one is used. One address pair holds ~28k
/// ephemeral ports; a reconnect storm needs room for the old sockets' TIME_WAIT as well.
const PER_SOURCE: usize = 10_000;
/// Lead time between the last `READY` and the shared start, so every worker hears `GO` first.
const GO_LEAD_NS: u64 = 200_000_000;

#[derive(Parser, Debug)]
#[command(about = "Load-test harness for fleetgate: simulated device fleets for every protocol")]
pub struct Args {
    /// The server's base URL (HTTP admin API; the WebSocket endpoint is /ws on the same port).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Where the admin API calls go (provisioning, and command-storm's commands), when not to
    /// `--url`: another node of a cluster, so that commands cross nodes. `--url` may also name a
    /// TCP balancer in front of the nodes.
    #[arg(long)]
    admin_url: Option<String>,
    #[arg(long, env = "FLEETGATE_ADMIN_TOKEN", default_value = "")]
    admin_token: String,
    #[arg(long, value_enum, default_value = "telemetry-flood")]
    scenario: Scenario,
    /// What the devices speak. command-storm needs `generic` (its commands carry the timestamp
    /// to the device only in the generic payload).
    #[arg(long, value_enum, default_value = "generic")]
    protocol: Protocol,
    /// Run the scenario against the built-in raw sink instead of the server (the baseline).
    #[arg(long, conflicts_with = "compare")]
    sink: bool,
    /// Run the scenario against the server, then against the raw sink, back to back: one JSON
    /// object with both results and the server-to-sink ratio of each figure they share.
    #[arg(long)]
    compare: bool,
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// telemetry-flood: messages per second per device (0 = as fast as acks allow).
    /// command-storm: commands per second, all devices together.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacked data messages per device at most (HTTP and ZKTeco terminals: always 1).
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Seconds of measured load, after all connections are set up (reconnect-storm: the most
    /// the storm may take).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Approximate size of each generic telemetry payload object.
    #[arg(long, default_value_t = 150)]
    payload_bytes: usize,
    /// Records per AiFace/HTTP `sendlog` and per ZKTeco `ATTLOG` upload (SmackBio and generic:
    /// always 1).
    #[arg(long, default_value_t = 1)]
    records_per_msg: u32,
    /// attendance-burst: messages per device per burst.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// attendance-burst: seconds between the starts of two bursts.
    #[arg(long, default_value_t = 1.0)]
    burst_interval: f64,
    /// Seconds between a device's heartbeats (generic ping, AiFace WebSocket ping, SmackBio
    /// KeepAlive, HTTP checklive, ZKTeco getrequest); 0 = none. The server drops sessions silent for 90 s.
    #[arg(long, default_value_t = 30.0)]
    heartbeat: f64,
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Connections in connect/handshake/register at once, per process.
    #[arg(long, default_value_t = 256)]
    max_connecting: usize,
    /// Seconds allowed for connecting and registering every device.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Seconds after the run for outstanding acks; still unacked after that: errors.
    #[arg(long, default_value_t = 3.0)]
    grace: f64,
    /// command-storm: keep-alive admin API connections posting commands (one thread each).
    #[arg(long, default_value_t = 32)]
    cmd_conns: usize,
    /// command-storm: one command in this many has its status polled until `acked`.
    #[arg(long, default_value_t = 100)]
    cmd_sample_every: u64,
    /// Sample fdatasync latency in this directory (put it on the server's data-dir disk) every
    /// 100 ms during the window: the disk conditions the group commits met.
    #[arg(long)]
    fsync_probe: Option<std::path::PathBuf>,
    /// The server's pid, to report its RSS and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    json: bool,
    /// Internal: run one slice read from stdin and print its outcome.
    #[arg(long, hide = true)]
    worker: bool,
}

fn main() {
    let args = Args::parse();
    raise_nofile_limit();
    let result = if args.worker {
        worker_main()
    } else {
        parent_main(&args)
    };
    if let Err(e) = result {
        eprintln!("loadtest: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn worker_main() -> Res<()> {
    let mut stdin = BufReader::new(std::io::stdin());
    let mut first = String::new();
    stdin.read_line(&mut first)?;
    let spec: Spec = serde_json::from_str(&first)?;
    let gate = control::Gate::from_stdin(stdin);
    let out = worker::run(&spec, &gate)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    stdout.flush()?;
    Ok(())
}

/// Server measurements taken by the parent.
#[derive(Default)]
pub struct ServerStats {
    pub rss_before_kib: Option<u64>,
    pub rss_ready_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_after_close_kib: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub harness_cpu_pct: Option<f64>,
    /// The whole machine's busy CPU over the window (200 = both cores), and what of it was
    /// neither the server nor the harness: other work on the box that the figures competed with.
    pub machine_cpu_pct: Option<f64>,
    pub other_cpu_pct: Option<f64>,
    /// Time the server's threads waited for a CPU over the window, as a percentage of the
    /// window (100 = one thread's worth of waiting for the whole window).
    pub runq_wait_pct: Option<f64>,
    pub loadavg_start: Option<f64>,
    pub loadavg_end: Option<f64>,
    pub window_s: f64,
    pub provision_s: f64,
    /// fdatasync latencies (µs) sampled during the window, with `--fsync-probe`.
    pub fsync_us: Vec<u64>,
}

fn parent_main(args: &Args) -> Res<()> {
    if args.devices == 0 || args.processes == 0 || args.inflight == 0 {
        return Err("--devices, --processes and --inflight must be at least 1".into());
    }
    if args.devices.div_ceil(args.processes) > MAX_PER_PROCESS {
        return Err(format!(
            "{} devices over {} processes exceeds {MAX_PER_PROCESS} connections per process; raise --processes",
            args.devices, args.processes
        )
        .into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite() && args.rate >= 0.0) {
        return Err("--duration must be positive and --rate non-negative".into());
    }
    let sink_run = args.sink || args.scenario == Scenario::RawSink;
    // `raw-sink` is the telemetry flood against the sink (its historical name).
    let scenario = match args.scenario {
        Scenario::RawSink => Scenario::TelemetryFlood,
        s => s,
    };
    if scenario == Scenario::CommandStorm && args.protocol != Protocol::Generic {
        return Err("command-storm needs --protocol generic".into());
    }
    if scenario == Scenario::CommandStorm && args.rate <= 0.0 {
        return Err("command-storm needs --rate (commands per second, total)".into());
    }
    if args.compare && sink_run {
        return Err(
            "--compare runs the sink itself: give it the server's --url, not raw-sink".into(),
        );
    }
    let result = if args.compare {
        let server = run_once(args, scenario, false)?;
        eprintln!("loadtest: the same scenario against the raw sink");
        let sink = run_once(args, scenario, true)?;
        report::compare(server, sink)
    } else {
        run_once(args, scenario, sink_run)?
    };
    report::emit(args, &result);
    Ok(())
}

/// One run of `scenario`, against the raw sink or the server, as its report object.
fn run_once(args: &Args, scenario: Scenario, sink_run: bool) -> Res<serde_json::Value> {
    // The raw sink replaces the server; otherwise resolve the server's address from --url.
    let mut stats = ServerStats::default();
    let mut sink = None;
    let (target, devices) = if sink_run {
        let s = sink::Sink::start()?;
        let addr = s.addr;
        sink = Some(s);
        (addr, provision::fake(args.protocol, args.devices))
    } else {
        let target = resolve(&args.url)?;
        let admin = resolve(args.admin_url.as_deref().unwrap_or(&args.url))?;
        let t0 = now_ns();
        let devices = provision::create(admin, &args.admin_token, args.protocol, args.devices)?;
        stats.provision_s = (now_ns() - t0) as f64 / 1e9;
        if admin != target {
            // Devices made on another node reach this one through the cluster's registry.
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!(
            "loadtest: provisioned {} {} devices in {:.1} s",
            devices.len(),
            args.protocol.api_name(),
            stats.provision_s
        );
        (target, devices)
    };
    // The raw sink lives in this process: its RSS and CPU are ours.
    let server_pid = if sink_run {
        Some(std::process::id())
    } else {
        args.server_pid
    };

    // Spread over 127.0.0.2, .3, … only when the target is loopback (other hosts need real
    // local addresses, which the harness does not configure).
    let sources: Vec<IpAddr> = if target.ip().is_loopback() {
        let n = args
            .devices
            .div_ceil(PER_SOURCE)
            .max(args.processes)
            .min(250);
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
            .collect()
    } else {
        Vec::new()
    };

    stats.rss_before_kib = server_pid.and_then(procstat::rss_kib);
    // Sample the server's RSS while the workers run; the peak is the loaded figure.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = server_pid.map(|pid| {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = procstat::rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });

    let per = args.devices.div_ceil(args.processes);
    let specs: Vec<Spec> = devices
        .chunks(per)
        .enumerate()
        .map(|(w, chunk)| Spec {
            scenario,
            protocol: args.protocol,
            target,
            devices: chunk.iter().map(|d| d.cred.clone()).collect(),
            // Each process starts on its own source address, then rotates.
            sources: if sources.is_empty() {
                Vec::new()
            } else {
                let mut s = sources.clone();
                s.rotate_left(w % sources.len());
                s
            },
            rate: if scenario == Scenario::CommandStorm {
                0.0
            } else {
                args.rate
            },
            inflight: args.inflight,
            duration_s: args.duration,
            payload_bytes: args.payload_bytes,
            setup_timeout_s: args.setup_timeout,
            records_per_msg: args.records_per_msg,
            burst: args.burst,
            burst_interval_s: args.burst_interval,
            heartbeat_s: args.heartbeat,
            max_connecting: args.max_connecting,
            grace_s: args.grace,
        })
        .collect();

    let admin_target = match (&args.admin_url, sink_run) {
        (Some(u), false) => resolve(u)?,
        _ => target,
    };
    let device_ids: Arc<Vec<String>> =
        Arc::new(devices.iter().map(|d| d.device_id.clone()).collect());
    let mut cmd_report = None;
    let outcomes = run_workers(
        &specs,
        args,
        server_pid,
        sink_run,
        &mut stats,
        |start_ns, end_ns| {
            (scenario == Scenario::CommandStorm).then(|| {
                cmdstorm::start(cmdstorm::Config {
                    addr: admin_target,
                    token: args.admin_token.clone(),
                    device_ids: device_ids.clone(),
                    rate: args.rate,
                    start_ns,
                    end_ns,
                    conns: args.cmd_conns,
                    sample_every: args.cmd_sample_every,
                })
            })
        },
        &mut cmd_report,
    )?;

    stop.store(true, Ordering::Relaxed);
    if let Some(t) = sampler {
        let _ = t.join();
    }
    // Give the server a moment to close the sessions before the after-close reading.
    std::thread::sleep(Duration::from_secs(1));
    stats.rss_after_close_kib = server_pid.and_then(procstat::rss_kib);
    if let Some(s) = sink {
        s.stop();
    }
    stats.rss_peak_kib = match peak.load(Ordering::Relaxed) {
        0 => None,
        k => Some(k),
    };
    Ok(report::build(
        args,
        scenario,
        sink_run,
        &outcomes,
        &stats,
        cmd_report.as_ref(),
    ))
}

enum Line {
    Text(usize, String),
    Closed(usize),
}

/// Spawns one worker process per spec, starts them together, and collects their outcomes;
/// every wait is bounded. `driver` starts the command driver for the window `[start, end)`.
fn run_workers(
    specs: &[Spec],
    args: &Args,
    server_pid: Option<u32>,
    sink_run: bool,
    stats: &mut ServerStats,
    driver: impl FnOnce(u64, u64) -> Option<cmdstorm::Driver>,
    cmd_report: &mut Option<cmdstorm::Report>,
) -> Res<Vec<Outcome>> {
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = Vec::new();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    let (tx, rx) = mpsc::channel::<Line>();
    for (i, spec) in specs.iter().enumerate() {
        let mut child = Command::new(&exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("worker has no stdin")?;
        let mut line = serde_json::to_string(spec)?;
        line.push('\n');
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        let out = child.stdout.take().ok_or("worker has no stdout")?;
        let tx = tx.clone();
        // Each worker's stdout is read on its own thread, so a stuck worker blocks no other.
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(Line::Text(i, l)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Closed(i));
        });
        children.push(child);
        stdins.push(stdin);
    }
    drop(tx);
    let n = specs.len();
    let kill_all = |children: &mut Vec<Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    let mut ready = vec![false; n];
    let mut ended = vec![false; n];
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut closed = vec![false; n];

    // 1. Every worker set up.
    let deadline = now_ns() + secs_ns(args.setup_timeout + 30.0);
    while !ready.iter().all(|r| *r) {
        match next_line(&rx, deadline) {
            Some(Line::Text(i, l)) if l == control::READY => ready[i] = true,
            Some(Line::Text(_, _)) => {}
            Some(Line::Closed(i)) => {
                kill_all(&mut children);
                return Err(format!("worker {i} exited during setup").into());
            }
            None => {
                kill_all(&mut children);
                return Err("workers did not finish setup in time".into());
            }
        }
    }
    stats.rss_ready_kib = server_pid.and_then(procstat::rss_kib);

    // 2. One start for all.
    let start = now_ns() + GO_LEAD_NS;
    let end = start + secs_ns(args.duration);
    for s in stdins.iter_mut() {
        writeln!(s, "{}{start}", control::GO)?;
        s.flush()?;
    }
    // The harness: the workers, and this process unless it is the raw sink (then it is the
    // "server"; the command driver's share is small next to the sink's).
    let mut harness_pids: Vec<u32> = children.iter().map(Child::id).collect();
    if !sink_run {
        harness_pids.push(std::process::id());
    }
    let harness_ticks =
        || -> Option<u64> { harness_pids.iter().map(|p| procstat::cpu_ticks(*p)).sum() };
    // The driver's threads wait for their first slot themselves.
    let driver = driver(start, end);
    clock::sleep_until(start);
    let cpu_before = server_pid.and_then(procstat::cpu_ticks);
    let harness_before = harness_ticks();
    let probe_stop = Arc::new(AtomicBool::new(false));
    let probe = args
        .fsync_probe
        .clone()
        .map(|dir| procstat::fsync_probe(dir, probe_stop.clone()));
    let machine_before = procstat::machine_busy_ticks();
    let runq_before = server_pid.and_then(procstat::runq_wait_ns);
    stats.loadavg_start = procstat::loadavg();

    // 3. Every run window closed: the CPU window ends with the last one.
    let deadline = end + secs_ns(30.0);
    while !ended.iter().all(|e| *e) {
        match next_line(&rx, deadline) {
            Some(Line::Text(i, l)) if l == control::RUN_END => ended[i] = true,
            Some(Line::Text(i, l)) => {
                // A worker that gave up early answers its outcome instead.
                if let Ok(o) = serde_json::from_str::<Outcome>(&l) {
                    outcomes[i] = Some(o);
                    ended[i] = true;
                }
            }
            Some(Line::Closed(i)) => {
                closed[i] = true;
                ended[i] = true;
            }
            None => break,
        }
    }
    let window_end = now_ns();
    probe_stop.store(true, Ordering::Relaxed);
    if let Some(p) = probe {
        stats.fsync_us = p.join().unwrap_or_default();
    }
    stats.window_s = (window_end - start) as f64 / 1e9;
    stats.cpu_pct = procstat::cpu_pct(
        cpu_before,
        server_pid.and_then(procstat::cpu_ticks),
        stats.window_s,
    );
    stats.harness_cpu_pct = procstat::cpu_pct(harness_before, harness_ticks(), stats.window_s);
    stats.machine_cpu_pct = procstat::cpu_pct(
        machine_before,
        procstat::machine_busy_ticks(),
        stats.window_s,
    );
    stats.loadavg_end = procstat::loadavg();
    if let (Some(b), Some(a)) = (runq_before, server_pid.and_then(procstat::runq_wait_ns))
        && stats.window_s > 0.0
    {
        let pct = a.saturating_sub(b) as f64 / 1e9 / stats.window_s * 100.0;
        stats.runq_wait_pct = Some((pct * 10.0).round() / 10.0);
    }
    if let (Some(m), Some(h)) = (stats.machine_cpu_pct, stats.harness_cpu_pct) {
        let other = m - h - stats.cpu_pct.unwrap_or(0.0);
        stats.other_cpu_pct = Some((other.max(0.0) * 10.0).round() / 10.0);
    }
    stats.rss_held_kib = server_pid.and_then(procstat::rss_kib);
    *cmd_report = driver.map(cmdstorm::Driver::join);
    // Late commands (due inside the window, posted after it) have now all been posted.
    for s in stdins.iter_mut() {
        let _ = writeln!(s, "{}", control::DRAINED);
        let _ = s.flush();
    }

    // 4. Outcomes, after each worker's grace period.
    let deadline = now_ns() + secs_ns(args.grace + 90.0);
    while outcomes.iter().zip(&closed).any(|(o, c)| o.is_none() && !c) {
        match next_line(&rx, deadline) {
            Some(Line::Text(i, l)) => {
                if let Ok(o) = serde_json::from_str::<Outcome>(&l) {
                    outcomes[i] = Some(o);
                }
            }
            Some(Line::Closed(i)) => closed[i] = true,
            None => {
                eprintln!("loadtest: workers overran their budget; killing them");
                break;
            }
        }
    }
    drop(stdins);
    kill_all(&mut children);
    let missing = outcomes.iter().filter(|o| o.is_none()).count();
    if missing > 0 {
        return Err(format!("{missing} worker(s) exited without a result").into());
    }
    Ok(outcomes.into_iter().flatten().collect())
}

fn next_line(rx: &mpsc::Receiver<Line>, deadline_ns: u64) -> Option<Line> {
    let left = deadline_ns.saturating_sub(now_ns());
    rx.recv_timeout(Duration::from_nanos(left.max(1))).ok()
}

fn resolve(url: &str) -> Res<SocketAddr> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or("--url must look like http://HOST:PORT")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{authority}: no IPv4 address").into())
}

/// Lifts the soft open-files limit to the hard one: 15,000 sockets need more than the usual 1024.
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
