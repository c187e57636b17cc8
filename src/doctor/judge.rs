//! Judging readings against `tuning/README.md`. Pure functions: readings and the planned `serve`
//! configuration in, [`Finding`]s out; nothing here touches the machine.
//!
//! FAIL means `serve` as planned will misbehave on this machine (refuse to start, lose shards, or
//! run out of descriptors before its own `--max-connections` can answer 503/1013, or cannot write
//! its data directory). WARN means it runs, below what a large fleet needs, or that a reading could
//! not be taken. OK means the recommendation is met.

use super::finding::{Finding, Status};
use super::plan::Plan;
use super::probe::{CpuReading, FsyncReading, Limit, Read, Readings, UringReading};
use super::tuning;
use crate::config::IoMode;
use crate::shard::uring::RING_ENTRIES;

/// Each shard's listen backlog, in the unit of the sysctls that cap it.
const BACKLOG: u64 = crate::config::LISTEN_BACKLOG as u64;
// What tuning/ sets must hold serve's backlog: somaxconn caps it, and with syncookies off the
// kernel drops SYNs once less than a quarter of tcp_max_syn_backlog is free.
const _: () = assert!(tuning::SOMAXCONN >= BACKLOG);
const _: () = assert!(tuning::SYN_BACKLOG * 3 > BACKLOG * 4);
/// Descriptors `serve` holds besides sessions, fixed part: stdio, RocksDB's LOCK, LOG, MANIFEST,
/// WAL and one directory handle per column family (37 in all with 2 shards on an empty store, as
/// measured), plus headroom for compaction outputs and a new WAL opening while old files are open.
pub const FD_BASE: u64 = 64;
/// Descriptors per shard: its listener, its ring or epoll instance, eventfds, and the connection
/// accepted past `--max-connections` that is then closed.
pub const FD_PER_SHARD: u64 = 6;
/// Fewer ephemeral ports than this (the Linux default is 32768–60999, 28,232 ports): WARN.
pub const PORTS_MIN: u64 = 28_000;
/// fdatasync latency thresholds, milliseconds.
pub const FSYNC_P50_MAX_MS: f64 = 2.0;
pub const FSYNC_P99_MAX_MS: f64 = 5.0;

pub fn judge_all(r: &Readings, plan: &Plan) -> Vec<Finding> {
    let budget = fd_budget(plan, &r.table_files);
    vec![
        io_uring(&r.uring, &r.kernel, plan.io),
        memlock(&r.memlock, &r.kernel, plan),
        nofile(&r.nofile, &budget),
        nr_open(&r.nr_open, &budget),
        file_max(&r.file_max, &budget),
        somaxconn(&r.somaxconn),
        syn_backlog(&r.syn_backlog, &r.syncookies),
        port_range(&r.port_range, &r.reserved_ports, plan.listen_port),
        cpus(&r.cpus, plan),
        fsync(&r.fsync),
    ]
}

/// The fix of a check that is OK.
const NOTHING: &str = "nothing to change";

fn finding(
    check: &'static str,
    status: Status,
    reading: String,
    fix: String,
    values: Vec<(&'static str, f64)>,
) -> Finding {
    Finding {
        check,
        status,
        reading,
        recommendation: tuning::recommendation(check),
        fix,
        values,
    }
}

/// The command that sets sysctls now (`settings`: `name=value …`), and where they are made to last.
fn sysctl_w(settings: &str) -> String {
    format!("sysctl -w {settings}   # persist: tuning/99-fleetgate.conf")
}

/// How to give `serve` the locked memory `tuning/` recommends.
fn memlock_fix() -> String {
    format!(
        "ulimit -l {} in the shell that starts serve; systemd: LimitMEMLOCK={} \
         (tuning/fleetgate.service); login sessions: tuning/fleetgate-limits.conf",
        tuning::MEMLOCK_KIB,
        tuning::MEMLOCK
    )
}

/// `major.minor` of a kernel release such as `6.18.44-fc-v782`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn show_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

fn show_bytes(v: Option<u64>) -> String {
    match v {
        None => "unlimited".into(),
        Some(n) if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        Some(n) if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        Some(n) => format!("{n} bytes"),
    }
}

fn lim(v: Option<u64>) -> f64 {
    v.map_or(f64::INFINITY, |n| n as f64)
}

// ---- io_uring ---------------------------------------------------------------------------------

/// Seccomp modes as `/proc/self/status` shows them.
const SECCOMP_DISABLED: u64 = libc::SECCOMP_MODE_DISABLED as u64;
const SECCOMP_STRICT: u64 = libc::SECCOMP_MODE_STRICT as u64;
const SECCOMP_FILTER: u64 = libc::SECCOMP_MODE_FILTER as u64;
/// `kernel.io_uring_disabled` values (Linux 6.6+; libc does not name them).
const URING_GROUP_ONLY: u64 = 1;
const URING_DISABLED: u64 = 2;

/// Why io_uring could not be set up, as far as the errno and the readings beside it tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UringCause {
    /// ENOSYS under a seccomp filter: the filter, or a kernel without io_uring.
    FilterOrKernel,
    /// ENOSYS with no filter: a kernel without io_uring.
    Kernel,
    /// `kernel.io_uring_disabled = 2`.
    DisabledSystemWide,
    /// `kernel.io_uring_disabled = 1`: only `kernel.io_uring_group` may.
    GroupOnly,
    /// EPERM under a seccomp filter (container runtimes' default profiles).
    Seccomp,
    /// EPERM from some other policy (an LSM).
    Policy,
    /// ENOMEM: kernels before 5.12 charge rings to RLIMIT_MEMLOCK.
    Memlock,
    /// Anything else: the error says.
    Other,
}

pub fn uring_cause(errno: Option<i32>, disabled: &Read<u64>, seccomp: &Read<u64>) -> UringCause {
    let filtered = seccomp.as_ref().is_ok_and(|&m| m == SECCOMP_FILTER);
    match errno {
        Some(libc::ENOSYS) if filtered => UringCause::FilterOrKernel,
        Some(libc::ENOSYS) => UringCause::Kernel,
        Some(libc::EPERM) | Some(libc::EACCES) => match disabled {
            Ok(URING_DISABLED) => UringCause::DisabledSystemWide,
            Ok(URING_GROUP_ONLY) => UringCause::GroupOnly,
            _ if filtered => UringCause::Seccomp,
            _ => UringCause::Policy,
        },
        Some(libc::ENOMEM) => UringCause::Memlock,
        _ => UringCause::Other,
    }
}

