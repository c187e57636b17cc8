//! The generic device protocol on `/ws`, end to end through real WebSocket
//! clients, under both I/O drivers (`uring::*` and `epoll::*`).

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

for_both_drivers!(
    register_online_offline_and_session_events,
    telemetry_stored_and_listed,
    telemetry_pagination,
    device_events_stored_with_source_device,
    ping_pong_and_websocket_ping,
    wrong_token_and_unknown_device_get_auth_failed_1008,
    first_frame_not_register_is_not_registered_1008,
    malformed_json_and_unknown_type_keep_the_session_open,
    oversize_message_closes_1009_and_others_keep_working,
    fragmented_messages_are_reassembled,
    large_messages_and_bursts_within_limits,
    protocol_violations_close_1002_and_1007,
    silent_client_closed_after_register_timeout,
    random_bytes_connections_are_answered_and_server_keeps_serving,
    msg_id_acks_and_dedup,
    command_online_delivery_and_result,
    offline_commands_delivered_in_order_on_register,
    queue_and_data_survive_restart,
    token_rotation_kicks_session_and_old_token_fails,
    second_session_replaces_first,
    admin_subscribe_receives_broadcasts,
    admin_bad_token_rejected,
    admin_command_over_ws,
    sigterm_closes_sessions_1001,
);

const T: Duration = SOON;

fn register_online_offline_and_session_events(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("door-1");
    assert_eq!(
        srv.listed_status(&dev.id),
        "offline",
        "new device must be offline"
    );

    let mut ws = srv.ws();
    ws.send_json(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    );
    let reg = ws.recv_json(T);
    assert_eq!(s(&reg, "type"), "registered", "{}", enc(&reg));
    assert_eq!(s(&reg, "device_id"), dev.id);
    assert_rfc3339(s(&reg, "server_time"));

    srv.wait_status(&dev.id, "online");
    let listed = srv.listed_device(&dev.id).unwrap();
    assert_eq!(s(&listed, "name"), "door-1");
    assert_eq!(s(&listed, "protocol"), "generic");
    let _ = field(&listed, "serial");
    let _ = field(&listed, "last_seen");

    let connected = srv.wait_event(&dev.id, "device_connected");
    assert_eq!(
        connected.len(),
        1,
        "one session → one device_connected: {connected:?}"
    );
    let e = &connected[0];
    assert_eq!(s(e, "source"), "server");
    assert_eq!(s(e, "device_id"), dev.id);
    assert_rfc3339(s(e, "ts"));
    let _ = field(e, "id");
    let _ = field(e, "payload");

    ws.ping_pong();
    ws.close();

    srv.wait_status(&dev.id, "offline");
    let listed = srv.listed_device(&dev.id).unwrap();
    let last_seen = field(&listed, "last_seen");
    assert!(
        last_seen.as_str().is_some(),
        "last_seen must be set after a session: {}",
        enc(&listed)
    );
    assert_rfc3339(last_seen.as_str().unwrap());

    let gone = srv.wait_event(&dev.id, "device_disconnected");
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(s(&gone[0], "source"), "server");
    let reason = s(field(&gone[0], "payload"), "reason");
    assert!(!reason.is_empty(), "device_disconnected needs a reason");

    // The device list filter by type works across devices too.
    let all_connected = srv.events("type=device_connected");
    assert!(
        all_connected
            .iter()
            .all(|e| s(e, "type") == "device_connected")
    );
}

fn telemetry_stored_and_listed(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("sensor");
    let mut ws = srv.device_session(&dev);

    // As the connect guide sends it: no device_id.
    ws.send_json(&json!({"type":"telemetry","payload":{"seq":1,"temperature":22.5}}));
    // As the protocol reference sends it: with the session's device_id.
    ws.send_json(&json!({"type":"telemetry","device_id": dev.id.as_str(),"payload":{"seq":2}}));
    // With a device timestamp.
    ws.send_json(&json!({"type":"telemetry","ts":"2026-01-02T03:04:05Z","payload":{"seq":3}}));
    // A device_id that is not the session's: error, not stored, session stays open.
    let other = srv.create_device("other");
    ws.send_json(&json!({"type":"telemetry","device_id": other.id.as_str(),"payload":{"seq":99}}));
    let err = ws.recv_type("error", T);
    let code = s(&err, "code");
    assert!(!code.is_empty());
    let _ = s(&err, "message");
    ws.ping_pong();

    let mut items = Vec::new();
    wait_until(T, "3 telemetry rows", || {
        items = srv.telemetry(&dev.id);
        items.len() >= 3
    });
    // Give a wrongly stored 4th row (or a late one) the same chance to show up.
    ws.ping_pong();
    items = srv.telemetry(&dev.id);
    let seqs: Vec<u64> = items
        .iter()
        .map(|i| u(field(i, "payload"), "seq"))
        .collect();
    assert_eq!(
        seqs,
        vec![3, 2, 1],
        "newest first, mismatching device_id not stored"
    );
    for i in &items {
        assert_rfc3339(s(i, "ts"));
    }
    assert_eq!(
        field(&items[2], "payload")
            .get("temperature")
            .and_then(|t| t.cast_f64()),
        Some(22.5)
    );
    let dts = field(&items[0], "device_ts");
    match dts.as_str() {
        Some(t) => {
            let a: jiff::Timestamp = t.parse().expect("device_ts RFC 3339");
            assert_eq!(
                a,
                "2026-01-02T03:04:05Z".parse::<jiff::Timestamp>().unwrap()
            );
        }
        None => assert!(!dts.is_null(), "device_ts missing: {}", enc(&items[0])),
    }
    assert!(
        srv.telemetry(&other.id).is_empty(),
        "nothing stored for the other device"
    );

    // Telemetry of one device does not leak into another's list.
    let mut ws2 = srv.device_session(&other);
    ws2.send_json(&json!({"type":"telemetry","payload":{"seq":7}}));
    wait_until(T, "other device's telemetry", || {
        srv.telemetry(&other.id).len() == 1
    });
    assert_eq!(srv.telemetry(&dev.id).len(), 3);

    // Payload must be an object.
    ws.send_json(&json!({"type":"telemetry","payload": 5}));
    let err = ws.recv_type("error", T);
    assert!(!s(&err, "code").is_empty());
    ws.ping_pong();
    assert_eq!(srv.telemetry(&dev.id).len(), 3);
}

