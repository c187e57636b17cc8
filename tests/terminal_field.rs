//! SmackBio terminals as the field runs them (issue 15), over a real socket against the real
//! binary: replies matched by name among F500's bare `<Result>` acks and late replies, a backfill
//! that resumes where the stored logs stop and yields to operator commands, a Login that comes
//! before any Register, unknown events stored before their ack, and the clock rule.

mod common;
use common::term::{Next, Term, tag};
use common::*;

use std::time::Instant;

const BARE_ACK: &str = "<?xml version=\"1.0\"?><Message><Result>OK</Result></Message>";

fn create(srv: &Server, serial: &str, settings: Value) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": "smackbio", "serial": serial, "settings": settings}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

/// The next frame, which must be a request; returns it.
fn request(t: &mut Term, what: &str) -> String {
    match t.next(Instant::now() + SOON) {
        Next::Text(f) if tag(&f, "Request").is_some() => f,
        Next::Text(f) => panic!("expected {what}, got {f}"),
        Next::Closed => panic!("closed waiting for {what}"),
        Next::Quiet => panic!("no {what} within {SOON:?}"),
    }
}

/// Nothing more arrives for a moment.
fn quiet(t: &mut Term) {
    let deadline = Instant::now() + std::time::Duration::from_millis(600);
    if let Next::Text(f) = t.next(deadline) {
        panic!("expected nothing, got {f}");
    }
}

fn log_reply(name: &str, id: u64, user: u64) -> String {
    format!(
        "<Message><Response>{name}</Response><LogID>{id}</LogID><Time>2026-8-1-T9:00:00Z</Time><UserID>{user}</UserID><Action>Face</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><Result>OK</Result></Message>"
    )
}

/// Seconds between two terminal times (`2026-08-29-T08:15:30Z`, wall clock).
fn apart_s(a: &str, b: &str) -> i64 {
    let read = |t: &str| {
        jiff::civil::DateTime::strptime("%Y-%m-%d-T%H:%M:%SZ", t)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
    };
    read(a).duration_until(read(b)).as_secs().abs()
}

fn login(t: &mut Term, serial: &str, token: Option<&str>) -> String {
    let token = token.map_or(String::new(), |t| format!("<Token>{t}</Token>"));
    t.send(&format!(
        "<Message><Request>Login</Request><DeviceSerialNo>{serial}</DeviceSerialNo>{token}</Message>"
    ));
    match t.next(Instant::now() + SOON) {
        Next::Text(f) if tag(&f, "Response") == Some("Login") => f,
        other => panic!(
            "no Login reply: {}",
            match other {
                Next::Text(f) => f,
                _ => "nothing".into(),
            }
        ),
    }
}

