//! Revocation reaches live connections: an admin WebSocket rests on the credential it subscribed
//! with (an API token or a dashboard session), and loses its rights the moment that credential
//! does — token deleted, logout, password changed elsewhere, user deleted or demoted. Each test
//! performs the attack against the real binary: it keeps using the old socket after the
//! revocation and checks that the device receives nothing.

mod common;

use common::browser::*;
use common::*;

for_both_drivers!(
    a_deleted_tokens_websocket_cannot_command_and_is_closed,
    logout_closes_the_dashboards_websocket,
    a_password_changed_elsewhere_closes_the_other_sessions_websocket,
    a_deleted_users_websocket_is_closed,
    a_demoted_users_websocket_becomes_read_only_at_once,
);

fn command_frame(dev: &Device, command: &str) -> Value {
    json!({"type":"command","device_id": dev.id.as_str(),"command": command})
}

/// Reads until the server closes `ws`; asserts it said why (`credential_revoked`) first, closed
/// with 1008, and never queued a command on the way.
fn expect_revoked(ws: &mut Ws) {
    let mut seen = Vec::new();
    let code = loop {
        match ws.recv(SOON) {
            WsEvent::Json(v) => seen.push(v),
            WsEvent::Close(code, _) => break code,
            WsEvent::Pong(_) => {}
            other => panic!("expected the revoked session to close, got {other:?}; saw {seen:?}"),
        }
    };
    assert_eq!(code, Some(1008), "close code; saw {seen:?}");
    assert!(
        seen.iter()
            .all(|m| opt_s(m, "type") != Some("command_queued")),
        "a command was queued after revocation: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| opt_s(m, "code") == Some("credential_revoked")),
        "no credential_revoked error before the close: {seen:?}"
    );
}

/// Subscribes `ws` (already upgraded) with `token`, or with its cookie when `token` is None.
fn subscribe(ws: &mut Ws, token: Option<&str>) {
    match token {
        Some(t) => ws.send_json(&json!({"type":"subscribe","role":"admin","token": t})),
        None => ws.send_json(&json!({"type":"subscribe","role":"admin"})),
    }
    let m = ws.recv_type("subscribed", SOON);
    assert_eq!(s(&m, "role"), "admin");
}

/// Sends `command` on an admin socket and waits for its `command_queued` answer.
fn command_queued(ws: &mut Ws, dev: &Device, command: &str) -> String {
    ws.send_json(&command_frame(dev, command));
    let m = ws.recv_matching(SOON, "command_queued", |m| {
        opt_s(m, "type") == Some("command_queued") || opt_s(m, "type") == Some("error")
    });
    assert_eq!(s(&m, "type"), "command_queued", "{}", enc(&m));
    s(&m, "command_id").to_string()
}

