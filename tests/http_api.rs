//! The HTTP/1.1 front door and the admin API, under both I/O drivers.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

for_both_drivers!(
    auth_required_everywhere_but_healthz,
    unknown_routes_are_json_404,
    device_crud,
    create_device_validation_errors,
    device_list_cursor_pagination,
    events_pagination_and_filters,
    healthz_and_metrics,
    keep_alive_and_pipelining,
    oversize_body_is_413,
    oversize_headers_rejected,
    slowloris_header_is_closed,
    garbage_request_line_is_400,
);

fn assert_json_error(r: &RawResponse, status: u16) -> String {
    assert_eq!(
        r.status,
        status,
        "{r:?} body {}",
        String::from_utf8_lossy(&r.body)
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}"
    );
    error_code(&r.json())
}

fn get_raw(addr: &str, path: &str, auth: Option<&str>) -> RawResponse {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    raw_http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn post_raw(addr: &str, path: &str, token: &str, ct: &str, body: &[u8]) -> RawResponse {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_http(addr, &req)
}

fn auth_required_everywhere_but_healthz(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    for path in ["/api/devices", "/api/events", "/metrics"] {
        let r = get_raw(addr, path, None);
        assert_eq!(
            assert_json_error(&r, 401),
            "unauthorized",
            "{path} without token"
        );
        let r = get_raw(addr, path, Some("Bearer wrong-token"));
        assert_eq!(
            assert_json_error(&r, 401),
            "unauthorized",
            "{path} with a wrong token"
        );
        let r = get_raw(addr, path, Some(&format!("Basic {}", srv.admin_token())));
        assert_eq!(
            assert_json_error(&r, 401),
            "unauthorized",
            "{path} with another scheme"
        );
        let r = get_raw(addr, path, Some(&format!("Bearer {}", srv.admin_token())));
        assert_eq!(r.status, 200, "{path} with the admin token: {r:?}");
    }
    // The library client too.
    let r = srv.anonymous().get("/api/devices").unwrap();
    assert_eq!(r.status, 401);
    // A device token is not an admin token.
    let dev = srv.create_device("d");
    let r = get_raw(addr, "/api/devices", Some(&format!("Bearer {}", dev.token)));
    assert_eq!(assert_json_error(&r, 401), "unauthorized");
    // Writes are protected as well.
    let r = post_raw(
        addr,
        "/api/devices",
        "nope",
        "application/json",
        br#"{"name":"x"}"#,
    );
    assert_eq!(assert_json_error(&r, 401), "unauthorized");
    assert_eq!(
        srv.list_all("/api/devices").len(),
        1,
        "unauthorized POST created a device"
    );

    let r = get_raw(addr, "/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(s(&r.json(), "status"), "ok");
}

fn unknown_routes_are_json_404(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    let bearer = format!("Bearer {}", srv.admin_token());
    for path in [
        "/nope",
        "/api/nope",
        "/api/devices/7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a",
    ] {
        let r = get_raw(addr, path, Some(&bearer));
        assert_json_error(&r, 404);
    }
    let r = get_raw(addr, "/", None);
    assert!(
        r.status == 404 || r.status == 200 || r.status / 100 == 3,
        "GET /: {r:?}"
    );
    // Not a UUID: 404 or 400, as a JSON error.
    let r = get_raw(addr, "/api/devices/not-a-uuid", Some(&bearer));
    assert!(r.status == 404 || r.status == 400, "{r:?}");
    error_code(&r.json());
    // Wrong method on a known route: 405 (or 404), JSON.
    let r = raw_http(
        addr,
        format!("PUT /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: {bearer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(r.status == 405 || r.status == 404, "{r:?}");
    error_code(&r.json());
    // GET /ws without an upgrade is a client error, not a crash.
    let r = get_raw(addr, "/ws", None);
    assert!(r.status / 100 == 4, "{r:?}");
}

fn device_crud(io: &str) {
    let srv = Server::start(io);
    let r = srv.post("/api/devices", &json!({"name":"door-1","serial":"SN-1"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let d = r.json();
    let id = s(&d, "device_id").to_string();
    let parsed = uuid::Uuid::parse_str(&id).expect("device_id is a UUID");
    assert_eq!(parsed.get_version_num(), 4, "device_id is a UUID v4");
    let token = s(&d, "token");
    assert!(token.starts_with("tok_"), "{token}");
    assert!(token.len() >= 4 + 32, "token too short: {token}");
    assert!(
        token[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    assert_eq!(s(&d, "name"), "door-1");
    assert_eq!(s(&d, "protocol"), "generic");
    assert_eq!(s(&d, "serial"), "SN-1");

    // Tokens are shown only at creation.
    let r = srv.get(&format!("/api/devices/{id}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let g = r.json();
    assert_eq!(s(&g, "device_id"), id);
    assert_eq!(s(&g, "name"), "door-1");
    assert_eq!(s(&g, "serial"), "SN-1");
    assert_eq!(s(&g, "status"), "offline");
    assert!(
        !String::from_utf8_lossy(&r.body).contains(token),
        "GET shows the token"
    );
    let list = srv.list_all("/api/devices");
    assert_eq!(list.len(), 1);
    assert!(!enc(&list[0]).contains(token), "list shows the token");

    // Other protocols.
    for p in ["aiface", "smackbio", "http", "generic"] {
        let r = srv.post(
            "/api/devices",
            &json!({"name": format!("dev-{p}"), "protocol": p}),
        );
        assert_eq!(r.status, 201, "{p}: {}", r.text());
        assert_eq!(s(&r.json(), "protocol"), p);
    }
    let r = srv.post("/api/devices", &json!({"name":"x","protocol":"bogus"}));
    assert_eq!(r.status, 400, "{}", r.text());
    error_code(&r.json());
    // Two devices never share an id or a token.
    let a = srv.create_device("same-name");
    let b = srv.create_device("same-name");
    assert_ne!(a.id, b.id);
    assert_ne!(a.token, b.token);

    // PATCH renames.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"name":"door-renamed"}),
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let g = srv.get(&format!("/api/devices/{id}")).json();
    assert_eq!(s(&g, "name"), "door-renamed");
    assert_eq!(
        s(&g, "serial"),
        "SN-1",
        "PATCH of the name keeps the serial"
    );
    let r = srv.patch(&format!("/api/devices/{id}"), &json!({"name": 5}));
    assert_eq!(r.status, 400, "{}", r.text());
    error_code(&r.json());
    let r = srv.patch(
        "/api/devices/7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a",
        &json!({"name":"x"}),
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // The renamed device still connects; DELETE ends that and frees nothing else.
    let dev = Device {
        id: id.clone(),
        token: token.to_string(),
        name: "door-renamed".into(),
    };
    let mut ws = srv.device_session(&dev);
    ws.ping_pong();
    let r = srv.delete(&format!("/api/devices/{id}"));
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    let r = srv.get(&format!("/api/devices/{id}"));
    assert_eq!(r.status, 404, "{}", r.text());
    error_code(&r.json());
    assert!(srv.listed_device(&id).is_none());
    ws.expect_end(SOON);
    let mut again = srv.ws();
    again.send_json(&json!({"type":"register","device_id": id.as_str(),"token": token}));
    let m = again.recv_json(SOON);
    assert_eq!(
        s(&m, "code"),
        "auth_failed",
        "deleted device registered: {}",
        enc(&m)
    );
    let r = srv.delete(&format!("/api/devices/{id}"));
    assert_eq!(r.status, 404, "second DELETE: {}", r.text());
    assert!(srv.listed_device(&a.id).is_some());
}

fn create_device_validation_errors(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    let tok = srv.admin_token();
    let j = "application/json";
    let r = post_raw(addr, "/api/devices", tok, j, br#"{}"#);
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, br#"{"serial":"x"}"#);
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, br#"{"name":42}"#);
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, br#"{"name":"x""#);
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, b"");
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, br#"["name"]"#);
    assert_json_error(&r, 400);
    let r = post_raw(addr, "/api/devices", tok, j, b"{\"name\":\"\xff\"}");
    assert_json_error(&r, 400);
    // Wrong content type: 415 (or 400).
    let r = post_raw(addr, "/api/devices", tok, "text/plain", br#"{"name":"x"}"#);
    assert!(r.status == 415 || r.status == 400, "{r:?}");
    assert_json_error(&r, r.status);
    // Content type with parameters is fine.
    let r = post_raw(
        addr,
        "/api/devices",
        tok,
        "application/json; charset=utf-8",
        br#"{"name":"ok"}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        srv.list_all("/api/devices").len(),
        1,
        "only the valid request created a device"
    );
    // Bad query values.
    let r = get_raw(
        addr,
        "/api/devices?limit=abc",
        Some(&format!("Bearer {tok}")),
    );
    assert_json_error(&r, 400);
    let r = get_raw(
        addr,
        "/api/devices?cursor=%%%garbage",
        Some(&format!("Bearer {tok}")),
    );
    assert_json_error(&r, 400);
}

fn device_list_cursor_pagination(io: &str) {
    let srv = Server::start(io);
    let mut ids = std::collections::HashSet::new();
    for i in 0..25 {
        ids.insert(srv.create_device(&format!("dev-{i:02}")).id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 10, "pagination does not end");
        let path = match &cursor {
            Some(c) => format!("/api/devices?limit=10&cursor={}", pct(c)),
            None => "/api/devices?limit=10".to_string(),
        };
        let r = srv.get(&path);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let items = arr(&v, "items");
        assert!(items.len() <= 10, "limit=10 gave {}", items.len());
        seen.extend(items.iter().map(|d| s(d, "device_id").to_string()));
        let nc = field(&v, "next_cursor");
        if nc.is_null() {
            break;
        }
        cursor = Some(nc.as_str().expect("next_cursor string").to_string());
    }
    assert!(
        pages >= 3,
        "25 devices at limit=10 need 3 pages, got {pages}"
    );
    assert_eq!(seen.len(), 25, "every device exactly once across pages");
    assert_eq!(set(seen.iter().cloned()), ids);
    // Without a limit: a default page, still a list object.
    let v = srv.get("/api/devices").json();
    assert!(!arr(&v, "items").is_empty());
    let _ = field(&v, "next_cursor");
}

fn events_pagination_and_filters(io: &str) {
    let srv = Server::start(io);
    let a = srv.create_device("a");
    let b = srv.create_device("b");
    let mut wa = srv.device_session(&a);
    let mut wb = srv.device_session(&b);
    for n in 0..12u64 {
        wa.send_json(&json!({"type":"event","msg_id": format!("a{n}"),"event_type":"tick","payload":{"n": n}}));
        wb.send_json(&json!({"type":"event","msg_id": format!("b{n}"),"event_type":"tock","payload":{"n": n}}));
    }
    for _ in 0..12 {
        wa.recv_type("ack", SOON);
        wb.recv_type("ack", SOON);
    }
    let ticks = srv.list_all(&format!("/api/events?device_id={}&type=tick&limit=5", a.id));
    assert_eq!(ticks.len(), 12);
    let ns: Vec<u64> = ticks.iter().map(|e| u(field(e, "payload"), "n")).collect();
    let newest_first: Vec<u64> = (0..12).rev().collect();
    let oldest_first: Vec<u64> = (0..12).collect();
    assert!(
        ns == newest_first || ns == oldest_first,
        "events in time order across pages (either direction): {ns:?}"
    );
    assert!(
        ticks
            .iter()
            .all(|e| s(e, "device_id") == a.id && s(e, "source") == "device")
    );
    let tocks = srv.list_all("/api/events?type=tock&limit=5");
    assert_eq!(tocks.len(), 12);
    let none = srv.list_all(&format!("/api/events?device_id={}&type=tock", a.id));
    assert!(none.is_empty());
    let all = srv.list_all("/api/events?limit=7");
    assert!(all.len() >= 24 + 2, "all events: {}", all.len());
    let ids = set(all.iter().map(|e| enc(field(e, "id"))));
    assert_eq!(ids.len(), all.len(), "event ids unique across pages");
}

fn healthz_and_metrics(io: &str) {
    let srv = Server::start(io);
    let r = get_raw(srv.addr(), "/healthz", None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert_eq!(s(&r.json(), "status"), "ok");

    // Some traffic so counters exist.
    let dev = srv.create_device("m");
    let mut ws = srv.device_session(&dev);
    ws.send_json(&json!({"type":"telemetry","msg_id":"x","payload":{"a":1}}));
    ws.recv_type("ack", SOON);
    let mut bad = srv.ws();
    bad.send_json(&json!({"type":"register","device_id": dev.id.as_str(),"token":"tok_bad"}));
    bad.expect_close(SOON);

    let r = get_raw(
        srv.addr(),
        "/metrics",
        Some(&format!("Bearer {}", srv.admin_token())),
    );
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "metrics content-type {ct:?}");
    let text = String::from_utf8_lossy(&r.body);
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(|c| c == '{' || c == ' ').next().unwrap())
        .collect();
    assert!(!names.is_empty(), "no metrics:\n{text}");
    assert!(
        names.iter().all(|n| n.starts_with("fleetgate_")),
        "every metric is prefixed fleetgate_: {names:?}"
    );
    // What the issue names: sessions by protocol, messages by type, bytes, batch commit
    // latency, auth failures, queue depths.
    for wanted in [
        "fleetgate_sessions",
        "fleetgate_messages_total",
        "fleetgate_bytes_received_total",
        "fleetgate_batch_commit_seconds",
        "fleetgate_auth_failures_total",
        "fleetgate_queue_depth",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(wanted)),
            "{wanted} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.contains("fleetgate_messages_total{type=\"telemetry\"}"),
        "messages are counted by type:\n{text}"
    );
    let r = srv.admin().get("/metrics").unwrap();
    assert_eq!(r.status, 200);
}

fn keep_alive_and_pipelining(io: &str) {
    let srv = Server::start(io);
    let tok = srv.admin_token().to_string();
    let mut s1 = TcpStream::connect(srv.addr()).unwrap();
    let mut buf = Vec::new();
    // Two requests, one after the other, on one connection.
    for _ in 0..2 {
        s1.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s1, &mut buf, SOON).expect("keep-alive response");
        assert_eq!(r.status, 200);
        assert_eq!(s(&r.json(), "status"), "ok");
    }
    // A POST with a body, then a GET, still on the same connection.
    let body = br#"{"name":"ka"}"#;
    s1.write_all(
        format!("POST /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    )
    .unwrap();
    s1.write_all(body).unwrap();
    let r = read_response(&mut s1, &mut buf, SOON).expect("POST on a kept-alive connection");
    assert_eq!(r.status, 201, "{r:?}");
    s1.write_all(
        format!("GET /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let r = read_response(&mut s1, &mut buf, SOON).expect("GET after POST");
    assert_eq!(r.status, 200);
    assert_eq!(arr(&r.json(), "items").len(), 1);
    // An error response does not end the connection (the request was well-formed).
    s1.write_all(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s1, &mut buf, SOON).expect("404 on keep-alive");
    assert_eq!(r.status, 404);
    s1.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut s1, &mut buf, SOON)
            .expect("after 404")
            .status,
        200
    );

    // Pipelined: three requests in one write, answered in order.
    let mut s2 = TcpStream::connect(srv.addr()).unwrap();
    s2.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let codes: Vec<u16> = (0..3)
        .map(|i| {
            read_response(&mut s2, &mut buf, SOON)
                .unwrap_or_else(|e| panic!("pipelined #{i}: {e}"))
                .status
        })
        .collect();
    assert_eq!(codes, vec![200, 404, 200], "pipelined responses in order");

    // Connection: close is honoured.
    let mut s3 = TcpStream::connect(srv.addr()).unwrap();
    s3.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s3, &mut buf, SOON).unwrap().status, 200);
    let (rest, ending) = read_to_end_bounded(&mut s3, SOON);
    assert!(
        rest.is_empty() && ending != Ending::Open,
        "not closed after Connection: close"
    );
}

fn oversize_body_is_413(io: &str) {
    let srv = Server::start(io);
    let tok = srv.admin_token();
    // Declared far over the limit: answered without reading the body.
    let mut s1 = TcpStream::connect(srv.addr()).unwrap();
    s1.set_write_timeout(Some(Duration::from_secs(10))).ok();
    s1.write_all(
        format!("POST /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 20 << 20).as_bytes(),
    )
    .unwrap();
    let _ = s1.write_all(&vec![b' '; 64 << 10]);
    let mut buf = Vec::new();
    let r = read_response(&mut s1, &mut buf, SOON).expect("413 answer");
    assert_json_error(&r, 413);

    // An actual 2 MiB body.
    let mut body = b"{\"name\":\"".to_vec();
    body.extend(std::iter::repeat_n(b'a', 2 << 20));
    body.extend(b"\"}");
    let mut s2 = TcpStream::connect(srv.addr()).unwrap();
    s2.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let writer = {
        let mut w = s2.try_clone().unwrap();
        let tok = tok.to_string();
        std::thread::spawn(move || {
            let _ = w.write_all(
                format!("POST /api/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            );
            let _ = w.write_all(&body);
        })
    };
    let mut buf = Vec::new();
    let r = read_response(&mut s2, &mut buf, SOON).expect("413 for a 2 MiB body");
    assert_json_error(&r, 413);
    writer.join().unwrap();
    assert!(srv.list_all("/api/devices").is_empty());
    // The server still answers.
    assert_eq!(get_raw(srv.addr(), "/healthz", None).status, 200);
}

fn oversize_headers_rejected(io: &str) {
    let srv = Server::start(io);
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..2000 {
        req.extend(format!("X-Filler-{i}: {}\r\n", "v".repeat(50)).as_bytes());
    }
    req.extend(b"\r\n");
    let mut s1 = TcpStream::connect(srv.addr()).unwrap();
    s1.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let _ = s1.write_all(&req);
    let (bytes, ending) = read_to_end_bounded(&mut s1, Duration::from_secs(30));
    assert_ne!(
        ending,
        Ending::Open,
        "connection with ~130 KB of headers left open"
    );
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
            "oversize headers answered {:?}",
            &text[..text.len().min(100)]
        );
    }
    assert_eq!(get_raw(srv.addr(), "/healthz", None).status, 200);
}

fn slowloris_header_is_closed(io: &str) {
    let srv = Server::start(io);
    let mut s1 = TcpStream::connect(srv.addr()).unwrap();
    s1.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    // Trickle a header byte every 200 ms, never finishing the head; bounded at 60 s.
    s1.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut closed = false;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        if s1.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        use std::io::Read;
        match s1.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "a never-finished request head was kept open for 60 s"
    );
    if !answer.is_empty() {
        let t = String::from_utf8_lossy(&answer);
        assert!(
            t.starts_with("HTTP/1.1 408") || t.starts_with("HTTP/1.1 4"),
            "slowloris answered {t:?}"
        );
    }
    // Others are served meanwhile and after.
    assert_eq!(get_raw(srv.addr(), "/healthz", None).status, 200);
}

fn garbage_request_line_is_400(io: &str) {
    let srv = Server::start(io);
    for req in [
        &b"HELLO\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /api/devices HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
    ] {
        let mut s1 = TcpStream::connect(srv.addr()).unwrap();
        s1.write_all(req).unwrap();
        let (bytes, ending) = read_to_end_bounded(&mut s1, SOON);
        assert_ne!(
            ending,
            Ending::Open,
            "connection left open after {:?}",
            String::from_utf8_lossy(req)
        );
        let t = String::from_utf8_lossy(&bytes);
        assert!(
            t.starts_with("HTTP/1.1 400")
                || t.starts_with("HTTP/1.1 505")
                || t.starts_with("HTTP/1.1 501"),
            "answer to {:?}: {:?}",
            String::from_utf8_lossy(req),
            &t[..t.len().min(120)]
        );
    }
    assert_eq!(get_raw(srv.addr(), "/healthz", None).status, 200);
}
