//! The io_uring driver: a shard's sockets driven as a completion API on one ring per shard (the
//! `io-uring` crate), not readiness plus reads.
//!
//! * **Receives** are multishot `IORING_OP_RECV`s with buffer select, armed the first time a
//!   session waits for input (`readable`) and left armed: each arrival completes with a buffer the
//!   kernel picked from the shard's provided-buffer ring (`buf_ring`), with no submission per
//!   message. A waiting session holds no buffer; `read` copies the bytes into the session's pooled
//!   buffer and gives the ring buffer straight back. A session that stops reading (in-flight limit,
//!   full batch) holds at most `MAX_CHUNKS` buffers: then its receive is cancelled (what still
//!   arrives before the cancel takes effect is copied out of the pool), and its socket's own
//!   buffer bounds it until it reads and waits again. A receive that finds the pool
//!   empty (`ENOBUFS`) waits in a queue and is re-armed as buffers come back.
//! * **Sends** are queued, not awaited: `write_all` hands the bytes to the ring and returns. While a
//!   send is in flight, later bytes of the same connection wait in one queue (at most
//!   `MAX_QUEUED`; past that `write_all` waits, so a peer that stops reading still meets
//!   `--write-timeout`) and leave in one send when it completes: what a session wrote in one turn
//!   leaves in one system call at most, with every other session's.
//! * **Accepts** come from one multishot accept on the shard's listener.
//! * **Submission** is deferred: operations are pushed to the submission queue and one
//!   `io_uring_enter` per runtime turn submits them all (`flusher`). Completions are reaped right
//!   after that submit and whenever the ring's descriptor turns readable on the shard's tokio
//!   reactor (`reactor`), which is how a shard sleeps.
//!
//! A connection's state is a `Slot` in the ring's table, addressed by index and generation in each
//! operation's user data. A slot outlives its `RingStream`: a closed connection's socket is closed
//! (through the ring) only once its receive is cancelled and its queued bytes have left, or
//! `--write-timeout` passed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::shard::buf_ring::BufRing;
use crate::shard::io::{Transport, discard_fd, peek_fd, peek_fd_into};

/// Submission queue entries of a shard's ring; the completion queue has twice as many, and the
/// kernel keeps completions that overflow it (IORING_FEAT_NODROP), so none is lost.
pub const RING_ENTRIES: u32 = 4096;
/// Receive buffers per shard and their size: only receives that completed and were not yet copied
/// out hold one, so 512 × 4 KiB (2 MiB per shard) serves thousands of sessions.
const RECV_BUFS: u16 = 512;
const RECV_BUF_SIZE: usize = 4096;
const BUF_GROUP: u16 = 0;
/// Received buffers a connection may hold unread before its multishot receive is cancelled.
const MAX_CHUNKS: usize = 4;
/// Bytes a connection may queue behind its send in flight before `write_all` waits.
const MAX_QUEUED: usize = 256 * 1024;
/// Completion queues' worth one reap handles before it yields to the shard's other tasks.
const REAP_ROUNDS: usize = 4;
/// Sent buffers kept for the next `write_all` to hand back.
const SPARE_KEEP: usize = 64;

/// What an operation's completion is for (the low two bits of its user data).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Recv = 0,
    Send = 1,
    Accept = 2,
    /// Cancels and closes: nothing waits for their outcome.
    Ignore = 3,
}

fn user_data(op: Op, idx: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | (u64::from(idx) << 2) | op as u64
}

fn decode(ud: u64) -> (Op, u32, u32) {
    let op = match ud & 3 {
        0 => Op::Recv,
        1 => Op::Send,
        2 => Op::Accept,
        _ => Op::Ignore,
    };
    (op, ((ud >> 2) & 0x3FFF_FFFF) as u32, (ud >> 32) as u32)
}

/// Received bytes still in a ring buffer: `bid`'s bytes `off..len`.
struct Chunk {
    bid: u16,
    len: u32,
    off: u32,
}

/// One connection's state in the ring: no buffer while it is idle.
#[derive(Default)]
struct Slot {
    fd: RawFd,
    generation: u32,
    live: bool,
    /// The `RingStream` is gone: finish sending, then close.
    released: bool,
    chunks: VecDeque<Chunk>,
    /// Bytes that came after `MAX_CHUNKS` were held, copied out so the pool's buffers go back at
    /// once: what arrived before the cancel took effect, at most the socket's receive buffer.
    overflow: Vec<u8>,
    /// A cancel of the multishot receive is on its way (the session has `MAX_CHUNKS` unread).
    cancelling: bool,
    eof: bool,
    /// The first error a completion reported (an errno); every later call reports it.
    error: Option<i32>,
    recv_armed: bool,
    starved: bool,
    reader: Option<Waker>,
    /// The bytes of the send in flight (empty: none) and how many of them have left.
    sending: Vec<u8>,
    sent: usize,
    queued: Vec<u8>,
    writer: Option<Waker>,
    /// Millisecond time after which a released slot's send in flight is cancelled.
    linger_until: u64,
    send_cancelled: bool,
}

