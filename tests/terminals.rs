//! Biometric terminals over a real socket: a simulated AiFace (JSON) and SmackBio (XML) terminal
//! each register, show online, push punches that land in the attendance API, answer the server's
//! backfill, and receive a door command sent through the REST API.

mod common;
use common::term::{Term, aiface_answer, tag};
use common::*;

use std::time::Duration;

use tungstenite::Message;

const T: Duration = Duration::from_secs(20);

/// The store of a stopped server, opened as the server opens it.
fn stopped_store(srv: &Server) -> fleetgate::store::Store {
    fleetgate::store::Store::open(
        srv.data_dir(),
        true,
        Duration::from_secs(3600),
        fleetgate::store::DEFAULT_MEMORY_BYTES,
    )
    .expect("open the stopped server's store")
}

fn create_terminal(srv: &Server, protocol: &str, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": format!("{protocol} gate"), "protocol": protocol, "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

fn aiface_terminal(io: &str) {
    let srv = Server::start(io);
    let id = create_terminal(&srv, "aiface", "AF-100");
    let mut t = Term::connect(srv.addr());
    t.send(r#"{"cmd":"reg","sn":"AF-100","cpusn":"c1","devinfo":{"modelname":"AI07F","firmware":"ai806",},}"#);
    let reg = t.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
    let reg = parse(reg.as_bytes());
    assert_eq!(field(&reg, "result").as_bool(), Some(true), "{}", enc(&reg));
    assert_eq!(field(&reg, "nosenduser").as_bool(), Some(true));
    let cloudtime = s(&reg, "cloudtime");
    assert_eq!(
        cloudtime.len(),
        19,
        "cloudtime is YYYY-MM-DD HH:MM:SS: {cloudtime}"
    );
    srv.wait_status(&id, "online");

    t.send(r#"{"cmd":"sendlog","sn":"AF-100","count":2,"logindex":7,"record":[{"enrollid":42,"time":"2026-06-12 09:15:30","mode":1,"inout":0,"event":0},{"enrollid":0,"time":"2026-06-12 09:15:31","mode":0,"inout":1,"event":1},]}"#);
    let ack = t.until(
        "ret sendlog",
        |f| f.contains("\"ret\":\"sendlog\""),
        aiface_answer,
    );
    let ack = parse(ack.as_bytes());
    assert_eq!(field(&ack, "result").as_bool(), Some(true), "{}", enc(&ack));
    assert_eq!(u(&ack, "logindex"), 7);
    let punches = srv.list_all(&format!("/api/attendance?device_id={id}"));
    assert_eq!(
        punches.len(),
        1,
        "the door event is not attendance: {punches:?}"
    );
    assert_eq!(u(&punches[0], "enrollid"), 42);
    assert_eq!(s(&punches[0], "utc_time"), "2026-06-12T09:15:30.000Z");
    assert!(
        !srv.events(&format!("device_id={id}&type=door_event"))
            .is_empty()
    );

    let cmd = srv.send_command(&id, "open_door", json!({"door": 1}));
    let door = t.until(
        "cmd opendoor",
        |f| f.contains("\"cmd\":\"opendoor\""),
        aiface_answer,
    );
    assert!(
        door.contains("\"doornum\":1") || door.contains("\"door\":1"),
        "{door}"
    );
    t.send(r#"{"ret":"opendoor","result":true}"#);
    srv.wait_command_status(&id, &cmd, "acked");

    // An unknown serial is refused with a reason and listed as pending.
    let mut stranger = Term::connect(srv.addr());
    stranger.send(r#"{"cmd":"reg","sn":"AF-999","devinfo":{"modelname":"AI07F"}}"#);
    let no = parse(
        stranger
            .until("ret reg", |f| f.contains("\"ret\":\"reg\""), |_| None)
            .as_bytes(),
    );
    assert_eq!(field(&no, "result").as_bool(), Some(false));
    assert!(!s(&no, "reason").is_empty());
    let pending = srv.list_all("/api/pending-devices");
    assert!(
        pending
            .iter()
            .any(|p| s(p, "serial") == "AF-999" && s(p, "protocol") == "aiface"),
        "{pending:?}"
    );

    drop(t);
    srv.wait_status(&id, "offline");
}

/// Answers what a SmackBio terminal is asked during setup: the clock set succeeds, and the log
/// backfill finds one stored log (LogID 5) and then no more.
fn smackbio_answer(f: &str) -> Option<String> {
    match tag(f, "Request")? {
        "GetFirstGlog" => Some(
            "<Message><Response>GetFirstGlog</Response><LogID>5</LogID><Time>2026-8-1-T9:00:00Z</Time><UserID>7</UserID><Action>Face</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><Result>OK</Result></Message>"
                .into(),
        ),
        "GetNextGlog" => Some("<Message><Response>GetNextGlog</Response><Result>Fail</Result></Message>".into()),
        name => Some(format!("<Message><Response>{name}</Response><Result>OK</Result></Message>")),
    }
}

fn smackbio_terminal(io: &str) {
    let srv = Server::start(io);
    let id = create_terminal(&srv, "smackbio", "M82-0001");
    let mut t = Term::connect(srv.addr());
    t.send("<?xml version=\"1.0\"?>\r\n<Message>\r\n<Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>M82-0001</DeviceSerialNo><CloudId>cloudid12345678</CloudId>\r\n</Message>");
    let reg = t.until(
        "Register response",
        |f| tag(f, "Response") == Some("Register"),
        smackbio_answer,
    );
    assert_eq!(tag(&reg, "Result"), Some("OK"), "{reg}");
    let token = tag(&reg, "Token").expect("a token").to_string();
    assert!(!token.is_empty());

    t.send(&format!("<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token>{token}</Token></Message>"));
    let login = t.until(
        "Login response",
        |f| tag(f, "Response") == Some("Login"),
        smackbio_answer,
    );
    assert_eq!(tag(&login, "Result"), Some("OK"), "{login}");
    srv.wait_status(&id, "online");

    // Setup: the clock is set, then the backfill reads log 5 and asks for the next one.
    let next = t.until(
        "GetNextGlog request",
        |f| tag(f, "Request") == Some("GetNextGlog"),
        smackbio_answer,
    );
    assert_eq!(tag(&next, "BeginLogPos"), Some("6"), "{next}");
    t.send("<Message><Response>GetNextGlog</Response><Result>Fail</Result></Message>");
    let backfilled = srv.list_all(&format!("/api/attendance?device_id={id}&enrollid=7"));
    assert_eq!(
        backfilled.len(),
        1,
        "the backfilled log is stored: {backfilled:?}"
    );
    assert_eq!(s(&backfilled[0], "local_time"), "2026-08-01 09:00:00");

    // A live punch: padded event name, unpadded date; acked with its TransID once stored.
    t.send("<?xml version=\"1.0\"?>\r\n<Message>\r\n<TerminalType>M82</TerminalType><TerminalID>1</TerminalID><DeviceSerialNo>M82-0001</DeviceSerialNo><Event> TimeLog_v2</Event><LogID>24</LogID><UtcTimezoneMinutes>180</UtcTimezoneMinutes><Time>2026-8-29-T8:15:30Z</Time><UserID>42</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><TransID>tx-7</TransID>\r\n</Message>");
    let ack = t.until(
        "TimeLog_v2 ack",
        |f| tag(f, "Response") == Some("TimeLog_v2"),
        smackbio_answer,
    );
    assert_eq!(tag(&ack, "Result"), Some("OK"), "{ack}");
    assert_eq!(tag(&ack, "TransID"), Some("tx-7"));
    let punches = srv.list_all(&format!("/api/attendance?device_id={id}&enrollid=42"));
    assert_eq!(punches.len(), 1, "{punches:?}");
    // UtcTimezoneMinutes 180: 08:15:30 local is 05:15:30 UTC.
    assert_eq!(s(&punches[0], "utc_time"), "2026-08-29T05:15:30.000Z");

    // The same log again (the device did not see the ack): acked again, stored once.
    t.send("<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>TimeLog_v2</Event><LogID>24</LogID><UtcTimezoneMinutes>180</UtcTimezoneMinutes><Time>2026-08-29-T08:15:30Z</Time><UserID>42</UserID><Action>FP</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><TransID>tx-8</TransID></Message>");
    let again = t.until(
        "second TimeLog_v2 ack",
        |f| tag(f, "TransID") == Some("tx-8"),
        smackbio_answer,
    );
    assert_eq!(tag(&again, "Result"), Some("OK"));
    assert_eq!(
        srv.list_all(&format!("/api/attendance?device_id={id}&enrollid=42"))
            .len(),
        1
    );

    // An admin log is an event: acked with its TransID once stored, and listed.
    t.send("<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>AdminLog_v2</Event><LogID>3</LogID><AdminID>1</AdminID><UserID>42</UserID><Action>EnrollFace</Action><TransID>a-1</TransID></Message>");
    let admin = t.until(
        "AdminLog_v2 ack",
        |f| tag(f, "Response") == Some("AdminLog_v2"),
        smackbio_answer,
    );
    assert_eq!(tag(&admin, "Result"), Some("OK"), "{admin}");
    assert_eq!(tag(&admin, "TransID"), Some("a-1"));
    assert_eq!(
        srv.events(&format!("device_id={id}&type=admin_log")).len(),
        1
    );

    // KeepAlive: DevTime echoed, ServerTime in the protocol's format.
    t.send("<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>KeepAlive</Event><DevTime>2026-08-29-T08:00:00Z</DevTime></Message>");
    let ka = t.until(
        "KeepAlive reply",
        |f| tag(f, "Response") == Some("KeepAlive"),
        smackbio_answer,
    );
    assert_eq!(tag(&ka, "DevTime"), Some("2026-08-29-T08:00:00Z"));
    let st = tag(&ka, "ServerTime").expect("ServerTime");
    assert!(
        st.len() == 21
            && st.as_bytes()[10] == b'-'
            && st.as_bytes()[11] == b'T'
            && st.ends_with('Z'),
        "{st}"
    );

    // A door command from the REST API arrives as LockControl; the reply naming it answers it.
    let cmd = srv.send_command(&id, "open_door", json!({}));
    let lock = t.until(
        "LockControl request",
        |f| tag(f, "Request") == Some("LockControl"),
        smackbio_answer,
    );
    assert!(lock.contains("<Message>"), "{lock}");
    t.send("<Message><Response>LockControl</Response><Result>OK</Result></Message>");
    let done = srv.wait_command_status(&id, &cmd, "acked");
    assert!(enc(&done).contains("OK"), "{}", enc(&done));

    // A Login with a token this serial was never given makes the device register again.
    let mut other = Term::connect(srv.addr());
    other.send("<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token>not-the-token</Token></Message>");
    let refused = other.until(
        "Login response",
        |f| tag(f, "Response") == Some("Login"),
        |_| None,
    );
    assert_eq!(
        tag(&refused, "Result"),
        Some("FailUnknownToken"),
        "{refused}"
    );

    drop(t);
    srv.wait_status(&id, "offline");
}

/// AiFace rebrands with no path setting connect to `/pub/chat` (shared/protocols.md §3.1); an
/// operator may add paths of their own. Any WebSocket path takes any dialect; other paths refuse
/// the upgrade.
fn terminals_connect_on_every_websocket_path(io: &str) {
    let srv = Server::start_with(io, &["--ws-paths", "/iclock/ws, /face/chat"]);
    for (i, path) in ["/pub/chat", "/face/chat", "/iclock/ws"]
        .into_iter()
        .enumerate()
    {
        let serial = format!("AF-PATH-{i}");
        let id = create_terminal(&srv, "aiface", &serial);
        let mut t = Term::connect_path(srv.addr(), path);
        t.send(&format!(
            r#"{{"cmd":"reg","sn":"{serial}","devinfo":{{"modelname":"AI07F"}}}}"#
        ));
        let reg = t.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
        let reg = parse(reg.as_bytes());
        assert_eq!(
            field(&reg, "result").as_bool(),
            Some(true),
            "{path}: {}",
            enc(&reg)
        );
        srv.wait_status(&id, "online");
    }
    // A generic device may use them too.
    let dev = srv.create_device("generic-on-pub-chat");
    let stream = std::net::TcpStream::connect(srv.addr()).expect("connect");
    let (mut ws, _) = tungstenite::client(format!("ws://{}/pub/chat", srv.addr()), stream)
        .expect("handshake on /pub/chat");
    ws.send(Message::text(enc(
        &json!({"type":"register","device_id": dev.id.as_str(),"token": dev.token.as_str()}),
    )))
    .expect("send");
    let answer = ws.read().expect("answer");
    assert!(answer.to_string().contains("\"registered\""), "{answer}");
    // Anywhere else the upgrade is not served.
    let stream = std::net::TcpStream::connect(srv.addr()).expect("connect");
    let refused = tungstenite::client(format!("ws://{}/chat", srv.addr()), stream);
    assert!(refused.is_err(), "an upgrade on /chat must not be accepted");
}

/// Every message a terminal starts expects a reply; one the server does not know gets a generic
/// success (without it, field notes report terminals that drop the connection or resend
/// forever), and shows in `/metrics`.
fn unknown_terminal_messages_get_a_generic_success(io: &str) {
    let srv = Server::start(io);
    create_terminal(&srv, "aiface", "AF-GPS");
    let mut t = Term::connect(srv.addr());
    t.send(r#"{"cmd":"reg","sn":"AF-GPS","devinfo":{"modelname":"AI07F"}}"#);
    t.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
    t.send(r#"{"cmd":"sendgps","sn":"AF-GPS","lat":52.5,"lon":13.4}"#);
    let answer = t.until(
        "ret sendgps",
        |f| f.contains("\"ret\":\"sendgps\""),
        aiface_answer,
    );
    let answer = parse(answer.as_bytes());
    assert_eq!(
        field(&answer, "result").as_bool(),
        Some(true),
        "{}",
        enc(&answer)
    );
    wait_until(T, "the unknown message counted", || {
        metric(
            &srv,
            "fleetgate_terminal_unrecognised_total{protocol=\"aiface\"}",
        ) >= 1.0
    });
}

/// An AiFace terminal registered as `serial` (a device created with `settings`), its `reg`
/// answered and the backfill done.
fn registered_aiface(srv: &Server, serial: &str, settings: Value) -> (String, Term) {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": "aiface", "serial": serial, "settings": settings}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = s(&r.json(), "device_id").to_string();
    let mut t = Term::connect(srv.addr());
    t.send(&format!(
        r#"{{"cmd":"reg","sn":"{serial}","devinfo":{{"modelname":"AI07F"}}}}"#
    ));
    let reg = parse(
        t.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer)
            .as_bytes(),
    );
    assert_eq!(field(&reg, "result").as_bool(), Some(true), "{}", enc(&reg));
    srv.wait_status(&id, "online");
    (id, t)
}

/// Sends `frame` and returns the terminal's answer named `ret`.
fn ask(t: &mut Term, frame: &str, ret: &str) -> Value {
    t.send(frame);
    let want = format!("\"ret\":\"{ret}\"");
    parse(
        t.until(&format!("ret {ret}"), |f| f.contains(&want), aiface_answer)
            .as_bytes(),
    )
}

fn users(srv: &Server, id: &str) -> Vec<Value> {
    srv.list_all(&format!("/api/devices/{id}/users"))
}

/// `(backupnum, type)` of a listed user's credentials.
fn credentials(user: &Value) -> Vec<(u64, String)> {
    arr(user, "credentials")
        .iter()
        .map(|c| (u(c, "backupnum"), s(c, "type").to_string()))
        .collect()
}

/// A person's fingerprint, card and password arrive in three `senduser` messages (protocols.md
/// §3.3 [AF-TD]); each is kept, and the API shows one user with all three. A user stored by an
/// older build (one entry per user, keyed by enrollid alone) is still read.
fn senduser_keeps_every_credential(io: &str) {
    let mut srv = Server::start(io);
    let (id, t) = registered_aiface(&srv, "AF-USERS", json!({"timezone": "UTC"}));
    drop(t);
    srv.wait_status(&id, "offline");
    // What an older build left: user 7's card under the old key.
    srv.stop();
    {
        let store = stopped_store(&srv);
        let dev = uuid::Uuid::parse_str(&id).expect("device id");
        let cf = store.cf(fleetgate::store::Cf::Users).expect("users");
        store
            .db()
            .put_cf(
                cf,
                fleetgate::store::keys::user(&dev, 7),
                br#"{"name":"Old Name","backupnum":11,"admin":0,"record":2352253}"#,
            )
            .expect("write an old-layout user");
    }
    srv.start_again();
    let mut t = Term::connect(srv.addr());
    t.send(r#"{"cmd":"reg","sn":"AF-USERS"}"#);
    t.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
    srv.wait_status(&id, "online");

    for frame in [
        r#"{"cmd":"senduser","enrollid":1,"name":"chingzou","backupnum":0,"admin":0,"record":"kajgksjgaglas"}"#,
        r#"{"cmd":"senduser","enrollid":1,"name":"chingzou","backupnum":11,"admin":0,"record":2352253}"#,
        r#"{"cmd":"senduser","enrollid":1,"name":"chingzou","backupnum":10,"admin":1,"record":12345678}"#,
        r#"{"cmd":"senduser","enrollid":7,"name":"New Name","backupnum":0,"admin":0,"record":"fp"}"#,
        // No backupnum: the person alone.
        r#"{"cmd":"senduser","enrollid":9,"name":"Nine","admin":1}"#,
    ] {
        let ack = ask(&mut t, frame, "senduser");
        assert_eq!(
            field(&ack, "result").as_bool(),
            Some(true),
            "{frame}: {}",
            enc(&ack)
        );
        assert_eq!(s(&ack, "cloudtime").len(), 19, "{}", enc(&ack));
    }
    for frame in [
        r#"{"cmd":"senduser","enrollid":1,"backupnum":100,"record":"x"}"#,
        r#"{"cmd":"senduser","enrollid":1,"backupnum":"thumb","record":"x"}"#,
        r#"{"cmd":"senduser","enrollid":0,"backupnum":0,"record":"x"}"#,
    ] {
        let no = ask(&mut t, frame, "senduser");
        assert_eq!(
            field(&no, "result").as_bool(),
            Some(false),
            "{frame}: {}",
            enc(&no)
        );
    }

    let list = users(&srv, &id);
    assert_eq!(list.len(), 3, "{list:?}");
    let one = &list[0];
    assert_eq!(u(one, "enrollid"), 1);
    assert_eq!(s(one, "name"), "chingzou");
    assert_eq!(u(one, "admin"), 1, "the newest entry's admin level");
    assert_eq!(
        credentials(one),
        [
            (0, "fingerprint".to_string()),
            (10, "password".to_string()),
            (11, "card".to_string())
        ]
    );
    for c in arr(one, "credentials") {
        assert_rfc3339(s(c, "stored_at"));
        assert!(
            c.get("record").is_none(),
            "credentials are not served: {}",
            enc(c)
        );
    }
    let seven = &list[1];
    assert_eq!(u(seven, "enrollid"), 7);
    assert_eq!(s(seven, "name"), "New Name", "newer than the old entry");
    assert_eq!(
        credentials(seven),
        [(0, "fingerprint".to_string()), (11, "card".to_string())]
    );
    let old_card = &arr(seven, "credentials")[1];
    assert!(field(old_card, "stored_at").is_null(), "{}", enc(seven));
    assert_eq!(s(&list[2], "name"), "Nine");
    assert!(arr(&list[2], "credentials").is_empty());

    // Pages end between users, and a cursor from elsewhere is refused.
    let r = srv.get(&format!("/api/devices/{id}/users?limit=2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let page = r.json();
    assert_eq!(arr(&page, "items").len(), 2);
    assert!(!s(&page, "next_cursor").is_empty());
    let r = srv.get(&format!("/api/devices/{id}/users?cursor=00ff"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        srv.get("/api/devices/00000000-0000-0000-0000-000000000000/users")
            .status,
        404
    );

    // Deleting the device takes its users with it.
    assert_eq!(srv.delete(&format!("/api/devices/{id}")).status, 200);
    srv.stop();
    let store = stopped_store(&srv);
    let dev = uuid::Uuid::parse_str(&id).expect("device id");
    for enrollid in [1, 7, 9] {
        assert!(
            !fleetgate::fleet::enrolled::is_enrolled(&store, &dev, enrollid).expect("read"),
            "user {enrollid} outlived its device"
        );
    }
}

/// In server-verify mode the `sendlog` answer opens the door or not (protocols.md §3.3): the
/// device settings `server_verify_access` and `access_format` decide whom and how, and a change
/// applies to the next punch of the live session.
fn access_answers_follow_the_device_settings(io: &str) {
    let srv = Server::start(io);
    let settings =
        json!({"timezone": "UTC", "server_verify_access": "enrolled", "access_format": "bool"});
    let (id, mut t) = registered_aiface(&srv, "AF-GATE", settings);
    let punch = |n: u64, enrollid: u64| {
        format!(
            r#"{{"cmd":"sendlog","sn":"AF-GATE","count":1,"logindex":{n},"record":[{{"enrollid":{enrollid},"time":"2026-06-12 09:15:{n:02}","mode":8,"inout":0,"event":0}}]}}"#
        )
    };
    let ack = ask(
        &mut t,
        r#"{"cmd":"senduser","enrollid":42,"name":"Ann","backupnum":20,"admin":0,"record":"face"}"#,
        "senduser",
    );
    assert_eq!(field(&ack, "result").as_bool(), Some(true));

    let yes = ask(&mut t, &punch(1, 42), "sendlog");
    assert_eq!(field(&yes, "result").as_bool(), Some(true), "{}", enc(&yes));
    assert_eq!(field(&yes, "access").as_bool(), Some(true), "{}", enc(&yes));
    assert!(yes.get("message").is_none(), "{}", enc(&yes));
    let no = ask(&mut t, &punch(2, 43), "sendlog");
    assert_eq!(
        field(&no, "result").as_bool(),
        Some(true),
        "stored all the same"
    );
    assert_eq!(field(&no, "access").as_bool(), Some(false), "{}", enc(&no));
    assert_eq!(s(&no, "message"), "not enrolled");
    assert_eq!(
        srv.list_all(&format!("/api/attendance?device_id={id}"))
            .len(),
        2,
        "a refused punch is attendance too"
    );

    // The operator shuts the door for everyone: the live session's next answer refuses.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"server_verify_access": "deny", "access_format": "int"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let shut = ask(&mut t, &punch(3, 42), "sendlog");
    assert_eq!(u(&shut, "access"), 0, "{}", enc(&shut));
    assert_eq!(s(&shut, "message"), "access denied");
    // A QR code is never vouched for (the gateway keeps none), in the device's format.
    let qr = ask(
        &mut t,
        r#"{"cmd":"sendqrcode","sn":"AF-GATE","record":"123456"}"#,
        "sendqrcode",
    );
    assert_eq!(field(&qr, "result").as_bool(), Some(false), "{}", enc(&qr));
    assert_eq!(u(&qr, "access"), 0, "{}", enc(&qr));
    // Back to the default: everyone the terminal recognised, never an unknown face.
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"server_verify_access": "allow"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(u(&ask(&mut t, &punch(4, 43), "sendlog"), "access"), 1);
    let face = ask(&mut t, &punch(5, 99_999_999), "sendlog");
    assert_eq!(u(&face, "access"), 0, "{}", enc(&face));
    assert_eq!(s(&face, "message"), "unknown face");

    // Values the answer does not know are refused with a 400 that says which.
    for (settings, says) in [
        (
            json!({"server_verify_access": "maybe"}),
            "server_verify_access must be allow, deny or enrolled",
        ),
        (
            json!({"access_format": "string"}),
            "access_format must be int or bool",
        ),
    ] {
        let r = srv.patch(
            &format!("/api/devices/{id}"),
            &json!({ "settings": settings }),
        );
        assert_eq!(r.status, 400, "{}", r.text());
        let body = r.json();
        assert_eq!(error_code(&body), "invalid_field");
        assert!(r.text().contains(says), "{}", r.text());
        let r = srv.post(
            "/api/devices",
            &json!({"name": "x", "protocol": "aiface", "serial": "AF-BAD", "settings": settings}),
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let d = srv.get(&format!("/api/devices/{id}")).json();
    assert_eq!(s(field(&d, "settings"), "server_verify_access"), "allow");
}

/// A terminal that does not wait for each answer: log frames written back to back, in one write,
/// with heartbeats between them and one frame sent twice. The session stages the frames it has
/// read into shared commits, yet every answer comes after its own records are stored, in the
/// order the frames were sent, and each punch is stored once.
fn pipelined_log_frames_are_answered_in_order(io: &str) {
    const FRAMES: u64 = 40;
    const PER_FRAME: u64 = 5;
    let srv = Server::start(io);
    let (id, mut t) = registered_aiface(&srv, "AF-PIPE", json!({"timezone": "UTC"}));
    // The server's setup requests (log backfill, clock) are answered first.
    let hb = r#"{"cmd":"heartbeat","sn":"AF-PIPE"}"#;
    assert_eq!(
        field(&ask(&mut t, hb, "heartbeat"), "result").as_bool(),
        Some(true)
    );

    let sendlog = |i: u64| {
        let records: Vec<Value> = (0..PER_FRAME)
            .map(|k| {
                json!({"enrollid": i * PER_FRAME + k + 1, "time": "2026-06-12 09:15:30",
                       "mode": 1, "inout": 0, "event": 0})
            })
            .collect();
        enc(
            &json!({"cmd":"sendlog","sn":"AF-PIPE","count":PER_FRAME,"logindex":i,"record":records}),
        )
    };
    let mut expected = Vec::new();
    for i in 0..FRAMES {
        t.ws.write(tungstenite::Message::text(sendlog(i)))
            .expect("write");
        expected.push(format!("sendlog {i}"));
        if i % 10 == 9 {
            t.ws.write(tungstenite::Message::text(hb)).expect("write");
            expected.push("heartbeat".to_string());
        }
    }
    t.ws.write(tungstenite::Message::text(sendlog(3)))
        .expect("write");
    expected.push("sendlog 3".to_string());
    t.ws.flush().expect("one write");

    let mut answers = Vec::new();
    while answers.len() < expected.len() {
        let f = t.until("an answer", |f| f.contains("\"ret\":"), aiface_answer);
        let v = parse(f.as_bytes());
        assert_eq!(field(&v, "result").as_bool(), Some(true), "{f}");
        answers.push(match s(&v, "ret") {
            "sendlog" => format!("sendlog {}", u(&v, "logindex")),
            other => other.to_string(),
        });
    }
    assert_eq!(
        answers, expected,
        "answers in the order the frames were sent"
    );
    let punches = srv.list_all(&format!("/api/attendance?device_id={id}&limit=1000"));
    let mut users: Vec<u64> = punches.iter().map(|p| u(p, "enrollid")).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        (1..=FRAMES * PER_FRAME).collect::<Vec<_>>(),
        "each punch once"
    );
}

for_both_drivers!(
    pipelined_log_frames_are_answered_in_order,
    aiface_terminal,
    smackbio_terminal,
    terminals_connect_on_every_websocket_path,
    unknown_terminal_messages_get_a_generic_success,
    senduser_keeps_every_credential,
    access_answers_follow_the_device_settings
);
