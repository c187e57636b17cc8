//! `fleetgate doctor`: checks the machine it runs on against `tuning/README.md` and says what to
//! change.
//!
//! Two halves, kept apart so the judgement is testable without the machine: `probe` reads the
//! machine into [`probe::Readings`] (every read that can fail is a `Result` holding what could not
//! be read), and `judge` turns readings and the planned `serve` configuration into [`Finding`]s with
//! pure functions. This module parses the flags, runs both and prints the report.
//!
//! Exit status: 0 when no finding is FAIL (OKs and WARNs only), 1 when at least one is FAIL.
//! Usage errors exit 2 (clap).

pub mod judge;
pub mod probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::IoMode;

/// Flags; the ones `serve` also has read the same environment variables with the same defaults,
/// so the doctor judges the configuration the server will run with.
#[derive(Clone, Debug, clap::Args)]
pub struct DoctorArgs {
    /// The data directory `serve` will use: fdatasync latency is measured there (a temporary file,
    /// removed after) and its RocksDB table files are counted toward the open-file budget.
    #[arg(long, env = "FLEETGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Shards `serve` will run (default, as for `serve`: one per core this process may use).
    #[arg(long, env = "FLEETGATE_SHARDS")]
    pub shards: Option<usize>,
    /// The `serve --max-connections` to judge the open-file limits against.
    #[arg(long, env = "FLEETGATE_MAX_CONNECTIONS", default_value_t = 19_600)]
    pub max_connections: usize,
    /// The `serve --io` driver: with `uring`, an unusable io_uring is a FAIL (serve refuses to start);
    /// with `auto` it is a WARN (serve falls back to epoll).
    #[arg(long, value_enum, env = "FLEETGATE_IO", default_value = "auto")]
    pub io: IoMode,
    /// The `serve --listen` address; its port is checked against the ephemeral port range.
    #[arg(long, env = "FLEETGATE_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Appending writes, each followed by fdatasync, timed in the data directory.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub fsync_samples: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The check's name (a sysctl's own name where it is one).
    pub check: &'static str,
    pub status: Status,
    /// What was read, in words, with the numbers.
    pub reading: String,
    /// What `tuning/README.md` recommends, and why.
    pub recommendation: String,
    /// The exact command(s) that change it.
    pub fix: String,
    /// The numbers behind the reading, for `--json`.
    pub values: Vec<(&'static str, f64)>,
}

/// The `serve` configuration the machine is judged for.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub shards: usize,
    /// Whether `shards` came from `--shards` (else: the default, one per usable core).
    pub shards_given: bool,
    pub max_connections: usize,
    pub io: IoMode,
    pub listen_port: u16,
}

/// Exit status for a set of findings: 1 when any is FAIL.
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.status == Status::Fail))
}

pub fn main(args: &DoctorArgs) -> ExitCode {
    let parallelism = std::thread::available_parallelism().map(|n| n.get());
    let plan = Plan {
        // As `ServeConfig::shard_count`.
        shards: args
            .shards
            .unwrap_or_else(|| parallelism.as_ref().map_or(1, |n| *n))
            .clamp(1, 256),
        shards_given: args.shards.is_some(),
        max_connections: args.max_connections,
        io: args.io,
        listen_port: args.listen.port(),
    };
    let readings = probe::read_machine(&probe::Paths::real(), &args.data_dir, &plan, args);
    let findings = judge::judge_all(&readings, &plan);
    let out = if args.json {
        render_json(&plan, args, &findings)
    } else {
        render_text(&plan, args, &findings)
    };
    print!("{out}");
    ExitCode::from(exit_code(&findings))
}

fn io_name(io: IoMode) -> &'static str {
    match io {
        IoMode::Auto => "auto",
        IoMode::Uring => "uring",
        IoMode::Epoll => "epoll",
    }
}

fn counts(findings: &[Finding]) -> [usize; 3] {
    let mut n = [0; 3];
    for f in findings {
        n[f.status as usize] += 1;
    }
    n
}

