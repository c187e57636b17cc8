//! `/metrics` as Prometheus meets it: Debian's `promtool check metrics` finds nothing to fix in the
//! exposition, and Debian's `prometheus`, scraping with the admin token in its scrape config,
//! reports the target up and answers queries with the server's figures; a scrape job with a wrong
//! token is refused. (.ci/run and the README install the `prometheus` package.)

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const SENT: usize = 50;

/// Debian's prometheus on a free loopback port with a temporary TSDB; stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Prometheus {
        // A free port, chosen by the kernel and released for prometheus to bind.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let dir = std::env::temp_dir().join(format!("fleetgate-prometheus-{}", random_u64()));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n\
                 - job_name: fleetgate\n  authorization: {{type: Bearer, credentials: \"{token}\"}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n\
                 - job_name: wrong-token\n  authorization: {{type: Bearer, credentials: \"not-the-admin-token-0000\"}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (apt-get install prometheus)");
        Prometheus { child, addr, dir }
    }

    /// GET on prometheus's HTTP API; None until it answers.
    fn api(&self, path: &str) -> Option<Value> {
        let c = fleetgate::client::Client::new(&format!("http://{}", self.addr))
            .ok()?
            .with_timeout(Duration::from_secs(5));
        let r = c.get(path).ok()?;
        (r.status == 200).then(|| parse(&r.body))
    }

    /// The target of `job` once it has been scraped: (health, lastError).
    fn target(&self, job: &str) -> Option<(String, String)> {
        let v = self.api("/api/v1/targets")?;
        arr(field(&v, "data"), "activeTargets")
            .iter()
            .find(|t| s(field(t, "labels"), "job") == job)
            .filter(|t| s(t, "health") != "unknown")
            .map(|t| (s(t, "health").to_string(), s(t, "lastError").to_string()))
    }

    /// The value of an instant query that yields one series.
    fn value(&self, query: &str) -> Option<f64> {
        let v = self.api(&format!("/api/v1/query?query={query}"))?;
        let result = arr(field(&v, "data"), "result");
        let series = result.first()?;
        series
            .get("value")?
            .as_array()?
            .get(1)?
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stores SENT telemetry records, so counters, gauges and histograms all have samples.
fn some_traffic(srv: &Server) {
    let dev = srv.create_device("scraped");
    let mut ws = srv.device_session(&dev);
    for i in 0..SENT {
        ws.send_text(&enc(
            &json!({"type": "telemetry", "msg_id": format!("m{i}"), "payload": {"seq": i}}),
        ));
        assert_eq!(opt_s(&ws.recv_json(SOON), "type"), Some("ack"));
    }
}

#[test]
fn promtool_finds_nothing_to_fix_in_the_exposition() {
    let srv = Server::start("epoll");
    some_traffic(&srv);
    // The monitor's gauges appear within a second of start; wait for them to be in.
    wait_until(SOON, "the store gauges", || {
        metric(&srv, "fleetgate_process_resident_bytes") > 0.0
    });
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = String::from_utf8_lossy(&r.body).into_owned();
    for help in [
        "# HELP fleetgate_messages_total",
        "# TYPE fleetgate_batch_commit_seconds histogram",
        "# HELP fleetgate_store_family_sst_bytes",
    ] {
        assert!(body.contains(help), "{help} in:\n{body}");
    }
    // Records, not seconds: a one-record batch lands in the first bucket, not only in +Inf.
    assert!(
        metric(&srv, "fleetgate_batch_records_bucket{le=\"1\"}") >= 1.0,
        "{body}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

#[test]
fn prometheus_scrapes_with_the_admin_token() {
    let srv = Server::start("epoll");
    some_traffic(&srv);
    let prom = Prometheus::start(srv.addr(), srv.admin_token());

    let deadline = Duration::from_secs(60);
    wait_until(deadline, "prometheus reports the fleetgate target", || {
        prom.target("fleetgate").is_some()
    });
    let (health, error) = prom.target("fleetgate").expect("target");
    assert_eq!(health, "up", "last scrape error: {error}");

    wait_until(deadline, "the scraped telemetry count", || {
        prom.value("fleetgate_messages_total%7Btype%3D%22telemetry%22%7D")
            .is_some_and(|v| v >= SENT as f64)
    });
    wait_until(deadline, "the scraped device count", || {
        prom.value("fleetgate_devices") == Some(1.0)
    });

    wait_until(
        deadline,
        "prometheus reports the wrong-token target",
        || prom.target("wrong-token").is_some(),
    );
    let (health, error) = prom.target("wrong-token").expect("target");
    assert_eq!(health, "down");
    assert!(error.contains("401") || error.contains("403"), "{error}");
}
