//! The fuzz harnesses: one function per target in `fuzz/fuzz_targets/`, each taking arbitrary
//! bytes and panicking when an invariant breaks. They live here, not in `fuzz/`, so that
//! `tests/fuzz_regressions.rs` replays the seeds and every input that ever crashed through exactly
//! the code the fuzzer ran, under a plain `cargo test`. See `docs/fuzzing.md`.
//!
//! Each harness drives a codec the way the runtime does, and checks what is cheap to check beyond
//! "no panic": limits hold, chunking does not change what a decoder sees, what the server would
//! send is well-formed, and a conversation's actions stay few and consistent.

use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::terminal::{
    AccessFacts, AccessFormat, AccessPolicy, AccessRule, Action, CommandError, Conversation,
    Identity, Known,
};
use crate::ws::{CloseError, Decoder, Event, LenEncoding, Limits, Opcode};
use crate::{
    attendance, device_http, generic, http, json, lenient, raw_member, ws, zkteco as adms,
};

/// The targets by name: the directories under `fuzz/seeds/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("http_request", http_request),
    ("http_response", http_response),
    ("ws_frame", ws_frame),
    ("ws_handshake", ws_handshake),
    ("generic", generic),
    ("generic_session", generic_session),
    ("aiface", aiface),
    ("smackbio", smackbio),
    ("device_http", device_http),
    ("proxy_header", proxy_header),
    ("zkteco", zkteco),
];

/// The harness named `target`, if there is one.
pub fn harness(target: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == target).map(|(_, f)| *f)
}

/// Whether an object anywhere in `v` has a key twice (a standalone parse keeps both).
fn repeats_a_key(v: &OwnedValue) -> bool {
    if let Some(o) = v.as_object() {
        let mut seen = std::collections::HashSet::new();
        return o
            .iter()
            .any(|(k, v)| !seen.insert(k.as_str()) || repeats_a_key(v));
    }
    v.as_array().is_some_and(|a| a.iter().any(repeats_a_key))
}

fn is_json(text: &str) -> bool {
    simd_json::to_owned_value(&mut text.as_bytes().to_vec()).is_ok()
}

