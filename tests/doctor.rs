//! `fleetgate doctor` as an operator runs it: the real binary on this machine, with a temporary
//! data directory. What the machine reads is not asserted (it differs between machines); what is
//! asserted is the findings: every check is reported with a status, reading, recommendation and
//! command; the plan judged is `serve`'s, from its flags, environment and defaults; the values
//! follow from that plan; the exit status is 1 exactly when a check FAILs; and the probe file does
//! not outlive the run. No assertion reads the prose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetgate::doctor::judge::{FD_BASE, FD_PER_SHARD};
use simd_json::OwnedValue as Value;
use simd_json::prelude::*;

const CHECKS: [&str; 10] = [
    "io_uring",
    "memlock",
    "nofile",
    "fs.nr_open",
    "fs.file-max",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "cpus",
    "fsync",
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("fleetgate-doctor-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `fleetgate doctor ARGS` with none of serve's environment variables inherited.
fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.arg("doctor").args(args);
    for v in [
        "FLEETGATE_DATA_DIR",
        "FLEETGATE_SHARDS",
        "FLEETGATE_MAX_CONNECTIONS",
        "FLEETGATE_IO",
        "FLEETGATE_LISTEN",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run fleetgate doctor")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> Value {
    let mut b = o.stdout.clone();
    simd_json::to_owned_value(&mut b)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}", show(o)))
}

fn check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get("checks")
        .and_then(|c| c.as_array())
        .and_then(|a| {
            a.iter()
                .find(|c| c.get("check").and_then(|n| n.as_str()) == Some(name))
        })
        .unwrap_or_else(|| panic!("no check {name}"))
}

fn status_of<'a>(v: &'a Value, name: &str) -> &'a str {
    check(v, name)
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or_else(|| panic!("no status for {name}"))
}

/// A number from a check's `values`.
fn value_of(v: &Value, name: &str, key: &str) -> Option<f64> {
    check(v, name)
        .get("values")
        .and_then(|x| x.get(key))
        .and_then(|n| n.cast_f64())
}

/// The default `serve` declares for a flag (not what this process's environment would make it).
fn serve_default(flag: &str) -> String {
    use clap::CommandFactory;
    let cli = fleetgate::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    let arg = serve
        .get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .unwrap_or_else(|| panic!("serve has no --{flag}"));
    arg.get_default_values()
        .first()
        .unwrap_or_else(|| panic!("--{flag} has no default"))
        .to_string_lossy()
        .into_owned()
}

fn dir_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The text report: for each check, its status line, then reading, recommend and change lines.
/// Returns the statuses in order.
fn parse_text(out: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = out.lines().collect();
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut parts = l.split_whitespace();
        let (Some(status), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !["OK", "WARN", "FAIL"].contains(&status) || l.starts_with(' ') {
            continue;
        }
        // The block that follows holds each field, in this order.
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|b| b.starts_with("      "))
            .copied()
            .collect();
        let labels: Vec<&str> = block
            .iter()
            .filter_map(|b| b.split_whitespace().next())
            .filter(|w| ["reading", "recommend", "change"].contains(w))
            .collect();
        assert_eq!(
            labels,
            ["reading", "recommend", "change"],
            "fields of {name}:\n{out}"
        );
        for b in &block {
            let mut words = b.split_whitespace();
            if words
                .next()
                .is_some_and(|w| ["reading", "recommend", "change"].contains(&w))
            {
                assert!(
                    words.next().is_some(),
                    "empty field under {name}: {b:?}\n{out}"
                );
            }
        }
        found.push((status.to_string(), name.to_string()));
    }
    found
}

#[test]
fn text_report_has_every_check_and_exit_status_follows_fails() {
    let d = TempDir::new("text");
    let o = doctor(&["--data-dir", &dir_arg(&d.0)], &[]);
    let out = text(&o);
    let found = parse_text(&out);
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, CHECKS, "{}", show(&o));
    let fails = found.iter().filter(|(s, _)| s == "FAIL").count();
    let warns = found.iter().filter(|(s, _)| s == "WARN").count();
    let oks = found.iter().filter(|(s, _)| s == "OK").count();
    let expected = i32::from(fails > 0);
    assert_eq!(o.status.code(), Some(expected), "{}", show(&o));
    assert!(
        out.ends_with(&format!(
            "{oks} OK, {warns} WARN, {fails} FAIL: exit status {expected}\n"
        )),
        "{}",
        show(&o)
    );
    // The fsync probe cleaned up after itself.
    let left: Vec<_> = std::fs::read_dir(&d.0).unwrap().collect();
    assert!(left.is_empty(), "doctor left files behind: {left:?}");
}