struct Inner {
    // Field order matters: the ring is closed before the buffers it wrote into are freed.
    uring: IoUring,
    bufs: BufRing,
    slots: Vec<Slot>,
    free: Vec<u32>,
    starved: VecDeque<(u32, u32)>,
    lingering: Vec<(u32, u32)>,
    spare: Vec<Vec<u8>>,
    /// Pushed but not yet submitted.
    unsubmitted: bool,
    flush_scheduled: bool,
    cqes: Vec<(u64, i32, u32)>,
    accepted: VecDeque<RawFd>,
    accept_error: Option<i32>,
    accept_armed: bool,
    acceptor: Option<Waker>,
}

/// A shard's ring. Single-threaded: everything runs on the shard's runtime.
pub struct Ring {
    inner: RefCell<Inner>,
    flush: tokio::sync::Notify,
    /// How long a closed connection's last bytes may take to leave (`--write-timeout`).
    linger_ms: Cell<u64>,
}

impl Ring {
    /// Sets up the ring and its buffer group. Fails where io_uring is unavailable (seccomp,
    /// `kernel.io_uring_disabled`, a kernel before 5.19 without provided-buffer rings).
    pub fn new(linger_ms: u64) -> io::Result<Rc<Ring>> {
        Self::build(RING_ENTRIES, linger_ms, RECV_BUFS)
    }

    /// A ring of `entries` set up as a shard's is, for `doctor` to see whether it can be.
    pub fn probe(entries: u32) -> io::Result<Rc<Ring>> {
        Self::build(entries, 0, RECV_BUFS)
    }

