//! The doctor's report: text for an operator, or one JSON object for a script.

use clap::ValueEnum;

use super::finding::{Finding, exit_code};
use super::plan::Plan;
use crate::config::{IoMode, MachineConfig};

/// The `--io` value as typed on the command line.
fn io_name(io: IoMode) -> String {
    io.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Findings per status: OK, WARN, FAIL.
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

pub fn render_text(plan: &Plan, machine: &MachineConfig, findings: &[Finding]) -> String {
    let mut out = format!(
        "fleetgate doctor: this machine against tuning/README.md\n\
         judged for: serve --shards {}{} --max-connections {} --io {} --listen {} --data-dir {}\n\n",
        plan.shards,
        if plan.shards_given { "" } else { " (default)" },
        plan.max_connections,
        io_name(plan.io),
        machine.listen,
        machine.data_dir.display(),
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

pub fn render_json(plan: &Plan, machine: &MachineConfig, findings: &[Finding]) -> String {
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
    push_str(&mut o, &machine.listen.to_string());
    o.push_str(",\"data_dir\":");
    push_str(&mut o, &machine.data_dir.to_string_lossy());
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
    use crate::doctor::finding::Status;
    use simd_json::prelude::*;

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

    fn machine() -> MachineConfig {
        MachineConfig {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 3000)),
            data_dir: "/x y".into(),
            shards: None,
            io: IoMode::Auto,
            max_connections: 19_600,
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
    fn doctor_json_escapes_and_parses() {
        let findings = [finding("a", Status::Ok), finding("b", Status::Fail)];
        let mut s = render_json(&plan(), &machine(), &findings).into_bytes();
        let v = simd_json::to_owned_value(&mut s).expect("valid JSON");
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
        let summary = v.get("summary").expect("summary");
        assert_eq!(summary.get("ok").and_then(|n| n.as_u64()), Some(1));
        assert_eq!(summary.get("fail").and_then(|n| n.as_u64()), Some(1));
        let plan = v.get("plan").expect("plan");
        assert_eq!(plan.get("data_dir").and_then(|d| d.as_str()), Some("/x y"));
        assert_eq!(plan.get("io").and_then(|d| d.as_str()), Some("auto"));
        assert_eq!(
            plan.get("listen").and_then(|d| d.as_str()),
            Some("0.0.0.0:3000")
        );
        assert_eq!(
            plan.get("shards_default").and_then(|d| d.as_bool()),
            Some(true)
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
        // The layout tests/doctor.rs and operators read: a status line per check, then its fields
        // under labels, continuation lines indented; a summary line last.
        let findings = [finding("somecheck", Status::Warn)];
        let t = render_text(&plan(), &machine(), &findings);
        assert!(t.contains("WARN  somecheck\n"), "{t}");
        assert!(t.contains("      reading    r \"quoted\"\n"), "{t}");
        assert!(t.contains("                 second line\n"), "{t}");
        assert!(t.contains("      recommend  rec\n"), "{t}");
        assert!(t.contains("      change     fix\n"), "{t}");
        assert!(t.ends_with("0 OK, 1 WARN, 0 FAIL: exit status 0\n"), "{t}");
    }
}
