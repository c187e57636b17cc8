//! The disk guard (`--min-free-disk`): on a tmpfs of its own, the test takes the free space below
//! the threshold with a file. The server then answers new data "not stored" (the device keeps
//! it), says `disk_low` on `/healthz` and in `/metrics`, refuses commands (503), and serves reads;
//! when the file is deleted it stores again by itself, and the re-sent record is stored once.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::time::Duration;

const TMPFS_MIB: u32 = 256;
/// Free space to keep: 40 % of the tmpfs, far above what RocksDB's WAL preallocation takes.
const MIN_FREE: &str = "40%";

fn free_and_total(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and `st` is writable memory of the right size.
    let st = unsafe {
        assert_eq!(libc::statvfs(c.as_ptr(), st.as_mut_ptr()), 0, "statvfs");
        st.assume_init()
    };
    let f = st.f_frsize as u64;
    (st.f_bavail as u64 * f, st.f_blocks as u64 * f)
}

fn healthz_store(srv: &Server) -> String {
    let r = srv.anonymous().get("/healthz").expect("/healthz answers");
    assert_eq!(r.status, 200, "/healthz: {}", r.text());
    s(&r.json(), "store").to_string()
}

fn frame(msg_id: &str) -> String {
    enc(&json!({"type": "telemetry", "msg_id": msg_id, "payload": {"t": msg_id}}))
}

/// The answer to one telemetry frame: `ack` or the error code.
fn answer(ws: &mut Ws, msg_id: &str) -> String {
    ws.send_text(&frame(msg_id));
    let m = ws.recv_json(SOON);
    assert_eq!(opt_s(&m, "msg_id"), Some(msg_id), "{}", enc(&m));
    match opt_s(&m, "type") {
        Some("ack") => "ack".into(),
        _ => opt_s(&m, "code").unwrap_or("?").to_string(),
    }
}

fn below_the_threshold_new_data_is_not_stored_until_space_returns(io: &str) {
    let srv = Server::start_on_tmpfs(io, &["--min-free-disk", MIN_FREE], TMPFS_MIB);
    let dev = srv.create_device("guarded");
    let mut ws = srv.device_session(&dev);
    assert_eq!(answer(&mut ws, "m0"), "ack");
    assert_eq!(healthz_store(&srv), "ok");
    assert_eq!(metric(&srv, "fleetgate_disk_guard_low"), 0.0);

    // Leave 30 % free: below the 40 % threshold, with the disk far from full.
    let data = srv.fs_path("");
    let (free, total) = free_and_total(&data);
    let fill = free.saturating_sub(total * 3 / 10);
    let filler = srv.fs_path("filler");
    let mut f = fs::File::create(&filler).expect("filler");
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    while written < fill {
        let n = chunk.len().min((fill - written) as usize);
        f.write_all(&chunk[..n]).expect("filling stays below full");
        written += n as u64;
    }
    f.sync_all().expect("sync");
    drop(f);
    wait_until(Duration::from_secs(10), "/healthz says disk_low", || {
        healthz_store(&srv) == "disk_low"
    });
    assert_eq!(metric(&srv, "fleetgate_disk_guard_low"), 1.0);
    assert_eq!(answer(&mut ws, "m1"), "not_stored");
    // The session stays, reads go on, commands cannot be queued.
    assert_eq!(
        srv.get(&format!("/api/devices/{}/telemetry", dev.id))
            .status,
        200
    );
    let r = srv.post(
        &format!("/api/devices/{}/commands", dev.id),
        &json!({"command": "reboot", "payload": {}}),
    );
    assert_eq!(r.status, 503, "{}", r.text());

    fs::remove_file(&filler).expect("remove the filler");
    wait_until(Duration::from_secs(10), "/healthz says ok again", || {
        healthz_store(&srv) == "ok"
    });
    // The device re-sends what was not stored: stored now, once.
    assert_eq!(answer(&mut ws, "m1"), "ack");
    assert_eq!(answer(&mut ws, "m1"), "ack");
    let stored = srv.list_all(&format!("/api/devices/{}/telemetry", dev.id));
    let m1 = stored.iter().filter(|t| enc(t).contains("\"m1\"")).count();
    assert_eq!(m1, 1, "{stored:?}");
    assert!(
        metric(&srv, "fleetgate_disk_guard_refused_batches_total") >= 1.0,
        "the refusal is counted"
    );
}

for_both_drivers!(below_the_threshold_new_data_is_not_stored_until_space_returns);

/// Thresholds that are no size are refused at startup, with the reason.
#[test]
fn a_bad_threshold_is_refused_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["serve", "--min-free-disk", "100%"])
        .output()
        .expect("run fleetgate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("below 100"), "{err}");
}