pub fn io_uring(u: &UringReading, kernel: &Read<String>, io: IoMode) -> Finding {
    let kernel_s = kernel.as_deref().unwrap_or("unknown");
    let seccomp = match &u.seccomp {
        Ok(SECCOMP_DISABLED) => "off".to_string(),
        Ok(SECCOMP_STRICT) => "strict".to_string(),
        Ok(SECCOMP_FILTER) => "filter".to_string(),
        Ok(n) => format!("mode {n}"),
        Err(_) => "unknown".to_string(),
    };
    let disabled = match &u.disabled {
        Ok(n) => format!("kernel.io_uring_disabled = {n}"),
        Err(_) => "kernel.io_uring_disabled not readable (absent before Linux 6.6)".to_string(),
    };
    let context = format!("kernel {kernel_s}; seccomp {seccomp}; {disabled}");
    let mut values = vec![("rings", u.rings as f64)];
    let e = match &u.result {
        Ok(()) => {
            let note = match io {
                IoMode::Epoll => " (unused: judged for --io epoll; --io auto would use it)",
                _ => "",
            };
            return finding(
                "io_uring",
                Status::Ok,
                format!(
                    "usable{note}: set up {} ring(s) of {RING_ENTRIES} entries at once, as serve's \
                     shards do ({context})",
                    u.rings,
                ),
                "nothing to change (`serve --io auto` uses io_uring here; the log line \
                 \"I/O driver selected\" says driver=io_uring)"
                    .into(),
                values,
            );
        }
        Err(e) => e,
    };
    values.push(("errno", e.errno.map_or(f64::NAN, f64::from)));
    let allow_in_container = "run the container with a seccomp profile that allows \
        io_uring_setup, io_uring_enter and io_uring_register (docker run --security-opt \
        seccomp=PROFILE.json)";
    let enable = sysctl_w(&format!(
        "kernel.io_uring_disabled={}",
        tuning::IO_URING_DISABLED
    ));
    let (cause, fix) = match uring_cause(e.errno, &u.disabled, &u.seccomp) {
        UringCause::FilterOrKernel => (
            "io_uring_setup answered ENOSYS under a seccomp filter: the filter (a container \
             runtime's profile) or the kernel lacks io_uring"
                .to_string(),
            format!("in a container: {allow_in_container}; otherwise a kernel 5.11 or newer"),
        ),
        UringCause::Kernel => (
            "the kernel has no io_uring (io_uring_setup: ENOSYS)".to_string(),
            "boot a kernel 5.11 or newer built with CONFIG_IO_URING=y".to_string(),
        ),
        UringCause::DisabledSystemWide => (
            format!(
                "io_uring is disabled system-wide (kernel.io_uring_disabled = {URING_DISABLED})"
            ),
            enable,
        ),
        UringCause::GroupOnly => (
            format!(
                "io_uring is limited to the group kernel.io_uring_group \
                 (kernel.io_uring_disabled = {URING_GROUP_ONLY})"
            ),
            format!(
                "{enable}\nor add the service user to the group shown by \
                 `sysctl kernel.io_uring_group`"
            ),
        ),
        UringCause::Seccomp => (
            "a seccomp filter refuses io_uring_setup (container runtimes' default profiles do)"
                .to_string(),
            allow_in_container.to_string(),
        ),
        UringCause::Policy => (
            "io_uring_setup was refused (EPERM) by a security policy (LSM or seccomp)".to_string(),
            "find the policy refusing io_uring_setup (audit log: ausearch -m SECCOMP,AVC)"
                .to_string(),
        ),
        UringCause::Memlock => (
            "not enough locked memory for the rings (kernels before 5.12 charge io_uring rings to \
             RLIMIT_MEMLOCK)"
                .to_string(),
            memlock_fix(),
        ),
        UringCause::Other => (
            format!("io_uring_setup failed: {}", e.message),
            "see the error; `--io epoll` runs without io_uring".to_string(),
        ),
    };
    let (status, what) = match io {
        IoMode::Uring => (
            Status::Fail,
            "`serve --io uring` will refuse to start".to_string(),
        ),
        IoMode::Auto => (
            Status::Warn,
            "`serve --io auto` will fall back to epoll (logged as \"falling back to epoll\")"
                .to_string(),
        ),
        IoMode::Epoll => (Status::Ok, "unused: judged for --io epoll".to_string()),
    };
    finding(
        "io_uring",
        status,
        format!(
            "unusable: {cause}; ring {} of {} failed: {} ({context}). {what}",
            e.ring, u.rings, e.message
        ),
        fix,
        values,
    )
}

// ---- RLIMIT_MEMLOCK -----------------------------------------------------------------------------

/// Bytes one ring of `entries` pins on kernels before 5.12: the SQEs (64 B each), the SQ index
/// array (4 B each), the CQEs (16 B each, twice as many) and the ring headers (a page each). The
/// sizes are the kernel's structs (`io_uring_sqe`, `io_uring_cqe`), which no crate here exports.
pub fn ring_bytes(entries: u64) -> u64 {
    entries * 64 + entries * 4 + 2 * entries * 16 + 2 * 4096
}

pub fn memlock(m: &Read<Limit>, kernel: &Read<String>, plan: &Plan) -> Finding {
    let fix = memlock_fix();
    let m = match m {
        Ok(m) => *m,
        Err(e) => {
            return finding(
                "memlock",
                Status::Warn,
                format!("could not read: {e}"),
                fix,
                vec![],
            );
        }
    };
    let values = vec![("soft_bytes", lim(m.soft)), ("hard_bytes", lim(m.hard))];
    let limits = format!("soft {}, hard {}", show_bytes(m.soft), show_bytes(m.hard));
    let need = plan.shards as u64 * ring_bytes(u64::from(RING_ENTRIES));
    let version = kernel.as_deref().ok().and_then(kernel_version);
    let (status, why) = match (plan.io, version) {
        (IoMode::Epoll, _) => (Status::Ok, "unused with --io epoll".to_string()),
        (_, Some(v)) if v >= (5, 12) => (
            Status::Ok,
            format!(
                "kernel {}.{} charges io_uring rings to the memory cgroup, not to this limit",
                v.0, v.1
            ),
        ),
        (_, v) => {
            let charged = match v {
                Some(v) => format!(
                    "kernel {}.{} charges io_uring rings to this limit",
                    v.0, v.1
                ),
                None => "kernel version unknown; kernels before 5.12 charge io_uring rings to \
                         this limit"
                    .to_string(),
            };
            let need_s = format!(
                "{} ring(s) of {RING_ENTRIES} entries need about {}",
                plan.shards,
                show_bytes(Some(need))
            );
            if m.soft.is_none_or(|s| s >= need) {
                (Status::Ok, format!("{charged}; {need_s}"))
            } else {
                // An unknown version may well be a newer kernel: WARN rather than FAIL.
                let status = if v.is_some() {
                    Status::Fail
                } else {
                    Status::Warn
                };
                (
                    status,
                    format!("{charged}, and {need_s}: the shards' rings will not fit"),
                )
            }
        }
    };
    let fix = if status == Status::Ok {
        NOTHING.to_string()
    } else {
        fix
    };
    finding("memlock", status, format!("{limits}; {why}"), fix, values)
}

// ---- open files -----------------------------------------------------------------------------------

