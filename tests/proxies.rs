//! Behind a load balancer or reverse proxy every connection comes from the proxy. With
//! `--trusted-proxies`, the server takes the client's address from the proxy's PROXY protocol
//! header (v1 or v2) or `X-Forwarded-For`, so throttles and per-address limits hit the client
//! that earned them, and events name the real device address. From any other peer both are
//! ignored: a client cannot choose its own address.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::browser::*;
use common::*;

for_both_drivers!(
    a_trusted_proxys_header_names_the_client_in_v1_and_v2,
    a_proxy_header_from_anyone_else_is_refused,
    forwarded_for_is_believed_from_trusted_proxies_only,
    connections_count_toward_the_client_a_proxy_names,
    a_real_haproxy_in_front_with_send_proxy_v2,
);

const PROXY: &str = "127.0.0.9";

fn start(io: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--trusted-proxies", "127.0.0.8/31"];
    args.extend_from_slice(extra);
    Server::start_with(io, &args)
}

/// A TCP connection from the proxy's address that has sent `header`.
fn through_proxy(srv: &Server, header: &[u8]) -> TcpStream {
    let mut s = tcp_from(PROXY, srv.addr());
    s.write_all(header).expect("write PROXY header");
    s
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&3000u16.to_be_bytes());
    h
}

fn v2_tcp6(src: &str, sport: u16) -> Vec<u8> {
    let ip: std::net::Ipv6Addr = src.parse().expect("IPv6");
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&ip.octets());
    h.extend_from_slice(&[0; 16]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&3000u16.to_be_bytes());
    h
}

/// Registers `dev` over `stream` and returns the `remote` its `device_connected` event names.
fn remote_seen(srv: &Server, stream: TcpStream, dev: &Device) -> String {
    let mut ws = Ws::try_over(stream, srv.addr()).expect("WebSocket over the proxied connection");
    ws.register(dev);
    let ev = srv.wait_event(&dev.id, "device_connected");
    let remote = s(field(&ev[0], "payload"), "remote").to_string();
    ws.close();
    remote
}

fn a_trusted_proxys_header_names_the_client_in_v1_and_v2(io: &str) {
    let srv = start(io, &[]);
    let d1 = srv.create_device("v1");
    let s = through_proxy(&srv, b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 3000\r\n");
    assert_eq!(remote_seen(&srv, s, &d1), "203.0.113.7:56324");
    let d2 = srv.create_device("v2");
    let s = through_proxy(&srv, &v2_tcp4([198, 51, 100, 23], 4711));
    assert_eq!(remote_seen(&srv, s, &d2), "198.51.100.23:4711");
    let d3 = srv.create_device("v2-ipv6");
    let s = through_proxy(&srv, &v2_tcp6("2001:db8::7", 4000));
    assert_eq!(remote_seen(&srv, s, &d3), "[2001:db8::7]:4000");
    // The balancer's own health check (v1 UNKNOWN) keeps the proxy's address, and HTTP works.
    let mut s = through_proxy(&srv, b"PROXY UNKNOWN\r\n");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, SOON).expect("health answer");
    assert_eq!(r.status, 200);
    // A proxy may also send no header at all: its connection is its own.
    let d4 = srv.create_device("plain");
    let s = tcp_from(PROXY, srv.addr());
    assert!(remote_seen(&srv, s, &d4).starts_with("127.0.0.9:"));
}

