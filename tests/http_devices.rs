//! Legacy HTTP devices (`POST /api/device-http`), pending devices, HTTP liveness, the attendance
//! store and its CSV export, end to end against the real binary under both I/O drivers
//! (`uring::*` and `epoll::*`).
//!
//! Clients: the connect guide's Python example run by `python3` with `requests`
//! (`tests/clients/connect_guide.py`, the guide's block copied verbatim with its indentation
//! restored), the library's blocking HTTP client for JSON requests, and raw TCP for what that
//! client cannot do: requests without a Content-Type, pipelined requests, and the chunked CSV
//! export on a kept-alive connection (read with the shared response parser, which checks the
//! chunked framing strictly).
//!
//! Requirements: `python3` with `requests` (`pip install -r tests/clients/requirements.txt`;
//! `.ci/run` does it). Missing either is a test FAILURE, never a skip.
//!
//! Rules as in the other suites: every wait is bounded, state is polled, durations are never
//! asserted.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

for_both_drivers!(
    connect_guide_python_example,
    resent_sendlog_is_acknowledged_and_stored_once,
    unknown_serial_pending_then_approved_or_dismissed,
    concurrent_first_contacts_create_one_device,
    concurrent_approvals_create_one_device,
    http_device_goes_offline_after_silence,
    acknowledged_records_survive_kill9,
    every_time_format_is_accepted,
    door_and_unknown_face_records_are_events_not_attendance,
    photos_are_fetchable_and_unreadable_records_are_kept,
    protocol_errors_and_lenient_input,
    auto_approve_accepts_new_serials,
    csv_export_filters_and_quoting,
    csv_export_streams_many_rows,
    answers_are_in_the_devices_time_and_echo_the_sendlog,
    firmware_posting_to_its_own_paths_is_the_http_device,
);

const DEVICE_HTTP: &str = "/api/device-http";

/// The exact header row of the CSV export.
const CSV_HEADER: &str = "device_id,serial,enrollid,local_time,utc_time,received_at,mode,inout,event,temp,verifymode,name,photo_url,person_name,person_external_id";

// ---------------------------------------------------------------------------
// Device-side helpers

/// POSTs `body` (any text) to `/api/device-http` with `Content-Type: application/json`, as a
/// device does (no token). Asserts a 200 JSON answer and returns it.
fn device_post_text(srv: &Server, body: &str) -> Value {
    let r = srv
        .anonymous()
        .post_json(DEVICE_HTTP, body.as_bytes())
        .unwrap_or_else(|e| panic!("POST {DEVICE_HTTP} {body}: {e}\n{}", srv.logs()));
    assert_eq!(
        r.status,
        200,
        "POST {DEVICE_HTTP} {body}: {} {}",
        r.status,
        r.text()
    );
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "device answer Content-Type {ct:?}, expected application/json"
    );
    parse(&r.body)
}

fn device_post(srv: &Server, body: &Value) -> Value {
    device_post_text(srv, &enc(body))
}

/// Asserts `{"ret":cmd,"result":true,"cloudtime":"YYYY-MM-DD HH:MM:SS",…}`: the device's wall
/// clock, in whatever zone it has (`assert_cloudtime_in` checks the zone).
fn assert_ok(ans: &Value, cmd: &str) {
    assert_eq!(s(ans, "ret"), cmd, "answer: {}", enc(ans));
    assert_eq!(
        ans.get("result").and_then(|v| v.as_bool()),
        Some(true),
        "expected result:true for {cmd}: {}",
        enc(ans)
    );
    // Wall-clock time is within a day of the UTC instant in any zone (offsets reach ±14 h).
    let off = cloudtime_offset_s(ans, &jiff::tz::TimeZone::UTC);
    assert!(
        off.abs() < 15 * 3600,
        "cloudtime {} is {off} s away from the current time in UTC",
        s(ans, "cloudtime")
    );
}

/// How far an answer's `cloudtime` (`YYYY-MM-DD HH:MM:SS`) is from now on a clock in `tz`.
fn cloudtime_offset_s(ans: &Value, tz: &jiff::tz::TimeZone) -> i64 {
    let ct = s(ans, "cloudtime");
    let b = ct.as_bytes();
    let shape = b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    assert!(
        shape,
        "cloudtime {ct:?} is not YYYY-MM-DD HH:MM:SS: {}",
        enc(ans)
    );
    let sent = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", ct)
        .unwrap_or_else(|e| panic!("cloudtime {ct:?}: {e}"));
    let now = jiff::Timestamp::now().to_zoned(tz.clone()).datetime();
    sent.duration_since(now).as_secs()
}

/// Asserts the answer's `cloudtime` is the current time on a clock in `tz` (the bound is far
/// above any scheduling delay; a wrong zone is off by whole hours).
fn assert_cloudtime_in(ans: &Value, tz: &str) {
    let zone = jiff::tz::TimeZone::get(tz).expect("a zone");
    let off = cloudtime_offset_s(ans, &zone);
    assert!(
        off.abs() < 600,
        "cloudtime {} is {off} s away from the time in {tz}",
        s(ans, "cloudtime")
    );
}

/// Asserts `{"ret":cmd,"result":false,"reason":"..."}`; returns the reason.
fn assert_refused(ans: &Value, cmd: &str) -> String {
    assert_eq!(s(ans, "ret"), cmd, "answer: {}", enc(ans));
    assert_eq!(
        ans.get("result").and_then(|v| v.as_bool()),
        Some(false),
        "expected result:false for {cmd}: {}",
        enc(ans)
    );
    let reason = s(ans, "reason").to_string();
    assert!(!reason.trim().is_empty(), "empty reason: {}", enc(ans));
    reason
}

fn reg(srv: &Server, sn: &str, model: &str, firmware: &str) -> Value {
    device_post(
        srv,
        &json!({
            "cmd": "reg",
            "sn": sn,
            "cpusn": "CPU-0042",
            "devinfo": {"modelname": model, "usersize": 1000, "firmware": firmware, "mac": "00:11:22:33:44:55"}
        }),
    )
}

fn checklive(srv: &Server, sn: &str) -> Value {
    device_post(
        srv,
        &json!({"cmd": "checklive", "sn": sn, "time": "2026-06-12T09:20:00"}),
    )
}

fn sendlog(srv: &Server, sn: &str, records: Vec<Value>) -> Value {
    let n = records.len();
    device_post(
        srv,
        &json!({"cmd": "sendlog", "sn": sn, "count": n, "logindex": 0, "record": Value::from(records)}),
    )
}

/// A punch as the guide shows it.
fn punch(enrollid: u64, time: &str) -> Value {
    json!({"enrollid": enrollid, "time": time, "mode": 1, "inout": 0, "event": 0, "temp": 36.5})
}

// ---------------------------------------------------------------------------
// Admin-side helpers

/// Creates an HTTP device with a serial (and optionally a time zone); returns its device_id.
fn create_http_device(srv: &Server, name: &str, serial: &str, tz: Option<&str>) -> String {
    let body = match tz {
        Some(tz) => {
            json!({"name": name, "protocol": "http", "serial": serial, "settings": {"timezone": tz}})
        }
        None => json!({"name": name, "protocol": "http", "serial": serial}),
    };
    let r = srv.post("/api/devices", &body);
    assert_eq!(
        r.status,
        201,
        "POST /api/devices {}: {}",
        enc(&body),
        r.text()
    );
    let v = r.json();
    assert_eq!(s(&v, "protocol"), "http", "{}", enc(&v));
    assert_eq!(s(&v, "serial"), serial, "{}", enc(&v));
    s(&v, "device_id").to_string()
}

/// Every attendance item matching `query` (all pages).
fn attendance(srv: &Server, query: &str) -> Vec<Value> {
    srv.list_all(&format!("/api/attendance?limit=1000&{query}"))
}

fn pending(srv: &Server) -> Vec<Value> {
    let r = srv.get("/api/pending-devices");
    assert_eq!(r.status, 200, "GET /api/pending-devices: {}", r.text());
    arr(&r.json(), "items").clone()
}

fn pending_entry(srv: &Server, serial: &str) -> Option<Value> {
    pending(srv)
        .into_iter()
        .find(|p| opt_s(p, "serial") == Some(serial))
}

fn events_of(srv: &Server, device_id: &str, ty: &str) -> Vec<Value> {
    srv.events(&format!("device_id={device_id}&type={ty}"))
        .into_iter()
        .filter(|e| opt_s(e, "type") == Some(ty))
        .collect()
}

fn ts(t: &str) -> jiff::Timestamp {
    t.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp: {t:?} ({e})"))
}

fn enrollids(items: &[Value]) -> Vec<u64> {
    items.iter().map(|i| u(i, "enrollid")).collect()
}

/// Asserts the common shape of an attendance item.
fn assert_item_shape(it: &Value, device_id: &str, serial: &str) {
    let _ = s(it, "id");
    assert_eq!(s(it, "device_id"), device_id, "{}", enc(it));
    assert_eq!(s(it, "serial"), serial, "{}", enc(it));
    let _ = u(it, "enrollid");
    let _ = s(it, "local_time");
    assert_rfc3339(s(it, "utc_time"));
    assert_rfc3339(s(it, "received_at"));
    assert!(
        field(it, "fields").as_object().is_some(),
        "fields must be an object: {}",
        enc(it)
    );
}

