//! Device-side protocol clients: what a simulated device sends, and what the server's answers
//! mean to the harness. One module per protocol; each builds the exact message shapes of
//! `shared/protocols.md` (and `docs/protocol.md` for the generic extensions) and classifies
//! inbound messages into `Inbound`. None of them touches a socket: the worker's readiness loop
//! does the I/O.

pub mod aiface;
pub mod generic;
pub mod http;
pub mod smackbio;
pub mod zkteco;

use serde::{Deserialize, Serialize};

/// Which wire protocol the simulated devices speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// JSON over `/ws` (`register`, `telemetry`, `event`, `command_result`).
    Generic,
    /// AiFace-family WEBSOCKET+JSON terminals over `/ws` (`reg`, `sendlog`).
    Aiface,
    /// SmackBio XML terminals over `/ws` (`Register`, `Login`, `TimeLog_v2`, `KeepAlive`).
    Smackbio,
    /// Terminals posting JSON to `POST /api/device-http` (`reg`, `sendlog`, `checklive`).
    Http,
    /// ZKTeco ADMS terminals polling `/iclock/` (`cdata` handshake and `ATTLOG` uploads,
    /// `getrequest`).
    Zkteco,
}

impl Protocol {
    /// The name `POST /api/devices` takes in `protocol`.
    pub fn api_name(self) -> &'static str {
        match self {
            Protocol::Generic => "generic",
            Protocol::Aiface => "aiface",
            Protocol::Smackbio => "smackbio",
            Protocol::Http => "http",
            Protocol::Zkteco => "zkteco",
        }
    }

    /// Whether the devices hold a WebSocket; the others poll over keep-alive HTTP, one request
    /// at a time.
    pub fn is_websocket(self) -> bool {
        !matches!(self, Protocol::Http | Protocol::Zkteco)
    }

    /// Attendance records one data message carries: SmackBio sends one punch per `TimeLog_v2`
    /// and the generic protocol one per `event`; AiFace and HTTP `sendlog` carry a `record` array,
    /// and a ZKTeco `ATTLOG` upload one punch a line.
    pub fn records_per_msg(self, asked: u32) -> u32 {
        match self {
            Protocol::Aiface | Protocol::Http | Protocol::Zkteco => asked.clamp(1, 1000),
            Protocol::Generic | Protocol::Smackbio => 1,
        }
    }
}

/// What one inbound message means to the harness.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// Registration (or SmackBio Login) succeeded: the session is ready.
    Registered,
    /// Registration was refused; the text says why.
    Refused(String),
    /// The data message with this correlation id is durable (msg_id, logindex, TransID, or the
    /// HTTP request in flight).
    Ack(u64),
    /// The data message with this id was not stored.
    Nack(u64, String),
    /// A generic `command`; `t0_ns` is the harness's send time carried in its payload.
    Command {
        command_id: String,
        t0_ns: Option<u64>,
    },
    /// The fence sent after a command result is durable (see `generic::fence`).
    FenceAck(u64),
    /// The answer to a heartbeat.
    Pong,
    /// An error the server reported; counted, the session goes on.
    ServerError(String),
    /// Nothing the harness measures (server requests answered through `replies`, broadcasts).
    Other,
}

/// The request in flight on a polling terminal's connection (HTTP, ZKTeco): what its answer
/// means depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// HTTP `reg`, ZKTeco handshake.
    Register,
    /// A data message with this correlation id (HTTP `logindex`, ZKTeco `Stamp`).
    Data(u64),
    /// HTTP `checklive`, ZKTeco `getrequest`.
    Heartbeat,
}

/// The first wall-clock second of generated attendance times: 2026-01-01 00:00:00.
const RECORD_EPOCH: u64 = 1_767_225_600;

/// A device's `n`-th attendance record: user and wall-clock second. Times advance one second per
/// record, so no two records of a device share (user, time) and none is de-duplicated away.
pub fn record(n: u64) -> (u64, u64) {
    (1 + n % 5000, RECORD_EPOCH + n)
}

/// `YYYY-MM-DD HH:MM:SS`, as AiFace, HTTP and ZKTeco terminals write times.
pub fn plain_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `yyyy-MM-dd-THH:mm:ssZ`, as SmackBio terminals write times (device wall clock, not UTC).
pub fn smackbio_time(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(secs);
    format!("{y:04}-{mo:02}-{d:02}-T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times_are_distinct_and_formatted() {
        assert_eq!(plain_time(record(0).1), "2026-01-01 00:00:00");
        assert_eq!(smackbio_time(record(61).1), "2026-01-01-T00:01:01Z");
        assert_ne!(record(1), record(5001));
    }
}
