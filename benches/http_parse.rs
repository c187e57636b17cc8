//! HTTP/1.1 request parsing (`fleetgate::http::request::parse`: httparse plus limits, path
//! decoding and owning the head and body) and the WebSocket upgrade (`ws::handshake::accept`).
//!
//! `cargo bench --bench http_parse`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::http::{Limits, Parse, Request, query};
use fleetgate::ws::handshake;

/// The server's allocator (`src/main.rs`), so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A legacy device's `sendlog` (protocols.md §3.3 record shape), as its firmware posts it.
const SENDLOG_BODY: &str = r#"{"cmd":"sendlog","sn":"ZX0006827500","count":2,"logindex":10,"record":[{"enrollid":1,"time":"2026-11-27 13:49:30","mode":0,"inout":0,"event":0,"temp":36.5,"verifymode":13},{"enrollid":2,"time":"2026-11-27 13:49:31","mode":0,"inout":0,"event":1,"temp":36.4,"verifymode":13}]}"#;

fn device_post() -> Vec<u8> {
    format!(
        "POST /api/device-http HTTP/1.1\r\n\
         Host: 10.0.0.5:8080\r\n\
         User-Agent: tfs30/6.1\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: keep-alive\r\n\
         \r\n{SENDLOG_BODY}",
        SENDLOG_BODY.len()
    )
    .into_bytes()
}

/// The dashboard's device list: a browser request with the session cookie, or a script's with a
/// bearer token (both headers here, as a worst case for the header copy).
fn dashboard_get() -> Vec<u8> {
    b"GET /api/devices?q=pump&status=online&sort=last_seen&limit=50&cursor=AAAAAZOw3kE HTTP/1.1\r\n\
      Host: gateway.example.net:8080\r\n\
      User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
      Accept: application/json\r\n\
      Accept-Language: en-GB,en;q=0.5\r\n\
      Accept-Encoding: gzip, deflate, br\r\n\
      Referer: http://gateway.example.net:8080/\r\n\
      Authorization: Bearer fgt_3q2n5k7x9v1b4m6c8z0l2j4h6g8f0d2s\r\n\
      Cookie: fg_session=8f1c2a9e7b4d6f03a5c8e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2; theme=dark\r\n\
      X-CSRF-Token: 4c9e2b7a1d8f3e6c0b5a9d2e7f1c4b8a\r\n\
      Connection: keep-alive\r\n\
      \r\n"
        .to_vec()
}

/// A device's upgrade to `/ws` (RFC 6455 4.1 shape, as tungstenite and Node's `ws` send it).
fn ws_upgrade() -> Vec<u8> {
    b"GET /ws HTTP/1.1\r\n\
      Host: 10.0.0.5:8080\r\n\
      Connection: Upgrade\r\n\
      Upgrade: websocket\r\n\
      Sec-WebSocket-Version: 13\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
      Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
      \r\n"
        .to_vec()
}

fn parse(buf: &[u8], limits: &Limits) -> Request {
    match fleetgate::http::request::parse(buf, limits) {
        Ok(Parse::Complete { request, consumed }) => {
            assert_eq!(consumed, buf.len());
            request
        }
        other => panic!("not a complete request: {other:?}"),
    }
}

/// What `ws_session::upgrade` does with a parsed request: the handshake over its headers.
fn accept(req: &Request) -> Vec<u8> {
    let headers = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
    handshake::accept("GET", headers).expect("valid upgrade")
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("http_parse");
    for (name, req) in [
        ("post_device_http", device_post()),
        ("get_devices_cookie_auth", dashboard_get()),
        ("ws_upgrade", ws_upgrade()),
    ] {
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse(black_box(&req), &limits)));
    }
    // The GET's query string, as the device list route splits it.
    let get = parse(&dashboard_get(), &limits);
    g.throughput(Throughput::Bytes(get.query.len() as u64));
    g.bench_function("get_devices_query", |b| {
        b.iter(|| query::parse(black_box(&get.query)))
    });

    // The upgrade: parse, then validate and answer (SHA-1 + base64 of the accept key).
    let upgrade = ws_upgrade();
    let parsed = parse(&upgrade, &limits);
    g.throughput(Throughput::Bytes(upgrade.len() as u64));
    g.bench_function("ws_handshake_accept", |b| {
        b.iter(|| accept(black_box(&parsed)))
    });
    g.bench_function("ws_upgrade_parse_and_accept", |b| {
        b.iter(|| accept(&parse(black_box(&upgrade), &limits)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