fn assert_json(what: &str, text: &str) {
    assert!(is_json(text), "{what} is not JSON: {text:?}");
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// `http::request::parse` under tight and default limits: the limits hold, and since the runtime
/// re-parses a growing buffer, a complete request parses the same from exactly its own bytes and
/// is only `Partial` (never an error) when cut short.
pub fn http_request(data: &[u8]) {
    let tight = http::request::Limits {
        max_header_bytes: 512,
        max_headers: 8,
        max_body: 256,
        upload: Some(http::request::Upload {
            path: "/up",
            max_body: 512,
        }),
    };
    for limits in [tight, http::request::Limits::default()] {
        // Pipelined requests: the runtime parses what follows a complete request next.
        let mut rest = data;
        for _ in 0..4 {
            match http_parse_once(rest, &limits) {
                Some(consumed) => rest = &rest[consumed..],
                None => break,
            }
        }
    }
}

/// Parses one request and checks it; the bytes it took, if it was complete.
fn http_parse_once(data: &[u8], limits: &http::request::Limits) -> Option<usize> {
    use http::request::{Parse, parse};
    match parse(data, limits) {
        Ok(Parse::Complete { request, consumed }) => {
            assert!(consumed <= data.len() && consumed > 0);
            assert!(request.body.len() <= limits.max_body);
            assert!(consumed - request.body.len() <= limits.max_header_bytes);
            assert!(request.headers.len() <= limits.max_headers);
            assert!(request.version <= 1);
            // Decoding refuses control characters (and `%2F`); an encoded `?` is path text.
            assert!(!request.path.chars().any(char::is_control));
            let again = parse(&data[..consumed], limits);
            assert_eq!(
                again,
                Ok(Parse::Complete {
                    request: request.clone(),
                    consumed
                }),
                "the request parses differently from its own bytes"
            );
            for cut in [consumed - 1, consumed / 2] {
                if cut > 0 {
                    assert!(
                        matches!(parse(&data[..cut], limits), Ok(Parse::Partial { .. })),
                        "a request cut at {cut} of {consumed} bytes is not Partial"
                    );
                }
            }
            let pairs = http::query::parse(&request.query);
            for (k, _) in &pairs {
                let _ = http::query::get(&pairs, k);
            }
            let _ = request.is_websocket_upgrade();
            let _ = request.header_str("content-type");
            Some(consumed)
        }
        Ok(Parse::Partial { .. }) => None,
        Err(e) => {
            assert!(
                matches!(e.status, 400 | 413 | 431 | 501 | 505),
                "unexpected status {}",
                e.status
            );
            None
        }
    }
}

/// `http::client::ResponseParser` driven as its three callers drive it: a buffer that grows read
/// by read, responses dropped from its front as they complete, `finish` at the end. The first byte
/// picks a HEAD request (bit 0), tight or default limits (bit 1) and the read size (the rest);
/// what follows is what the server sent. How the reads are cut must not change what the client
/// sees, and the limits hold.
pub fn http_response(data: &[u8]) {
    use http::client::ResponseLimits;
    let [flags, stream @ ..] = data else {
        return;
    };
    let head_request = flags & 1 != 0;
    let limits = match flags & 2 {
        0 => ResponseLimits::default(),
        _ => ResponseLimits {
            max_head: 256,
            max_headers: 8,
            max_response: 1024,
        },
    };
    let read_size = usize::from(flags >> 2).max(1);
    let whole = read_responses(stream, limits, head_request, stream.len().max(1));
    let in_reads = read_responses(stream, limits, head_request, read_size);
    assert_eq!(whole, in_reads, "cutting the reads changed the responses");
}

/// Every response the client reads from `stream` arriving `read_size` bytes at a time, up to 8,
/// then what `finish` makes of the rest, or the error that ended it.
fn read_responses(
    stream: &[u8],
    limits: http::client::ResponseLimits,
    head_request: bool,
    read_size: usize,
) -> Vec<Result<http::client::Response, http::client::ResponseError>> {
    let mut parser = http::client::ResponseParser::new(limits, head_request);
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let mut arrived = 0;
    let check = |response: &http::client::Response| {
        // Three digits; one outside 100-599 is taken as a final response (RFC 9110 15).
        assert!(response.status <= 999);
        assert!(response.body.len() <= limits.max_response);
        assert!(response.headers.len() <= limits.max_headers);
        if head_request || matches!(response.status, 101 | 204 | 304) {
            assert!(response.body.is_empty(), "a bodiless response has a body");
        }
    };
    while seen.len() < 8 {
        match parser.parse(&buf) {
            Ok(Some((response, consumed))) => {
                assert!(consumed > 0 && consumed <= buf.len());
                check(&response);
                buf.drain(..consumed);
                seen.push(Ok(response));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                seen.push(Err(e));
                break;
            }
        }
        if arrived == stream.len() {
            let last = parser.finish(&buf).map(|(response, consumed)| {
                assert_eq!(
                    consumed,
                    buf.len(),
                    "finish left bytes of a closed connection"
                );
                check(&response);
                response
            });
            seen.push(last);
            break;
        }
        let end = arrived.saturating_add(read_size).min(stream.len());
        buf.extend_from_slice(&stream[arrived..end]);
        arrived = end;
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// What a decoder reported, owned, to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(CloseError),
}

/// Feeds `stream` to a fresh decoder (the server's, or with `at_client` a client's) in chunks of
/// the given sizes (cycled; the rest in one go when empty), the way the runtime does: append what
/// was read, decode until no event, drop the consumed prefix. Checks the decoder's contract on
/// every call.
fn decode_chunked(
    stream: &[u8],
    max_message: usize,
    chunks: &[usize],
    at_client: bool,
) -> Vec<Seen> {
    let limits = Limits { max_message };
    let mut dec = match at_client {
        false => Decoder::new(limits),
        true => Decoder::client(limits),
    };
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < stream.len() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(stream.len())
            .clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let needed = dec.bytes_needed(&buf);
            assert!(
                needed <= max_message.max(ws::MAX_CONTROL_PAYLOAD) + 14 || needed == buf.len(),
                "bytes_needed {needed} past the limit"
            );
            let len = buf.len();
            let result = dec.decode(&mut buf);
            let done = match result {
                Err(e) => {
                    assert!(matches!(
                        e.code,
                        CloseError::PROTOCOL_ERROR
                            | CloseError::INVALID_PAYLOAD
                            | CloseError::MESSAGE_TOO_BIG
                    ));
                    assert!(e.reason.len() <= 123);
                    seen.push(Seen::Error(e));
                    return seen;
                }
                Ok(d) => {
                    assert!(d.consumed <= len);
                    let closed = matches!(d.event, Some(Event::Close { .. }));
                    match d.event {
                        None => {
                            if d.consumed == 0 {
                                assert!(len < needed, "no progress with {len} of {needed} bytes");
                            }
                            (d.consumed, true)
                        }
                        Some(ev) => {
                            assert!(d.consumed > 0);
                            seen.push(match ev {
                                Event::Text(t) => {
                                    assert!(t.len() <= max_message);
                                    assert!(std::str::from_utf8(t).is_ok());
                                    Seen::Text(t.to_vec())
                                }
                                Event::Binary(b) => {
                                    assert!(b.len() <= max_message);
                                    Seen::Binary(b.to_vec())
                                }
                                Event::Ping(p) => {
                                    assert!(p.len() <= ws::MAX_CONTROL_PAYLOAD);
                                    Seen::Ping(p.to_vec())
                                }
                                Event::Pong(p) => {
                                    assert!(p.len() <= ws::MAX_CONTROL_PAYLOAD);
                                    Seen::Pong(p.to_vec())
                                }
                                Event::Close { code, reason } => {
                                    assert!(reason.len() <= ws::MAX_CONTROL_PAYLOAD - 2);
                                    Seen::Close(code, reason.to_string())
                                }
                            });
                            (d.consumed, closed)
                        }
                    }
                }
            };
            let (consumed, stop) = done;
            buf.drain(..consumed);
            if matches!(seen.last(), Some(Seen::Close(..))) {
                // The peer sends nothing after Close; the runtime stops decoding.
                return seen;
            }
            if stop {
                break;
            }
        }
    }
    seen
}

/// A client frame: FIN as given (fragments have it clear), masked with `key`, shortest length.
fn client_frame(fin: bool, opcode: Opcode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    let first = if fin { 0x80 } else { 0 } | opcode as u8;
    ws::encode_raw(&mut f, first, payload, Some(key), LenEncoding::Shortest);
    f
}