fn telemetry_pagination(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("pager");
    let mut ws = srv.device_session(&dev);
    for n in 0..25u64 {
        ws.send_json(&json!({"type":"telemetry","msg_id": format!("p{n}"),"payload":{"seq": n}}));
    }
    for _ in 0..25 {
        ws.recv_type("ack", T);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "pagination did not end");
        let path = match &cursor {
            Some(c) => format!(
                "/api/devices/{}/telemetry?limit=10&cursor={}",
                dev.id,
                pct(c)
            ),
            None => format!("/api/devices/{}/telemetry?limit=10", dev.id),
        };
        let r = srv.get(&path);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let items = arr(&v, "items");
        assert!(items.len() <= 10, "limit ignored: {} items", items.len());
        seen.extend(items.iter().map(|i| u(field(i, "payload"), "seq")));
        let nc = field(&v, "next_cursor");
        if nc.is_null() {
            break;
        }
        cursor = Some(nc.as_str().expect("cursor string").to_string());
    }
    let expected: Vec<u64> = (0..25).rev().collect();
    assert_eq!(
        seen, expected,
        "pages must cover every row once, newest first"
    );
}

fn device_events_stored_with_source_device(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("door");
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type":"event","event_type":"door_opened","payload":{"door":1}}));
    ws.send_json(
        &json!({"type":"event","device_id": dev.id.as_str(),"event_type":"tamper","payload":{}}),
    );
    let opened = srv.wait_event(&dev.id, "door_opened");
    assert_eq!(opened.len(), 1);
    let e = &opened[0];
    assert_eq!(s(e, "source"), "device");
    assert_eq!(s(e, "device_id"), dev.id);
    assert_eq!(u(field(e, "payload"), "door"), 1);
    assert_rfc3339(s(e, "ts"));
    let tamper = srv.wait_event(&dev.id, "tamper");
    assert_eq!(s(&tamper[0], "source"), "device");

    // Filter by device only: both device events and the server's device_connected.
    let all = srv.events(&format!("device_id={}", dev.id));
    let types = set(all.iter().map(|e| s(e, "type").to_string()));
    for t in ["door_opened", "tamper", "device_connected"] {
        assert!(types.contains(t), "missing {t} in {types:?}");
    }
    assert!(all.iter().all(|e| s(e, "device_id") == dev.id));
    // Event ids are unique.
    let ids = set(all.iter().map(|e| enc(field(e, "id"))));
    assert_eq!(ids.len(), all.len());
    // An event without event_type is an error; the session stays open.
    ws.send_json(&json!({"type":"event","payload":{}}));
    let err = ws.recv_type("error", T);
    assert!(!s(&err, "code").is_empty());
    ws.ping_pong();
}

fn ping_pong_and_websocket_ping(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("pinger");
    let mut ws = srv.device_session(&dev);
    for _ in 0..3 {
        ws.send_json(&json!({"type":"ping"}));
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "pong", "{}", enc(&m));
    }
    // RFC 6455 ping → pong with the same payload.
    ws.ws
        .send(tungstenite::Message::Ping(tungstenite::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    match ws.recv(T) {
        WsEvent::Pong(p) => assert_eq!(p, b"hello"),
        other => panic!("expected a WebSocket pong, got {other:?}"),
    }
    ws.ping_pong();
}

fn wrong_token_and_unknown_device_get_auth_failed_1008(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("d");
    let cases = [
        (
            dev.id.clone(),
            "tok_wrongwrongwrongwrongwrongwrongwrong".to_string(),
        ),
        (
            "7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a".to_string(),
            dev.token.clone(),
        ),
        ("not-a-uuid".to_string(), dev.token.clone()),
        (dev.id.clone(), String::new()),
    ];
    for (id, tok) in cases {
        let mut ws = srv.ws();
        ws.send_json(&json!({"type":"register","device_id": id.as_str(),"token": tok.as_str()}));
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "error", "{}", enc(&m));
        assert_eq!(s(&m, "code"), "auth_failed", "{}", enc(&m));
        let _ = s(&m, "message");
        assert_eq!(
            ws.expect_close(T),
            Some(1008),
            "close code after auth_failed"
        );
    }
    // Register without a token field at all.
    let mut ws = srv.ws();
    ws.send_json(&json!({"type":"register","device_id": dev.id.as_str()}));
    let m = ws.recv_json(T);
    assert_eq!(s(&m, "type"), "error");
    assert_eq!(ws.expect_close(T), Some(1008));

    assert_eq!(srv.listed_status(&dev.id), "offline");
    // The real credentials still work.
    let mut ws = srv.device_session(&dev);
    ws.ping_pong();
}

