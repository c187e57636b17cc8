//! Abuse limits as a hostile or broken client meets them (issue 7, docs/security.md): idle and
//! half-finished connections reaped, connections per address capped, bad tokens throttled,
//! flapping devices banned and let back, floods held back then cut off, slow admin subscribers cut
//! off while devices keep flowing, and oversized work refused when the buffer budget is spent.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

for_both_drivers!(
    idle_and_unfinished_connections_are_reaped_while_the_api_answers,
    connections_per_address_are_capped,
    bad_tokens_are_throttled_but_never_lock_out_a_right_one,
    a_flapping_device_is_banned_and_let_back_after_the_ban,
    a_flood_is_held_back_without_loss_then_cut_off,
    a_slow_admin_subscriber_is_cut_off_while_devices_keep_flowing,
    a_message_beyond_the_buffer_budget_is_refused_and_the_server_goes_on,
    connections_the_server_closes_give_their_read_buffers_back,
);

fn register_frame(dev: &Device, token: &str) -> String {
    enc(&json!({"type":"register","device_id": dev.id.as_str(),"token": token}))
}

/// Registers on a fresh connection from `src` and returns the first answer.
fn try_register(srv: &Server, src: &str, dev: &Device, token: &str) -> (Value, Ws) {
    let mut ws = Ws::try_over(tcp_from(src, srv.addr()), srv.addr()).expect("ws connect");
    ws.send_text(&register_frame(dev, token));
    (ws.recv_json(SOON), ws)
}

fn idle_and_unfinished_connections_are_reaped_while_the_api_answers(io: &str) {
    let srv = Server::start_with(
        io,
        &[
            "--keepalive-timeout",
            "2",
            "--header-timeout",
            "2",
            "--register-timeout",
            "2",
        ],
    );
    let mut conns: Vec<(TcpStream, &str)> = Vec::new();
    for i in 0..400 {
        let mut s = TcpStream::connect(srv.addr()).expect("connect");
        let kind = match i % 4 {
            // Connects and says nothing.
            0 => "silent",
            // Half a request head, never finished (slowloris).
            1 => {
                s.write_all(b"GET /api/devices HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .expect("write");
                "half head"
            }
            // A finished request, then an idle keep-alive connection.
            2 => {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .expect("write");
                "idle keep-alive"
            }
            // A WebSocket that never registers.
            _ => {
                s.write_all(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                )
                .expect("write");
                "unregistered websocket"
            }
        };
        conns.push((s, kind));
    }
    // The API keeps answering while they sit there (latency printed, not asserted).
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = srv.get("/api/devices");
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        thread::sleep(Duration::from_millis(50));
    }
    println!("slowest API answer with 400 idle connections open: {worst:?}");
    // Every one of them is closed by the server within its deadline (+ timer resolution).
    for (mut s, kind) in conns {
        let (bytes, ending) = read_to_end_bounded(&mut s, Duration::from_secs(15));
        assert_ne!(
            ending,
            Ending::Open,
            "a {kind} connection was never reaped; it got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        if kind == "half head" {
            assert!(
                bytes.starts_with(b"HTTP/1.1 408"),
                "a slow request head is answered 408: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    wait_until(
        Duration::from_secs(10),
        "connection gauge back down",
        || {
            metric(&srv, "fleetgate_connections{shard=\"0\"}")
                + metric(&srv, "fleetgate_connections{shard=\"1\"}")
                <= 1.0
        },
    );
}

fn connections_per_address_are_capped(io: &str) {
    let srv = Server::start_with(io, &["--max-connections-per-ip", "5"]);
    let held: Vec<TcpStream> = (0..5).map(|_| tcp_from("127.0.0.2", srv.addr())).collect();
    // Make sure the server has accepted all five before the sixth.
    wait_until(Duration::from_secs(10), "five connections accepted", || {
        metric(&srv, "fleetgate_connections{shard=\"0\"}")
            + metric(&srv, "fleetgate_connections{shard=\"1\"}")
            >= 5.0
    });
    let mut sixth = tcp_from("127.0.0.2", srv.addr());
    sixth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let r = read_response(&mut sixth, &mut buf, SOON).expect("an answer");
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error_code(&r.json()), "too_many_connections");
    // Other addresses are not affected.
    let mut other = tcp_from("127.0.0.3", srv.addr());
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut other, &mut buf, SOON)
            .expect("answer")
            .status,
        200
    );
    assert!(
        metric(
            &srv,
            "fleetgate_limit_hits_total{limit=\"connections_per_ip\"}"
        ) >= 1.0
    );
    // Closing one frees a slot.
    drop(held);
    wait_until(Duration::from_secs(10), "a slot frees up", || {
        let mut s = tcp_from("127.0.0.2", srv.addr());
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, SOON).is_ok_and(|r| r.status == 200)
    });
}

