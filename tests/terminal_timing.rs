//! Terminals as the field runs them (issue 15), against the real binary with short settings: a
//! quiet terminal is pinged and kept, a silent one closed at its dialect's idle timeout; each
//! command waits as long as what it asks takes, and a late reply is not the next command's; a
//! logged-in terminal may send a photo batch past `--max-message`, within a budget shared by all.

mod common;
use common::term::{Next, Term, aiface_answer};
use common::*;

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use fleetgate::ws::Opcode;
use tungstenite::Message;

for_both_drivers!(
    quiet_terminals_are_pinged_and_silent_ones_closed,
    each_command_waits_as_long_as_it_takes_and_late_replies_are_not_misattributed,
    logged_in_terminals_may_send_photo_batches_within_a_shared_budget,
);

fn create_terminal(srv: &Server, protocol: &str, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": protocol, "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

/// An AiFace terminal registered, its backfill answered (no stored logs).
fn aiface(srv: &Server, serial: &str) -> Term {
    let mut t = Term::connect(srv.addr());
    t.send(&format!(r#"{{"cmd":"reg","sn":"{serial}"}}"#));
    let reg = t.until("ret reg", |f| f.contains(r#""ret":"reg""#), aiface_answer);
    assert!(reg.contains(r#""result":true"#), "{reg}");
    t.until(
        "the backfill",
        |f| f.contains(r#""cmd":"getnewlog""#),
        |_| None,
    );
    t.send(r#"{"ret":"getnewlog","result":true,"count":0,"from":0,"to":0,"record":[]}"#);
    t
}

/// Reads for `span`, counting the server's Pings (tungstenite answers each with a Pong);
/// panics if the session ends or a text frame arrives.
fn pings_during(t: &mut Term, span: Duration) -> usize {
    let end = Instant::now() + span;
    let mut pings = 0;
    while Instant::now() < end {
        match t.ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("expected only Pings, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the session ended: {e}"),
        }
    }
    pings
}

fn quiet_terminals_are_pinged_and_silent_ones_closed(io: &str) {
    let srv = Server::start_with(
        io,
        &[
            "--aiface-ping-interval",
            "1",
            "--aiface-idle-timeout",
            "3",
            "--smackbio-ping-interval",
            "1",
            "--smackbio-idle-timeout",
            "3",
        ],
    );
    let answering = create_terminal(&srv, "aiface", "AF-PING");
    let silent = create_terminal(&srv, "aiface", "AF-SILENT");
    let xml = create_terminal(&srv, "smackbio", "SB-PING");

    // Sends nothing of its own for twice the idle timeout, but answers every Ping: it stays.
    let mut t = aiface(&srv, "AF-PING");
    srv.wait_status(&answering, "online");
    assert!(pings_during(&mut t, Duration::from_secs(7)) >= 2);
    assert_eq!(srv.listed_status(&answering), "online");

    // Stops reading, so it never answers a Ping: closed at the idle timeout.
    let _gone = aiface(&srv, "AF-SILENT");
    srv.wait_status(&silent, "offline");
    let events = srv.wait_event(&silent, "device_disconnected");
    assert_eq!(s(field(&events[0], "payload"), "reason"), "idle timeout");

    // SmackBio: Register, Login with the token, the setup answered; then only Pings.
    let mut x = Term::connect(srv.addr());
    x.send("<Message><Request>Register</Request><DeviceSerialNo>SB-PING</DeviceSerialNo><TerminalType>M50</TerminalType></Message>");
    let reg = x.until("Register", |f| f.contains("<Token>"), |_| None);
    let token = reg
        .split("<Token>")
        .nth(1)
        .and_then(|r| r.split("</Token>").next())
        .expect("a token");
    x.send(&format!("<Message><Request>Login</Request><DeviceSerialNo>SB-PING</DeviceSerialNo><Token>{token}</Token></Message>"));
    x.until(
        "the backfill",
        |f| f.contains("<Request>GetFirstGlog</Request>"),
        |f| {
            f.contains("<Request>SetTime</Request>").then(|| {
                "<Message><Response>SetTime</Response><Result>OK</Result></Message>".to_string()
            })
        },
    );
    x.send("<Message><Response>GetFirstGlog</Response><Result>Fail</Result></Message>");
    srv.wait_status(&xml, "online");
    assert!(pings_during(&mut x, Duration::from_secs(7)) >= 2);
    assert_eq!(srv.listed_status(&xml), "online");
}

fn each_command_waits_as_long_as_it_takes_and_late_replies_are_not_misattributed(io: &str) {
    let srv = Server::start_with(
        io,
        &[
            "--terminal-command-timeout",
            "1",
            "--terminal-slow-command-timeout",
            "6",
        ],
    );
    let id = create_terminal(&srv, "aiface", "AF-CMD");
    let mut t = aiface(&srv, "AF-CMD");
    srv.wait_status(&id, "online");
    let frame = |t: &mut Term, cmd: &str| {
        t.until(cmd, |f| f.contains(&format!(r#""cmd":"{cmd}""#)), |_| None)
    };

    // A door is quick: unanswered, it fails after the short timeout.
    let door = srv.send_command(&id, "open_door", json!({}));
    frame(&mut t, "opendoor");
    let failed = srv.wait_command_status(&id, &door, "failed");
    assert!(enc(&failed).contains("timeout"), "{}", enc(&failed));

    // Photo enrolment is slow: answered well past the short timeout, it is acked.
    let photo = json!({"enrollid": 7, "backupnum": 50, "record": "/9j/4AAQSkZJRg=="});
    let enrol = srv.send_command(&id, "set_user", photo.clone());
    frame(&mut t, "setuserinfo");
    std::thread::sleep(Duration::from_secs(2));
    t.send(r#"{"ret":"setuserinfo","result":true}"#);
    srv.wait_command_status(&id, &enrol, "acked");

    // One photo times out; the next user's, queued behind it, must not take its late reply.
    let first = srv.send_command(&id, "set_user", photo.clone());
    let second = srv.send_command(
        &id,
        "set_user",
        json!({"enrollid": 8, "backupnum": 50, "record": "/9j/4AAQSkZJRg=="}),
    );
    let sent = frame(&mut t, "setuserinfo");
    assert!(sent.contains(r#""enrollid":7"#), "{sent}");
    srv.wait_command_status(&id, &first, "failed");
    t.send(r#"{"ret":"setuserinfo","result":true}"#);
    let sent = frame(&mut t, "setuserinfo");
    assert!(sent.contains(r#""enrollid":8"#), "{sent}");
    t.send(r#"{"ret":"setuserinfo","result":false,"reason":12}"#);
    let done = srv.wait_command_status(&id, &second, "failed");
    assert!(enc(&done).contains("12"), "{}", enc(&done));
}

/// A `sendlog` of `records` unknown-face records, each with a photo of `photo` bytes (base64).
fn photo_sendlog(serial: &str, records: usize, photo: usize) -> String {
    let image = base64::engine::general_purpose::STANDARD.encode(random_bytes(photo));
    let records: Vec<String> = (0..records)
        .map(|i| {
            format!(
                r#"{{"enrollid":{},"time":"2026-06-12 09:15:{i:02}","mode":8,"inout":0,"event":0,"image":"{image}"}}"#,
                100 + i
            )
        })
        .collect();
    format!(
        r#"{{"cmd":"sendlog","sn":"{serial}","count":{},"logindex":1,"record":[{}]}}"#,
        records.len(),
        records.join(",")
    )
}

fn sendlog_acked(t: &mut Term) {
    let ack = t.until(
        "ret sendlog",
        |f| f.contains(r#""ret":"sendlog""#),
        |_| None,
    );
    assert!(ack.contains(r#""result":true"#), "{ack}");
}

fn logged_in_terminals_may_send_photo_batches_within_a_shared_budget(io: &str) {
    let srv = Server::start_with(
        io,
        &[
            "--max-message",
            "65536",
            "--max-body",
            "65536",
            "--terminal-max-message",
            "1048576",
            "--large-message-budget-mb",
            "1",
            "--auto-approve",
        ],
    );

    // Before a session has logged in as a terminal, the general limit holds: 1009.
    let mut stranger = Term::connect(srv.addr());
    stranger.send(&photo_sendlog("AF-STRANGER", 2, 60_000));
    assert!(matches!(stranger.next(Instant::now() + SOON), Next::Closed));

    // Logged in, a batch of photos far past --max-message is stored and acknowledged.
    let id = create_terminal(&srv, "aiface", "AF-PHOTO");
    let mut t = aiface(&srv, "AF-PHOTO");
    t.send(&photo_sendlog("AF-PHOTO", 2, 150_000));
    sendlog_acked(&mut t);
    assert_eq!(
        srv.list_all(&format!("/api/attendance?device_id={id}"))
            .len(),
        2
    );

    // Two terminals upload at once and the budget holds one such message: the first, whose
    // header has come, keeps its room; the second is refused and closed, and can send again.
    let mut a = aiface(&srv, "AF-A");
    let mut b = aiface(&srv, "AF-B");
    let mut big = Vec::new();
    fleetgate::ws::client::encode_frame(
        &mut big,
        Opcode::Text,
        photo_sendlog("AF-A", 2, 300_000).as_bytes(),
        [7, 1, 2, 9],
    );
    let stream = a.ws.get_mut();
    stream.write_all(&big[..20_000]).expect("write");
    wait_until(SOON, "room for the first upload", || {
        metric(&srv, "fleetgate_large_message_bytes") > 700_000.0
    });
    let _ = b.ws.send(Message::text(photo_sendlog("AF-B", 2, 300_000)));
    assert!(matches!(b.next(Instant::now() + SOON), Next::Closed));
    assert!(
        metric(
            &srv,
            r#"fleetgate_limit_hits_total{limit="large_message_budget"}"#
        ) >= 1.0
    );
    a.ws.get_mut().write_all(&big[20_000..]).expect("write");
    sendlog_acked(&mut a);
    wait_until(SOON, "the room given back", || {
        metric(&srv, "fleetgate_large_message_bytes") == 0.0
    });
    let mut b = aiface(&srv, "AF-B");
    b.send(&photo_sendlog("AF-B", 2, 300_000));
    sendlog_acked(&mut b);

    // The HTTP variant: /api/device-http takes the same size, other routes keep --max-body.
    let dh = |body: &str| {
        srv.anonymous()
            .post_json("/api/device-http", body.as_bytes())
            .expect("POST /api/device-http")
    };
    let reg = dh(r#"{"cmd":"reg","sn":"HTTP-PHOTO"}"#);
    assert_eq!(reg.status, 200, "{}", reg.text());
    let log = dh(&photo_sendlog("HTTP-PHOTO", 2, 100_000));
    assert_eq!(log.status, 200, "{}", log.text());
    assert!(log.text().contains(r#""result":true"#), "{}", log.text());
    let big = srv.post(
        "/api/devices",
        &json!({"name": "x".repeat(100_000), "protocol": "aiface", "serial": "AF-BIG"}),
    );
    assert_eq!(big.status, 413, "{}", big.text());
}
