//! Terminal identity (issue 13, docs/security.md "Terminal identity"), the way a network tries it:
//! the real terminal on 127.0.0.3, an impostor presenting its serial from 127.0.0.2. A device bound
//! to its networks refuses the impostor on every path (AiFace, SmackBio, HTTP, generic) while the
//! real session goes on; an unbound one is taken over, and the takeover is recorded and shown to
//! the operators; a scanner cycling serials cannot flush the pending list.

mod common;
use common::term::{Next, Term, aiface_answer};
use common::*;

use std::io::Write;
use std::time::{Duration, Instant};

for_both_drivers!(
    an_impostor_outside_allowed_sources_is_refused_and_the_terminal_keeps_its_session,
    a_takeover_from_another_address_is_recorded_and_shown,
    new_serials_are_rate_limited_per_address,
);

const REAL: &str = "127.0.0.3";
const IMPOSTOR: &str = "127.0.0.2";

/// What came on a terminal's socket before it went quiet or ended.
struct Heard {
    frames: Vec<String>,
    /// The server closed the session.
    closed: bool,
}

impl Term {
    /// Frames until the session ends or `quiet` passes without one.
    fn listen(&mut self, quiet: Duration) -> Heard {
        let mut heard = Heard {
            frames: Vec::new(),
            closed: false,
        };
        loop {
            match self.next(Instant::now() + quiet) {
                Next::Text(f) => heard.frames.push(f),
                Next::Closed => {
                    heard.closed = true;
                    return heard;
                }
                Next::Quiet => return heard,
            }
        }
    }

    /// An AiFace `reg` and its answer.
    fn reg(&mut self, serial: &str) -> Value {
        self.send(
            &enc(&json!({"cmd":"reg","sn": serial,"cpusn":"c1","devinfo":{"modelname":"AI07F","firmware":"ai806"}})),
        );
        let f = self.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
        parse(f.as_bytes())
    }
}

fn sendlog(serial: &str, enrollid: u64) -> Value {
    json!({"cmd":"sendlog","sn": serial,"count":1,"logindex":1,"record":[{"enrollid": enrollid,"time":"2026-06-12 09:15:30","mode":1,"inout":0,"event":0}]})
}

