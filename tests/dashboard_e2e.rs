//! The dashboard end to end, the way an operator meets it: the real server, Debian's Chromium
//! driven by playwright-core (`tests/clients/dashboard-e2e.mjs`), and a device running the Node.js code the
//! page shows. Steps: log in with the initial password and change it, add a device, connect it,
//! see it online without a reload, see its telemetry chart, send a command and see it acked, see
//! `device_connected` in the event stream, export attendance as CSV, add a person whose punch then
//! shows their name and write them to a ZKTeco terminal, and check that a viewer cannot send a
//! command.
//!
//! With `FLEETGATE_SCREENSHOTS=<dir>` the script also saves one PNG per page (that is how
//! `docs/screenshots/` is made). Chromium missing is a test FAILURE, never a skip.

mod common;

use common::*;
use std::process::Command;

fn chromium() -> String {
    let path = std::env::var("FLEETGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "Chromium not found at {path}: install Debian's `chromium` (.ci/run does) or set FLEETGATE_CHROMIUM"
    );
    path
}

#[test]
fn dashboard_end_to_end() {
    ensure_node_packages();
    let chromium = chromium();
    let srv = Server::start("uring");
    let initial = std::fs::read_to_string(srv.data_dir().join("initial-admin-password"))
        .expect("the server writes <data-dir>/initial-admin-password on first start");
    let work = srv.data_dir().join("e2e");
    std::fs::create_dir_all(&work).expect("work dir");
    let script = node_clients_dir().join("dashboard-e2e.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .current_dir(node_clients_dir())
        .env("FG_URL", srv.url())
        .env("FG_INITIAL_PASSWORD", initial.trim())
        .env("FG_ADMIN_TOKEN", srv.admin_token())
        .env("FG_WORKDIR", &work)
        .env("FG_NODE_PATH", node_clients_dir().join("node_modules"))
        .env("FG_CHROMIUM", &chromium)
        .env("NODE_PATH", node_clients_dir().join("node_modules"));
    if let Ok(dir) = std::env::var("FLEETGATE_SCREENSHOTS") {
        cmd.env("FG_SCREENSHOTS", dir);
    }
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("E2E PASSED"),
        "the dashboard end-to-end script failed:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        srv.logs()
    );
}
