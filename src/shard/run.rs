//! Running a shard: its thread's runtime (io_uring or epoll), its accept loop, its timer tick and
//! its inbox, and the ordered shutdown.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::shard::http_conn;
use crate::shard::hub::InboxReceiver;
use crate::shard::io;
use crate::shard::local::{CloseReason, ConnCtl, Local, Shared, TICK};
use crate::shard::uring;
use crate::store::commit::Committer;

/// Accepted sockets, per driver.
pub enum Listener {
    /// The listener stays open here; its connections come through the ring's multishot accept.
    Uring(Rc<uring::Ring>, std::net::TcpListener),
    Epoll(tokio::net::TcpListener),
}

/// Runs a shard to completion on the current thread. `uring` picks the driver.
pub fn run(
    index: usize,
    shared: Arc<Shared>,
    inbox: InboxReceiver,
    committer: Committer,
    listener: std::net::TcpListener,
    uring: bool,
) -> std::io::Result<()> {
    let linger_ms = shared.limits.write_timeout.max(1) * 1000;
    let local = Rc::new(Local::new(index, shared, committer, inbox.rx.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let set = tokio::task::LocalSet::new();
    set.block_on(&rt, async move {
        let listener = if uring {
            Listener::Uring(uring::Ring::new(linger_ms)?, listener)
        } else {
            listener.set_nonblocking(true)?;
            Listener::Epoll(tokio::net::TcpListener::from_std(listener)?)
        };
        shard_main(local, listener, inbox).await;
        Ok::<_, std::io::Error>(())
    })
}

async fn shard_main(local: Rc<Local>, listener: Listener, inbox: InboxReceiver) {
    let batcher = tokio::task::spawn_local({
        let l = local.clone();
        async move { l.batcher.run().await }
    });
    let ring = match &listener {
        Listener::Uring(ring, _) => Some(ring.clone()),
        Listener::Epoll(_) => None,
    };
    let ring_for_exit = ring.clone();
    let ring_tasks = ring.clone().map(|r| {
        let reactor = tokio::task::spawn_local({
            let r = r.clone();
            async move {
                if let Err(e) = r.reactor().await {
                    tracing::error!(error = %e, "io_uring reactor stopped");
                }
            }
        });
        [reactor, tokio::task::spawn_local(r.flusher())]
    });
    let acceptor = tokio::task::spawn_local(accept_loop(local.clone(), listener));
    let ticker = tokio::task::spawn_local({
        let l = local.clone();
        async move {
            let mut iv = tokio::time::interval(TICK);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                l.tick();
                if let Some(r) = &ring {
                    r.tick(crate::time::now_ms());
                }
            }
        }
    });
    // The inbox: drain everything queued, then sleep until the next wake-up.
    'inbox: loop {
        let woken = inbox.wake.notified();
        while let Ok(msg) = inbox.rx.try_recv() {
            if !local.on_inbox(msg) {
                break 'inbox;
            }
        }
        woken.await;
    }
    // Shutdown: stop accepting, close every connection with 1001, wait (bounded) for them to finish
    // their pending acks, then commit what is staged and stop the committer.
    local.shutting_down.set(true);
    acceptor.abort();
    let conns: Vec<_> = local.conns.borrow().values().cloned().collect();
    for c in conns {
        c.request_close(CloseReason::Ws(1001, "server shutting down"));
    }
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        let gone = local.conns_gone.notified();
        if local.conns.borrow().is_empty() {
            break;
        }
        tokio::select! {
            _ = gone => {}
            _ = &mut deadline => {
                tracing::warn!(shard = local.index, left = local.conns.borrow().len(), "connections still open at shutdown deadline");
                break;
            }
        }
    }
    local.batcher.flush().await;
    local.batcher.close();
    let _ = batcher.await;
    ticker.abort();
    if let Some(r) = &ring_for_exit {
        r.submit_now();
    }
    for task in ring_tasks.into_iter().flatten() {
        task.abort();
    }
}

async fn accept_loop(local: Rc<Local>, listener: Listener) {
    loop {
        let accepted = match &listener {
            Listener::Uring(ring, l) => ring
                .accept(std::os::fd::AsRawFd::as_raw_fd(l))
                .await
                .and_then(|fd| {
                    // SAFETY: `fd` was just accepted and nothing else owns it.
                    let s =
                        unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    s.set_nodelay(true)?;
                    io::reap_dead_peers(fd)?;
                    let peer = s.peer_addr()?;
                    let fd = std::os::fd::IntoRawFd::into_raw_fd(s);
                    Ok((Conn::Uring(ring.adopt(fd)), peer))
                }),
            Listener::Epoll(l) => l.accept().await.and_then(|(s, peer)| {
                s.set_nodelay(true)?;
                io::reap_dead_peers(std::os::fd::AsRawFd::as_raw_fd(&s))?;
                Ok((Conn::Epoll(io::EpollStream(s)), peer))
            }),
        };
        match accepted {
            Ok((conn, peer)) => {
                let n = local.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let ctl = local.open_conn(peer);
                if n > local.limits().max_connections {
                    metrics::counter!("fleetgate_connections_refused_total").increment(1);
                    ctl.request_close(CloseReason::ConnectionLimit);
                } else if !local.trusted_proxy(peer.ip()) {
                    // A trusted proxy carries many clients: each counts once its PROXY header
                    // names it (`http_conn`), not the proxy's own address.
                    local.count_connection(&ctl);
                }
                // One task type per driver: a connection's task is sized for its own driver's
                // futures, not the larger of the two.
                match conn {
                    Conn::Uring(s) => tokio::task::spawn_local(connection(local.clone(), ctl, s)),
                    Conn::Epoll(s) => tokio::task::spawn_local(connection(local.clone(), ctl, s)),
                };
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                metrics::counter!("fleetgate_accept_errors_total").increment(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<T: io::Transport>(local: Rc<Local>, ctl: Rc<ConnCtl>, io: T) {
    http_conn::serve(&local, &ctl, io).await;
    local.close_conn(&ctl);
}

enum Conn {
    Uring(uring::RingStream),
    Epoll(io::EpollStream),
}
