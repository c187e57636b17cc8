//! Cluster mode (issue 14) on loopback: nodes on 127.0.0.11–13 joined through Debian's
//! `nats-server` with JetStream on 127.0.0.20, started and stopped by the tests.
//!
//! The export: every committed telemetry record, event, punch and command result reaches the
//! `FLEETGATE_RECORDS` stream at least once, in order per device, under the record's outbox id; a
//! node keeps acknowledging while NATS is away, shows the lag, and drains when it returns.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::nats::{Nats, Published};
use common::*;

const STREAM: &str = "FLEETGATE_RECORDS";

/// A node of the cluster, once it has joined (its buckets and streams are set up).
fn node(host: &str, nats: &Nats, id: &str) -> Server {
    let srv = Server::start_at("epoll", host, &["--nats", &nats.url(), "--node-id", id]);
    wait_joined(&srv);
    srv
}

fn wait_joined(srv: &Server) {
    wait_until(
        Duration::from_secs(20),
        "the node joins the cluster",
        || {
            let h = health(srv);
            opt_s(&h, "cluster") == Some("ready") && opt_s(&h, "nats") == Some("connected")
        },
    );
}

fn health(srv: &Server) -> Value {
    let r = srv.anonymous().get("/healthz").expect("GET /healthz");
    assert_eq!(r.status, 200);
    parse(&r.body)
}

/// Sends telemetry `{prefix}{n}` for `n` in `range` with a window in flight, and waits for every
/// ack (an ack means the record is durable on the node).
fn send_acked(ws: &mut Ws, prefix: &str, range: std::ops::Range<u32>) {
    let mut waiting = 0;
    for n in range {
        ws.send_json(
            &json!({"type":"telemetry","msg_id": format!("{prefix}{n}"),"payload":{"n": n}}),
        );
        waiting += 1;
        if waiting == 32 {
            ws.recv_type("ack", SOON);
            waiting -= 1;
        }
    }
    for _ in 0..waiting {
        ws.recv_type("ack", SOON);
    }
}

fn wait_drained(srv: &Server) {
    wait_until(Duration::from_secs(20), "the export drains", || {
        let h = health(srv);
        opt_s(&h, "nats") == Some("connected") && u(&h, "export_lag") == 0
    });
}

/// The msg_ids of a device's exported telemetry, in stream order.
fn telemetry_ids(all: &[Published], device: &str) -> Vec<String> {
    let subject = format!("fleetgate.records.telemetry.{device}");
    all.iter()
        .filter(|m| m.subject == subject)
        .map(|m| {
            assert_eq!(s(&m.body, "type"), "telemetry", "{m:?}");
            let data = field(&m.body, "data");
            assert_eq!(s(data, "device_id"), device, "{m:?}");
            s(data, "msg_id").to_string()
        })
        .collect()
}

