//! A biometric terminal's socket as the tests drive one: raw text frames (SmackBio speaks XML, so
//! nothing is parsed here), from the default or a chosen loopback source address.

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::{Message, WebSocket};

use super::tcp_from;

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
}