/// A first connection reads the terminal's whole history, one log per round trip: an operator
/// command queued meanwhile goes out at the next step, not after the history. Bare `<Result>`
/// acks and a late reply in between shift nothing. A reconnect then resumes after the newest log
/// stored, live ones included.
fn backfill_resumes_and_yields_among_acks_and_late_replies(io: &str) {
    let srv = Server::start(io);
    let id = create(&srv, "F500-1", json!({"timezone": "UTC"}));
    let mut t = Term::connect(srv.addr());
    // F500 firmware logs in before it ever registers: the Login reply carries its token.
    let reply = login(&mut t, "F500-1", None);
    assert_eq!(tag(&reply, "Result"), Some("OK"), "{reply}");
    let token = tag(&reply, "Token")
        .expect("a token in the Login reply")
        .to_owned();
    srv.wait_status(&id, "online");
    // The terminal acknowledges the Login reply with a bare Result while SetTime is awaited.
    let set = request(&mut t, "SetTime");
    assert_eq!(tag(&set, "Request"), Some("SetTime"));
    t.send(BARE_ACK);
    t.send("<Message><Response>SetTime</Response><Result>OK</Result></Message>");
    let first = request(&mut t, "GetFirstGlog");
    assert_eq!(tag(&first, "Request"), Some("GetFirstGlog"), "{first}");
    // An operator command arrives while the first step is outstanding.
    let cmd = srv.send_command(&id, "open_door", json!({}));
    t.send(BARE_ACK);
    t.send(&log_reply("GetFirstGlog", 0, 7));
    let lock = request(&mut t, "the operator's LockControl before the next log");
    assert_eq!(tag(&lock, "Request"), Some("LockControl"), "{lock}");
    t.send(BARE_ACK);
    t.send("<Message><Response>LockControl</Response><Result>OK</Result></Message>");
    srv.wait_command_status(&id, &cmd, "acked");
    let next = request(&mut t, "GetNextGlog");
    assert_eq!(tag(&next, "Request"), Some("GetNextGlog"), "{next}");
    assert_eq!(tag(&next, "BeginLogPos"), Some("1"));
    // A second LockControl reply (late, or sent twice) is not the log's answer.
    t.send("<Message><Response>LockControl</Response><Result>OK</Result></Message>");
    t.send(&log_reply("GetNextGlog", 1, 8));
    let next = request(&mut t, "GetNextGlog");
    assert_eq!(tag(&next, "BeginLogPos"), Some("2"), "{next}");
    t.send("<Message><Response>GetNextGlog</Response><Result>Fail</Result></Message>");
    quiet(&mut t);
    for user in [7, 8] {
        let stored = srv.list_all(&format!("/api/attendance?device_id={id}&enrollid={user}"));
        assert_eq!(stored.len(), 1, "log of user {user}: {stored:?}");
    }
    assert!(
        srv.events(&format!("device_id={id}&type=attendance_invalid"))
            .is_empty(),
        "no frame was taken for a log it is not"
    );
    // Caught up: a live log moves the saved position past it.
    t.send("<Message><Event>TimeLog_v2</Event><LogID>40</LogID><Time>2026-8-29-T8:15:30Z</Time><UserID>9</UserID><TransID>tx-40</TransID></Message>");
    let ack = t.until(
        "TimeLog_v2 ack",
        |f| tag(f, "Response") == Some("TimeLog_v2"),
        |_| None,
    );
    assert_eq!(tag(&ack, "Result"), Some("OK"), "{ack}");
    drop(t);
    srv.wait_status(&id, "offline");

    let mut t = Term::connect(srv.addr());
    let reply = login(&mut t, "F500-1", Some(&token));
    assert_eq!(tag(&reply, "Result"), Some("OK"), "{reply}");
    assert_eq!(tag(&reply, "Token"), None);
    request(&mut t, "SetTime");
    t.send("<Message><Response>SetTime</Response><Result>OK</Result></Message>");
    let resume = request(&mut t, "the backfill resuming");
    assert_eq!(tag(&resume, "Request"), Some("GetNextGlog"), "{resume}");
    assert_eq!(
        tag(&resume, "BeginLogPos"),
        Some("41"),
        "only what was missed is read"
    );
}