#[test]
fn json_has_every_check_with_a_status_and_agrees_with_the_exit_status() {
    let d = TempDir::new("json");
    let o = doctor(&["--data-dir", &dir_arg(&d.0), "--json"], &[]);
    let v = json(&o);
    let checks = v
        .get("checks")
        .and_then(|c| c.as_array())
        .unwrap_or_else(|| panic!("no checks array: {}", show(&o)));
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c.get("check").and_then(|n| n.as_str()).unwrap_or(""))
        .collect();
    assert_eq!(names, CHECKS);
    let mut fails = 0;
    for c in checks {
        let status = c.get("status").and_then(|s| s.as_str()).unwrap_or("");
        assert!(
            ["OK", "WARN", "FAIL"].contains(&status),
            "status {status:?}"
        );
        fails += usize::from(status == "FAIL");
        for field in ["reading", "recommendation", "fix"] {
            let s = c.get(field).and_then(|s| s.as_str()).unwrap_or("");
            assert!(
                !s.trim().is_empty(),
                "{field} of {:?} is empty",
                c.get("check")
            );
        }
        assert!(c.get("values").is_some_and(|x| x.is_object()));
    }
    let summary_fail = v
        .get("summary")
        .and_then(|s| s.get("fail"))
        .and_then(|n| n.cast_f64());
    assert_eq!(summary_fail, Some(fails as f64));
    let expected = i32::from(fails > 0);
    assert_eq!(o.status.code(), Some(expected), "{}", show(&o));
    assert_eq!(
        v.get("exit_status").and_then(|n| n.cast_f64()),
        Some(f64::from(expected))
    );
    // Default plan: serve's defaults.
    let plan = v.get("plan").expect("plan");
    assert_eq!(
        plan.get("max_connections")
            .and_then(|n| n.cast_f64())
            .map(|n| n.to_string()),
        Some(serve_default("max-connections"))
    );
    assert_eq!(
        plan.get("io").and_then(|n| n.as_str()),
        Some(serve_default("io").as_str())
    );
    assert_eq!(
        plan.get("listen").and_then(|n| n.as_str()),
        Some(serve_default("listen").as_str())
    );
    assert_eq!(
        plan.get("shards_default").and_then(|n| n.as_bool()),
        Some(true)
    );
    // The fsync figures are numbers, and the probe took the default 50 samples.
    assert_eq!(value_of(&v, "fsync", "samples"), Some(50.0), "{}", show(&o));
    let (Some(p50), Some(p99)) = (
        value_of(&v, "fsync", "p50_ms"),
        value_of(&v, "fsync", "p99_ms"),
    ) else {
        panic!("no fsync percentiles: {}", show(&o));
    };
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
}