/// The server's frame as a client would send it: mask bit set, a zero key inserted.
fn masked(server_frame: &[u8]) -> Vec<u8> {
    let len_bytes = match server_frame[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mut f = server_frame.to_vec();
    f[1] |= 0x80;
    f.splice(2 + len_bytes..2 + len_bytes, [0u8; 4]);
    f
}

/// Input: 2 bytes of message limit, 1 byte choosing chunk sizes, then the byte stream. The
/// stream is decoded whole and in chunks (the events must agree); then a payload cut from it
/// is encoded, fragmented, decoded and compared.
pub fn ws_frame(data: &[u8]) {
    let [a, b, c, stream @ ..] = data else {
        return;
    };
    let max_message = usize::from(u16::from_be_bytes([*a, *b]));
    let chunks: Vec<usize> = match c % 4 {
        0 => vec![1],
        1 => vec![2, 1, 7],
        2 => vec![usize::from(*c >> 2).max(1)],
        _ => vec![3, 14, 1, 126, 5],
    };
    let whole = decode_chunked(stream, max_message, &[], false);
    let chunked = decode_chunked(stream, max_message, &chunks, false);
    assert_eq!(whole, chunked, "chunking changed what the decoder saw");
    // The same bytes at a client's end, where frames come unmasked.
    let whole = decode_chunked(stream, max_message, &[], true);
    let chunked = decode_chunked(stream, max_message, &chunks, true);
    assert_eq!(
        whole, chunked,
        "chunking changed what a client's decoder saw"
    );

    // Round trip: the first bytes of the stream as a payload, in 1 to 3 fragments, with a ping
    // between fragments; then the server's own Close.
    let key = [*a, *b, *c, 0x5A];
    let take = stream.len().min(usize::from(*c) * 3);
    let payload = &stream[..take];
    let text = std::str::from_utf8(payload).is_ok();
    let opcode = if text { Opcode::Text } else { Opcode::Binary };
    let cut1 = payload.len() / 3;
    let cut2 = payload.len() * 2 / 3;
    let mut frames = Vec::new();
    if c & 1 == 0 {
        frames.extend(client_frame(true, opcode, payload, key));
    } else {
        frames.extend(client_frame(false, opcode, &payload[..cut1], key));
        frames.extend(client_frame(true, Opcode::Ping, b"p", key));
        frames.extend(client_frame(
            false,
            Opcode::Continuation,
            &payload[cut1..cut2],
            key,
        ));
        frames.extend(client_frame(
            true,
            Opcode::Continuation,
            &payload[cut2..],
            key,
        ));
    }
    let reason = String::from_utf8_lossy(&stream[take..]);
    let mut close = Vec::new();
    ws::encode_close(&mut close, 1000, &reason);
    frames.extend(masked(&close));
    let seen = decode_chunked(&frames, payload.len(), &chunks, false);
    let message = if text {
        Seen::Text(payload.to_vec())
    } else {
        Seen::Binary(payload.to_vec())
    };
    let close_reason = match seen.last() {
        Some(Seen::Close(Some(1000), r)) => r.clone(),
        other => panic!("the round trip ended with {other:?}"),
    };
    assert!(reason.starts_with(close_reason.as_str()));
    let data_events: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Text(_) | Seen::Binary(_)))
        .collect();
    assert_eq!(
        data_events,
        [&message],
        "the round trip changed the message"
    );

    // The server's unfragmented frames decode back to themselves, at a client as sent and at the
    // server once masked.
    let mut out = Vec::new();
    ws::encode_frame(&mut out, opcode, payload);
    let seen = decode_chunked(&out, payload.len(), &chunks, true);
    assert_eq!(
        seen,
        std::slice::from_ref(&message),
        "a client read the server's frame differently"
    );
    let seen = decode_chunked(&masked(&out), payload.len(), &chunks, false);
    assert_eq!(seen, [message]);
}

/// The upgrade as the runtime runs it (an HTTP request, then `handshake::accept` on its
/// headers), and `accept` on raw lines (`METHOD`, then `name: value` lines).
pub fn ws_handshake(data: &[u8]) {
    use http::request::{Limits, Parse, parse};
    if let Ok(Parse::Complete { request, .. }) = parse(data, &Limits::default()) {
        let headers = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()));
        check_accept(ws::handshake::accept("GET", headers));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split("\r\n");
    let method = lines.next().unwrap_or("");
    let headers = lines.filter_map(|l| {
        let (n, v) = l.split_once(':')?;
        Some((n, v.as_bytes()))
    });
    check_accept(ws::handshake::accept(method, headers));
}