fn expected(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

/// No message id twice in the stream: a re-publish was dropped by JetStream's duplicate window.
fn assert_ids_unique(all: &[Published]) {
    let mut seen = HashMap::new();
    for m in all {
        assert!(!m.msg_id.is_empty(), "no Nats-Msg-Id: {m:?}");
        if let Some(first) = seen.insert(m.msg_id.clone(), m.subject.clone()) {
            panic!("{} published twice ({first})", m.msg_id);
        }
    }
}

#[test]
fn the_export_publishes_every_record_once_in_order_per_device() {
    let nats = Nats::start("127.0.0.20");
    let srv = node("127.0.0.11", &nats, "n1");
    let (a, b) = (srv.create_device("a"), srv.create_device("b"));
    let (mut wa, mut wb) = (srv.device_session(&a), srv.device_session(&b));
    for round in 0..4 {
        send_acked(&mut wa, "a", round * 25..(round + 1) * 25);
        send_acked(&mut wb, "b", round * 25..(round + 1) * 25);
    }
    wa.send_json(
        &json!({"type":"event","event_type":"door_opened","msg_id":"e1","payload":{"door":1}}),
    );
    wa.recv_type("ack", SOON);
    // A command's result is exported too.
    let cmd = srv.send_command(&a.id, "reboot", json!({}));
    let got = wa.recv_type("command", SOON);
    assert_eq!(s(&got, "command_id"), cmd);
    wa.send_json(
        &json!({"type":"command_result","command_id": cmd.as_str(),"status":"ok","payload":{}}),
    );
    srv.wait_command_status(&a.id, &cmd, "acked");
    wait_drained(&srv);

    let all = nats.stream_messages(STREAM);
    assert_eq!(telemetry_ids(&all, &a.id), expected("a", 0..100));
    assert_eq!(telemetry_ids(&all, &b.id), expected("b", 0..100));
    assert_ids_unique(&all);
    // A record with a msg_id is named by it (so two nodes storing it make one message); the
    // command's result, which has none, by this node's outbox.
    let named_by = |part: &str, prefix: &[&str]| {
        all.iter()
            .filter(|m| m.subject.contains(part))
            .all(|m| prefix.iter().any(|p| m.msg_id.starts_with(p)))
    };
    let devices = [format!("{}-", a.id), format!("{}-", b.id)];
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    assert!(
        named_by(".telemetry.", &devices),
        "telemetry named by device and msg_id"
    );
    assert!(
        named_by(".events.", &devices),
        "events named by device and msg_id"
    );
    assert!(
        named_by(".command_results.", &["n1-"]),
        "results named by the node"
    );
    let event = all
        .iter()
        .find(|m| m.subject == format!("fleetgate.records.events.{}", a.id))
        .expect("the event was exported");
    assert_eq!(s(&event.body, "type"), "device.event", "{event:?}");
    let result = all
        .iter()
        .find(|m| m.subject == format!("fleetgate.records.command_results.{}", a.id))
        .expect("the command's result was exported");
    assert_eq!(s(field(&result.body, "data"), "command_id"), cmd);
    assert!(metric(&srv, "fleetgate_export_published_total") >= 202.0);
}

#[test]
fn with_nats_away_a_node_keeps_acking_and_the_export_drains_when_it_returns() {
    let mut nats = Nats::start("127.0.0.20");
    let mut srv = node("127.0.0.11", &nats, "n1");
    let dev = srv.create_device("d");
    let mut ws = srv.device_session(&dev);
    send_acked(&mut ws, "t", 0..50);
    wait_drained(&srv);

    nats.kill();
    wait_until(Duration::from_secs(10), "the node sees NATS gone", || {
        opt_s(&health(&srv), "nats") == Some("disconnected")
    });
    // Devices are still acknowledged: the node's own commit is the ack point.
    send_acked(&mut ws, "t", 50..350);
    let h = health(&srv);
    assert_eq!(u(&h, "export_lag"), 300, "{}", enc(&h));
    wait_until(Duration::from_secs(5), "the lag gauge shows it", || {
        metric(&srv, "fleetgate_export_lag_records") == 300.0
    });

    nats.start_again();
    wait_drained(&srv);
    let all = nats.stream_messages(STREAM);
    assert_eq!(telemetry_ids(&all, &dev.id), expected("t", 0..350));
    assert_ids_unique(&all);

    // A node killed while it publishes: on restart it publishes from its cursor again, and
    // JetStream drops what it already holds; nothing acknowledged is missing.
    send_acked(&mut ws, "t", 350..1350);
    srv.kill9();
    srv.start_again();
    wait_joined(&srv);
    wait_drained(&srv);
    let all = nats.stream_messages(STREAM);
    assert_eq!(telemetry_ids(&all, &dev.id), expected("t", 0..1350));
    assert_ids_unique(&all);
}

#[test]
fn joining_a_cluster_needs_a_node_id_and_usable_addresses() {
    let bin = env!("CARGO_BIN_EXE_fleetgate");
    let dir = unique_dir("cluster-args");
    for (args, says) in [
        (vec!["--nats", "nats://127.0.0.20:4222"], "--node-id"),
        (
            vec!["--nats", "nats://127.0.0.20:4222", "--node-id", "a.b"],
            "--node-id",
        ),
        (
            vec!["--nats", "nats://127.0.0.20:notaport", "--node-id", "n1"],
            "--nats",
        ),
    ] {
        let out = Command::new(bin)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(&args)
            .env("FLEETGATE_ADMIN_TOKEN", "adm_0123456789abcdef")
            .output()
            .expect("run fleetgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until `srv` knows the device `id` (the registry reached it).
fn wait_known(srv: &Server, id: &str) {
    wait_get(
        srv,
        &format!("/api/devices/{id}"),
        200,
        "the node knows the device",
    );
}

/// Waits until `srv` answers `GET path` with `status`.
fn wait_get(srv: &Server, path: &str, status: u16, what: &str) -> Resp {
    let mut last = None;
    wait_until(Duration::from_secs(10), what, || {
        let r = srv.get(path);
        let done = r.status == status;
        last = Some(r);
        done
    });
    last.expect("answered")
}

#[test]
fn the_registry_is_one_across_nodes_and_a_node_that_was_away_catches_up() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let mut n2 = node("127.0.0.12", &nats, "n2");

    // Created through n1, known to n2: its token works there.
    let dev = n1.create_device("made-on-n1");
    let path = format!("/api/devices/{}", dev.id);
    wait_get(&n2, &path, 200, "n2 knows the device");
    let mut ws = n2.device_session(&dev);
    ws.ping_pong();

    // Renamed through n1: n2 shows the new name.
    let r = n1.patch(&path, &json!({"name":"renamed"}));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(Duration::from_secs(10), "n2 shows the new name", || {
        s(&n2.get(&path).json(), "name") == "renamed"
    });

    // Its token rotated through n1: the session on n2 is closed and the old token refused there.
    let r = n1.post(&format!("{path}/token"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let new_token = s(&r.json(), "token").to_string();
    assert_eq!(ws.expect_close(SOON), Some(1008));
    let mut again = n2.ws();
    again.send_json(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    );
    assert_eq!(
        s(&again.recv_json(SOON), "type"),
        "error",
        "the old token is refused on n2"
    );
    let rotated = Device {
        token: new_token,
        ..dev
    };
    n2.device_session(&rotated).ping_pong();

    // A serial is one device in the whole cluster.
    let r = n1.post(
        "/api/devices",
        &json!({"name":"t1","serial":"SN-CLUSTER-1","protocol":"aiface"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r2 = n2.post(
        "/api/devices",
        &json!({"name":"t2","serial":"SN-CLUSTER-1","protocol":"aiface"}),
    );
    assert_eq!(r2.status, 409, "{}", r2.text());

    // n2 away: a device created and one deleted meanwhile; n2 catches up when it returns.
    let doomed = n1.create_device("doomed");
    wait_get(
        &n2,
        &format!("/api/devices/{}", doomed.id),
        200,
        "n2 knows doomed",
    );
    n2.kill9();
    let while_away = n1.create_device("while-away");
    let r = n1.delete(&format!("/api/devices/{}", doomed.id));
    assert_eq!(r.status, 200, "{}", r.text());
    n2.start_again();
    wait_joined(&n2);
    wait_get(
        &n2,
        &format!("/api/devices/{}", while_away.id),
        200,
        "n2 caught up on the new device",
    );
    wait_get(
        &n2,
        &format!("/api/devices/{}", doomed.id),
        404,
        "n2 caught up on the deletion",
    );
}

#[test]
fn with_nats_away_registry_changes_and_commands_answer_503_and_devices_still_store() {
    let mut nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let dev = n1.create_device("d");
    let mut ws = n1.device_session(&dev);
    nats.kill();
    wait_until(Duration::from_secs(10), "n1 sees NATS gone", || {
        opt_s(&health(&n1), "nats") == Some("disconnected")
    });
    let r = n1.post("/api/devices", &json!({"name":"nope"}));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(error_code(&r.json()), "cluster_unavailable");
    let r = n1.post(
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"command":"reboot"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(error_code(&r.json()), "cluster_unavailable");
    let r = n1.delete(&format!("/api/devices/{}", dev.id));
    assert_eq!(r.status, 503, "{}", r.text());
    // The device still stores and is acknowledged, and can still register.
    send_acked(&mut ws, "x", 0..20);
    n1.device_session(&dev).ping_pong();
    assert_eq!(n1.telemetry(&dev.id).len(), 20);
}

#[test]
fn a_command_posted_on_one_node_reaches_the_device_on_another_in_order() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let dev = n1.create_device("d");
    wait_known(&n2, &dev.id);
    let mut ws = n2.device_session(&dev);
    let ids: Vec<String> = (0..5)
        .map(|n| n1.send_command(&dev.id, "set", json!({ "n": n })))
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let c = ws.recv_type("command", SOON);
        assert_eq!(s(&c, "command_id"), id, "command {n} arrives in order");
        ws.send_json(&json!({"type":"command_result","command_id": id.as_str(),"status":"ok","payload":{"n": n}}));
    }
    // Each reads acked on both nodes.
    for id in &ids {
        n2.wait_command_status(&dev.id, id, "acked");
        n1.wait_command_status(&dev.id, id, "acked");
    }
    let listed: Vec<String> = n1
        .commands(&dev.id)
        .iter()
        .map(|c| s(c, "command_id").to_string())
        .collect();
    assert_eq!(set(listed.iter().cloned()), set(ids.iter().cloned()));
}

/// The hand-over across nodes: a device that moves from n1 to n2 and re-sends what it did not
/// hear acknowledged has each msg_id stored once in the cluster, and its old session is closed.
#[test]
fn a_device_moving_between_nodes_stores_each_msg_id_once() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let dev = n1.create_device("mover");
    wait_known(&n2, &dev.id);
    let mut old = n1.device_session(&dev);
    send_acked(&mut old, "m", 0..100);
    // Twenty more leave, and the device hears none of their acks before it moves.
    for n in 100..120 {
        old.send_json(&json!({"type":"telemetry","msg_id": format!("m{n}"),"payload":{"n": n}}));
    }
    let mut new = n2.device_session(&dev);
    assert_eq!(
        old.expect_close(SOON),
        Some(4000),
        "n1 closed the old session"
    );
    wait_until(
        Duration::from_secs(10),
        "n1 shows the device online on n2",
        || n1.listed_status(&dev.id) == "online",
    );
    // It re-sends them all on n2, then goes on.
    send_acked(&mut new, "m", 100..140);
    // Read through either node, the device's history is all of it, each msg_id once: what n1
    // stored before the move and what n2 stored after.
    for n in [&n1, &n2] {
        let mut read: Vec<String> = n
            .telemetry(&dev.id)
            .iter()
            .filter_map(|t| opt_s(t, "msg_id").map(str::to_string))
            .collect();
        read.sort();
        let mut want = expected("m", 0..140);
        want.sort();
        assert_eq!(read, want, "each msg_id once, read through either node");
    }
    // Pages of the merge, a few records at a time, skip nothing and repeat nothing.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/devices/{}/telemetry?limit=7&cursor={c}", dev.id),
            None => format!("/api/devices/{}/telemetry?limit=7", dev.id),
        };
        let page = n2.get(&path).json();
        for t in arr(&page, "items") {
            paged.push(s(t, "msg_id").to_string());
        }
        match opt_s(&page, "next_cursor") {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    paged.sort();
    let mut want = expected("m", 0..140);
    want.sort();
    assert_eq!(paged, want, "seven at a time, nothing skipped or repeated");
    // And the stream holds each once.
    wait_drained(&n1);
    wait_drained(&n2);
    let mut streamed = telemetry_ids(&nats.stream_messages(STREAM), &dev.id);
    streamed.sort();
    assert_eq!(streamed, want);
    // Gone from n2: every node shows it offline.
    new.close();
    wait_until(
        Duration::from_secs(10),
        "n1 shows the device offline",
        || n1.listed_status(&dev.id) == "offline",
    );
}

/// An admin on one node sees what devices on another node do.
#[test]
fn an_admin_on_one_node_sees_devices_on_every_node() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let dev = n1.create_device("watched");
    wait_known(&n2, &dev.id);
    let mut admin = n1.admin_session();
    // n2 builds frames for n1's admin once n1 has said it has one (every second): until then a
    // connection is not relayed, so the device connects again until n1's admin sees one.
    let is_online = |m: &Value| {
        opt_s(m, "type") == Some("device_status")
            && opt_s(m, "status") == Some("online")
            && opt_s(m, "device_id") == Some(dev.id.as_str())
    };
    let mut ws = None;
    wait_until(SOON, "n1's admin sees the device connect on n2", || {
        let session = n2.device_session(&dev);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let WsEvent::Json(m) = admin.recv(Duration::from_millis(200))
                && is_online(&m)
            {
                ws = Some(session);
                return true;
            }
        }
        session.close();
        false
    });
    let mut ws = ws.expect("a relayed session");
    send_acked(&mut ws, "v", 0..3);
    let t = admin.recv_matching(SOON, "its telemetry, from n2", |m| {
        opt_s(m, "type") == Some("telemetry") && opt_s(m, "device_id") == Some(&dev.id)
    });
    assert_eq!(s(&t, "device_id"), dev.id);
    ws.close();
    admin.recv_matching(SOON, "the disconnect, from n2", |m| {
        opt_s(m, "type") == Some("device_status")
            && opt_s(m, "status") == Some("offline")
            && opt_s(m, "device_id") == Some(&dev.id)
    });
}

/// Debian's haproxy in `mode tcp` on 127.0.0.10 in front of the nodes, taking a node out when its
/// health check fails.
struct Balancer {
    child: std::process::Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Balancer {
    fn start(nodes: &[&Server]) -> Balancer {
        let addr = std::net::TcpListener::bind("127.0.0.10:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.10")
            .to_string();
        let dir = unique_dir("haproxy");
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let mut cfg = format!(
            "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind {addr}\n  default_backend nodes\nbackend nodes\n  balance roundrobin\n"
        );
        for (i, n) in nodes.iter().enumerate() {
            cfg.push_str(&format!(
                "  server n{} {} check inter 200ms fall 1 rise 1\n",
                i + 1,
                n.addr()
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy runs (apt-get install haproxy; .ci/run does)");
        wait_until(SOON, "haproxy listening", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Balancer { child, addr, dir }
    }

    /// Registers `dev` through the balancer, retrying while a dead node is still in rotation.
    fn device_session(&self, dev: &Device) -> Ws {
        let mut last = String::new();
        for _ in 0..50 {
            match std::net::TcpStream::connect(&self.addr)
                .map_err(|e| e.to_string())
                .and_then(|s| Ws::try_over(s, &self.addr))
            {
                Ok(mut ws) => {
                    ws.send_json(&json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}));
                    match ws.recv(SOON) {
                        WsEvent::Json(v) if opt_s(&v, "type") == Some("registered") => return ws,
                        other => last = format!("{other:?}"),
                    }
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no node took the device through the balancer: {last}");
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which node holds the device's session (its generic sessions gauge).
fn holder(nodes: &[&Server]) -> usize {
    let mut found = None;
    wait_until(
        Duration::from_secs(10),
        "one node holds the session",
        || {
            let held: Vec<usize> = (0..nodes.len())
                .filter(|&i| metric(nodes[i], "fleetgate_sessions{protocol=\"generic\"}") >= 1.0)
                .collect();
            found = (held.len() == 1).then(|| held[0]);
            found.is_some()
        },
    );
    found.expect("a holder")
}

/// Three nodes behind haproxy: the node holding a device is killed (-9); the device reconnects
/// through the balancer to another, the commands queued meanwhile (through a third node's API)
/// arrive in order, and no record it was acknowledged is lost or stored twice in the cluster's
/// stream.
#[test]
fn a_killed_node_s_device_reconnects_through_the_balancer_and_loses_nothing() {
    let nats = Nats::start("127.0.0.20");
    let mut nodes = vec![
        node("127.0.0.11", &nats, "n1"),
        node("127.0.0.12", &nats, "n2"),
        node("127.0.0.13", &nats, "n3"),
    ];
    let lb = Balancer::start(&nodes.iter().collect::<Vec<_>>());
    let dev = nodes[0].create_device("through-the-balancer");
    for n in &nodes[1..] {
        wait_get(
            n,
            &format!("/api/devices/{}", dev.id),
            200,
            "every node knows it",
        );
    }
    let mut ws = lb.device_session(&dev);
    let h = holder(&nodes.iter().collect::<Vec<_>>());
    send_acked(&mut ws, "k", 0..200);
    // Twenty more leave; the node dies before the device hears their acks.
    for n in 200..220 {
        ws.send_json(&json!({"type":"telemetry","msg_id": format!("k{n}"),"payload":{"n": n}}));
    }
    nodes[h].kill9();
    drop(ws);
    let api = &nodes[(h + 1) % 3];
    let cmds: Vec<String> = (0..3)
        .map(|n| api.send_command(&dev.id, "set", json!({ "n": n })))
        .collect();
    // The device comes back through the balancer, re-sends what it did not hear acknowledged,
    // and goes on; the commands queued meanwhile come in among the acks, in order.
    let mut ws = lb.device_session(&dev);
    for n in 200..240 {
        ws.send_json(&json!({"type":"telemetry","msg_id": format!("k{n}"),"payload":{"n": n}}));
    }
    let (mut acks, mut got) = (0, Vec::new());
    while acks < 40 || got.len() < cmds.len() {
        let m = ws.recv_json(SOON);
        match opt_s(&m, "type") {
            Some("ack") => acks += 1,
            Some("command") => {
                let id = s(&m, "command_id").to_string();
                ws.send_json(&json!({"type":"command_result","command_id": id.as_str(),"status":"ok","payload":{}}));
                got.push(id);
            }
            _ => {}
        }
    }
    assert_eq!(got, cmds, "the queued commands arrive once each, in order");
    for id in &cmds {
        api.wait_command_status(&dev.id, id, "acked");
    }
    // The killed node returns and exports what it had stored; the stream holds each record once.
    nodes[h].start_again();
    wait_joined(&nodes[h]);
    for n in &nodes {
        wait_drained(n);
    }
    let all = nats.stream_messages(STREAM);
    assert_ids_unique(&all);
    let mut streamed = telemetry_ids(&all, &dev.id);
    streamed.sort();
    let mut want = expected("k", 0..240);
    want.sort();
    assert_eq!(streamed, want, "every record once in the cluster's stream");
}

fn bearer_get(srv: &Server, token: &str, path: &str) -> u16 {
    fleetgate::client::Client::new(&srv.url())
        .expect("client")
        .with_token(token)
        .get(path)
        .expect("GET")
        .status
}

/// One set of operators: a user made on one node logs in on another, the session is valid on
/// both, and a logout, a revoked token or a demotion on one node holds on the other.
#[test]
fn operators_are_one_set_across_nodes() {
    use common::browser::login;
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let r = n1.post(
        "/api/users",
        &json!({"username": "olga", "password": "olga-password-1", "role": "admin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until(Duration::from_secs(10), "n2 knows olga", || {
        n2.get("/api/users").text().contains("\"olga\"")
    });
    // Logged in through n2, the session works on n1 (the balancer may send the next request
    // anywhere).
    let (b, _) = login(&n2, "olga", "olga-password-1");
    wait_until(Duration::from_secs(10), "the session holds on n1", || {
        b.get(&n1, "/api/devices").status == 200
    });
    let dev = n1.create_device("d");
    wait_known(&n2, &dev.id);
    // Demoted on n1: the session can no longer write on n2.
    let r = n1.patch("/api/users/olga", &json!({"role": "viewer"}));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(Duration::from_secs(10), "the demotion holds on n2", || {
        let r = b.send(
            &n2,
            "POST",
            &format!("/api/devices/{}/commands", dev.id),
            &json!({"command":"reboot"}),
        );
        r.status == 403
    });
    // Logged out on n1: the cookie is refused on n2.
    let r = b.send(&n1, "POST", "/api/logout", &json!({}));
    assert!(r.status < 300, "{r:?}");
    wait_until(Duration::from_secs(10), "the logout holds on n2", || {
        b.get(&n2, "/api/devices").status == 401
    });
    // An API token made on n1 works on n2; revoked on n2, it is refused on n1.
    let r = n1.post("/api/tokens", &json!({"name":"ci","role":"admin"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let (token, id) = (s(&v, "token").to_string(), s(&v, "id").to_string());
    wait_until(Duration::from_secs(10), "the token works on n2", || {
        bearer_get(&n2, &token, "/api/devices") == 200
    });
    let r = n2.delete(&format!("/api/tokens/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(
        Duration::from_secs(10),
        "the revocation holds on n1",
        || bearer_get(&n1, &token, "/api/devices") == 401,
    );
}

/// A device's events read through a node it never used include what the nodes it used stored.
#[test]
fn a_device_s_events_read_through_any_node() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let dev = n1.create_device("evented");
    wait_known(&n2, &dev.id);
    let mut ws = n1.device_session(&dev);
    for n in 0..3 {
        ws.send_json(&json!({"type":"event","event_type":"door_opened","msg_id": format!("e{n}"),"payload":{"n": n}}));
        ws.recv_type("ack", SOON);
    }
    ws.close();
    let page = n2
        .get(&format!(
            "/api/events?device_id={}&type=door_opened&limit=10",
            dev.id
        ))
        .json();
    let got: Vec<u64> = arr(&page, "items")
        .iter()
        .map(|e| u(field(e, "payload"), "n"))
        .collect();
    assert_eq!(got, [2, 1, 0], "n1's events, newest first, read through n2");
}

/// A legacy HTTP device's punches, posted to two nodes in turn (as a balancer spreads its
/// requests), read through either node as one list, newest first.
#[test]
fn a_device_s_punches_read_through_any_node() {
    let nats = Nats::start("127.0.0.20");
    let n1 = node("127.0.0.11", &nats, "n1");
    let n2 = node("127.0.0.12", &nats, "n2");
    let r = n1.post(
        "/api/devices",
        &json!({"name": "door", "protocol": "http", "serial": "HTTP-CL-1", "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = s(&r.json(), "device_id").to_string();
    wait_known(&n2, &id);
    for (n, srv) in [(1u64, &n1), (2, &n2), (3, &n1)] {
        let body = json!({"cmd": "sendlog", "sn": "HTTP-CL-1", "count": 1, "logindex": 0,
            "record": [{"enrollid": n, "time": format!("2026-06-12 09:0{n}:00"), "mode": 1, "inout": 0, "event": 0}]});
        let r = fleetgate::client::Client::new(&srv.url())
            .expect("client")
            .post_json("/api/device-http", enc(&body).as_bytes())
            .expect("POST /api/device-http");
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).contains("true"), "stored");
    }
    for srv in [&n1, &n2] {
        let page = srv
            .get(&format!("/api/attendance?device_id={id}&limit=10"))
            .json();
        let pins: Vec<u64> = arr(&page, "items")
            .iter()
            .map(|p| u(p, "enrollid"))
            .collect();
        assert_eq!(pins, [3, 2, 1], "every node's punches, newest first");
    }
}

/// NATS stopped and started again while twenty devices store: every record is acknowledged by
/// the node throughout, and once NATS is back the stream holds each device's records once, in
/// order.
#[test]
fn nats_restarted_under_load_loses_nothing_and_repeats_nothing() {
    let mut nats = Nats::start("127.0.0.20");
    let srv = node("127.0.0.11", &nats, "n1");
    let devices: Vec<Device> = (0..20)
        .map(|i| srv.create_device(&format!("l{i}")))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = devices
        .iter()
        .map(|d| {
            let (addr, d, stop) = (srv.addr().to_string(), d.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ws = Ws::connect(&addr);
                ws.register(&d);
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    send_acked(&mut ws, "u", n..n + 10);
                    n += 10;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    nats.kill();
    std::thread::sleep(Duration::from_millis(1500));
    nats.start_again();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: Vec<u32> = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    wait_drained(&srv);
    let all = nats.stream_messages(STREAM);
    assert_ids_unique(&all);
    for (d, n) in devices.iter().zip(sent) {
        assert!(n >= 10, "{} stored while NATS was away", d.id);
        assert_eq!(telemetry_ids(&all, &d.id), expected("u", 0..n), "{}", d.id);
    }
}

/// A NATS that lets in only its user: a node whose URL names the user joins; one without it
/// does not (and says so in `/healthz`).
#[test]
fn a_node_joins_a_nats_that_requires_a_user() {
    let nats = Nats::start_as("127.0.0.20", Some(("fleetgate", "a-nats-password")));
    let n1 = node("127.0.0.11", &nats, "n1");
    let dev = n1.create_device("authed");
    let mut ws = n1.device_session(&dev);
    send_acked(&mut ws, "a", 0..5);
    wait_drained(&n1);
    assert_eq!(
        telemetry_ids(&nats.stream_messages(STREAM), &dev.id),
        expected("a", 0..5)
    );
    let bare = nats.url().replace("fleetgate:a-nats-password@", "");
    let n2 = Server::start_at("epoll", "127.0.0.12", &["--nats", &bare, "--node-id", "n2"]);
    std::thread::sleep(Duration::from_secs(2));
    let h = health(&n2);
    assert_eq!(opt_s(&h, "cluster"), Some("starting"), "{}", enc(&h));
    assert_eq!(opt_s(&h, "nats"), Some("disconnected"), "{}", enc(&h));
}
