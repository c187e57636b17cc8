//! Retention against the real binary: records past their retention are no longer returned and
//! are deleted from the store, newer ones (and those of a device whose setting keeps them longer)
//! stay, across a restart; finished commands past the history's retention go, queued ones stay;
//! punches follow their punch time.

mod common;

use common::*;
use std::time::Duration;

const RETAIN: &str = "2s";

fn create(srv: &Server, body: Value) -> String {
    let r = srv.post("/api/devices", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    s(&r.json(), "device_id").to_string()
}

fn send(srv: &Server, id: &str, token: &str, n: u64) {
    let dev = Device {
        id: id.to_string(),
        token: token.to_string(),
        name: String::new(),
    };
    let mut ws = srv.device_session(&dev);
    ws.send_text(&enc(
        &json!({"type":"telemetry","msg_id": format!("t{n}"),"payload":{"n": n}}),
    ));
    let ack = ws.recv_json(SOON);
    assert_eq!(opt_s(&ack, "type"), Some("ack"), "{}", enc(&ack));
}

/// Telemetry keys of a device left in the store (opened read-only beside the server).
fn stored_telemetry(srv: &Server, id: &str) -> usize {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), srv.data_dir()).expect("list cfs");
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        srv.data_dir(),
        &cfs,
        false,
    )
    .expect("open the store read-only");
    let cf = db.cf_handle("telemetry").expect("telemetry cf");
    let prefix = uuid::Uuid::parse_str(id).expect("uuid").into_bytes();
    db.prefix_iterator_cf(cf, prefix)
        .take_while(|kv| kv.as_ref().is_ok_and(|(k, _)| k.starts_with(&prefix)))
        .count()
}

fn ns(items: &[Value]) -> Vec<u64> {
    items.iter().map(|t| u(field(t, "payload"), "n")).collect()
}

fn records_past_retention_disappear_and_newer_ones_stay(io: &str) {
    let mut srv = Server::start_with(
        io,
        &[
            "--retain-telemetry",
            "1h",
            "--retain-command-history",
            RETAIN,
            "--retain-attendance",
            "1h",
        ],
    );
    let short = srv.post(
        "/api/devices",
        &json!({"name": "short", "settings": {"retain_telemetry": RETAIN}}),
    );
    assert_eq!(short.status, 201);
    let short = short.json();
    let (short_id, short_token) = (
        s(&short, "device_id").to_string(),
        s(&short, "token").to_string(),
    );
    let long = srv.post("/api/devices", &json!({"name": "long"}));
    assert_eq!(long.status, 201);
    let long = long.json();
    let (long_id, long_token) = (
        s(&long, "device_id").to_string(),
        s(&long, "token").to_string(),
    );
    // A bad retention setting is refused with the reason.
    let r = srv.post(
        "/api/devices",
        &json!({"name": "bad", "settings": {"retain_events": "3 fortnights"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("retain_events"), "{}", r.text());

    send(&srv, &short_id, &short_token, 1);
    send(&srv, &long_id, &long_token, 1);
    // A finished command (the device is offline: it expires at once with ttl 1 s) and a queued one.
    let expiring = srv.post(
        &format!("/api/devices/{short_id}/commands"),
        &json!({"command": "reboot", "payload": {}, "ttl_s": 1}),
    );
    assert_eq!(expiring.status, 202, "{}", expiring.text());
    wait_until(
        Duration::from_secs(20),
        "the old telemetry is past retention",
        || srv.telemetry(&short_id).is_empty(),
    );
    // The export follows the same cut-off, and the other device's record is still exported.
    let nd = srv.get(&format!("/api/devices/{short_id}/telemetry.ndjson"));
    assert_eq!(nd.status, 200, "{}", nd.text());
    let body = |r: &Resp| String::from_utf8_lossy(&r.body).to_string();
    assert!(body(&nd).trim().is_empty(), "{}", body(&nd));
    let nd = srv.get(&format!("/api/devices/{long_id}/telemetry.ndjson"));
    assert_eq!(body(&nd).lines().count(), 1, "{}", body(&nd));
    // The sweep deletes it: were it only hidden, keeping telemetry longer would bring it back.
    let sweeps = metric(&srv, "fleetgate_retention_sweeps_total");
    wait_until(Duration::from_secs(20), "two more sweeps", || {
        metric(&srv, "fleetgate_retention_sweeps_total") >= sweeps + 2.0
    });
    let r = srv.patch(
        &format!("/api/devices/{short_id}"),
        &json!({"settings": {"retain_telemetry": "1h"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        srv.telemetry(&short_id).is_empty(),
        "the swept record stays gone"
    );
    send(&srv, &short_id, &short_token, 2);
    wait_until(Duration::from_secs(20), "the device is offline", || {
        srv.listed_status(&short_id) == "offline"
    });
    let queued = srv.post(
        &format!("/api/devices/{short_id}/commands"),
        &json!({"command": "reboot", "payload": {}}),
    );
    assert_eq!(queued.status, 202);
    assert_eq!(ns(&srv.telemetry(&short_id)), [2]);
    assert_eq!(
        ns(&srv.telemetry(&long_id)),
        [1],
        "the global retention keeps it"
    );
    wait_until(
        Duration::from_secs(20),
        "the expired command is past retention",
        || srv.commands(&short_id).len() == 1,
    );
    assert_eq!(s(&srv.commands(&short_id)[0], "status"), "queued");

    // Punches follow their punch time: 1 h globally.
    let sn = "RET-HTTP";
    create(
        &srv,
        json!({"name": "clock", "protocol": "http", "serial": sn, "settings": {"timezone": "UTC"}}),
    );
    let at = |mins_ago: i64| {
        (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(mins_ago))
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let r = srv.post(
        "/api/device-http",
        &json!({"cmd": "sendlog", "sn": sn, "record": [
            {"enrollid": 1, "time": at(120)},
            {"enrollid": 2, "time": at(10)}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let punches = srv.list_all("/api/attendance?limit=100");
    let ids: Vec<u64> = punches.iter().map(|p| u(p, "enrollid")).collect();
    assert_eq!(
        ids,
        [2],
        "the punch of two hours ago is past the 1 h retention"
    );

    srv.restart();
    assert_eq!(ns(&srv.telemetry(&short_id)), [2], "after a restart");
    assert_eq!(ns(&srv.telemetry(&long_id)), [1]);
    srv.stop();
    assert_eq!(
        stored_telemetry(&srv, &short_id),
        1,
        "only the newer record is left"
    );
    assert_eq!(stored_telemetry(&srv, &long_id), 1);
}

for_both_drivers!(records_past_retention_disappear_and_newer_ones_stay);