/// An event the server does not know (`OpLog_v2`) is the terminal's data: it is stored, and the
/// OK echoing its TransID comes only once that is durable.
fn unknown_events_are_stored_before_their_ack(io: &str) {
    let srv = Server::start(io);
    let id = create(&srv, "F500-2", json!({"timezone": "UTC"}));
    let mut t = Term::connect(srv.addr());
    login(&mut t, "F500-2", None);
    t.send("<Message><DeviceSerialNo>F500-2</DeviceSerialNo><Event>OpLog_v2</Event><LogID>12</LogID><Action>OpenDoor</Action><TransID>op-1</TransID></Message>");
    let ack = t.until(
        "OpLog_v2 ack",
        |f| tag(f, "Response") == Some("OpLog_v2"),
        |f| {
            let name = tag(f, "Request")?;
            Some(format!(
                "<Message><Response>{name}</Response><Result>Fail</Result></Message>"
            ))
        },
    );
    assert_eq!(tag(&ack, "Result"), Some("OK"), "{ack}");
    assert_eq!(tag(&ack, "TransID"), Some("op-1"));
    let stored = srv.events(&format!("device_id={id}&type=terminal_event"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(enc(&stored[0]).contains("OpenDoor"), "{}", enc(&stored[0]));
}

/// One clock rule: without a `timezone` setting the server neither sets the terminal's clock nor
/// reads its times in the server's zone; it keeps the offset the terminal shows. A terminal whose
/// clock is off is reported as a `clock_drift` event and, with a zone configured, set again.
fn the_clock_rule_and_drift(io: &str) {
    let srv = Server::start(io);
    let now = jiff::Timestamp::now();
    let wall = |offset_h: i8, extra_s: i64| {
        let off = jiff::tz::TimeZone::fixed(jiff::tz::offset(offset_h));
        (now + jiff::SignedDuration::from_secs(extra_s))
            .to_zoned(off)
            .strftime("%Y-%m-%d-T%H:%M:%SZ")
            .to_string()
    };
    let bare = create(&srv, "F500-3", json!({}));
    let mut t = Term::connect(srv.addr());
    login(&mut t, "F500-3", None);
    // No zone: no SetTime; the backfill comes first.
    let first = request(&mut t, "GetFirstGlog");
    assert_eq!(tag(&first, "Request"), Some("GetFirstGlog"), "{first}");
    t.send("<Message><Response>GetFirstGlog</Response><Result>Fail</Result></Message>");
    // The terminal's clock reads UTC+3; the server learns that offset from it.
    t.send(&format!(
        "<Message><Event>KeepAlive</Event><DevTime>{}</DevTime></Message>",
        wall(3, 0)
    ));
    let ka = t.until(
        "KeepAlive reply",
        |f| tag(f, "Response") == Some("KeepAlive"),
        |_| None,
    );
    let server_time = tag(&ka, "ServerTime").expect("ServerTime");
    assert!(
        apart_s(server_time, &wall(3, 0)) <= 60,
        "ServerTime on the terminal's own clock: {ka}"
    );
    // A punch without UtcTimezoneMinutes is read at +03:00, not in the server's zone.
    t.send("<Message><Event>TimeLog_v2</Event><LogID>1</LogID><Time>2026-8-29-T8:15:30Z</Time><UserID>4</UserID><TransID>t1</TransID></Message>");
    t.until(
        "TimeLog_v2 ack",
        |f| tag(f, "Response") == Some("TimeLog_v2"),
        |_| None,
    );
    let punch = srv.list_all(&format!("/api/attendance?device_id={bare}&enrollid=4"));
    assert_eq!(s(&punch[0], "utc_time"), "2026-08-29T05:15:30.000Z");

    // With a zone: a clock five minutes fast is reported and set again.
    let zoned = create(&srv, "F500-4", json!({"timezone": "Etc/GMT-2"}));
    let mut z = Term::connect(srv.addr());
    login(&mut z, "F500-4", None);
    request(&mut z, "SetTime");
    z.send("<Message><Response>SetTime</Response><Result>OK</Result></Message>");
    request(&mut z, "GetFirstGlog");
    z.send("<Message><Response>GetFirstGlog</Response><Result>Fail</Result></Message>");
    z.send(&format!(
        "<Message><Event>KeepAlive</Event><DevTime>{}</DevTime></Message>",
        wall(2, 300)
    ));
    let set = z.until(
        "SetTime after the drift",
        |f| tag(f, "Request") == Some("SetTime"),
        |_| None,
    );
    let time = tag(&set, "Time").expect("Time");
    assert!(apart_s(time, &wall(2, 0)) <= 60, "{set}");
    let drift = srv.wait_event(&zoned, "clock_drift");
    let text = enc(&drift[0]);
    assert!(
        text.contains("Etc/GMT-2") && text.contains("drift_seconds"),
        "{text}"
    );
    assert!(
        srv.events(&format!("device_id={bare}&type=clock_drift"))
            .is_empty(),
        "a clock within the bound is not reported"
    );
}

for_both_drivers!(
    backfill_resumes_and_yields_among_acks_and_late_replies,
    unknown_events_are_stored_before_their_ack,
    the_clock_rule_and_drift
);
