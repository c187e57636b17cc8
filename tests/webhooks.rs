//! Webhooks end to end: the real binary delivering to a receiver that verifies every signature
//! with the Python Standard Webhooks library (`tests/clients/webhook_receiver.py`), through a
//! receiver outage and a kill -9 of fleetgate mid-retry; the endpoints' API (validation, admins
//! only, secret rotation, replay, the delivery log); and the ERPNext preset against a stand-in
//! for ERPNext's check-in method.
//!
//! Requirements: `python3` with `standardwebhooks` (`pip install -r
//! tests/clients/requirements.txt`; `.ci/run` does it). Missing either is a test FAILURE.
//!
//! Rules as in the other suites: every wait is bounded, state is polled, durations are never
//! asserted.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetgate::client::Client;

const LONG: Duration = Duration::from_secs(60);

/// The receiver process, killed when dropped.
struct Receiver {
    child: Child,
}

impl Receiver {
    fn start(port: u16, out: &Path, mode: &[&str]) -> Receiver {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(out)
            .args(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the webhook receiver");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the receiver starts");
        assert_eq!(
            line.trim(),
            "listening",
            "the receiver did not start (is `standardwebhooks` installed? pip install -r tests/clients/requirements.txt)"
        );
        Receiver { child }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The receiver's lines so far.
fn received(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| parse(l.as_bytes()))
        .collect()
}

fn http_device(srv: &Server, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": "http", "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

/// Sends punches `enrollids` at `minute` through `/api/device-http`; asserts they are stored.
fn punch(srv: &Server, serial: &str, enrollids: &[u64], minute: u32) {
    let records: Vec<Value> = enrollids
        .iter()
        .map(|e| json!({"enrollid": *e, "time": format!("2026-06-12 09:{minute:02}:00"), "inout": e % 2}))
        .collect();
    let body = enc(&json!({"cmd": "sendlog", "sn": serial, "record": records}));
    let r = srv
        .anonymous()
        .post_json("/api/device-http", body.as_bytes())
        .expect("sendlog");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = parse(&r.body);
    assert_eq!(field(&v, "result").as_bool(), Some(true), "{}", enc(&v));
}

fn create_endpoint(srv: &Server, body: Value) -> Value {
    let r = srv.post("/api/webhooks", &body);
    assert_eq!(
        r.status,
        201,
        "POST /api/webhooks {}: {}",
        enc(&body),
        r.text()
    );
    r.json()
}

/// The punches the receiver has (verified), by (enrollid, local time), with the ids they came
/// under: every delivery of one punch must carry the same webhook id.
fn punches(out: &Path) -> BTreeMap<(u64, String), BTreeSet<String>> {
    let mut m: BTreeMap<(u64, String), BTreeSet<String>> = BTreeMap::new();
    for l in received(out) {
        assert!(
            l.get("bad").is_none(),
            "a delivery failed verification: {}",
            enc(&l)
        );
        if s(&l, "type") == "attendance.punch" {
            let d = field(&l, "data");
            m.entry((u(d, "enrollid"), s(d, "local_time").to_string()))
                .or_default()
                .insert(s(&l, "webhook_id").to_string());
        }
    }
    m
}

#[test]
fn every_committed_punch_reaches_the_receiver_through_an_outage_and_a_kill9() {
    let mut srv = Server::start_with(
        "uring",
        &["--webhooks-allow-private", "--webhooks-retry-min-ms", "200"],
    );
    let port = free_port();
    let out = srv.test_dir().join("received.ndjson");
    let ep = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["attendance", "device_status", "command_results"]}),
    );
    let secret = s(&ep, "secret").to_string();
    assert!(secret.starts_with("whsec_"), "{}", enc(&ep));
    let id = s(&ep, "id").to_string();
    let receiver = Receiver::start(port, &out, &["--secret", &secret]);

    let serial = "HOOK-1";
    http_device(&srv, serial);
    punch(&srv, serial, &[1, 2, 3], 0);
    wait_until(LONG, "the first punches delivered", || {
        punches(&out).len() == 3
    });
    // A person's name rides on their punches.
    let r = srv.post(
        "/api/people",
        &json!({"pin": 4, "name": "Ann", "external_id": "EMP-4"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // The receiver goes down; punches keep being acknowledged (so committed) meanwhile.
    drop(receiver);
    punch(&srv, serial, &[4, 5], 1);
    punch(&srv, serial, &[6, 7], 2);
    wait_until(LONG, "failed attempts in the delivery log", || {
        let log = srv
            .get(&format!("/api/webhooks/{id}/deliveries?limit=100"))
            .json();
        arr(&log, "items")
            .iter()
            .any(|d| field(d, "status").is_null() && !field(d, "error").is_null())
    });
    let ep = srv.get(&format!("/api/webhooks/{id}")).json();
    assert!(u(field(&ep, "delivery"), "failures") > 0, "{}", enc(&ep));

    // fleetgate is killed mid-retry, and comes back; so does the receiver.
    srv.kill9();
    srv.start_again();
    let _receiver = Receiver::start(port, &out, &["--secret", &secret]);
    punch(&srv, serial, &[8], 3);
    let want: BTreeSet<(u64, String)> = [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 1),
        (5, 1),
        (6, 2),
        (7, 2),
        (8, 3),
    ]
    .into_iter()
    .map(|(e, m)| (e, format!("2026-06-12 09:{m:02}:00")))
    .collect();
    wait_until(LONG, "every committed punch delivered", || {
        punches(&out).keys().cloned().collect::<BTreeSet<_>>() == want
    });
    for (punch, ids) in punches(&out) {
        assert_eq!(ids.len(), 1, "{punch:?} came under several ids: {ids:?}");
    }
    let ann = received(&out)
        .into_iter()
        .find(|l| {
            l.get("type").is_some()
                && s(l, "type") == "attendance.punch"
                && u(field(l, "data"), "enrollid") == 4
        })
        .expect("PIN 4's punch");
    assert_eq!(
        s(field(field(&ann, "data"), "person"), "external_id"),
        "EMP-4"
    );
    // Device status is delivered too (the HTTP device came online), and the log names each try.
    assert!(
        received(&out)
            .iter()
            .any(|l| l.get("type").is_some() && s(l, "type") == "device.online")
    );
    let log = srv
        .get(&format!("/api/webhooks/{id}/deliveries?limit=500"))
        .json();
    assert!(
        arr(&log, "items")
            .iter()
            .any(|d| field(d, "status").as_u64() == Some(204))
    );
}

#[test]
fn endpoints_are_checked_admins_only_rotated_and_replayed() {
    let srv = Server::start_with("epoll", &["--webhooks-retry-min-ms", "200"]);
    for (body, says) in [
        (json!({"events": ["attendance"]}), "`url` is required"),
        (
            json!({"url": "ftp://x", "events": ["attendance"]}),
            "http:// or https://",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["attendance"]}),
            "--webhooks-allow-private",
        ),
        (
            json!({"url": "http://localhost/", "events": ["attendance"]}),
            "--webhooks-allow-private",
        ),
        (
            json!({"url": "https://hr.example.com/", "events": []}),
            "`events` must be",
        ),
        (
            json!({"url": "https://hr.example.com/", "events": ["everything"]}),
            "`events` must be",
        ),
        (
            json!({"url": "https://hr.example.com/", "events": ["attendance"], "color": 1}),
            "unknown field `color`",
        ),
        (
            json!({"url": "https://hr.example.com/", "preset": "erpnext"}),
            "`erpnext` is required",
        ),
        (
            json!({"url": "https://hr.example.com/", "preset": "erpnext", "erpnext": {"api_key": "k", "api_secret": "s"}, "events": ["events"]}),
            "punches only",
        ),
    ] {
        let r = srv.post("/api/webhooks", &body);
        assert_eq!(r.status, 400, "{}: {}", enc(&body), r.text());
        assert!(r.text().contains(says), "{}: {}", enc(&body), r.text());
    }
    let ep = create_endpoint(
        &srv,
        json!({"url": "https://hr.example.com/in", "events": ["attendance"], "description": "HR"}),
    );
    let id = s(&ep, "id").to_string();
    let first = s(&ep, "secret").to_string();
    let listed = srv.get("/api/webhooks").json();
    assert!(
        !enc(&listed).contains(&first),
        "a secret is shown once: {}",
        enc(&listed)
    );

    // A viewer sees nothing of webhooks.
    let r = srv.post("/api/tokens", &json!({"name": "ro", "role": "viewer"}));
    let viewer = Client::new(&srv.url())
        .unwrap()
        .with_token(s(&r.json(), "token"));
    assert_eq!(viewer.get("/api/webhooks").unwrap().status, 403);

    let r = srv.post(&format!("/api/webhooks/{id}/rotate-secret"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let second = s(&r.json(), "secret").to_string();
    assert!(second.starts_with("whsec_") && second != first);
    let r = srv.patch(
        &format!("/api/webhooks/{id}"),
        &json!({"enabled": false, "description": null}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(field(&r.json(), "enabled").as_bool(), Some(false));
    assert!(field(&r.json(), "description").is_null());
    let r = srv.post(
        &format!("/api/webhooks/{id}/replay"),
        &json!({"from": "yesterday"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(srv.delete(&format!("/api/webhooks/{id}")).status, 200);
    assert_eq!(srv.get(&format!("/api/webhooks/{id}")).status, 404);
}

#[test]
fn a_replay_delivers_again_under_the_same_ids_and_a_rotation_signs_with_both_secrets() {
    let srv = Server::start_with(
        "uring",
        &["--webhooks-allow-private", "--webhooks-retry-min-ms", "200"],
    );
    let port = free_port();
    let out = srv.test_dir().join("replayed.ndjson");
    let ep = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port}/"), "events": ["attendance"]}),
    );
    let id = s(&ep, "id").to_string();
    let old = s(&ep, "secret").to_string();
    let receiver = Receiver::start(port, &out, &["--secret", &old]);
    http_device(&srv, "HOOK-2");
    punch(&srv, "HOOK-2", &[1, 2], 0);
    wait_until(LONG, "two punches", || punches(&out).len() == 2);
    let ids: BTreeSet<String> = punches(&out).into_values().flatten().collect();

    let r = srv.post(
        &format!("/api/webhooks/{id}/replay"),
        &json!({"from": "2000-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until(LONG, "the replay", || received(&out).len() >= 4);
    let again: BTreeSet<String> = punches(&out).into_values().flatten().collect();
    assert_eq!(again, ids, "a replay repeats the same webhook ids");

    // After a rotation a receiver still on the old secret verifies (the old one signs for a day),
    // and one on the new secret does too.
    let r = srv.post(&format!("/api/webhooks/{id}/rotate-secret"), &json!({}));
    let new = s(&r.json(), "secret").to_string();
    punch(&srv, "HOOK-2", &[3], 1);
    wait_until(LONG, "a punch after the rotation, old secret", || {
        punches(&out).len() == 3
    });
    drop(receiver);
    let _receiver = Receiver::start(port, &out, &["--secret", &new]);
    punch(&srv, "HOOK-2", &[4], 2);
    wait_until(LONG, "a punch after the rotation, new secret", || {
        punches(&out).len() == 4
    });
}

#[test]
fn the_erpnext_preset_posts_each_punch_as_an_employee_checkin() {
    let srv = Server::start_with(
        "uring",
        &["--webhooks-allow-private", "--webhooks-retry-min-ms", "200"],
    );
    let port = free_port();
    let out = srv.test_dir().join("erpnext.ndjson");
    let _erp = Receiver::start(port, &out, &["--erpnext", "key1:secret1"]);
    let ep = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port}"), "preset": "erpnext",
               "erpnext": {"api_key": "key1", "api_secret": "secret1"}}),
    );
    assert!(ep.get("secret").is_none(), "{}", enc(&ep));
    let id = s(&ep, "id").to_string();
    http_device(&srv, "ERP-1");
    punch(&srv, "ERP-1", &[7, 8], 0);
    let checkins = || -> Vec<Value> {
        received(&out)
            .into_iter()
            .map(|l| {
                assert!(l.get("bad").is_none(), "{}", enc(&l));
                field(&l, "checkin").clone()
            })
            .collect()
    };
    wait_until(LONG, "two check-ins", || checkins().len() == 2);
    let mut got: Vec<(String, String, String, String)> = checkins()
        .iter()
        .map(|c| {
            (
                s(c, "employee_field_value").to_string(),
                s(c, "timestamp").to_string(),
                s(c, "log_type").to_string(),
                s(c, "device_id").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "7".into(),
                "2026-06-12 09:00:00".into(),
                "OUT".into(),
                "ERP-1".into()
            ),
            (
                "8".into(),
                "2026-06-12 09:00:00".into(),
                "IN".into(),
                "ERP-1".into()
            ),
        ]
    );
    assert_eq!(
        s(&checkins()[0], "employee_fieldname"),
        "attendance_device_id"
    );
    // A replay posts them again; ERPNext answers that it has them, which counts as delivered.
    let r = srv.post(
        &format!("/api/webhooks/{id}/replay"),
        &json!({"from": "2000-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 202);
    wait_until(
        LONG,
        "the duplicates answered and counted delivered",
        || {
            let log = srv
                .get(&format!("/api/webhooks/{id}/deliveries?limit=50"))
                .json();
            arr(&log, "items")
                .iter()
                .filter(|d| field(d, "status").as_u64() == Some(417))
                .count()
                == 2
        },
    );
    let ep = srv.get(&format!("/api/webhooks/{id}")).json();
    assert_eq!(u(field(&ep, "delivery"), "failures"), 0, "{}", enc(&ep));
    assert_eq!(checkins().len(), 2, "no check-in twice");
}

#[test]
fn telemetry_events_and_command_results_reach_the_receiver() {
    let srv = Server::start_with(
        "uring",
        &["--webhooks-allow-private", "--webhooks-retry-min-ms", "200"],
    );
    let port = free_port();
    let out = srv.test_dir().join("generic.ndjson");
    let ep = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port}/"),
               "events": ["telemetry", "events", "command_results", "device_status"]}),
    );
    let _receiver = Receiver::start(port, &out, &["--secret", s(&ep, "secret")]);
    let dev = srv.create_device("sensor");
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type": "telemetry", "msg_id": "t1", "payload": {"temperature": 21.5}}));
    ws.send_json(&json!({"type": "event", "event_type": "door_open", "payload": {"door": 2}}));
    let cid = srv.send_command(&dev.id, "unlock", json!({"door": 1}));
    let cmd = ws.recv_type("command", Duration::from_secs(20));
    assert_eq!(s(&cmd, "command_id"), cid);
    ws.send_json(&json!({"type": "command_result", "command_id": cid.as_str(), "status": "ok", "payload": {"opened": true}}));
    let of = |t: &str| -> Vec<Value> {
        received(&out)
            .into_iter()
            .filter(|l| {
                assert!(l.get("bad").is_none(), "{}", enc(l));
                s(l, "type") == t
            })
            .map(|l| field(&l, "data").clone())
            .collect()
    };
    wait_until(LONG, "each kind delivered", || {
        !of("telemetry").is_empty()
            && !of("device.event").is_empty()
            && !of("command.result").is_empty()
            && !of("device.online").is_empty()
    });
    let t = &of("telemetry")[0];
    assert_eq!(s(t, "device_id"), dev.id);
    assert_eq!(enc(field(t, "payload")), r#"{"temperature":21.5}"#);
    let e = &of("device.event")[0];
    assert_eq!(
        (s(e, "type"), s(e, "device_id")),
        ("door_open", dev.id.as_str())
    );
    let c = &of("command.result")[0];
    assert_eq!(
        (s(c, "command_id"), s(c, "status")),
        (cid.as_str(), "acked")
    );
    assert_eq!(enc(field(c, "result")), r#"{"opened":true}"#);
}

#[test]
fn a_new_endpoint_is_told_only_what_is_stored_after_it_even_across_a_restart() {
    let mut srv = Server::start_with(
        "epoll",
        &["--webhooks-allow-private", "--webhooks-retry-min-ms", "200"],
    );
    let (port_a, port_b) = (free_port(), free_port());
    let (out_a, out_b) = (
        srv.test_dir().join("a.ndjson"),
        srv.test_dir().join("b.ndjson"),
    );
    let a = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port_a}/"), "events": ["attendance"]}),
    );
    let _ra = Receiver::start(port_a, &out_a, &["--secret", s(&a, "secret")]);
    http_device(&srv, "HOOK-3");
    punch(&srv, "HOOK-3", &[1, 2], 0);
    wait_until(LONG, "A has the first punches", || {
        punches(&out_a).len() == 2
    });
    let b = create_endpoint(
        &srv,
        json!({"url": format!("http://127.0.0.1:{port_b}/"), "events": ["attendance"]}),
    );
    let _rb = Receiver::start(port_b, &out_b, &["--secret", s(&b, "secret")]);
    srv.kill9();
    srv.start_again();
    punch(&srv, "HOOK-3", &[3], 1);
    wait_until(LONG, "both have the new punch", || {
        punches(&out_a).len() == 3 && !punches(&out_b).is_empty()
    });
    let b_got: Vec<u64> = punches(&out_b).keys().map(|(e, _)| *e).collect();
    assert_eq!(b_got, [3], "B existed only from punch 3 on");
}