fn first_frame_not_register_is_not_registered_1008(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("d");
    let firsts = [
        json!({"type":"ping"}),
        json!({"type":"telemetry","device_id": dev.id.as_str(),"payload":{"a":1}}),
        json!({"type":"command_result","command_id":"x","status":"ok","payload":{}}),
    ];
    for first in firsts {
        let mut ws = srv.ws();
        ws.send_json(&first);
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "error", "{}", enc(&m));
        assert_eq!(s(&m, "code"), "not_registered", "answer to {}", enc(&first));
        assert_eq!(ws.expect_close(T), Some(1008));
    }
    assert!(
        srv.telemetry(&dev.id).is_empty(),
        "unregistered telemetry must not be stored"
    );
}

fn malformed_json_and_unknown_type_keep_the_session_open(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("d");
    let mut ws = srv.device_session(&dev);

    for bad in [
        "{not json",
        "",
        "{\"type\":\"telemetry\",",
        "\u{0}\u{1}garbage",
    ] {
        ws.send_text(bad);
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "error", "answer to {bad:?}: {}", enc(&m));
        assert_eq!(s(&m, "code"), "invalid_json", "answer to {bad:?}");
        let _ = s(&m, "message");
        ws.ping_pong();
    }

    ws.send_json(&json!({"type":"frobnicate","x":1}));
    let m = ws.recv_json(T);
    assert_eq!(s(&m, "type"), "error");
    assert_eq!(s(&m, "code"), "unknown_type", "{}", enc(&m));
    ws.ping_pong();

    // JSON that is not an object / has no type: an error, session open.
    for odd in ["[1,2,3]", "42", "{\"payload\":{}}"] {
        ws.send_text(odd);
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "error", "answer to {odd:?}: {}", enc(&m));
        ws.ping_pong();
    }
    // Still the same session: telemetry is stored.
    ws.send_json(&json!({"type":"telemetry","payload":{"ok":true}}));
    wait_until(T, "telemetry after errors", || {
        srv.telemetry(&dev.id).len() == 1
    });
    assert_eq!(srv.listed_status(&dev.id), "online");
}

/// Writes `bytes` raw on a clone of the session's socket from another thread
/// (the server may stop reading and close: write errors are expected).
fn write_raw_in_background(ws: &Ws, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut raw = ws.raw();
    raw.set_write_timeout(Some(Duration::from_secs(30))).ok();
    thread::spawn(move || {
        let _ = raw.write_all(&bytes);
    })
}

fn oversize_message_closes_1009_and_others_keep_working(io: &str) {
    let srv = Server::start(io);
    let a = srv.create_device("bystander");
    let b = srv.create_device("big");
    let mut wa = srv.device_session(&a);
    let mut wb = srv.device_session(&b);

    // A single 2 MiB text frame holding (valid) JSON telemetry.
    let mut text = String::from("{\"type\":\"telemetry\",\"payload\":{\"blob\":\"");
    text.push_str(&"x".repeat(2 << 20));
    text.push_str("\"}}");
    let w = write_raw_in_background(&wb, frame(true, 0x1, text.as_bytes(), true));
    // While the big frame is in flight, the bystander keeps working.
    wa.ping_pong();
    assert_eq!(
        wb.expect_close(T),
        Some(1009),
        "2 MiB frame over the 1 MiB limit"
    );
    w.join().unwrap();

    wa.ping_pong();
    wa.send_json(&json!({"type":"telemetry","payload":{"after":1}}));
    wait_until(T, "bystander telemetry", || srv.telemetry(&a.id).len() == 1);
    assert!(
        srv.telemetry(&b.id).is_empty(),
        "oversize telemetry must not be stored"
    );
    srv.wait_status(&b.id, "offline");
    assert_eq!(srv.listed_status(&a.id), "online");

    // A 2 MiB message in 512 KiB fragments: the message limit counts, not the frame.
    let mut wb = srv.device_session(&b);
    let mut bytes = Vec::new();
    let chunk = vec![b'y'; 512 << 10];
    bytes.extend(frame(
        false,
        0x1,
        b"{\"type\":\"telemetry\",\"payload\":{\"blob\":\"",
        true,
    ));
    for _ in 0..4 {
        bytes.extend(frame(false, 0x0, &chunk, true));
    }
    bytes.extend(frame(true, 0x0, b"\"}}", true));
    let w = write_raw_in_background(&wb, bytes);
    assert_eq!(wb.expect_close(T), Some(1009), "2 MiB fragmented message");
    w.join().unwrap();

    // A message just under the limit is fine.
    let mut wb = srv.device_session(&b);
    let mut text = String::from("{\"type\":\"telemetry\",\"payload\":{\"blob\":\"");
    text.push_str(&"z".repeat((1 << 20) - 200));
    text.push_str("\"}}");
    wb.send_text(&text);
    // Stored, or refused with an error frame (a payload limit); either way the
    // session stays open: the message limit is not below 1 MiB.
    wb.ping_pong();
    wa.ping_pong();
    // A fresh device still registers.
    let c = srv.create_device("fresh");
    srv.device_session(&c).ping_pong();
}

