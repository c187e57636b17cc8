//! ZKTeco ADMS ("iclock" push) terminals end to end against the real binary under both I/O
//! drivers (`uring::*` and `epoll::*`), driven by `Terminal`, a simulator written from the
//! protocol (`shared/protocols.md` §4.2): it handshakes, keeps its own upload pointer that moves
//! only on `OK: <n>`, uploads punches and its users, polls for commands, runs them on its own
//! user table and log, and answers them in `devicecmd`.
//!
//! Rules as in the other suites: every wait is bounded, state is polled, durations are never
//! asserted.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use fleetgate::client::{Client, ClientResponse};

for_both_drivers!(
    a_terminal_is_approved_handshakes_uploads_and_is_commanded,
    a_batch_resent_after_a_lost_answer_or_a_restart_is_stored_once,
    commands_are_kept_until_the_terminal_answers,
    photos_link_to_their_punches_in_either_order,
    users_and_operations_from_operlog,
    bad_requests_are_answered_in_plain_text,
);

/// A punch in the terminal's log: PIN, local time, status, verify code.
#[derive(Clone, Debug, PartialEq)]
struct Punch {
    pin: u64,
    time: String,
    status: u8,
    verify: u8,
}

fn punch(pin: u64, time: &str, status: u8) -> Punch {
    Punch {
        pin,
        time: time.to_string(),
        status,
        verify: 1,
    }
}

/// An ADMS terminal as the protocol describes it.
struct Terminal {
    /// The server's address and base URL (a terminal outlives a server restart).
    addr: String,
    url: String,
    sn: String,
    /// Path suffix: "" or ".aspx", as firmware differs.
    suffix: &'static str,
    log: Vec<Punch>,
    /// How many of `log` the server has confirmed (`OK: <n>`): the terminal's stamp.
    sent: usize,
    users: BTreeMap<u64, String>,
    rebooted: u32,
    /// Answers to commands not yet reported (`ID=…&Return=…&CMD=…`).
    answers: Vec<String>,
}

impl Terminal {
    fn new(srv: &Server, sn: &str) -> Terminal {
        Terminal {
            addr: srv.addr().to_string(),
            url: srv.url(),
            sn: sn.to_string(),
            suffix: "",
            log: Vec::new(),
            sent: 0,
            users: BTreeMap::new(),
            rebooted: 0,
            answers: Vec::new(),
        }
    }

    /// The server came back on another port (the tests' servers listen on port 0).
    fn follow(&mut self, srv: &Server) {
        self.addr = srv.addr().to_string();
        self.url = srv.url();
    }

