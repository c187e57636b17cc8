//! One TCP connection from accept to close: HTTP/1.1 requests with keep-alive, until the connection
//! asks for a WebSocket upgrade on one of the WebSocket paths (`/ws`, `/pub/chat`, `--ws-paths`),
//! which hands it to `ws_session`. Every other request goes
//! to the `Handler` the app wired in: the runtime knows how to carry requests, not what they mean.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::http::forwarded;
use crate::http::request::{self, Limits, Parse};
use crate::http::response::Response;
use crate::proxy_header;
use crate::shard::handler::{Chunked, Reply};
use crate::shard::io::Transport;
use crate::shard::local::{CloseReason, ConnCtl, Deadline, Local, flush, out_buf};
use crate::shard::tls::{HANDSHAKE_RECORD, TlsStream};
use crate::shard::ws_session;
use crate::time::now_ms;

pub async fn serve<T: Transport>(local: &Rc<Local>, ctl: &Rc<ConnCtl>, io: T) {
    // Nothing has named another client yet: `client` is the TCP peer here. Boxed: the preamble's
    // state must not size every connection's task.
    if local.trusted_proxy(ctl.client().ip()) && !Box::pin(proxy_preamble(local, ctl, &io)).await {
        return;
    }
    if let Some(tls) = local.shared.tls.clone() {
        match first_byte(local, ctl, &io).await {
            // Boxed, the TLS session's setup included: rustls's connection state is large, and
            // plain sessions must not reserve room for it in their own task.
            FirstByte::Tls => return Box::pin(serve_tls(local, ctl, io, tls)).await,
            FirstByte::Plain => {}
            FirstByte::Gone => return,
        }
    }
    serve_then_upgrade(local, ctl, io).await
}

async fn serve_tls<T: Transport>(
    local: &Rc<Local>,
    ctl: &Rc<ConnCtl>,
    io: T,
    tls: std::sync::Arc<rustls::ServerConfig>,
) {
    match TlsStream::new(io, tls) {
        Ok(io) => serve_then_upgrade(local, ctl, io).await,
        Err(e) => tracing::warn!(error = %e, "TLS session setup failed"),
    }
}

/// HTTP requests, then the WebSocket session if one was asked for. The HTTP loop's future is
/// boxed and gone before the session starts: a held session's task is only as large as the
/// session's own state, neither the sum of both nor the larger of the two.
async fn serve_then_upgrade<T: Transport>(local: &Rc<Local>, ctl: &Rc<ConnCtl>, io: T) {
    if let Some(upgrade) = Box::pin(serve_http(local, ctl, io)).await {
        ws_session::upgrade(local, ctl, upgrade).await;
    }
}

/// A trusted proxy may open the connection with a PROXY header (v1 or v2) naming the client. Reads
/// that header, and only it, off the socket, and makes its client the connection's (counted toward
/// `--max-connections-per-ip` from then on). Without a header, the connection is the proxy's own
/// (its requests may name clients in `X-Forwarded-For`). False when the connection is over: a
/// malformed header, the peer gone, or no header within `--header-timeout`.
async fn proxy_preamble<T: Transport>(local: &Local, ctl: &ConnCtl, io: &T) -> bool {
    local.set_deadline(
        ctl,
        now_ms() + local.limits().header_timeout * 1000,
        Deadline::Header,
    );
    let mut buf = vec![0u8; proxy_header::MAX];
    loop {
        if ctl.close.get().is_some() {
            return false;
        }
        tokio::select! {
            biased;
            _ = ctl.wake.notified() => continue,
            r = io.readable() => if r.is_err() { return false },
        }
        let n = match io.peek_into(&mut buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return false,
        };
        match proxy_header::parse(&buf[..n]) {
            Ok(proxy_header::Parsed::Absent) => return true,
            Ok(proxy_header::Parsed::Header { len, source }) => {
                if io.discard(len).is_err() {
                    return false;
                }
                if let Some(client) = source {
                    ctl.set_client(client);
                    // At its limit, the connection goes on only to be answered 429 and closed.
                    local.count_connection(ctl);
                }
                return true;
            }
            // Part of a header has come: the socket stays readable, so wait a moment for the rest
            // instead of spinning on it.
            Ok(proxy_header::Parsed::Partial) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Err(e) => {
                tracing::warn!(peer = %ctl.client(), error = %e, "closing a trusted proxy's connection");
                return false;
            }
        }
    }
}

/// The client behind `req`: the connection's, unless that is a trusted proxy whose
/// `X-Forwarded-For` names someone (requests on one proxy connection may come from different
/// clients, so this is per request).
fn request_client(local: &Local, ctl: &ConnCtl, req: &crate::http::request::Request) -> SocketAddr {
    let conn = ctl.client();
    if !local.trusted_proxy(conn.ip()) {
        return conn;
    }
    let values = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok());
    forwarded::client(values, |ip| local.trusted_proxy(ip))
        .map_or(conn, |ip| SocketAddr::new(ip, 0))
}