#[test]
fn an_unwritable_data_dir_fails_with_exit_status_1() {
    let d = TempDir::new("file");
    let file = d.0.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let o = doctor(&["--data-dir", &dir_arg(&file), "--json"], &[]);
    let v = json(&o);
    assert_eq!(status_of(&v, "fsync"), "FAIL", "{}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = doctor(&["--data-dir", &dir_arg(&file)], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let found = parse_text(&text(&o));
    assert!(
        found.contains(&("FAIL".to_string(), "fsync".to_string())),
        "{}",
        show(&o)
    );
}

#[test]
fn a_small_plan_on_a_writable_dir_passes_with_exit_status_0() {
    // One connection, epoll: no limit on any sane machine is too small for that, io_uring and
    // memlock are not needed, and the data directory is writable — so nothing may FAIL.
    let d = TempDir::new("small");
    let o = doctor(
        &[
            "--data-dir",
            &dir_arg(&d.0),
            "--max-connections",
            "1",
            "--io",
            "epoll",
            "--json",
        ],
        &[],
    );
    let v = json(&o);
    for c in CHECKS {
        assert_ne!(status_of(&v, c), "FAIL", "{c}: {}", show(&o));
    }
    assert_eq!(status_of(&v, "io_uring"), "OK", "{}", show(&o));
    assert_eq!(status_of(&v, "memlock"), "OK", "{}", show(&o));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn serve_environment_is_honoured_and_a_missing_data_dir_is_not_created() {
    let d = TempDir::new("env");
    let missing = d.0.join("not/yet");
    let o = doctor(
        &["--json"],
        &[
            ("FLEETGATE_DATA_DIR", &dir_arg(&missing)),
            ("FLEETGATE_MAX_CONNECTIONS", "123"),
            ("FLEETGATE_SHARDS", "3"),
            ("FLEETGATE_LISTEN", "127.0.0.1:40000"),
        ],
    );
    let v = json(&o);
    let plan = v.get("plan").expect("plan");
    assert_eq!(
        plan.get("max_connections").and_then(|n| n.cast_f64()),
        Some(123.0)
    );
    assert_eq!(plan.get("shards").and_then(|n| n.cast_f64()), Some(3.0));
    assert_eq!(
        plan.get("data_dir").and_then(|n| n.as_str()),
        Some(dir_arg(&missing).as_str())
    );
    assert_eq!(
        plan.get("listen").and_then(|n| n.as_str()),
        Some("127.0.0.1:40000")
    );
    // The checks judge that plan: descriptors for 123 connections and 3 shards (no table files
    // yet), and 3 shards against the CPUs.
    assert_eq!(
        value_of(&v, "nofile", "need"),
        Some((123 + FD_BASE + 3 * FD_PER_SHARD) as f64),
        "{}",
        show(&o)
    );
    assert_eq!(value_of(&v, "cpus", "shards"), Some(3.0), "{}", show(&o));
    // The data directory does not exist yet: measured in its parent, which is no FAIL.
    assert_ne!(status_of(&v, "fsync"), "FAIL", "{}", show(&o));
    assert_eq!(value_of(&v, "fsync", "samples"), Some(50.0), "{}", show(&o));
    assert!(!d.0.join("not").exists(), "doctor created the data dir");
    let left: Vec<_> = std::fs::read_dir(&d.0).unwrap().collect();
    assert!(left.is_empty(), "doctor left files behind: {left:?}");
}

#[test]
fn usage_errors_exit_2() {
    let o = doctor(&["--fsync-samples", "0"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = doctor(&["--io", "kqueue"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

/// Runs the doctor under a seccomp filter that answers `io_uring_setup` with EPERM, as container
/// runtimes' default profiles do; every other syscall is allowed.
fn doctor_without_io_uring(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.arg("doctor").args(args);
    for v in [
        "FLEETGATE_SHARDS",
        "FLEETGATE_MAX_CONNECTIONS",
        "FLEETGATE_IO",
    ] {
        c.env_remove(v);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl.
    unsafe {
        c.pre_exec(|| {
            // Classic BPF over struct seccomp_data, whose first field is the syscall number.
            const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
            const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
            const RET_K: u16 = 0x06; // BPF_RET | BPF_K
            const RET_ALLOW: u32 = 0x7fff_0000;
            const RET_ERRNO: u32 = 0x0005_0000;
            let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
            let mut filter = [
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
                op(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
                op(RET_K, 0, 0, RET_ALLOW),
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().expect("run fleetgate doctor under seccomp")
}

#[test]
fn io_uring_blocked_by_seccomp_is_a_warn_with_auto_and_a_fail_with_uring() {
    let d = TempDir::new("seccomp");
    let dir = dir_arg(&d.0);
    let small = [
        "--data-dir",
        dir.as_str(),
        "--max-connections",
        "1",
        "--json",
    ];

    let o = doctor_without_io_uring(&[&small[..], &["--io", "auto"]].concat());
    let v = json(&o);
    assert_eq!(status_of(&v, "io_uring"), "WARN", "{}", show(&o));
    assert_eq!(
        value_of(&v, "io_uring", "errno"),
        Some(f64::from(libc::EPERM)),
        "{}",
        show(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));

    let o = doctor_without_io_uring(&[&small[..], &["--io", "uring"]].concat());
    let v = json(&o);
    assert_eq!(status_of(&v, "io_uring"), "FAIL", "{}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    let o = doctor_without_io_uring(&[&small[..], &["--io", "epoll"]].concat());
    assert_eq!(status_of(&json(&o), "io_uring"), "OK", "{}", show(&o));
}