/// Items must be newest first (by utc_time).
fn assert_newest_first(items: &[Value]) {
    for w in items.windows(2) {
        assert!(
            ts(s(&w[0], "utc_time")) >= ts(s(&w[1], "utc_time")),
            "attendance not newest first: {} before {}",
            enc(&w[0]),
            enc(&w[1])
        );
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP

/// Sends a GET on `stream` (keep-alive or close).
fn send_get(
    stream: &mut TcpStream,
    srv: &Server,
    path: &str,
    token: Option<&str>,
    keep_alive: bool,
) {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fleetgate-tests\r\n",
        srv.addr()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(req.as_bytes()).expect("write request");
}

/// GET on a fresh connection, with the admin token unless `token` is None.
fn raw_get(srv: &Server, path: &str, admin: bool) -> RawResponse {
    let mut stream = TcpStream::connect(srv.addr()).expect("connect");
    let token = admin.then(|| srv.admin_token().to_string());
    send_get(&mut stream, srv, path, token.as_deref(), false);
    let mut buf = Vec::new();
    read_response(&mut stream, &mut buf, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", srv.logs()))
}

/// `GET /api/attendance.csv?query`: asserts 200, text/csv, chunked; returns the body text.
fn csv_text(srv: &Server, query: &str) -> String {
    let path = format!("/api/attendance.csv?{query}");
    let r = raw_get(srv, &path, true);
    assert_eq!(r.status, 200, "GET {path}: {} {}", r.status, r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/csv"),
        "GET {path}: Content-Type {ct:?}"
    );
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "GET {path}: expected a chunked (streamed) body"
    );
    String::from_utf8(r.body).unwrap_or_else(|e| panic!("CSV is not UTF-8: {e}"))
}

/// Parses RFC 4180 CSV with CRLF record ends (a bare LF or CR outside quotes is an error).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut fieldv = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    fieldv.push('"');
                } else {
                    in_quotes = false;
                    match chars.peek() {
                        Some(',') | Some('\r') | None => {}
                        other => panic!("CSV: {other:?} after a closing quote in {text:?}"),
                    }
                }
            } else {
                fieldv.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            '"' => panic!("CSV: quote inside an unquoted field in {text:?}"),
            ',' => {
                row.push(std::mem::take(&mut fieldv));
                at_field_start = true;
            }
            '\r' => {
                assert_eq!(
                    chars.next(),
                    Some('\n'),
                    "CSV: CR not followed by LF in {text:?}"
                );
                row.push(std::mem::take(&mut fieldv));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            '\n' => panic!("CSV: bare LF line end (expected CRLF) in {text:?}"),
            c => {
                fieldv.push(c);
                at_field_start = false;
            }
        }
    }
    assert!(!in_quotes, "CSV: unterminated quoted field");
    assert!(
        row.is_empty() && fieldv.is_empty(),
        "CSV: last record not ended by CRLF: {text:?}"
    );
    rows
}

/// CSV rows (without the header, which is asserted exactly) as column-name → value maps.
fn csv_rows(srv: &Server, query: &str) -> Vec<BTreeMap<String, String>> {
    let text = csv_text(srv, query);
    let rows = parse_csv(&text);
    assert!(!rows.is_empty(), "CSV without a header row: {text:?}");
    assert_eq!(rows[0].join(","), CSV_HEADER, "CSV header row");
    assert!(
        text.starts_with(&format!("{CSV_HEADER}\r\n")),
        "CSV must start with the exact header row and CRLF: {:?}",
        &text[..text.len().min(200)]
    );
    let names: Vec<&str> = CSV_HEADER.split(',').collect();
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(
                r.len(),
                names.len(),
                "CSV row with {} columns: {r:?}",
                r.len()
            );
            names
                .iter()
                .map(|n| n.to_string())
                .zip(r.iter().cloned())
                .collect()
        })
        .collect()
}

fn col<'a>(row: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    row.get(name)
        .map(|s| s.as_str())
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// What identifies a row/item across the CSV and the JSON list.
fn key_of_row(r: &BTreeMap<String, String>) -> (String, String, String) {
    (
        col(r, "device_id").to_string(),
        col(r, "enrollid").to_string(),
        col(r, "local_time").to_string(),
    )
}

fn key_of_item(i: &Value) -> (String, String, String) {
    (
        s(i, "device_id").to_string(),
        u(i, "enrollid").to_string(),
        s(i, "local_time").to_string(),
    )
}

// ---------------------------------------------------------------------------
// 1. The connect guide's Python example

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn clients_dir() -> PathBuf {
    repo().join("tests").join("clients")
}

fn no_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The guide's "Python Example" block: from `import requests` through the `heartbeat()` call
/// under `if __name__ == "__main__":` (the page text continues on that line).
fn guide_python_example(guide: &str) -> String {
    let start = guide
        .find("import requests")
        .expect("guide has the Python example (`import requests`)");
    let rest = &guide[start..];
    let main = rest
        .find("if __name__ == \"__main__\":")
        .expect("guide's Python example has `if __name__ == \"__main__\":`");
    let end = main
        + rest[main..]
            .find("heartbeat()")
            .expect("guide's Python example ends with `heartbeat()`")
        + "heartbeat()".len();
    rest[..end].to_string()
}

/// Replaces the string literal on the one line starting with `NAME = "`.
fn set_py_constant(src: &str, name: &str, value: &str) -> String {
    let prefix = format!("{name} = \"");
    let mut hits = 0;
    let out: Vec<String> = src
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                hits += 1;
                let open = line.find('"').unwrap();
                let close = open + 1 + line[open + 1..].find('"').expect("closing quote");
                format!("{}\"{}\"{}", &line[..open], value, &line[close + 1..])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(
        hits, 1,
        "expected exactly one `{prefix}` line in the example"
    );
    out.join("\n") + "\n"
}

fn python_command() -> Command {
    let mut c = Command::new("python3");
    // requests honours proxy variables: the server is on loopback.
    c.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    c
}

fn check_python() {
    match python_command()
        .args(["-c", "import requests; print(requests.__version__)"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import `requests` ({}): {}\nInstall it with \
             `python3 -m pip install -r tests/clients/requirements.txt` (.ci/run does).",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "`python3` is not available ({e}). The connect-guide test needs CPython 3 with \
             `requests`: install python3, then `python3 -m pip install -r tests/clients/requirements.txt`."
        ),
    }
}

#[test]
fn committed_python_copy_matches_the_guide() {
    let copy =
        fs::read_to_string(clients_dir().join("connect_guide.py")).expect("read connect_guide.py");
    let guide_path = repo().join("..").join("shared").join("connect-guide.txt");
    if guide_path.exists() {
        let guide = fs::read_to_string(&guide_path).unwrap();
        assert_eq!(
            no_ws(&guide_python_example(&guide)),
            no_ws(&copy),
            "tests/clients/connect_guide.py no longer matches the Python example in {}",
            guide_path.display()
        );
    } else {
        eprintln!(
            "{} not present: comparison with the guide skipped",
            guide_path.display()
        );
    }
    for name in ["URL", "SN"] {
        set_py_constant(&copy, name, "x");
    }
}

