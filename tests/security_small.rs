//! The smaller security fixes of issue 13, each attempted against the real binary under both I/O
//! drivers: a password change that keeps the password, the pending list answered in one unbounded
//! piece, spreadsheet formulas in the CSV export behind spaces, tabs and line breaks, the enrollid
//! filter fooled by an `enrollid` nested in a punch's fields, and a data directory other local
//! users can read.
//!
//! Rules as in the other suites: every wait is bounded, state is polled, durations are never
//! asserted.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

for_both_drivers!(
    a_password_change_must_change_the_password,
    the_pending_list_is_paginated,
    csv_cells_a_spreadsheet_would_run_are_guarded,
    the_enrollid_filter_matches_the_punchs_own_id_only,
    the_data_directory_is_private,
);

// ---------------------------------------------------------------------------
// Dashboard sessions

/// A raw HTTP request on a fresh connection with a JSON body; `headers` are extra header lines.
fn http(
    srv: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> RawResponse {
    let body = enc(body);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    raw_http(srv.addr(), req.as_bytes())
}

/// A logged-in browser: its cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    fn login(srv: &Server, user: &str, password: &str) -> Browser {
        let r = http(
            srv,
            "POST",
            "/api/login",
            &[],
            &json!({"username": user, "password": password}),
        );
        assert_eq!(r.status, 200, "login {user}: {r:?}");
        let cookie = r
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("Set-Cookie")
            .to_string();
        Browser {
            cookie,
            csrf: s(&r.json(), "csrf_token").to_string(),
        }
    }

    fn send(&self, srv: &Server, method: &str, path: &str, body: &Value) -> RawResponse {
        let h = [
            ("Cookie", self.cookie.as_str()),
            ("X-CSRF-Token", self.csrf.as_str()),
        ];
        http(srv, method, path, &h, body)
    }

    fn change_password(&self, srv: &Server, current: &str, new: &str) -> RawResponse {
        self.send(
            srv,
            "POST",
            "/api/me/password",
            &json!({"current_password": current, "new_password": new}),
        )
    }

    fn get(&self, srv: &Server, path: &str) -> RawResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.cookie
        );
        raw_http(srv.addr(), req.as_bytes())
    }
}

/// Asserts 400 `password_unchanged` with a message that says what to do.
fn assert_unchanged(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    let v = r.json();
    assert_eq!(error_code(&v), "password_unchanged", "{what}: {}", enc(&v));
    let msg = field(field(&v, "error"), "message").as_str().unwrap_or("");
    assert!(msg.contains("differ"), "{what}: message {msg:?}");
}