/// `POST /api/device-http` from `src`; the device protocol's JSON answer.
fn device_http_from(src: &str, addr: &str, body: &Value) -> Value {
    let mut s = tcp_from(src, addr);
    let b = enc(body);
    let req = format!(
        "POST /api/device-http HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).expect("write request");
    let r = read_response(&mut s, &mut Vec::new(), SOON).expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    parse(&r.body)
}

fn create_terminal(srv: &Server, protocol: &str, serial: &str, sources: Option<&str>) -> String {
    let settings = match sources {
        Some(s) => json!({"timezone": "UTC", "allowed_sources": s}),
        None => json!({"timezone": "UTC"}),
    };
    let r = srv.post(
        "/api/devices",
        &json!({"name": format!("{protocol} gate"), "protocol": protocol, "serial": serial, "settings": settings}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

fn result(v: &Value) -> Option<bool> {
    v.get("result").and_then(|b| b.as_bool())
}

const SOURCE_REFUSALS: &str = "fleetgate_limit_hits_total{limit=\"source_not_allowed\"}";

fn an_impostor_outside_allowed_sources_is_refused_and_the_terminal_keeps_its_session(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    let id = create_terminal(&srv, "aiface", "AF-200", Some(REAL));

    // A binding that does not parse is refused, naming the bad entry, and changes nothing.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"allowed_sources": "127.0.0.0/8, 10.0.0.0/33"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("10.0.0.0/33"), "{}", r.text());
    let dev = srv.get(&format!("/api/devices/{id}")).json();
    assert_eq!(s(field(&dev, "settings"), "allowed_sources"), REAL);

    let mut real = Term::connect_from(REAL, addr);
    assert_eq!(result(&real.reg("AF-200")), Some(true));
    srv.wait_status(&id, "online");

    // The impostor's reg is refused the AiFace way, and so is what it sends next.
    let mut imp = Term::connect_from(IMPOSTOR, addr);
    let no = imp.reg("AF-200");
    assert_eq!(result(&no), Some(false), "{}", enc(&no));
    imp.send(&enc(&sendlog("AF-200", 66)));
    let no = imp.until(
        "ret sendlog",
        |f| f.contains("\"ret\":\"sendlog\""),
        aiface_answer,
    );
    assert_eq!(result(&parse(no.as_bytes())), Some(false), "{no}");
    // Over HTTP the serial alone does not do either.
    let no = device_http_from(IMPOSTOR, addr, &sendlog("AF-200", 67));
    assert_eq!(result(&no), Some(false), "{}", enc(&no));
    assert!(metric(&srv, SOURCE_REFUSALS) >= 2.0);

    // The real terminal was not closed: a queued set_user reaches it, and its punches are its own.
    let cmd = srv.send_command(
        &id,
        "set_user",
        json!({"enrollid": 5, "name": "Ana", "backupnum": 11, "record": "12345678"}),
    );
    real.until(
        "cmd setuserinfo",
        |f| f.contains("\"cmd\":\"setuserinfo\""),
        aiface_answer,
    );
    real.send(r#"{"ret":"setuserinfo","result":true}"#);
    srv.wait_command_status(&id, &cmd, "acked");
    real.send(&enc(&sendlog("AF-200", 42)));
    let ack = real.until(
        "ret sendlog",
        |f| f.contains("\"ret\":\"sendlog\""),
        aiface_answer,
    );
    assert_eq!(result(&parse(ack.as_bytes())), Some(true), "{ack}");
    let punches = srv.list_all(&format!("/api/attendance?device_id={id}"));
    let users: Vec<u64> = punches.iter().map(|p| u(p, "enrollid")).collect();
    assert_eq!(users, [42], "only the real terminal's punch is stored");
    assert_eq!(srv.listed_status(&id), "online");
    let heard = imp.listen(Duration::from_millis(300));
    assert!(
        !heard.frames.iter().any(|f| f.contains("setuserinfo")),
        "the impostor got a command: {:?}",
        heard.frames
    );

    // SmackBio: bound to networks and to its cloud id, which the API keeps only as a hash.
    let r = srv.post(
        "/api/devices",
        &json!({"name": "sb gate", "protocol": "smackbio", "serial": "M82-0002",
                "settings": {"allowed_sources": "127.0.0.3/32, 2001:db8::/48", "cloud_id": "c7f3a9e1"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = r.json();
    let stored = s(field(&stored, "settings"), "cloud_id");
    assert!(
        stored.starts_with("sha256:") && !stored.contains("c7f3a9e1"),
        "{stored}"
    );
    let register = |cloud: &str| {
        format!(
            "<Message><Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>M82-0002</DeviceSerialNo><CloudId>{cloud}</CloudId></Message>"
        )
    };
    // From outside (even with the right cloud id), or with another cloud id: closed without a reply.
    for (src, cloud) in [(IMPOSTOR, "c7f3a9e1"), (REAL, "c7f3a9e2")] {
        let mut sb = Term::connect_from(src, addr);
        sb.send(&register(cloud));
        let heard = sb.listen(SOON);
        assert!(heard.closed, "{src} {cloud}: the session stays open");
        assert!(heard.frames.is_empty(), "{src} {cloud}: {:?}", heard.frames);
    }
    let mut sb = Term::connect_from(REAL, addr);
    sb.send(&register("c7f3a9e1"));
    let ok = sb.until(
        "Register response",
        |f| f.contains("<Response>Register"),
        aiface_answer,
    );
    assert!(ok.contains("<Result>OK</Result>"), "{ok}");

    // A generic device bound the same way: its token alone does not do from elsewhere.
    let sensor = srv.create_device("bound sensor");
    let r = srv.patch(
        &format!("/api/devices/{}", sensor.id),
        &json!({"settings": {"allowed_sources": "127.0.0.3"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let frame = enc(
        &json!({"type":"register","device_id": sensor.id.as_str(),"token": sensor.token.as_str()}),
    );
    let mut ws = Ws::try_over(tcp_from(IMPOSTOR, addr), addr).expect("ws");
    ws.send_text(&frame);
    let no = ws.recv_json(SOON);
    assert_eq!(
        opt_s(&no, "code"),
        Some("source_not_allowed"),
        "{}",
        enc(&no)
    );
    assert_eq!(ws.expect_close(SOON), Some(1008));
    let mut ws = Ws::try_over(tcp_from(REAL, addr), addr).expect("ws");
    ws.send_text(&frame);
    assert_eq!(s(&ws.recv_json(SOON), "type"), "registered");
    assert!(metric(&srv, SOURCE_REFUSALS) >= 4.0);
}

fn a_takeover_from_another_address_is_recorded_and_shown(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    let id = create_terminal(&srv, "aiface", "AF-300", None);
    let mut admin = srv.admin_session();

    let mut real = Term::connect_from(REAL, addr);
    assert_eq!(result(&real.reg("AF-300")), Some(true));
    // The terminal reconnecting from its own address (its old connection half-open) is routine.
    let mut again = Term::connect_from(REAL, addr);
    assert_eq!(result(&again.reg("AF-300")), Some(true));
    assert!(real.listen(SOON).closed, "the older session is replaced");
    // Its takeover event, had it been one, is staged before its connected event.
    wait_until(SOON, "two device_connected events", || {
        srv.events(&format!("device_id={id}&type=device_connected"))
            .len()
            == 2
    });

    // Unbound, the serial alone takes the device over; the operator hears of it.
    let mut imp = Term::connect_from(IMPOSTOR, addr);
    assert_eq!(result(&imp.reg("AF-300")), Some(true));
    let events = srv.wait_event(&id, "device_takeover");
    assert_eq!(events.len(), 1, "{events:?}");
    let p = field(&events[0], "payload");
    assert!(s(p, "previous").starts_with("127.0.0.3:"), "{}", enc(p));
    assert!(s(p, "remote").starts_with("127.0.0.2:"), "{}", enc(p));
    assert_eq!(s(p, "protocol"), "aiface");
    assert_eq!(s(&events[0], "source"), "server");
    let pushed = admin.recv_matching(SOON, "a device_takeover event", |m| {
        opt_s(m, "event_type") == Some("device_takeover")
    });
    assert_eq!(s(&pushed, "device_id"), id);
    assert!(
        metric(
            &srv,
            "fleetgate_device_takeovers_total{protocol=\"aiface\"}"
        ) >= 1.0
    );
    assert!(again.listen(SOON).closed);

    // The operator answers by binding the device to the real terminal's network: the impostor's
    // session ends at once, and the real terminal gets back in.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"allowed_sources": "127.0.0.3"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(imp.listen(SOON).closed, "the impostor outlived the binding");
    srv.wait_status(&id, "offline");
    let mut back = Term::connect_from(REAL, addr);
    assert_eq!(result(&back.reg("AF-300")), Some(true));
    srv.wait_status(&id, "online");
    let mut imp = Term::connect_from(IMPOSTOR, addr);
    assert_eq!(result(&imp.reg("AF-300")), Some(false));
}

fn new_serials_are_rate_limited_per_address(io: &str) {
    let srv = Server::start(io);
    let addr = srv.addr();
    let started = Instant::now();
    // A scanner cycling serials over HTTP and WebSocket from one address.
    for i in 0..60 {
        let sn = format!("SCAN-{i}");
        let no = device_http_from(
            IMPOSTOR,
            addr,
            &json!({"cmd":"reg","sn": sn,"devinfo":{"modelname":"x"}}),
        );
        assert_eq!(result(&no), Some(false), "{}", enc(&no));
    }
    for i in 0..5 {
        let mut t = Term::connect_from(IMPOSTOR, addr);
        assert_eq!(result(&t.reg(&format!("SCAN-WS-{i}"))), Some(false));
    }
    // --new-serials-per-minute 10: a burst of 20, then one every 6 s.
    let bound = 20 + (started.elapsed().as_secs() / 6) as usize + 1;
    let pending = srv.list_all("/api/pending-devices");
    let scanned = pending
        .iter()
        .filter(|p| s(p, "serial").starts_with("SCAN-"))
        .count();
    assert!(
        (20..=bound).contains(&scanned),
        "{scanned} serials from one address listed (burst 20, bound {bound})"
    );
    assert!(
        metric(&srv, "fleetgate_limit_hits_total{limit=\"pending_rate\"}") >= (65 - bound) as f64
    );

    // A serial already listed costs nothing: it is still seen although its address is spent.
    let first = pending
        .iter()
        .find(|p| s(p, "serial") == "SCAN-0")
        .expect("the first serial is listed");
    assert_eq!(u(first, "requests"), 1);
    device_http_from(IMPOSTOR, addr, &json!({"cmd":"reg","sn":"SCAN-0"}));
    let pending = srv.list_all("/api/pending-devices");
    let first = pending
        .iter()
        .find(|p| s(p, "serial") == "SCAN-0")
        .expect("listed");
    assert_eq!(u(first, "requests"), 2);

    // A real terminal elsewhere still lands in the list.
    let mut t = Term::connect_from(REAL, addr);
    assert_eq!(result(&t.reg("AF-NEW-1")), Some(false));
    let pending = srv.list_all("/api/pending-devices");
    let listed = pending
        .iter()
        .find(|p| s(p, "serial") == "AF-NEW-1")
        .unwrap_or_else(|| panic!("the real terminal is not pending: {pending:?}"));
    assert_eq!(s(listed, "protocol"), "aiface");
    assert!(s(listed, "remote").starts_with("127.0.0.3:"));
}
