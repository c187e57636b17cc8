//! NDJSON exports (`/api/devices/{id}/telemetry.ndjson`, `/api/events.ndjson`) read off the wire,
//! and `fleetgate export` run as an operator runs it.

mod common;

use common::*;
use fleetgate::client::Client;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

/// Sends telemetry `{"seq"}` for each of `seqs` with msg_ids, a window in flight, and waits for
/// every ack.
fn send_telemetry(srv: &Server, dev: &Device, seqs: std::ops::Range<u64>) {
    let mut ws = srv.device_session(dev);
    let (mut next, mut in_flight) = (seqs.start, 0);
    while next < seqs.end || in_flight > 0 {
        while next < seqs.end && in_flight < 64 {
            ws.send_json(
                &json!({"type":"telemetry","msg_id": format!("t{next}"),"payload":{"seq": next}}),
            );
            next += 1;
            in_flight += 1;
        }
        ws.recv_type("ack", SOON);
        in_flight -= 1;
    }
    ws.close();
}

/// The lines of an NDJSON body, each parsed.
fn lines(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "every line ends: {text:?}"
    );
    text.lines().map(|l| parse(l.as_bytes())).collect()
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| u(field(l, "payload"), "seq"))
        .collect()
}

/// An authorized GET on a connection of its own, read whole (de-chunked).
fn get(srv: &Server, path: &str, token: &str) -> RawResponse {
    raw_http(
        srv.addr(),
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// The chunk sizes of a chunked response, read off the socket as they came.
fn chunk_sizes(srv: &Server, path: &str) -> Vec<usize> {
    let mut s = TcpStream::connect(srv.addr()).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        srv.admin_token()
    )
    .expect("send");
    let (raw, ending) = read_to_end_bounded(&mut s, SOON);
    assert_eq!(ending, Ending::Eof, "the response ends with the connection");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let mut rest = &raw[head_end..];
    let mut sizes = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("hex"), 16)
            .expect("chunk size");
        if size == 0 {
            return sizes;
        }
        sizes.push(size);
        rest = &rest[line_end + 2 + size + 2..];
    }
}

fn ts_ms(v: &Value) -> i64 {
    s(v, "ts")
        .parse::<jiff::Timestamp>()
        .expect("ts")
        .as_millisecond()
}

#[test]
fn a_large_telemetry_export_streams_in_chunks_oldest_first() {
    let srv = Server::start(DRIVERS[0]);
    let dev = srv.create_device("busy");
    let other = srv.create_device("other");
    send_telemetry(&srv, &dev, 0..2500);
    send_telemetry(&srv, &other, 0..3);
    let path = format!("/api/devices/{}/telemetry.ndjson", dev.id);
    let r = get(&srv, &path, srv.admin_token());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|d| d.contains("telemetry.ndjson")),
        "{:?}",
        r.headers
    );
    let all = lines(&r.body);
    assert_eq!(
        seqs(&all),
        (0..2500).collect::<Vec<_>>(),
        "every record, oldest first"
    );
    for l in &all {
        assert_eq!(s(l, "device_id"), dev.id);
        assert_rfc3339(s(l, "ts"));
    }
    let sizes = chunk_sizes(&srv, &path);
    assert!(
        sizes.len() >= 3,
        "2500 rows come in chunks of at most 1000: {sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), r.body.len());
    let head = get(
        &srv,
        &path.replace("telemetry.ndjson", "telemetry"),
        srv.admin_token(),
    );
    assert_eq!(head.status, 200, "the list beside it still answers");
}

