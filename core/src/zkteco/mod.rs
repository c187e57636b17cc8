//! ZKTeco ADMS ("iclock" push, `shared/protocols.md` §4.2), sans-IO: the terminal polls the server
//! over plain HTTP under `/iclock/` and holds no socket. This module reads a request (path, query,
//! body) into a [`Call`] and writes every answer; the server (`fleetgate::api::zkteco`) looks the
//! serial up, stores, and hands out commands. What needs no server state is here, where it is
//! fuzzed.
//!
//! The conversation, one request at a time:
//! * `GET cdata?SN=…&options=all` — the handshake: answered with the option block
//!   ([`options_reply`]): where the server's records stop (`ATTLOGStamp`, …), how often to poll,
//!   which tables to push, the time zone.
//! * `POST cdata?SN=…&table=ATTLOG|OPERLOG|ATTPHOTO|options` — uploads ([`tables`]), answered
//!   `OK: <n>` once they are stored: a bare or early `OK` makes some firmware resend a batch for
//!   ever, or drop it.
//! * `GET getrequest?SN=…` — the poll: `OK` when nothing waits, else one `C:<id>:<command>` line
//!   per command ([`command`]).
//! * `POST devicecmd?SN=…` — command answers, one `ID=…&Return=…&CMD=…` line each
//!   ([`read_results`]), answered `OK`.
//! * `GET ping?SN=…` — liveness while the terminal is busy uploading, answered `OK`.
//!
//! Every path is also taken with the `.aspx` suffix some firmware uses.

pub mod command;
pub mod tables;

#[cfg(test)]
mod tests;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::http::query;
use crate::http::request::Method;
use crate::http::response::Response;

/// Where every ADMS path lives.
pub const PREFIX: &str = "/iclock/";
/// Longest serial number accepted (as `device_http`).
pub const MAX_SERIAL: usize = 64;
/// Longest stamp kept (a terminal's own counter or a time; real ones are under 20 characters).
pub const MAX_STAMP: usize = 32;
/// Seconds a terminal waits between polls (`Delay`): the figure the field uses [ZK-IM]. A command
/// queued for a terminal reaches it within this.
pub const POLL_DELAY_S: u32 = 10;
/// Seconds a terminal waits after a failed request before it tries again (`ErrorDelay`) [ZK-IM].
pub const ERROR_DELAY_S: u32 = 30;

/// The endpoints under `/iclock/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Cdata,
    GetRequest,
    DeviceCmd,
    Ping,
}

/// The endpoint `path` names (with or without `.aspx` and a trailing `/`), or None when it is not
/// an ADMS path at all. An unknown name under `/iclock/` is `Some(Err(()))`: the terminal is
/// answered 404 in its own plain text, not the dashboard's page.
pub fn endpoint(path: &str) -> Option<Result<Endpoint, ()>> {
    let name = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let name = name.strip_suffix(".aspx").unwrap_or(name);
    Some(match name {
        "cdata" => Ok(Endpoint::Cdata),
        "getrequest" => Ok(Endpoint::GetRequest),
        "devicecmd" => Ok(Endpoint::DeviceCmd),
        "ping" => Ok(Endpoint::Ping),
        _ => Err(()),
    })
}

/// The table an upload names (`table=`, any case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    Attlog,
    Operlog,
    Attphoto,
    /// `table=options`: the terminal reporting its own settings and counts (`~DeviceName=…`).
    Options,
    /// Any other table (`BIODATA`, `ERRORLOG`, …): acknowledged and kept as an event, as sent.
    Other(String),
}

impl Table {
    fn parse(s: &str) -> Table {
        match s.to_ascii_uppercase().as_str() {
            "ATTLOG" => Table::Attlog,
            "OPERLOG" => Table::Operlog,
            "ATTPHOTO" => Table::Attphoto,
            "OPTIONS" => Table::Options,
            _ => Table::Other(s.chars().take(32).collect()),
        }
    }

    /// The name of the stamp the handshake tells the terminal for this table, if it has one.
    pub fn stamp_name(&self) -> Option<&'static str> {
        match self {
            Table::Attlog => Some("ATTLOGStamp"),
            Table::Operlog => Some("OPERLOGStamp"),
            Table::Attphoto => Some("ATTPHOTOStamp"),
            Table::Options | Table::Other(_) => None,
        }
    }
}