/// Descriptors `serve` needs: one per session up to `--max-connections`, plus its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    pub max_connections: u64,
    pub shards: u64,
    /// RocksDB table files counted in the data directory (0 if they could not be counted).
    pub table_files: u64,
    pub table_files_counted: bool,
}

impl FdBudget {
    /// Descriptors besides sessions.
    pub fn overhead(&self) -> u64 {
        FD_BASE + FD_PER_SHARD * self.shards + self.table_files
    }

    pub fn need(&self) -> u64 {
        self.max_connections + self.overhead()
    }

    /// Sessions a descriptor limit leaves room for.
    pub fn sessions(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.overhead())
    }

    /// What to set the limit to: tuning/'s value, or more if this configuration needs more.
    pub fn recommended(&self) -> u64 {
        self.need().max(tuning::NOFILE)
    }

    fn explain(&self) -> String {
        format!(
            "besides sessions serve keeps ~{} open: {FD_BASE} + {FD_PER_SHARD} per shard × {} + {} \
             RocksDB table files{}",
            self.overhead(),
            self.shards,
            self.table_files,
            if self.table_files_counted {
                ""
            } else {
                ", could not count them"
            }
        )
    }
}

pub fn fd_budget(plan: &Plan, table_files: &Read<u64>) -> FdBudget {
    FdBudget {
        max_connections: plan.max_connections as u64,
        shards: plan.shards as u64,
        // RocksDB keeps at most this many table files open, however large the store grows (-1,
        // RocksDB's "no bound", casts to no bound here too).
        table_files: (*table_files.as_ref().unwrap_or(&0)).min(crate::store::MAX_OPEN_FILES as u64),
        table_files_counted: table_files.is_ok(),
    }
}

pub fn nofile(n: &Read<Limit>, b: &FdBudget) -> Finding {
    let rec = b.recommended();
    let n = match n {
        Ok(n) => *n,
        Err(e) => {
            return finding(
                "nofile",
                Status::Warn,
                format!("could not read: {e}"),
                format!("ulimit -n {rec}; systemd: LimitNOFILE={rec}"),
                vec![],
            );
        }
    };
    let soft = n.soft.unwrap_or(u64::MAX);
    let hard = n.hard.unwrap_or(u64::MAX);
    let sessions = b.sessions(soft);
    let values = vec![
        ("soft", lim(n.soft)),
        ("hard", lim(n.hard)),
        ("sessions", sessions as f64),
        ("need", b.need() as f64),
    ];
    let reading = format!(
        "soft {}, hard {}: room for ~{} sessions; serve --max-connections {} needs {}; {}",
        show_limit(n.soft),
        show_limit(n.hard),
        if n.soft.is_none() {
            "unlimited".to_string()
        } else {
            sessions.to_string()
        },
        b.max_connections,
        b.need(),
        b.explain()
    );
    let unit = format!(
        "systemd: LimitNOFILE={rec} in the unit (tuning/fleetgate.service), then systemctl \
         daemon-reload && systemctl restart fleetgate"
    );
    let fix = if hard >= b.need() {
        format!(
            "ulimit -Sn {}   # in the shell that starts serve (the hard limit allows it)\n{unit}",
            hard.min(rec)
        )
    } else {
        let edit = if rec > tuning::NOFILE {
            format!(" after raising its nofile lines to {rec}")
        } else {
            String::new()
        };
        format!(
            "as root: install -m 644 tuning/fleetgate-limits.conf /etc/security/limits.d/{edit} \
             (its lines name the user fleetgate; use the user that runs serve), then log in again\n{unit}"
        )
    };
    if soft >= b.need() {
        let fix = format!(
            "{NOTHING}; to hold more sessions raise --max-connections and the limit together: \
             nofile ≥ --max-connections + {}",
            b.overhead()
        );
        finding("nofile", Status::Ok, reading, fix, values)
    } else {
        finding("nofile", Status::Fail, reading, fix, values)
    }
}

pub fn nr_open(v: &Read<u64>, b: &FdBudget) -> Finding {
    let rec = b.recommended();
    let fix = sysctl_w(&format!("fs.nr_open={}", rec.max(tuning::NR_OPEN)));
    match v {
        Err(e) => finding(
            "fs.nr_open",
            Status::Warn,
            format!("could not read: {e}"),
            fix,
            vec![],
        ),
        Ok(v) => {
            let status = if *v >= rec { Status::Ok } else { Status::Warn };
            let note = if *v < b.need() {
                format!(": below the {} descriptors serve needs", b.need())
            } else if *v < rec {
                format!(": below the recommended nofile limit {rec}")
            } else {
                String::new()
            };
            finding(
                "fs.nr_open",
                status,
                format!("{v}{note}"),
                if status == Status::Ok {
                    NOTHING.to_string()
                } else {
                    fix
                },
                vec![("value", *v as f64)],
            )
        }
    }
}

pub fn file_max(v: &Read<u64>, b: &FdBudget) -> Finding {
    let want = 2 * b.need();
    let fix = sysctl_w(&format!("fs.file-max={}", want.max(tuning::FILE_MAX)));
    match v {
        Err(e) => finding(
            "fs.file-max",
            Status::Warn,
            format!("could not read: {e}"),
            fix,
            vec![],
        ),
        Ok(v) => {
            let status = if *v >= want {
                Status::Ok
            } else if *v >= b.need() {
                Status::Warn
            } else {
                Status::Fail
            };
            finding(
                "fs.file-max",
                status,
                format!("{v} (serve needs {}; recommended ≥ {want})", b.need()),
                if status == Status::Ok {
                    format!("{NOTHING} (never lower it: the kernel's default scales with RAM)")
                } else {
                    fix
                },
                vec![("value", *v as f64)],
            )
        }
    }
}

// ---- TCP --------------------------------------------------------------------------------------

pub fn somaxconn(v: &Read<u64>) -> Finding {
    let fix = sysctl_w(&format!("net.core.somaxconn={}", tuning::SOMAXCONN));
    match v {
        Err(e) => finding(
            "net.core.somaxconn",
            Status::Warn,
            format!("could not read: {e}"),
            fix,
            vec![],
        ),
        Ok(v) if *v >= BACKLOG => finding(
            "net.core.somaxconn",
            Status::Ok,
            format!("{v}: each shard's accept queue holds {BACKLOG}"),
            NOTHING.to_string(),
            vec![("value", *v as f64)],
        ),
        Ok(v) => finding(
            "net.core.somaxconn",
            Status::Warn,
            format!("{v}: each shard's accept queue holds {v}"),
            fix,
            vec![("value", *v as f64)],
        ),
    }
}

