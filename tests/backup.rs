//! Backups and restores as an operator runs them: `POST /api/backup` on a server under load,
//! `fleetgate backup` through the server and from a stopped server's data directory, and
//! `fleetgate restore`, each restored directory then served by a new server.

mod common;

use common::*;
use fleetgate::client::Client;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// `fleetgate ARGS` with none of the caller's fleetgate variables, and `env` added.
fn fleetgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.args(args)
        .env_remove("FLEETGATE_ADMIN_TOKEN")
        .env_remove("FLEETGATE_SERVER")
        .env_remove("FLEETGATE_DATA_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run fleetgate")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a run that must fail with exit status 1.
fn refused(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a refusal; stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn restore_into(backup: &Path, data_dir: &Path) {
    let out = ok(&fleetgate(
        &[
            "restore",
            "--from",
            arg(backup),
            "--data-dir",
            arg(data_dir),
        ],
        &[],
    ));
    assert!(out.contains("restored the backup taken"), "{out}");
}

/// A device that keeps sending telemetry with msg_ids, a window of them in flight, and records
/// every seq the server acknowledged, in the order the acks came.
struct Load {
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

const WINDOW: usize = 16;

fn telemetry_frame(seq: u64) -> String {
    enc(&json!({"type":"telemetry","msg_id": format!("b{seq}"),"payload":{"seq": seq}}))
}

impl Load {
    fn start(addr: &str, dev: &Device) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut ws = Ws::connect(addr);
        ws.register(dev);
        let thread = {
            let (acked, stop) = (acked.clone(), stop.clone());
            thread::spawn(move || {
                let (mut next, mut in_flight) = (0u64, 0usize);
                while !stop.load(Ordering::Relaxed) || in_flight > 0 {
                    while !stop.load(Ordering::Relaxed) && in_flight < WINDOW {
                        ws.send_text(&telemetry_frame(next));
                        next += 1;
                        in_flight += 1;
                    }
                    let ack = ws.recv_type("ack", SOON);
                    let seq = s(&ack, "msg_id")[1..].parse().expect("b<seq>");
                    acked.lock().expect("acked").push(seq);
                    in_flight -= 1;
                }
                ws.close();
            })
        };
        Load {
            acked,
            stop,
            thread,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().expect("acked").clone()
    }

    fn wait_for(&self, n: usize, what: &str) {
        wait_until(SOON, what, || self.acked.lock().expect("acked").len() >= n);
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load's device failed");
        self.acked.lock().expect("acked").clone()
    }
}

/// The seqs a device's stored telemetry holds, each once.
fn stored_seqs(srv: &Server, dev: &Device) -> std::collections::BTreeSet<u64> {
    let items = srv.telemetry(&dev.id);
    let seqs: Vec<u64> = items
        .iter()
        .map(|t| u(field(t, "payload"), "seq"))
        .collect();
    let unique = set(seqs.iter().copied());
    assert_eq!(unique.len(), seqs.len(), "a msg_id stored twice");
    unique.into_iter().collect()
}

fn device_names(srv: &Server) -> Vec<(String, String)> {
    let mut d: Vec<_> = srv
        .list_all("/api/devices?limit=100")
        .iter()
        .map(|d| (s(d, "device_id").to_string(), s(d, "name").to_string()))
        .collect();
    d.sort();
    d
}

#[test]
fn a_backup_under_load_restores_every_acked_record_and_every_credential() {
    let src = Server::start_own_token(DRIVERS[0], |_| {});
    let r = src.post(
        "/api/users",
        &json!({"username":"ann","password":"ann-password-1","role":"viewer"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = src.post("/api/tokens", &json!({"name":"ci","role":"admin"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let api_token = s(&r.json(), "token").to_string();
    let dev = src.create_device("loaded");
    let quiet = src.create_device("quiet");

    let load = Load::start(src.addr(), &dev);
    load.wait_for(300, "300 acks before the backup");
    let acked_before = load.acked();
    let target = src.test_dir().join("backups/first");
    let r = src.post("/api/backup", &json!({"path": arg(&target)}));
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.json();
    assert_eq!(s(&answer, "path"), arg(&target));
    assert!(u(&answer, "bytes") > 0, "{}", r.text());
    load.wait_for(acked_before.len() + 300, "acks go on after the backup");
    let acked_total = load.finish();
    assert!(acked_total.len() > acked_before.len());

    assert_eq!(mode(&target), 0o700);
    assert_eq!(mode(&target.join("admin-token")), 0o600);
    assert!(target.join("fleetgate-backup.json").exists());

    let restored = Server::start_own_token(DRIVERS[0], |data_dir| restore_into(&target, data_dir));
    assert_eq!(mode(restored.data_dir()), 0o700);
    assert_eq!(
        restored.admin_token(),
        src.admin_token(),
        "the generated admin token"
    );
    let stored = stored_seqs(&restored, &dev);
    let missing: Vec<_> = acked_before
        .iter()
        .filter(|s| !stored.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records acked before the backup began are missing, e.g. {:?}",
        missing.len(),
        acked_before.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        stored
            .iter()
            .all(|&s| s < acked_total.len() as u64 + WINDOW as u64),
        "nothing that was never sent"
    );
    assert_eq!(device_names(&restored), device_names(&src));
    restored.device_session(&quiet).close();
    let users = restored.get("/api/users").json();
    let ann = arr(&users, "items")
        .iter()
        .find(|u| s(u, "username") == "ann")
        .cloned()
        .expect("ann was restored");
    assert_eq!(s(&ann, "role"), "viewer");
    let login = restored.anonymous().post_json(
        "/api/login",
        enc(&json!({"username":"ann","password":"ann-password-1"})).as_bytes(),
    );
    assert_eq!(login.expect("login").status, 200, "ann's password");
    let with_api_token = Client::new(&restored.url())
        .expect("client")
        .with_token(&api_token)
        .get("/api/devices")
        .expect("GET");
    assert_eq!(with_api_token.status, 200, "the named API token");
}

#[test]
fn one_backup_at_a_time_without_blocking_the_server() {
    let srv = Server::start(DRIVERS[0]);
    let dev = srv.create_device("d");
    // The backup copies `<data-dir>/admin-token` after the checkpoint (this server takes its token
    // from the environment, so it never reads the file). A FIFO there holds the backup's thread
    // until the test writes to it: while it waits, the server must go on answering.
    let fifo = srv.data_dir().join("admin-token");
    let c = std::ffi::CString::new(arg(&fifo)).expect("path");
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");

    let first = srv.test_dir().join("held");
    let held = {
        let (client, path) = (srv.admin(), arg(&first).to_string());
        thread::spawn(move || {
            client
                .post_json("/api/backup", enc(&json!({ "path": path })).as_bytes())
                .expect("POST /api/backup")
        })
    };
    // The checkpoint is written before the side files are read: once it is there, the first
    // backup holds its place and waits on the FIFO.
    wait_until(SOON, "the first backup's checkpoint", || {
        first.join("store").exists()
    });
    let second = srv.test_dir().join("second");
    let r = srv.post("/api/backup", &json!({"path": arg(&second)}));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(error_code(&r.json()), "backup_running");
    assert!(!second.exists(), "a refused backup writes nothing");
    // Every shard serves while the backup's thread waits: new connections land on either.
    for _ in 0..8 {
        assert_eq!(srv.get("/api/devices").status, 200);
    }
    let mut ws = srv.device_session(&dev);
    ws.send_text(&telemetry_frame(0));
    ws.recv_type("ack", SOON);
    ws.close();
    assert!(!held.is_finished(), "the first backup still waits");

    std::fs::write(&fifo, "adm_from_the_fifo\n").expect("release the backup");
    let r = held.join().expect("the first backup's request");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        std::fs::read_to_string(first.join("admin-token")).expect("copied"),
        "adm_from_the_fifo\n"
    );
    std::fs::remove_file(&fifo).expect("no FIFO to hold the next one");
    let r = srv.post("/api/backup", &json!({"path": arg(&second)}));
    assert_eq!(r.status, 201, "the next backup may start: {}", r.text());
}

#[test]
fn bad_backup_requests_are_refused_clearly() {
    let srv = Server::start(DRIVERS[0]);
    let err = |body: Value, status: u16| -> String {
        let r = srv.post("/api/backup", &body);
        assert_eq!(r.status, status, "{} → {}", enc(&body), r.text());
        let v = r.json();
        error_code(&v);
        format!("{} {}", error_code(&v), s(field(&v, "error"), "message"))
    };
    let e = err(json!({}), 400);
    assert!(
        e.starts_with("invalid_field") && e.contains("absolute"),
        "{e}"
    );
    let e = err(json!({"path": "backups/today"}), 400);
    assert!(
        e.starts_with("invalid_path") && e.contains("absolute path"),
        "{e}"
    );
    let e = err(json!({"path": arg(&srv.data_dir().join("b"))}), 400);
    assert!(
        e.starts_with("invalid_path") && e.contains("data directory"),
        "{e}"
    );
    let full = srv.test_dir().join("full");
    std::fs::create_dir(&full).expect("mkdir");
    std::fs::write(full.join("x"), "x").expect("file");
    let e = err(json!({"path": arg(&full)}), 409);
    assert!(e.starts_with("target_not_empty"), "{e}");
    let e = err(json!({"path": arg(&full.join("x"))}), 409);
    assert!(e.starts_with("target_not_empty"), "{e}");
    let e = err(json!({"path": arg(&full), "compress": true}), 400);
    assert!(e.contains("compress"), "{e}");

    let r = srv.post("/api/tokens", &json!({"name":"v","role":"viewer"}));
    let viewer = s(&r.json(), "token").to_string();
    let empty = srv.test_dir().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let r = Client::new(&srv.url())
        .expect("client")
        .with_token(&viewer)
        .post_json("/api/backup", enc(&json!({"path": arg(&empty)})).as_bytes())
        .expect("POST");
    assert_eq!(r.status, 403, "viewers may not back up");
    assert_eq!(std::fs::read_dir(&empty).expect("list").count(), 0);
    let r = srv.post("/api/backup", &json!({"path": arg(&empty)}));
    assert_eq!(r.status, 201, "an empty directory will do: {}", r.text());
}

#[test]
fn the_cli_backs_up_a_running_server_and_a_stopped_one() {
    let mut srv = Server::start_own_token(DRIVERS[0], |_| {});
    let dev = srv.create_device("kept");
    let mut ws = srv.device_session(&dev);
    for seq in 0..20 {
        ws.send_text(&telemetry_frame(seq));
        ws.recv_type("ack", SOON);
    }
    ws.close();
    let token = srv.admin_token().to_string();
    let data = arg(srv.data_dir()).to_string();
    let env = [("FLEETGATE_ADMIN_TOKEN", token.as_str())];

    let online = srv.test_dir().join("online");
    let out = ok(&fleetgate(
        &["backup", "--url", &srv.url(), "--to", arg(&online)],
        &env,
    ));
    assert!(
        out.contains(&format!("backup written to {}", arg(&online))),
        "{out}"
    );
    let e = refused(&fleetgate(
        &["backup", "--url", &srv.url(), "--to", "relative/dir"],
        &env,
    ));
    assert!(e.contains("HTTP 400") && e.contains("absolute path"), "{e}");
    let e = refused(&fleetgate(
        &["backup", "--url", &srv.url(), "--to", arg(&online)],
        &[],
    ));
    assert!(e.contains("admin token is needed"), "{e}");

    let offline = srv.test_dir().join("offline");
    let e = refused(&fleetgate(
        &["backup", "--data-dir", &data, "--to", arg(&offline)],
        &[],
    ));
    assert!(
        e.contains(&format!("in use by a running server (pid {})", srv.pid())),
        "{e}"
    );
    assert!(!offline.exists(), "a refused backup writes nothing");

    let st = srv.stop();
    assert!(st.success());
    let out = ok(&fleetgate(
        &["backup", "--data-dir", &data, "--to", arg(&offline)],
        &[],
    ));
    assert!(out.contains("backup written to"), "{out}");
    let not_a_store = srv.test_dir().join("nothing");
    std::fs::create_dir(&not_a_store).expect("mkdir");
    let e = refused(&fleetgate(
        &[
            "backup",
            "--data-dir",
            arg(&not_a_store),
            "--to",
            arg(&srv.test_dir().join("never")),
        ],
        &[],
    ));
    assert!(e.contains("no fleetgate store here"), "{e}");
    assert_eq!(std::fs::read_dir(&not_a_store).expect("list").count(), 0);
    assert!(!srv.test_dir().join("never").exists());

    for backup in [&online, &offline] {
        let restored = Server::start_own_token(DRIVERS[0], |d| restore_into(backup, d));
        assert_eq!(restored.admin_token(), token);
        assert_eq!(
            stored_seqs(&restored, &dev),
            (0..20).collect(),
            "{}",
            backup.display()
        );
    }
}

#[test]
fn restore_refuses_what_would_lose_data() {
    let srv = Server::start(DRIVERS[0]);
    let dev = srv.create_device("one");
    let backup = srv.test_dir().join("b");
    let r = srv.post("/api/backup", &json!({"path": arg(&backup)}));
    assert_eq!(r.status, 201, "{}", r.text());
    let from = arg(&backup);

    let e = refused(&fleetgate(
        &["restore", "--from", from, "--data-dir", arg(srv.data_dir())],
        &[],
    ));
    assert!(e.contains("in use by a running server"), "{e}");
    let e = refused(&fleetgate(
        &[
            "restore",
            "--from",
            from,
            "--data-dir",
            arg(srv.data_dir()),
            "--force",
        ],
        &[],
    ));
    assert!(
        e.contains("in use by a running server"),
        "even with --force: {e}"
    );

    let target = srv.test_dir().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("old"), "x").expect("file");
    let e = refused(&fleetgate(
        &["restore", "--from", from, "--data-dir", arg(&target)],
        &[],
    ));
    assert!(e.contains("not an empty directory"), "{e}");
    let e = refused(&fleetgate(
        &[
            "restore",
            "--from",
            arg(srv.test_dir()),
            "--data-dir",
            arg(&target),
        ],
        &[],
    ));
    assert!(e.contains("no complete fleetgate backup"), "{e}");
    assert!(target.join("old").exists(), "nothing was touched");
    ok(&fleetgate(
        &[
            "restore",
            "--from",
            from,
            "--data-dir",
            arg(&target),
            "--force",
        ],
        &[],
    ));
    assert!(!target.join("old").exists(), "--force replaced it");
    assert_eq!(mode(&target), 0o700);

    let restored = Server::start_own_token(DRIVERS[0], |d| {
        std::fs::rename(&target, d).expect("move the restored directory into place")
    });
    assert_eq!(
        device_names(&restored),
        vec![(dev.id.clone(), "one".to_string())]
    );
}
