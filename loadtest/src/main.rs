//! `loadtest`: fleetgate's load-test harness (issue 6), first cut: generic WebSocket scenarios.
//!
//! The parent provisions devices through the admin API, splits them into slices, runs each slice
//! in a worker (in-process for `--processes 1`, otherwise a re-executed `loadtest --worker` that
//! reads its slice as JSON on stdin and answers one JSON line on stdout), samples the server's RSS
//! while they run, and merges the results.

mod frame;
mod provision;
mod sink;
mod worker;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use worker::{Outcome, Scenario, Spec};

/// Connections per process: the box allows 20,000 open files per process, and the worker needs
/// some for itself.
const MAX_PER_PROCESS: usize = 15_000;
/// Connections per source address before the next one is used.
const PER_SOURCE: usize = 10_000;

#[derive(Parser, Debug)]
#[command(about = "Load-test harness for fleetgate (generic WebSocket scenarios)")]
struct Args {
    /// The server's base URL (HTTP admin API; the WebSocket endpoint is /ws on the same port).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, env = "FLEETGATE_ADMIN_TOKEN", default_value = "")]
    admin_token: String,
    #[arg(long, value_enum, default_value = "telemetry-flood")]
    scenario: Scenario,
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Messages per second per device; 0 = as fast as acks allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacked messages per device at most.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Seconds of measured load, after all connections are set up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Approximate size of each telemetry payload object.
    #[arg(long, default_value_t = 150)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Seconds allowed for connecting and registering every device.
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// The server's pid, to report its VmRSS.
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
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let spec: Spec = serde_json::from_str(&input)?;
    let out = worker::run(&spec)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    Ok(())
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

    // The raw sink replaces the server; otherwise resolve the server's address from --url.
    let mut sink = None;
    let (target, devices) = if args.scenario == Scenario::RawSink {
        let s = sink::Sink::start()?;
        let addr = s.addr;
        sink = Some(s);
        (addr, vec![(String::new(), String::new()); args.devices])
    } else {
        let target = resolve(&args.url)?;
        let t0 = Instant::now();
        let devices = provision::create(&args.url, &args.admin_token, args.devices)?;
        eprintln!(
            "loadtest: provisioned {} devices in {:.1} s",
            devices.len(),
            t0.elapsed().as_secs_f64()
        );
        (target, devices)
    };

    // Spread over 127.0.0.2, .3, … only when the target is loopback (other hosts need real
    // local addresses, which this first cut does not configure).
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

    let rss_before = args.server_pid.and_then(read_rss_kib);
    // Sample the server's RSS while the workers run; the peak is the loaded figure.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = args.server_pid.map(|pid| {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = read_rss_kib(pid) {
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
            scenario: args.scenario,
            target,
            devices: chunk.to_vec(),
            // Each process starts on its own source address, then rotates.
            sources: if sources.is_empty() {
                Vec::new()
            } else {
                let mut s = sources.clone();
                s.rotate_left(w % sources.len());
                s
            },
            rate: args.rate,
            inflight: args.inflight,
            duration_s: args.duration,
            payload_bytes: args.payload_bytes,
            setup_timeout_s: args.setup_timeout,
        })
        .collect();

    let outcomes = if specs.len() == 1 {
        vec![worker::run(&specs[0])?]
    } else {
        run_processes(&specs, args.setup_timeout + args.duration)?
    };

    stop.store(true, Ordering::Relaxed);
    if let Some(t) = sampler {
        let _ = t.join();
    }
    if let Some(s) = sink {
        s.stop();
    }
    let rss_after = args.server_pid.and_then(read_rss_kib);
    let rss_peak = match peak.load(Ordering::Relaxed) {
        0 => None,
        k => Some(k),
    };
    report(args, &outcomes, rss_before, rss_peak, rss_after);
    Ok(())
}

/// Runs each slice in a re-executed worker process; every wait is bounded.
fn run_processes(specs: &[Spec], budget_s: f64) -> Res<Vec<Outcome>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for spec in specs {
        let mut child = Command::new(&exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or("worker has no stdin")?;
        stdin.write_all(serde_json::to_string(spec)?.as_bytes())?;
        drop(stdin);
        children.push(child);
    }
    // Read every worker's stdout on its own thread, so a stuck worker cannot block the others.
    let deadline = Instant::now()
        + Duration::from_secs_f64(budget_s)
        + worker::GRACE * 2
        + Duration::from_secs(30);
    let mut readers = Vec::new();
    for child in children.iter_mut() {
        let out = child.stdout.take().ok_or("worker has no stdout")?;
        readers.push(std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
        }));
    }
    let mut outcomes = Vec::new();
    for (mut child, reader) in children.into_iter().zip(readers) {
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "loadtest: worker {} overran its budget; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let line = reader.join().ok().flatten();
        match line.map(|l| serde_json::from_str::<Outcome>(&l)) {
            Some(Ok(o)) => outcomes.push(o),
            Some(Err(e)) => return Err(format!("worker answered invalid JSON: {e}").into()),
            None => return Err("a worker exited without a result".into()),
        }
    }
    Ok(outcomes)
}

fn report(
    args: &Args,
    outs: &[Outcome],
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
    rss_after: Option<u64>,
) {
    let mut hist = worker::new_histogram();
    for o in outs {
        for &(v, n) in &o.latency_us {
            let _ = hist.record_n(v.clamp(1, hist.high()), n);
        }
    }
    let sum = |f: fn(&Outcome) -> u64| outs.iter().map(f).sum::<u64>();
    // Each worker measures its own run window; throughput adds up across them.
    let msgs_per_s: f64 = outs
        .iter()
        .filter(|o| o.run_s > 0.0)
        .map(|o| o.acked_in_run as f64 / o.run_s)
        .sum();
    let q = |p: f64| {
        if hist.is_empty() {
            serde_json::Value::Null
        } else {
            let ms = hist.value_at_quantile(p) as f64 / 1000.0;
            serde_json::json!((ms * 1000.0).round() / 1000.0)
        }
    };
    let samples: Vec<&String> = outs.iter().flat_map(|o| &o.error_samples).take(5).collect();
    let json = serde_json::json!({
        "scenario": args.scenario,
        "devices": args.devices,
        "processes": outs.len(),
        "duration_s": args.duration,
        "rate": args.rate,
        "inflight": args.inflight,
        "payload_bytes": args.payload_bytes,
        "msgs_per_s": msgs_per_s.round(),
        "sent": sum(|o| o.sent),
        "acked": sum(|o| o.acked),
        "ack_p50_ms": q(0.5),
        "ack_p99_ms": q(0.99),
        "ack_p999_ms": q(0.999),
        "ack_max_ms": q(1.0),
        "connected": sum(|o| o.connected),
        "registered": sum(|o| o.registered),
        "held": sum(|o| o.held),
        "pongs": sum(|o| o.pongs),
        "errors": sum(|o| o.errors),
        "error_samples": samples,
        "setup_s": outs.iter().map(|o| o.setup_s).fold(0.0, f64::max),
        "server_rss_before_kib": rss_before,
        "server_rss_kib": rss_peak,
        "server_rss_after_close_kib": rss_after,
    });
    if args.json {
        println!("{json}");
    } else {
        match serde_json::to_string_pretty(&json) {
            Ok(s) => println!("{s}"),
            Err(_) => println!("{json}"),
        }
    }
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

/// VmRSS of a process in KiB, if readable.
fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
