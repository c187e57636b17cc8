//! The raw-sink baseline: a minimal WebSocket server that acks every text frame with
//! `{"type":"ack"}` and stores nothing. Driving it with the same client loop as the real server
//! measures what the box itself (loopback, syscalls, the harness) can do in the same run.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

const LISTENER: Token = Token(usize::MAX);
const ACK: &[u8] = br#"{"type":"ack"}"#;
/// Heads larger than this are not a WebSocket upgrade the harness sends; drop the connection.
const MAX_HEAD: usize = 8 * 1024;

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
    upgraded: bool,
    closing: bool,
}

fn serve(mut poll: Poll, listener: TcpListener, stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, SinkConn> = HashMap::new();
    let mut next = 0usize;
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
                                        upgraded: false,
                                        closing: false,
                                    },
                                );
                            }
                            next += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            eprintln!("raw-sink: accept failed: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let id = ev.token().0;
            let alive = match conns.get_mut(&id) {
                Some(c) => drive(c),
                None => continue,
            };
            if !alive && let Some(mut c) = conns.remove(&id) {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
}

/// Reads everything available, answers it, flushes. Returns false when the connection is done.
fn drive(c: &mut SinkConn) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    if !c.upgraded {
        let Some(end) = frame::head_end(&c.rbuf) else {
            return c.rbuf.len() <= MAX_HEAD;
        };
        let head = String::from_utf8_lossy(&c.rbuf[..end]).into_owned();
        let key = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        });
        let Some(key) = key else { return false };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        c.wbuf.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        );
        c.rbuf.drain(..end);
        c.upgraded = true;
    }
    let mut used = 0;
    while !c.closing {
        match frame::parse_frame(&c.rbuf[used..]) {
            Ok(Some((f, n))) => {
                used += n;
                match f.opcode {
                    OP_TEXT => frame::push_frame(&mut c.wbuf, OP_TEXT, ACK, None),
                    OP_PING => frame::push_frame(&mut c.wbuf, OP_PONG, &f.payload, None),
                    OP_CLOSE => {
                        frame::push_frame(&mut c.wbuf, OP_CLOSE, &f.payload, None);
                        c.closing = true;
                    }
                    // Binary, pong and continuation frames are read and discarded.
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    c.rbuf.drain(..used);
    while !c.wbuf.is_empty() {
        match c.stream.write(&c.wbuf) {
            Ok(0) => return false,
            Ok(n) => {
                c.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    !c.closing
}
