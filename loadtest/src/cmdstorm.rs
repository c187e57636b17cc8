//! The command storm's driver, in the parent: posts commands through the admin API
//! (`POST /api/devices/{id}/commands`) at a fixed total rate, spread round-robin over the
//! devices, and samples how soon the server reports each sampled command `acked`.
//!
//! Every command's payload carries `t0`, the CLOCK_MONOTONIC time just before its request was
//! written. The device (in a worker process, same clock) measures API → device from it, answers
//! with `command_result`, and measures API → result durable with a fence message (see
//! `proto::generic::fence`). This driver measures API → `202` and, for one command in
//! `sample_every`, API → status `acked` as `GET /api/devices/{id}/commands` shows it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use serde_json::Value;

use crate::admin::Admin;
use crate::clock::{elapsed_us, now_ns, sleep_until};
use crate::worker::new_histogram;

/// A command sent later than this after its slot counts as late (the driver fell behind).
const LATE_NS: u64 = 1_000_000;
/// Status polls of one sampled command are this far apart: fine enough for a 2 ms target,
/// coarse enough that polling does not become the load.
const POLL_NS: u64 = 250_000;
/// A sampled command not `acked` after this long is counted as failed.
const STATUS_TIMEOUT_NS: u64 = 5_000_000_000;
const STATUS_POLLERS: usize = 2;
const MAX_SAMPLES: usize = 5;

pub struct Config {
    pub addr: SocketAddr,
    pub token: String,
    pub device_ids: Arc<Vec<String>>,
    /// Commands per second, all devices together.
    pub rate: f64,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Keep-alive API connections, one sending thread each.
    pub conns: usize,
    pub sample_every: u64,
}

#[derive(Default)]
pub struct Report {
    pub posted: u64,
    pub accepted: u64,
    pub api_errors: u64,
    pub late: u64,
    /// Due inside the window but posted after it (the driver fell that far behind).
    pub after_window: u64,
    pub api: Option<Histogram<u64>>,
    pub status: Option<Histogram<u64>>,
    pub status_sampled: u64,
    pub status_failed: u64,
    pub error_samples: Vec<String>,
}

struct Sample {
    device_id: String,
    command_id: String,
    t0: u64,
}

struct Shared {
    posted: AtomicU64,
    accepted: AtomicU64,
    api_errors: AtomicU64,
    late: AtomicU64,
    after_window: AtomicU64,
    status_sampled: AtomicU64,
    status_failed: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, msg: String) {
        if let Ok(mut s) = self.samples.lock()
            && s.len() < MAX_SAMPLES
        {
            s.push(msg);
        }
    }
}

pub struct Driver {
    senders: Vec<JoinHandle<Histogram<u64>>>,
    pollers: Vec<JoinHandle<Histogram<u64>>>,
    shared: Arc<Shared>,
}

pub fn start(cfg: Config) -> Driver {
    let shared = Arc::new(Shared {
        posted: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        api_errors: AtomicU64::new(0),
        late: AtomicU64::new(0),
        after_window: AtomicU64::new(0),
        status_sampled: AtomicU64::new(0),
        status_failed: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    });
    let (tx, rx) = mpsc::channel::<Sample>();
    let rx = Arc::new(Mutex::new(rx));
    let cfg = Arc::new(cfg);
    let conns = cfg.conns.max(1);
    let senders = (0..conns)
        .map(|j| {
            let (cfg, shared, tx) = (cfg.clone(), shared.clone(), tx.clone());
            std::thread::spawn(move || send_loop(&cfg, j, conns, &shared, &tx))
        })
        .collect();
    // The pollers end when every sender has dropped its channel end.
    drop(tx);
    let pollers = (0..STATUS_POLLERS)
        .map(|_| {
            let (cfg, shared, rx) = (cfg.clone(), shared.clone(), rx.clone());
            std::thread::spawn(move || poll_loop(&cfg, &shared, &rx))
        })
        .collect();
    Driver {
        senders,
        pollers,
        shared,
    }
}

