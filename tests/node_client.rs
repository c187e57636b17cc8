//! The connect guide's Node.js example, run unmodified except for its three
//! constants, against a real server (both I/O drivers).
//!
//! `tests/clients/connect-guide.js` is the guide's example copied verbatim.
//! This test copies it to a temp dir, replaces the string values of the
//! `WS_URL`, `DEVICE_ID` and `TOKEN` lines, and APPENDS exactly one line:
//!
//! ```js
//! setInterval(() => sendTelemetry({temperature: 21.5, humidity: 40}), 500)
//! ```
//!
//! because the example's own 30 s telemetry interval is too slow for a test.
//! That line only calls the example's own `sendTelemetry`; nothing else is
//! added or edited. It repeats every 500 ms (the first at 500 ms) so that a
//! slow start cannot make the single send miss the open socket.
//!
//! Requirements: `node` and `npm` on PATH; the `ws` package is installed into
//! `tests/clients/node_modules` by `npm ci` on first use. A missing `node` or a
//! failed install is a test FAILURE.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

for_both_drivers!(connect_guide_node_example);

const APPENDED_LINE: &str =
    "setInterval(() => sendTelemetry({temperature: 21.5, humidity: 40}), 500)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn clients_dir() -> PathBuf {
    repo().join("tests").join("clients")
}

/// The example block of the guide: from `const WebSocket = require("ws")`
/// through the first `}, 30000)` (the page text continues on that line).
fn guide_example(guide: &str) -> String {
    let start = guide
        .find("const WebSocket = require(\"ws\")")
        .expect("guide has the Node.js example");
    let rest = &guide[start..];
    let end = rest
        .find("}, 30000)")
        .expect("guide example ends with `}, 30000)`")
        + "}, 30000)".len();
    rest[..end].to_string()
}

fn no_ws(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Replaces the string literal on the one line starting with `const NAME =`.
fn set_constant(src: &str, name: &str, value: &str) -> String {
    let prefix = format!("const {name} = ");
    let mut hits = 0;
    let out: Vec<String> = src
        .lines()
        .map(|line| {
            if line.trim_start().starts_with(&prefix) {
                hits += 1;
                let open = line.find('"').expect("string literal");
                let close = open + 1 + line[open + 1..].find('"').expect("closing quote");
                format!("{}\"{}\"{}", &line[..open], value, &line[close + 1..])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(
        hits, 1,
        "expected exactly one `{prefix}` line in the example"
    );
    out.join("\n") + "\n"
}

fn check_prerequisites() {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("`node --version` failed: {o:?}. Install Node.js (see .ci/run)."),
        Err(e) => panic!(
            "`node` is not available ({e}). The connect-guide test needs Node.js: \
             apt-get install nodejs npm, then `npm ci` in tests/clients (.ci/run does both)."
        ),
    }
    ensure_node_packages();
}

#[test]
fn committed_copy_matches_the_guide() {
    let copy =
        fs::read_to_string(clients_dir().join("connect-guide.js")).expect("read connect-guide.js");
    let guide_path = repo().join("..").join("shared").join("connect-guide.txt");
    if guide_path.exists() {
        let guide = fs::read_to_string(&guide_path).unwrap();
        assert_eq!(
            no_ws(&guide_example(&guide)),
            no_ws(&copy),
            "tests/clients/connect-guide.js no longer matches the example in {}",
            guide_path.display()
        );
    } else {
        eprintln!(
            "{} not present: comparison with the guide skipped",
            guide_path.display()
        );
    }
    // The three constants are where the test expects them.
    for name in ["WS_URL", "DEVICE_ID", "TOKEN"] {
        set_constant(&copy, name, "x");
    }
}

struct Node {
    child: Child,
    out: PathBuf,
}

impl Node {
    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(dir: &Path, script: &str) -> Node {
    let path = dir.join("device.js");
    fs::write(&path, script).unwrap();
    let out = dir.join("node.out");
    let f = fs::File::create(&out).unwrap();
    let child = Command::new("node")
        .arg(&path)
        .current_dir(dir)
        .env("NODE_PATH", clients_dir().join("node_modules"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("spawn node");
    Node { child, out }
}

fn connect_guide_node_example(io: &str) {
    check_prerequisites();
    let srv = Server::start(io);
    let dev = srv.create_device("node-device");

    let example = fs::read_to_string(clients_dir().join("connect-guide.js")).unwrap();
    let mut script = set_constant(&example, "WS_URL", &srv.ws_url());
    script = set_constant(&script, "DEVICE_ID", &dev.id);
    script = set_constant(&script, "TOKEN", &dev.token);
    // The only addition (see the module docs).
    script.push_str(APPENDED_LINE);
    script.push('\n');
    // Only the three constant lines differ from the committed copy.
    let changed = example
        .lines()
        .zip(script.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 3);
    assert_eq!(script.lines().count(), example.lines().count() + 1);

    let dir = std::env::temp_dir().join(format!(
        "fleetgate-node-{io}-{}-{:08x}",
        std::process::id(),
        random_u64() as u32
    ));
    fs::create_dir_all(&dir).unwrap();
    let mut node = spawn_node(&dir, &script);

    let ctx = |node: &Node| format!("node output:\n{}\n{}", node.output(), srv.logs());
    let wait = |node: &mut Node, what: &str, cond: &mut dyn FnMut() -> bool| {
        let deadline = std::time::Instant::now() + SOON;
        loop {
            if cond() {
                return;
            }
            if let Some(st) = node.child.try_wait().unwrap() {
                panic!("node exited ({st}) while waiting for {what}\n{}", ctx(node));
            }
            if std::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}\n{}", ctx(node));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Registers and is listed online.
    wait(&mut node, "the device listed online", &mut || {
        srv.listed_status(&dev.id) == "online"
    });
    wait(
        &mut node,
        "`registered` printed by the example",
        &mut || node_output_has(&dir, "registered"),
    );
    // device_connected in /api/events.
    wait(&mut node, "device_connected in /api/events", &mut || {
        srv.events(&format!("device_id={}&type=device_connected", dev.id))
            .iter()
            .any(|e| opt_s(e, "type") == Some("device_connected"))
    });
    // Its telemetry is in the telemetry API.
    wait(
        &mut node,
        "telemetry {temperature: 21.5, humidity: 40} stored",
        &mut || {
            srv.telemetry(&dev.id).iter().any(|t| {
                let p = field(t, "payload");
                p.get("temperature").and_then(|v| v.cast_f64()) == Some(21.5)
                    && p.get("humidity").and_then(|v| v.cast_f64()) == Some(40.0)
            })
        },
    );
    // A command sent with POST .../commands reaches it.
    let cid = srv.send_command(&dev.id, "unlock", json!({}));
    wait(
        &mut node,
        "`Executing command: unlock` printed",
        &mut || node_output_has(&dir, "Executing command: unlock"),
    );
    srv.wait_command_status(&dev.id, &cid, "sent");
    assert!(
        !node.output().contains("WebSocket error"),
        "the example logged a WebSocket error\n{}",
        ctx(&node)
    );

    // Listed offline after it exits.
    let _ = node.child.kill();
    let _ = node.child.wait();
    srv.wait_status(&dev.id, "offline");
    srv.wait_event(&dev.id, "device_disconnected");
    drop(node);
    let _ = fs::remove_dir_all(&dir);
}

fn node_output_has(dir: &Path, needle: &str) -> bool {
    fs::read_to_string(dir.join("node.out"))
        .map(|t| t.contains(needle))
        .unwrap_or(false)
}
