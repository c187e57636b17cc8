//! The parent ↔ worker control channel: the worker's stdin and stdout, one line per message.
//!
//! Parent → worker: the `Spec` as one JSON line, later `GO <ns>` (start the run window when
//! CLOCK_MONOTONIC reaches `<ns>`), and `DRAINED` once the parent sends nothing more to the
//! devices (the command driver may post late commands after the window). Worker → parent: `READY` once its devices are set up,
//! `RUN_END` when its run window closes, and finally the `Outcome` as one JSON line. Workers set
//! up at different speeds; the shared start time puts every worker's window (and the reconnect
//! storm's drop) at the same instant, and lets the parent sample the server's CPU over exactly
//! that window.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const READY: &str = "READY";
pub const RUN_END: &str = "RUN_END";
pub const GO: &str = "GO ";
/// Parent → worker: nothing more will be sent to the devices (the command driver has stopped).
pub const DRAINED: &str = "DRAINED";

/// No `GO` yet.
const PENDING: u64 = 0;
/// The parent went away (stdin closed) before saying `GO`.
const ABORT: u64 = u64::MAX;

pub enum Go {
    NotYet,
    At(u64),
    Abort,
}

/// The worker's side of the channel.
pub struct Gate {
    go: Arc<AtomicU64>,
    drained: Arc<AtomicBool>,
}

impl Gate {
    /// Reads the rest of stdin on a thread (the readiness loop must not block on it).
    pub fn from_stdin(mut rest: impl BufRead + Send + 'static) -> Gate {
        let go = Arc::new(AtomicU64::new(PENDING));
        let drained = Arc::new(AtomicBool::new(false));
        let (flag, done) = (go.clone(), drained.clone());
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match rest.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        // The parent is gone: nothing more can come.
                        done.store(true, Ordering::Release);
                        // Only an abort if the run has not been started.
                        let _ = flag.compare_exchange(
                            PENDING,
                            ABORT,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        return;
                    }
                    Ok(_) if line.trim() == DRAINED => done.store(true, Ordering::Release),
                    Ok(_) => {
                        if let Some(t) = line.trim().strip_prefix(GO.trim_end()) {
                            if let Ok(ns) = t.trim().parse::<u64>() {
                                flag.store(ns.clamp(1, ABORT - 1), Ordering::Release);
                            }
                        }
                    }
                }
            }
        });
        Gate { go, drained }
    }

    /// Whether the parent has said `DRAINED` (or gone away).
    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    pub fn go(&self) -> Go {
        match self.go.load(Ordering::Acquire) {
            PENDING => Go::NotYet,
            ABORT => Go::Abort,
            t => Go::At(t),
        }
    }

    pub fn ready(&self) {
        say(READY);
    }

    pub fn run_ended(&self) {
        say(RUN_END);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