fn check_accept(r: Result<Vec<u8>, ws::handshake::HandshakeError>) {
    match r {
        Ok(resp) => {
            let text = std::str::from_utf8(&resp).expect("101 response is not UTF-8");
            assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
            assert!(text.ends_with("\r\n\r\n"));
            let accept = text
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Accept: "))
                .expect("no Sec-WebSocket-Accept");
            // base64 of a SHA-1: 28 characters.
            assert_eq!(accept.len(), 28, "{accept}");
        }
        Err(e) => {
            assert!((400..500).contains(&e.status()), "{e:?}");
            assert!(!e.code().is_empty() && !e.message().is_empty());
            for (n, v) in e.response_headers() {
                assert!(!n.is_empty() && !v.contains(['\r', '\n']));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generic protocol

/// A text frame of the generic protocol: parse, classify with a small payload limit and without
/// one, and build the answers the server sends from what was read.
pub fn generic(data: &[u8]) {
    const LIMIT: usize = 64;
    // Valid JSON passes through the trailing-comma filter unchanged.
    if !lenient::too_deep(data, lenient::MAX_JSON_DEPTH)
        && simd_json::to_owned_value(&mut data.to_vec()).is_ok()
    {
        let mut text = data.to_vec();
        assert_eq!(lenient::strip_trailing_commas(&mut text), data.len());
        assert_eq!(text, data);
    }
    let mut frame = data.to_vec();
    let Ok(v) = generic::parse(&mut frame) else {
        return;
    };
    // The payload kept as received reads as the payload the parser saw. A key repeated inside the
    // payload is kept as sent, and simd-json collapses a repeat in a nested object but not in a
    // top-level one, so such payloads are left out of the comparison (the span's bounds are still
    // checked: it must parse).
    if let Some(r) = raw_member::span(data, b"payload") {
        let kept = simd_json::to_owned_value(&mut data[r].to_vec()).expect("the span is JSON");
        let parsed = v.get("payload").map(|p| OwnedValue::from(p.clone()));
        if !repeats_a_key(&kept) {
            assert_eq!(
                Some(kept),
                parsed,
                "the span is not the payload the parser saw"
            );
        }
    }
    let unlimited = generic::classify(&v, usize::MAX);
    let limited = generic::classify(&v, LIMIT);
    if let Ok(m) = &limited {
        assert_eq!(
            std::mem::discriminant(m),
            std::mem::discriminant(unlimited.as_ref().expect("limit accepted more"))
        );
    }
    let msg = match (unlimited, limited) {
        (Err(e), _) => {
            assert!(!e.code.is_empty());
            assert_json("error frame", &generic::error(e.code, &e.message, None));
            return;
        }
        (Ok(m), Err(e)) => {
            assert_eq!(e.code, "payload_too_large", "{e:?}");
            m
        }
        (Ok(m), Ok(_)) => m,
    };
    // Ids in server frames are the server's own (a device's UUID, a command's id), never text
    // from the frame: the runtime looks a frame's `device_id` up and uses the device's id.
    let (dev, ts) = (
        "0190f3a2-7c4e-7d1a-9b2f-3c4d5e6f7a8b",
        "2026-06-12T07:00:00.000Z",
    );
    let out = match msg {
        generic::Inbound::Register { device_id, token } => {
            assert_json("token", &json::quote(token));
            assert_json("device_id", &json::quote(device_id));
            generic::registered(dev, ts)
        }
        generic::Inbound::Subscribe { role, .. } => {
            assert_json("role", &json::quote(role));
            generic::subscribed(ts)
        }
        generic::Inbound::Telemetry {
            payload, msg_id, ..
        } => {
            assert!(payload.is_object());
            if let Some(m) = msg_id {
                let m = json::encode(m);
                assert!(m.len() <= generic::MAX_MSG_ID, "msg_id {m} too long");
                assert_json("ack", &generic::ack(&m));
            }
            generic::telemetry_broadcast(dev, ts, &json::encode(payload))
        }
        generic::Inbound::Event {
            event_type,
            payload,
            msg_id,
            ..
        } => {
            assert!((1..=64).contains(&event_type.len()));
            if let Some(m) = msg_id {
                let m = json::encode(m);
                assert!(m.len() <= generic::MAX_MSG_ID, "msg_id {m} too long");
                assert_json("error", &generic::error("x", "y", Some(&m)));
            }
            let payload = payload.map_or_else(|| "null".to_string(), json::encode);
            generic::event_broadcast(dev, event_type, ts, &payload)
        }
        generic::Inbound::Ping => generic::PONG.to_string(),
        generic::Inbound::Pong => return,
        generic::Inbound::CommandResult {
            command_id,
            payload,
            ..
        } => {
            // The runtime looks the id up and stores the payload as the command's result.
            assert_json("command_id", &json::quote(command_id));
            payload.map_or_else(|| "null".to_string(), json::encode)
        }
        generic::Inbound::Command {
            command, payload, ..
        } => {
            let payload = payload.map_or_else(|| "{}".to_string(), json::encode);
            assert_json("command", &generic::command("c", command, &payload));
            generic::command_queued("c", dev, "queued")
        }
    };
    assert_json("server frame", &out);
}

// ---------------------------------------------------------------------------------------------
// The generic session

/// `generic_session::Session` driven the way the runtime drives it. The input is frames separated
/// by newlines; the first byte of each frame (taken off) decides the runtime's answers: whether a
/// register or subscribe is granted, whether a store is staged, a duplicate or fails, and how many
/// staged batches then commit or fail. Invariants: every frame the session sends is JSON; nothing
/// follows a close; a msg_id is acked only once it is durable (a batch holding it committed, or
/// the store found it stored before); there are never more acks than records the device sent.
pub fn generic_session(data: &[u8]) {
    use crate::generic_session::{Action, Session, Stored};
    use std::cell::Cell;
    use std::collections::HashSet;
    use std::rc::Rc;

    type Batch = Rc<Cell<Option<bool>>>;
    struct World {
        closed: bool,
        /// msg_ids a committed batch holds, or that were stored before.
        durable: HashSet<String>,
        /// Store and Seen actions: each is one record the device sent.
        records: usize,
        acks: usize,
    }
    impl World {
        fn check(&mut self, actions: &[Action]) {
            for a in actions {
                match a {
                    Action::Send(f) => {
                        assert!(!self.closed, "a frame after close: {f}");
                        assert_json("server frame", f);
                        let mut b = f.clone().into_bytes();
                        if let Ok(v) = simd_json::to_owned_value(&mut b)
                            && v.get("type").and_then(|t| t.as_str()) == Some("ack")
                        {
                            let m = v.get("msg_id").map(json::encode).unwrap_or_default();
                            assert!(self.durable.contains(&m), "{m} acked before it is durable");
                            self.acks += 1;
                        }
                    }
                    Action::Close(..) => self.closed = true,
                    Action::Store { .. } | Action::Seen(_) => {
                        assert!(!self.closed, "an action after close: {a:?}");
                        self.records += 1;
                    }
                    _ => assert!(!self.closed, "an action after close: {a:?}"),
                }
            }
            assert!(self.acks <= self.records, "more acks than records sent");
        }
    }
    let dev = "0190f3a2-7c4e-7d1a-9b2f-3c4d5e6f7a8b";
    let now = "2026-06-12T07:00:00.000Z";
    let mut s: Session<Batch> = Session::default();
    let mut staged: Vec<(Batch, Option<String>)> = Vec::new();
    let mut w = World {
        closed: false,
        durable: HashSet::new(),
        records: 0,
        acks: 0,
    };
    for raw in data.split(|&b| b == b'\n') {
        let Some((&knob, frame)) = raw.split_first() else {
            continue;
        };
        let actions = s.on_frame(&mut frame.to_vec());
        w.check(&actions);
        for a in actions {
            let answer = match a {
                Action::Register { .. } if knob & 1 == 0 => {
                    vec![Action::Send(s.registered(dev.to_string(), now))]
                }
                Action::Subscribe { .. } if knob & 1 == 0 => {
                    vec![Action::Send(s.subscribed(knob & 2 == 0, now))]
                }
                Action::Register { .. } | Action::Subscribe { .. } => {
                    s.refused("auth_failed", "no", (1008, "authentication failed"))
                }
                Action::Store { msg_id, .. } => {
                    let outcome = match knob % 5 {
                        0 => {
                            w.durable.extend(msg_id.clone());
                            Stored::Duplicate
                        }
                        1 => Stored::Failed,
                        _ => {
                            let b: Batch = Rc::new(Cell::new(None));
                            staged.push((b.clone(), msg_id.clone()));
                            Stored::Staged(b)
                        }
                    };
                    s.stored(msg_id, outcome)
                }
                _ => Vec::new(),
            };
            w.check(&answer);
        }
        // Some batches resolve, oldest first, as a shard's batches do.
        let commit = knob & 8 == 0;
        for (b, m) in staged
            .iter()
            .filter(|(b, _)| b.get().is_none())
            .take(usize::from(knob >> 4))
        {
            b.set(Some(commit));
            if commit {
                w.durable.extend(m.clone());
            }
        }
        let answers = s.acks(|b| b.get());
        w.check(&answers);
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal conversations

/// Actions one call may return at most: the most any step needs is four (a paged reply's store,
/// its next request, a position and a result).
const MAX_ACTIONS: usize = 8;

/// The runtime's side of a conversation, as far as the conversation can tell.
struct Runtime {
    now: Timestamp,
    /// How the next `Identify` is answered: `U`nknown, `R`efused, else known.
    answer: u8,
    /// How `CheckAccess` is answered: the policy, and the asked ids that are even count as
    /// enrolled.
    policy: AccessPolicy,
    token: Option<String>,
    position: u64,
    commands: u32,
    /// Commands started and not finished.
    outstanding: Vec<String>,
    closed: bool,
    well_formed: fn(&str) -> bool,
}

impl Runtime {
    fn new(well_formed: fn(&str) -> bool) -> Runtime {
        Runtime {
            now: "2026-06-12T07:00:00Z".parse().unwrap(),
            answer: b'K',
            policy: AccessPolicy::default(),
            token: None,
            position: 0,
            commands: 0,
            outstanding: Vec::new(),
            closed: false,
            well_formed,
        }
    }

    fn frame_ok(&self, what: &str, f: &str) {
        assert!((self.well_formed)(f), "{what} is not well-formed: {f:?}");
    }

    /// Performs `actions` as the shard's terminal executor does; answers `Identify` at once.
    fn perform<C: Conversation>(&mut self, c: &mut C, actions: Vec<Action>, from_known: bool) {
        assert!(
            actions.len() <= MAX_ACTIONS,
            "{} actions from one call: {actions:?}",
            actions.len()
        );
        let mut identities = 0;
        for a in actions {
            match a {
                Action::Send(f) => self.frame_ok("frame", &f),
                Action::Identify { serial, .. } => {
                    assert!(!serial.is_empty());
                    identities += 1;
                }
                Action::Online => {
                    assert!(from_known, "Online without a known identity");
                    assert!(c.is_authenticated(), "Online but not authenticated");
                }
                Action::SaveToken(t) => self.token = Some(t),
                Action::CheckAccess { enrollids } => {
                    assert!(c.is_authenticated(), "CheckAccess before authentication");
                    let facts = AccessFacts {
                        policy: self.policy,
                        enrolled: enrollids.into_iter().filter(|id| id % 2 == 0).collect(),
                    };
                    let out = c.on_access(facts, self.now);
                    self.perform(c, out, false);
                }
                Action::StoreRecords {
                    records,
                    on_stored,
                    on_failed,
                } => {
                    for r in &records {
                        // The executor normalises each record so; it must not panic.
                        if let Ok(p) = attendance::parse_record(r) {
                            check_punch(&p);
                        }
                    }
                    for f in on_stored.iter().chain(&on_failed) {
                        self.frame_ok("store reply", f);
                    }
                }
                Action::Event {
                    payload,
                    on_stored,
                    on_failed,
                    kind,
                } => {
                    assert!(!kind.is_empty());
                    assert_json("event payload", &payload);
                    for f in on_stored.iter().chain(&on_failed) {
                        self.frame_ok("event reply", f);
                    }
                }
                Action::StoreUser {
                    payload,
                    on_stored,
                    on_failed,
                    ..
                } => {
                    assert_json("user payload", &payload);
                    for f in on_stored.iter().chain(&on_failed) {
                        self.frame_ok("user reply", f);
                    }
                }
                Action::CommandDone {
                    command_id, result, ..
                } => {
                    let at = self
                        .outstanding
                        .iter()
                        .position(|id| *id == command_id)
                        .unwrap_or_else(|| panic!("{command_id} finished but is not outstanding"));
                    self.outstanding.remove(at);
                    assert_json("command result", &result);
                }
                Action::SavePosition(p) => self.position = p,
                Action::Unrecognised(name) => assert!(
                    name.len() <= crate::terminal::MAX_UNRECOGNISED,
                    "an unrecognised name is bounded: {} bytes",
                    name.len()
                ),
                Action::Close(reason) => {
                    assert!(!reason.is_empty());
                    self.closed = true;
                }
            }
        }
        if c.is_idle() {
            assert!(c.is_authenticated());
            assert!(
                self.outstanding.is_empty(),
                "idle with {:?}",
                self.outstanding
            );
        }
        for _ in 0..identities {
            if self.closed {
                return;
            }
            let known = !matches!(self.answer, b'U' | b'R');
            let identity = match self.answer {
                b'U' => Identity::Unknown,
                b'R' => Identity::Refused,
                _ => Identity::Known(Known {
                    device_id: "dev-1".into(),
                    zone: Some(TimeZone::fixed(Offset::constant(2))),
                    token: self.token.clone(),
                    log_position: self.position,
                }),
            };
            let out = c.on_identity(identity, self.now);
            self.perform(c, out, known);
        }
    }
}

fn check_punch(p: &attendance::Punch) {
    assert!(
        p.photo
            .as_ref()
            .is_none_or(|b| b.len() <= attendance::MAX_PHOTO)
    );
    assert_json("record fields", &p.fields);
    let _ = p.identity();
    let _ = p.utc(&TimeZone::UTC);
    let _ = p.utc(&TimeZone::fixed(Offset::constant(-11)));
}

/// Drives a conversation from a script: the input split at NUL bytes, each piece one step.
/// `T` + 2 bytes: that many seconds pass, then a tick. `I` + `U`/`R`/other: how identity queries
/// are answered from now on (unknown, refused, known). `A` + rule (`d`eny, `e`nrolled, else
/// allow) + format (`b`ool, else int): how access questions are answered from now on.
/// `C` + `name payload`: an operator's command. Anything else: a text frame from the terminal.
/// `Identify` and `CheckAccess` are answered right after the call that asked.
fn converse<C: Conversation>(c: &mut C, data: &[u8], well_formed: fn(&str) -> bool) {
    let mut rt = Runtime::new(well_formed);
    for step in data.split(|&b| b == 0) {
        if rt.closed {
            return;
        }
        match step {
            [b'T', hi, lo, ..] => {
                let secs = i64::from(u16::from_be_bytes([*hi, *lo]));
                rt.now = rt
                    .now
                    .saturating_add(SignedDuration::from_secs(secs))
                    .unwrap();
                let out = c.on_tick(rt.now);
                rt.perform(c, out, false);
            }
            [b'I', answer, ..] => rt.answer = *answer,
            [b'A', rule, format, ..] => {
                rt.policy = AccessPolicy {
                    rule: match rule {
                        b'd' => AccessRule::Deny,
                        b'e' => AccessRule::Enrolled,
                        _ => AccessRule::Allow,
                    },
                    format: match format {
                        b'b' => AccessFormat::Bool,
                        _ => AccessFormat::Int,
                    },
                };
            }
            [b'C', rest @ ..] => {
                let rest = String::from_utf8_lossy(rest);
                let (name, payload) = rest.split_once(' ').unwrap_or((&rest, "{}"));
                let mut text = payload.as_bytes().to_vec();
                let n = lenient::strip_trailing_commas(&mut text);
                text.truncate(n);
                let payload = if lenient::too_deep(&text, lenient::MAX_JSON_DEPTH) {
                    OwnedValue::null()
                } else {
                    simd_json::to_owned_value(&mut text).unwrap_or_else(|_| OwnedValue::null())
                };
                rt.commands += 1;
                let id = format!("c{}", rt.commands);
                let idle = c.is_idle();
                match c.start_command(&id, name, &payload, rt.now) {
                    Ok(out) => {
                        assert!(idle, "a command started while not idle");
                        rt.outstanding.push(id);
                        rt.perform(c, out, false);
                    }
                    Err(CommandError::Busy) => assert!(!idle, "Busy while idle"),
                    Err(CommandError::NotReady) => assert!(!c.is_authenticated()),
                    Err(CommandError::Invalid(m)) => assert!(!m.is_empty()),
                }
            }
            frame => {
                let mut frame = frame.to_vec();
                let out = c.on_frame(&mut frame, rt.now);
                rt.perform(c, out, false);
            }
        }
        // As the runtime does once a session is idle and no operator command waits.
        if !rt.closed && c.is_idle() {
            let out = c.resume(rt.now);
            rt.perform(c, out, false);
        }
    }
}

fn json_object(f: &str) -> bool {
    simd_json::to_owned_value(&mut f.as_bytes().to_vec()).is_ok_and(|v| v.is_object())
}

fn xml_document(f: &str) -> bool {
    let mut reader = quick_xml::Reader::from_str(f);
    let mut depth = 0usize;
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Err(_) => return false,
            Ok(quick_xml::events::Event::Eof) => return depth == 0 && elements > 0,
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(_) => {}
        }
    }
}

/// The AiFace conversation (see `converse` for the input's shape).
pub fn aiface(data: &[u8]) {
    let mut s = crate::aiface::Session::new(crate::aiface::DEFAULT_TIMEOUT);
    converse(&mut s, data, json_object);
}

/// The SmackBio conversation, either dialect (see `converse` for the input's shape).
pub fn smackbio(data: &[u8]) {
    let mut s = crate::smackbio::Session::new(
        crate::smackbio::DEFAULT_COMMAND_TIMEOUT,
        0x1111_1111_1111_1111,
    );
    converse(&mut s, data, |f| xml_document(f) || json_object(f));
}

// ---------------------------------------------------------------------------------------------
// HTTP devices

/// A `POST /api/device-http` body: read as the server does, each `sendlog` record normalised,
/// and every answer well-formed JSON.
pub fn device_http(data: &[u8]) {
    let body = match device_http::parse(Some("application/json"), data) {
        Ok(b) => b,
        Err(r) => {
            if let device_http::Rejection::Refused { ret, .. } = &r {
                assert_json("refusal", std::str::from_utf8(&r.response().body).unwrap());
                let _ = ret;
            }
            return;
        }
    };
    assert!(!body.sn.is_empty() && body.sn.len() <= device_http::MAX_SERIAL);
    if let Some(d) = &body.devinfo {
        assert_json("devinfo", d);
    }
    match &body.payload {
        device_http::Payload::Reg(Ok(info)) => {
            assert!(info.len() <= device_http::MAX_INFO);
            assert_json("info", info);
        }
        device_http::Payload::Sendlog(Ok(records)) => {
            assert!(records.len() <= attendance::MAX_RECORDS);
            for r in records {
                match attendance::parse_record(r) {
                    Ok(p) => check_punch(&p),
                    Err(e) => assert!(!e.0.is_empty()),
                }
            }
        }
        device_http::Payload::Reg(Err(reason)) | device_http::Payload::Sendlog(Err(reason)) => {
            let r = device_http::refuse(body.cmd.as_str(), reason);
            assert_json("refusal", std::str::from_utf8(&r.body).unwrap());
        }
        device_http::Payload::Checklive => {}
    }
    let ms = data
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    // Any instant before 2100.
    let now = Timestamp::from_millisecond((ms % 4_102_444_800_000) as i64).unwrap();
    let done = match body.cmd {
        device_http::Cmd::Reg => device_http::Done::Reg,
        device_http::Cmd::Checklive => device_http::Done::Checklive,
        device_http::Cmd::Sendlog => device_http::Done::Sendlog {
            count: match &body.payload {
                device_http::Payload::Sendlog(Ok(records)) => records.len(),
                _ => 0,
            },
            logindex: body.logindex.as_deref(),
        },
    };
    // The clock rule's three cases: a zone, the offset the device's own clock shows, nothing.
    let mut shown = crate::clock::Clock::new(None);
    if let Some(t) = body.device_time {
        let _ = shown.observe(t, now);
    }
    for clock in [
        crate::clock::Clock::new(Some(TimeZone::UTC)),
        crate::clock::Clock::new(Some(TimeZone::fixed(Offset::constant(14)))),
        shown,
    ] {
        let r = device_http::ok(done, now, &clock);
        assert_json("answer", std::str::from_utf8(&r.body).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol

/// `proxy_header::parse`: a header never claims more bytes than it was given or than the bound;
/// a verdict reached on a prefix (header, absent, error) stands for the whole input; and every
/// prefix of a header is `Partial`, so a reader that waits for more bytes never misreads one.
pub fn proxy_header(data: &[u8]) {
    use crate::proxy_header::{MAX, Parsed, parse};
    let whole = parse(data);
    if let Ok(Parsed::Header { len, .. }) = &whole {
        assert!(*len <= data.len() && *len <= MAX, "{len}");
        assert_eq!(
            parse(&data[..*len]),
            whole,
            "a header parses from its own bytes"
        );
    }
    for cut in 0..data.len().min(MAX + 1) {
        match parse(&data[..cut]) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Header { len, source }) => {
                assert_eq!(whole, Ok(Parsed::Header { len, source }), "cut at {cut}")
            }
            Ok(Parsed::Absent) => assert_eq!(whole, Ok(Parsed::Absent), "cut at {cut}"),
            Err(_) => assert!(whole.is_err(), "cut at {cut}"),
        }
        if let Ok(Parsed::Header { len, .. }) = whole
            && cut < len
        {
            assert_eq!(parse(&data[..cut]), Ok(Parsed::Partial), "cut at {cut}");
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// ZKTeco ADMS: the first byte `b` picks what the input is; the rest is split at the first NUL.
/// `b % 16` < 8: a request to endpoint `b % 4` (cdata, getrequest, devicecmd, ping) with that
/// endpoint's own method, or the other one when `b & 4` is set; the query before the NUL and
/// the body after. Otherwise an operator's command: its name before the NUL, its payload (JSON
/// text) after.
///
/// Checked: every piece the server stores is JSON (info, answers' fields, `OPERLOG` payloads,
/// punches' fields), every `ATTLOG` line is one record, a photo is within `MAX_PHOTO`, and no
/// answer or command line can carry a line break the server did not write: the option block has
/// its fixed lines whatever the serial and stamps, and a command is one line (a break in one
/// would hand the terminal a second command nobody queued).
pub fn zkteco(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    if sel % 16 >= 8 {
        let payload = String::from_utf8_lossy(body);
        let wall = jiff::civil::DateTime::new(2026, 6, 12, 9, 0, 0, 0).unwrap();
        if let Ok(line) = adms::command::line(&head, &payload, wall) {
            assert!(
                !line.contains(['\r', '\n']),
                "a command line with a break: {line:?}"
            );
            assert!(!line.is_empty());
        }
        return;
    }
    let endpoint = [
        adms::Endpoint::Cdata,
        adms::Endpoint::GetRequest,
        adms::Endpoint::DeviceCmd,
        adms::Endpoint::Ping,
    ][usize::from(sel % 4)];
    let post = matches!(endpoint, adms::Endpoint::DeviceCmd) != (sel & 4 != 0);
    let method = if post {
        http::request::Method::Post
    } else {
        http::request::Method::Get
    };
    let incoming = match adms::read(endpoint, method, &head, body) {
        Ok(i) => i,
        Err(r) => {
            assert!(r.status == 400 || r.status == 405);
            assert!(std::str::from_utf8(&r.response().body).is_ok());
            return;
        }
    };
    assert!(!incoming.serial.is_empty() && incoming.serial.len() <= adms::MAX_SERIAL);
    assert!(!incoming.serial.contains(['\r', '\n']));
    let mut stamp_seen = None;
    match incoming.call {
        adms::Call::Handshake { info } => assert_json("handshake info", &info),
        adms::Call::Poll { info } => {
            if let Some(i) = info {
                assert_json("poll info", &i);
            }
        }
        adms::Call::Results(rs) => {
            for r in rs {
                assert!(!r.id.is_empty());
                assert_json("answer fields", &r.fields);
            }
        }
        adms::Call::Ping => {}
        adms::Call::Upload { table, stamp, body } => {
            if let Some(s) = &stamp {
                assert!(s.len() <= adms::MAX_STAMP && !s.contains(['\r', '\n', ' ']));
            }
            stamp_seen = stamp;
            match table {
                adms::Table::Attlog => {
                    let records = adms::tables::attlog(body);
                    assert_eq!(records.len(), adms::tables::count_lines(body));
                    for r in &records {
                        match attendance::parse_record(r) {
                            Ok(p) => check_punch(&p),
                            Err(e) => assert!(!e.0.is_empty()),
                        }
                    }
                }
                adms::Table::Operlog | adms::Table::Other(_) => {
                    for l in adms::tables::operlog(body) {
                        match l {
                            adms::tables::OperLine::Enrolled {
                                payload,
                                backupnum,
                                pin,
                            } => {
                                assert!(pin > 0);
                                assert!(backupnum.is_none_or(|b| b <= 50));
                                assert_json("enrolled payload", &payload);
                            }
                            adms::tables::OperLine::Operation { payload, .. } => {
                                assert_json("operation payload", &payload)
                            }
                            adms::tables::OperLine::Unread { line } => {
                                assert!(!line.contains('\n'))
                            }
                        }
                    }
                }
                adms::Table::Attphoto => {
                    if let Ok(p) = adms::tables::attphoto(body) {
                        assert!(p.photo.len() <= attendance::MAX_PHOTO && p.pin > 0);
                        let _ = attendance::identity(p.pin, &p.local, None);
                    }
                }
                adms::Table::Options => assert_json("options", &adms::tables::options(body)),
            }
        }
    }
    let stamps: Vec<(&'static str, &str)> = stamp_seen
        .as_deref()
        .map(|s| vec![("ATTLOGStamp", s)])
        .unwrap_or_default();
    let reply = adms::options_reply(
        &incoming.serial,
        &adms::Options {
            stamps: &stamps,
            zone: Some(&TimeZone::UTC),
        },
        Timestamp::UNIX_EPOCH,
    );
    let text = String::from_utf8(reply.body).unwrap();
    assert_eq!(text.matches("\r\n").count(), 12, "{text:?}");
    assert_eq!(text.matches('\n').count(), 12, "{text:?}");
}