/// Makes the client `X-Forwarded-For` names (if the peer is a trusted proxy) the connection's own,
/// counted toward `--max-connections-per-ip`; false when that client is at its limit. A function
/// of its own so the address is not held across the upgrade's awaits: every connection's task is
/// as large as what its awaits hold.
fn take_forwarded_client(
    local: &Local,
    ctl: &ConnCtl,
    req: &crate::http::request::Request,
) -> bool {
    let client = request_client(local, ctl, req);
    if client == ctl.client() {
        return true;
    }
    // A proxy the PROXY header named may itself forward for another.
    local.uncount_connection(ctl);
    ctl.set_client(client);
    local.count_connection(ctl)
}

enum FirstByte {
    Tls,
    Plain,
    Gone,
}

/// With TLS configured, plain and TLS clients share the port: waits (under the header deadline)
/// for the first byte and tells them apart. A connection closed meanwhile (limits, deadline) goes
/// the plain way, which answers in clear text where an answer is due.
async fn first_byte<T: Transport>(local: &Local, ctl: &ConnCtl, io: &T) -> FirstByte {
    local.set_deadline(
        ctl,
        now_ms() + local.limits().header_timeout * 1000,
        Deadline::Header,
    );
    loop {
        if ctl.close.get().is_some() {
            return FirstByte::Plain;
        }
        tokio::select! {
            biased;
            _ = ctl.wake.notified() => continue,
            r = io.readable() => if r.is_err() { return FirstByte::Gone },
        }
        match io.peek() {
            Ok(Some(HANDSHAKE_RECORD)) => return FirstByte::Tls,
            Ok(Some(_)) => return FirstByte::Plain,
            Ok(None) => return FirstByte::Gone,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return FirstByte::Gone,
        }
    }
}

/// Serves HTTP requests until the connection ends, or until one asks for a WebSocket on one of
/// the WebSocket paths: that request comes back, with the connection and the bytes read past it
/// (their buffer still charged to the budget, which the session refunds).
async fn serve_http<T: Transport>(
    local: &Rc<Local>,
    ctl: &Rc<ConnCtl>,
    io: T,
) -> Option<Box<ws_session::Upgrade<T>>> {
    let mut inbuf = Vec::new();
    match requests(local, ctl, &io, &mut inbuf).await {
        Some(request) => Some(Box::new(ws_session::Upgrade {
            io,
            request,
            leftover: inbuf,
        })),
        None => {
            // However the connection ended, its read buffer goes back: a buffer dropped instead
            // would stay charged to the budget, and enough of them starve every connection.
            if inbuf.capacity() > 0 {
                local.give_in_buf(inbuf);
            }
            None
        }
    }
}