pub fn syn_backlog(v: &Read<u64>, cookies: &Read<u64>) -> Finding {
    let fix = sysctl_w(&format!(
        "net.ipv4.tcp_max_syn_backlog={} net.ipv4.tcp_syncookies={}",
        tuning::SYN_BACKLOG,
        tuning::SYNCOOKIES
    ));
    let v = match v {
        Ok(v) => *v,
        Err(e) => {
            return finding(
                "net.ipv4.tcp_max_syn_backlog",
                Status::Warn,
                format!("could not read: {e}"),
                fix,
                vec![],
            );
        }
    };
    let mut values = vec![("value", v as f64)];
    let (status, note) = match cookies {
        _ if v >= tuning::SYN_BACKLOG => (Status::Ok, String::new()),
        Ok(c) if *c >= 1 => (
            Status::Ok,
            format!(
                "; below {}, but tcp_syncookies = {c}, so a full SYN queue answers with cookies \
                 and this value does not limit accepts",
                tuning::SYN_BACKLOG
            ),
        ),
        Ok(c) => (
            Status::Warn,
            format!(
                "; tcp_syncookies = {c}: SYNs are dropped once fewer than {} slots are free",
                v / 4
            ),
        ),
        Err(e) => (Status::Warn, format!("; tcp_syncookies unknown ({e})")),
    };
    if let Ok(c) = cookies {
        values.push(("syncookies", *c as f64));
    }
    let fix = match status {
        Status::Ok if v >= tuning::SYN_BACKLOG => NOTHING.to_string(),
        Status::Ok => format!("{NOTHING} while tcp_syncookies is on; with it off: {fix}"),
        _ => fix,
    };
    finding(
        "net.ipv4.tcp_max_syn_backlog",
        status,
        format!("{v}{note}"),
        fix,
        values,
    )
}

pub fn port_range(
    range: &Read<(u64, u64)>,
    reserved: &Read<Vec<(u64, u64)>>,
    listen_port: u16,
) -> Finding {
    let (wide_lo, wide_hi) = tuning::PORT_RANGE;
    let mut fix = sysctl_w(&format!(
        "net.ipv4.ip_local_port_range='{wide_lo} {wide_hi}'"
    ));
    let (lo, hi) = match range {
        Ok(r) => *r,
        Err(e) => {
            return finding(
                "net.ipv4.ip_local_port_range",
                Status::Warn,
                format!("could not read: {e}"),
                fix,
                vec![],
            );
        }
    };
    if lo > hi || hi > u64::from(u16::MAX) {
        return finding(
            "net.ipv4.ip_local_port_range",
            Status::Warn,
            format!("{lo} {hi}: not a valid range"),
            fix,
            vec![],
        );
    }
    let count = hi - lo + 1;
    let port = u64::from(listen_port);
    let in_range = port != 0 && (lo..=hi).contains(&port);
    let is_reserved = reserved
        .as_ref()
        .is_ok_and(|r| r.iter().any(|&(a, b)| (a..=b).contains(&port)));
    let mut status = Status::Ok;
    let mut reading = format!(
        "{lo}–{hi}: {count} ports, so a client holds at most {count} connections per (source \
         address, server address:port) pair"
    );
    if count < PORTS_MIN {
        status = Status::Warn;
    }
    if in_range && !is_reserved {
        status = Status::Warn;
        reading.push_str(&format!(
            "; serve's port {port} is inside the range and not reserved: an outgoing connection \
             can take it while serve is down, and serve then fails to bind"
        ));
        fix.push_str(&format!(
            "\nsysctl -w net.ipv4.ip_local_reserved_ports={port}"
        ));
    } else if in_range {
        reading.push_str(&format!(
            "; serve's port {port} is in the range but reserved"
        ));
    } else if port != 0 {
        reading.push_str(&format!("; serve's port {port} is outside it"));
    }
    if status == Status::Ok {
        fix = if lo > wide_lo || hi < wide_hi {
            format!("{NOTHING} for serve; for load clients on this box: {fix}")
        } else {
            NOTHING.to_string()
        };
    }
    finding(
        "net.ipv4.ip_local_port_range",
        status,
        reading,
        fix,
        vec![
            ("low", lo as f64),
            ("high", hi as f64),
            ("ports", count as f64),
        ],
    )
}

// ---- CPUs -------------------------------------------------------------------------------------

pub fn cpus(c: &CpuReading, plan: &Plan) -> Finding {
    let fix_shards = |n: usize| {
        format!(
            "serve --shards {n}   # or FLEETGATE_SHARDS={n}; or give the process more cores (taskset, cpuset, CPUQuota=)"
        )
    };
    let allowed = match &c.allowed {
        Ok(a) => *a,
        Err(e) => {
            return finding(
                "cpus",
                Status::Warn,
                format!("could not read the CPU affinity: {e}"),
                fix_shards(plan.shards),
                vec![],
            );
        }
    };
    let online = c.online.as_ref().ok().copied();
    let mut values = vec![
        ("shards", plan.shards as f64),
        ("allowed", allowed as f64),
        ("online", online.map_or(f64::NAN, |n| n as f64)),
    ];
    if let Some(q) = c.quota {
        values.push(("quota", q));
    }
    let mut reading = format!(
        "{} shard(s){}; this process may run on {allowed} of {} online CPU(s); {}",
        plan.shards,
        if plan.shards_given { "" } else { " (default)" },
        online.map_or_else(|| "?".to_string(), |n| n.to_string()),
        c.quota.map_or_else(
            || "no cgroup CPU quota found".to_string(),
            |q| format!("cgroup CPU quota {q:.2} CPUs")
        )
    );
    let mut status = Status::Ok;
    let mut best = plan.shards;
    if plan.shards > allowed {
        status = Status::Warn;
        best = allowed;
        reading.push_str(&format!(
            ": shards are pinned to core (i mod {allowed}), so shards share cores"
        ));
    }
    if let Some(q) = c.quota {
        // A hundredth of a CPU of slack, for a quota that is the shard count up to rounding.
        if plan.shards as f64 > q + 0.01 {
            status = Status::Warn;
            best = best.min((q.floor() as usize).max(1));
            reading.push_str(&format!(
                ": {} shards under a {q:.2}-CPU quota are throttled",
                plan.shards
            ));
        }
    }
    // Under one and a half CPUs of quota the shards and the rest share what is in effect one core.
    if allowed == 1 || c.quota.is_some_and(|q| q < 1.5) {
        status = Status::Warn;
        reading.push_str(
            ": a single core is shared by the shard, its committer and RocksDB's compactions",
        );
    }
    let fix = if status == Status::Ok {
        NOTHING.to_string()
    } else {
        fix_shards(best.max(1))
    };
    finding("cpus", status, reading, fix, values)
}

