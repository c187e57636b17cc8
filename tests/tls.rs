//! TLS on the device port (`--tls-cert`/`--tls-key`), met by real clients: Node's `ws` over
//! `wss://` and its `https` module, and the connect guide's Python example run unchanged against
//! `https://` (it trusts the test's self-signed certificate through `REQUESTS_CA_BUNDLE`, as a user
//! with a private CA would). Plain `http://` keeps working on the same port, and a broken TLS
//! hello only costs its own connection.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

for_both_drivers!(wss_and_https_serve_real_clients_beside_plain_http);

/// A self-signed certificate for 127.0.0.1 and localhost, made by the openssl CLI.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed to make a test certificate");
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

fn wss_and_https_serve_real_clients_beside_plain_http(io: &str) {
    let dir = std::env::temp_dir().join(format!("fleetgate-tls-{io}-{}", random_u64()));
    fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = make_cert(&dir);
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let srv = Server::start_with(
        io,
        &["--tls-cert", &cert_s, "--tls-key", &key_s, "--auto-approve"],
    );
    let dev = srv.create_device("tls-device");

    // Node: a device over wss:// (register, a 40 KB telemetry frame acked after commit), then the
    // admin API over https://.
    ensure_node_packages();
    let text = run(
        Command::new("node")
            .arg(node_clients_dir().join("tls-client.js"))
            .args([srv.addr(), &cert_s, &dev.id, &dev.token, srv.admin_token()]),
        "node tls-client.js",
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let r = parse(line.as_bytes());
    assert_eq!(
        r.get("authorized").and_then(|v| v.as_bool()),
        Some(true),
        "{line}"
    );
    assert_eq!(s(&r, "registered"), dev.id, "{line}");
    assert_eq!(s(&r, "ack"), "tls-1", "{line}");
    assert_eq!(u(&r, "devices_status"), 200, "{line}");
    assert_eq!(s(field(&r, "device"), "status"), "offline", "{line}");
    let t = srv.telemetry(&dev.id);
    assert_eq!(t.len(), 1);
    assert_eq!(s(field(&t[0], "payload"), "over"), "tls");

    // The connect guide's Python example, unchanged but for URL and SN, over https://.
    let guide =
        fs::read_to_string(node_clients_dir().join("connect_guide.py")).expect("guide copy");
    let url = format!("https://{}/api/device-http", srv.addr());
    let mut script = String::new();
    let mut replaced = 0;
    for line in guide.lines() {
        if line.starts_with("URL = \"") {
            script.push_str(&format!("URL = \"{url}\"\n"));
            replaced += 1;
        } else if line.starts_with("SN = \"") {
            script.push_str("SN = \"TLS-SN-1\"\n");
            replaced += 1;
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert_eq!(replaced, 2, "the guide's URL and SN lines");
    fs::write(dir.join("guide.py"), script).expect("write guide.py");
    let text = run(
        Command::new("python3")
            .arg(dir.join("guide.py"))
            .env("REQUESTS_CA_BUNDLE", &cert)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost"),
        "python3 guide.py over https",
    );
    assert!(
        text.contains("Registered:") && text.contains("'result': True"),
        "{text}"
    );
    assert!(text.contains("Sent log:"), "{text}");
    assert!(text.contains("Heartbeat: True"), "{text}");
    let punches = srv.list_all("/api/attendance");
    assert_eq!(punches.len(), 1, "the guide's punch is stored");

    // A dashboard login over https:// gets a `Secure` session cookie.
    let password = fs::read_to_string(srv.data_dir().join("initial-admin-password"))
        .expect("initial admin password");
    let text = run(
        Command::new("python3")
            .args([
                "-c",
                "import requests, sys\n\
                 r = requests.post(sys.argv[1], json={'username': 'admin', 'password': sys.argv[2]}, verify=sys.argv[3])\n\
                 print(r.status_code, r.headers.get('set-cookie'))",
            ])
            .arg(format!("https://{}/api/login", srv.addr()))
            .arg(password.trim())
            .arg(&cert)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost"),
        "python3 login over https",
    );
    assert!(text.starts_with("200 fg_session="), "{text}");
    assert!(
        text.contains("; Secure"),
        "the cookie is Secure over TLS: {text}"
    );

    // Plain HTTP on the same port.
    assert_eq!(srv.get("/healthz").status, 200);

    // A TLS record header followed by garbage: that connection is dropped, the server goes on.
    let mut junk = TcpStream::connect(srv.addr()).expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x20])
        .and_then(|()| junk.write_all(&[0xAB; 32]))
        .expect("write junk");
    let (_, ending) = read_to_end_bounded(&mut junk, Duration::from_secs(15));
    assert_ne!(
        ending,
        Ending::Open,
        "a broken TLS hello closes its connection"
    );
    assert_eq!(srv.get("/healthz").status, 200);

    let _ = fs::remove_dir_all(&dir);
}