fn a_deleted_tokens_websocket_cannot_command_and_is_closed(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("door");
    let mut door = srv.device_session(&dev);
    let r = srv.post("/api/tokens", &json!({"name": "ops-console"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let t = r.json();
    let mut ws = srv.ws();
    subscribe(&mut ws, Some(s(&t, "token")));
    // Before: the token commands the door.
    let first = command_queued(&mut ws, &dev, "reboot");
    let got = door.recv_type("command", SOON);
    assert_eq!(s(&got, "command_id"), first);

    let r = srv.delete(&format!("/api/tokens/{}", s(&t, "id")));
    assert_eq!(r.status, 200, "{}", r.text());
    // The attack: keep using the socket the revoked token opened, at once.
    let _ = ws.try_send_text(&enc(&command_frame(&dev, "unlock")));
    expect_revoked(&mut ws);
    let cmds = srv.commands(&dev.id);
    assert_eq!(
        cmds.len(),
        1,
        "only the command sent before revocation: {cmds:?}"
    );
    assert_eq!(s(&cmds[0], "command_id"), first);
    // The door's session is untouched and hears nothing more.
    door.ping_pong();
}

fn logout_closes_the_dashboards_websocket(io: &str) {
    let srv = Server::start(io);
    let b = admin_browser(&srv);
    let mut ws = cookie_ws(&srv, &b.cookie);
    subscribe(&mut ws, None);
    let r = http(&srv, "POST", "/api/logout", &b.headers(true), None);
    assert_eq!(r.status, 200, "{r:?}");
    // Nothing is sent on the socket: the server closes it on its own.
    expect_revoked(&mut ws);
}

fn a_password_changed_elsewhere_closes_the_other_sessions_websocket(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("door");
    let r = srv.post(
        "/api/users",
        &json!({"username": "ops", "password": "ops-password-1", "role": "admin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // The password leaked; the stolen session watches the fleet.
    let (stolen, _) = login(&srv, "ops", "ops-password-1");
    let mut thief = cookie_ws(&srv, &stolen.cookie);
    subscribe(&mut thief, None);
    // The owner changes the password from their own browser.
    let (owner, _) = login(&srv, "ops", "ops-password-1");
    let mut mine = cookie_ws(&srv, &owner.cookie);
    subscribe(&mut mine, None);
    let r = owner.send(
        &srv,
        "POST",
        "/api/me/password",
        &json!({"current_password": "ops-password-1", "new_password": "ops-password-2"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let _ = thief.try_send_text(&enc(&command_frame(&dev, "unlock")));
    expect_revoked(&mut thief);
    // The session that changed the password keeps its socket and its rights.
    command_queued(&mut mine, &dev, "reboot");
    let cmds = srv.commands(&dev.id);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(s(&cmds[0], "command"), "reboot");
}

fn a_deleted_users_websocket_is_closed(io: &str) {
    let srv = Server::start(io);
    let r = srv.post(
        "/api/users",
        &json!({"username": "leaver", "password": "leaver-password", "role": "admin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (b, _) = login(&srv, "leaver", "leaver-password");
    let mut ws = cookie_ws(&srv, &b.cookie);
    subscribe(&mut ws, None);
    assert_eq!(srv.delete("/api/users/leaver").status, 200);
    expect_revoked(&mut ws);
}

fn a_demoted_users_websocket_becomes_read_only_at_once(io: &str) {
    let srv = Server::start(io);
    let dev = srv.create_device("door");
    let door = srv.device_session(&dev);
    let r = srv.post(
        "/api/users",
        &json!({"username": "ops", "password": "ops-password-1", "role": "admin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (b, _) = login(&srv, "ops", "ops-password-1");
    let mut ws = cookie_ws(&srv, &b.cookie);
    subscribe(&mut ws, None);

    assert_eq!(
        srv.patch("/api/users/ops", &json!({"role": "viewer"}))
            .status,
        200
    );
    // Told without asking, then refused: the session still watches but may not command.
    let m = ws.recv_type("role_changed", SOON);
    assert_eq!(s(&m, "role"), "viewer");
    assert_eq!(field(&m, "read_only").as_bool(), Some(true));
    ws.send_json(&command_frame(&dev, "unlock"));
    let m = ws.recv_type("error", SOON);
    assert_eq!(s(&m, "code"), "forbidden", "{}", enc(&m));
    assert!(srv.commands(&dev.id).is_empty(), "nothing queued");
    // Still subscribed: it sees the fleet (the door going offline).
    door.close();
    ws.recv_matching(SOON, "the door going offline", |m| {
        opt_s(m, "type") == Some("device_status") && opt_s(m, "status") == Some("offline")
    });

    // Promoted back, the same socket may command again.
    assert_eq!(
        srv.patch("/api/users/ops", &json!({"role": "admin"}))
            .status,
        200
    );
    let m = ws.recv_type("role_changed", SOON);
    assert_eq!(field(&m, "read_only").as_bool(), Some(false));
    command_queued(&mut ws, &dev, "reboot");
}