// ---- disk ---------------------------------------------------------------------------------------

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples; `None` for no samples.
pub fn percentile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = (q * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

pub fn fsync(r: &Read<FsyncReading>) -> Finding {
    let fix = "serve --data-dir DIR on a local SSD/NVMe filesystem; compare candidates with \
               `fleetgate doctor --data-dir DIR`. (`serve --sync-writes false` removes the wait \
               but can lose acknowledged data on power loss.)"
        .to_string();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            return finding(
                "fsync",
                Status::Fail,
                format!(
                    "could not write and fdatasync in the data directory as this user: {e} \
                     (serve needs the same to store anything)"
                ),
                format!(
                    "create the data directory writable by the user serve runs as (systemd: \
                     StateDirectory=fleetgate gives /var/lib/fleetgate); then {fix}"
                ),
                vec![],
            );
        }
    };
    let (Some(p50), Some(p99), Some(max)) = (
        percentile(&r.samples_ns, 0.50),
        percentile(&r.samples_ns, 0.99),
        percentile(&r.samples_ns, 1.0),
    ) else {
        return finding(
            "fsync",
            Status::Warn,
            "no samples taken".into(),
            fix,
            vec![],
        );
    };
    let ms = |ns: u64| ns as f64 / 1e6;
    let fs = r.fs_type.as_deref().unwrap_or("filesystem unknown");
    let mut reading = format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} appends of {} bytes + fdatasync in {} ({fs})",
        ms(p50),
        ms(p99),
        ms(max),
        r.samples_ns.len(),
        r.block,
        r.dir.display()
    );
    if r.data_dir_missing {
        reading.push_str("; the data directory does not exist yet, so this is its parent");
    }
    let mut status = Status::Ok;
    if ms(p50) > FSYNC_P50_MAX_MS || ms(p99) > FSYNC_P99_MAX_MS {
        status = Status::Warn;
        reading.push_str(&format!(
            ": above {FSYNC_P50_MAX_MS} ms p50 / {FSYNC_P99_MAX_MS} ms p99, acks will wait on the disk"
        ));
    }
    if matches!(fs, "tmpfs" | "ramfs") {
        status = Status::Warn;
        reading.push_str(": this is memory, the store would not survive a reboot");
    } else if fs == "overlayfs" {
        status = Status::Warn;
        reading.push_str(": a container's writable layer; mount a volume for the data directory");
    }
    finding(
        "fsync",
        status,
        reading,
        if status == Status::Ok {
            NOTHING.to_string()
        } else {
            fix
        },
        vec![
            ("p50_ms", ms(p50)),
            ("p99_ms", ms(p99)),
            ("max_ms", ms(max)),
            ("samples", r.samples_ns.len() as f64),
        ],
    )
}

#[cfg(test)]
mod tests {
    //! These assert findings: statuses, values, and the settings in the commands to run; never
    //! the wording around them.

    use super::super::probe::UringError;
    use super::*;
    use std::path::PathBuf;

    fn plan(shards: usize, io: IoMode) -> Plan {
        Plan {
            shards,
            shards_given: false,
            max_connections: 19_600,
            io,
            listen_port: 3000,
        }
    }

    fn unreadable<T>() -> Read<T> {
        Err("could not read /proc/sys/x: No such file or directory (os error 2)".into())
    }

    fn budget(table_files: u64) -> FdBudget {
        fd_budget(&plan(2, IoMode::Auto), &Ok(table_files))
    }

    fn limit(soft: u64, hard: u64) -> Read<Limit> {
        Ok(Limit {
            soft: Some(soft),
            hard: Some(hard),
        })
    }

    fn uring(
        result: Result<(), UringError>,
        disabled: Read<u64>,
        seccomp: Read<u64>,
    ) -> UringReading {
        UringReading {
            rings: 2,
            result,
            disabled,
            seccomp,
        }
    }

    fn err(errno: i32) -> Result<(), UringError> {
        Err(UringError {
            errno: Some(errno),
            message: std::io::Error::from_raw_os_error(errno).to_string(),
            ring: 1,
        })
    }

    fn k(s: &str) -> Read<String> {
        Ok(s.to_string())
    }