fn bad_tokens_are_throttled_but_never_lock_out_a_right_one(io: &str) {
    let srv = Server::start_with(io, &["--auth-free-failures", "3"]);
    let dev = srv.create_device("victim");
    let other = srv.create_device("bystander");
    // The attack: wrong tokens for the victim's id, from the address the fleet shares (a NAT).
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (m, mut ws) = try_register(&srv, "127.0.0.2", &dev, "wrong-token");
        answers.push(s(&m, "code").to_string());
        assert_eq!(ws.expect_close(SOON), Some(1008));
    }
    assert_eq!(answers[..2], ["auth_failed", "auth_failed"], "{answers:?}");
    assert!(
        answers[2..].iter().all(|c| c == "auth_throttled"),
        "once backing off, failures are answered throttled: {answers:?}"
    );
    assert!(metric(&srv, "fleetgate_limit_hits_total{limit=\"auth_throttled\"}") >= 4.0);
    // The right tokens still get in, from that address and for that device id, at once.
    let (m, _) = try_register(&srv, "127.0.0.2", &dev, &dev.token);
    assert_eq!(s(&m, "type"), "registered", "{}", enc(&m));
    let (m, _) = try_register(&srv, "127.0.0.2", &other, &other.token);
    assert_eq!(s(&m, "type"), "registered", "{}", enc(&m));
    // And a wrong one from there is still refused as throttled: a right token washes nothing.
    let (m, _) = try_register(&srv, "127.0.0.2", &dev, "wrong-again");
    assert_eq!(s(&m, "code"), "auth_throttled", "{}", enc(&m));

    // The admin API: wrong bearer tokens from one address are answered 429 once backing off,
    // while the right token from the same address works.
    let bearer = |token: &str| {
        let mut s = tcp_from("127.0.0.4", srv.addr());
        let req = format!(
            "GET /api/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf, SOON).expect("answer")
    };
    assert_eq!(bearer("not-the-token").status, 401);
    assert_eq!(bearer("not-the-token").status, 401);
    let r = bearer("not-the-token");
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
    let r = bearer(srv.admin_token());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Not logged-in browsers (no token at all) are never throttled.
    for _ in 0..10 {
        let r = raw_http(
            srv.addr(),
            b"GET /api/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 401);
    }
}

fn a_flapping_device_is_banned_and_let_back_after_the_ban(io: &str) {
    let srv = Server::start_with(io, &["--flap-max-per-minute", "3", "--flap-ban", "2"]);
    let dev = srv.create_device("flappy");
    for _ in 0..3 {
        let mut ws = srv.ws();
        ws.register(&dev);
        ws.close();
    }
    let mut ws = srv.ws();
    ws.send_text(&register_frame(&dev, &dev.token));
    let m = ws.recv_json(SOON);
    assert_eq!(s(&m, "code"), "banned", "{}", enc(&m));
    assert_eq!(ws.expect_close(SOON), Some(1008));
    // Still banned a moment later.
    let mut ws = srv.ws();
    ws.send_text(&register_frame(&dev, &dev.token));
    assert_eq!(s(&ws.recv_json(SOON), "code"), "banned");
    assert!(metric(&srv, "fleetgate_limit_hits_total{limit=\"flapping\"}") >= 2.0);
    // Let back after the ban.
    thread::sleep(Duration::from_millis(2300));
    let mut ws = srv.ws();
    ws.register(&dev);
    ws.ping_pong();
}

fn a_flood_is_held_back_without_loss_then_cut_off(io: &str) {
    let srv = Server::start_with(
        io,
        &["--max-msg-rate", "100", "--rate-disconnect-after", "2"],
    );
    let dev = srv.create_device("chatty");
    // 400 frames at once: twice the burst. All are acked (held back, never dropped).
    let mut ws = srv.ws();
    ws.register(&dev);
    for i in 0..400 {
        ws.send_json(&json!({"type":"telemetry","msg_id": format!("m{i}"),"payload":{"i": i}}));
    }
    let mut acked = std::collections::HashSet::new();
    while acked.len() < 400 {
        let m = ws.recv_type("ack", SOON);
        acked.insert(s(&m, "msg_id").to_string());
    }
    assert!(metric(&srv, "fleetgate_limit_hits_total{limit=\"msg_rate\"}") >= 1.0);
    assert_eq!(srv.telemetry(&dev.id).len(), 400);
    ws.close();

    // A session that keeps flooding past the rate is closed after --rate-disconnect-after.
    let mut ws = srv.ws();
    ws.register(&dev);
    let mut raw = ws.raw();
    raw.set_write_timeout(Some(Duration::from_millis(500))).ok();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = thread::spawn({
        let stop = stop.clone();
        move || {
            let f = frame(true, 1, br#"{"type":"telemetry","payload":{"x":1}}"#, true);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match raw.write_all(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        }
    });
    let m = ws.recv_matching(Duration::from_secs(25), "rate_limited error", |m| {
        opt_s(m, "type") == Some("error")
    });
    stop.store(true, Ordering::Relaxed);
    assert_eq!(s(&m, "code"), "rate_limited", "{}", enc(&m));
    assert_eq!(ws.expect_close(SOON), Some(1008));
    let _ = writer.join();
    assert!(
        metric(
            &srv,
            "fleetgate_limit_hits_total{limit=\"msg_rate_disconnect\"}"
        ) >= 1.0
    );
}

fn a_slow_admin_subscriber_is_cut_off_while_devices_keep_flowing(io: &str) {
    let srv = Server::start_with(io, &["--write-timeout", "3", "--max-msg-rate", "0"]);
    let dev = srv.create_device("busy");
    // A subscriber with a tiny receive buffer that never reads after subscribing.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let to: std::net::SocketAddr = srv.addr().parse().expect("addr");
    sock.connect(&to.into()).expect("connect");
    let mut slow = Ws::try_over(sock.into(), srv.addr()).expect("ws");
    slow.send_json(&json!({"type":"subscribe","role":"admin","token": srv.admin_token()}));
    assert_eq!(s(&slow.recv_json(SOON), "type"), "subscribed");
    // A well-behaved subscriber that keeps reading.
    let mut good = srv.admin_session();
    let good_seen = thread::spawn(move || {
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match good.recv(Duration::from_secs(5)) {
                WsEvent::Json(m) if opt_s(&m, "type") == Some("telemetry") => n += 1,
                WsEvent::Json(_) | WsEvent::Pong(_) => {}
                _ => break,
            }
        }
        n
    });

    let mut ws = srv.ws();
    ws.register(&dev);
    let payload = "x".repeat(1000);
    let total = 5000;
    let mut acked = 0;
    let mut sent = 0;
    while acked < total {
        while sent < total && sent - acked < 64 {
            ws.send_json(&json!({"type":"telemetry","msg_id": format!("t{sent}"),"payload":{"pad": payload.as_str()}}));
            sent += 1;
        }
        ws.recv_type("ack", SOON);
        acked += 1;
    }
    // Every record of the device got through; the slow subscriber was cut off meanwhile.
    wait_until(
        Duration::from_secs(20),
        "the slow subscriber is cut off",
        || {
            metric(&srv, "fleetgate_slow_subscribers_total")
                + metric(&srv, "fleetgate_limit_hits_total{limit=\"write_timeout\"}")
                >= 1.0
        },
    );
    let mut raw = slow.raw();
    let (_, ending) = read_to_end_bounded(&mut raw, Duration::from_secs(20));
    assert_ne!(
        ending,
        Ending::Open,
        "the slow subscriber's connection is closed"
    );
    ws.close();
    let seen = good_seen.join().expect("good subscriber");
    assert!(
        seen >= total as u64,
        "the reading subscriber saw every telemetry broadcast ({seen} of {total})"
    );
}

fn a_message_beyond_the_buffer_budget_is_refused_and_the_server_goes_on(io: &str) {
    // 1 MiB over 2 shards: 512 KiB of read buffers per shard.
    let srv = Server::start_with(io, &["--buffer-budget-mb", "1"]);
    let dev = srv.create_device("big");
    let mut ws = srv.ws();
    ws.register(&dev);
    let big = "y".repeat(900 * 1024);
    let mut raw = ws.raw();
    let f = frame(
        true,
        1,
        format!(r#"{{"type":"telemetry","payload":{{"blob":"{big}"}}}}"#).as_bytes(),
        true,
    );
    // The server may close before it has read everything: a failed write is expected.
    let _ = raw.write_all(&f);
    let m = ws.recv_matching(SOON, "server_busy error", |m| {
        opt_s(m, "type") == Some("error")
    });
    assert_eq!(s(&m, "code"), "server_busy", "{}", enc(&m));
    assert_eq!(ws.expect_close(SOON), Some(1013));
    assert!(metric(&srv, "fleetgate_limit_hits_total{limit=\"buffer_budget\"}") >= 1.0);
    // Small messages still flow, on a new session.
    let mut ws = srv.ws();
    ws.register(&dev);
    ws.send_json(&json!({"type":"telemetry","msg_id":"after","payload":{"ok":true}}));
    assert_eq!(s(&ws.recv_type("ack", SOON), "msg_id"), "after");
}

/// Every way the server ends an HTTP connection gives its read buffer back to the budget: after
/// `Connection: close` answers, HTTP/1.0 answers and malformed requests, many times over what the
/// budget holds, requests are still answered, a device still stores, and the budget is empty again.
/// (A buffer dropped instead of returned stayed charged: enough closed connections starved every
/// connection of the shard.)
fn connections_the_server_closes_give_their_read_buffers_back(io: &str) {
    // 1 MiB over 2 shards: 32 pooled read buffers of 16 KiB per shard.
    let srv = Server::start_with(io, &["--buffer-budget-mb", "1"]);
    let requests: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ];
    for i in 0..300 {
        let r = raw_http(srv.addr(), requests[i % requests.len()]);
        let want = if i % requests.len() == 2 { 400 } else { 200 };
        assert_eq!(r.status, want, "request {i}: {:?}", r);
    }
    let dev = srv.create_device("after closes");
    let mut ws = srv.ws();
    ws.register(&dev);
    ws.send_json(&json!({"type":"telemetry","msg_id":"m","payload":{"ok":true}}));
    assert_eq!(s(&ws.recv_type("ack", SOON), "msg_id"), "m");
    drop(ws);
    // The gauge is sampled every tick: it comes back to nothing once the last session is gone.
    wait_until(SOON, "read buffers back in the budget", || {
        metric(
            &srv,
            "fleetgate_queue_depth{queue=\"read_buffer_bytes\",shard=\"0\"}",
        ) + metric(
            &srv,
            "fleetgate_queue_depth{queue=\"read_buffer_bytes\",shard=\"1\"}",
        ) == 0.0
    });
}