    fn path(&self, endpoint: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("&{query}")
        };
        format!("/iclock/{endpoint}{}?SN={}{q}", self.suffix, pct(&self.sn))
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> ClientResponse {
        let r = Client::new(&self.url)
            .and_then(|c| c.request(method, path, body.map(|b| ("text/plain", b))))
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("text/plain"),
            "{method} {path}: Content-Type {ct:?}"
        );
        let date = r.header("date").unwrap_or("");
        assert!(
            jiff::fmt::rfc2822::parse(date).is_ok(),
            "{method} {path}: every answer carries an HTTP Date the terminal sets its clock from, got {date:?}"
        );
        r
    }

    /// `GET cdata?options=all`: the option block, as a map. Takes up `ATTLOGStamp` as where the
    /// server's records stop.
    fn handshake(&mut self) -> BTreeMap<String, String> {
        let r = self.request(
            "GET",
            &self.path("cdata", "options=all&pushver=2.4.1&language=69"),
            None,
        );
        assert_eq!(r.status, 200, "handshake: {}", r.text());
        let text = r.text();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(format!("GET OPTION FROM: {}", self.sn).as_str()),
            "{text}"
        );
        let opts: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for k in [
            "ATTLOGStamp",
            "Delay",
            "ErrorDelay",
            "TransFlag",
            "Realtime",
        ] {
            assert!(opts.contains_key(k), "option {k} in {text}");
        }
        if let Some(n) = opts
            .get("ATTLOGStamp")
            .and_then(|s| s.parse::<usize>().ok())
        {
            self.sent = n.min(self.log.len());
        } else {
            self.sent = 0;
        }
        opts
    }

    fn attlog_body(punches: &[Punch]) -> String {
        // CRLF, blank trailing fields, as terminals write them.
        punches
            .iter()
            .map(|p| {
                format!(
                    "{}\t{}\t{}\t{}\t0\t0\t\r\n",
                    p.pin, p.time, p.status, p.verify
                )
            })
            .collect()
    }

    /// Uploads what the server has not confirmed; the pointer moves only on `OK: <n>`.
    fn upload(&mut self) -> ClientResponse {
        let batch = &self.log[self.sent..];
        let stamp = self.log.len();
        let body = Self::attlog_body(batch);
        let r = self.request(
            "POST",
            &self.path("cdata", &format!("table=ATTLOG&Stamp={stamp}")),
            Some(body.as_bytes()),
        );
        if r.status == 200 {
            assert_eq!(
                r.text(),
                format!("OK: {}\r\n", batch.len()),
                "upload answer"
            );
            self.sent = self.log.len();
        }
        r
    }

    /// Sends the next upload and drops the connection without reading the answer: the answer
    /// is lost, as when the terminal loses power or the network drops mid-request.
    fn upload_and_vanish(&self) {
        let body = Self::attlog_body(&self.log[self.sent..]);
        let path = self.path("cdata", &format!("table=ATTLOG&Stamp={}", self.log.len()));
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: iClock Proxy/1.09\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        drop(s);
    }

    /// `GET getrequest`: the commands handed out, as `(id, line)`.
    fn poll(&self) -> Vec<(String, String)> {
        let r = self.request(
            "GET",
            &self.path("getrequest", "INFO=Ver%206.60,3,1,5,127.0.0.1"),
            None,
        );
        assert_eq!(r.status, 200, "poll: {}", r.text());
        let text = r.text();
        if text == "OK\r\n" {
            return Vec::new();
        }
        text.lines()
            .map(|l| {
                let rest = l
                    .strip_prefix("C:")
                    .unwrap_or_else(|| panic!("command line {l:?}"));
                let (id, line) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("command line {l:?}"));
                (id.to_string(), line.to_string())
            })
            .collect()
    }

    /// Runs a command on the terminal's own state, as firmware would; returns its `Return`.
    fn run(&mut self, line: &str) -> i64 {
        let kv = |rest: &str| -> BTreeMap<String, String> {
            rest.split('\t')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        if line == "REBOOT" {
            self.rebooted += 1;
            0
        } else if let Some(rest) = line.strip_prefix("DATA UPDATE USERINFO ") {
            let f = kv(rest);
            let pin = f["PIN"].parse().expect("PIN");
            self.users.insert(pin, f["Name"].clone());
            0
        } else if let Some(rest) = line.strip_prefix("DATA DELETE USERINFO ") {
            let pin = kv(rest)["PIN"].parse().expect("PIN");
            self.users.remove(&pin);
            0
        } else {
            -1004
        }
    }

    /// Polls, runs what it is handed and reports every answer in one `devicecmd`.
    fn poll_and_run(&mut self) -> Vec<(String, String)> {
        let handed = self.poll();
        for (id, line) in &handed {
            let code = self.run(line);
            let cmd = line.split(' ').next().unwrap_or("");
            self.answers
                .push(format!("ID={id}&Return={code}&CMD={cmd}"));
        }
        if !self.answers.is_empty() {
            let body = self.answers.join("\n") + "\n";
            let r = self.request("POST", &self.path("devicecmd", ""), Some(body.as_bytes()));
            assert_eq!(
                (r.status, r.text()),
                (200, "OK\r\n".to_string()),
                "devicecmd"
            );
            self.answers.clear();
        }
        handed
    }
}

fn create_zk_device(srv: &Server, serial: &str, tz: &str) -> String {
    let body = json!({"name": "gate", "protocol": "zkteco", "serial": serial, "settings": {"timezone": tz}});
    let r = srv.post("/api/devices", &body);
    assert_eq!(r.status, 201, "POST /api/devices: {}", r.text());
    let v = r.json();
    assert_eq!(s(&v, "protocol"), "zkteco", "{}", enc(&v));
    s(&v, "device_id").to_string()
}

