//! The shard's I/O seam: what session code needs from a socket, with two drivers behind it.
//!
//! Session code waits for readability *without* holding a buffer, then borrows one from the shard's
//! pool for the read: an idle session holds no read buffer whatever the driver. Both drivers run on a
//! current-thread tokio runtime (tokio-uring is built on one), so readiness comes from the runtime's
//! reactor in both; the uring driver then moves the bytes with io_uring operations on owned buffers.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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
    /// Writes all of `buf` and hands it back for reuse.
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
fn peek_fd(fd: RawFd) -> io::Result<Option<u8>> {
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
fn peek_fd_into(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
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
fn discard_fd(fd: RawFd, n: usize) -> io::Result<()> {
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

/// A borrowed descriptor for readiness registration; the `tokio_uring` stream owns and closes it.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The io_uring driver. Field order matters: `ready` deregisters from the reactor on drop, before
/// `stream` closes the descriptor.
///
/// An io_uring read of an empty socket waits in the kernel until data comes, so `readable` must be
/// exact: it confirms with a non-blocking `MSG_PEEK` that a byte (or EOF) is really there before it
/// reports the socket readable.
pub struct UringStream {
    ready: AsyncFd<Fd>,
    stream: tokio_uring::net::TcpStream,
}

impl UringStream {
    pub fn new(stream: tokio_uring::net::TcpStream) -> io::Result<Self> {
        let fd = stream.as_raw_fd();
        // SAFETY: `stream` owns `fd` and outlives `ready` in this struct (field order), so the
        // descriptor stays open and unchanged for as long as it is registered.
        let ready = unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(UringStream { ready, stream })
    }

    /// Whether a read would return at once: data, EOF, or an error to report.
    fn has_input(&self) -> bool {
        !matches!(peek_fd(self.ready.get_ref().0), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Transport for UringStream {
    async fn readable(&self) -> io::Result<()> {
        // Input first: a read smaller than what the socket holds leaves data that no new edge will
        // announce. Only when the peek finds nothing is the reactor asked, after clearing its stale
        // readiness; data arriving after that clear raises a fresh edge.
        loop {
            if self.has_input() {
                return Ok(());
            }
            let mut guard = self.ready.readable().await?;
            guard.clear_ready();
        }
    }

    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        use tokio_uring::buf::BoundedBuf;
        ensure_spare(&mut buf);
        let (start, end) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice(start..end)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.stream.write_all(buf).await
    }

    fn peek(&self) -> io::Result<Option<u8>> {
        peek_fd(self.ready.get_ref().0)
    }

    fn peek_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        peek_fd_into(self.ready.get_ref().0, buf)
    }

    fn discard(&self, n: usize) -> io::Result<()> {
        discard_fd(self.ready.get_ref().0, n)
    }
}

/// Submission queue entries of a shard's ring.
pub const RING_ENTRIES: u32 = 4096;

/// Whether this kernel (and its seccomp policy and memlock limit) lets us set up a shard's ring:
/// probed at the shards' own size, since older kernels charge rings to RLIMIT_MEMLOCK.
pub fn uring_available() -> Result<(), io::Error> {
    tokio_uring::uring_builder().build(RING_ENTRIES).map(drop)
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