impl Driver {
    pub fn join(self) -> Report {
        let mut api = new_histogram();
        for h in self.senders {
            if let Ok(h) = h.join() {
                let _ = api.add(&h);
            }
        }
        let mut status = new_histogram();
        for h in self.pollers {
            if let Ok(h) = h.join() {
                let _ = status.add(&h);
            }
        }
        let s = &self.shared;
        Report {
            posted: s.posted.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            api_errors: s.api_errors.load(Ordering::Relaxed),
            late: s.late.load(Ordering::Relaxed),
            after_window: s.after_window.load(Ordering::Relaxed),
            api: Some(api),
            status: Some(status),
            status_sampled: s.status_sampled.load(Ordering::Relaxed),
            status_failed: s.status_failed.load(Ordering::Relaxed),
            error_samples: s.samples.lock().map(|v| v.clone()).unwrap_or_default(),
        }
    }
}

/// Sender `j` of `n` owns commands `j, j+n, j+2n, …`; command `k` is due at `start + k / rate`.
fn send_loop(
    cfg: &Config,
    j: usize,
    n: usize,
    shared: &Shared,
    tx: &Sender<Sample>,
) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut api = Admin::new(cfg.addr, &cfg.token);
    let devices = cfg.device_ids.len() as u64;
    if devices == 0 || cfg.rate <= 0.0 {
        return hist;
    }
    let mut k = j as u64;
    loop {
        let due = cfg.start_ns + (k as f64 * 1e9 / cfg.rate) as u64;
        if due >= cfg.end_ns {
            return hist;
        }
        sleep_until(due);
        let t0 = now_ns();
        if t0 > due + LATE_NS {
            shared.late.fetch_add(1, Ordering::Relaxed);
        }
        if t0 >= cfg.end_ns {
            shared.after_window.fetch_add(1, Ordering::Relaxed);
        }
        let device = &cfg.device_ids[(k % devices) as usize];
        let path = format!("/api/devices/{device}/commands");
        let body = format!(r#"{{"command":"lt","payload":{{"t0":{t0},"k":{k}}}}}"#);
        shared.posted.fetch_add(1, Ordering::Relaxed);
        match api.call("POST", &path, Some(body.as_bytes()), false) {
            Ok(r) if r.status == 202 => {
                hist.saturating_record(elapsed_us(t0, now_ns()));
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if k % cfg.sample_every.max(1) == 0 {
                    let command_id = serde_json::from_slice::<Value>(&r.body)
                        .ok()
                        .and_then(|v| v.get("command_id")?.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let _ = tx.send(Sample {
                        device_id: device.clone(),
                        command_id,
                        t0,
                    });
                }
            }
            Ok(r) => {
                shared.api_errors.fetch_add(1, Ordering::Relaxed);
                shared.error(format!(
                    "POST {path}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body[..r.body.len().min(120)])
                ));
            }
            Err(e) => {
                shared.api_errors.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("POST {path}: {e}"));
            }
        }
        k += n as u64;
    }
}

fn poll_loop(cfg: &Config, shared: &Shared, rx: &Mutex<Receiver<Sample>>) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut api = Admin::new(cfg.addr, &cfg.token);
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return hist,
        };
        let Ok(s) = next else { return hist };
        shared.status_sampled.fetch_add(1, Ordering::Relaxed);
        let path = format!("/api/devices/{}/commands?limit=1", s.device_id);
        let failed = |why: String| {
            shared.status_failed.fetch_add(1, Ordering::Relaxed);
            shared.error(why);
        };
        loop {
            let polled = now_ns();
            if polled > s.t0 + STATUS_TIMEOUT_NS {
                failed(format!("command {} not acked after 5 s", s.command_id));
                break;
            }
            let status = match api.call("GET", &path, None, true) {
                Ok(r) if r.status == 200 => {
                    serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| {
                        let item = v.get("items")?.get(0)?;
                        // A newer command for the same device hides ours: then only its
                        // existence is known, not its status.
                        (item.get("command_id")?.as_str()? == s.command_id)
                            .then(|| item.get("status")?.as_str().map(str::to_string))?
                    })
                }
                Ok(r) => {
                    failed(format!("GET {path}: {}", r.status));
                    break;
                }
                Err(e) => {
                    failed(format!("GET {path}: {e}"));
                    break;
                }
            };
            match status.as_deref() {
                Some("acked") => {
                    hist.saturating_record(elapsed_us(s.t0, now_ns()));
                    break;
                }
                Some("failed" | "expired") => {
                    failed(format!("command {} ended {status:?}", s.command_id));
                    break;
                }
                _ => sleep_until(polled + POLL_NS),
            }
        }
    }
}