/// Runs `python3 script` with a deadline; returns (success, stdout+stderr).
fn run_python(
    dir: &std::path::Path,
    script: &str,
    timeout: Duration,
) -> (std::process::ExitStatus, String) {
    let path = dir.join("device.py");
    fs::write(&path, script).unwrap();
    let out = dir.join("python.out");
    let err = dir.join("python.err");
    let mut child = python_command()
        .arg(&path)
        .current_dir(dir)
        .stdout(Stdio::from(fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(fs::File::create(&err).unwrap()))
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "python3 did not finish within {timeout:?}; output so far:\n{}\n{}",
                fs::read_to_string(&out).unwrap_or_default(),
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    (
        status,
        format!(
            "{stdout}{}",
            if stderr.is_empty() {
                String::new()
            } else {
                format!("--- stderr ---\n{stderr}")
            }
        ),
    )
}

fn connect_guide_python_example(io: &str) {
    check_python();
    let srv = Server::start(io);
    let sn = format!("PY-{io}-{:08X}", random_u64() as u32);
    let id = create_http_device(&srv, "python-terminal", &sn, None);

    let example = fs::read_to_string(clients_dir().join("connect_guide.py")).unwrap();
    let url = format!("{}{DEVICE_HTTP}", srv.url());
    let script = set_py_constant(&set_py_constant(&example, "URL", &url), "SN", &sn);
    let changed = example
        .lines()
        .zip(script.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 2, "only the URL and SN lines may differ");
    assert_eq!(script.lines().count(), example.lines().count());

    let dir = std::env::temp_dir().join(format!(
        "fleetgate-python-{io}-{}-{:08x}",
        std::process::id(),
        random_u64() as u32
    ));
    fs::create_dir_all(&dir).unwrap();
    let (status, output) = run_python(&dir, &script, Duration::from_secs(60));
    let ctx = || format!("python output:\n{output}\n{}", srv.logs());
    assert!(
        status.success(),
        "the example exited with {status}\n{}",
        ctx()
    );

    let line = |prefix: &str| -> String {
        output
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line printed\n{}", ctx()))
            .to_string()
    };
    let registered = line("Registered: ");
    assert!(
        registered.contains("'ret': 'reg'") && registered.contains("'result': True"),
        "reg did not succeed: {registered}\n{}",
        ctx()
    );
    assert!(
        registered.contains("'cloudtime': '"),
        "no cloudtime: {registered}"
    );
    let sent = line("Sent log: ");
    assert!(
        sent.contains("'ret': 'sendlog'") && sent.contains("'result': True"),
        "sendlog did not succeed: {sent}\n{}",
        ctx()
    );
    assert_eq!(line("Heartbeat: "), "Heartbeat: True", "{}", ctx());
    let _ = fs::remove_dir_all(&dir);

    // reg kept the devinfo.
    let d = srv.get(&format!("/api/devices/{id}"));
    assert_eq!(d.status, 200, "{}", d.text());
    let d = d.json();
    let info = field(&d, "info");
    assert_eq!(s(info, "cpusn"), "12345", "{}", enc(&d));
    let devinfo = field(info, "devinfo");
    assert_eq!(s(devinfo, "modelname"), "device", "{}", enc(&d));
    assert_eq!(s(devinfo, "firmware"), "v1.0", "{}", enc(&d));

    // Its requests made it online, with the event.
    srv.wait_status(&id, "online");
    let connected = srv.wait_event(&id, "device_connected");
    assert_eq!(
        s(field(&connected[0], "payload"), "reason"),
        "http request",
        "{}",
        enc(&connected[0])
    );

    // The record is in the attendance API...
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(items.len(), 1, "one record sent: {items:?}");
    let it = &items[0];
    assert_item_shape(it, &id, &sn);
    assert_eq!(u(it, "enrollid"), 123);
    let f = field(it, "fields");
    assert_eq!(
        f.get("mode").and_then(|v| v.as_u64()),
        Some(1),
        "{}",
        enc(it)
    );
    assert_eq!(
        f.get("inout").and_then(|v| v.as_u64()),
        Some(0),
        "{}",
        enc(it)
    );
    let local = s(it, "local_time");
    assert_eq!(s(f, "time"), local, "local_time is the time as sent");
    assert!(
        local.parse::<jiff::civil::DateTime>().is_ok(),
        "local_time {local:?} is not the isoformat() the example sent"
    );
    // The example and the server share this machine's clock and zone: the UTC instant derived
    // from the sent local time (server's zone) is the moment of sending, i.e. near received_at.
    // (A wrong zone would be off by whole hours; the bound is far above any scheduling delay.)
    let skew = (ts(s(it, "utc_time")).as_second() - ts(s(it, "received_at")).as_second()).abs();
    assert!(
        skew < 600,
        "utc_time {} is {skew} s from received_at {}: the local time was not read in the server's zone",
        s(it, "utc_time"),
        s(it, "received_at")
    );
    assert_eq!(attendance(&srv, "enrollid=123").len(), 1);

    // ... and in the CSV.
    for q in [
        String::new(),
        format!("device_id={id}"),
        "enrollid=123".to_string(),
    ] {
        let rows = csv_rows(&srv, &q);
        assert_eq!(rows.len(), 1, "CSV ?{q}: {rows:?}");
        let r = &rows[0];
        assert_eq!(col(r, "device_id"), id);
        assert_eq!(col(r, "serial"), sn);
        assert_eq!(col(r, "enrollid"), "123");
        assert_eq!(col(r, "local_time"), local);
        assert_eq!(col(r, "utc_time"), s(it, "utc_time"));
        assert_eq!(col(r, "received_at"), s(it, "received_at"));
        assert_eq!(col(r, "mode"), "1");
        assert_eq!(col(r, "inout"), "0");
        assert_eq!(col(r, "photo_url"), "");
    }
}

// ---------------------------------------------------------------------------
// 2. Idempotent sendlog

fn resent_sendlog_is_acknowledged_and_stored_once(io: &str) {
    let srv = Server::start(io);
    let sn = "DUP-0001";
    let id = create_http_device(&srv, "dup", sn, None);
    let rec = punch(7, "2026-06-12T09:15:30");
    for n in 0..3 {
        let ans = sendlog(&srv, sn, vec![rec.clone()]);
        assert_ok(&ans, "sendlog");
        let items = attendance(&srv, &format!("device_id={id}"));
        assert_eq!(
            items.len(),
            1,
            "after send #{}: one record expected, got {items:?}",
            n + 1
        );
    }
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_item_shape(&items[0], &id, sn);
    assert_eq!(u(&items[0], "enrollid"), 7);
    assert_eq!(s(&items[0], "local_time"), "2026-06-12T09:15:30");

    // The same record twice in one sendlog, next to a new one: the new one is stored, the
    // duplicate is not.
    let ans = sendlog(
        &srv,
        sn,
        vec![rec.clone(), punch(8, "2026-06-12T09:16:00"), rec.clone()],
    );
    assert_ok(&ans, "sendlog");
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(
        enrollids(&items).iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([7, 8]),
        "{items:?}"
    );
    assert_eq!(items.len(), 2, "{items:?}");

    // Same user and time but another event is another record.
    let mut other_event = rec.clone();
    other_event.insert("event", 1).unwrap();
    assert_ok(&sendlog(&srv, sn, vec![other_event.clone()]), "sendlog");
    assert_ok(&sendlog(&srv, sn, vec![other_event]), "sendlog");
    let items = attendance(&srv, &format!("device_id={id}&enrollid=7"));
    assert_eq!(
        items.len(),
        2,
        "event 0 and event 1 are two punches: {items:?}"
    );
    assert_eq!(attendance(&srv, &format!("device_id={id}")).len(), 3);

    // A device that retries while its first attempt is still in flight: the same sendlog on
    // several connections at once (spread over both shards) is acknowledged on each, stored once.
    let body = enc(&json!({
        "cmd": "sendlog", "sn": sn, "count": 1, "logindex": 0,
        "record": [punch(9, "2026-06-12T10:00:00")]
    }));
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                barrier.wait();
                assert_ok(&device_post_text(&srv, &body), "sendlog");
            });
        }
    });
    let items = attendance(&srv, &format!("device_id={id}&enrollid=9"));
    assert_eq!(
        items.len(),
        1,
        "concurrent re-sends stored more than once: {items:?}"
    );
    assert_eq!(attendance(&srv, &format!("device_id={id}")).len(), 4);
    assert_eq!(csv_rows(&srv, &format!("device_id={id}")).len(), 4);

    // One punch sent as an object instead of an array (firmware that sends one at a time) is
    // stored like any other, not refused for the device to resend forever.
    let single = json!({"cmd": "sendlog", "sn": sn, "count": 1, "logindex": 0,
        "record": punch(21, "2026-06-12T09:17:00")});
    assert_ok(&device_post(&srv, &single), "sendlog");
    assert_ok(&device_post(&srv, &single), "sendlog");
    let items = attendance(&srv, &format!("device_id={id}&enrollid=21"));
    assert_eq!(items.len(), 1, "{items:?}");
}

// ---------------------------------------------------------------------------
// 3. Pending devices

