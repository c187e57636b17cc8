//! The people registry end to end against the real binary (both I/O drivers): the person behind
//! a PIN through `/api/people`, punches that name their person (JSON and CSV), the terminals that
//! report a person enrolled, and a sync that reaches a simulated AiFace, SmackBio and ZKTeco
//! terminal as each dialect's own user command.
//!
//! Rules as in the other suites: every wait is bounded, state is polled, durations are never
//! asserted.

mod common;
use common::term::{Term, aiface_answer, tag};
use common::*;

use fleetgate::client::Client;

for_both_drivers!(
    people_are_kept_validated_and_named_on_their_punches,
    a_sync_reaches_each_dialect_as_its_user_command,
);

fn create_device(srv: &Server, protocol: &str, serial: &str) -> String {
    let r = srv.post(
        "/api/devices",
        &json!({"name": serial, "protocol": protocol, "serial": serial, "settings": {"timezone": "UTC"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

/// A ZKTeco terminal's plain-text request; asserts 200 and returns the body.
fn adms(srv: &Server, method: &str, path: &str, body: &str) -> String {
    let r = Client::new(&srv.url())
        .and_then(|c| {
            c.request(
                method,
                path,
                (method == "POST").then_some(("text/plain", body.as_bytes())),
            )
        })
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.text()
}

fn people_are_kept_validated_and_named_on_their_punches(io: &str) {
    let srv = Server::start(io);
    let ann = json!({"pin": 7, "name": "Ann Lee", "card": "99887766", "privilege": "admin",
                     "department": "Ops", "external_id": "EMP-0007"});
    let r = srv.post("/api/people", &ann);
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json();
    assert_eq!(u(&p, "pin"), 7);
    assert_eq!(s(&p, "privilege"), "admin");
    assert_eq!(s(&p, "external_id"), "EMP-0007");
    assert!(arr(&p, "enrolled_on").is_empty());
    assert_rfc3339(s(&p, "created_at"));

    // Every bad input is a 400 naming the field; a PIN taken is a 409.
    for (body, says) in [
        (json!({"name": "x"}), "`pin` is required"),
        (json!({"pin": 0, "name": "x"}), "`pin` is required"),
        (json!({"pin": 99999999, "name": "x"}), "`pin` is required"),
        (json!({"pin": "8", "name": "x"}), "`pin` is required"),
        (json!({"pin": 8}), "`name` is required"),
        (json!({"pin": 8, "name": "a\tb"}), "tabs or line breaks"),
        (
            json!({"pin": 8, "name": "x", "privilege": "root"}),
            "`privilege` must be",
        ),
        (json!({"pin": 8, "name": "x", "card": ""}), "`card` must be"),
        (
            json!({"pin": 8, "name": "x", "shoe_size": 44}),
            "unknown field `shoe_size`",
        ),
    ] {
        let r = srv.post("/api/people", &body);
        assert_eq!(r.status, 400, "{}: {}", enc(&body), r.text());
        assert!(r.text().contains(says), "{}: {}", enc(&body), r.text());
    }
    let r = srv.post("/api/people", &ann);
    assert_eq!(r.status, 409, "{}", r.text());

    // Listed in PIN order, a page at a time.
    for (pin, name) in [(3, "Bo"), (12, "Cy")] {
        let r = srv.post("/api/people", &json!({"pin": pin, "name": name}));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let first = srv.get("/api/people?limit=2").json();
    let pins: Vec<u64> = arr(&first, "items").iter().map(|p| u(p, "pin")).collect();
    assert_eq!(pins, [3, 7]);
    let next = s(&first, "next_cursor").to_string();
    let rest = srv
        .get(&format!("/api/people?limit=2&cursor={next}"))
        .json();
    let pins: Vec<u64> = arr(&rest, "items").iter().map(|p| u(p, "pin")).collect();
    assert_eq!(pins, [12]);
    assert!(field(&rest, "next_cursor").is_null());

    // PATCH changes what is given; null clears an optional field.
    let r = srv.patch(
        "/api/people/7",
        &json!({"department": null, "name": "Ann B. Lee"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(field(&r.json(), "department").is_null());
    assert_eq!(s(&r.json(), "name"), "Ann B. Lee");
    assert_eq!(
        srv.patch("/api/people/99", &json!({"name": "x"})).status,
        404
    );
    assert_eq!(srv.delete("/api/people/12").status, 200);
    assert_eq!(srv.get("/api/people/12").status, 404);

    // A viewer reads but does not write.
    let r = srv.post("/api/tokens", &json!({"name": "hr", "role": "viewer"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let viewer = Client::new(&srv.url())
        .unwrap()
        .with_token(s(&r.json(), "token"));
    assert_eq!(viewer.get("/api/people/7").unwrap().status, 200);
    let body = enc(&json!({"pin": 20, "name": "x"}));
    assert_eq!(
        viewer
            .post_json("/api/people", body.as_bytes())
            .unwrap()
            .status,
        403
    );

    // A ZKTeco terminal reports Ann enrolled and punches for her and for a PIN without a person.
    let zk = create_device(&srv, "zkteco", "ZKPEOPLE1");
    let operlog = "USER PIN=7\tName=Ann\tPri=0\r\n";
    assert_eq!(
        adms(
            &srv,
            "POST",
            "/iclock/cdata?SN=ZKPEOPLE1&table=OPERLOG&Stamp=1",
            operlog
        ),
        "OK: 1\r\n"
    );
    let attlog = "7\t2026-06-12 09:00:00\t0\t1\r\n40\t2026-06-12 09:01:00\t0\t1\r\n";
    assert_eq!(
        adms(
            &srv,
            "POST",
            "/iclock/cdata?SN=ZKPEOPLE1&table=ATTLOG&Stamp=2",
            attlog
        ),
        "OK: 2\r\n"
    );
    let p = srv.get("/api/people/7").json();
    let on = arr(&p, "enrolled_on");
    assert_eq!(on.len(), 1, "{}", enc(&p));
    assert_eq!(s(&on[0], "device_id"), zk);
    assert_eq!(s(&on[0], "name"), "ZKPEOPLE1");

    let punches = srv.list_all(&format!("/api/attendance?device_id={zk}"));
    let of = |pin: u64| {
        punches
            .iter()
            .find(|p| u(p, "enrollid") == pin)
            .unwrap_or_else(|| panic!("punch of {pin}: {punches:?}"))
    };
    let person = field(of(7), "person");
    assert_eq!(
        s(person, "name"),
        "Ann B. Lee",
        "the person as they are now"
    );
    assert_eq!(s(person, "external_id"), "EMP-0007");
    assert!(of(40).get("person").is_none(), "{}", enc(of(40)));

    let csv = Client::new(&srv.url())
        .unwrap()
        .with_token(srv.admin_token())
        .get(&format!("/api/attendance.csv?device_id={zk}"))
        .unwrap()
        .text();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.ends_with(",photo_url,person_name,person_external_id")),
        "{csv}"
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter().any(|r| r.ends_with(",Ann B. Lee,EMP-0007")),
        "{csv}"
    );
    assert!(
        rows.iter().any(|r| r.contains(",40,") && r.ends_with(",,")),
        "{csv}"
    );
}

fn a_sync_reaches_each_dialect_as_its_user_command(io: &str) {
    let srv = Server::start(io);
    let r = srv.post(
        "/api/people",
        &json!({"pin": 7, "name": "Ann Lee", "card": "99887766", "privilege": "admin"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let af = create_device(&srv, "aiface", "AF-PEOPLE");
    let sb = create_device(&srv, "smackbio", "SB-PEOPLE");
    let zk = create_device(&srv, "zkteco", "ZK-PEOPLE");
    let generic = srv.create_device("sensor");

    // A device whose dialect has no user commands refuses the whole sync: nothing is queued.
    let r = srv.post(
        "/api/people/7/sync",
        &json!({"devices": [af.as_str(), generic.id.as_str()]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("has no user commands"), "{}", r.text());
    assert!(srv.commands(&af).is_empty());
    for (body, says) in [
        (json!({}), "`devices` is required"),
        (json!({"devices": ["nope"]}), "`devices` is required"),
        (
            json!({"devices": ["7d3c8a5e-0f4b-4b6e-9a51-2f1e3c4d5b6a"]}),
            "no device",
        ),
        (
            json!({"devices": [af.as_str()], "remove": "yes"}),
            "`remove`",
        ),
    ] {
        let r = srv.post("/api/people/7/sync", &body);
        assert_eq!(r.status, 400, "{}: {}", enc(&body), r.text());
        assert!(r.text().contains(says), "{}: {}", enc(&body), r.text());
    }
    assert_eq!(
        srv.post("/api/people/8/sync", &json!({"devices": [af.as_str()]}))
            .status,
        404
    );

    // The terminals are online before the sync.
    let mut aiface = Term::connect(srv.addr());
    aiface.send(r#"{"cmd":"reg","sn":"AF-PEOPLE","devinfo":{"modelname":"AI07F"}}"#);
    aiface.until("ret reg", |f| f.contains("\"ret\":\"reg\""), aiface_answer);
    let mut smack = Term::connect(srv.addr());
    smack.send("<Message><Request>Register</Request><TerminalType>M82</TerminalType><DeviceSerialNo>SB-PEOPLE</DeviceSerialNo></Message>");
    let reg = smack.until(
        "Register",
        |f| tag(f, "Response") == Some("Register"),
        sb_answer,
    );
    let token = tag(&reg, "Token").expect("token").to_string();
    smack.send(&format!("<Message><Request>Login</Request><DeviceSerialNo>SB-PEOPLE</DeviceSerialNo><Token>{token}</Token></Message>"));
    smack.until("Login", |f| tag(f, "Response") == Some("Login"), sb_answer);
    srv.wait_status(&af, "online");
    srv.wait_status(&sb, "online");

    let r = srv.post(
        "/api/people/7/sync",
        &json!({"devices": [af.as_str(), sb.as_str(), zk.as_str()]}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let queued: Vec<(String, String)> = arr(&r.json(), "commands")
        .iter()
        .map(|c| (s(c, "device_id").to_string(), s(c, "command").to_string()))
        .collect();
    assert_eq!(
        queued,
        [
            (af.clone(), "setusername".to_string()),
            (af.clone(), "set_user".to_string()),
            (sb.clone(), "set_user".to_string()),
            (zk.clone(), "set_user".to_string()),
        ]
    );

    // AiFace: the name, then the card with the admin level.
    let named = aiface.until(
        "setusername",
        |f| f.contains("\"cmd\":\"setusername\""),
        aiface_answer,
    );
    let v = parse(named.as_bytes());
    let rec = &arr(&v, "record")[0];
    assert_eq!((u(rec, "enrollid"), s(rec, "name")), (7, "Ann Lee"));
    aiface.send(r#"{"ret":"setusername","result":true}"#);
    let card = aiface.until(
        "setuserinfo",
        |f| f.contains("\"cmd\":\"setuserinfo\""),
        aiface_answer,
    );
    let v = parse(card.as_bytes());
    assert_eq!(
        (u(&v, "enrollid"), u(&v, "backupnum"), u(&v, "admin")),
        (7, 11, 2)
    );
    assert_eq!(s(&v, "record"), "99887766");
    aiface.send(r#"{"ret":"setuserinfo","result":true}"#);

    // SmackBio: one SetUserData with the privilege and the card.
    let set = smack.until(
        "SetUserData",
        |f| tag(f, "Request") == Some("SetUserData"),
        sb_answer,
    );
    assert_eq!(tag(&set, "UserID"), Some("7"), "{set}");
    assert_eq!(tag(&set, "Type"), Some("Set"), "{set}");
    assert_eq!(tag(&set, "Privilege"), Some("Administrator"), "{set}");
    smack.send("<Message><Response>SetUserData</Response><Result>OK</Result></Message>");

    // ZKTeco: a DATA UPDATE USERINFO line on the next poll.
    let poll = adms(&srv, "GET", "/iclock/getrequest?SN=ZK-PEOPLE", "");
    let line = poll.trim_end();
    let (id, cmd) = line
        .strip_prefix("C:")
        .and_then(|l| l.split_once(':'))
        .unwrap_or_else(|| panic!("a command line: {poll:?}"));
    assert_eq!(
        cmd,
        "DATA UPDATE USERINFO PIN=7\tName=Ann Lee\tPri=14\tPasswd=\tCard=99887766\tGrp=1"
    );
    assert_eq!(
        adms(
            &srv,
            "POST",
            "/iclock/devicecmd?SN=ZK-PEOPLE",
            &format!("ID={id}&Return=0&CMD=DATA\n")
        ),
        "OK\r\n"
    );
    for dev in [&af, &sb, &zk] {
        wait_until(SOON, "every sync command acked", || {
            srv.commands(dev).iter().all(|c| s(c, "status") == "acked")
        });
    }

    // Removal: each dialect's delete.
    let r = srv.post(
        "/api/people/7/sync",
        &json!({"devices": [af.as_str(), sb.as_str(), zk.as_str()], "remove": true}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let del = aiface.until(
        "deleteuser",
        |f| f.contains("\"cmd\":\"deleteuser\""),
        aiface_answer,
    );
    assert_eq!(u(&parse(del.as_bytes()), "enrollid"), 7);
    let del = smack.until(
        "SetUserData Delete",
        |f| tag(f, "Request") == Some("SetUserData") && tag(f, "Type") == Some("Delete"),
        sb_answer,
    );
    assert_eq!(tag(&del, "UserID"), Some("7"));
    let poll = adms(&srv, "GET", "/iclock/getrequest?SN=ZK-PEOPLE", "");
    assert!(
        poll.ends_with(":DATA DELETE USERINFO PIN=7\r\n"),
        "{poll:?}"
    );
}

/// What a SmackBio terminal answers to the server's setup requests: every request succeeds, and
/// the log backfill finds nothing.
fn sb_answer(f: &str) -> Option<String> {
    match tag(f, "Request")? {
        "GetFirstGlog" => {
            Some("<Message><Response>GetFirstGlog</Response><Result>Fail</Result></Message>".into())
        }
        "SetUserData" => None,
        name => Some(format!(
            "<Message><Response>{name}</Response><Result>OK</Result></Message>"
        )),
    }
}
