//! The raw-sink baseline: a minimal single-threaded server that speaks just enough of every
//! protocol to answer the harness, and stores nothing. Driving it with the same client loop as the
//! real server measures what the box itself (loopback, syscalls, the harness) can do in the same
//! run.
//!
//! It answers generic `register`/`ping`/msg_id frames, AiFace `reg`/`sendlog`, SmackBio
//! `Register`/`Login`/`TimeLog_v2`/`KeepAlive`, HTTP `POST /api/device-http`, ZKTeco `/iclock/`
//! (the option block, `OK: <lines>` for uploads, `OK` for polls), and routes
//! `POST /api/devices/{id}/commands` straight to the device's socket (with
//! `GET /api/devices/{id}/commands` reporting the last command's status), so the command storm has
//! a baseline too. It checks no credentials. Its framing is the server's own codecs
//! (fleetgate-core), so the baseline leaves out everything but them, the sockets and the loop.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use fleetgate_core::http::{self, Method};
use fleetgate_core::time::timestamp_now;
use fleetgate_core::ws::{self, Decoder, Opcode, OwnedEvent};
use fleetgate_core::zkteco::{self as adms, Call, Endpoint};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::proto::smackbio::tag;
use crate::wire;

const LISTENER: Token = Token(usize::MAX);
/// Unsent bytes a connection may hold; a peer that does not read is dropped beyond this.
const MAX_WBUF: usize = 8 << 20;
const CLOUDTIME: &str = "2026-01-01 00:00:00";
/// What the harness sends is small; the server's own limits, with a body of up to 4 MiB.
const REQUEST_LIMITS: http::Limits = http::Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 64,
    max_body: 4 << 20,
    upload: None,
};

pub struct Sink {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds an ephemeral loopback port and serves it on one thread until `stop`.
    pub fn start() -> io::Result<Sink> {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raw-sink".into())
            .spawn(move || serve(poll, listener, &flag))?;
        Ok(Sink {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The loop polls with a 50 ms timeout, so it sees the flag promptly.
            let _ = t.join();
        }
    }
}

struct SinkConn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Set once the connection is a WebSocket.
    ws: Option<Decoder>,
    closing: bool,
    /// The generic device id registered on this WebSocket (for command routing).
    device: Option<String>,
}

