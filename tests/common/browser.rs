//! A dashboard user's browser, as the tests drive one: raw HTTP requests with the session cookie
//! and CSRF header, logins from a chosen loopback address, and the cookie-authenticated admin
//! WebSocket.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;

use super::*;

/// The password the tests give the initial admin on first login.
pub const NEW_PASSWORD: &str = "a-new-password-1";

/// A raw HTTP request on a fresh connection; `headers` are extra header lines.
pub fn http(
    srv: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> RawResponse {
    http_from("127.0.0.1", srv, method, path, headers, body)
}

/// `http` from the loopback source address `src`.
pub fn http_from(
    src: &str,
    srv: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> RawResponse {
    let body = body.map(enc).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    raw_http_from(src, srv.addr(), req.as_bytes())
}

/// The error code of a JSON error response.
pub fn code(r: &RawResponse) -> String {
    error_code(&r.json())
}

/// A logged-in browser: its cookie header and CSRF token.
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
}

impl Browser {
    pub fn headers(&self, csrf: bool) -> Vec<(&str, &str)> {
        let mut h = vec![("Cookie", self.cookie.as_str())];
        if csrf {
            h.push(("X-CSRF-Token", self.csrf.as_str()));
        }
        h
    }
    pub fn get(&self, srv: &Server, path: &str) -> RawResponse {
        http(srv, "GET", path, &self.headers(false), None)
    }
    pub fn send(&self, srv: &Server, method: &str, path: &str, body: &Value) -> RawResponse {
        http(srv, method, path, &self.headers(true), Some(body))
    }
}

pub fn try_login(srv: &Server, user: &str, password: &str) -> RawResponse {
    try_login_from("127.0.0.1", srv, user, password)
}

/// A login attempt from the loopback source address `src`.
pub fn try_login_from(src: &str, srv: &Server, user: &str, password: &str) -> RawResponse {
    http_from(
        src,
        srv,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"username": user, "password": password})),
    )
}

pub fn login(srv: &Server, user: &str, password: &str) -> (Browser, Value) {
    let r = try_login(srv, user, password);
    assert_eq!(r.status, 200, "login {user}: {r:?}");
    let set = r.header("set-cookie").expect("Set-Cookie").to_string();
    assert!(set.starts_with("fg_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    // Plain HTTP: a `Secure` cookie would never come back (tests/tls.rs checks it over TLS).
    assert!(!set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let v = r.json();
    let b = Browser {
        cookie,
        csrf: s(&v, "csrf_token").to_string(),
    };
    (b, v)
}

pub fn initial_password(srv: &Server) -> String {
    let path = srv.data_dir().join("initial-admin-password");
    let mode = std::fs::metadata(&path)
        .expect("initial-admin-password exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "initial-admin-password mode");
    std::fs::read_to_string(path)
        .expect("read")
        .trim()
        .to_string()
}

/// Logs in as the initial admin and changes the password to `NEW_PASSWORD`; returns the session.
pub fn admin_browser(srv: &Server) -> Browser {
    let (b, _) = login(srv, "admin", &initial_password(srv));
    let r = b.send(
        srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": initial_password(srv), "new_password": NEW_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    b
}

/// A WebSocket whose upgrade request carries `cookie`.
pub fn cookie_ws(srv: &Server, cookie: &str) -> Ws {
    let stream = TcpStream::connect(srv.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut req = srv.ws_url().into_client_request().expect("request");
    req.headers_mut()
        .insert("Cookie", cookie.parse().expect("cookie header"));
    let (ws, resp) = tungstenite::client(req, stream).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    Ws { ws, closed: None }
}