    fn value(f: &Finding, name: &str) -> Option<f64> {
        f.values.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// The `name=value` settings of the `sysctl -w` commands in a fix, in order; a value may be
    /// quoted, as a port range is.
    fn sysctls(fix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for line in fix.lines() {
            let Some((_, rest)) = line.split_once("sysctl -w ") else {
                continue;
            };
            let mut words = vec![String::new()];
            let mut quoted = false;
            for c in rest.chars() {
                match c {
                    '\'' => quoted = !quoted,
                    '#' if !quoted => break,
                    c if c.is_whitespace() && !quoted => words.push(String::new()),
                    c => words.last_mut().expect("a word").push(c),
                }
            }
            for w in words {
                if let Some((name, v)) = w.split_once('=') {
                    out.push((name.to_string(), v.to_string()));
                }
            }
        }
        out
    }

    fn set(name: &str, v: impl ToString) -> (String, String) {
        (name.to_string(), v.to_string())
    }

    /// What tuning/ sets for the SYN queue, as a fix's `sysctl -w` sets it.
    fn tuning_syn_settings() -> [(String, String); 2] {
        [
            set("net.ipv4.tcp_max_syn_backlog", tuning::SYN_BACKLOG),
            set("net.ipv4.tcp_syncookies", tuning::SYNCOOKIES),
        ]
    }

    /// The word after `command` in a fix: the `N` of `ulimit -Sn N`.
    fn arg_of<'a>(fix: &'a str, command: &str) -> Option<&'a str> {
        fix.split_once(command)?.1.split_whitespace().next()
    }

    #[test]
    fn doctor_ok_checks_leave_nothing_to_run_and_fixes_never_lower_a_value() {
        let b = budget(0);
        let ok = [
            memlock(
                &Ok(Limit {
                    soft: None,
                    hard: None,
                }),
                &k("6.1.0"),
                &plan(2, IoMode::Auto),
            ),
            nofile(&limit(65_536, 65_536), &b),
            nr_open(&Ok(4_000_000), &b),
            file_max(&Ok(9_000_000), &b),
            somaxconn(&Ok(65_535)),
            syn_backlog(&Ok(16_384), &Ok(0)),
            port_range(&Ok((10_000, 65_535)), &Ok(vec![]), 3000),
            cpus(&cpu(Ok(2), 2, None), &plan(2, IoMode::Auto)),
            fsync(&samples(100, 200, "xfs")),
        ];
        for f in &ok {
            assert_eq!(f.status, Status::Ok, "{}: {}", f.check, f.reading);
            assert_eq!(sysctls(&f.fix), [], "{}: {}", f.check, f.fix);
            for command in ["ulimit", "serve --shards", "install"] {
                assert_eq!(arg_of(&f.fix, command), None, "{}: {}", f.check, f.fix);
            }
        }
        // OK, with an optional step for another setup: syncookies off, load clients on this box.
        let f = syn_backlog(&Ok(2048), &Ok(1));
        assert_eq!(f.status, Status::Ok);
        assert_eq!(sysctls(&f.fix), tuning_syn_settings());
        let f = port_range(&Ok((32768, 60999)), &Ok(vec![]), 3000);
        assert_eq!(f.status, Status::Ok);
        let (lo, hi) = tuning::PORT_RANGE;
        assert_eq!(
            sysctls(&f.fix),
            [set("net.ipv4.ip_local_port_range", format!("{lo} {hi}"))]
        );
        // Not OK: the command raises to at least what is needed, above tuning/'s value if need be.
        let big = FdBudget {
            max_connections: 2_000_000,
            ..b
        };
        assert_eq!(
            sysctls(&nr_open(&Ok(1000), &big).fix),
            [set("fs.nr_open", big.need())]
        );
        assert_eq!(
            sysctls(&file_max(&Ok(1000), &big).fix),
            [set("fs.file-max", 2 * big.need())]
        );
        assert_eq!(
            sysctls(&nr_open(&Ok(1000), &b).fix),
            [set("fs.nr_open", tuning::NR_OPEN)]
        );
    }

    #[test]
    fn doctor_passes_what_tuning_sets_and_recommends_it() {
        // A machine set up as tuning/ says is OK for serve's defaults, with a full table cache and
        // 16 shards; and where a setting falls short, the command sets tuning/'s value.
        let p = plan(16, IoMode::Auto);
        let b = fd_budget(&p, &Ok(u64::MAX));
        let f = nofile(&limit(tuning::NOFILE, tuning::NOFILE), &b);
        assert_eq!(f.status, Status::Ok, "{}", f.reading);
        assert_eq!(nr_open(&Ok(tuning::NR_OPEN), &b).status, Status::Ok);
        assert_eq!(file_max(&Ok(tuning::FILE_MAX), &b).status, Status::Ok);
        let memlock_bytes = tuning::MEMLOCK_KIB << 10;
        let f = memlock(&limit(memlock_bytes, memlock_bytes), &k("5.10.0"), &p);
        assert_eq!(f.status, Status::Ok, "{}", f.reading);
        assert_eq!(somaxconn(&Ok(tuning::SOMAXCONN)).status, Status::Ok);
        // Even with syncookies off.
        assert_eq!(
            syn_backlog(&Ok(tuning::SYN_BACKLOG), &Ok(0)).status,
            Status::Ok
        );
        // serve's default port lies below the range tuning/ sets for load clients.
        assert_eq!(
            port_range(&Ok(tuning::PORT_RANGE), &Ok(vec![]), 3000).status,
            Status::Ok
        );

        let f = somaxconn(&Ok(128));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            sysctls(&f.fix),
            [set("net.core.somaxconn", tuning::SOMAXCONN)]
        );
        let f = syn_backlog(&Ok(1024), &Ok(0));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(sysctls(&f.fix), tuning_syn_settings());
        let f = memlock(&limit(64 << 10, 64 << 10), &k("5.10.0"), &p);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            arg_of(&f.fix, "ulimit -l"),
            Some(tuning::MEMLOCK_KIB.to_string().as_str())
        );
    }

    #[test]
    fn doctor_every_check_quotes_its_own_recommendation() {
        // Each check finds its section of tuning/README.md (not the fallback), and checks that
        // share a section get their own line of it.
        let fallback = tuning::recommendation("no such check");
        let all = judge_all(&nothing_readable(), &plan(2, IoMode::Auto));
        for (i, f) in all.iter().enumerate() {
            assert_ne!(f.recommendation, fallback, "{}", f.check);
            for g in &all[i + 1..] {
                assert_ne!(
                    f.recommendation, g.recommendation,
                    "{} and {}",
                    f.check, g.check
                );
            }
        }
    }

    #[test]
    fn doctor_kernel_version() {
        assert_eq!(kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("5.11"), Some((5, 11)));
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn doctor_uring_ok_warn_fail_by_io_mode() {
        let ok = uring(Ok(()), Ok(0), Ok(0));
        for io in [IoMode::Auto, IoMode::Uring, IoMode::Epoll] {
            let f = io_uring(&ok, &k("6.18.0"), io);
            assert_eq!(f.status, Status::Ok);
            assert_eq!(f.values, [("rings", 2.0)]);
        }
        let blocked = uring(err(libc::EPERM), Ok(0), Ok(2));
        for (io, status) in [
            (IoMode::Auto, Status::Warn),
            (IoMode::Uring, Status::Fail),
            (IoMode::Epoll, Status::Ok),
        ] {
            let f = io_uring(&blocked, &k("6.18.0"), io);
            assert_eq!(f.status, status, "{io:?}");
            assert_eq!(value(&f, "errno"), Some(f64::from(libc::EPERM)));
        }
    }

    #[test]
    fn doctor_uring_causes_by_errno() {
        use UringCause::*;
        let off = Ok(0);
        let filter = Ok(2);
        for (errno, disabled, seccomp, cause) in [
            (libc::EPERM, Ok(2), &off, DisabledSystemWide),
            // The sysctl is the cause even inside a seccomp filter.
            (libc::EPERM, Ok(2), &filter, DisabledSystemWide),
            (libc::EPERM, Ok(1), &off, GroupOnly),
            (libc::EPERM, Ok(0), &filter, Seccomp),
            (libc::EACCES, unreadable(), &filter, Seccomp),
            (libc::EPERM, Ok(0), &off, Policy),
            (libc::EPERM, unreadable(), &unreadable(), Policy),
            (libc::ENOSYS, unreadable(), &off, Kernel),
            (libc::ENOSYS, Ok(0), &filter, FilterOrKernel),
            (libc::ENOMEM, unreadable(), &off, Memlock),
            (libc::EINVAL, unreadable(), &unreadable(), Other),
        ] {
            assert_eq!(
                uring_cause(Some(errno), &disabled, seccomp),
                cause,
                "{errno}"
            );
        }
        assert_eq!(uring_cause(None, &Ok(2), &Ok(2)), Other);

        // The commands each cause gets.
        let enable = [set("kernel.io_uring_disabled", tuning::IO_URING_DISABLED)];
        for disabled in [2, 1] {
            let f = io_uring(
                &uring(err(libc::EPERM), Ok(disabled), Ok(0)),
                &k("6.8.0"),
                IoMode::Auto,
            );
            assert_eq!(sysctls(&f.fix), enable, "{}", f.fix);
        }
        let f = io_uring(
            &uring(err(libc::ENOMEM), unreadable(), Ok(0)),
            &k("5.11.0"),
            IoMode::Auto,
        );
        assert_eq!(
            arg_of(&f.fix, "ulimit -l"),
            Some(tuning::MEMLOCK_KIB.to_string().as_str())
        );
        let f = io_uring(
            &uring(err(libc::EINVAL), unreadable(), unreadable()),
            &unreadable(),
            IoMode::Auto,
        );
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            f.values,
            vec![("rings", 2.0), ("errno", libc::EINVAL as f64)]
        );
    }

    #[test]
    fn doctor_memlock_matters_only_before_5_12() {
        let small = limit(64 << 10, 64 << 10);
        let p = plan(2, IoMode::Auto);
        assert_eq!(memlock(&small, &k("5.12.0"), &p).status, Status::Ok);
        assert_eq!(memlock(&small, &k("6.18.44-fc"), &p).status, Status::Ok);
        let f = memlock(&small, &k("5.11.22"), &p);
        assert_eq!(f.status, Status::Fail, "{}", f.reading);
        assert_eq!(value(&f, "soft_bytes"), Some(65_536.0));
        assert_eq!(
            memlock(&small, &k("5.11.22"), &plan(2, IoMode::Epoll)).status,
            Status::Ok
        );
        // Unknown kernel: cannot tell, so WARN, not FAIL.
        assert_eq!(memlock(&small, &unreadable(), &p).status, Status::Warn);
        // Exactly enough for two rings of the shards' size, and one byte less.
        let need = 2 * ring_bytes(u64::from(RING_ENTRIES));
        assert_eq!(
            memlock(&limit(need, need), &k("5.10.0"), &p).status,
            Status::Ok
        );
        let short = Ok(Limit {
            soft: Some(need - 1),
            hard: None,
        });
        assert_eq!(memlock(&short, &k("5.10.0"), &p).status, Status::Fail);
        let unlimited = Ok(Limit {
            soft: None,
            hard: None,
        });
        let f = memlock(&unlimited, &k("5.10.0"), &p);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(value(&f, "soft_bytes"), Some(f64::INFINITY));
        let f = memlock(&unreadable(), &k("5.10.0"), &p);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.values, []);
    }

    #[test]
    fn doctor_fd_budget() {
        let b = budget(10);
        assert_eq!(b.overhead(), FD_BASE + 2 * FD_PER_SHARD + 10);
        assert_eq!(b.need(), 19_600 + b.overhead());
        assert_eq!(b.sessions(20_000), 20_000 - b.overhead());
        assert_eq!(b.sessions(10), 0);
        assert_eq!(b.recommended(), tuning::NOFILE);
        let big = FdBudget {
            max_connections: 100_000,
            ..b
        };
        assert_eq!(big.recommended(), big.need());
        let uncounted = fd_budget(&plan(2, IoMode::Auto), &unreadable());
        assert_eq!(uncounted.table_files, 0);
        assert!(!uncounted.table_files_counted);
    }

    #[test]
    fn doctor_nofile_threshold_both_sides() {
        let b = budget(0);
        let need = b.need();
        let f = nofile(&limit(need, need), &b);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(value(&f, "sessions"), Some(19_600.0));
        assert_eq!(value(&f, "need"), Some(need as f64));
        // The hard limit allows enough: raise the soft one, to tuning/'s value where it can.
        let f = nofile(&limit(need - 1, 1_048_576), &b);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            arg_of(&f.fix, "ulimit -Sn"),
            Some(tuning::NOFILE.to_string().as_str())
        );
        let f = nofile(&limit(1024, need), &b);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            arg_of(&f.fix, "ulimit -Sn"),
            Some(need.to_string().as_str())
        );
        // It does not: install tuning/'s limits.
        let f = nofile(&limit(1024, 4096), &b);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(value(&f, "sessions"), Some((1024 - b.overhead()) as f64));
        assert_eq!(arg_of(&f.fix, "ulimit -Sn"), None, "{}", f.fix);
        assert_eq!(
            arg_of(&f.fix, "install -m 644"),
            Some("tuning/fleetgate-limits.conf")
        );
        // A 20000/20000 box holds the default 19600 however large the store grows, because
        // RocksDB keeps at most MAX_OPEN_FILES table files open.
        assert_eq!(nofile(&limit(20_000, 20_000), &b).status, Status::Ok);
        assert_eq!(
            budget(100_000).table_files,
            crate::store::MAX_OPEN_FILES as u64
        );
        assert_eq!(
            nofile(&limit(20_000, 20_000), &budget(100_000)).status,
            Status::Ok
        );
        let unl = nofile(
            &Ok(Limit {
                soft: None,
                hard: None,
            }),
            &b,
        );
        assert_eq!(unl.status, Status::Ok);
        let f = nofile(&unreadable(), &b);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.values, []);
    }

    #[test]
    fn doctor_nr_open_and_file_max() {
        let b = budget(0);
        assert_eq!(nr_open(&Ok(1_048_576), &b).status, Status::Ok);
        assert_eq!(nr_open(&Ok(b.recommended()), &b).status, Status::Ok);
        let f = nr_open(&Ok(b.recommended() - 1), &b);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(value(&f, "value"), Some((b.recommended() - 1) as f64));
        assert_eq!(nr_open(&Ok(b.need() - 1), &b).status, Status::Warn);
        assert_eq!(nr_open(&unreadable(), &b).status, Status::Warn);

        let need = b.need();
        assert_eq!(file_max(&Ok(2 * need), &b).status, Status::Ok);
        assert_eq!(file_max(&Ok(2 * need - 1), &b).status, Status::Warn);
        assert_eq!(file_max(&Ok(need), &b).status, Status::Warn);
        assert_eq!(file_max(&Ok(need - 1), &b).status, Status::Fail);
        let f = file_max(&unreadable(), &b);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.values, []);
    }

    #[test]
    fn doctor_somaxconn_threshold_is_the_listen_backlog() {
        assert_eq!(somaxconn(&Ok(BACKLOG)).status, Status::Ok);
        assert_eq!(somaxconn(&Ok(65_535)).status, Status::Ok);
        let f = somaxconn(&Ok(BACKLOG - 1));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(value(&f, "value"), Some((BACKLOG - 1) as f64));
        assert_eq!(somaxconn(&unreadable()).status, Status::Warn);
    }

    #[test]
    fn doctor_syn_backlog_depends_on_syncookies() {
        let rec = tuning::SYN_BACKLOG;
        assert_eq!(syn_backlog(&Ok(rec), &Ok(0)).status, Status::Ok);
        assert_eq!(syn_backlog(&Ok(rec - 1), &Ok(0)).status, Status::Warn);
        let f = syn_backlog(&Ok(2048), &Ok(1));
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.values, [("value", 2048.0), ("syncookies", 1.0)]);
        assert_eq!(syn_backlog(&Ok(2048), &unreadable()).status, Status::Warn);
        assert_eq!(syn_backlog(&unreadable(), &Ok(1)).status, Status::Warn);
    }

    #[test]
    fn doctor_port_range() {
        let none = Ok(vec![]);
        let f = port_range(&Ok((32768, 60999)), &none, 3000);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(
            f.values,
            [("low", 32768.0), ("high", 60999.0), ("ports", 28232.0)]
        );
        // 28000 ports exactly, and one fewer.
        assert_eq!(
            port_range(&Ok((30000, 57999)), &none, 3000).status,
            Status::Ok
        );
        assert_eq!(
            port_range(&Ok((30000, 57998)), &none, 3000).status,
            Status::Warn
        );
        // The listen port inside the range: WARN unless reserved, and the fix reserves it.
        let f = port_range(&Ok((1024, 65535)), &none, 3000);
        assert_eq!(f.status, Status::Warn);
        assert!(
            sysctls(&f.fix).contains(&set("net.ipv4.ip_local_reserved_ports", 3000)),
            "{}",
            f.fix
        );
        let reserved = Ok(vec![(2000, 4000)]);
        assert_eq!(
            port_range(&Ok((1024, 65535)), &reserved, 3000).status,
            Status::Ok
        );
        // Port 0 (pick any) is never "in the range".
        assert_eq!(port_range(&Ok((1024, 65535)), &none, 0).status, Status::Ok);
        assert_eq!(
            port_range(&Ok((60999, 32768)), &none, 3000).status,
            Status::Warn
        );
        assert_eq!(
            port_range(&Ok((1024, 65536)), &none, 0).status,
            Status::Warn
        );
        assert_eq!(port_range(&unreadable(), &none, 3000).status, Status::Warn);
        // Reserved list unreadable: cannot show it is reserved.
        assert_eq!(
            port_range(&Ok((1024, 65535)), &unreadable(), 3000).status,
            Status::Warn
        );
    }

    fn cpu(allowed: Read<usize>, online: usize, quota: Option<f64>) -> CpuReading {
        CpuReading {
            online: Ok(online),
            allowed,
            quota,
        }
    }

    #[test]
    fn doctor_cpus_vs_shards() {
        assert_eq!(
            cpus(&cpu(Ok(2), 2, None), &plan(2, IoMode::Auto)).status,
            Status::Ok
        );
        assert_eq!(
            cpus(&cpu(Ok(8), 8, Some(8.0)), &plan(8, IoMode::Auto)).status,
            Status::Ok
        );
        let f = cpus(&cpu(Ok(2), 4, None), &plan(3, IoMode::Auto));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            f.values,
            [("shards", 3.0), ("allowed", 2.0), ("online", 4.0)]
        );
        assert_eq!(arg_of(&f.fix, "serve --shards"), Some("2"));
        let f = cpus(&cpu(Ok(8), 8, Some(4.0)), &plan(8, IoMode::Auto));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(value(&f, "quota"), Some(4.0));
        assert_eq!(arg_of(&f.fix, "serve --shards"), Some("4"));
        // One core, or a quota of about one: WARN even with one shard.
        let f = cpus(&cpu(Ok(1), 1, None), &plan(1, IoMode::Auto));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(arg_of(&f.fix, "serve --shards"), Some("1"));
        assert_eq!(
            cpus(&cpu(Ok(4), 4, Some(1.2)), &plan(1, IoMode::Auto)).status,
            Status::Warn
        );
        let f = cpus(&cpu(unreadable(), 2, None), &plan(2, IoMode::Auto));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.values, []);
        let f = cpus(
            &CpuReading {
                online: unreadable(),
                allowed: Ok(2),
                quota: None,
            },
            &plan(2, IoMode::Auto),
        );
        assert_eq!(f.status, Status::Ok);
        assert!(value(&f, "online").is_some_and(f64::is_nan));
    }

    #[test]
    fn doctor_percentile_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.99), Some(7));
        let v: Vec<u64> = (1..=50).rev().collect();
        assert_eq!(percentile(&v, 0.5), Some(25));
        assert_eq!(percentile(&v, 0.99), Some(50));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.99), Some(990));
    }

    fn samples(p50_us: u64, p99_us: u64, fs: &str) -> Read<FsyncReading> {
        // 100 samples, 98 at p50 and 2 at p99: nearest-rank p50 is the 50th, p99 the 99th.
        let mut s = vec![p99_us * 1000; 2];
        s.extend(std::iter::repeat_n(p50_us * 1000, 98));
        Ok(FsyncReading {
            dir: PathBuf::from("/var/lib/fleetgate"),
            data_dir_missing: false,
            fs_type: Some(fs.to_string()),
            block: 4096,
            samples_ns: s,
        })
    }

    #[test]
    fn doctor_fsync_thresholds() {
        let f = fsync(&samples(400, 1_200, "ext4"));
        assert_eq!(f.status, Status::Ok);
        assert_eq!(
            f.values,
            [
                ("p50_ms", 0.4),
                ("p99_ms", 1.2),
                ("max_ms", 1.2),
                ("samples", 100.0)
            ]
        );
        assert_eq!(fsync(&samples(2_000, 5_000, "ext4")).status, Status::Ok);
        assert_eq!(fsync(&samples(2_001, 2_001, "ext4")).status, Status::Warn);
        assert_eq!(fsync(&samples(100, 5_001, "xfs")).status, Status::Warn);
        // Fast, but memory or a container's writable layer.
        for fs in ["tmpfs", "ramfs", "overlayfs"] {
            assert_eq!(fsync(&samples(5, 10, fs)).status, Status::Warn, "{fs}");
        }
        let f = fsync(&Err(
            "could not create /x/.fleetgate-doctor-1.tmp: Permission denied".into(),
        ));
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.values, []);
        let empty = Ok(FsyncReading {
            dir: PathBuf::from("."),
            data_dir_missing: true,
            fs_type: None,
            block: 4096,
            samples_ns: vec![],
        });
        assert_eq!(fsync(&empty).status, Status::Warn);
        // Measured in the parent of a data directory serve will create: judged the same.
        let mut missing = samples(100, 200, "ext4").unwrap();
        missing.data_dir_missing = true;
        assert_eq!(fsync(&Ok(missing)).status, Status::Ok);
    }

    /// Readings where nothing could be read.
    fn nothing_readable() -> Readings {
        Readings {
            kernel: unreadable(),
            uring: uring(
                Err(UringError {
                    errno: None,
                    message: "unknown".into(),
                    ring: 1,
                }),
                unreadable(),
                unreadable(),
            ),
            nofile: unreadable(),
            memlock: unreadable(),
            somaxconn: unreadable(),
            syn_backlog: unreadable(),
            syncookies: unreadable(),
            port_range: unreadable(),
            reserved_ports: unreadable(),
            file_max: unreadable(),
            nr_open: unreadable(),
            cpus: CpuReading {
                online: unreadable(),
                allowed: unreadable(),
                quota: None,
            },
            table_files: unreadable(),
            fsync: unreadable(),
        }
    }

    #[test]
    fn doctor_judge_all_survives_an_unreadable_machine() {
        // Nothing could be read: every check still answers, none panics, none claims OK.
        let f = judge_all(&nothing_readable(), &plan(2, IoMode::Auto));
        let names: Vec<_> = f.iter().map(|f| f.check).collect();
        assert_eq!(
            names,
            [
                "io_uring",
                "memlock",
                "nofile",
                "fs.nr_open",
                "fs.file-max",
                "net.core.somaxconn",
                "net.ipv4.tcp_max_syn_backlog",
                "net.ipv4.ip_local_port_range",
                "cpus",
                "fsync"
            ]
        );
        for x in &f {
            assert_ne!(x.status, Status::Ok, "{} claimed OK from nothing", x.check);
            assert!(!x.fix.is_empty(), "{}", x.check);
        }
        // Only the data directory that cannot be written is a FAIL.
        let fails: Vec<_> = f
            .iter()
            .filter(|x| x.status == Status::Fail)
            .map(|x| x.check)
            .collect();
        assert_eq!(fails, ["fsync"]);
    }
}