/// One command's answer in a `devicecmd` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdResult {
    /// The id the server gave the command (`C:<id>:…`).
    pub id: String,
    /// `Return`: 0 or more is success (some commands return a count), negative a failure code
    /// (−1002 bad syntax, −1004 unsupported).
    pub code: i64,
    /// `CMD`, as the terminal names what it ran.
    pub cmd: String,
    /// Every other field of the line (`&`-separated `key=value`), as JSON text (`{}` when none).
    pub fields: String,
}

/// What a request asks.
#[derive(Debug)]
pub enum Call<'a> {
    /// `GET cdata`: the handshake. `pushver`, `language` and the rest of the query are kept as
    /// the device's info.
    Handshake { info: String },
    /// `POST cdata?table=…`.
    Upload {
        table: Table,
        /// `Stamp=` as sent (at most `MAX_STAMP`), saved once the upload is stored so the next
        /// handshake tells the terminal where the server's records stop.
        stamp: Option<String>,
        body: &'a [u8],
    },
    /// `GET getrequest`: the terminal asks for commands. `INFO=` (firmware, counts, address) when
    /// it reports them.
    Poll { info: Option<String> },
    /// `POST devicecmd`: command answers.
    Results(Vec<CmdResult>),
    /// `GET ping`: the terminal is alive.
    Ping,
}

/// A request this module read: the serial it names and what it asks.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub serial: String,
    pub call: Call<'a>,
}

/// A request refused before any server state is touched: 400 (or 405) in plain text.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            message: message.into(),
        }
    }

    pub fn response(&self) -> Response {
        plain(self.status, format!("ERROR: {}\n", self.message))
    }
}

/// Reads a request to `endpoint`: method, raw query and body.
pub fn read<'a>(
    endpoint: Endpoint,
    method: Method,
    raw_query: &str,
    body: &'a [u8],
) -> Result<Incoming<'a>, Refusal> {
    let pairs = query::parse(raw_query);
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let serial = get("SN").map(str::trim).unwrap_or("");
    if serial.is_empty() || serial.len() > MAX_SERIAL || serial.chars().any(char::is_control) {
        return Err(Refusal::bad(format!(
            "SN must name the terminal's serial number (1 to {MAX_SERIAL} characters)"
        )));
    }
    let serial = serial.to_string();
    let want = |m: Method| {
        if method == m || (m == Method::Get && method == Method::Head) {
            Ok(())
        } else {
            Err(Refusal {
                status: 405,
                message: format!("this endpoint takes {m:?}"),
            })
        }
    };
    let call = match endpoint {
        Endpoint::Cdata if method == Method::Post => {
            let table = get("table").map(Table::parse).ok_or_else(|| {
                Refusal::bad("an upload names its table (table=ATTLOG, OPERLOG, ATTPHOTO …)")
            })?;
            let stamp = get("Stamp")
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= MAX_STAMP && is_token(s))
                .map(str::to_string);
            Call::Upload { table, stamp, body }
        }
        Endpoint::Cdata => {
            want(Method::Get)?;
            Call::Handshake {
                info: info_json(&pairs, &["SN", "options"]),
            }
        }
        Endpoint::GetRequest => {
            want(Method::Get)?;
            Call::Poll {
                info: get("INFO").filter(|s| !s.is_empty()).map(|i| {
                    let mut s = String::from("{\"INFO\":");
                    crate::json::push_str(&mut s, &i.chars().take(512).collect::<String>());
                    s.push('}');
                    s
                }),
            }
        }
        Endpoint::DeviceCmd => {
            want(Method::Post)?;
            Call::Results(read_results(body))
        }
        Endpoint::Ping => {
            want(Method::Get)?;
            Call::Ping
        }
    };
    Ok(Incoming { serial, call })
}

