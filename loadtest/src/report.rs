//! Merges the workers' outcomes, the command driver's report and the server readings into one
//! JSON object (the last stdout line with `--json`, pretty-printed otherwise).

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::cmdstorm;
use crate::worker::{Outcome, Scenario, new_histogram};
use crate::{Args, ServerStats};

fn merge(outs: &[Outcome], f: fn(&Outcome) -> &Vec<(u64, u64)>) -> Histogram<u64> {
    let mut h = new_histogram();
    for o in outs {
        for &(v, n) in f(o) {
            let _ = h.record_n(v.clamp(1, h.high()), n);
        }
    }
    h
}

/// A quantile in milliseconds (three decimals), or null for an empty histogram.
fn q(h: &Histogram<u64>, p: f64) -> Value {
    if h.is_empty() {
        Value::Null
    } else {
        let ms = h.value_at_quantile(p) as f64 / 1000.0;
        json!((ms * 1000.0).round() / 1000.0)
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The report of one run.
pub fn build(
    args: &Args,
    scenario: Scenario,
    sink: bool,
    outs: &[Outcome],
    s: &ServerStats,
    cmd: Option<&cmdstorm::Report>,
) -> Value {
    let sum = |f: fn(&Outcome) -> u64| outs.iter().map(f).sum::<u64>();
    let ack = merge(outs, |o| &o.latency_us);
    let cmd_rt = merge(outs, |o| &o.cmd_rt_us);
    let cmd_deliver = merge(outs, |o| &o.cmd_deliver_us);
    let burst = merge(outs, |o| &o.burst_us);
    let reconnect = merge(outs, |o| &o.reconnect_us);
    // Each worker measures its own run window; throughput adds up across them.
    let per_s = |f: fn(&Outcome) -> u64| -> f64 {
        outs.iter()
            .filter(|o| o.run_s > 0.0)
            .map(|o| f(o) as f64 / o.run_s)
            .sum()
    };
    let setup_s = outs.iter().map(|o| o.setup_s).fold(0.0, f64::max);
    let connected = sum(|o| o.connected);
    let held = sum(|o| o.held);
    let mut errors = sum(|o| o.errors);
    let mut samples: Vec<String> = outs.iter().flat_map(|o| o.error_samples.clone()).collect();

    let mut j = json!({
        "scenario": if args.scenario == Scenario::RawSink { Scenario::RawSink } else { scenario },
        "protocol": args.protocol,
        "target": if sink { "raw-sink" } else { "fleetgate" },
        "devices": args.devices,
        "processes": outs.len(),
        "duration_s": args.duration,
        "window_s": round(s.window_s, 3),
        "rate": args.rate,
        "inflight": args.inflight,
        "connected": connected,
        "registered": sum(|o| o.registered),
        "held": held,
        "setup_s": round(setup_s, 3),
        "connects_per_s": if setup_s > 0.0 { json!((connected as f64 / setup_s).round()) } else { Value::Null },
        "msgs_per_s": per_s(|o| o.acked_in_run).round(),
        "records_per_s": per_s(|o| o.records_acked_in_run).round(),
        "sent": sum(|o| o.sent),
        "acked": sum(|o| o.acked),
        "nacked": sum(|o| o.nacked),
        "ack_p50_ms": q(&ack, 0.5),
        "ack_p99_ms": q(&ack, 0.99),
        "ack_p999_ms": q(&ack, 0.999),
        "ack_max_ms": q(&ack, 1.0),
        "heartbeats": sum(|o| o.heartbeats),
        "pongs": sum(|o| o.pongs),
        "provision_s": round(s.provision_s, 3),
        "server_rss_before_kib": s.rss_before_kib,
        "server_rss_ready_kib": s.rss_ready_kib,
        "server_rss_held_kib": s.rss_held_kib,
        "server_rss_peak_kib": s.rss_peak_kib,
        "server_rss_after_close_kib": s.rss_after_close_kib,
        "server_cpu_pct": s.cpu_pct,
        "harness_cpu_pct": s.harness_cpu_pct,
        "machine_cpu_pct": s.machine_cpu_pct,
        "other_cpu_pct": s.other_cpu_pct,
        "server_runq_wait_pct": s.runq_wait_pct,
        "loadavg_start": s.loadavg_start,
        "loadavg_end": s.loadavg_end,
    });
    let mut extra: Vec<(&'static str, Value)> = Vec::new();
    let mut put = |k: &'static str, v: Value| extra.push((k, v));
    if !s.fsync_us.is_empty() {
        let mut f = new_histogram();
        for &us in &s.fsync_us {
            f.saturating_record(us);
        }
        put("fsync_samples", json!(f.len()));
        put("fsync_p50_ms", q(&f, 0.5));
        put("fsync_p99_ms", q(&f, 0.99));
        put("fsync_max_ms", q(&f, 1.0));
    }
    if let (Some(before), Some(held_kib)) = (s.rss_before_kib, s.rss_held_kib)
        && held > 0
    {
        put(
            "rss_per_session_kib",
            json!(round(
                held_kib.saturating_sub(before) as f64 / held as f64,
                2
            )),
        );
    }
    match scenario {
        Scenario::AttendanceBurst => {
            put(
                "records_per_msg",
                json!(args.protocol.records_per_msg(args.records_per_msg)),
            );
            put("burst", json!(args.burst));
            put("burst_interval_s", json!(args.burst_interval));
            put("bursts_done", json!(sum(|o| o.bursts_done)));
            put("bursts_overrun", json!(sum(|o| o.bursts_overrun)));
            // Rounds: every device bursts at the same instants; a round lasts until the last
            // device's last ack. Records over round time is the drain rate while bursting.
            let mut rounds: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
            for o in outs {
                for &(start, end, records) in &o.rounds {
                    let r = rounds.entry(start).or_default();
                    r.0 = r.0.max(end);
                    r.1 += records;
                }
            }
            let mut round_ms = new_histogram();
            let (mut busy_ns, mut records) = (0u64, 0u64);
            for (start, (end, n)) in &rounds {
                if *end > *start {
                    busy_ns += end - start;
                    records += n;
                    round_ms.saturating_record((end - start) / 1000);
                }
            }
            let overrun = sum(|o| o.bursts_overrun);
            put("burst_rounds", json!(rounds.len()));
            // With overruns the server never caught up between bursts: it was draining all
            // window long, records_per_s is the drain rate, and rounds mean nothing.
            let drain = (busy_ns > 0 && overrun == 0)
                .then(|| (records as f64 / (busy_ns as f64 / 1e9)).round());
            put("burst_records_per_s", json!(drain));
            put("burst_round_p50_ms", q(&round_ms, 0.5));
            put("burst_round_max_ms", q(&round_ms, 1.0));
            put("burst_p50_ms", q(&burst, 0.5));
            put("burst_p99_ms", q(&burst, 0.99));
            put("burst_max_ms", q(&burst, 1.0));
        }
        Scenario::ReconnectStorm => {
            let dropped = sum(|o| o.dropped);
            let back = sum(|o| o.reconnected);
            let start = outs.iter().map(|o| o.run_start_ns).max().unwrap_or(0);
            let last = outs.iter().map(|o| o.reconnect_last_ns).max().unwrap_or(0);
            // Only a storm everyone came back from has a duration.
            let secs = (back == dropped && dropped > 0 && last >= start)
                .then(|| (last - start) as f64 / 1e9);
            put("dropped", json!(dropped));
            put("reconnected", json!(back));
            put("reconnect_retries", json!(sum(|o| o.reconnect_retries)));
            put("reconnect_s", json!(secs.map(|x| round(x, 3))));
            put(
                "reconnects_per_s",
                json!(secs.filter(|x| *x > 0.0).map(|x| (back as f64 / x).round())),
            );
            put("reconnect_p50_ms", q(&reconnect, 0.5));
            put("reconnect_p99_ms", q(&reconnect, 0.99));
            put("reconnect_max_ms", q(&reconnect, 1.0));
        }
        Scenario::CommandStorm => {
            let received = sum(|o| o.cmd_received);
            let confirmed = sum(|o| o.cmd_confirmed);
            put("cmd_received", json!(received));
            put("cmd_confirmed", json!(confirmed));
            put("cmd_p50_ms", q(&cmd_rt, 0.5));
            put("cmd_p99_ms", q(&cmd_rt, 0.99));
            put("cmd_p999_ms", q(&cmd_rt, 0.999));
            put("cmd_max_ms", q(&cmd_rt, 1.0));
            put("cmd_deliver_p50_ms", q(&cmd_deliver, 0.5));
            put("cmd_deliver_p99_ms", q(&cmd_deliver, 0.99));
            put("cmd_deliver_p999_ms", q(&cmd_deliver, 0.999));
            if let Some(c) = cmd {
                let empty = new_histogram();
                let api = c.api.as_ref().unwrap_or(&empty);
                let status = c.status.as_ref().unwrap_or(&empty);
                // Accepted by the API but never seen by any device: lost.
                let lost = c.accepted.saturating_sub(received);
                put("cmd_posted", json!(c.posted));
                put("cmd_accepted", json!(c.accepted));
                put("cmd_api_errors", json!(c.api_errors));
                put("cmd_lost", json!(lost));
                put("cmd_late", json!(c.late));
                put("cmd_after_window", json!(c.after_window));
                put(
                    "cmd_per_s",
                    json!(if s.window_s > 0.0 {
                        (c.accepted as f64 / s.window_s).round()
                    } else {
                        0.0
                    }),
                );
                put("cmd_api_p50_ms", q(api, 0.5));
                put("cmd_api_p99_ms", q(api, 0.99));
                put("cmd_status_sampled", json!(c.status_sampled));
                put("cmd_status_failed", json!(c.status_failed));
                put("cmd_status_p50_ms", q(status, 0.5));
                put("cmd_status_p99_ms", q(status, 0.99));
                put("cmd_status_max_ms", q(status, 1.0));
                errors += c.api_errors + lost + c.status_failed;
                samples.extend(c.error_samples.iter().cloned());
            }
        }
        _ => {}
    }
    samples.truncate(5);
    put("errors", json!(errors));
    put("error_samples", json!(samples));
    if let Value::Object(m) = &mut j {
        for (k, v) in extra {
            m.insert(k.to_string(), v);
        }
    }
    j
}

/// Figures of a run that a ratio to the sink's means something for: throughput, latency, the
/// server's CPU and memory, the storms' durations.
const COMPARED: &[&str] = &[
    "msgs_per_s",
    "records_per_s",
    "burst_records_per_s",
    "connects_per_s",
    "ack_p50_ms",
    "ack_p99_ms",
    "ack_p999_ms",
    "burst_p99_ms",
    "cmd_p50_ms",
    "cmd_p99_ms",
    "cmd_deliver_p99_ms",
    "reconnect_s",
    "reconnect_p99_ms",
    "server_cpu_pct",
    "server_rss_peak_kib",
    "rss_per_session_kib",
];

/// `--compare`: both reports and, for each figure in `COMPARED` that both runs have and the
/// sink's is not zero, server ÷ sink.
pub fn compare(server: Value, sink: Value) -> Value {
    let mut ratios = serde_json::Map::new();
    for &k in COMPARED {
        if let (Some(a), Some(b)) = (
            server.get(k).and_then(Value::as_f64),
            sink.get(k).and_then(Value::as_f64),
        ) && b != 0.0
        {
            ratios.insert(k.to_string(), json!(round(a / b, 3)));
        }
    }
    let errors = [&server, &sink]
        .iter()
        .filter_map(|r| r.get("errors").and_then(Value::as_u64))
        .sum::<u64>();
    json!({
        "scenario": server.get("scenario"),
        "compare": true,
        "errors": errors,
        "fleetgate": server,
        "raw_sink": sink,
        "ratio_to_sink": ratios,
    })
}

/// Prints a report: one line with `--json`, pretty-printed otherwise.
pub fn emit(args: &Args, j: &Value) {
    if args.json {
        println!("{j}");
    } else {
        match serde_json::to_string_pretty(j) {
            Ok(t) => println!("{t}"),
            Err(_) => println!("{j}"),
        }
    }
}
