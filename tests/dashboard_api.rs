//! The dashboard's backend: accounts, sessions, CSRF, roles, API tokens, login throttling, the
//! static files and the cookie-authenticated admin WebSocket, under both I/O drivers.

mod common;

use common::browser::*;
use common::*;
use std::io::Write;
use std::net::TcpStream;

for_both_drivers!(
    first_login_must_change_password,
    csrf_is_required_with_the_cookie,
    viewer_reads_but_cannot_write,
    api_tokens_create_use_revoke,
    users_admin_only_and_last_admin_kept,
    logins_are_throttled,
    a_password_lockout_cannot_be_aimed_at_the_admin,
    dashboard_files_are_served_with_csp,
    admin_ws_by_cookie_sees_device_status,
    stats_and_device_search_sort,
);

const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

fn first_login_must_change_password(io: &str) {
    let srv = Server::start(io);
    let pw = initial_password(&srv);
    assert!(pw.len() >= 20, "initial password {pw:?}");
    let r = http(&srv, "GET", "/api/me", &[], None);
    assert_eq!((r.status, code(&r)), (401, "unauthorized".into()));
    let r = try_login(&srv, "admin", "wrong-password");
    assert_eq!((r.status, code(&r)), (401, "invalid_credentials".into()));
    let r = try_login(&srv, "nobody", "wrong-password");
    assert_eq!((r.status, code(&r)), (401, "invalid_credentials".into()));

    let (b, me) = login(&srv, "admin", &pw);
    assert_eq!(s(&me, "username"), "admin");
    assert_eq!(s(&me, "role"), "admin");
    assert_eq!(field(&me, "must_change_password").as_bool(), Some(true));
    assert!(s(&me, "csrf_token").len() >= 20);
    let r = b.get(&srv, "/api/devices");
    assert_eq!(
        (r.status, code(&r)),
        (403, "password_change_required".into())
    );
    let r = b.get(&srv, "/api/me");
    assert_eq!(r.status, 200);
    assert_eq!(s(&r.json(), "csrf_token"), b.csrf);
    // Too short.
    let r = b.send(
        &srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": pw.as_str(), "new_password": "short"}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // Wrong current password.
    let r = b.send(
        &srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": "nope-nope-nope", "new_password": NEW_PASSWORD}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = b.send(
        &srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": pw.as_str(), "new_password": NEW_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !srv.data_dir().join("initial-admin-password").exists(),
        "the initial password file is removed once changed"
    );
    let r = b.get(&srv, "/api/devices");
    assert_eq!(r.status, 200, "{r:?}");
    let me = b.get(&srv, "/api/me").json();
    assert_eq!(field(&me, "must_change_password").as_bool(), Some(false));
    // The old password is gone, the new one works.
    assert_eq!(try_login(&srv, "admin", &pw).status, 401);
    let (b2, me) = login(&srv, "admin", NEW_PASSWORD);
    assert_eq!(field(&me, "must_change_password").as_bool(), Some(false));
    // Logout ends that session only.
    let r = http(&srv, "POST", "/api/logout", &b2.headers(true), None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("set-cookie")
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    assert_eq!(b2.get(&srv, "/api/me").status, 401);
    assert_eq!(b.get(&srv, "/api/me").status, 200);
    // The bootstrap bearer token keeps working alongside.
    assert_eq!(srv.get("/api/devices").status, 200);
}

fn csrf_is_required_with_the_cookie(io: &str) {
    let srv = Server::start(io);
    let b = admin_browser(&srv);
    let body = json!({"name": "via-cookie"});
    let r = http(&srv, "POST", "/api/devices", &b.headers(false), Some(&body));
    assert_eq!((r.status, code(&r)), (403, "csrf_failed".into()));
    let r = http(
        &srv,
        "POST",
        "/api/devices",
        &[("Cookie", &b.cookie), ("X-CSRF-Token", "wrong")],
        Some(&body),
    );
    assert_eq!((r.status, code(&r)), (403, "csrf_failed".into()));
    assert!(srv.list_all("/api/devices").is_empty());
    let r = b.send(&srv, "POST", "/api/devices", &body);
    assert_eq!(r.status, 201, "{r:?}");
    // Reads need no CSRF header; the CSV export (streamed, chunked) works with the cookie.
    let mut conn = TcpStream::connect(srv.addr()).expect("connect");
    let req = format!(
        "GET /api/attendance.csv HTTP/1.1\r\nHost: t\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        b.cookie
    );
    conn.write_all(req.as_bytes()).expect("write");
    let (bytes, _) = read_to_end_bounded(&mut conn, SOON);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/csv"), "{text}");
    // /metrics with an admin session.
    assert_eq!(b.get(&srv, "/metrics").status, 200);
}

fn viewer_reads_but_cannot_write(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("d1");
    let r = srv.post(
        "/api/users",
        &json!({"username": "vera", "password": "viewer-password", "role": "viewer"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s(&r.json(), "role"), "viewer");
    let (v, me) = login(&srv, "vera", "viewer-password");
    assert_eq!(s(&me, "role"), "viewer");
    assert_eq!(v.get(&srv, "/api/devices").status, 200);
    assert_eq!(v.get(&srv, &format!("/api/devices/{}", dev.id)).status, 200);
    let r = v.send(
        &srv,
        "POST",
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"command": "reboot"}),
    );
    assert_eq!((r.status, code(&r)), (403, "forbidden".into()));
    let r = v.send(
        &srv,
        "DELETE",
        &format!("/api/devices/{}", dev.id),
        &json!({}),
    );
    assert_eq!((r.status, code(&r)), (403, "forbidden".into()));
    assert_eq!(code(&v.get(&srv, "/api/users")), "forbidden");
    assert_eq!(v.get(&srv, "/metrics").status, 403);
    // A viewer may change their own password.
    let r = v.send(
        &srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": "viewer-password", "new_password": "viewer-password-2"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A viewer's admin WebSocket may not send commands.
    let mut ws = cookie_ws(&srv, &v.cookie);
    ws.send_json(&json!({"type":"subscribe","role":"admin"}));
    assert_eq!(s(&ws.recv_json(SOON), "type"), "subscribed");
    ws.send_json(&json!({"type":"command","device_id": dev.id.as_str(),"command":"reboot"}));
    let m = ws.recv_type("error", SOON);
    assert_eq!(s(&m, "code"), "forbidden", "{}", enc(&m));
    assert!(srv.commands(&dev.id).is_empty());
    // Promoted, the same session may write at once.
    let r = srv.patch("/api/users/vera", &json!({"role": "admin"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = v.send(
        &srv,
        "POST",
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"command": "reboot"}),
    );
    assert_eq!(r.status / 100, 2, "{r:?}");
}

fn api_tokens_create_use_revoke(io: &str) {
    let srv = Server::start(io);
    let r = srv.post("/api/tokens", &json!({"name": "ci"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let token = s(&t, "token").to_string();
    assert!(token.starts_with("fgt_"), "{token}");
    assert_eq!(s(&t, "role"), "admin");
    let bearer = format!("Bearer {token}");
    let r = http(
        &srv,
        "GET",
        "/api/devices",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Bearer tokens need no CSRF header.
    let r = http(
        &srv,
        "POST",
        "/api/devices",
        &[("Authorization", &bearer)],
        Some(&json!({"name": "by-token"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let list = srv.get("/api/tokens").json();
    let items = arr(&list, "items");
    assert_eq!(items.len(), 1);
    assert_eq!(s(&items[0], "name"), "ci");
    assert!(opt_s(&items[0], "last_used").is_some(), "last_used set");
    assert!(!enc(&list).contains(&token), "the token is shown only once");
    // A viewer token reads but cannot write.
    let r = srv.post("/api/tokens", &json!({"name": "ro", "role": "viewer"}));
    let ro = format!("Bearer {}", s(&r.json(), "token"));
    assert_eq!(
        http(&srv, "GET", "/api/devices", &[("Authorization", &ro)], None).status,
        200
    );
    let r = http(
        &srv,
        "POST",
        "/api/devices",
        &[("Authorization", &ro)],
        Some(&json!({"name": "nope"})),
    );
    assert_eq!((r.status, code(&r)), (403, "forbidden".into()));
    // API tokens also authenticate the admin WebSocket.
    let mut ws = srv.ws();
    ws.send_json(&json!({"type":"subscribe","role":"admin","token": token.as_str()}));
    assert_eq!(s(&ws.recv_json(SOON), "type"), "subscribed");
    // Revocation is immediate.
    let r = srv.delete(&format!("/api/tokens/{}", s(&t, "id")));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(
        &srv,
        "GET",
        "/api/devices",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!((r.status, code(&r)), (401, "unauthorized".into()));
    assert_eq!(
        srv.delete(&format!("/api/tokens/{}", s(&t, "id"))).status,
        404
    );
    // And survives a restart (tokens are loaded at start).
    let mut srv = srv;
    srv.restart();
    let r = http(
        &srv,
        "GET",
        "/api/devices",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        http(&srv, "GET", "/api/devices", &[("Authorization", &ro)], None).status,
        200
    );
}

fn users_admin_only_and_last_admin_kept(io: &str) {
    let srv = Server::start(io);
    let b = admin_browser(&srv);
    let r = b.send(
        &srv,
        "POST",
        "/api/users",
        &json!({"username": "ops", "password": "ops-password-1", "role": "admin"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = b.send(
        &srv,
        "POST",
        "/api/users",
        &json!({"username": "ops", "password": "ops-password-1", "role": "admin"}),
    );
    assert_eq!(r.status, 409);
    let r = b.send(
        &srv,
        "POST",
        "/api/users",
        &json!({"username": "x", "password": "short", "role": "admin"}),
    );
    assert_eq!(r.status, 400);
    let users = b.get(&srv, "/api/users").json();
    let names: Vec<&str> = arr(&users, "items")
        .iter()
        .map(|u| s(u, "username"))
        .collect();
    assert_eq!(names, ["admin", "ops"]);
    assert!(!enc(&users).contains("argon2"), "no hashes in the API");
    // Cannot delete yourself.
    let r = b.send(&srv, "DELETE", "/api/users/admin", &json!({}));
    assert_eq!(r.status, 409, "{r:?}");
    // Deleting a user ends their sessions.
    let (ops, _) = login(&srv, "ops", "ops-password-1");
    let r = b.send(&srv, "DELETE", "/api/users/ops", &json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ops.get(&srv, "/api/me").status, 401);
    // The last admin cannot be demoted.
    let r = b.send(
        &srv,
        "PATCH",
        "/api/users/admin",
        &json!({"role": "viewer"}),
    );
    assert_eq!(r.status, 409, "{r:?}");
    // Users survive a restart; sessions do not.
    let mut srv = srv;
    srv.restart();
    assert_eq!(b.get(&srv, "/api/me").status, 401);
    login(&srv, "admin", NEW_PASSWORD);
}

fn logins_are_throttled(io: &str) {
    let srv = Server::start(io);
    let pw = initial_password(&srv);
    for i in 0..5 {
        let r = try_login(&srv, "admin", "wrong-password");
        assert_eq!(r.status, 401, "attempt {i}: {r:?}");
    }
    let r = try_login(&srv, "admin", "wrong-password");
    assert_eq!((r.status, code(&r)), (429, "too_many_attempts".into()));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=900).contains(&retry), "Retry-After {retry}");
    // Even the right password waits out the back-off.
    let r = try_login(&srv, "admin", &pw);
    assert_eq!(r.status, 429, "{r:?}");
    // Once it has passed, the right password works.
    wait_until(SOON, "the login back-off to pass", || {
        try_login(&srv, "admin", &pw).status == 200
    });
}

/// The attack from issue 13: anyone can fail five times as the well-known `admin`. That must
/// slow the guesser only: the admin logs in from another address at once, and even a guesser
/// spread over many addresses leaves a browser that logged in before unaffected.
fn a_password_lockout_cannot_be_aimed_at_the_admin(io: &str) {
    let srv = Server::start(io);
    admin_browser(&srv);
    // The admin's own browser, logged in once before: it holds the known-browser cookie.
    let r = try_login_from("127.0.0.5", &srv, "admin", NEW_PASSWORD);
    assert_eq!(r.status, 200, "{r:?}");
    let known = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix("fg_known="))
        .and_then(|v| v.split(';').next())
        .expect("a fg_known cookie on first login")
        .to_string();

    for _ in 0..8 {
        try_login_from("127.0.0.2", &srv, "admin", "guess-guess-guess");
    }
    let r = try_login_from("127.0.0.2", &srv, "admin", NEW_PASSWORD);
    assert_eq!((r.status, code(&r)), (429, "too_many_attempts".into()));
    // Locked out there, not here: the right password from another address works at once.
    let r = try_login_from("127.0.0.3", &srv, "admin", NEW_PASSWORD);
    assert_eq!(r.status, 200, "{r:?}");
    let cookie = format!("fg_known={known}");
    let known_login = |src: &str| {
        http_from(
            src,
            &srv,
            "POST",
            "/api/login",
            &[("Cookie", &cookie)],
            Some(&json!({"username": "admin", "password": NEW_PASSWORD})),
        )
    };
    // Nor is the admin's own browser behind the guesser's address (one NAT) locked out.
    let r = known_login("127.0.0.2");
    assert_eq!(r.status, 200, "{r:?}");

    // A guesser spread over ten addresses, five tries each, meets the per-user ceiling...
    for a in 10..20 {
        for _ in 0..5 {
            try_login_from(&format!("127.0.0.{a}"), &srv, "admin", "guess-guess-guess");
        }
    }
    let r = try_login_from("127.0.0.30", &srv, "admin", NEW_PASSWORD);
    assert_eq!((r.status, code(&r)), (429, "too_many_attempts".into()));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (1..=60).contains(&retry),
        "the ceiling slows, briefly: {retry}"
    );
    // ...which the admin's known browser passes, from yet another address.
    let r = known_login("127.0.0.31");
    assert_eq!(r.status, 200, "{r:?}");
}

fn dashboard_files_are_served_with_csp(io: &str) {
    let srv = Server::start(io);
    let r = http(&srv, "GET", "/", &[], None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{r:?}"
    );
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(!r.body.is_empty());
    for (path, ct) in [
        ("/app.css", "text/css"),
        ("/app.js", "text/javascript"),
        ("/api.js", "text/javascript"),
        ("/pages.js", "text/javascript"),
        ("/charts.js", "text/javascript"),
        ("/snippets.js", "text/javascript"),
    ] {
        let r = http(&srv, "GET", path, &[], None);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap_or_default().starts_with(ct),
            "{path}: {r:?}"
        );
        assert_eq!(r.header("content-security-policy"), Some(CSP), "{path}");
    }
    assert_eq!(http(&srv, "GET", "/nope.js", &[], None).status, 404);
}

fn admin_ws_by_cookie_sees_device_status(io: &str) {
    let srv = Server::start(io);
    // No token and no cookie: refused.
    let mut ws = srv.ws();
    ws.send_json(&json!({"type":"subscribe","role":"admin"}));
    let m = ws.recv_json(SOON);
    assert_eq!(s(&m, "code"), "auth_failed", "{}", enc(&m));
    // A session that must still change its password is refused too.
    let (first, _) = login(&srv, "admin", &initial_password(&srv));
    let mut ws = cookie_ws(&srv, &first.cookie);
    ws.send_json(&json!({"type":"subscribe","role":"admin"}));
    assert_eq!(s(&ws.recv_json(SOON), "code"), "auth_failed");

    let b = admin_browser(&srv);
    let mut ws = cookie_ws(&srv, &b.cookie);
    ws.send_json(&json!({"type":"subscribe","role":"admin"}));
    let m = ws.recv_json(SOON);
    assert_eq!(s(&m, "type"), "subscribed", "{}", enc(&m));
    let dev = srv.create_device("live");
    let _d = srv.device_session(&dev);
    let m = ws.recv_matching(SOON, "device_status online", |m| {
        opt_s(m, "type") == Some("device_status")
            && opt_s(m, "device_id") == Some(dev.id.as_str())
            && opt_s(m, "status") == Some("online")
    });
    assert_rfc3339(s(&m, "ts"));
}

fn stats_and_device_search_sort(io: &str) {
    let srv = Server::start(io);
    let a = srv.create_device("Alpha pump");
    let _b = srv.create_device("beta valve");
    let _c = srv.create_device("Gamma gate");
    let _s = srv.device_session(&a);
    srv.wait_status(&a.id, "online");
    let st = srv.get("/api/stats").json();
    assert_eq!(u(&st, "devices"), 3);
    assert_eq!(u(&st, "online"), 1);
    assert_eq!(u(&st, "never_seen"), 2);
    assert_eq!(u(&st, "offline"), 0);
    assert_eq!(u(&st, "pending"), 0);
    let _ = u(&st, "messages_total");

    let names = |path: &str| -> Vec<String> {
        let r = srv.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        arr(&r.json(), "items")
            .iter()
            .map(|d| s(d, "name").to_string())
            .collect()
    };
    assert_eq!(names("/api/devices?q=PUMP"), ["Alpha pump"]);
    assert_eq!(
        names(&format!("/api/devices?q={}", &a.id[..8])),
        ["Alpha pump"]
    );
    assert_eq!(
        names("/api/devices?sort=name"),
        ["Alpha pump", "beta valve", "Gamma gate"]
    );
    assert_eq!(names("/api/devices?sort=status")[0], "Alpha pump");
    assert_eq!(names("/api/devices?sort=last_seen")[0], "Alpha pump");
    // Sorted pages follow their cursor.
    let p1 = srv.get("/api/devices?sort=name&limit=2").json();
    let cur = s(&p1, "next_cursor").to_string();
    assert_eq!(
        names(&format!(
            "/api/devices?sort=name&limit=2&cursor={}",
            pct(&cur)
        )),
        ["Gamma gate"]
    );
    assert_eq!(srv.get("/api/devices?sort=bogus").status, 400);
}