fn a_password_change_must_change_the_password(io: &str) {
    let srv = Server::start(io);
    let initial = std::fs::read_to_string(srv.data_dir().join("initial-admin-password"))
        .expect("initial-admin-password")
        .trim()
        .to_string();
    let b = Browser::login(&srv, "admin", &initial);

    // The forced first-login change, answered with the initial password itself.
    assert_unchanged(
        &b.change_password(&srv, &initial, &initial),
        "the initial password as the new one",
    );
    let r = b.get(&srv, "/api/devices");
    assert_eq!(
        (r.status, error_code(&r.json())),
        (403, "password_change_required".to_string()),
        "the refused change must leave the change required"
    );
    assert!(
        srv.data_dir().join("initial-admin-password").exists(),
        "a refused change keeps the initial password file"
    );
    // A wrong current password is still reported as such, even when both fields match.
    let r = b.change_password(&srv, "not-the-password", "not-the-password");
    assert_eq!(
        (r.status, error_code(&r.json())),
        (400, "invalid_credentials".to_string()),
        "{r:?}"
    );

    const MINE: &str = "my-own-password-1";
    assert_eq!(b.change_password(&srv, &initial, MINE).status, 200);
    assert_eq!(b.get(&srv, "/api/devices").status, 200);
    // Any later change of one's own password, too.
    assert_unchanged(&b.change_password(&srv, MINE, MINE), "own password again");

    // An admin setting a user's password to the one it has.
    let r = srv.post(
        "/api/users",
        &json!({"username": "vera", "password": "viewer-password", "role": "viewer", "must_change_password": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = srv.patch("/api/users/vera", &json!({"password": "viewer-password"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_code(&r.json()), "password_unchanged");
    let r = b.send(
        &srv,
        "PATCH",
        "/api/users/admin",
        &json!({"password": MINE}),
    );
    assert_unchanged(&r, "an admin's PATCH of their own user");
    // Refused as a whole: the role in the same request did not change either.
    let r = srv.patch(
        "/api/users/vera",
        &json!({"password": "viewer-password", "role": "admin"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let users = srv.list_all("/api/users");
    let vera = users
        .iter()
        .find(|u| s(u, "username") == "vera")
        .expect("vera listed");
    assert_eq!(s(vera, "role"), "viewer", "{}", enc(vera));
    // A real change goes through, and the old password stops working.
    let r = srv.patch("/api/users/vera", &json!({"password": "viewer-password-2"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = Browser::login(&srv, "vera", "viewer-password-2");
    let r = http(
        &srv,
        "POST",
        "/api/login",
        &[],
        &json!({"username": "vera", "password": "viewer-password"}),
    );
    assert_eq!(r.status, 401, "{r:?}");
    // The user's forced change refuses the password the admin handed out.
    assert_unchanged(
        &v.change_password(&srv, "viewer-password-2", "viewer-password-2"),
        "a viewer's forced change",
    );
}

// ---------------------------------------------------------------------------
// Legacy HTTP devices

const DEVICE_HTTP: &str = "/api/device-http";

/// POSTs a device request as a terminal does (no token); asserts a 200 answer and returns it.
fn device_post(srv: &Server, body: &Value) -> Value {
    let r = srv
        .anonymous()
        .post_json(DEVICE_HTTP, enc(body).as_bytes())
        .unwrap_or_else(|e| panic!("POST {DEVICE_HTTP}: {e}\n{}", srv.logs()));
    assert_eq!(
        r.status,
        200,
        "POST {DEVICE_HTTP} {}: {}",
        enc(body),
        r.text()
    );
    parse(&r.body)
}

/// An HTTP device with `serial` whose local times are UTC; returns its device_id.
fn http_device(srv: &Server, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": "http", "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

/// Sends `records` in one `sendlog` and asserts they were stored.
fn sendlog(srv: &Server, serial: &str, records: Vec<Value>) {
    let n = records.len();
    let ans = device_post(
        srv,
        &json!({"cmd": "sendlog", "sn": serial, "count": n, "logindex": 0, "record": Value::from(records)}),
    );
    assert_eq!(
        ans.get("result").and_then(|v| v.as_bool()),
        Some(true),
        "sendlog: {}",
        enc(&ans)
    );
}

/// A GET with the admin token; asserts 200.
fn get_ok(srv: &Server, path: &str) -> Resp {
    let r = srv.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r
}

fn the_pending_list_is_paginated(io: &str) {
    // 130 new serials from one address: past the new-serials rate limit, which this is not about.
    let srv = Server::start_with(io, &["--new-serials-per-minute", "0"]);
    // More than a default page (100).
    const N: usize = 130;
    for i in 0..N {
        let ans = device_post(
            &srv,
            &json!({"cmd": "checklive", "sn": format!("PEND-{i:03}"), "time": "2026-06-12T09:20:00"}),
        );
        assert_eq!(
            ans.get("result").and_then(|v| v.as_bool()),
            Some(false),
            "an unknown serial is refused: {}",
            enc(&ans)
        );
    }

    // The default page is bounded and says where to go on.
    let first = get_ok(&srv, "/api/pending-devices").json();
    assert_eq!(arr(&first, "items").len(), 100, "default page size");
    assert!(
        first.get("next_cursor").and_then(|c| c.as_str()).is_some(),
        "a full page has a next_cursor: {}",
        enc(&first)
    );

    // Small pages: every serial exactly once, most recent activity first, then the end.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/pending-devices?limit=7&cursor={}", pct(c)),
            None => "/api/pending-devices?limit=7".to_string(),
        };
        let v = get_ok(&srv, &path).json();
        let items = arr(&v, "items");
        assert!(items.len() <= 7, "limit 7 answered {}", items.len());
        for p in items {
            seen.push((s(p, "last_seen").to_string(), s(p, "serial").to_string()));
        }
        pages += 1;
        assert!(pages <= N, "the pages never end");
        match v.get("next_cursor").and_then(|c| c.as_str()) {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, N.div_ceil(7), "pages of 7");
    let serials = set(seen.iter().map(|(_, sn)| sn.clone()));
    assert_eq!(serials.len(), N, "every serial once: {seen:?}");
    assert_eq!(seen.len(), N, "no serial twice: {seen:?}");
    for w in seen.windows(2) {
        let a = w[0].0.parse::<jiff::Timestamp>().expect("last_seen");
        let b = w[1].0.parse::<jiff::Timestamp>().expect("last_seen");
        assert!(
            a >= b,
            "not most recent first: {:?} before {:?}",
            w[0],
            w[1]
        );
    }
    let all = get_ok(&srv, "/api/pending-devices?limit=1000").json();
    assert_eq!(arr(&all, "items").len(), N);
    assert!(field(&all, "next_cursor").is_null(), "{}", enc(&all));

    // Bad query values answer as on every other list.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=nonsense",
        "cursor=12.zz",
    ] {
        let r = srv.get(&format!("/api/pending-devices?{q}"));
        assert_eq!(r.status, 400, "?{q}: {}", r.text());
        assert_eq!(error_code(&r.json()), "invalid_query", "?{q}");
    }
    // A cursor of another list is refused too.
    let devices_cursor = "p100";
    let r = srv.get(&format!("/api/pending-devices?cursor={devices_cursor}"));
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The CSV export's body text.
fn csv(srv: &Server, query: &str) -> String {
    let r = get_ok(srv, &format!("/api/attendance.csv?{query}"));
    String::from_utf8(r.body).expect("UTF-8 CSV")
}

fn csv_cells_a_spreadsheet_would_run_are_guarded(io: &str) {
    let srv = Server::start(io);
    let sn = "CSV-FORMULA";
    let id = http_device(&srv, sn);
    // The punch's `name` comes from the terminal and is a CSV column; so is `temp`.
    let names = [
        ("\t=1+1", "\"'\t=1+1\""),
        ("\r=2+2", "\"'\r=2+2\""),
        ("\n@SUM(1)", "\"'\n@SUM(1)\""),
        (" =HYPERLINK(1)", "\"' =HYPERLINK(1)\""),
        ("   +cmd", "\"'   +cmd\""),
        ("  -2+3", "\"'  -2+3\""),
        ("=3+3", "\"'=3+3\""),
        ("Plain Name", "Plain Name"),
    ];
    let records: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            json!({"enrollid": i as u64 + 1, "time": format!("2026-06-10 08:{i:02}:00"), "name": *name, "temp": -5})
        })
        .collect();
    sendlog(&srv, sn, records);
    // The person behind PIN 8 is typed by an operator, and is a CSV column too.
    let r = srv.post(
        "/api/people",
        &json!({"pin": 8, "name": "Plain", "external_id": "=HYPERLINK(2)"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let text = csv(&srv, &format!("device_id={id}"));
    // `name` comes before `photo_url`, `person_name` and `person_external_id` (empty here but on
    // PIN 8's row), which end the row.
    for (name, cell) in &names[..7] {
        assert!(
            text.contains(&format!(",{cell},,,\r\n")),
            "name {name:?} must be the cell {cell:?}:\n{text:?}"
        );
    }
    assert!(
        text.contains(",Plain Name,,Plain,\"'=HYPERLINK(2)\"\r\n"),
        "the person's cells are guarded too:\n{text:?}"
    );
    // A negative number is data, not a formula: it stays as it is.
    assert!(text.contains(",-5,"), "temp -5 unguarded: {text:?}");
    assert!(!text.contains("'-5"), "{text:?}");
}

fn enrollids(srv: &Server, query: &str) -> Vec<u64> {
    let mut v: Vec<u64> = srv
        .list_all(&format!("/api/attendance?{query}"))
        .iter()
        .map(|i| u(i, "enrollid"))
        .collect();
    v.sort_unstable();
    v
}

fn the_enrollid_filter_matches_the_punchs_own_id_only(io: &str) {
    let srv = Server::start(io);
    let sn = "ENROLL-TRAP";
    let id = http_device(&srv, sn);
    let at = |m: u32| format!("2026-06-10 09:{m:02}:00");
    sendlog(
        &srv,
        sn,
        vec![
            // Enrollid 7, with "enrollid":5, nested in its fields at two depths.
            json!({"enrollid": 7, "time": at(1), "extra": {"enrollid": 5, "x": 1}}),
            json!({"enrollid": 8, "time": at(2), "raw": [{"enrollid": 5, "y": [{"enrollid": 5, "z": 0}]}]}),
            json!({"enrollid": 5, "time": at(3)}),
            json!({"enrollid": 50, "time": at(4)}),
            json!({"enrollid": 55, "time": at(5), "extra": {"enrollid": 5, "x": 1}}),
        ],
    );
    // Both scans: across devices (the time index) and within one device.
    for scope in [String::new(), format!("device_id={id}&")] {
        assert_eq!(
            enrollids(&srv, &format!("{scope}enrollid=5")),
            [5],
            "{scope}"
        );
        assert_eq!(
            enrollids(&srv, &format!("{scope}enrollid=7")),
            [7],
            "{scope}"
        );
        assert_eq!(
            enrollids(&srv, &format!("{scope}enrollid=50")),
            [50],
            "{scope}"
        );
        assert_eq!(
            enrollids(&srv, &format!("{scope}enrollid=55")),
            [55],
            "{scope}"
        );
        assert_eq!(
            enrollids(&srv, &format!("{scope}enrollid=1")),
            [0u64; 0],
            "{scope}"
        );
        assert_eq!(enrollids(&srv, &scope), [5, 7, 8, 50, 55], "{scope}");
        // The CSV export filters the same way: a header and one row.
        let text = csv(&srv, &format!("{scope}enrollid=5"));
        let rows: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), 2, "CSV ?{scope}enrollid=5: {text:?}");
        assert!(rows[1].contains(&format!(",{sn},5,")), "{text:?}");
    }
}

// ---------------------------------------------------------------------------
// The data directory

/// Every file and directory under `dir` with a permission bit for group or others.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            let m = std::fs::symlink_metadata(&p).expect("stat");
            if m.is_dir() {
                todo.push(p.clone());
            }
            if m.permissions().mode() & 0o077 != 0 && !m.file_type().is_symlink() {
                out.push(format!(
                    "{} {:o}",
                    p.display(),
                    m.permissions().mode() & 0o7777
                ));
            }
        }
    }
    out
}

/// The permission bits of `dir`, in octal as `ls` and `chmod` show them.
fn dir_mode(dir: &Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(dir).expect("stat").permissions().mode() & 0o7777
    )
}

fn the_data_directory_is_private(io: &str) {
    let mut srv = Server::start(io);
    // Something in the WAL and the accounts (the initial admin's hash is there already).
    srv.create_device("private");
    assert_eq!(
        srv.post(
            "/api/users",
            &json!({"username": "ann", "password": "ann-password-1"})
        )
        .status,
        201
    );
    assert_eq!(dir_mode(srv.data_dir()), "700", "a new data directory");
    let st = srv.stop();
    assert!(st.success(), "{st}\n{}", srv.logs());
    assert_eq!(dir_mode(srv.data_dir()), "700");
    let files = std::fs::read_dir(srv.data_dir()).expect("read_dir").count();
    assert!(files > 3, "the store wrote its files ({files})");
    let open = open_to_others(srv.data_dir());
    assert!(open.is_empty(), "readable by group or others: {open:?}");

    // A data directory left open (an earlier version, or a careless mkdir) is restricted at start.
    std::fs::set_permissions(srv.data_dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    srv.start_again();
    assert_eq!(dir_mode(srv.data_dir()), "700", "restricted at start");
    assert!(
        srv.logs().contains("restricted it to mode 700"),
        "the start says so:\n{}",
        srv.logs()
    );
    // The store still opens and answers as before.
    assert_eq!(srv.list_all("/api/devices").len(), 1);
}
