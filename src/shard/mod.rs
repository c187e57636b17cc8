//! A shard: one OS thread pinned to one core, running a current-thread runtime (io_uring or epoll)
//! with its own SO_REUSEPORT listener. It owns every connection it accepts, for that connection's
//! whole life; other threads reach its connections only through its `hub` inbox.

pub mod buf_pool;
pub mod buf_ring;
pub mod handler;
pub mod http_conn;
pub mod hub;
pub mod io;
pub mod local;
pub mod run;
pub mod terminal;
pub mod terminal_actions;
pub mod tls;
pub mod uring;
pub mod ws_session;