fn fragmented_messages_are_reassembled(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("frag");
    let mut ws = srv.device_session(&dev);
    let msg = enc(
        &json!({"type":"telemetry","msg_id":"frag-1","payload":{"seq":1,"note":"split in three"}}),
    );
    let (p1, rest) = msg.as_bytes().split_at(10);
    let (p2, p3) = rest.split_at(20);
    let mut bytes = frame(false, 0x1, p1, true);
    bytes.extend(frame(false, 0x0, p2, true));
    // A control frame may arrive between fragments.
    bytes.extend(frame(true, 0x9, b"mid", true));
    bytes.extend(frame(true, 0x0, p3, true));
    let mut raw = ws.raw();
    raw.write_all(&bytes).unwrap();
    let mut got_pong = false;
    let mut got_ack = false;
    let deadline = Instant::now() + T;
    while !(got_pong && got_ack) {
        assert!(Instant::now() < deadline, "pong={got_pong} ack={got_ack}");
        match ws.recv(Duration::from_millis(500)) {
            WsEvent::Pong(p) => {
                assert_eq!(p, b"mid");
                got_pong = true;
            }
            WsEvent::Json(m) => {
                assert_eq!(s(&m, "type"), "ack", "{}", enc(&m));
                assert_eq!(s(&m, "msg_id"), "frag-1");
                got_ack = true;
            }
            WsEvent::Timeout => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let items = srv.telemetry(&dev.id);
    assert_eq!(items.len(), 1);
    assert_eq!(s(field(&items[0], "payload"), "note"), "split in three");
    ws.ping_pong();
}

fn large_messages_and_bursts_within_limits(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("bulky");
    let mut ws = srv.device_session(&dev);
    let blob = "b".repeat(48 << 10);

    // One 48 KiB frame.
    ws.send_json(
        &json!({"type":"telemetry","msg_id":"big-1","payload":{"seq":1,"blob": blob.as_str()}}),
    );
    assert_eq!(
        s(&ws.recv_type("ack", T), "msg_id"),
        "big-1",
        "48 KiB telemetry frame"
    );

    // The same size in 4 fragments.
    let msg = enc(
        &json!({"type":"telemetry","msg_id":"big-2","payload":{"seq":2,"blob": blob.as_str()}}),
    );
    let q = msg.len() / 4;
    let b = msg.as_bytes();
    let mut bytes = frame(false, 0x1, &b[..q], true);
    bytes.extend(frame(false, 0x0, &b[q..2 * q], true));
    bytes.extend(frame(false, 0x0, &b[2 * q..3 * q], true));
    bytes.extend(frame(true, 0x0, &b[3 * q..], true));
    ws.raw().write_all(&bytes).unwrap();
    assert_eq!(
        s(&ws.recv_type("ack", T), "msg_id"),
        "big-2",
        "48 KiB fragmented telemetry"
    );

    // A burst: 300 frames in one write, every one answered.
    let mut burst = Vec::new();
    for n in 0..300u64 {
        let m = enc(
            &json!({"type":"telemetry","msg_id": format!("burst-{n}"),"payload":{"seq": 100 + n}}),
        );
        burst.extend(frame(true, 0x1, m.as_bytes(), true));
    }
    burst.extend(frame(true, 0x1, br#"{"type":"ping"}"#, true));
    let w = write_raw_in_background(&ws, burst);
    let mut acked = std::collections::HashSet::new();
    let mut pong = false;
    while acked.len() < 300 || !pong {
        let m = ws.recv_json(T);
        match s(&m, "type") {
            "ack" => assert!(
                acked.insert(s(&m, "msg_id").to_string()),
                "ack twice: {}",
                enc(&m)
            ),
            "pong" => pong = true,
            other => panic!("unexpected {other}: {}", enc(&m)),
        }
    }
    w.join().unwrap();
    assert_eq!(srv.telemetry(&dev.id).len(), 302);
    let items = srv.telemetry(&dev.id);
    assert_eq!(s(field(&items[301], "payload"), "blob").len(), 48 << 10);
    ws.ping_pong();
}

fn protocol_violations_close_1002_and_1007(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("violator");
    let bystander = srv.create_device("bystander");
    let mut wb = srv.device_session(&bystander);

    // Unmasked client frame → 1002.
    let mut ws = srv.device_session(&dev);
    ws.raw()
        .write_all(&frame(true, 0x1, br#"{"type":"ping"}"#, false))
        .unwrap();
    assert_eq!(ws.expect_close(T), Some(1002), "unmasked client frame");

    // Invalid UTF-8 in a text frame → 1007.
    let mut ws = srv.device_session(&dev);
    ws.raw()
        .write_all(&frame(
            true,
            0x1,
            b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}",
            true,
        ))
        .unwrap();
    assert_eq!(ws.expect_close(T), Some(1007), "invalid UTF-8 text");

    // Invalid UTF-8 split across fragments → 1007.
    let mut ws = srv.device_session(&dev);
    let mut bytes = frame(false, 0x1, b"{\"type\":\"ping\",\"x\":\"\xe2\x82", true);
    bytes.extend(frame(true, 0x0, b"\x28\"}", true));
    ws.raw().write_all(&bytes).unwrap();
    assert_eq!(
        ws.expect_close(T),
        Some(1007),
        "invalid UTF-8 across fragments"
    );

    // Reserved bits / unknown opcode → 1002.
    let mut ws = srv.device_session(&dev);
    ws.raw().write_all(&frame(true, 0x3, b"??", true)).unwrap();
    assert_eq!(ws.expect_close(T), Some(1002), "reserved opcode 0x3");

    // Continuation without a start → 1002.
    let mut ws = srv.device_session(&dev);
    ws.raw().write_all(&frame(true, 0x0, b"{}", true)).unwrap();
    assert_eq!(
        ws.expect_close(T),
        Some(1002),
        "continuation frame without a message"
    );

    wb.ping_pong();
    let mut ws = srv.device_session(&dev);
    ws.ping_pong();
}

fn silent_client_closed_after_register_timeout(io: &str) {
    let srv = Server::start_with(io, &["--register-timeout", "1"]);
    let dev = srv.create_device("d");
    // Registered sessions are not subject to the register timeout.
    let mut reg = srv.device_session(&dev);

    let mut silent = srv.ws();
    assert_eq!(
        silent.expect_close(Duration::from_secs(30)),
        Some(1008),
        "a WebSocket that never registers is closed with 1008"
    );

    // A second silent one, while the registered session keeps working.
    let mut silent = srv.ws();
    reg.ping_pong();
    assert_eq!(silent.expect_close(Duration::from_secs(30)), Some(1008));

    reg.ping_pong();
    assert_eq!(srv.listed_status(&dev.id), "online");
}

fn random_bytes_connections_are_answered_and_server_keeps_serving(io: &str) {
    let srv = Server::start_with(io, &["--register-timeout", "3"]);
    let dev = srv.create_device("bystander");
    let mut bystander = srv.device_session(&dev);
    let addr = srv.addr().to_string();

    const THREADS: usize = 10;
    const PER_THREAD: usize = 30; // 300 connections
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let addr = addr.clone();
        handles.push(thread::spawn(move || {
            // Each connection: random bytes straight to HTTP, or random
            // frames after a good WebSocket handshake.
            let mut conns = Vec::new();
            for i in 0..PER_THREAD {
                let after_handshake = (t + i) % 3 == 0;
                let len = 1 + (random_u64() % 4096) as usize;
                let junk = random_bytes(len);
                let mut sock = if after_handshake {
                    let ws = Ws::connect(&addr);
                    ws.raw()
                } else {
                    TcpStream::connect(&addr).expect("connect")
                };
                sock.set_write_timeout(Some(Duration::from_secs(10))).ok();
                let _ = sock.write_all(&junk);
                conns.push((after_handshake, sock, junk));
            }
            let mut results = Vec::new();
            for (ws, mut sock, junk) in conns {
                let (bytes, ending) = read_to_end_bounded(&mut sock, Duration::from_secs(60));
                results.push((ws, bytes, ending, junk));
            }
            results
        }));
    }
    // Meanwhile the bystander keeps being served.
    let pinger = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 10_000 {
                bystander.ping_pong();
                n += 1;
                thread::sleep(Duration::from_millis(20));
            }
            bystander
        })
    };

    let mut http_4xx = 0;
    let mut failures = Vec::new();
    let mut total = 0;
    for h in handles {
        for (ws, bytes, ending, junk) in h.join().unwrap() {
            total += 1;
            let what = if ws { "ws frames" } else { "http" };
            if ending == Ending::Open {
                failures.push(format!(
                    "{what}: connection still open after 60 s; answered {} bytes {:02x?}; junk started {:02x?}",
                    bytes.len(),
                    &bytes[..bytes.len().min(16)],
                    &junk[..junk.len().min(16)]
                ));
                continue;
            }
            if bytes.is_empty() {
                continue; // closed (EOF / reset) without an answer: acceptable
            }
            if ws {
                // Server frames: an error text frame, a close frame, or a pong
                // (random bytes can form a valid masked ping).
                if ![0x81, 0x88, 0x8a].contains(&bytes[0]) {
                    failures.push(format!("ws: first answer byte {:#04x}", bytes[0]));
                }
            } else if bytes.starts_with(b"HTTP/1.1 4") {
                http_4xx += 1;
            } else {
                failures.push(format!(
                    "http: answer {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                ));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut bystander = pinger
        .join()
        .expect("bystander pings failed while junk was sent");
    assert_eq!(total, THREADS * PER_THREAD);
    assert!(
        failures.is_empty(),
        "{} bad outcomes: {failures:#?}",
        failures.len()
    );
    assert!(
        http_4xx > 0,
        "no random-bytes HTTP connection got a 4xx answer"
    );

    bystander.ping_pong();
    let fresh = srv.create_device("fresh");
    let mut ws = srv.device_session(&fresh);
    ws.ping_pong();
    let r = srv.anonymous().get("/healthz").expect("healthz");
    assert_eq!(r.status, 200);
}

fn msg_id_acks_and_dedup(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("d");
    let mut ws = srv.device_session(&dev);

    let tel = json!({"type":"telemetry","msg_id":"m-1","payload":{"seq":1}});
    ws.send_json(&tel);
    let ack = ws.recv_json(T);
    assert_eq!(s(&ack, "type"), "ack", "{}", enc(&ack));
    assert_eq!(s(&ack, "msg_id"), "m-1");
    // Acked means stored.
    assert_eq!(
        srv.telemetry(&dev.id).len(),
        1,
        "acked telemetry must be readable"
    );
    ws.send_json(&tel);
    let ack = ws.recv_json(T);
    assert_eq!(s(&ack, "type"), "ack");
    assert_eq!(s(&ack, "msg_id"), "m-1");

    let ev = json!({"type":"event","msg_id":"e-1","event_type":"door_opened","payload":{}});
    ws.send_json(&ev);
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "e-1");
    ws.send_json(&ev);
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "e-1");

    // A re-send on a new session (the at-least-once case) is stored once too.
    ws.close();
    let mut ws = srv.device_session(&dev);
    ws.send_json(&tel);
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "m-1");
    ws.send_json(&json!({"type":"telemetry","msg_id":"m-2","payload":{"seq":2}}));
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "m-2");

    let items = srv.telemetry(&dev.id);
    let seqs: Vec<u64> = items
        .iter()
        .map(|i| u(field(i, "payload"), "seq"))
        .collect();
    assert_eq!(seqs, vec![2, 1], "m-1 stored once");
    let evs = srv.events(&format!("device_id={}&type=door_opened", dev.id));
    assert_eq!(evs.len(), 1, "e-1 stored once: {evs:?}");

    // Same msg_id from a different device is a different message.
    let other = srv.create_device("other");
    let mut wo = srv.device_session(&other);
    wo.send_json(&tel);
    assert_eq!(s(&wo.recv_type("ack", T), "msg_id"), "m-1");
    assert_eq!(srv.telemetry(&other.id).len(), 1);

    // Frames without msg_id get no ack.
    ws.send_json(&json!({"type":"telemetry","payload":{"seq":3}}));
    ws.send_json(&json!({"type":"ping"}));
    let m = ws.recv_json(T);
    assert_eq!(
        s(&m, "type"),
        "pong",
        "no ack without msg_id, got {}",
        enc(&m)
    );
}

fn command_online_delivery_and_result(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("lock");
    let mut ws = srv.device_session(&dev);

    let cid = srv.send_command(&dev.id, "unlock", json!({"door": 2}));
    let cmd = ws.recv_type("command", T);
    assert_eq!(s(&cmd, "command_id"), cid);
    assert_eq!(s(&cmd, "command"), "unlock");
    assert_eq!(u(field(&cmd, "payload"), "door"), 2);
    let c = srv.wait_command_status(&dev.id, &cid, "sent");
    assert_eq!(s(&c, "command"), "unlock");
    assert_eq!(u(field(&c, "payload"), "door"), 2);

    ws.send_json(&json!({"type":"command_result","command_id": cid.as_str(),"status":"ok","payload":{"opened":true}}));
    let c = srv.wait_command_status(&dev.id, &cid, "acked");
    let result = field(&c, "result");
    let text = enc(result);
    assert!(
        text.contains("\"opened\":true"),
        "command result must carry the device's payload: {}",
        enc(&c)
    );

    let cid2 = srv.send_command(&dev.id, "reboot", json!({}));
    let cmd = ws.recv_type("command", T);
    assert_eq!(s(&cmd, "command_id"), cid2);
    ws.send_json(&json!({"type":"command_result","command_id": cid2.as_str(),"status":"error","payload":{"why":"busy"}}));
    srv.wait_command_status(&dev.id, &cid2, "failed");
    // The first stays acked.
    assert_eq!(s(&srv.command_status(&dev.id, &cid), "status"), "acked");

    // A command without a payload gets an empty object (or null) payload.
    let r = srv.post(
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"command":"beep"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let cmd = ws.recv_type("command", T);
    assert_eq!(s(&cmd, "command"), "beep");

    // A result for an unknown command does not break the session.
    ws.send_json(&json!({"type":"command_result","command_id":"nope","status":"ok","payload":{}}));
    ws.ping_pong();

    // Commands for an unknown device: 404.
    let r = srv.post(
        "/api/devices/7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a/commands",
        &json!({"command":"unlock"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    error_code(&r.json());
    // Missing command name: 400.
    let r = srv.post(
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"payload":{}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    error_code(&r.json());
}

fn offline_commands_delivered_in_order_on_register(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("sleeper");
    let mut ids = Vec::new();
    for n in 0..5u64 {
        ids.push(srv.send_command(&dev.id, &format!("cmd{n}"), json!({"n": n})));
    }
    for id in &ids {
        assert_eq!(s(&srv.command_status(&dev.id, id), "status"), "queued");
    }
    let listed = srv.commands(&dev.id);
    assert_eq!(listed.len(), 5);

    let mut ws = srv.ws();
    ws.send_json(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    );
    let first = ws.recv_json(T);
    assert_eq!(
        s(&first, "type"),
        "registered",
        "registered comes before queued commands"
    );
    for (n, id) in ids.iter().enumerate() {
        let cmd = ws.recv_type("command", T);
        assert_eq!(s(&cmd, "command_id"), id, "commands delivered in order");
        assert_eq!(s(&cmd, "command"), format!("cmd{n}"));
        assert_eq!(u(field(&cmd, "payload"), "n"), n as u64);
    }
    for id in &ids {
        srv.wait_command_status(&dev.id, id, "sent");
    }
    // Nothing is delivered twice.
    ws.send_json(&json!({"type":"ping"}));
    let m = ws.recv_json(T);
    assert_eq!(s(&m, "type"), "pong", "unexpected {}", enc(&m));
    ws.close();

    // Sent-but-unacknowledged commands are not re-queued as new commands on reconnect
    // under a new id; whatever the server does, acked ones never come back.
    let mut ws = srv.device_session(&dev);
    for id in &ids {
        ws.send_json(
            &json!({"type":"command_result","command_id": id.as_str(),"status":"ok","payload":{}}),
        );
    }
    for id in &ids {
        srv.wait_command_status(&dev.id, id, "acked");
    }
    ws.close();
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type":"ping"}));
    let m = ws.recv_json(T);
    assert_eq!(
        s(&m, "type"),
        "pong",
        "acked command re-delivered: {}",
        enc(&m)
    );
}

fn queue_and_data_survive_restart(io: &str) {
    let mut srv = Server::start(io);
    let dev = srv.create_device("persistent");
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type":"telemetry","msg_id":"t1","payload":{"seq":1}}));
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "t1");
    ws.send_json(&json!({"type":"event","msg_id":"e1","event_type":"door_opened","payload":{}}));
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "e1");
    ws.close();
    srv.wait_status(&dev.id, "offline");
    let a = srv.send_command(&dev.id, "first", json!({}));
    let b = srv.send_command(&dev.id, "second", json!({}));

    srv.restart();

    let listed = srv.listed_device(&dev.id).expect("device survives restart");
    assert_eq!(s(&listed, "name"), "persistent");
    assert_eq!(s(&listed, "status"), "offline");
    assert_eq!(
        srv.telemetry(&dev.id).len(),
        1,
        "telemetry survives restart"
    );
    assert_eq!(
        srv.events(&format!("device_id={}&type=door_opened", dev.id))
            .len(),
        1
    );
    assert!(
        !srv.events(&format!("device_id={}&type=device_connected", dev.id))
            .is_empty()
    );
    assert_eq!(s(&srv.command_status(&dev.id, &a), "status"), "queued");

    // Token still valid; queued commands delivered in order after the restart.
    let mut ws = srv.device_session(&dev);
    assert_eq!(s(&ws.recv_type("command", T), "command_id"), a);
    assert_eq!(s(&ws.recv_type("command", T), "command_id"), b);
    // msg_id dedup survives the restart.
    ws.send_json(&json!({"type":"telemetry","msg_id":"t1","payload":{"seq":1}}));
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "t1");
    assert_eq!(
        srv.telemetry(&dev.id).len(),
        1,
        "re-sent msg_id after restart stored once"
    );
    // The admin token still works (it is the env one) and new devices work.
    let d2 = srv.create_device("after");
    srv.device_session(&d2).ping_pong();
}

fn token_rotation_kicks_session_and_old_token_fails(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("rot");
    let mut ws = srv.device_session(&dev);

    let r = srv.post(&format!("/api/devices/{}/token", dev.id), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(s(&v, "device_id"), dev.id);
    let new_token = s(&v, "token").to_string();
    assert!(new_token.starts_with("tok_") && new_token != dev.token);

    ws.expect_end(T);
    srv.wait_status(&dev.id, "offline");

    let mut old = srv.ws();
    old.send_json(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    );
    let m = old.recv_json(T);
    assert_eq!(
        s(&m, "code"),
        "auth_failed",
        "old token must fail at once: {}",
        enc(&m)
    );
    assert_eq!(old.expect_close(T), Some(1008));

    let rotated = Device {
        token: new_token,
        ..dev.clone()
    };
    let mut ws = srv.device_session(&rotated);
    ws.ping_pong();
    srv.wait_status(&dev.id, "online");

    // Rotating an unknown device: 404.
    let r = srv.post(
        "/api/devices/7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a/token",
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

fn second_session_replaces_first(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("twin");
    let mut first = srv.device_session(&dev);
    srv.wait_status(&dev.id, "online");
    let mut second = srv.device_session(&dev);

    // The old session is closed, with a reason.
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match first.recv(left) {
            WsEvent::Close(code, reason) => {
                assert!(
                    !reason.is_empty(),
                    "replaced session closed without a reason (code {code:?})"
                );
                break;
            }
            WsEvent::Json(m) => {
                // An error/notice before the close is fine.
                assert_ne!(s(&m, "type"), "registered", "{}", enc(&m));
            }
            other => panic!("first session: expected a close frame, got {other:?}"),
        }
    }
    // The device stays online through the replacement.
    second.ping_pong();
    srv.wait_event(&dev.id, "device_disconnected");
    assert_eq!(
        srv.listed_status(&dev.id),
        "online",
        "replacement must not mark the device offline"
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.listed_status(&dev.id), "online");

    // Commands go to the new session.
    let cid = srv.send_command(&dev.id, "unlock", json!({}));
    assert_eq!(s(&second.recv_type("command", T), "command_id"), cid);
    second.send_json(&json!({"type":"telemetry","payload":{"from":"second"}}));
    wait_until(T, "telemetry from second session", || {
        srv.telemetry(&dev.id).len() == 1
    });
    second.close();
    srv.wait_status(&dev.id, "offline");
}

fn admin_subscribe_receives_broadcasts(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("watched");
    let mut admin = srv.admin_session();

    let mut ws = srv.device_session(&dev);
    let st = admin.recv_matching(T, "device_status online", |m| {
        opt_s(m, "type") == Some("device_status") && opt_s(m, "device_id") == Some(dev.id.as_str())
    });
    assert_eq!(s(&st, "status"), "online");
    assert_rfc3339(s(&st, "ts"));

    ws.send_json(&json!({"type":"telemetry","payload":{"temperature":19.5}}));
    let t = admin.recv_type("telemetry", T);
    assert_eq!(s(&t, "device_id"), dev.id);
    assert_eq!(
        field(&t, "payload")
            .get("temperature")
            .and_then(|x| x.cast_f64()),
        Some(19.5)
    );

    ws.send_json(&json!({"type":"event","event_type":"door_opened","payload":{"door":3}}));
    let e = admin.recv_type("event", T);
    assert_eq!(s(&e, "device_id"), dev.id);
    assert!(
        enc(&e).contains("door_opened"),
        "event broadcast must name the event type: {}",
        enc(&e)
    );

    // A second admin gets the same broadcasts.
    let mut admin2 = srv.admin_session();
    ws.send_json(&json!({"type":"telemetry","payload":{"temperature":20.0}}));
    for a in [&mut admin, &mut admin2] {
        let t = a.recv_type("telemetry", T);
        assert_eq!(
            field(&t, "payload")
                .get("temperature")
                .and_then(|x| x.cast_f64()),
            Some(20.0)
        );
    }

    ws.close();
    let st = admin.recv_matching(T, "device_status offline", |m| {
        opt_s(m, "type") == Some("device_status") && opt_s(m, "status") == Some("offline")
    });
    assert_eq!(s(&st, "device_id"), dev.id);

    // Admins may ping too.
    admin.ping_pong();
}

fn admin_bad_token_rejected(io: &str) {
    let srv = Server::start(io);
    for sub in [
        json!({"type":"subscribe","role":"admin","token":"wrong"}),
        json!({"type":"subscribe","role":"admin"}),
    ] {
        let mut ws = srv.ws();
        ws.send_json(&sub);
        let m = ws.recv_json(T);
        assert_eq!(s(&m, "type"), "error", "{}", enc(&m));
        assert!(!s(&m, "code").is_empty());
        assert_eq!(ws.expect_close(T), Some(1008), "bad admin subscribe");
    }
    // A device token is not an admin token.
    let dev = srv.create_device("d");
    let mut ws = srv.ws();
    ws.send_json(&json!({"type":"subscribe","role":"admin","token": dev.token.as_str()}));
    let m = ws.recv_json(T);
    assert_eq!(s(&m, "type"), "error");
    assert_eq!(ws.expect_close(T), Some(1008));
    // The right one works.
    srv.admin_session().ping_pong();
}

fn admin_command_over_ws(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("target");
    let mut admin = srv.admin_session();
    let mut ws = srv.device_session(&dev);

    admin.send_json(&json!({"type":"command","device_id": dev.id.as_str(),"command":"unlock","payload":{"door":1}}));
    let q = admin.recv_type("command_queued", T);
    let cid = s(&q, "command_id").to_string();
    let cmd = ws.recv_type("command", T);
    assert_eq!(s(&cmd, "command_id"), cid);
    assert_eq!(s(&cmd, "command"), "unlock");
    assert_eq!(u(field(&cmd, "payload"), "door"), 1);
    ws.send_json(
        &json!({"type":"command_result","command_id": cid.as_str(),"status":"ok","payload":{"opened":true}}),
    );
    srv.wait_command_status(&dev.id, &cid, "acked");
    // The outcome is pushed to the admins once durable.
    let r = admin.recv_type("command_result", T);
    assert_eq!(s(&r, "command_id"), cid);
    assert_eq!(s(&r, "device_id"), dev.id);
    assert_eq!(s(&r, "command"), "unlock");
    assert_eq!(s(&r, "status"), "acked");
    assert_eq!(enc(field(&r, "result")), r#"{"opened":true}"#);
    assert_rfc3339(s(&r, "ts"));

    // To an offline device: queued, delivered on register.
    ws.close();
    srv.wait_status(&dev.id, "offline");
    admin.send_json(
        &json!({"type":"command","device_id": dev.id.as_str(),"command":"later","payload":{}}),
    );
    let q = admin.recv_type("command_queued", T);
    let later = s(&q, "command_id").to_string();
    assert_eq!(s(&srv.command_status(&dev.id, &later), "status"), "queued");
    let mut ws = srv.device_session(&dev);
    assert_eq!(s(&ws.recv_type("command", T), "command_id"), later);

    // Unknown device: an error, the admin session stays open.
    admin.send_json(&json!({"type":"command","device_id":"7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a","command":"x","payload":{}}));
    let e = admin.recv_type("error", T);
    assert!(!s(&e, "code").is_empty());
    admin.ping_pong();

    // A device cannot send admin commands.
    let other = srv.create_device("other");
    ws.send_json(
        &json!({"type":"command","device_id": other.id.as_str(),"command":"unlock","payload":{}}),
    );
    let e = ws.recv_type("error", T);
    assert!(!s(&e, "code").is_empty());
    assert!(
        srv.commands(&other.id).is_empty(),
        "a device queued a command for another device"
    );
}

fn sigterm_closes_sessions_1001(io: &str) {
    let mut srv = Server::start(io);
    let dev = srv.create_device("d");
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type":"telemetry","msg_id":"before-stop","payload":{"seq":1}}));
    assert_eq!(s(&ws.recv_type("ack", T), "msg_id"), "before-stop");
    let mut admin = srv.admin_session();

    let st = srv.stop();
    assert!(st.success(), "exit status after SIGTERM: {st}");
    assert_eq!(ws.expect_close(T), Some(1001), "device session on shutdown");
    assert_eq!(
        admin.expect_close(T),
        Some(1001),
        "admin session on shutdown"
    );

    srv.start_again();
    assert_eq!(srv.telemetry(&dev.id).len(), 1);
    assert_eq!(srv.listed_status(&dev.id), "offline");
    let disc = srv.wait_event(&dev.id, "device_disconnected");
    assert!(!disc.is_empty());
}