fn unknown_serial_pending_then_approved_or_dismissed(io: &str) {
    let srv = Server::start(io);
    let sn = "PEND-A-77";

    // Refused, with a reason about approval; listed pending.
    let reason = assert_refused(&reg(&srv, sn, "AI-Face-7", "ff-2.1.3"), "reg");
    assert!(
        reason.to_ascii_lowercase().contains("approv"),
        "the reason should say the device awaits approval: {reason:?}"
    );
    let p =
        pending_entry(&srv, sn).unwrap_or_else(|| panic!("{sn} not pending: {:?}", pending(&srv)));
    assert_eq!(s(&p, "protocol"), "http", "{}", enc(&p));
    assert_eq!(s(&p, "model"), "AI-Face-7", "{}", enc(&p));
    assert_eq!(s(&p, "firmware"), "ff-2.1.3", "{}", enc(&p));
    assert_eq!(u(&p, "requests"), 1, "{}", enc(&p));
    assert!(s(&p, "remote").contains("127.0.0.1"), "{}", enc(&p));
    let first_seen = ts(s(&p, "first_seen"));
    assert!(ts(s(&p, "last_seen")) >= first_seen, "{}", enc(&p));

    // Every attempt is counted; nothing is stored for an unknown serial.
    assert_refused(
        &sendlog(&srv, sn, vec![punch(1, "2026-06-12 09:15:30")]),
        "sendlog",
    );
    assert_refused(&checklive(&srv, sn), "checklive");
    let p = pending_entry(&srv, sn).unwrap();
    assert_eq!(u(&p, "requests"), 3, "{}", enc(&p));
    assert_eq!(
        ts(s(&p, "first_seen")),
        first_seen,
        "first_seen must not move: {}",
        enc(&p)
    );
    assert!(ts(s(&p, "last_seen")) >= first_seen);
    assert_eq!(
        s(&p, "model"),
        "AI-Face-7",
        "model kept after requests without devinfo"
    );
    assert!(
        attendance(&srv, "").is_empty(),
        "nothing stored for an unapproved serial"
    );

    // The pending list is admin-only.
    let r = srv.anonymous().get("/api/pending-devices").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());

    // An approval needs a name and a valid zone; a refused approval leaves it pending.
    for bad in [
        json!({}),
        json!({"name": "x", "settings": {"timezone": "Nowhere/Zone"}}),
    ] {
        let r = srv.post(&format!("/api/pending-devices/{sn}/approve"), &bad);
        assert_eq!(r.status, 400, "approve with {}: {}", enc(&bad), r.text());
        let _ = error_code(&r.json());
        assert!(
            pending_entry(&srv, sn).is_some(),
            "a refused approval removed the pending entry"
        );
    }

    // Approve with a name and a time zone.
    let r = srv.post(
        &format!("/api/pending-devices/{sn}/approve"),
        &json!({"name": "Front door", "settings": {"timezone": "Europe/Berlin"}}),
    );
    assert_eq!(r.status, 201, "approve: {}", r.text());
    let d = r.json();
    assert_eq!(s(&d, "protocol"), "http", "{}", enc(&d));
    assert_eq!(s(&d, "serial"), sn, "{}", enc(&d));
    assert_eq!(s(&d, "name"), "Front door", "{}", enc(&d));
    assert!(!s(&d, "token").is_empty(), "{}", enc(&d));
    let id = s(&d, "device_id").to_string();
    assert!(
        pending_entry(&srv, sn).is_none(),
        "approved serial still pending: {:?}",
        pending(&srv)
    );
    let r = srv.post(
        &format!("/api/pending-devices/{sn}/approve"),
        &json!({"name": "again"}),
    );
    assert_eq!(
        r.status,
        404,
        "approving a serial no longer pending: {}",
        r.text()
    );
    assert_eq!(error_code(&r.json()), "not_found");

    // Now accepted.
    assert_ok(&reg(&srv, sn, "AI-Face-7", "ff-2.1.3"), "reg");
    let dev = srv.get(&format!("/api/devices/{id}")).json();
    assert_eq!(s(&dev, "name"), "Front door");
    assert_eq!(
        s(field(&dev, "settings"), "timezone"),
        "Europe/Berlin",
        "{}",
        enc(&dev)
    );
    let info = field(&dev, "info");
    assert_eq!(s(info, "cpusn"), "CPU-0042", "{}", enc(&dev));
    assert_eq!(
        s(field(info, "devinfo"), "modelname"),
        "AI-Face-7",
        "{}",
        enc(&dev)
    );
    assert_eq!(u(field(info, "devinfo"), "usersize"), 1000, "{}", enc(&dev));
    assert_ok(&checklive(&srv, sn), "checklive");
    assert_ok(
        &sendlog(&srv, sn, vec![punch(1, "2026-06-12 09:15:30")]),
        "sendlog",
    );
    assert!(
        pending_entry(&srv, sn).is_none(),
        "an approved device must not become pending again"
    );

    // utc_time follows the device's zone: 09:15:30 in Berlin (CEST) is 07:15:30Z.
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_item_shape(&items[0], &id, sn);
    assert_eq!(s(&items[0], "local_time"), "2026-06-12 09:15:30");
    assert_eq!(
        s(&items[0], "utc_time"),
        "2026-06-12T07:15:30.000Z",
        "{}",
        enc(&items[0])
    );

    // A zone changed with PATCH applies to later records.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"timezone": "America/New_York"}}),
    );
    assert_eq!(r.status, 200, "PATCH timezone: {}", r.text());
    assert_ok(
        &sendlog(&srv, sn, vec![punch(2, "2026-06-12 09:15:30")]),
        "sendlog",
    );
    let items = attendance(&srv, &format!("device_id={id}&enrollid=2"));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        s(&items[0], "utc_time"),
        "2026-06-12T13:15:30.000Z",
        "{}",
        enc(&items[0])
    );

    // Dismiss (POST .../dismiss and DELETE) removes other pending serials.
    for other in ["PEND-B-1", "PEND-C-2"] {
        assert_refused(&checklive(&srv, other), "checklive");
        assert!(pending_entry(&srv, other).is_some(), "{other} not pending");
    }
    let r = srv.post("/api/pending-devices/PEND-B-1/dismiss", &json!({}));
    assert_eq!(r.status, 200, "dismiss: {}", r.text());
    assert!(
        pending_entry(&srv, "PEND-B-1").is_none(),
        "dismissed serial still listed"
    );
    assert!(
        pending_entry(&srv, "PEND-C-2").is_some(),
        "dismiss removed another serial"
    );
    let r = srv.delete("/api/pending-devices/PEND-C-2");
    assert_eq!(r.status, 200, "DELETE pending: {}", r.text());
    assert!(
        pending_entry(&srv, "PEND-C-2").is_none(),
        "deleted serial still listed"
    );
    for path in [
        "/api/pending-devices/NOPE/dismiss",
        "/api/pending-devices/NOPE/approve",
    ] {
        let r = srv.post(path, &json!({"name": "x"}));
        assert_eq!(r.status, 404, "POST {path}: {}", r.text());
        assert_eq!(error_code(&r.json()), "not_found");
    }
    let r = srv.delete("/api/pending-devices/NOPE");
    assert_eq!(r.status, 404, "{}", r.text());
    // Dismissed serials were not turned into devices.
    let devices = srv.list_all("/api/devices?limit=100");
    assert!(
        !devices
            .iter()
            .any(|d| matches!(opt_s(d, "serial"), Some("PEND-B-1" | "PEND-C-2"))),
        "a dismissed serial became a device: {devices:?}"
    );

    // Across a restart: pending stays pending, dismissed stays dismissed, approved stays approved.
    assert_refused(&reg(&srv, "PEND-D-3", "AI-Face-9", "ff-3"), "reg");
    let mut srv = srv;
    srv.restart();
    let p = pending_entry(&srv, "PEND-D-3")
        .unwrap_or_else(|| panic!("pending serial lost by a restart: {:?}", pending(&srv)));
    assert_eq!(s(&p, "model"), "AI-Face-9", "{}", enc(&p));
    assert!(u(&p, "requests") >= 1, "{}", enc(&p));
    assert!(
        pending_entry(&srv, "PEND-B-1").is_none(),
        "a dismissed serial came back after a restart"
    );
    assert!(
        pending_entry(&srv, "PEND-C-2").is_none(),
        "a deleted pending serial came back after a restart"
    );
    assert!(
        pending_entry(&srv, sn).is_none(),
        "the approved serial is pending after a restart"
    );
    assert_ok(&checklive(&srv, sn), "checklive");
    assert_eq!(attendance(&srv, &format!("device_id={id}")).len(), 2);

    // A deleted device's serial is unknown again: refused and pending.
    let r = srv.delete(&format!("/api/devices/{id}"));
    assert_eq!(r.status, 200, "DELETE device: {}", r.text());
    assert_refused(&checklive(&srv, sn), "checklive");
    assert!(
        pending_entry(&srv, sn).is_some(),
        "a deleted device's serial must be pending again: {:?}",
        pending(&srv)
    );
}

fn devices_with_serial(srv: &Server, serial: &str) -> Vec<Value> {
    srv.list_all("/api/devices?limit=100")
        .into_iter()
        .filter(|d| opt_s(d, "serial") == Some(serial))
        .collect()
}

/// A serial is one device, however its first contacts race (--auto-approve: several first
/// requests of one new serial at once, over both shards, e.g. a retry while the first is in flight).
fn concurrent_first_contacts_create_one_device(io: &str) {
    let srv = Server::start_with(io, &["--auto-approve"]);
    let sn = "RACE-AUTO-1";
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                barrier.wait();
                assert_ok(&reg(&srv, sn, "AI-Race", "r1"), "reg");
            });
        }
    });
    let devs = devices_with_serial(&srv, sn);
    assert_eq!(
        devs.len(),
        1,
        "concurrent first contacts of {sn} created {} devices: {devs:?}",
        devs.len()
    );
    assert_ok(
        &sendlog(&srv, sn, vec![punch(1, "2026-06-12 09:15:30")]),
        "sendlog",
    );
    let items = attendance(&srv, "");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(s(&items[0], "device_id"), s(&devs[0], "device_id"));
}

/// A serial is one device, however its approvals race (several admin requests at once).
fn concurrent_approvals_create_one_device(io: &str) {
    let srv = Server::start(io);
    let sn = "RACE-APPROVE-1";
    assert_refused(&reg(&srv, sn, "AI-Race", "r1"), "reg");
    let barrier = std::sync::Barrier::new(4);
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let barrier = &barrier;
                let srv = &srv;
                sc.spawn(move || {
                    barrier.wait();
                    srv.post(
                        &format!("/api/pending-devices/{sn}/approve"),
                        &json!({"name": format!("racer {i}")}),
                    )
                    .status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "concurrent approvals of one serial: statuses {statuses:?} (exactly one 201 expected)"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 404 | 409)),
        "statuses {statuses:?}"
    );
    let devs = devices_with_serial(&srv, sn);
    assert_eq!(
        devs.len(),
        1,
        "concurrent approvals of {sn} created {} devices: {devs:?}",
        devs.len()
    );
}

// ---------------------------------------------------------------------------
// 4. Liveness

