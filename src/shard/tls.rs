//! TLS as a third `Transport`: rustls's sans-IO `ServerConnection` over any other transport, so
//! session code serves `wss://` and `https://` unchanged. Ciphertext is read into the caller's
//! pooled buffer, handed to rustls, and the same buffer then receives the plaintext: a TLS session
//! holds no read buffer of ours between reads either (rustls keeps its own, small, state).
//!
//! The listener serves plain and TLS connections on one port: a TLS client's first byte is a
//! handshake record (0x16), which no HTTP request line starts with.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::shard::io::Transport;

/// The first byte of a TLS record carrying a handshake message.
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// Plaintext rustls buffers toward a slow peer before `write_all` waits for the socket.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// Loads `--tls-cert` (PEM chain, leaf first) and `--tls-key` (PEM PKCS#8, PKCS#1 or SEC1 key).
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not form a usable pair: {e}"))?;
    Ok(Arc::new(config))
}

pub struct TlsStream<T: Transport> {
    inner: T,
    // Borrowed only between awaits: the shard is single-threaded and no borrow spans a suspension.
    conn: RefCell<ServerConnection>,
}

impl<T: Transport> TlsStream<T> {
    pub fn new(inner: T, config: Arc<ServerConfig>) -> io::Result<Self> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        Ok(TlsStream {
            inner,
            conn: RefCell::new(conn),
        })
    }

    /// Writes whatever rustls has queued (handshake messages, alerts, records).
    async fn flush_tls(&self) -> io::Result<()> {
        loop {
            let mut out = Vec::new();
            {
                let mut conn = self.conn.borrow_mut();
                while conn.wants_write() {
                    conn.write_tls(&mut out)?;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let (res, _) = self.inner.write_all(out).await;
            res?;
        }
    }
}

/// Moves decrypted bytes into `out`; `Ok(true)` if the peer closed the TLS session cleanly.
fn drain_plaintext(conn: &mut ServerConnection, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

impl<T: Transport> Transport for TlsStream<T> {
    async fn readable(&self) -> io::Result<()> {
        // Every read drains all the plaintext rustls has, so data can only be waiting in the socket.
        self.inner.readable().await
    }

    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let start = buf.len();
        let (res, mut buf) = self.inner.read(buf).await;
        let eof = match res {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => return (Err(e), buf),
        };
        // Ciphertext in, plaintext out, interleaved: rustls holds at most 16 KiB of received
        // plaintext, and one read may bring more.
        let mut plain = Vec::new();
        let mut closed = false;
        let fed = {
            let mut conn = self.conn.borrow_mut();
            let mut cipher = &buf[start..];
            let mut result = Ok(());
            while !cipher.is_empty() {
                if let Err(e) = conn.read_tls(&mut cipher) {
                    result = Err(e);
                    break;
                }
                if let Err(e) = conn.process_new_packets() {
                    result = Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
                match drain_plaintext(&mut conn, &mut plain) {
                    Ok(c) => closed |= c,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result
        };
        buf.truncate(start);
        buf.extend_from_slice(&plain);
        // Handshake replies and alerts go out even when the input was bad.
        let flushed = self.flush_tls().await;
        if let Err(e) = fed {
            return (Err(e), buf);
        }
        if let Err(e) = flushed {
            return (Err(e), buf);
        }
        let n = buf.len() - start;
        if n > 0 {
            (Ok(n), buf)
        } else if closed || eof {
            (Ok(0), buf)
        } else {
            // Only handshake or partial records arrived: nothing for the session yet.
            (Err(io::ErrorKind::WouldBlock.into()), buf)
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut off = 0;
        while off < buf.len() {
            let n = match self.conn.borrow_mut().writer().write(&buf[off..]) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            off += n;
            // Full (n == 0) or done: either way the records go to the socket now.
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    fn peek(&self) -> io::Result<Option<u8>> {
        self.inner.peek()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