/// Width of the wrapped prose after the 17-column label.
const TEXT_WIDTH: usize = 83;

/// Splits `line` at spaces into lines of at most `width` characters (a longer word stays whole).
pub fn wrap_words(line: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for w in line.split(' ').filter(|w| !w.is_empty()) {
        if !cur.is_empty() && cur.chars().count() + 1 + w.chars().count() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

pub fn render_text(plan: &Plan, args: &DoctorArgs, findings: &[Finding]) -> String {
    let mut out = format!(
        "fleetgate doctor: this machine against tuning/README.md\n\
         judged for: serve --shards {}{} --max-connections {} --io {} --listen {} --data-dir {}\n\n",
        plan.shards,
        if plan.shards_given { "" } else { " (default)" },
        plan.max_connections,
        io_name(plan.io),
        args.listen,
        args.data_dir.display(),
    );
    for f in findings {
        out.push_str(&format!("{:<4}  {}\n", f.status.as_str(), f.check));
        // Prose is wrapped; commands are not, so they can be copied as they are.
        for (label, text, wrap) in [
            ("reading", &f.reading, true),
            ("recommend", &f.recommendation, true),
            ("change", &f.fix, false),
        ] {
            let lines: Vec<String> = if wrap {
                text.lines()
                    .flat_map(|l| wrap_words(l, TEXT_WIDTH))
                    .collect()
            } else {
                text.lines().map(str::to_string).collect()
            };
            for (i, l) in lines.iter().enumerate() {
                let label = if i == 0 { label } else { "" };
                out.push_str(&format!("      {label:<10} {l}\n"));
            }
        }
        out.push('\n');
    }
    let [ok, warn, fail] = counts(findings);
    out.push_str(&format!(
        "{ok} OK, {warn} WARN, {fail} FAIL: exit status {}\n",
        exit_code(findings)
    ));
    out
}

pub fn render_json(plan: &Plan, args: &DoctorArgs, findings: &[Finding]) -> String {
    use crate::json::push_str;
    let [ok, warn, fail] = counts(findings);
    let mut o = String::from("{\"plan\":{");
    o.push_str(&format!(
        "\"shards\":{},\"shards_default\":{},\"max_connections\":{},\"io\":\"{}\",\"listen\":",
        plan.shards,
        !plan.shards_given,
        plan.max_connections,
        io_name(plan.io)
    ));
    push_str(&mut o, &args.listen.to_string());
    o.push_str(",\"data_dir\":");
    push_str(&mut o, &args.data_dir.to_string_lossy());
    o.push_str(&format!(
        "}},\"summary\":{{\"ok\":{ok},\"warn\":{warn},\"fail\":{fail}}},\"exit_status\":{},\"checks\":[",
        exit_code(findings)
    ));
    for (i, f) in findings.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"check\":");
        push_str(&mut o, f.check);
        o.push_str(&format!(
            ",\"status\":\"{}\",\"reading\":",
            f.status.as_str()
        ));
        push_str(&mut o, &f.reading);
        o.push_str(",\"recommendation\":");
        push_str(&mut o, &f.recommendation);
        o.push_str(",\"fix\":");
        push_str(&mut o, &f.fix);
        o.push_str(",\"values\":{");
        for (j, (k, v)) in f.values.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            push_str(&mut o, k);
            o.push(':');
            if v.is_finite() {
                o.push_str(&format!("{v}"));
            } else {
                o.push_str("null");
            }
        }
        o.push_str("}}");
    }
    o.push_str("]}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn finding(check: &'static str, status: Status) -> Finding {
        Finding {
            check,
            status,
            reading: "r \"quoted\"\nsecond line".into(),
            recommendation: "rec".into(),
            fix: "fix".into(),
            values: vec![("n", 3.0), ("inf", f64::INFINITY), ("half", 0.5)],
        }
    }

    fn args() -> DoctorArgs {
        match crate::cli::Cli::try_parse_from(["fleetgate", "doctor", "--data-dir", "/x y"]) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Doctor(a),
            }) => a,
            other => panic!("doctor flags did not parse: {other:?}"),
        }
    }

    fn plan() -> Plan {
        Plan {
            shards: 2,
            shards_given: false,
            max_connections: 19_600,
            io: IoMode::Auto,
            listen_port: 3000,
        }
    }

    #[test]
    fn doctor_exit_code_is_one_only_with_a_fail() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(
            exit_code(&[finding("a", Status::Ok), finding("b", Status::Warn)]),
            0
        );
        assert_eq!(
            exit_code(&[finding("a", Status::Ok), finding("b", Status::Fail)]),
            1
        );
    }

    #[test]
    fn doctor_defaults_match_serve() {
        // The doctor judges the configuration serve would run with; its defaults must not drift.
        let serve = match crate::cli::Cli::try_parse_from(["fleetgate", "serve"]) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Serve(c),
            }) => c,
            other => panic!("serve flags did not parse: {other:?}"),
        };
        let d = match crate::cli::Cli::try_parse_from(["fleetgate", "doctor"]) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Doctor(a),
            }) => a,
            other => panic!("doctor flags did not parse: {other:?}"),
        };
        assert_eq!(d.max_connections, serve.max_connections);
        assert_eq!(d.io, serve.io);
        assert_eq!(d.listen, serve.listen);
        assert_eq!(d.data_dir, serve.data_dir);
        assert_eq!(d.shards, serve.shards);
    }

    #[test]
    fn doctor_json_escapes_and_parses() {
        let findings = [finding("a", Status::Ok), finding("b", Status::Fail)];
        let mut s = render_json(&plan(), &args(), &findings).into_bytes();
        let v = simd_json::to_owned_value(&mut s).expect("valid JSON");
        use simd_json::prelude::*;
        let checks = v.get("checks").and_then(|c| c.as_array()).expect("checks");
        assert_eq!(checks.len(), 2);
        assert_eq!(
            checks[0].get("reading").and_then(|r| r.as_str()),
            Some("r \"quoted\"\nsecond line")
        );
        assert_eq!(
            checks[1].get("status").and_then(|r| r.as_str()),
            Some("FAIL")
        );
        let values = checks[0].get("values").expect("values");
        assert_eq!(values.get("n").and_then(|n| n.cast_f64()), Some(3.0));
        assert!(values.get("inf").is_some_and(|n| n.is_null()));
        assert_eq!(v.get("exit_status").and_then(|n| n.as_u64()), Some(1));
        assert_eq!(
            v.get("plan")
                .and_then(|p| p.get("data_dir"))
                .and_then(|d| d.as_str()),
            Some("/x y")
        );
    }

    #[test]
    fn doctor_wrap_words() {
        assert_eq!(wrap_words("", 10), vec![""]);
        assert_eq!(wrap_words("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        assert_eq!(wrap_words("a bb", 4), vec!["a bb"]);
        assert_eq!(
            wrap_words("averyveryverylongword x", 5),
            vec!["averyveryverylongword", "x"]
        );
        for l in wrap_words(&"word ".repeat(100), 83) {
            assert!(l.chars().count() <= 83);
        }
    }

    #[test]
    fn doctor_text_lists_every_field_and_the_summary() {
        let findings = [finding("somecheck", Status::Warn)];
        let t = render_text(&plan(), &args(), &findings);
        assert!(t.contains("WARN  somecheck\n"), "{t}");
        assert!(t.contains("      reading    r \"quoted\"\n"), "{t}");
        assert!(t.contains("                 second line\n"), "{t}");
        assert!(t.contains("      recommend  rec\n"), "{t}");
        assert!(t.contains("      change     fix\n"), "{t}");
        assert!(t.ends_with("0 OK, 1 WARN, 0 FAIL: exit status 0\n"), "{t}");
    }
}
