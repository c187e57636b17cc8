//! A blocking admin-API client that keeps its connection alive.
//!
//! The command storm posts 1,000+ commands a second: opening a TCP connection per request (as the
//! server crate's CLI client does) would measure connection setup, not the API. One `Admin` is one
//! connection, used by one thread, one request at a time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use fleetgate_core::http::client::Response;

use crate::wire;

/// Bounds every read and write: a stuck server must not hang the harness.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Admin {
    addr: SocketAddr,
    host: String,
    token: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Admin {
    pub fn new(addr: SocketAddr, token: &str) -> Admin {
        Admin {
            addr,
            host: addr.to_string(),
            token: token.to_string(),
            stream: None,
            buf: Vec::new(),
        }
    }

    fn connect(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            self.buf.clear();
            self.stream = Some(s);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))
    }

    /// One request. A kept-alive connection the server has since closed fails before any answer
    /// arrives; `idempotent` requests are then sent once more on a fresh connection. A POST is
    /// not: it might have been executed.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        idempotent: bool,
    ) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_call(method, path, body) {
            Err(e) if reused && idempotent => {
                self.stream = None;
                let _ = e;
                self.try_call(method, path, body)
            }
            r => r,
        }
    }

    fn try_call(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Response> {
        let mut req = Vec::new();
        let body = body.map(|b| (wire::JSON, b));
        wire::request(&mut req, method, path, &self.host, Some(&self.token), body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let result = self.exchange(&req);
        match &result {
            Ok(r) if !r.closes() => {}
            // Closed by the server, or failed: the next call opens a new connection.
            _ => self.stream = None,
        }
        result
    }

    fn exchange(&mut self, req: &[u8]) -> io::Result<Response> {
        self.connect()?.write_all(req)?;
        let mut parser = wire::response_parser();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match parser.parse(&self.buf) {
                Ok(Some((resp, used))) => {
                    self.buf.drain(..used);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let stream = self.connect()?;
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                // A body that ends with the connection is complete now; anything else was cut
                // short (a kept-alive connection the server closed fails here, before any answer,
                // which is what `call` retries on). Either way the connection is spent.
                self.stream = None;
                return parser
                    .finish(&self.buf)
                    .map(|(resp, _)| resp)
                    .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The admin API's JSON answer as a value, with the status checked.
pub fn json_ok(resp: &Response, what: &str) -> Result<serde_json::Value, String> {
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "{what} answered {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|e| format!("{what}: invalid JSON: {e}"))
}