/// Command routing state: which connection holds each device, and each device's last command.
#[derive(Default)]
struct Router {
    devices: HashMap<String, usize>,
    last: HashMap<String, (String, &'static str)>,
    next_command: u64,
}

fn serve(mut poll: Poll, listener: TcpListener, stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, SinkConn> = HashMap::new();
    let mut router = Router::default();
    let mut next = 0usize;
    // Frames for other connections (routed commands), written after the current one.
    let mut deliveries: Vec<(usize, Vec<u8>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("raw-sink: poll failed: {e}");
            return;
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                // Edge-triggered: accept until the queue is empty.
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let tok = Token(next);
                            if poll
                                .registry()
                                .register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
                                .is_ok()
                            {
                                conns.insert(
                                    next,
                                    SinkConn {
                                        stream,
                                        rbuf: Vec::new(),
                                        wbuf: Vec::new(),
                                        ws: None,
                                        closing: false,
                                        device: None,
                                    },
                                );
                            }
                            next += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            // Out of descriptors, typically: the client sees the refusal.
                            eprintln!("raw-sink: accept failed: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let id = ev.token().0;
            let alive = match conns.get_mut(&id) {
                Some(c) => drive(c, id, &mut router, &mut deliveries),
                None => continue,
            };
            if !alive {
                close(&mut conns, &mut router, &poll, id);
            }
            for (to, bytes) in deliveries.drain(..) {
                let alive = match conns.get_mut(&to) {
                    Some(c) => {
                        c.wbuf.extend_from_slice(&bytes);
                        flush(c)
                    }
                    None => continue,
                };
                if !alive {
                    close(&mut conns, &mut router, &poll, to);
                }
            }
        }
    }
}

fn close(conns: &mut HashMap<usize, SinkConn>, router: &mut Router, poll: &Poll, id: usize) {
    if let Some(mut c) = conns.remove(&id) {
        let _ = poll.registry().deregister(&mut c.stream);
        if let Some(d) = c.device
            && router.devices.get(&d) == Some(&id)
        {
            router.devices.remove(&d);
        }
    }
}

/// Reads everything available, answers it, flushes. Returns false when the connection is done.
fn drive(
    c: &mut SinkConn,
    id: usize,
    router: &mut Router,
    deliveries: &mut Vec<(usize, Vec<u8>)>,
) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                c.rbuf.extend_from_slice(&chunk[..n]);
                if !answer(c, id, router, deliveries) {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    flush(c) && !c.closing
}

fn flush(c: &mut SinkConn) -> bool {
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return c.wbuf.len() <= MAX_WBUF,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Answers every complete request or frame in the read buffer.
fn answer(
    c: &mut SinkConn,
    id: usize,
    router: &mut Router,
    deliveries: &mut Vec<(usize, Vec<u8>)>,
) -> bool {
    while c.ws.is_none() && !c.closing {
        match http::request::parse(&c.rbuf, &REQUEST_LIMITS) {
            Ok(http::Parse::Complete { request, consumed }) => {
                c.rbuf.drain(..consumed);
                if !http_request(c, request, router, deliveries) {
                    return false;
                }
            }
            Ok(http::Parse::Partial { .. }) => return true,
            Err(_) => return false,
        }
    }
    let mut used = 0;
    while !c.closing {
        let Some(decoder) = &mut c.ws else {
            break;
        };
        // Owned, as answering needs the whole connection.
        let event = match decoder.decode(&mut c.rbuf[used..]) {
            Ok(decoded) => {
                used += decoded.consumed;
                match decoded.event.map(OwnedEvent::from) {
                    Some(event) => event,
                    None => break,
                }
            }
            Err(_) => return false,
        };
        match event {
            OwnedEvent::Text(text) => ws_text(c, id, &text, router),
            OwnedEvent::Ping(payload) => ws::encode_frame(&mut c.wbuf, Opcode::Pong, &payload),
            OwnedEvent::Close(code, reason) => {
                match code {
                    Some(code) => ws::encode_close(&mut c.wbuf, code, &reason),
                    None => ws::encode_frame(&mut c.wbuf, Opcode::Close, b""),
                }
                c.closing = true;
            }
            // Binary and pong messages are read and discarded.
            OwnedEvent::Binary(_) | OwnedEvent::Pong(_) => {}
        }
    }
    c.rbuf.drain(..used);
    true
}

fn http_request(
    c: &mut SinkConn,
    req: http::Request,
    router: &mut Router,
    deliveries: &mut Vec<(usize, Vec<u8>)>,
) -> bool {
    if req.is_websocket_upgrade() {
        let headers = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        let Ok(switching) = ws::handshake::accept("GET", headers) else {
            return false;
        };
        c.wbuf.extend_from_slice(&switching);
        c.ws = Some(Decoder::new(wire::WS_LIMITS));
        return true;
    }
    if let Some(endpoint) = adms::endpoint(&req.path) {
        // The server puts a `Date` on every ADMS answer; the sink too, so both write as much.
        adms_answer(&req, endpoint)
            .with_header("Date", adms::http_date(timestamp_now()))
            .write_to(&mut c.wbuf, req.keep_alive, false);
        if !req.keep_alive {
            c.closing = true;
        }
        return true;
    }
    let segs: Vec<&str> = req.path.split('/').collect();
    let (status, body) = match (req.method, segs.as_slice()) {
        (Method::Post, ["", "api", "device-http"]) => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let cmd = v.get("cmd").and_then(|x| x.as_str()).unwrap_or("?");
            (
                200,
                format!(r#"{{"ret":"{cmd}","result":true,"cloudtime":"2026-01-01T00:00:00Z"}}"#),
            )
        }
        (Method::Post, ["", "api", "devices", dev, "commands"]) => {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let command = v.get("command").and_then(|x| x.as_str()).unwrap_or("?");
            let payload = v.get("payload").cloned().unwrap_or_default();
            router.next_command += 1;
            let command_id = format!("00000000-0000-4000-8000-{:012x}", router.next_command);
            let status = match router.devices.get(*dev) {
                Some(&to) => {
                    let text = format!(
                        r#"{{"type":"command","command_id":"{command_id}","command":"{command}","payload":{payload}}}"#
                    );
                    let mut bytes = Vec::new();
                    ws::encode_frame(&mut bytes, Opcode::Text, text.as_bytes());
                    deliveries.push((to, bytes));
                    "sent"
                }
                None => "queued",
            };
            router
                .last
                .insert((*dev).to_string(), (command_id.clone(), status));
            (
                202,
                format!(r#"{{"command_id":"{command_id}","device_id":"{dev}","status":"queued"}}"#),
            )
        }
        (Method::Get, ["", "api", "devices", dev, "commands"]) => {
            let items = match router.last.get(*dev) {
                Some((cid, st)) => format!(r#"{{"command_id":"{cid}","status":"{st}"}}"#),
                None => String::new(),
            };
            (200, format!(r#"{{"items":[{items}],"next_cursor":null}}"#))
        }
        _ => (404, r#"{"error":{"code":"not_found"}}"#.to_string()),
    };
    http::Response::json(status, body.into_bytes()).write_to(&mut c.wbuf, req.keep_alive, false);
    if !req.keep_alive {
        c.closing = true;
    }
    true
}

/// A ZKTeco terminal's request answered as the server answers an approved device's, read and
/// written with the server's own ADMS codec; uploads are counted, not parsed or stored.
fn adms_answer(req: &http::Request, endpoint: Result<Endpoint, ()>) -> http::Response {
    let Ok(endpoint) = endpoint else {
        return adms::refuse(404, "no such ADMS endpoint");
    };
    let incoming = match adms::read(endpoint, req.method, &req.query, &req.body) {
        Ok(i) => i,
        Err(r) => return r.response(),
    };
    match incoming.call {
        Call::Handshake { .. } => {
            adms::options_reply(&incoming.serial, &adms::Options::default(), timestamp_now())
        }
        Call::Upload { body, .. } => adms::stored(adms::tables::count_lines(body)),
        Call::Poll { .. } | Call::Results(_) | Call::Ping => adms::ok(),
    }
}

/// The raw text of a JSON field's value in one of the harness's own messages (a string with its
/// quotes, or a number): enough to echo ids without parsing the whole message.
fn raw_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = text.find(&pat)? + pat.len();
    let rest = text[start..].trim_start();
    let off = text.len() - rest.len();
    let len = if let Some(body) = rest.strip_prefix('"') {
        body.find('"')? + 2
    } else {
        rest.find([',', '}', ']']).unwrap_or(rest.len())
    };
    Some(text[off..off + len].trim())
}

fn ws_text(c: &mut SinkConn, id: usize, payload: &[u8], router: &mut Router) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    let t = text.trim_start();
    let reply: Option<String> = if t.starts_with('<') {
        smackbio(t)
    } else if t.contains("\"type\"") {
        let kind = raw_field(t, "type").unwrap_or("");
        match kind {
            "\"telemetry\"" | "\"event\"" => {
                raw_field(t, "msg_id").map(|m| format!(r#"{{"type":"ack","msg_id":{m}}}"#))
            }
            "\"ping\"" => Some(r#"{"type":"pong"}"#.to_string()),
            "\"register\"" => {
                let dev = raw_field(t, "device_id").unwrap_or("\"\"");
                let name = dev.trim_matches('"').to_string();
                router.devices.insert(name.clone(), id);
                c.device = Some(name);
                Some(format!(
                    r#"{{"type":"registered","device_id":{dev},"server_time":"2026-01-01T00:00:00Z"}}"#
                ))
            }
            "\"command_result\"" => {
                if let Some(d) = &c.device
                    && let Some(last) = router.last.get_mut(d)
                {
                    last.1 = "acked";
                }
                None
            }
            _ => None,
        }
    } else {
        match raw_field(t, "cmd").unwrap_or("") {
            "\"reg\"" => Some(format!(
                r#"{{"ret":"reg","result":true,"cloudtime":"{CLOUDTIME}","nosenduser":true}}"#
            )),
            "\"sendlog\"" => {
                let count = raw_field(t, "count").unwrap_or("1");
                let index = raw_field(t, "logindex").unwrap_or("0");
                Some(format!(
                    r#"{{"ret":"sendlog","result":true,"count":{count},"logindex":{index},"cloudtime":"{CLOUDTIME}","access":1}}"#
                ))
            }
            _ => None,
        }
    };
    if let Some(r) = reply {
        ws::encode_frame(&mut c.wbuf, Opcode::Text, r.as_bytes());
    }
}

fn smackbio(t: &str) -> Option<String> {
    let serial = tag(t, "DeviceSerialNo").unwrap_or("");
    let head = "<?xml version=\"1.0\"?><Message>";
    match (tag(t, "Request"), tag(t, "Event")) {
        (Some("Register"), _) => Some(format!(
            "{head}<Response>Register</Response><DeviceSerialNo>{serial}</DeviceSerialNo><Token>sink-token</Token><Result>OK</Result></Message>"
        )),
        (Some("Login"), _) => Some(format!(
            "{head}<Response>Login</Response><DeviceSerialNo>{serial}</DeviceSerialNo><Result>OK</Result></Message>"
        )),
        (None, Some(ev @ ("TimeLog_v2" | "AdminLog_v2"))) => {
            let trans = tag(t, "TransID").unwrap_or("");
            Some(format!(
                "{head}<Response>{ev}</Response><Result>OK</Result><TransID>{trans}</TransID></Message>"
            ))
        }
        (None, Some("KeepAlive")) => {
            let dev_time = tag(t, "DevTime").unwrap_or("");
            Some(format!(
                "{head}<Response>KeepAlive</Response><Result>OK</Result><DevTime>{dev_time}</DevTime><ServerTime>2026-01-01-T00:00:00Z</ServerTime></Message>"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields() {
        let t = r#"{"type":"telemetry","msg_id":"12","payload":{"seq":12}}"#;
        assert_eq!(raw_field(t, "type"), Some("\"telemetry\""));
        assert_eq!(raw_field(t, "msg_id"), Some("\"12\""));
        assert_eq!(raw_field(t, "seq"), Some("12"));
        let a = r#"{"cmd":"sendlog","sn":"X","count":3,"logindex":9,"record":[]}"#;
        assert_eq!(raw_field(a, "logindex"), Some("9"));
    }

    /// The harness's ZKTeco requests, as it writes them, answered as the terminal expects.
    #[test]
    fn zkteco_answers() {
        use crate::proto::{Inbound, Pending, zkteco};
        let answer = |method: &str, target: &str, body: Option<&str>| {
            let mut bytes = Vec::new();
            let body = body.map(|b| (zkteco::CONTENT_TYPE, b.as_bytes()));
            crate::wire::request(&mut bytes, method, target, "sink", None, body)
                .expect("the harness's requests are well-formed");
            match http::request::parse(&bytes, &REQUEST_LIMITS) {
                Ok(http::Parse::Complete { request, .. }) => {
                    let endpoint = adms::endpoint(&request.path).expect("an ADMS path");
                    adms_answer(&request, endpoint)
                }
                other => panic!("not one complete request: {other:?}"),
            }
        };
        let r = answer("GET", &zkteco::handshake("LT1N0"), None);
        assert!(r.body.starts_with(b"GET OPTION FROM: LT1N0\r\n"));
        assert_eq!(
            zkteco::parse(Pending::Register, r.status, &r.body),
            Inbound::Registered
        );
        let r = answer(
            "POST",
            &zkteco::upload("LT1N0", 5),
            Some(&zkteco::attlog(0, 4)),
        );
        assert_eq!(r.body, b"OK: 4\r\n");
        assert_eq!(
            zkteco::parse(Pending::Data(5), r.status, &r.body),
            Inbound::Ack(5)
        );
        let r = answer("GET", &zkteco::getrequest("LT1N0"), None);
        assert_eq!(
            zkteco::parse(Pending::Heartbeat, r.status, &r.body),
            Inbound::Pong
        );
    }
}
