//! fleetgate's sans-IO core: bytes and the current time in, messages and actions out. Nothing
//! here owns a socket, a thread, a clock or a database, so every codec and conversation can be
//! unit-tested, fuzzed (`fuzz/`) and benchmarked (`benches/`) on plain byte strings. The server
//! crate re-exports these modules under the same names.

pub mod ack_window;
pub mod aiface;
pub mod attendance;
pub mod cidr;
pub mod clock;
pub mod device_http;
#[doc(hidden)]
pub mod fixtures;
#[doc(hidden)]
pub mod fuzzing;
pub mod generic;
pub mod generic_session;
pub mod http;
pub mod json;
pub mod keepalive;
pub mod lenient;
pub mod proxy_header;
pub mod raw_member;
pub mod smackbio;
pub mod terminal;
pub mod time;
pub mod timer_wheel;
pub mod ws;
pub mod zkteco;