fn a_proxy_header_from_anyone_else_is_refused(io: &str) {
    let srv = start(io, &[]);
    // An untrusted client cannot claim another address: its header is not HTTP.
    let r = raw_http_from(
        "127.0.0.2",
        srv.addr(),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 3000\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");
    // From a trusted proxy, a malformed header closes the connection without an answer.
    let mut s = through_proxy(&srv, b"PROXY TCP4 not-an-address 127.0.0.1 1 3000\r\n");
    let (bytes, ending) = read_to_end_bounded(&mut s, SOON);
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert_ne!(ending, Ending::Open);
    // The server goes on.
    assert_eq!(srv.get("/healthz").status, 200);
}

fn forwarded_for_is_believed_from_trusted_proxies_only(io: &str) {
    let srv = start(io, &[]);
    admin_browser(&srv);
    let login_via = |src: &str, xff: &str, password: &str| {
        http_from(
            src,
            &srv,
            "POST",
            "/api/login",
            &[("X-Forwarded-For", xff)],
            Some(&json!({"username": "admin", "password": password})),
        )
    };
    // Through the proxy, one client guesses until it is throttled...
    for _ in 0..8 {
        login_via(PROXY, "203.0.113.7", "guess-guess-guess");
    }
    let r = login_via(PROXY, "203.0.113.7", NEW_PASSWORD);
    assert_eq!((r.status, code(&r)), (429, "too_many_attempts".into()));
    // ...and only that client: the admin behind the same proxy logs in. A forged entry to the
    // left of what the proxy appended changes nothing.
    let r = login_via(PROXY, "203.0.113.7, 198.51.100.3", NEW_PASSWORD);
    assert_eq!(r.status, 200, "{r:?}");
    // A client that is not a proxy cannot shed its throttle by naming another address.
    for i in 0..8 {
        login_via("127.0.0.2", &format!("192.0.2.{i}"), "guess-guess-guess");
    }
    let r = login_via("127.0.0.2", "192.0.2.200", NEW_PASSWORD);
    assert_eq!((r.status, code(&r)), (429, "too_many_attempts".into()));
}

fn connections_count_toward_the_client_a_proxy_names(io: &str) {
    let srv = start(io, &["--max-connections-per-ip", "2"]);
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 1000 3000\r\n";
    let held: Vec<Ws> = (0..2)
        .map(|_| Ws::try_over(through_proxy(&srv, header), srv.addr()).expect("ws"))
        .collect();
    // The client is at its limit: a third connection for it is refused...
    let mut third = through_proxy(&srv, header);
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let r = read_response(&mut third, &mut buf, SOON).expect("answer");
    assert_eq!(r.status, 429, "{r:?}");
    // ...while the proxy carries others: its own address is not the limit.
    let other = b"PROXY TCP4 203.0.113.8 127.0.0.1 1000 3000\r\n";
    let more: Vec<Ws> = (0..2)
        .map(|_| Ws::try_over(through_proxy(&srv, other), srv.addr()).expect("ws"))
        .collect();
    assert_eq!(held.len() + more.len(), 4);
}

/// Debian's haproxy in TCP mode, connecting to the server from the trusted 127.0.0.9 and putting a
/// PROXY v2 header in front of each connection; stopped when dropped.
struct Haproxy {
    child: std::process::Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(backend: &str) -> Haproxy {
        // A free port on 127.0.0.8, chosen by the kernel and released for haproxy to bind.
        let addr = std::net::TcpListener::bind("127.0.0.8:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .to_string();
        let dir = std::env::temp_dir().join(format!("fleetgate-haproxy-{}", random_u64()));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind {addr}\n  default_backend be\nbackend be\n  server fleetgate {backend} source 127.0.0.9 send-proxy-v2\n"
            ),
        )
        .expect("write haproxy.cfg");
        let child = std::process::Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy runs (apt-get install haproxy)");
        wait_until(SOON, "haproxy listening", || {
            TcpStream::connect(&addr).is_ok()
        });
        Haproxy { child, addr, dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn a_real_haproxy_in_front_with_send_proxy_v2(io: &str) {
    let srv = start(io, &[]);
    let lb = Haproxy::start(srv.addr());
    let dev = srv.create_device("behind-haproxy");
    // The device connects to the balancer from its own address.
    let stream = tcp_from("127.0.0.5", &lb.addr);
    let mut ws = Ws::try_over(stream, &lb.addr).expect("WebSocket through haproxy");
    ws.register(&dev);
    let ev = srv.wait_event(&dev.id, "device_connected");
    let remote = s(field(&ev[0], "payload"), "remote").to_string();
    assert!(
        remote.starts_with("127.0.0.5:"),
        "the device's own address: {remote}"
    );
    ws.ping_pong();
}