fn attendance(srv: &Server, device_id: &str) -> Vec<Value> {
    srv.list_all(&format!("/api/attendance?limit=1000&device_id={device_id}"))
}

/// (enrollid, local_time, utc_time) of every punch stored, sorted.
fn stored(srv: &Server, device_id: &str) -> Vec<(u64, String, String)> {
    let mut v: Vec<_> = attendance(srv, device_id)
        .iter()
        .map(|it| {
            (
                u(it, "enrollid"),
                s(it, "local_time").to_string(),
                s(it, "utc_time").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn a_terminal_is_approved_handshakes_uploads_and_is_commanded(io: &str) {
    let srv = Server::start(io);
    let mut t = Terminal::new(&srv, "ZKAPPROVE1");
    t.suffix = ".aspx";

    // Unknown: refused (the terminal keeps its records) and listed as pending, as ZKTeco.
    let r = t.request("GET", &t.path("cdata", "options=all"), None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .starts_with("ERROR: device ZKAPPROVE1 is not approved yet"),
        "{}",
        r.text()
    );
    let pending = srv.get("/api/pending-devices").json();
    let entry = arr(&pending, "items")
        .iter()
        .find(|p| opt_s(p, "serial") == Some("ZKAPPROVE1"))
        .cloned()
        .unwrap_or_else(|| panic!("pending: {}", enc(&pending)));
    assert_eq!(s(&entry, "protocol"), "zkteco", "{}", enc(&entry));
    let r = srv.post(
        "/api/pending-devices/ZKAPPROVE1/approve",
        &json!({"name": "front door", "settings": {"timezone": "Asia/Tokyo"}}),
    );
    assert_eq!(r.status, 201, "approve: {}", r.text());
    let id = s(&r.json(), "device_id").to_string();

    // The handshake: Tokyo is UTC+9; nothing stored yet.
    let opts = t.handshake();
    assert_eq!(opts.get("TimeZone").map(String::as_str), Some("9"));
    assert_eq!(opts.get("ATTLOGStamp").map(String::as_str), Some("None"));
    srv.wait_status(&id, "online");

    // Punches, stored with the right UTC time, status and verify code.
    t.log = vec![
        punch(1, "2026-06-12 09:00:05", 0),
        punch(2, "2026-06-12 09:01:10", 0),
        punch(1, "2026-06-12 18:30:00", 1),
    ];
    let r = t.upload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        stored(&srv, &id),
        [
            (
                1,
                "2026-06-12 09:00:05".into(),
                "2026-06-12T00:00:05.000Z".into()
            ),
            (
                1,
                "2026-06-12 18:30:00".into(),
                "2026-06-12T09:30:00.000Z".into()
            ),
            (
                2,
                "2026-06-12 09:01:10".into(),
                "2026-06-12T00:01:10.000Z".into()
            ),
        ]
    );
    let out = attendance(&srv, &id)
        .into_iter()
        .find(|it| s(it, "local_time") == "2026-06-12 18:30:00")
        .expect("the check-out");
    let fields = field(&out, "fields");
    assert_eq!(u(fields, "inout"), 1, "{}", enc(&out));
    assert_eq!(u(fields, "verifymode"), 1, "{}", enc(&out));
    assert_eq!(s(&out, "serial"), "ZKAPPROVE1");

    // The next handshake tells the terminal where the server's records stop.
    let opts = t.handshake();
    assert_eq!(opts.get("ATTLOGStamp").map(String::as_str), Some("3"));
    assert_eq!(t.sent, 3);

    // A command round trip: queued through the API, handed out on a poll, run, answered; its
    // outcome pushed to the admins.
    let mut admin = srv.admin_session();
    let add = srv.send_command(&id, "set_user", json!({"enrollid": 7, "name": "Ann Lee"}));
    let boot = srv.send_command(&id, "reboot", json!({}));
    let raw = srv.send_command(&id, "raw", json!({"command": "SET OPTION Nonsense=1"}));
    let handed = t.poll_and_run();
    let lines: Vec<&str> = handed.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "DATA UPDATE USERINFO PIN=7\tName=Ann Lee\tPri=0\tPasswd=\tCard=\tGrp=1",
            "REBOOT",
            "SET OPTION Nonsense=1"
        ],
        "commands in the order they were queued"
    );
    assert_eq!(t.users.get(&7).map(String::as_str), Some("Ann Lee"));
    let c = srv.wait_command_status(&id, &add, "acked");
    assert_eq!(enc(field(&c, "result")), r#"{"return":0,"cmd":"DATA"}"#);
    srv.wait_command_status(&id, &boot, "acked");
    let c = srv.wait_command_status(&id, &raw, "failed");
    assert_eq!(enc(field(&c, "result")), r#"{"return":-1004,"cmd":"SET"}"#);
    assert_eq!(t.rebooted, 1);
    assert!(
        t.poll_and_run().is_empty(),
        "answered commands are not handed out again"
    );
    let mut pushed = BTreeMap::new();
    while pushed.len() < 3 {
        let r = admin.recv_type("command_result", Duration::from_secs(20));
        pushed.insert(s(&r, "command_id").to_string(), s(&r, "status").to_string());
    }
    assert_eq!(pushed[&add], "acked");
    assert_eq!(pushed[&boot], "acked");
    assert_eq!(pushed[&raw], "failed");

    // A command the terminal cannot take is the operator's 400, not a terminal's failure.
    let r = srv.post(
        &format!("/api/devices/{id}/commands"),
        &json!({"command": "open_door", "payload": {}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("do not know `open_door`"), "{}", r.text());
    let r = srv.post(
        &format!("/api/devices/{id}/commands"),
        &json!({"command": "clear_log", "payload": {}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // What the terminal says of itself is kept.
    let dev = srv.get(&format!("/api/devices/{id}")).json();
    let info = enc(field(&dev, "info"));
    assert!(
        info.contains("2.4.1") && info.contains("Ver 6.60"),
        "{}",
        enc(&dev)
    );
}

fn a_batch_resent_after_a_lost_answer_or_a_restart_is_stored_once(io: &str) {
    let mut srv = Server::start(io);
    let id = create_zk_device(&srv, "ZKRESEND1", "Europe/Berlin");
    let mut t = Terminal::new(&srv, "ZKRESEND1");
    t.handshake();
    t.log = (0..40)
        .map(|i| {
            punch(
                100 + i % 7,
                &format!("2026-06-12 08:{:02}:00", i),
                (i % 2) as u8,
            )
        })
        .collect();
    // The answer is lost: the terminal keeps its pointer and sends the same batch again.
    t.upload_and_vanish();
    let r = t.upload();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stored(&srv, &id).len(), 40);

    // More punches, then the server dies right after storing them (kill -9) before the
    // terminal reads its answer; the terminal restarts too, handshakes and sends from its stamp.
    t.log
        .extend((40..60).map(|i| punch(200 + i, &format!("2026-06-12 09:{:02}:30", i - 40), 0)));
    t.upload_and_vanish();
    wait_until(SOON, "the vanished batch stored", || {
        stored(&srv, &id).len() == 60
    });
    srv.kill9();
    srv.start_again();
    t.follow(&srv);
    let opts = t.handshake();
    assert_eq!(
        opts.get("ATTLOGStamp").map(String::as_str),
        Some("60"),
        "the stamp rode with the batch"
    );
    // A terminal that did not take the stamp sends everything again.
    t.sent = 0;
    let r = t.upload();
    assert_eq!(r.status, 200, "{}", r.text());
    let all = stored(&srv, &id);
    assert_eq!(all.len(), 60, "every punch stored once");
    let first = all
        .iter()
        .find(|p| p.1 == "2026-06-12 08:00:00")
        .expect("the first punch");
    assert_eq!(
        first.2, "2026-06-12T06:00:00.000Z",
        "Berlin is UTC+2 in June"
    );
}

fn commands_are_kept_until_the_terminal_answers(io: &str) {
    let mut srv = Server::start(io);
    let id = create_zk_device(&srv, "ZKKEEP1", "UTC");
    let mut t = Terminal::new(&srv, "ZKKEEP1");
    t.handshake();
    let del = srv.send_command(&id, "delete_user", json!({"enrollid": 3}));
    // Handed out, but the terminal never answers (its report is lost).
    let handed = t.poll();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].1, "DATA DELETE USERINFO PIN=3");
    srv.wait_command_status(&id, &del, "sent");
    assert!(
        t.poll().is_empty(),
        "not handed out again before its answer is overdue"
    );

    // After a restart, a command still unanswered is handed out again, with the same id.
    srv.kill9();
    srv.start_again();
    t.follow(&srv);
    t.users.insert(3, "Old".into());
    let again = t.poll_and_run();
    assert_eq!(again, handed, "the same command, the same id");
    assert!(t.users.is_empty());
    srv.wait_command_status(&id, &del, "acked");
    // A repeated answer (batched firmware resends) changes nothing.
    let body = format!("ID={}&Return=-1002&CMD=DATA\n", handed[0].0);
    let r = t.request("POST", &t.path("devicecmd", ""), Some(body.as_bytes()));
    assert_eq!(r.status, 200);
    let c = srv.wait_command_status(&id, &del, "acked");
    assert_eq!(enc(field(&c, "result")), r#"{"return":0,"cmd":"DATA"}"#);
}

fn photos_link_to_their_punches_in_either_order(io: &str) {
    let srv = Server::start(io);
    let id = create_zk_device(&srv, "ZKPHOTO1", "Asia/Tokyo");
    let mut t = Terminal::new(&srv, "ZKPHOTO1");
    t.handshake();
    let photo = |t: &Terminal, name: &str, bytes: &[u8]| {
        let mut body = format!(
            "PIN={name}\nSN=ZKPHOTO1\nsize={}\nCMD=uploadphoto\0",
            bytes.len()
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        let r = t.request(
            "POST",
            &t.path("cdata", "table=ATTPHOTO&Stamp=1"),
            Some(&body),
        );
        assert_eq!((r.status, r.text()), (200, "OK: 1\r\n".to_string()));
    };
    let after = random_bytes(2000);
    let before = random_bytes(3000);
    // Punch first, then its photo.
    t.log = vec![punch(5, "2026-06-12 09:15:30", 0)];
    assert_eq!(t.upload().status, 200);
    photo(&t, "20260612091530-5.jpg", &after);
    // Photo first, then its punch.
    photo(&t, "20260612101500-6.jpg", &before);
    t.log.push(punch(6, "2026-06-12 10:15:00", 0));
    assert_eq!(t.upload().status, 200);
    for (local, bytes) in [
        ("2026-06-12 09:15:30", &after),
        ("2026-06-12 10:15:00", &before),
    ] {
        let it = attendance(&srv, &id)
            .into_iter()
            .find(|it| s(it, "local_time") == local)
            .unwrap_or_else(|| panic!("punch at {local}"));
        let url = s(&it, "photo_url").to_string();
        assert_eq!(url, format!("/api/attendance/{}/photo", s(&it, "id")));
        let r = srv.get(&url);
        assert_eq!(r.status, 200);
        assert!(&r.body == bytes, "the photo served is the one uploaded");
    }
    // A photo whose name this server cannot read is kept as an event, not refused for ever.
    photo(&t, "garbage.jpg", b"xx");
    let ev = srv.wait_event(&id, "zkteco_unread");
    assert!(enc(&ev[0]).contains("garbage.jpg"), "{}", enc(&ev[0]));
}

fn users_and_operations_from_operlog(io: &str) {
    let srv = Server::start(io);
    let id = create_zk_device(&srv, "ZKOPER1", "UTC");
    let t = Terminal::new(&srv, "ZKOPER1");
    // PIN 9 has a person already: the terminal's name for it does not replace the operators'.
    let r = srv.post(
        "/api/people",
        &json!({"pin": 9, "name": "Cy Operator", "external_id": "EMP-9"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let body = "USER PIN=7\tName=Ann Lee\tPri=14\tPasswd=1234\tCard=99887766\tGrp=1\tTZ=0000000100000000\r\n\
                FP PIN=7\tFID=3\tSize=8\tValid=1\tTMP=QUJDRA==\r\n\
                USER PIN=8\tName=Bo\tPri=0\r\n\
                USER PIN=9\tName=cy\tPri=0\r\n\
                OPLOG 4\t0\t2026-06-12 09:00:00\t0\t0\t0\t0\r\n\
                SOMETHING new\r\n";
    for _ in 0..2 {
        let r = t.request(
            "POST",
            &t.path("cdata", "table=OPERLOG&Stamp=77"),
            Some(body.as_bytes()),
        );
        assert_eq!((r.status, r.text()), (200, "OK: 6\r\n".to_string()));
    }
    // The terminal's users are the registry's people where the PIN had none.
    let ann = srv.get("/api/people/7").json();
    assert_eq!(
        (s(&ann, "name"), s(&ann, "privilege"), s(&ann, "card")),
        ("Ann Lee", "admin", "99887766"),
        "{}",
        enc(&ann)
    );
    assert_eq!(s(&arr(&ann, "enrolled_on")[0], "device_id"), id);
    assert_eq!(s(&srv.get("/api/people/8").json(), "privilege"), "user");
    let cy = srv.get("/api/people/9").json();
    assert_eq!(
        (s(&cy, "name"), s(&cy, "external_id")),
        ("Cy Operator", "EMP-9")
    );
    let users = srv.list_all(&format!("/api/devices/{id}/users?limit=100"));
    assert_eq!(users.len(), 3, "{users:?}");
    assert_eq!(u(&users[0], "enrollid"), 7);
    assert_eq!(s(&users[0], "name"), "Ann Lee");
    assert_eq!(u(&users[0], "admin"), 14);
    let kinds: Vec<&str> = arr(&users[0], "credentials")
        .iter()
        .map(|c| s(c, "type"))
        .collect();
    assert_eq!(
        kinds,
        ["fingerprint", "password", "card"],
        "{}",
        enc(&users[0])
    );
    assert_eq!(s(&users[1], "name"), "Bo");
    // Sent twice, each line kept once.
    let ops = srv.wait_event(&id, "terminal_operation");
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(s(field(&ops[0], "payload"), "code"), "4");
    let unread = srv.wait_event(&id, "zkteco_unread");
    assert_eq!(unread.len(), 1, "{unread:?}");
    assert_eq!(s(field(&unread[0], "payload"), "line"), "SOMETHING new");
    let mut t = t;
    let opts = t.handshake();
    assert_eq!(opts.get("OPERLOGStamp").map(String::as_str), Some("77"));
}

fn bad_requests_are_answered_in_plain_text(io: &str) {
    let srv = Server::start(io);
    create_zk_device(&srv, "ZKBAD1", "UTC");
    let t = Terminal::new(&srv, "ZKBAD1");
    for (method, path, status, says) in [
        (
            "GET",
            "/iclock/cdata?options=all".to_string(),
            400,
            "ERROR: SN",
        ),
        (
            "GET",
            "/iclock/registry?SN=ZKBAD1".to_string(),
            404,
            "ERROR: no such ADMS endpoint",
        ),
        (
            "POST",
            t.path("cdata", ""),
            400,
            "ERROR: an upload names its table",
        ),
        (
            "POST",
            t.path("getrequest", ""),
            405,
            "ERROR: this endpoint takes Get",
        ),
        ("GET", t.path("ping", ""), 200, "OK"),
    ] {
        let r = t.request(
            method,
            &path,
            if method == "POST" { Some(b"") } else { None },
        );
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(r.text().starts_with(says), "{method} {path}: {}", r.text());
    }
    // A device bound to other networks is refused from this one.
    let id = create_zk_device(&srv, "ZKBAD2", "UTC");
    let r = srv.patch(
        &format!("/api/devices/{id}"),
        &json!({"settings": {"allowed_sources": "10.0.0.0/8"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t2 = Terminal::new(&srv, "ZKBAD2");
    let r = t2.request("GET", &t2.path("getrequest", ""), None);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        srv.listed_status(&id),
        "offline",
        "a refused request does not keep it online"
    );
}