/// Printable ASCII without spaces: what a stamp is, and all that is echoed back in the option block.
fn is_token(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// The query's other fields as a JSON object (at most 16 fields of 128 characters each): what
/// the terminal says of itself in its handshake (`pushver`, `language`, …).
fn info_json(pairs: &[(String, String)], skip: &[&str]) -> String {
    let mut s = String::from("{");
    for (k, v) in pairs
        .iter()
        .filter(|(k, _)| !skip.iter().any(|x| x.eq_ignore_ascii_case(k)))
        .take(16)
    {
        if s.len() > 1 {
            s.push(',');
        }
        crate::json::push_str(&mut s, &k.chars().take(64).collect::<String>());
        s.push(':');
        crate::json::push_str(&mut s, &v.chars().take(128).collect::<String>());
    }
    s.push('}');
    s
}

/// Reads a `devicecmd` body: one `ID=…&Return=…&CMD=…` line per answer (CRLF or LF, batched).
/// Lines without an `ID` or a numeric `Return` are skipped: they answer nothing the server asked.
pub fn read_results(body: &[u8]) -> Vec<CmdResult> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (mut id, mut code, mut cmd) = (None, None, String::new());
        let mut fields = String::from("{");
        for part in line.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match k.trim() {
                "ID" => id = Some(v.trim().to_string()),
                "Return" => code = v.trim().parse::<i64>().ok(),
                "CMD" => cmd = v.trim().chars().take(64).collect(),
                other if !other.is_empty() && fields.len() < 4096 => {
                    if fields.len() > 1 {
                        fields.push(',');
                    }
                    crate::json::push_str(&mut fields, other);
                    fields.push(':');
                    crate::json::push_str(&mut fields, v);
                }
                _ => {}
            }
        }
        fields.push('}');
        if let (Some(id), Some(code)) = (id.filter(|i| !i.is_empty()), code) {
            out.push(CmdResult {
                id,
                code,
                cmd,
                fields,
            });
        }
    }
    out
}

/// What the handshake answer says beyond the fixed options.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// Each table's stamp as the server last stored it (`ATTLOGStamp`, …); a table without one
    /// is told `None`, so the terminal sends everything it has (what is already stored is
    /// recognised and stored once).
    pub stamps: &'a [(&'static str, &'a str)],
    /// The device's configured zone: its offset now is sent as `TimeZone`, in hours, as the
    /// option is documented [ZK-IM]. A zone whose offset is not whole hours is not sent (no source
    /// shows how firmware reads one), and the terminal keeps its own setting.
    pub zone: Option<&'a TimeZone>,
}

/// The handshake's answer: the option block, one option a line (protocols.md §4.2 [ZK-IM]).
/// `TransFlag` asks for attendance, operation logs (users, fingerprints, faces) and photos;
/// `Realtime=1` makes the terminal push each punch as it happens rather than at `TransTimes`.
pub fn options_reply(serial: &str, opts: &Options<'_>, now: Timestamp) -> Response {
    let mut s = format!("GET OPTION FROM: {serial}\r\n");
    for name in ["ATTLOGStamp", "OPERLOGStamp", "ATTPHOTOStamp"] {
        let v = opts
            .stamps
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("None", |(_, v)| v);
        s.push_str(&format!("{name}={v}\r\n"));
    }
    s.push_str(&format!("ErrorDelay={ERROR_DELAY_S}\r\n"));
    s.push_str(&format!("Delay={POLL_DELAY_S}\r\n"));
    s.push_str("TransTimes=00:00;14:05\r\n");
    s.push_str("TransInterval=1\r\n");
    s.push_str("TransFlag=TransData AttLog\tOpLog\tAttPhoto\tEnrollUser\tChgUser\tEnrollFP\tChgFP\tFACE\tUserPic\r\n");
    if let Some(secs) = opts
        .zone
        .map(|z| z.to_offset(now).seconds())
        .filter(|s| s % 3600 == 0)
    {
        s.push_str(&format!("TimeZone={}\r\n", secs / 3600));
    }
    s.push_str("Realtime=1\r\n");
    s.push_str("Encrypt=0\r\n");
    plain(200, s)
}

/// `OK: <n>`: an upload of `n` records, stored.
pub fn stored(n: usize) -> Response {
    plain(200, format!("OK: {n}\r\n"))
}

/// `OK`: a poll with nothing to hand out, a `devicecmd` answer taken, a ping.
pub fn ok() -> Response {
    plain(200, "OK\r\n".to_string())
}

/// A poll's commands, one `C:<id>:<command>` line each.
pub fn commands_reply(lines: &[(String, String)]) -> Response {
    let mut s = String::new();
    for (id, line) in lines {
        s.push_str("C:");
        s.push_str(id);
        s.push(':');
        s.push_str(line);
        s.push_str("\r\n");
    }
    plain(200, s)
}

/// A refusal the terminal reads as a failure and retries after `ErrorDelay` (it keeps its
/// records): unknown or unapproved serials, records that could not be stored.
pub fn refuse(status: u16, message: &str) -> Response {
    plain(status, format!("ERROR: {message}\r\n"))
}

fn plain(status: u16, body: String) -> Response {
    Response::text(status, "text/plain; charset=utf-8", body.into_bytes())
}

/// The HTTP `Date` of a moment (RFC 9110 IMF-fixdate): ADMS terminals set their clock from the
/// answers' `Date` (protocols.md §4.2 [ZK-DOC]).
pub fn http_date(now: Timestamp) -> String {
    now.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