    fn build(entries: u32, linger_ms: u64, recv_bufs: u16) -> io::Result<Rc<Ring>> {
        // Only the shard's thread uses its ring (single issuer). Cooperative task running: a
        // completion does not interrupt the thread with an IPI; its work runs at the thread's next
        // system call, and a thread asleep in epoll_wait is still woken for it.
        let uring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(2))
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries)?;
        let bufs = BufRing::new(&uring.submitter(), recv_bufs, RECV_BUF_SIZE, BUF_GROUP)?;
        Ok(Rc::new(Ring {
            inner: RefCell::new(Inner {
                uring,
                bufs,
                slots: Vec::new(),
                free: Vec::new(),
                starved: VecDeque::new(),
                lingering: Vec::new(),
                spare: Vec::new(),
                unsubmitted: false,
                flush_scheduled: false,
                cqes: Vec::new(),
                accepted: VecDeque::new(),
                accept_error: None,
                accept_armed: false,
                acceptor: None,
            }),
            flush: tokio::sync::Notify::new(),
            linger_ms: Cell::new(linger_ms),
        }))
    }

    /// Submits what this turn pushed, once the tasks woken before it have run (they may push
    /// more), then reaps what completed. Runs for the shard's life.
    pub async fn flusher(self: Rc<Self>) {
        loop {
            self.flush.notified().await;
            self.submit_and_reap();
        }
    }

    /// Reaps completions whenever the ring's descriptor turns readable: this is where a quiet
    /// shard sleeps (in its tokio reactor, beside its timers).
    pub async fn reactor(self: Rc<Self>) -> io::Result<()> {
        let fd = self.inner.borrow().uring.as_raw_fd();
        // SAFETY: `self` owns the ring and outlives this registration, which this future holds
        // (and drops) while it holds `self`.
        let ready =
            unsafe { AsyncFd::register_with_interest(BorrowedRingFd(fd), Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        loop {
            let mut guard = ready.readable().await?;
            // Cleared before reaping: a completion posted after the reap raises a fresh edge.
            guard.clear_ready();
            self.reap();
        }
    }

    /// Cancels the sends of closed connections whose last bytes outstayed `--write-timeout`.
    pub fn tick(&self, now_ms: u64) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let lingering = std::mem::take(&mut inner.lingering);
        for (idx, generation) in lingering {
            let Some(s) = inner.slot_mut(idx, generation) else {
                continue;
            };
            if s.sending.is_empty() {
                continue;
            }
            if s.linger_until > now_ms {
                inner.lingering.push((idx, generation));
                continue;
            }
            s.send_cancelled = true;
            let cancel = opcode::AsyncCancel::new(user_data(Op::Send, idx, generation))
                .build()
                .user_data(user_data(Op::Ignore, idx, generation));
            inner.push(&cancel);
        }
        drop(guard);
        self.schedule_flush();
    }

    /// Takes ownership of a connected socket.
    pub fn adopt(self: &Rc<Self>, fd: RawFd) -> RingStream {
        let mut inner = self.inner.borrow_mut();
        let idx = match inner.free.pop() {
            Some(i) => i,
            None => {
                inner.slots.push(Slot::default());
                (inner.slots.len() - 1) as u32
            }
        };
        let slot = &mut inner.slots[idx as usize];
        let generation = slot.generation.wrapping_add(1);
        *slot = Slot {
            fd,
            generation,
            live: true,
            ..Slot::default()
        };
        RingStream {
            ring: self.clone(),
            idx,
            generation,
        }
    }

    /// The next connection from `listener` (whose descriptor the caller keeps open), accepted
    /// through one multishot accept that is re-armed when the kernel ends it.
    pub async fn accept(&self, listener: RawFd) -> io::Result<RawFd> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if let Some(fd) = inner.accepted.pop_front() {
                return Poll::Ready(Ok(fd));
            }
            if let Some(errno) = inner.accept_error.take() {
                return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
            }
            set_waker(&mut inner.acceptor, cx);
            if !inner.accept_armed {
                let sqe = opcode::AcceptMulti::new(types::Fd(listener))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
                    .user_data(user_data(Op::Accept, 0, 0));
                inner.push(&sqe);
                inner.accept_armed = true;
                drop(inner);
                self.schedule_flush();
            }
            Poll::Pending
        })
        .await
    }

    /// Submits what is pending now: at shutdown, so that the close frames and last answers the
    /// sessions queued leave before the shard's thread ends.
    pub fn submit_now(&self) {
        self.submit_and_reap();
    }

    fn schedule_flush(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.unsubmitted && !inner.flush_scheduled {
            inner.flush_scheduled = true;
            self.flush.notify_one();
        }
    }

    fn submit_and_reap(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.flush_scheduled = false;
            inner.submit();
        }
        self.reap();
    }

    /// Handles the completions waiting in the queue, and those the kernel kept aside when the
    /// queue was full (at most `REAP_ROUNDS` queues' worth per call; a later turn takes the rest).
    fn reap(&self) {
        let mut inner = self.inner.borrow_mut();
        let mut cqes = std::mem::take(&mut inner.cqes);
        let mut more = true;
        for _ in 0..REAP_ROUNDS {
            cqes.clear();
            cqes.extend(
                inner
                    .uring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                if !inner.uring.submission().cq_overflow() {
                    more = false;
                    break;
                }
                // Completions that found the queue full wait in the kernel: an enter (which
                // asks for events while the overflow flag is up) moves them in.
                if let Err(e) = inner.uring.submit() {
                    tracing::warn!(error = %e, "io_uring overflow flush failed");
                }
                let left = !inner.uring.submission().is_empty();
                inner.unsubmitted = left;
                continue;
            }
            for &(ud, res, flags) in &cqes {
                inner.complete(ud, res, flags);
            }
        }
        inner.cqes = cqes;
        if more {
            // No new completion may come to raise the descriptor's edge again: reap again later.
            inner.flush_scheduled = true;
            self.flush.notify_one();
        }
        drop(inner);
        self.schedule_flush();
    }

    fn poll_readable(
        &self,
        idx: u32,
        generation: u32,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(s) = inner.slot_mut(idx, generation) else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if let Some(errno) = s.error {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if !s.chunks.is_empty() || !s.overflow.is_empty() || s.eof {
            return Poll::Ready(Ok(()));
        }
        set_waker(&mut s.reader, cx);
        if !s.recv_armed && !s.starved {
            s.recv_armed = true;
            let sqe = recv_sqe(s.fd, idx, generation);
            inner.push(&sqe);
            drop(guard);
            self.schedule_flush();
        }
        Poll::Pending
    }

    fn read(&self, idx: u32, generation: u32, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(slot) = inner.slots.get_mut(idx as usize) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if !slot.live || slot.generation != generation {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let mut n = 0;
        let mut returned = 0;
        while let Some(c) = slot.chunks.pop_front() {
            let bytes = inner.bufs.data(c.bid, c.len as usize);
            let part = bytes.get(c.off as usize..).unwrap_or(&[]);
            buf.extend_from_slice(part);
            n += part.len();
            inner.bufs.give_back(c.bid);
            returned += 1;
        }
        if !slot.overflow.is_empty() {
            buf.extend_from_slice(&slot.overflow);
            n += slot.overflow.len();
            slot.overflow = Vec::new();
        }
        let outcome = if n > 0 {
            Ok(n)
        } else if let Some(errno) = slot.error {
            Err(io::Error::from_raw_os_error(errno))
        } else if slot.eof {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        };
        if returned > 0 {
            inner.rearm_starved(returned);
        }
        drop(guard);
        self.schedule_flush();
        outcome
    }

    /// Queues `buf` for sending; `Pending` only while the connection's queue is full.
    fn poll_write(
        &self,
        idx: u32,
        generation: u32,
        buf: &mut Option<Vec<u8>>,
        cx: &mut Context<'_>,
    ) -> Poll<(io::Result<()>, Vec<u8>)> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(mut bytes) = buf.take() else {
            return Poll::Ready((Err(io::ErrorKind::InvalidInput.into()), Vec::new()));
        };
        let Some(s) = inner.slot_mut(idx, generation) else {
            return Poll::Ready((Err(io::ErrorKind::NotConnected.into()), bytes));
        };
        if let Some(errno) = s.error {
            return Poll::Ready((Err(io::Error::from_raw_os_error(errno)), bytes));
        }
        if bytes.is_empty() {
            return Poll::Ready((Ok(()), bytes));
        }
        if s.sending.is_empty() {
            s.sending = bytes;
            s.sent = 0;
            let sqe = send_sqe(s.fd, &s.sending, idx, generation);
            inner.push(&sqe);
            let back = inner.spare.pop().unwrap_or_default();
            drop(guard);
            self.schedule_flush();
            return Poll::Ready((Ok(()), back));
        }
        if s.queued.is_empty() || s.queued.len() + bytes.len() <= MAX_QUEUED {
            if s.queued.is_empty() {
                std::mem::swap(&mut s.queued, &mut bytes);
            } else {
                s.queued.extend_from_slice(&bytes);
                bytes.clear();
            }
            return Poll::Ready((Ok(()), bytes));
        }
        set_waker(&mut s.writer, cx);
        *buf = Some(bytes);
        Poll::Pending
    }

    fn peek(&self, idx: u32, generation: u32) -> io::Result<Option<u8>> {
        let inner = self.inner.borrow();
        let s = inner
            .slot(idx, generation)
            .ok_or(io::ErrorKind::NotConnected)?;
        if let Some(c) = s.chunks.front() {
            return Ok(inner
                .bufs
                .data(c.bid, c.len as usize)
                .get(c.off as usize)
                .copied());
        }
        if let Some(&b) = s.overflow.first() {
            return Ok(Some(b));
        }
        if s.eof {
            return Ok(None);
        }
        if s.recv_armed {
            // A completion not yet reaped may hold the next bytes.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        peek_fd(s.fd)
    }

    fn peek_into(&self, idx: u32, generation: u32, out: &mut [u8]) -> io::Result<usize> {
        let inner = self.inner.borrow();
        let s = inner
            .slot(idx, generation)
            .ok_or(io::ErrorKind::NotConnected)?;
        let mut n = 0;
        for c in &s.chunks {
            let bytes = inner.bufs.data(c.bid, c.len as usize);
            let part = bytes.get(c.off as usize..).unwrap_or(&[]);
            let take = part.len().min(out.len() - n);
            out[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        let take = s.overflow.len().min(out.len() - n);
        out[n..n + take].copy_from_slice(&s.overflow[..take]);
        n += take;
        if n < out.len() && !s.eof && !s.recv_armed {
            // With no receive armed, the socket's bytes are the next after the queued ones.
            match peek_fd_into(s.fd, &mut out[n..]) {
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 && !s.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn discard(&self, idx: u32, generation: u32, mut n: usize) -> io::Result<()> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let s = inner
            .slots
            .get_mut(idx as usize)
            .filter(|s| s.live && s.generation == generation)
            .ok_or(io::ErrorKind::NotConnected)?;
        let mut returned = 0;
        while n > 0 {
            let Some(c) = s.chunks.front_mut() else { break };
            let left = (c.len - c.off) as usize;
            if n < left {
                c.off += n as u32;
                n = 0;
            } else {
                n -= left;
                inner.bufs.give_back(c.bid);
                s.chunks.pop_front();
                returned += 1;
            }
        }
        let from_overflow = n.min(s.overflow.len());
        s.overflow.drain(..from_overflow);
        n -= from_overflow;
        let fd = s.fd;
        // Bytes past the queued ones are taken from the socket directly, which is only in order
        // while no receive is armed to take them first.
        let direct_ok = !s.recv_armed;
        if returned > 0 {
            inner.rearm_starved(returned);
        }
        drop(guard);
        self.schedule_flush();
        match n {
            0 => Ok(()),
            _ if direct_ok => discard_fd(fd, n),
            _ => Err(io::Error::other(
                "a receive is armed: the bytes to discard are not queued yet",
            )),
        }
    }

    /// The stream is gone: cancel its receive, let its queued bytes leave (for at most the linger
    /// time), then close its socket.
    fn release(&self, idx: u32, generation: u32) {
        let linger = self.linger_ms.get();
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(s) = inner.slot_mut(idx, generation) else {
            return;
        };
        s.released = true;
        s.reader = None;
        s.writer = None;
        let chunks = std::mem::take(&mut s.chunks);
        s.overflow = Vec::new();
        let armed = s.recv_armed;
        let sending = !s.sending.is_empty();
        if sending {
            s.linger_until = crate::time::now_ms() + linger;
        }
        for c in &chunks {
            inner.bufs.give_back(c.bid);
        }
        if !chunks.is_empty() {
            inner.rearm_starved(chunks.len());
        }
        if armed {
            let cancel = opcode::AsyncCancel::new(user_data(Op::Recv, idx, generation))
                .build()
                .user_data(user_data(Op::Ignore, idx, generation));
            inner.push(&cancel);
        }
        if sending {
            inner.lingering.push((idx, generation));
        }
        inner.finish_if_done(idx, generation);
        drop(guard);
        self.schedule_flush();
    }
}

impl Inner {
    fn slot(&self, idx: u32, generation: u32) -> Option<&Slot> {
        self.slots
            .get(idx as usize)
            .filter(|s| s.live && s.generation == generation)
    }

    fn slot_mut(&mut self, idx: u32, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(idx as usize)
            .filter(|s| s.live && s.generation == generation)
    }

    /// Queues an operation; a full submission queue is submitted on the spot.
    fn push(&mut self, sqe: &squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points at (a send's bytes) stays in its slot, unmoved,
            // until the entry's completion is reaped; receives point at no buffer of ours.
            if unsafe { self.uring.submission().push(sqe) }.is_ok() {
                self.unsubmitted = true;
                return;
            }
            self.submit();
        }
    }

    fn submit(&mut self) {
        if !self.unsubmitted {
            return;
        }
        loop {
            match self.uring.submit() {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue is backed up: reap, then submit again.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    let pending: Vec<_> = self
                        .uring
                        .completion()
                        .map(|c| (c.user_data(), c.result(), c.flags()))
                        .collect();
                    if pending.is_empty() {
                        tracing::warn!(error = %e, "io_uring submit deferred");
                        return;
                    }
                    for (ud, res, flags) in pending {
                        self.complete(ud, res, flags);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring submit failed");
                    break;
                }
            }
        }
        self.unsubmitted = !self.uring.submission().is_empty();
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let (op, idx, generation) = decode(ud);
        match op {
            Op::Recv => self.recv_done(idx, generation, res, flags),
            Op::Send => self.send_done(idx, generation, res),
            Op::Accept => {
                if res >= 0 {
                    self.accepted.push_back(res);
                } else {
                    self.accept_error = Some(-res);
                }
                if !cqueue::more(flags) {
                    self.accept_armed = false;
                }
                if let Some(w) = self.acceptor.take() {
                    w.wake();
                }
            }
            Op::Ignore => {}
        }
    }

    fn recv_done(&mut self, idx: u32, generation: u32, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let Some(s) = self
            .slots
            .get_mut(idx as usize)
            .filter(|s| s.live && s.generation == generation)
        else {
            // A slot is freed only after its receive completed; nothing should land here, but a
            // buffer must never be lost.
            if let Some(b) = bid {
                self.bufs.give_back(b);
            }
            return;
        };
        // A multishot receive goes on until a completion says it has ended.
        let ended = !cqueue::more(flags);
        if ended {
            s.recv_armed = false;
            s.cancelling = false;
        }
        let mut cancel = false;
        let mut returned = 0;
        match (res, bid) {
            (n, Some(b)) if n > 0 && !s.released => {
                if s.chunks.len() >= MAX_CHUNKS || !s.overflow.is_empty() {
                    s.overflow.extend_from_slice(self.bufs.data(b, n as usize));
                    self.bufs.give_back(b);
                    returned = 1;
                } else {
                    s.chunks.push_back(Chunk {
                        bid: b,
                        len: n as u32,
                        off: 0,
                    });
                }
                // The session is not keeping up: stop taking its bytes (its socket's own buffer
                // holds the rest) until it has read these.
                cancel = s.chunks.len() >= MAX_CHUNKS && !ended && !s.cancelling;
                s.cancelling |= cancel;
            }
            // Bytes without a buffer to hold them cannot be passed on: end the connection rather
            // than let a gap into its stream.
            (n, None) if n > 0 => {
                s.error.get_or_insert(libc::EIO);
            }
            (n, b) if n >= 0 => {
                if n == 0 {
                    s.eof = true;
                }
                if let Some(b) = b {
                    self.bufs.give_back(b);
                }
            }
            (e, _) if e == -libc::ENOBUFS => {
                if !s.released {
                    s.starved = true;
                    self.starved.push_back((idx, generation));
                }
            }
            // Only we cancel: at release, or a session with `MAX_CHUNKS` unread.
            (e, _) if e == -libc::ECANCELED => {}
            (e, _) => {
                s.error.get_or_insert(-e);
            }
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        if cancel {
            let sqe = opcode::AsyncCancel::new(user_data(Op::Recv, idx, generation))
                .build()
                .user_data(user_data(Op::Ignore, idx, generation));
            self.push(&sqe);
        }
        if returned > 0 {
            self.rearm_starved(returned);
        }
        self.finish_if_done(idx, generation);
    }

    fn send_done(&mut self, idx: u32, generation: u32, res: i32) {
        let Some(s) = self
            .slots
            .get_mut(idx as usize)
            .filter(|s| s.live && s.generation == generation)
        else {
            return;
        };
        if res > 0 && !s.send_cancelled {
            s.sent += res as usize;
            if s.sent < s.sending.len() {
                let sqe = send_sqe(s.fd, &s.sending[s.sent..], idx, generation);
                self.push(&sqe);
                return;
            }
            let done = if s.queued.is_empty() {
                std::mem::take(&mut s.sending)
            } else {
                let next = std::mem::take(&mut s.queued);
                std::mem::replace(&mut s.sending, next)
            };
            s.sent = 0;
            if let Some(w) = s.writer.take() {
                w.wake();
            }
            if !s.sending.is_empty() {
                let sqe = send_sqe(s.fd, &s.sending, idx, generation);
                self.push(&sqe);
            }
            self.keep_spare(done);
        } else {
            if !s.send_cancelled {
                s.error
                    .get_or_insert(if res < 0 { -res } else { libc::EPIPE });
            }
            let a = std::mem::take(&mut s.sending);
            let b = std::mem::take(&mut s.queued);
            s.sent = 0;
            for w in [s.writer.take(), s.reader.take()].into_iter().flatten() {
                w.wake();
            }
            self.keep_spare(a);
            self.keep_spare(b);
        }
        self.finish_if_done(idx, generation);
    }

    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0 && self.spare.len() < SPARE_KEEP {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// A released slot with nothing in flight closes its socket and frees its place.
    fn finish_if_done(&mut self, idx: u32, generation: u32) {
        let Some(s) = self.slot_mut(idx, generation) else {
            return;
        };
        if !s.released || s.recv_armed || !s.sending.is_empty() {
            return;
        }
        let fd = s.fd;
        s.live = false;
        s.chunks = VecDeque::new();
        s.overflow = Vec::new();
        s.queued = Vec::new();
        let close = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(user_data(Op::Ignore, idx, generation));
        self.push(&close);
        self.free.push(idx);
    }

    /// `n` buffers came back: receives that found the pool empty may try again.
    fn rearm_starved(&mut self, mut n: usize) {
        while n > 0 {
            let Some((idx, generation)) = self.starved.pop_front() else {
                return;
            };
            let Some(s) = self.slot_mut(idx, generation) else {
                continue;
            };
            s.starved = false;
            if s.released || s.recv_armed {
                continue;
            }
            s.recv_armed = true;
            let sqe = recv_sqe(s.fd, idx, generation);
            self.push(&sqe);
            n -= 1;
        }
    }
}

/// Keeps the task to wake; a session polled again by the same task (every loop of its `select!`)
/// keeps the waker it had instead of cloning it anew.
fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

fn recv_sqe(fd: RawFd, idx: u32, generation: u32) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP)
        .build()
        .user_data(user_data(Op::Recv, idx, generation))
}

fn send_sqe(fd: RawFd, bytes: &[u8], idx: u32, generation: u32) -> squeue::Entry {
    // A send is at most one queue's worth, far below u32::MAX; clamp anyway (a short send
    // re-submits the rest).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(Op::Send, idx, generation))
}

/// The ring's descriptor, for readiness registration; the ring owns and closes it.
struct BorrowedRingFd(RawFd);

impl AsRawFd for BorrowedRingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A connection on the ring.
pub struct RingStream {
    ring: Rc<Ring>,
    idx: u32,
    generation: u32,
}

impl Drop for RingStream {
    fn drop(&mut self) {
        self.ring.release(self.idx, self.generation);
    }
}

impl Transport for RingStream {
    // Plain futures rather than async fns: an async fn keeps its arguments and its locals apart,
    // and these futures sit in every session's task.
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        poll_fn(|cx| self.ring.poll_readable(self.idx, self.generation, cx))
    }

    fn read(&self, mut buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        let r = self.ring.read(self.idx, self.generation, &mut buf);
        std::future::ready((r, buf))
    }

    fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> {
        let mut buf = Some(buf);
        poll_fn(move |cx| {
            self.ring
                .poll_write(self.idx, self.generation, &mut buf, cx)
        })
    }

    fn peek(&self) -> io::Result<Option<u8>> {
        self.ring.peek(self.idx, self.generation)
    }

    fn peek_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.ring.peek_into(self.idx, self.generation, buf)
    }

    fn discard(&self, n: usize) -> io::Result<()> {
        self.ring.discard(self.idx, self.generation, n)
    }
}

/// Whether this kernel (and its seccomp policy and memlock limit) lets us set up a shard's ring
/// with its buffer group.
pub fn available() -> io::Result<()> {
    Ring::new(0).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs `test` on a shard-like runtime with a ring (of `bufs` receive buffers) being driven.
    fn on_ring<F, Fut>(bufs: u16, test: F)
    where
        F: FnOnce(Rc<Ring>) -> Fut,
        Fut: Future<Output = ()>,
    {
        on_ring_of(RING_ENTRIES, bufs, test)
    }

    fn on_ring_of<F, Fut>(entries: u32, bufs: u16, test: F)
    where
        F: FnOnce(Rc<Ring>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let set = tokio::task::LocalSet::new();
        set.block_on(&rt, async move {
            let ring = Ring::build(entries, 1000, bufs).expect("io_uring is available here");
            let reactor = tokio::task::spawn_local(ring.clone().reactor());
            let flusher = tokio::task::spawn_local(ring.clone().flusher());
            test(ring.clone()).await;
            reactor.abort();
            flusher.abort();
        });
    }

    thread_local! {
        /// A ring's multishot accept stays on the listener it was armed on, as a shard's does:
        /// one listener per test thread.
        static LISTENER: std::net::TcpListener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    }

    /// A server-side stream on the ring and the client's end (tokio, epoll).
    async fn pair(ring: &Rc<Ring>) -> (RingStream, tokio::net::TcpStream) {
        let (fd, addr) = LISTENER.with(|l| (l.as_raw_fd(), l.local_addr().expect("addr")));
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let fd = ring.accept(fd).await.expect("accept");
        (ring.adopt(fd), client)
    }

    /// Reads from the ring until `want` bytes have come (or EOF).
    async fn read_n(s: &RingStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            s.readable().await.expect("readable");
            let (r, buf) = s.read(std::mem::take(&mut got)).await;
            got = buf;
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        got
    }

    fn free_slots(ring: &Ring) -> usize {
        ring.inner.borrow().free.len()
    }

    /// `n` connections: the ring's ends (shared with reader tasks) and the clients' ends.
    async fn pairs(ring: &Rc<Ring>, n: usize) -> (Vec<Rc<RingStream>>, Vec<tokio::net::TcpStream>) {
        let mut streams = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..n {
            let (s, c) = pair(ring).await;
            streams.push(Rc::new(s));
            clients.push(c);
        }
        (streams, clients)
    }

    /// Client `i` sends "`tag` i".
    async fn send_each(clients: &mut [tokio::net::TcpStream], tag: &str) {
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(format!("{tag} {i}").as_bytes())
                .await
                .expect("client write");
        }
    }

    /// One task per stream, each reading until it has "`tag` i".
    fn expect_each(streams: &[Rc<RingStream>], tag: &str) -> Vec<tokio::task::JoinHandle<()>> {
        streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.clone();
                let want = format!("{tag} {i}").into_bytes();
                tokio::task::spawn_local(async move {
                    assert_eq!(read_n(&s, want.len()).await, want);
                })
            })
            .collect()
    }

    #[test]
    fn bytes_go_both_ways_and_eof_is_seen() {
        on_ring(8, |ring| async move {
            let (s, mut client) = pair(&ring).await;
            client.write_all(b"hello").await.expect("client write");
            assert_eq!(read_n(&s, 5).await, b"hello");
            let (r, _) = s.write_all(b"world".to_vec()).await;
            r.expect("queued");
            let mut back = [0u8; 5];
            client.read_exact(&mut back).await.expect("client read");
            assert_eq!(&back, b"world");
            drop(client);
            s.readable().await.expect("readable at EOF");
            let (r, _) = s.read(Vec::new()).await;
            assert_eq!(r.expect("EOF is a read of 0"), 0);
        });
    }

    #[test]
    fn a_message_larger_than_a_ring_buffer_arrives_whole() {
        on_ring(8, |ring| async move {
            let (s, mut client) = pair(&ring).await;
            let big: Vec<u8> = (0..3 * RECV_BUF_SIZE + 17)
                .map(|i| (i % 251) as u8)
                .collect();
            client.write_all(&big).await.expect("client write");
            assert_eq!(read_n(&s, big.len()).await, big);
        });
    }

    #[test]
    fn writes_made_while_a_send_is_in_flight_leave_in_order() {
        on_ring(8, |ring| async move {
            let (s, mut client) = pair(&ring).await;
            let mut want = Vec::new();
            // Many small writes in one turn (queued behind the first), then one larger than the
            // queue's bound, which must wait for the queue to drain rather than be refused.
            for i in 0..2000u32 {
                let line = format!("{i}\n").into_bytes();
                want.extend_from_slice(&line);
                let (r, _) = s.write_all(line).await;
                r.expect("queued");
            }
            let big = vec![b'x'; 2 * MAX_QUEUED + 5];
            want.extend_from_slice(&big);
            let reader = tokio::task::spawn_local(async move {
                let mut got = vec![0u8; want.len()];
                client.read_exact(&mut got).await.expect("client read");
                assert!(got == want, "bytes arrived out of order or changed");
            });
            let (r, _) = s.write_all(big).await;
            r.expect("sent");
            reader.await.expect("reader");
        });
    }

    #[test]
    fn a_dropped_stream_sends_its_last_bytes_then_closes() {
        on_ring(8, |ring| async move {
            let free_before = free_slots(&ring);
            let (s, mut client) = pair(&ring).await;
            let (r, _) = s.write_all(b"bye".to_vec()).await;
            r.expect("queued");
            drop(s);
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read to EOF");
            assert_eq!(got, b"bye");
            settle(|| free_slots(&ring) == free_before + 1).await;
        });
    }

    #[test]
    fn receives_that_find_no_buffer_are_rearmed_when_one_returns() {
        on_ring(2, |ring| async move {
            let (streams, mut clients) = pairs(&ring, 5).await;
            // Five sessions wait for input: five receives armed over two buffers.
            let waiting: Vec<_> = streams
                .iter()
                .map(|s| {
                    let s = s.clone();
                    tokio::task::spawn_local(async move { s.readable().await })
                })
                .collect();
            settle(|| armed(&ring) == 5).await;
            send_each(&mut clients, "from").await;
            settle(|| ring.inner.borrow().starved.len() == 3).await;
            assert_eq!(armed(&ring), 2, "the two that got a buffer stay armed");
            for w in waiting {
                w.abort();
            }
            // Each session reads on its own; buffers coming back re-arm the starved ones.
            for r in expect_each(&streams, "from") {
                r.await.expect("every session got its bytes");
            }
        });
    }

    fn armed(ring: &Ring) -> usize {
        ring.inner
            .borrow()
            .slots
            .iter()
            .filter(|s| s.live && s.recv_armed)
            .count()
    }

    /// Lets the runtime (and the kernel) run until `done`, for at most five seconds.
    async fn settle(mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the ring did not settle");
    }

    #[test]
    fn completions_beyond_a_full_queue_are_not_lost() {
        // Four submission entries, eight completion entries, twenty sessions answering at once.
        on_ring_of(4, 64, |ring| async move {
            let (streams, mut clients) = pairs(&ring, 20).await;
            let readers = expect_each(&streams, "session");
            settle(|| armed(&ring) == 20).await;
            send_each(&mut clients, "session").await;
            // Bounded: a lost completion would leave a reader waiting forever.
            let all = async {
                for r in readers {
                    r.await.expect("every session got its bytes");
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), all)
                .await
                .expect("completions were lost: some sessions never got their bytes");
        });
    }

    #[test]
    fn a_session_that_stops_reading_holds_at_most_a_few_buffers() {
        on_ring(64, |ring| async move {
            let (s, mut client) = pair(&ring).await;
            let sent: Vec<u8> = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
            let writer = tokio::task::spawn_local({
                let sent = sent.clone();
                async move { client.write_all(&sent).await.map(|_| client) }
            });
            // One wait arms the receive; then the session reads nothing for a while.
            s.readable().await.expect("readable");
            settle(|| armed(&ring) == 0).await;
            let held = ring
                .inner
                .borrow()
                .slot(s.idx, s.generation)
                .map_or(0, |x| x.chunks.len());
            assert_eq!(
                held, MAX_CHUNKS,
                "pool buffers held by a session that does not read"
            );
            assert_eq!(read_n(&s, sent.len()).await, sent, "every byte, in order");
            writer.await.expect("task").expect("client write");
        });
    }

    #[test]
    fn peek_and_discard_see_queued_bytes_before_the_socket() {
        on_ring(8, |ring| async move {
            let (s, mut client) = pair(&ring).await;
            client.write_all(b"HEAD:").await.expect("client write");
            s.readable().await.expect("readable");
            assert_eq!(s.peek().expect("peek"), Some(b'H'));
            client.write_all(b"body").await.expect("client write");
            client.flush().await.expect("flush");
            let mut seen = [0u8; 9];
            settle(|| s.peek_into(&mut seen).expect("peek_into") == 9).await;
            assert_eq!(&seen, b"HEAD:body");
            s.discard(5).expect("discard");
            assert_eq!(read_n(&s, 4).await, b"body");
        });
    }

    #[test]
    fn a_peer_that_stops_reading_makes_write_all_wait_and_the_linger_ends_it() {
        on_ring(8, |ring| async move {
            let free_before = free_slots(&ring);
            let (s, client) = pair(&ring).await;
            let chunk = vec![0u8; 64 * 1024];
            let mut waited = false;
            // The kernel's buffers and the queue hold a few MiB at most; 1 GiB is never taken.
            for _ in 0..16 * 1024 {
                let write = s.write_all(chunk.clone());
                tokio::pin!(write);
                let once = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
                if once.is_pending() {
                    waited = true;
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(
                waited,
                "write_all never waited for a peer that reads nothing"
            );
            drop(s);
            // The send in flight keeps the slot until the linger passes.
            assert_eq!(free_slots(&ring), free_before);
            ring.tick(crate::time::now_ms() + 2000);
            settle(|| free_slots(&ring) == free_before + 1).await;
            drop(client);
        });
    }
}