/// The request loop of `serve_http`, reading into `inbuf`; the WebSocket upgrade request if one
/// ends it.
async fn requests<T: Transport>(
    local: &Rc<Local>,
    ctl: &Rc<ConnCtl>,
    io: &T,
    inbuf: &mut Vec<u8>,
) -> Option<request::Request> {
    let cfg = local.limits();
    let limits = Limits {
        max_body: cfg.max_body,
        upload: cfg.upload,
        ..Limits::default()
    };
    let keepalive_ms = cfg.keepalive_timeout * 1000;
    let header_ms = cfg.header_timeout * 1000;
    let mut out: Vec<u8> = Vec::new();
    let mut sent_continue = false;
    local.set_deadline(ctl, now_ms() + keepalive_ms, Deadline::KeepAlive);
    loop {
        if let Some(why) = ctl.close.get() {
            let answer = match (why, inbuf.is_empty()) {
                (CloseReason::ConnectionLimit, _) => Some(Response::error(
                    503,
                    "overloaded",
                    "the server is at its connection limit; retry later",
                )),
                (CloseReason::AddressLimit, _) => Some(Response::error(
                    429,
                    "too_many_connections",
                    "too many open connections from your address; close some and retry",
                )),
                (CloseReason::DeadlinePassed, false) => Some(Response::error(
                    408,
                    "request_timeout",
                    "the request head did not arrive in time",
                )),
                _ => None,
            };
            if let Some(r) = answer {
                r.write_to(out_buf(local, &mut out), false, false);
                let _ = flush(io, local, &mut out).await;
            }
            break;
        }
        // A connection holding no buffer waits for one while the shard is over its budget.
        let starved = inbuf.capacity() == 0 && local.in_budget_full();
        tokio::select! {
            biased;
            _ = ctl.wake.notified() => continue,
            _ = local.in_buf_freed(), if starved => continue,
            r = io.readable(), if !starved => if r.is_err() { break },
        }
        if inbuf.capacity() == 0 {
            *inbuf = local.take_in_buf();
        }
        let before = inbuf.capacity();
        let (res, buf) = io.read(std::mem::take(inbuf)).await;
        *inbuf = buf;
        if !local.in_buf_grew(before, inbuf.capacity()) {
            Response::error(
                503,
                "server_busy",
                "the server's buffer budget is exhausted; retry later",
            )
            .with_header("Retry-After", "1".to_string())
            .write_to(out_buf(local, &mut out), false, false);
            let _ = flush(io, local, &mut out).await;
            break;
        }
        match res {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if inbuf.is_empty() {
                    local.give_in_buf(std::mem::take(inbuf));
                }
                continue;
            }
            Ok(0) | Err(_) => break,
            Ok(n) => local.metrics.bytes_in.increment(n as u64),
        }
        loop {
            match request::parse(inbuf, &limits) {
                Ok(Parse::Partial { expect_continue }) => {
                    if expect_continue && !sent_continue {
                        sent_continue = true;
                        out_buf(local, &mut out)
                            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    if ctl.deadline().1 != Deadline::Header {
                        local.set_deadline(ctl, now_ms() + header_ms, Deadline::Header);
                    }
                    break;
                }
                Ok(Parse::Complete {
                    mut request,
                    consumed,
                }) => {
                    request.secure = io.is_tls();
                    inbuf.drain(..consumed);
                    sent_continue = false;
                    local.metrics.http_requests.increment(1);
                    if request.is_websocket_upgrade()
                        && local.limits().ws_paths.contains(&request.path)
                    {
                        // The WebSocket is this client's alone from now on: it counts toward the
                        // client's address (at its limit: answered 429 and closed, above).
                        if !take_forwarded_client(local, ctl, &request) {
                            break;
                        }
                        if flush(io, local, &mut out).await.is_err() {
                            return None;
                        }
                        return Some(request);
                    }
                    let head_only = matches!(request.method, crate::http::request::Method::Head);
                    let keep_alive = request.keep_alive && !local.shutting_down.get();
                    // Per request: one proxy connection carries requests of many clients.
                    let remote = request_client(local, ctl, &request);
                    let handler = local.shared.handler.clone();
                    match handler.route(local, &request, remote).await {
                        Reply::Full(response) => {
                            response.write_to(out_buf(local, &mut out), keep_alive, head_only)
                        }
                        Reply::Chunked(body) => {
                            let sent =
                                stream_chunked(local, io, &mut out, body, keep_alive, head_only);
                            if Box::pin(sent).await.is_err() {
                                return None;
                            }
                        }
                    }
                    if !keep_alive {
                        let _ = flush(io, local, &mut out).await;
                        return None;
                    }
                    local.set_deadline(ctl, now_ms() + keepalive_ms, Deadline::KeepAlive);
                }
                Err(e) => {
                    Response::error(e.status, e.code, &e.message).write_to(
                        out_buf(local, &mut out),
                        false,
                        false,
                    );
                    let _ = flush(io, local, &mut out).await;
                    return None;
                }
            }
        }
        if flush(io, local, &mut out).await.is_err() {
            break;
        }
        if inbuf.is_empty() {
            local.give_in_buf(std::mem::take(inbuf));
        }
    }
    None
}

/// Streams a chunked body: one chunk in memory at a time, each written before the next is made.
async fn stream_chunked<T: Transport>(
    local: &Local,
    io: &T,
    out: &mut Vec<u8>,
    mut body: Chunked,
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    let disposition = body
        .filename
        .map(|f| format!("Content-Disposition: attachment; filename=\"{f}\"\r\n"))
        .unwrap_or_default();
    out_buf(local, out).extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n{disposition}Transfer-Encoding: chunked\r\nConnection: {conn}\r\n\r\n",
            body.content_type
        )
        .as_bytes(),
    );
    if head_only {
        return flush(io, local, out).await;
    }
    let mut chunk = Vec::new();
    loop {
        let more = body.body.next_chunk(&mut chunk).map_err(|e| {
            tracing::error!(error = %e, "chunked response failed mid-stream");
            std::io::Error::other(e)
        })?;
        if !chunk.is_empty() {
            let o = out_buf(local, out);
            o.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            o.extend_from_slice(&chunk);
            o.extend_from_slice(b"\r\n");
            chunk.clear();
            flush(io, local, out).await?;
        }
        if !more {
            break;
        }
    }
    out_buf(local, out).extend_from_slice(b"0\r\n\r\n");
    flush(io, local, out).await
}