#[test]
fn exports_keep_to_from_and_to() {
    let srv = Server::start(DRIVERS[0]);
    let dev = srv.create_device("ranged");
    // Three batches with pauses between, so millisecond times fall clearly between them.
    for (i, batch) in [0..5, 5..10, 10..15].into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        send_telemetry(&srv, &dev, batch);
    }
    let path = format!("/api/devices/{}/telemetry.ndjson", dev.id);
    let all = lines(&get(&srv, &path, srv.admin_token()).body);
    assert_eq!(all.len(), 15);
    let from = s(&all[5], "ts");
    let to = jiff::Timestamp::from_millisecond(ts_ms(&all[9]) + 1)
        .expect("time")
        .to_string();
    let r = get(
        &srv,
        &format!("{path}?from={from}&to={to}"),
        srv.admin_token(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(seqs(&lines(&r.body)), (5..10).collect::<Vec<_>>());
    let r = get(&srv, &format!("{path}?from={from}"), srv.admin_token());
    assert_eq!(seqs(&lines(&r.body)), (5..15).collect::<Vec<_>>());
    let r = get(&srv, &format!("{path}?to={to}"), srv.admin_token());
    assert_eq!(seqs(&lines(&r.body)), (0..10).collect::<Vec<_>>());
    let r = get(
        &srv,
        &format!("{path}?from=2100-01-01T00:00:00Z"),
        srv.admin_token(),
    );
    assert_eq!(
        (r.status, r.body.len()),
        (200, 0),
        "an empty range is an empty body"
    );

    // Events carry their receive time to the microsecond (`id`): bounds are inclusive exactly.
    let mut ws = srv.device_session(&dev);
    for n in 0..10 {
        ws.send_json(&json!({"type":"event","event_type":"door","msg_id": format!("e{n}"),"payload":{"n": n}}));
        ws.recv_type("ack", SOON);
    }
    ws.close();
    let mut doors: Vec<Value> = srv.events(&format!("device_id={}&type=door", dev.id));
    doors.sort_by_key(|e| u(e, "id"));
    let at = |i: usize| {
        jiff::Timestamp::from_microsecond(u(&doors[i], "id") as i64)
            .expect("time")
            .to_string()
    };
    let (from, to) = (at(3), at(6));
    for path in [
        format!(
            "/api/events.ndjson?device_id={}&from={from}&to={to}",
            dev.id
        ),
        format!("/api/events.ndjson?from={from}&to={to}"),
    ] {
        let r = get(&srv, &path, srv.admin_token());
        assert_eq!(r.status, 200, "{path}");
        let events = lines(&r.body);
        let ids: Vec<u64> = events.iter().map(|e| u(e, "id")).collect();
        let want: Vec<u64> = doors[3..=6].iter().map(|e| u(e, "id")).collect();
        assert_eq!(ids, want, "{path}");
        assert!(events.iter().all(|e| s(e, "type") == "door"));
    }
    let r = get(&srv, "/api/events.ndjson", srv.admin_token());
    let every = lines(&r.body);
    let ids: Vec<u64> = every.iter().map(|e| u(e, "id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert!(every.iter().any(|e| s(e, "type") == "device_connected"));
}

#[test]
fn bad_export_requests_are_refused_clearly() {
    let srv = Server::start(DRIVERS[0]);
    let dev = srv.create_device("d");
    let telemetry = format!("/api/devices/{}/telemetry.ndjson", dev.id);
    let refused = |path: &str, status: u16| -> String {
        let r = get(&srv, path, srv.admin_token());
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let v = r.json();
        format!("{} {}", error_code(&v), s(field(&v, "error"), "message"))
    };
    for base in [telemetry.as_str(), "/api/events.ndjson"] {
        let e = refused(&format!("{base}?from=yesterday"), 400);
        assert_eq!(
            e,
            "invalid_query from must be an RFC 3339 time such as 2026-06-12T00:00:00Z"
        );
        let e = refused(&format!("{base}?to=2026-13-01T00:00:00Z"), 400);
        assert!(e.starts_with("invalid_query to must be"), "{e}");
        let e = refused(
            &format!("{base}?from=2026-06-02T00:00:00Z&to=2026-06-01T00:00:00Z"),
            400,
        );
        assert_eq!(e, "invalid_query from is after to");
    }
    let e = refused(
        "/api/devices/00000000-0000-0000-0000-000000000000/telemetry.ndjson",
        404,
    );
    assert!(e.starts_with("not_found"), "{e}");
    refused("/api/devices/nope/telemetry.ndjson", 404);
    let e = refused("/api/events.ndjson?device_id=nope", 400);
    assert_eq!(e, "invalid_query device_id must be a UUID");

    let r = raw_http(
        srv.addr(),
        b"GET /api/events.ndjson HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 401);
    let t = srv.post("/api/tokens", &json!({"name":"reader","role":"viewer"}));
    let viewer = s(&t.json(), "token").to_string();
    for path in [telemetry.as_str(), "/api/events.ndjson"] {
        assert_eq!(
            get(&srv, path, &viewer).status,
            200,
            "viewers may export {path}"
        );
    }
}

/// `fleetgate ARGS` with none of the caller's fleetgate variables, and `env` added.
fn fleetgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.args(args)
        .env_remove("FLEETGATE_ADMIN_TOKEN")
        .env_remove("FLEETGATE_SERVER");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run fleetgate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_cli_exports_one_device_or_all_to_files_or_stdout() {
    let srv = Server::start(DRIVERS[0]);
    let a = srv.create_device("a");
    let b = srv.create_device("b");
    send_telemetry(&srv, &a, 0..30);
    send_telemetry(&srv, &b, 100..105);
    let env = [("FLEETGATE_ADMIN_TOKEN", srv.admin_token())];
    let url = srv.url();
    let tel = srv.test_dir().join("telemetry.ndjson");
    let ev = srv.test_dir().join("events.ndjson");
    let (tel_arg, ev_arg) = (tel.to_str().expect("path"), ev.to_str().expect("path"));

    let o = fleetgate(
        &[
            "export",
            "--url",
            &url,
            "--telemetry",
            tel_arg,
            "--events",
            ev_arg,
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("35 telemetry records of 2 device(s)"),
        "{}",
        stderr(&o)
    );
    let mut got = seqs(&lines(&std::fs::read(&tel).expect("telemetry file")));
    got.sort();
    assert_eq!(got, (0..30).chain(100..105).collect::<Vec<_>>());
    assert_eq!(
        std::fs::metadata(&tel).expect("stat").permissions().mode() & 0o777,
        0o600
    );
    let events = lines(&std::fs::read(&ev).expect("events file"));
    let api = lines(&get(&srv, "/api/events.ndjson", srv.admin_token()).body);
    assert_eq!(events, api, "the same lines as the API's");

    let o = fleetgate(
        &[
            "export",
            "--server",
            &url,
            "--device",
            &a.id,
            "--telemetry",
            "-",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let only_a = lines(&o.stdout);
    assert_eq!(seqs(&only_a), (0..30).collect::<Vec<_>>());
    assert!(only_a.iter().all(|l| s(l, "device_id") == a.id));

    let o = fleetgate(
        &[
            "export",
            "--url",
            &url,
            "--from",
            "2100-01-01T00:00:00Z",
            "--telemetry",
            "-",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing that late");
    let o = fleetgate(
        &["export", "--url", &url, "--events", "-", "--device", &b.id],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lines(&o.stdout).iter().all(|e| s(e, "device_id") == b.id));

    let refused = |args: &[&str], code: i32, why: &str| {
        let o = fleetgate(args, &env);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    };
    refused(
        &[
            "export",
            "--url",
            &url,
            "--device",
            "0b3e0f7e-0000-4000-8000-000000000000",
            "--telemetry",
            "-",
        ],
        1,
        "no device 0b3e0f7e-0000-4000-8000-000000000000",
    );
    refused(
        &["export", "--url", &url, "--telemetry", "-", "--events", "-"],
        1,
        "cannot both go to standard output",
    );
    refused(
        &[
            "export",
            "--url",
            &url,
            "--from",
            "yesterday",
            "--telemetry",
            "-",
        ],
        2,
        "invalid value 'yesterday' for '--from",
    );
    refused(
        &[
            "export",
            "--url",
            &url,
            "--from",
            "2026-06-02T00:00:00Z",
            "--to",
            "2026-06-01T00:00:00Z",
            "--events",
            "-",
        ],
        1,
        "--from is after --to",
    );
    refused(&["export", "--url", &url], 2, "--telemetry <FILE>");
    let o = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["export", "--url", &url, "--events", "-"])
        .env_remove("FLEETGATE_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("admin token is needed"),
        "{}",
        stderr(&o)
    );
    let wrong = Client::new(&url)
        .expect("client")
        .with_token("wrong-token-000000");
    assert_eq!(wrong.get("/api/events.ndjson").expect("GET").status, 401);
}
