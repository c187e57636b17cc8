//! What `/metrics` tells an operator about the store (docs/operations.md, "Memory" and "Sizing"):
//! the process's RSS, the shared cache, and per column family the table bytes and keys that the
//! disk-per-record figures are derived from. Records acked, then flushed by a backup's checkpoint,
//! must show up in their families.

mod common;

use common::*;
use std::time::Duration;

const RECORDS: usize = 300;

fn family(srv: &Server, gauge: &str, family: &str) -> f64 {
    metric(srv, &format!("{gauge}{{family=\"{family}\"}}"))
}

#[test]
fn acked_records_show_in_their_column_families() {
    let srv = Server::start("epoll");
    let dev = srv.create_device("sized");
    let mut ws = srv.device_session(&dev);
    for i in 0..RECORDS {
        let id = format!("m{i}");
        ws.send_text(&enc(
            &json!({"type": "telemetry", "msg_id": id, "payload": {"seq": i}}),
        ));
        let m = ws.recv_json(SOON);
        assert_eq!(opt_s(&m, "type"), Some("ack"), "{}", enc(&m));
    }
    // A checkpoint flushes the memtables, so every acked record is in a table file.
    let dir = srv.test_dir().join("backup");
    let r = srv.post("/api/backup", &json!({"path": dir.to_string_lossy()}));
    assert_eq!(r.status, 201, "{}", r.text());

    // The monitor samples once a second.
    wait_until(
        Duration::from_secs(10),
        "the flushed records in /metrics",
        || family(&srv, "fleetgate_store_family_keys_estimate", "telemetry") >= RECORDS as f64,
    );
    // One key per telemetry record: its msg_id is in the row, not in a family of its own.
    assert_eq!(
        family(&srv, "fleetgate_store_family_keys_estimate", "msg_ids"),
        0.0
    );
    let telemetry = family(&srv, "fleetgate_store_family_sst_bytes", "telemetry");
    assert!(telemetry > 0.0, "telemetry's table bytes: {telemetry}");
    assert!(
        metric(&srv, "fleetgate_store_sst_bytes") >= telemetry,
        "the total covers every family"
    );
    assert_eq!(
        family(&srv, "fleetgate_store_family_sst_bytes", "attendance"),
        0.0,
        "a family nothing was written to holds no table"
    );
    assert!(metric(&srv, "fleetgate_process_resident_bytes") > 0.0);
    assert!(metric(&srv, "fleetgate_store_block_cache_bytes") > 0.0);
}
