//! A biometric terminal's socket as the tests drive one: raw text frames (SmackBio speaks XML, so
//! nothing is parsed here), from the default or a chosen loopback source address.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use super::{SOON, opt_s, tcp_from};

/// What a terminal's socket gave before a deadline.
pub enum Next {
    Text(String),
    /// The server closed the session (a close frame or the connection ending).
    Closed,
    /// Nothing before the deadline.
    Quiet,
}

pub struct Term {
    pub ws: WebSocket<TcpStream>,
}

impl Term {
    pub fn connect(addr: &str) -> Term {
        Term::connect_path(addr, "/ws")
    }

    /// On another WebSocket path, as firmware with a fixed one connects (`/pub/chat`).
    pub fn connect_path(addr: &str, path: &str) -> Term {
        Term::over(TcpStream::connect(addr).expect("connect"), addr, path)
    }

    /// From the loopback source address `src` (e.g. "127.0.0.2").
    pub fn connect_from(src: &str, addr: &str) -> Term {
        Term::over(tcp_from(src, addr), addr, "/ws")
    }

    fn over(stream: TcpStream, addr: &str, path: &str) -> Term {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("handshake");
        Term { ws }
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).expect("send");
    }

    /// The next text frame before `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Next {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Next::Text(t.to_string()),
                Ok(Message::Close(_)) => return Next::Closed,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Next::Quiet;
                    }
                }
                Err(_) => return Next::Closed,
            }
        }
    }

    /// Reads frames until one satisfies `want`, answering the others with `answer` (the server's
    /// own backfill and clock requests may come first).
    pub fn until(
        &mut self,
        what: &str,
        mut want: impl FnMut(&str) -> bool,
        mut answer: impl FnMut(&str) -> Option<String>,
    ) -> String {
        let deadline = Instant::now() + SOON;
        let mut seen = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Text(f) if want(&f) => return f,
                Next::Text(f) => {
                    if let Some(reply) = answer(&f) {
                        self.send(&reply);
                    }
                    seen.push(f);
                }
                Next::Closed => panic!("closed waiting for {what}; frames seen: {seen:#?}"),
                Next::Quiet => {
                    panic!("no frame with {what} within {SOON:?}; frames seen: {seen:#?}")
                }
            }
        }
    }
}

/// What an AiFace terminal with no stored logs answers to the server's setup requests: an empty
/// log page ends the backfill, everything else succeeds.
pub fn aiface_answer(f: &str) -> Option<String> {
    let mut b = f.as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut b).ok()?;
    match opt_s(&v, "cmd") {
        Some("getnewlog") => Some(
            r#"{"ret":"getnewlog","result":true,"count":0,"from":0,"to":0,"record":[]}"#.into(),
        ),
        Some(c) => Some(format!(r#"{{"ret":"{c}","result":true}}"#)),
        None => None,
    }
}

/// The tag's text in an XML frame (first occurrence), trimmed.
pub fn tag<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = frame.find(&open)? + open.len();
    let end = frame[start..].find(&format!("</{name}>"))? + start;
    Some(frame[start..end].trim())
}