fn http_device_goes_offline_after_silence(io: &str) {
    let srv = Server::start_with(io, &["--http-offline-after", "2"]);
    let sn = "LIVE-01";
    let id = create_http_device(&srv, "live", sn, None);
    assert_eq!(srv.listed_status(&id), "offline", "a new device is offline");

    // Online after a checklive. (Re-sent while polling: the deadline is short, and a stalled
    // machine must not turn the check into a race.)
    wait_until(SOON, "device listed online after checklive", || {
        assert_ok(&checklive(&srv, sn), "checklive");
        srv.listed_status(&id) == "online"
    });
    let connected = srv.wait_event(&id, "device_connected");
    assert_eq!(
        s(field(&connected[0], "payload"), "reason"),
        "http request",
        "{}",
        enc(&connected[0])
    );
    assert_eq!(s(&connected[0], "source"), "server");

    // Silent: offline, with device_disconnected reason timeout.
    let deadline = Duration::from_secs(60);
    wait_until(deadline, "device listed offline after silence", || {
        srv.listed_status(&id) == "offline"
    });
    let mut disconnected = Vec::new();
    wait_until(deadline, "device_disconnected event", || {
        disconnected = events_of(&srv, &id, "device_disconnected");
        !disconnected.is_empty()
    });
    for e in &disconnected {
        assert_eq!(s(field(e, "payload"), "reason"), "timeout", "{}", enc(e));
        assert_eq!(s(e, "device_id"), id);
    }
    let dev = srv.listed_device(&id).unwrap();
    assert!(
        dev.get("last_seen").and_then(|v| v.as_str()).is_some(),
        "last_seen must be set: {}",
        enc(&dev)
    );

    // A new request brings it back: another device_connected.
    let before = events_of(&srv, &id, "device_connected").len();
    wait_until(SOON, "device listed online again", || {
        assert_ok(&checklive(&srv, sn), "checklive");
        srv.listed_status(&id) == "online"
    });
    wait_until(SOON, "a second device_connected", || {
        events_of(&srv, &id, "device_connected").len() > before
    });
    // And offline again after silence.
    wait_until(deadline, "device offline a second time", || {
        srv.listed_status(&id) == "offline"
    });
    wait_until(deadline, "a second device_disconnected", || {
        events_of(&srv, &id, "device_disconnected").len() >= 2
    });

    // Transitions alternate: connected, disconnected, connected, ... (oldest first).
    let mut all: Vec<Value> = srv
        .events(&format!("device_id={id}"))
        .into_iter()
        .filter(|e| {
            matches!(
                opt_s(e, "type"),
                Some("device_connected" | "device_disconnected")
            )
        })
        .collect();
    all.reverse();
    for (i, e) in all.iter().enumerate() {
        let want = if i % 2 == 0 {
            "device_connected"
        } else {
            "device_disconnected"
        };
        assert_eq!(
            s(e, "type"),
            want,
            "presence events must alternate: {:?}",
            all.iter().map(|e| s(e, "type")).collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// 5. Durability

fn acknowledged_records_survive_kill9(io: &str) {
    let mut srv = Server::start(io);
    let sn = "DUR-9";
    let id = create_http_device(&srv, "durable", sn, Some("UTC"));
    let mut expected = BTreeSet::new();
    for round in 0..3u64 {
        let records: Vec<Value> = (0..20u64)
            .map(|i| {
                let n = round * 100 + i + 1;
                expected.insert(n);
                punch(n, &format!("2026-06-1{} 08:{:02}:{:02}", round + 1, i, i))
            })
            .collect();
        let ans = sendlog(&srv, sn, records);
        assert_ok(&ans, "sendlog");
        // No pause: killed right after the answer.
        srv.kill9();
        srv.start_again();
        let items = attendance(&srv, &format!("device_id={id}"));
        let got: BTreeSet<u64> = enrollids(&items).into_iter().collect();
        assert_eq!(
            got,
            expected,
            "after kill -9 in round {round}: acknowledged records missing\n{}",
            srv.logs()
        );
        assert_eq!(
            items.len(),
            expected.len(),
            "duplicates after restart: {items:?}"
        );
    }
    // Still identified by serial after the restarts, and still idempotent.
    let again: Vec<Value> = (0..20u64)
        .map(|i| punch(i + 1, &format!("2026-06-11 08:{:02}:{:02}", i, i)))
        .collect();
    assert_ok(&sendlog(&srv, sn, again), "sendlog");
    assert_eq!(
        attendance(&srv, &format!("device_id={id}")).len(),
        expected.len()
    );
    assert_eq!(
        csv_rows(&srv, &format!("device_id={id}")).len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------
// 6. Input forms, events, photos, errors

fn every_time_format_is_accepted(io: &str) {
    let srv = Server::start(io);
    let sn = "TIME-1";
    // Asia/Tokyo: +09:00 all year.
    let id = create_http_device(&srv, "times", sn, Some("Asia/Tokyo"));
    let cases: [(u64, &str, &str); 7] = [
        (11, "2026-06-12T09:15:30", "2026-06-12T00:15:30.000Z"),
        (12, "2026-06-12T09:15:30.123456", "2026-06-12T00:15:30.123Z"),
        (13, "2026-06-12 09:15:30", "2026-06-12T00:15:30.000Z"),
        (14, "2026-6-12 9:15:30", "2026-06-12T00:15:30.000Z"),
        (15, "2026-06-12T09:15:30Z", "2026-06-12T09:15:30.000Z"),
        (16, "2026-06-12T09:15:30+02:00", "2026-06-12T07:15:30.000Z"),
        (17, "2026-06-12 09:15:30Z", "2026-06-12T09:15:30.000Z"),
    ];
    for (enrollid, time, utc) in cases {
        let ans = sendlog(&srv, sn, vec![punch(enrollid, time)]);
        assert_ok(&ans, "sendlog");
        let items = attendance(&srv, &format!("device_id={id}&enrollid={enrollid}"));
        assert_eq!(
            items.len(),
            1,
            "time {time:?} not stored as a punch: {items:?}"
        );
        let it = &items[0];
        assert_item_shape(it, &id, sn);
        assert_eq!(
            s(it, "local_time"),
            time,
            "local_time must be the time as sent"
        );
        assert_eq!(s(it, "utc_time"), utc, "utc_time of {time:?} in Asia/Tokyo");
        assert!(
            events_of(&srv, &id, "attendance_invalid").is_empty(),
            "time {time:?} was rejected as invalid: {:?}",
            events_of(&srv, &id, "attendance_invalid")
        );
    }
    let all = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(all.len(), cases.len());
    assert_newest_first(&all);
    // Every field sent is kept.
    let f = field(&all[0], "fields");
    assert_eq!(
        f.get("temp").and_then(|v| v.cast_f64()),
        Some(36.5),
        "{}",
        enc(&all[0])
    );
    assert_eq!(
        f.get("event").and_then(|v| v.as_u64()),
        Some(0),
        "{}",
        enc(&all[0])
    );
    assert_eq!(
        f.get("mode").and_then(|v| v.as_u64()),
        Some(1),
        "{}",
        enc(&all[0])
    );
    assert_eq!(
        f.get("inout").and_then(|v| v.as_u64()),
        Some(0),
        "{}",
        enc(&all[0])
    );
}

fn door_and_unknown_face_records_are_events_not_attendance(io: &str) {
    let srv = Server::start(io);
    let sn = "DOOR-1";
    let id = create_http_device(&srv, "door", sn, None);
    let records = vec![
        json!({"enrollid": 0, "time": "2026-06-12 09:00:01", "mode": 0, "inout": 0, "event": 5}),
        json!({"enrollid": 99999999, "time": "2026-06-12 09:00:02", "mode": 8, "inout": 0, "event": 0, "temp": 37.9}),
        punch(42, "2026-06-12 09:00:03"),
    ];
    for _ in 0..2 {
        assert_ok(&sendlog(&srv, sn, records.clone()), "sendlog");
    }
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(
        enrollids(&items),
        vec![42],
        "only the punch is attendance: {items:?}"
    );
    assert!(attendance(&srv, "enrollid=0").is_empty());
    assert!(attendance(&srv, "enrollid=99999999").is_empty());
    let rows = csv_rows(&srv, "");
    assert_eq!(rows.len(), 1, "CSV holds only the punch: {rows:?}");
    assert_eq!(col(&rows[0], "enrollid"), "42");

    let door = events_of(&srv, &id, "door_event");
    assert_eq!(door.len(), 1, "one door event (re-sent once): {door:?}");
    assert!(
        enc(field(&door[0], "payload")).contains("2026-06-12 09:00:01"),
        "the door event keeps its record: {}",
        enc(&door[0])
    );
    assert_eq!(s(&door[0], "device_id"), id);
    let face = events_of(&srv, &id, "unknown_face");
    assert_eq!(
        face.len(),
        1,
        "one unknown_face event (re-sent once): {face:?}"
    );
    assert!(
        enc(field(&face[0], "payload")).contains("2026-06-12 09:00:02"),
        "the unknown_face event keeps its record: {}",
        enc(&face[0])
    );
}

fn photos_are_fetchable_and_unreadable_records_are_kept(io: &str) {
    let srv = Server::start(io);
    let sn = "PHOTO-1";
    let id = create_http_device(&srv, "photo", sn, None);
    let photo = random_bytes(3000);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&photo);
    let with_photo = json!({"enrollid": 5, "time": "2026-06-12 09:15:30", "mode": 1, "inout": 0, "event": 0, "image": b64.as_str()});
    assert_ok(&sendlog(&srv, sn, vec![with_photo]), "sendlog");
    let items = attendance(&srv, &format!("device_id={id}&enrollid=5"));
    assert_eq!(items.len(), 1, "{items:?}");
    let it = &items[0];
    assert!(
        field(it, "fields").get("image").is_none(),
        "the photo must not be inside fields: {}",
        &enc(it)[..enc(it).len().min(500)]
    );
    let url = s(it, "photo_url").to_string();
    assert_eq!(url, format!("/api/attendance/{}/photo", s(it, "id")));
    let r = srv.get(&url);
    assert_eq!(r.status, 200, "GET {url}: {}", r.status);
    assert!(
        r.body == photo,
        "GET {url}: {} bytes, not the {} bytes sent",
        r.body.len(),
        photo.len()
    );
    let r = srv.anonymous().get(&url).unwrap();
    assert_eq!(r.status, 401, "photos need the admin token");
    let r = srv.get("/api/attendance/00/photo");
    assert_eq!(r.status, 404, "{}", r.text());
    let rows = csv_rows(&srv, "enrollid=5");
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&rows[0], "photo_url"), url);

    // A record without a photo has no photo_url.
    assert_ok(
        &sendlog(&srv, sn, vec![punch(6, "2026-06-12 09:16:00")]),
        "sendlog",
    );
    let it = &attendance(&srv, "enrollid=6")[0];
    assert!(
        it.get("photo_url").is_none_or(|v| v.is_null()),
        "{}",
        enc(it)
    );

    // An oversized photo never costs the punch (photos are size-capped); whatever photo is
    // served for it is exactly what was sent.
    let big = random_bytes(600 * 1024);
    let big64 = base64::engine::general_purpose::STANDARD.encode(&big);
    let rec =
        json!({"enrollid": 9, "time": "2026-06-12 09:17:00", "mode": 1, "image": big64.as_str()});
    assert_ok(&sendlog(&srv, sn, vec![rec]), "sendlog");
    let items = attendance(&srv, "enrollid=9");
    assert_eq!(
        items.len(),
        1,
        "the punch with an oversized photo must be stored"
    );
    if let Some(u) = opt_s(&items[0], "photo_url") {
        let r = srv.get(u);
        assert!(
            r.status != 200 || r.body == big,
            "a served photo must be the one sent, intact"
        );
    }

    // Unreadable records are kept as attendance_invalid events; the rest of the batch is
    // stored and the device hears true (a re-send could never fix them).
    let batch = vec![
        json!({"enrollid": 21, "time": "soon", "mode": 1}),
        json!({"time": "2026-06-12 09:18:00", "mode": 1, "note": "no user id"}),
        punch(22, "2026-06-12 09:18:30"),
    ];
    assert_ok(&sendlog(&srv, sn, batch), "sendlog");
    assert_eq!(enrollids(&attendance(&srv, "enrollid=22")), vec![22]);
    assert!(
        attendance(&srv, "enrollid=21").is_empty(),
        "an unreadable record is not attendance"
    );
    let invalid = events_of(&srv, &id, "attendance_invalid");
    assert!(
        invalid
            .iter()
            .any(|e| enc(field(e, "payload")).contains("soon")),
        "the record with time \"soon\" must be kept in an attendance_invalid event: {invalid:?}"
    );
    assert!(
        invalid
            .iter()
            .any(|e| enc(field(e, "payload")).contains("no user id")),
        "the record without a user id must be kept in an attendance_invalid event: {invalid:?}"
    );
}

fn protocol_errors_and_lenient_input(io: &str) {
    let srv = Server::start(io);
    let sn = "PROTO-1";
    let id = create_http_device(&srv, "proto", sn, Some("UTC"));
    let client = srv.anonymous();

    // Malformed JSON: 400 invalid_json, JSON error body.
    for bad in [
        &b"{\"cmd\":\"reg\",\"sn\":"[..],
        b"not json at all",
        b"{\"cmd\":\"reg\" \"sn\":\"x\"}",
    ] {
        let r = client.post_json(DEVICE_HTTP, bad).unwrap();
        assert_eq!(
            r.status,
            400,
            "{:?}: {} {}",
            String::from_utf8_lossy(bad),
            r.status,
            r.text()
        );
        assert_eq!(error_code(&parse(&r.body)), "invalid_json", "{}", r.text());
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json")
        );
    }

    // Wrong or missing Content-Type: 400 unsupported_content_type.
    let good = enc(&json!({"cmd": "checklive", "sn": sn, "time": "2026-06-12T09:20:00"}));
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = client
            .request("POST", DEVICE_HTTP, Some((ct, good.as_bytes())))
            .unwrap();
        assert_eq!(
            r.status,
            400,
            "Content-Type {ct}: {} {}",
            r.status,
            r.text()
        );
        assert_eq!(
            error_code(&parse(&r.body)),
            "unsupported_content_type",
            "{}",
            r.text()
        );
    }
    let req = format!(
        "POST {DEVICE_HTTP} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{good}",
        srv.addr(),
        good.len()
    );
    let r = raw_http(srv.addr(), req.as_bytes());
    assert_eq!(
        r.status,
        400,
        "no Content-Type: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(error_code(&r.json()), "unsupported_content_type");
    // A charset parameter is fine.
    let r = client
        .request(
            "POST",
            DEVICE_HTTP,
            Some(("application/json; charset=utf-8", good.as_bytes())),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ok(&parse(&r.body), "checklive");

    // Unknown cmd: 200 with result:false.
    let ans = device_post(&srv, &json!({"cmd": "getuserlist", "sn": sn, "stn": true}));
    assert_refused(&ans, "getuserlist");

    // Missing or empty sn: result:false with a reason.
    assert_refused(
        &device_post(&srv, &json!({"cmd": "reg", "cpusn": "1"})),
        "reg",
    );
    assert_refused(
        &device_post(&srv, &json!({"cmd": "checklive", "sn": ""})),
        "checklive",
    );
    assert!(
        pending(&srv).iter().all(|p| !s(p, "serial").is_empty()),
        "an empty serial must not be listed pending: {:?}",
        pending(&srv)
    );

    // What firmware really sends: `records` for `record`, `userid` for `enrollid`, string
    // numbers, trailing commas.
    let body = format!(
        r#"{{"cmd":"sendlog","sn":"{sn}","count":2,"logindex":0,"records":[{{"userid":77,"time":"2026-06-12 10:00:00","mode":1,"inout":1,"event":0,}},{{"enrollid":"78","time":"2026-06-12 10:00:05","mode":1,}},]}}"#
    );
    assert_ok(&device_post_text(&srv, &body), "sendlog");
    let items = attendance(&srv, &format!("device_id={id}"));
    let ids: BTreeSet<u64> = enrollids(&items).into_iter().collect();
    assert_eq!(ids, BTreeSet::from([77, 78]), "{items:?}");
    let it = attendance(&srv, "enrollid=77");
    assert_eq!(it.len(), 1);
    assert_eq!(s(&it[0], "utc_time"), "2026-06-12T10:00:00.000Z");
    assert_eq!(
        field(&it[0], "fields")
            .get("inout")
            .and_then(|v| v.as_u64()),
        Some(1),
        "{}",
        enc(&it[0])
    );
    // A trailing comma inside a string is data, not syntax.
    let body = format!(
        r#"{{"cmd":"sendlog","sn":"{sn}","count":1,"record":[{{"enrollid":79,"time":"2026-06-12 10:01:00","name":"a,]",}}]}}"#
    );
    assert_ok(&device_post_text(&srv, &body), "sendlog");
    let it = attendance(&srv, "enrollid=79");
    assert_eq!(it.len(), 1);
    assert_eq!(s(field(&it[0], "fields"), "name"), "a,]");

    // sendlog without records is refused (nothing to store), not acknowledged.
    assert_refused(
        &device_post(&srv, &json!({"cmd": "sendlog", "sn": sn, "count": 0})),
        "sendlog",
    );

    // Keep-alive with pipelined requests: three sendlogs written at once are answered in order
    // on the one connection, then a fourth request after them.
    let mut stream = TcpStream::connect(srv.addr()).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let post = |body: &str| {
        format!(
            "POST {DEVICE_HTTP} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            srv.addr(),
            body.len()
        )
    };
    let mut pipelined = String::new();
    for e in 90..93u64 {
        pipelined.push_str(&post(&enc(&json!({
            "cmd": "sendlog", "sn": sn, "count": 1, "logindex": 0,
            "record": [punch(e, "2026-06-12 11:00:00")]
        }))));
    }
    stream.write_all(pipelined.as_bytes()).unwrap();
    let mut buf = Vec::new();
    for n in 0..3 {
        let r = read_response(&mut stream, &mut buf, SOON)
            .unwrap_or_else(|e| panic!("pipelined response #{}: {e}\n{}", n + 1, srv.logs()));
        assert_eq!(r.status, 200, "pipelined #{}: {}", n + 1, r.text());
        assert_ok(&parse(&r.body), "sendlog");
    }
    stream
        .write_all(
            post(&enc(
                &json!({"cmd": "checklive", "sn": sn, "time": "2026-06-12T11:00:05"}),
            ))
            .as_bytes(),
        )
        .unwrap();
    let r = read_response(&mut stream, &mut buf, SOON)
        .unwrap_or_else(|e| panic!("request after the pipelined ones: {e}\n{}", srv.logs()));
    assert_ok(&parse(&r.body), "checklive");
    for e in 90..93u64 {
        assert_eq!(
            attendance(&srv, &format!("enrollid={e}")).len(),
            1,
            "pipelined record {e}"
        );
    }

    // An oversized batch is all or nothing: refused and nothing stored, or stored entirely.
    let many: Vec<Value> = (0..1001u64)
        .map(|i| {
            punch(
                1000 + i,
                &format!(
                    "2026-06-13 {:02}:{:02}:{:02}",
                    i / 3600,
                    i / 60 % 60,
                    i % 60
                ),
            )
        })
        .collect();
    let ans = sendlog(&srv, sn, many);
    let stored = attendance(&srv, "from=2026-06-13T00:00:00Z&to=2026-06-13T23:59:59Z").len();
    if ans.get("result").and_then(|v| v.as_bool()) == Some(true) {
        assert_ok(&ans, "sendlog");
        assert_eq!(stored, 1001, "acknowledged but not all stored");
    } else {
        assert_refused(&ans, "sendlog");
        assert_eq!(
            stored, 0,
            "refused (the device keeps and re-sends them) but {stored} were stored"
        );
    }

    // The server still serves normally.
    assert_ok(&checklive(&srv, sn), "checklive");
}

fn auto_approve_accepts_new_serials(io: &str) {
    let srv = Server::start_with(io, &["--auto-approve"]);
    let sn = "AUTO-123";
    assert_ok(&reg(&srv, sn, "AI-Lab", "lab-1.0"), "reg");
    let devices = srv.list_all("/api/devices?limit=100&protocol=http");
    let d = devices
        .iter()
        .find(|d| opt_s(d, "serial") == Some(sn))
        .unwrap_or_else(|| panic!("{sn} not created by --auto-approve: {devices:?}"));
    assert_eq!(s(d, "protocol"), "http");
    let id = s(d, "device_id").to_string();
    assert!(
        pending(&srv).is_empty(),
        "auto-approved serials are not pending: {:?}",
        pending(&srv)
    );
    let dev = srv.get(&format!("/api/devices/{id}")).json();
    assert_eq!(
        s(field(field(&dev, "info"), "devinfo"), "modelname"),
        "AI-Lab",
        "{}",
        enc(&dev)
    );
    assert_ok(
        &sendlog(&srv, sn, vec![punch(3, "2026-06-12 09:15:30")]),
        "sendlog",
    );
    let items = attendance(&srv, &format!("device_id={id}"));
    assert_eq!(items.len(), 1, "{items:?}");
    assert_item_shape(&items[0], &id, sn);

    // A serial first seen with sendlog or checklive is accepted too.
    assert_ok(
        &sendlog(&srv, "AUTO-456", vec![punch(4, "2026-06-12 09:15:31")]),
        "sendlog",
    );
    assert_ok(&checklive(&srv, "AUTO-789"), "checklive");
    let serials: BTreeSet<String> = srv
        .list_all("/api/devices?limit=100&protocol=http")
        .iter()
        .filter_map(|d| opt_s(d, "serial").map(str::to_string))
        .collect();
    assert_eq!(
        serials,
        BTreeSet::from([
            "AUTO-123".to_string(),
            "AUTO-456".to_string(),
            "AUTO-789".to_string()
        ])
    );
    assert_eq!(enrollids(&attendance(&srv, "enrollid=4")), vec![4]);
    srv.wait_status(&id, "online");
}

// ---------------------------------------------------------------------------
// 7. CSV export

fn csv_export_filters_and_quoting(io: &str) {
    let srv = Server::start(io);
    let a = create_http_device(&srv, "csv-a", "CSV-A", Some("UTC"));
    let b = create_http_device(&srv, "csv-b", "CSV-B", Some("UTC"));
    let a1 = json!({"enrollid": 1, "time": "2026-06-10 08:00:00", "mode": 1, "inout": 0, "event": 0, "temp": 36.5, "verifymode": 15, "name": "Doe, John"});
    let a2 = json!({"enrollid": 2, "time": "2026-06-11 08:00:00", "mode": 2, "inout": 1, "event": 0, "name": "Jane \"JJ\" Roe"});
    let a3 =
        json!({"enrollid": 1, "time": "2026-06-12 08:00:00", "mode": 1, "inout": 1, "event": 0});
    let b1 =
        json!({"enrollid": 1, "time": "2026-06-11 09:00:00", "mode": 1, "inout": 0, "event": 0});
    let b2 = json!({"enrollid": 3, "time": "2026-06-12 09:00:00", "mode": 1, "inout": 0, "event": 0, "name": "multi\nline"});
    assert_ok(&sendlog(&srv, "CSV-A", vec![a1, a2, a3]), "sendlog");
    assert_ok(&sendlog(&srv, "CSV-B", vec![b1, b2]), "sendlog");

    let k = |dev: &str, e: u64, t: &str| (dev.to_string(), e.to_string(), t.to_string());
    let ka1 = k(&a, 1, "2026-06-10 08:00:00");
    let ka2 = k(&a, 2, "2026-06-11 08:00:00");
    let ka3 = k(&a, 1, "2026-06-12 08:00:00");
    let kb1 = k(&b, 1, "2026-06-11 09:00:00");
    let kb2 = k(&b, 3, "2026-06-12 09:00:00");
    let cases: Vec<(String, Vec<(String, String, String)>)> = vec![
        (
            String::new(),
            vec![
                ka1.clone(),
                ka2.clone(),
                ka3.clone(),
                kb1.clone(),
                kb2.clone(),
            ],
        ),
        (
            format!("device_id={a}"),
            vec![ka1.clone(), ka2.clone(), ka3.clone()],
        ),
        (format!("device_id={b}"), vec![kb1.clone(), kb2.clone()]),
        (
            "enrollid=1".into(),
            vec![ka1.clone(), ka3.clone(), kb1.clone()],
        ),
        (
            "from=2026-06-11T00:00:00Z&to=2026-06-11T23:59:59Z".into(),
            vec![ka2.clone(), kb1.clone()],
        ),
        (
            "from=2026-06-12T00:00:00Z".into(),
            vec![ka3.clone(), kb2.clone()],
        ),
        ("to=2026-06-10T23:59:59Z".into(), vec![ka1.clone()]),
        (
            format!("device_id={a}&enrollid=1&from=2026-06-11T00:00:00Z"),
            vec![ka3.clone()],
        ),
        (
            format!("device_id={b}&from=2026-06-11T00:00:00Z&to=2026-06-11T23:59:59Z"),
            vec![kb1.clone()],
        ),
        (format!("device_id={b}&enrollid=2"), vec![]),
        ("from=2027-01-01T00:00:00Z".into(), vec![]),
    ];
    for (q, want) in &cases {
        let want: BTreeSet<_> = want.iter().cloned().collect();
        let rows = csv_rows(&srv, q);
        let got: BTreeSet<_> = rows.iter().map(key_of_row).collect();
        assert_eq!(got, want, "CSV rows for ?{q}");
        assert_eq!(
            rows.len(),
            want.len(),
            "duplicate CSV rows for ?{q}: {rows:?}"
        );
        let items = attendance(&srv, q);
        let got: BTreeSet<_> = items.iter().map(key_of_item).collect();
        assert_eq!(got, want, "JSON items for ?{q}");
        assert_eq!(items.len(), want.len(), "duplicate items for ?{q}");
        assert_newest_first(&items);
        // Small pages with the cursor: every item exactly once, still newest first.
        let paged = srv.list_all(&format!("/api/attendance?limit=2&{q}"));
        let got: BTreeSet<_> = paged.iter().map(key_of_item).collect();
        assert_eq!(got, want, "JSON items paged by 2 for ?{q}");
        assert_eq!(paged.len(), want.len(), "duplicates across pages for ?{q}");
        assert_newest_first(&paged);
    }

    // Every column of one row, and quoting.
    let text = csv_text(&srv, &format!("device_id={a}"));
    assert!(
        text.contains(",\"Doe, John\","),
        "a value with a comma must be quoted: {text:?}"
    );
    assert!(
        text.contains(",\"Jane \"\"JJ\"\" Roe\","),
        "a value with quotes must be quoted with doubled quotes: {text:?}"
    );
    let rows = csv_rows(
        &srv,
        &format!("device_id={a}&enrollid=1&to=2026-06-10T23:59:59Z"),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let item = &attendance(
        &srv,
        &format!("device_id={a}&enrollid=1&to=2026-06-10T23:59:59Z"),
    )[0];
    let r = &rows[0];
    let want: Vec<(&str, String)> = vec![
        ("device_id", a.clone()),
        ("serial", "CSV-A".into()),
        ("enrollid", "1".into()),
        ("local_time", "2026-06-10 08:00:00".into()),
        ("utc_time", "2026-06-10T08:00:00.000Z".into()),
        ("received_at", s(item, "received_at").to_string()),
        ("mode", "1".into()),
        ("inout", "0".into()),
        ("event", "0".into()),
        ("temp", "36.5".into()),
        ("verifymode", "15".into()),
        ("name", "Doe, John".into()),
        ("photo_url", String::new()),
    ];
    for (name, value) in want {
        assert_eq!(col(r, name), value, "CSV column {name} of {r:?}");
    }
    assert_rfc3339(col(r, "received_at"));
    let rows = csv_rows(&srv, &format!("device_id={b}&enrollid=3"));
    assert_eq!(
        col(&rows[0], "name"),
        "multi\nline",
        "a line break inside a quoted field"
    );
    let rows = csv_rows(&srv, &format!("device_id={a}&enrollid=2"));
    assert_eq!(col(&rows[0], "name"), "Jane \"JJ\" Roe");
    assert_eq!(col(&rows[0], "temp"), "", "a field not sent is empty");

    // Admin only; bad filters are 400 with the JSON error shape.
    let r = raw_get(&srv, "/api/attendance.csv", false);
    assert_eq!(
        r.status,
        401,
        "CSV without a token: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(error_code(&parse(&r.body)), "unauthorized");
    for q in ["from=yesterday", "device_id=not-a-uuid", "enrollid=abc"] {
        let r = raw_get(&srv, &format!("/api/attendance.csv?{q}"), true);
        assert_eq!(r.status, 400, "CSV ?{q}: {} {}", r.status, r.text());
        let _ = error_code(&parse(&r.body));
    }
}

fn csv_export_streams_many_rows(io: &str) {
    let srv = Server::start(io);
    let sn = "CSV-BIG";
    let id = create_http_device(&srv, "csv-big", sn, Some("UTC"));
    const N: u64 = 1200;
    let rec = |i: u64| json!({"enrollid": i % 7 + 1, "time": format!("2026-03-01 {:02}:{:02}:00", i / 60, i % 60), "mode": 1, "inout": 0, "event": 0});
    for half in 0..2 {
        let records: Vec<Value> = (half * N / 2..(half + 1) * N / 2).map(rec).collect();
        assert_ok(&sendlog(&srv, sn, records), "sendlog");
    }
    let want: BTreeSet<String> = (0..N)
        .map(|i| format!("2026-03-01 {:02}:{:02}:00", i / 60, i % 60))
        .collect();
    for q in [String::new(), format!("device_id={id}")] {
        let rows = csv_rows(&srv, &q);
        assert_eq!(rows.len() as u64, N, "CSV ?{q}: {} rows", rows.len());
        let got: BTreeSet<String> = rows
            .iter()
            .map(|r| col(r, "local_time").to_string())
            .collect();
        assert_eq!(
            got, want,
            "CSV ?{q}: rows missing or duplicated across chunks"
        );
    }
    assert_eq!(attendance(&srv, &format!("device_id={id}")).len() as u64, N);
    for e in 1..=7u64 {
        let n = (0..N).filter(|i| i % 7 + 1 == e).count();
        assert_eq!(
            csv_rows(&srv, &format!("enrollid={e}")).len(),
            n,
            "CSV ?enrollid={e}"
        );
    }

    // Chunked framing is exact: the same keep-alive connection serves another request after it.
    let mut stream = TcpStream::connect(srv.addr()).expect("connect");
    let mut buf = Vec::new();
    let token = srv.admin_token().to_string();
    send_get(
        &mut stream,
        &srv,
        &format!("/api/attendance.csv?device_id={id}"),
        Some(&token),
        true,
    );
    let r = read_response(&mut stream, &mut buf, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("CSV on a keep-alive connection: {e}\n{}", srv.logs()));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(parse_csv(&r.text()).len() as u64, N + 1);
    send_get(&mut stream, &srv, "/healthz", None, true);
    let h = read_response(&mut stream, &mut buf, SOON).unwrap_or_else(|e| {
        panic!(
            "second request after the CSV on one connection: {e}\n{}",
            srv.logs()
        )
    });
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(s(&parse(&h.body), "status"), "ok");
    assert!(
        buf.is_empty(),
        "bytes after the responses: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

// ---------------------------------------------------------------------------
// The answers and paths of AiFace HTTP firmware (shared/protocols.md §4.1 [AF-HT], §3.3 [AF-TD])

/// `cloudtime` is the device's wall-clock time in its zone, which the firmware sets its clock
/// from; `reg` says `nosenduser` as the WebSocket answer does; `sendlog` counts its records and
/// echoes `logindex` as sent.
fn answers_are_in_the_devices_time_and_echo_the_sendlog(io: &str) {
    let srv = Server::start(io);
    let sn = "TZ-HTTP-1";
    create_http_device(&srv, "tokyo", sn, Some("Asia/Tokyo"));
    let ans = reg(&srv, sn, "AiFace", "ai518");
    assert_ok(&ans, "reg");
    assert_cloudtime_in(&ans, "Asia/Tokyo");
    assert_eq!(
        ans.get("nosenduser").and_then(|v| v.as_bool()),
        Some(true),
        "{}",
        enc(&ans)
    );
    let ans = checklive(&srv, sn);
    assert_cloudtime_in(&ans, "Asia/Tokyo");
    assert!(ans.get("count").is_none(), "{}", enc(&ans));

    for (logindex, echoed) in [(json!(17), "17"), (json!("a-9"), "\"a-9\"")] {
        let ans = device_post(
            &srv,
            &json!({"cmd": "sendlog", "sn": sn, "count": 2, "logindex": logindex,
                    "record": [punch(1, "2026-06-12 09:00:00"), punch(2, "2026-06-12 09:00:01")]}),
        );
        assert_ok(&ans, "sendlog");
        assert_cloudtime_in(&ans, "Asia/Tokyo");
        assert_eq!(u(&ans, "count"), 2, "{}", enc(&ans));
        assert_eq!(enc(field(&ans, "logindex")), echoed, "{}", enc(&ans));
    }
    // Without a logindex nothing is echoed; `count` is what the message held, not what it said.
    let ans = device_post(
        &srv,
        &json!({"cmd": "sendlog", "sn": sn, "count": 5, "record": {"enrollid": 3, "time": "2026-06-12 09:00:02"}}),
    );
    assert_eq!(u(&ans, "count"), 1, "{}", enc(&ans));
    assert!(ans.get("logindex").is_none(), "{}", enc(&ans));

    // No timezone setting: the server's zone.
    let sn = "TZ-HTTP-2";
    create_http_device(&srv, "server-zone", sn, None);
    let ans = checklive(&srv, sn);
    let off = cloudtime_offset_s(&ans, &jiff::tz::TimeZone::system());
    assert!(
        off.abs() < 600,
        "cloudtime {} is not the server's time",
        s(&ans, "cloudtime")
    );
}

/// AiFace HTTP firmware posts to `/` or `/face` [AF-HT]: there a JSON POST is served as
/// `/api/device-http`, and the dashboard at `/` is what it was.
fn firmware_posting_to_its_own_paths_is_the_http_device(io: &str) {
    let srv = Server::start(io);
    let sn = "ROOT-POST-1";
    let id = create_http_device(&srv, "root", sn, Some("UTC"));
    let client = srv.anonymous();
    let post = |path: &str, ct: &str, body: &str| {
        client
            .request("POST", path, Some((ct, body.as_bytes())))
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", srv.logs()))
    };
    let reg = enc(&json!({"cmd": "reg", "sn": sn, "devinfo": {"modelname": "AiFace"}}));
    for path in ["/", "/face", "/face/"] {
        let r = post(path, "application/json", &reg);
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        let ans = parse(&r.body);
        assert_ok(&ans, "reg");
        assert_cloudtime_in(&ans, "UTC");
    }
    let log = enc(&json!({"cmd": "sendlog", "sn": sn, "logindex": 4,
                          "record": [punch(21, "2026-06-12 10:00:00")]}));
    let r = post("/face", "application/json; charset=utf-8", &log);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(u(&parse(&r.body), "logindex"), 4);
    let log =
        enc(&json!({"cmd": "sendlog", "sn": sn, "record": [punch(22, "2026-06-12 10:00:01")]}));
    assert_ok(&parse(&post("/", "application/json", &log).body), "sendlog");
    assert_eq!(
        enrollids(&attendance(&srv, &format!("device_id={id}"))),
        [22, 21],
        "both punches stored"
    );
    srv.wait_status(&id, "online");
    // Refusals are the endpoint's: an unknown serial, a body that is not JSON.
    let stranger = enc(&json!({"cmd": "checklive", "sn": "ROOT-UNKNOWN"}));
    assert_refused(
        &parse(&post("/", "application/json", &stranger).body),
        "checklive",
    );
    let r = post("/face", "application/json", "{not json");
    assert_eq!(
        (r.status, error_code(&parse(&r.body))),
        (400, "invalid_json".to_string())
    );
    let r = post("/face", "text/plain", &reg);
    assert_eq!(
        (r.status, error_code(&parse(&r.body))),
        (400, "unsupported_content_type".to_string())
    );

    // The dashboard is untouched: its page, and the 405 a POST of anything else to it gets.
    let page = raw_get(&srv, "/", false);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "GET / is still the dashboard"
    );
    let r = post("/", "text/plain", "hello");
    assert_eq!(r.status, 405, "{}", r.text());
    let r = post("/", "application/x-www-form-urlencoded", "a=b");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(raw_get(&srv, "/face", false).status, 404);
    assert_eq!(raw_get(&srv, "/app.js", false).status, 200);
    let login = post(
        "/api/login",
        "application/json",
        r#"{"username":"admin","password":"wrong"}"#,
    );
    assert_eq!(login.status, 401, "{}", login.text());
}
