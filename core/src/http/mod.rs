//! Sans-IO HTTP/1.1 front door: [`request::parse`] turns buffered bytes
//! into a [`Request`], [`Response::write_to`] turns a response into bytes.
//! No sockets, threads or clocks live here; the runtime owns all of those,
//! which keeps this module testable byte-for-byte and usable from both the
//! `io_uring` and the epoll driver. [`client`] is the other end: requests
//! out, responses in, for the CLI, the load harness and the tests.

pub mod client;
pub mod forwarded;
pub mod query;
pub mod request;
pub mod response;

pub use request::{HttpError, Limits, Method, Parse, Request};
pub use response::{Response, json_escape_into};
