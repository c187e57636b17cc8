//! The shard's I/O seam: what session code needs from a socket, with two drivers behind it.
//!
//! Session code waits for input *without* holding a buffer, then borrows one from the shard's pool
//! for the read: an idle session holds no read buffer whatever the driver. Both drivers run on the
//! shard's current-thread tokio runtime. The epoll driver (here) waits for readiness on tokio's
//! reactor and moves bytes with non-blocking system calls; the io_uring driver (`uring`) moves them
//! with completions on the shard's own ring.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;

/// Space a read asks for at least; the pool's buffers are larger.
pub const MIN_READ: usize = 4096;

// Shards are single-threaded, so the futures of this trait are never sent across threads.
#[allow(async_fn_in_trait)]
pub trait Transport: 'static {
    /// Resolves once a read would find data (or EOF/error). This is the only place a session waits
    /// for its peer, so it sits inside the session's `select!` next to the outbox and commit waits.
    async fn readable(&self) -> io::Result<()>;
    /// Appends what the socket has to `buf` (growing it if it has little spare room); 0 means EOF.
    /// Never waits for the peer: after a spurious readiness it returns `WouldBlock`, and the caller
    /// goes back to waiting on `readable` (a read that waited would stop the session from seeing
    /// its commits and outbox, and a client waiting for acks would never send again).
    async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);
    /// Sends all of `buf` and hands back a buffer for reuse (not always the same one). Resolves
    /// once the bytes are written (epoll) or queued behind the connection's send in flight
    /// (io_uring), in order either way; waits only while the peer is not taking them. An error
    /// may surface on a later call rather than this one.
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// The next byte without consuming it: `None` at EOF, `WouldBlock` if nothing has arrived.
    fn peek(&self) -> io::Result<Option<u8>>;
    /// Copies up to `buf.len()` waiting bytes without consuming them: 0 at EOF, `WouldBlock` if
    /// nothing has arrived. For a PROXY header, read before anything else touches the socket.
    fn peek_into(&self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Consumes exactly `n` bytes that `peek_into` showed are waiting.
    fn discard(&self, _n: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Whether the bytes are encrypted on the wire (the session cookie is then `Secure`).
    fn is_tls(&self) -> bool {
        false
    }
}

/// A one-byte `MSG_PEEK` on a socket the caller keeps open.
pub fn peek_fd(fd: RawFd) -> io::Result<Option<u8>> {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local; the caller's stream owns `fd` and keeps it open.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Ok(None),
        n if n > 0 => Ok(Some(byte)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A `MSG_PEEK` of up to `buf.len()` bytes on a socket the caller keeps open.
pub fn peek_fd_into(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes; the caller keeps `fd` open.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Reads and drops exactly `n` bytes that a peek showed are waiting (at most a PROXY header, so a
/// stack buffer suffices).
pub fn discard_fd(fd: RawFd, n: usize) -> io::Result<()> {
    let mut sink = [0u8; crate::proxy_header::MAX];
    let want = sink.get_mut(..n).ok_or(io::ErrorKind::InvalidInput)?;
    // SAFETY: `want` is a valid writable slice; the caller keeps `fd` open. The bytes are already
    // queued (peeked), so this non-blocking read takes exactly them.
    let got = unsafe { libc::recv(fd, want.as_mut_ptr().cast(), n, libc::MSG_DONTWAIT) };
    if usize::try_from(got).ok() == Some(n) {
        Ok(())
    } else {
        Err(io::Error::other("the peeked bytes could not be consumed"))
    }
}

fn ensure_spare(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(MIN_READ);
    }
}

/// The epoll driver: tokio's reactor for readiness, non-blocking syscalls for the bytes.
pub struct EpollStream(pub tokio::net::TcpStream);

impl Transport for EpollStream {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        ensure_spare(&mut buf);
        let r = self.0.try_read_buf(&mut buf);
        (r, buf)
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut off = 0;
        while off < buf.len() {
            match self.0.try_write(&buf[off..]) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.0.writable().await {
                        return (Err(e), buf);
                    }
                }
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    fn peek(&self) -> io::Result<Option<u8>> {
        // Through the reactor, so a spurious readiness is cleared when the peek finds nothing.
        self.0
            .try_io(Interest::READABLE, || peek_fd(self.0.as_raw_fd()))
    }

    fn peek_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .try_io(Interest::READABLE, || peek_fd_into(self.0.as_raw_fd(), buf))
    }

    fn discard(&self, n: usize) -> io::Result<()> {
        discard_fd(self.0.as_raw_fd(), n)
    }
}

/// Lets the kernel reap dead and half-open peers without any per-connection timer of ours: TCP
/// keepalive probes an idle connection after 60 s (6 probes, 10 s apart), and a peer that leaves
/// sent data unacknowledged for 60 s (gone without a FIN, e.g. a device that lost power) is
/// dropped, so its session ends with "connection lost".
pub fn reap_dead_peers(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is the just-accepted socket, open for the duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(6);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(std::time::Duration::from_secs(60)))
}
