//! The AiFace-family "WEBSOCKET+JSON" terminal protocol (protocols.md §3), sans-IO: frames,
//! identity answers and the time go in, `terminal::Action`s come out.
//!
//! The terminal is the WebSocket client and opens with `reg`. Both sides then send requests
//! (`"cmd"`) and answer them with replies (`"ret"` with the same name). Replies are matched by
//! name, never by arrival order: the terminal pushes `sendlog` whenever it sees a face, also in
//! the middle of a paged reply. The server keeps one request of its own outstanding at a time:
//! the log backfill the session runs after registration, or an operator's command.
//!
//! Nothing the terminal sends is acknowledged here: `sendlog` and `senduser` answers ride in the
//! store actions (`on_stored` / `on_failed`), so the terminal hears `true` only once the records
//! are durable and keeps them otherwise.

mod command;
mod frame;
#[cfg(test)]
mod tests;

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::{SignedDuration, Timestamp};
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::clock::Clock;
use crate::terminal::{
    self, AccessFacts, AccessFormat, AccessRule, Action, CommandError, Conversation, Identity,
    Timeouts, Wait,
};
use command::Plan;
use frame::{Obj, failed, normalise, result_ok, str_at, take_records, u64_at};

/// One timeout for every request, as tests and benches run a session
/// (`Session::new(DEFAULT_TIMEOUT)`): the vendor C# sample's 5 s. The server gives quick and long
/// requests their own (`Timeouts::VENDOR` unless configured).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pages fetched by one paged exchange at most: 2 500 pages hold 100 000 users (40 a page) or
/// 125 000 logs (50 a page), beyond the capacity §3.2's `devinfo` examples report. A terminal
/// that keeps answering past that is looping, and the users gathered must stay bounded.
const MAX_PAGES: u32 = 2_500;

/// Messages the terminal itself sends. A command cannot use these names: its reply could not be
/// told from them.
const DEVICE_MESSAGES: &[&str] = &["reg", "sendlog", "senduser", "sendqrcode", "heartbeat"];

/// The user id of door and system records (§3.3).
const DOOR_EVENTS: u64 = 0;
/// The user id of a face the terminal did not recognise (§3.3).
const UNKNOWN_FACE: u64 = 99_999_999;

/// Highest `backupnum` (§3.5 uses up to 50; implementers up to 51).
const MAX_BACKUPNUM: u8 = 99;

/// Whether a user id names a person rather than a door event or an unknown face.
fn is_person(enrollid: u64) -> bool {
    !matches!(enrollid, DOOR_EVENTS | UNKNOWN_FACE)
}

/// What a `backupnum` names (§3.5 [AF-TD]). Codes only some firmware uses (palm 40/41, a face
/// template 51 [AF-LV]) are `other`; §3.9 question 2 notes one implementer with 10 and 11 swapped.
pub fn credential_type(backupnum: u8) -> &'static str {
    match backupnum {
        0..=9 => "fingerprint",
        10 => "password",
        11 => "card",
        20..=27 => "face",
        30..=37 => "palm",
        50 => "photo",
        _ => "other",
    }
}

/// One AiFace terminal's conversation, from its first frame until the socket closes.
pub struct Session {
    timeouts: Timeouts,
    state: State,
    /// The server request awaiting its reply, if any.
    job: Option<Job>,
    /// The terminal message waiting for `on_access`, which the runtime calls right after it
    /// performs `Action::CheckAccess`.
    asking: Option<Asking>,
}

/// A terminal message whose answer depends on the device's access settings.
enum Asking {
    /// A `sendlog`: its records go to the store with the answer.
    Log {
        records: Vec<OwnedValue>,
        logindex: Option<OwnedValue>,
    },
    /// A `sendqrcode`.
    QrCode,
}

enum State {
    /// Waiting for `reg`; also after a refusal, since the terminal retries on the same socket.
    Unregistered,
    /// `Identify` is out for this serial.
    /// With the clock the `reg` showed (`devinfo.time`), for the clock rule.
    Identifying(String, Option<DateTime>),
    /// Registered: `clock` is the terminal's wall clock by the clock rule (`crate::clock`), in
    /// which it reads and writes times.
    Ready { serial: String, clock: Clock },
}

/// A server request awaiting its reply.
struct Job {
    /// The operator's command; `None` for the session's own backfill, and for a command that timed
    /// out and still waits for its late reply: they report to no one.
    command_id: Option<String>,
    /// The reply's name (`ret`, or `cmd` on firmware that echoes it).
    name: String,
    /// How long each reply (each page) may take.
    wait: Wait,
    deadline: Timestamp,
    /// `None`: the first reply finishes the job.
    paged: Option<Paged>,
}

struct Paged {
    collect: Collect,
    pages: u32,
    /// The last page's `from`: a page before it is the terminal starting over.
    last_from: Option<u64>,
}

/// What the pages of a paged reply gather.
enum Collect {
    /// `getuserlist`: every user, for the command's result.
    Users(Vec<OwnedValue>),
    /// `getnewlog` / `getalllog`: records handed to the store, counted.
    Logs(u64),
}

/// How a paged exchange ended.
enum End {
    Complete,
    /// `MAX_PAGES` reached with pages still coming.
    Truncated,
    /// The terminal answered a page with `result: false`; this is its reply.
    Failed(OwnedValue),
}

impl Session {
    /// A session for a terminal that has just connected. `timeouts` bound each wait for a reply,
    /// by the request's `Wait` (a single `Duration` for all of them, such as `DEFAULT_TIMEOUT`).
    pub fn new(timeouts: impl Into<Timeouts>) -> Session {
        Session {
            timeouts: timeouts.into(),
            state: State::Unregistered,
            job: None,
            asking: None,
        }
    }

    fn deadline(&self, wait: Wait, now: Timestamp) -> Timestamp {
        SignedDuration::try_from(self.timeouts.of(wait))
            .ok()
            .and_then(|t| now.checked_add(t).ok())
            .unwrap_or(Timestamp::MAX)
    }

    /// A message of the terminal's own that this conversation does not know. Every message the
    /// terminal starts expects a reply: without one some firmware drops the connection after
    /// about 20 s or resends forever, and the vendor's demo server answers unknown ones with a
    /// generic success. So once registered it gets `{"ret":<cmd>,"result":true}`; the runtime
    /// logs and counts it either way.
    fn on_unrecognised(&self, cmd: &str) -> Vec<Action> {
        if !terminal::echoable(cmd) {
            return vec![Action::Unrecognised("(not a name)".into())];
        }
        let mut out = vec![Action::Unrecognised(cmd.to_string())];
        if matches!(self.state, State::Ready { .. }) {
            out.push(Action::Send(
                Obj::new().str("ret", cmd).bool("result", true).done(),
            ));
        }
        out
    }

    fn awaits(&self, name: &str) -> bool {
        self.job.as_ref().is_some_and(|j| j.name == name)
    }

    fn on_reg(&mut self, msg: &OwnedValue, now: Timestamp) -> Vec<Action> {
        let sn = frame::serial(msg);
        match &self.state {
            // The first `reg` is being answered; the terminal hears one reply for it.
            State::Identifying(..) => Vec::new(),
            State::Ready { serial, clock } if sn.as_deref() == Some(serial.as_str()) => {
                let mut clock = clock.clone();
                let mut out: Vec<Action> = drift(&mut clock, frame::shown_time(msg), now)
                    .into_iter()
                    .collect();
                out.push(Action::Send(reg_ok(now, &clock)));
                if let State::Ready { clock: c, .. } = &mut self.state {
                    *c = clock;
                }
                out
            }
            // The session belongs to one device; a second serial on the same socket is not it.
            State::Ready { .. } => {
                vec![
                    Action::Send(reg_refused("one serial per connection")),
                    Action::Close("reg with another serial"),
                ]
            }
            State::Unregistered => match sn {
                None => vec![Action::Send(reg_refused("sn is required"))],
                Some(serial) => {
                    self.state = State::Identifying(serial.clone(), frame::shown_time(msg));
                    vec![Action::Identify {
                        serial,
                        model: frame::label(msg, "modelname"),
                        firmware: frame::label(msg, "firmware"),
                        token: None,
                        cloud_id: None,
                    }]
                }
            },
        }
    }

    /// A `sendlog`. In server-verify mode its answer decides whether the door opens, so the
    /// device's access settings are asked for first (`on_access` stores and answers).
    fn on_sendlog(&mut self, mut msg: OwnedValue) -> Vec<Action> {
        if !self.is_authenticated() {
            return vec![Action::Send(failed("sendlog"))];
        }
        let Some(records) = take_records(&mut msg) else {
            return vec![Action::Send(failed("sendlog"))];
        };
        let records: Vec<OwnedValue> = records.into_iter().map(normalise).collect();
        let mut enrollids: Vec<u64> = records
            .iter()
            .filter_map(|r| u64_at(r, "enrollid"))
            .filter(|&id| is_person(id))
            .collect();
        enrollids.sort_unstable();
        enrollids.dedup();
        self.asking = Some(Asking::Log {
            records,
            logindex: msg.get("logindex").cloned(),
        });
        vec![Action::CheckAccess { enrollids }]
    }

    /// A `sendqrcode`: the terminal asks whether a scanned code opens the door.
    fn on_sendqrcode(&mut self) -> Vec<Action> {
        if !self.is_authenticated() {
            return vec![Action::Send(failed("sendqrcode"))];
        }
        self.asking = Some(Asking::QrCode);
        vec![Action::CheckAccess {
            enrollids: Vec::new(),
        }]
    }

    fn on_senduser(&self, msg: &OwnedValue, now: Timestamp) -> Vec<Action> {
        let State::Ready { clock, .. } = &self.state else {
            return vec![Action::Send(failed("senduser"))];
        };
        let enrollid = msg
            .get("enrollid")
            .or_else(|| msg.get("userid"))
            .and_then(frame::as_u64)
            .filter(|&id| is_person(id));
        let Some(enrollid) = enrollid else {
            return vec![Action::Send(failed("senduser"))];
        };
        // `backupnum` says which credential `record` is (§3.5): each is stored apart, so a card
        // does not overwrite a fingerprint. Without one the message can only name the person.
        let backupnum = match msg.get("backupnum").filter(|b| !b.is_null()) {
            None => None,
            Some(b) => {
                let b = frame::as_u64(b)
                    .and_then(|b| u8::try_from(b).ok())
                    .filter(|&b| b <= MAX_BACKUPNUM);
                match b {
                    Some(b) => Some(b),
                    None => return vec![Action::Send(failed("senduser"))],
                }
            }
        };
        let payload = ["name", "backupnum", "admin", "record"]
            .into_iter()
            .filter_map(|k| msg.get(k).map(|v| (k, v)))
            .fold(Obj::new(), |o, (k, v)| o.value(k, v))
            .done();
        let ack = Obj::new()
            .str("ret", "senduser")
            .bool("result", true)
            .str("cloudtime", &cloudtime(clock, now))
            .done();
        vec![Action::StoreUser {
            enrollid,
            backupnum,
            payload,
            on_stored: Some(ack),
            on_failed: Some(failed("senduser")),
        }]
    }

    /// Asks for the logs the terminal holds as new: what it took while the gateway could not
    /// hear it. The store drops what it already has.
    fn start_backfill(&mut self, now: Timestamp) -> Action {
        // A page of logs may carry a photo per record: the long wait.
        self.job = Some(Job {
            command_id: None,
            name: "getnewlog".into(),
            wait: Wait::Long,
            deadline: self.deadline(Wait::Long, now),
            paged: Some(Paged::new(Collect::Logs(0))),
        });
        Action::Send(Obj::new().str("cmd", "getnewlog").bool("stn", true).done())
    }

    fn on_reply(&mut self, msg: OwnedValue, now: Timestamp) -> Vec<Action> {
        let Some(mut job) = self.job.take() else {
            return Vec::new();
        };
        match job.paged.take() {
            None => {
                let ok = result_ok(&msg);
                job.command_id
                    .map(|command_id| Action::CommandDone {
                        command_id,
                        ok,
                        result: msg.encode(),
                    })
                    .into_iter()
                    .collect()
            }
            Some(paged) => self.on_page(job, paged, msg, now),
        }
    }

    /// One page of `getuserlist`, `getnewlog` or `getalllog` (§3.6): `stn:true` asked for the
    /// first, `stn:false` asks for each next one, until an empty page or, for logs, `to` reaching
    /// the total in `count`.
    fn on_page(
        &mut self,
        mut job: Job,
        mut paged: Paged,
        mut msg: OwnedValue,
        now: Timestamp,
    ) -> Vec<Action> {
        if !result_ok(&msg) {
            return job.end(paged, End::Failed(msg), Vec::new());
        }
        let records = take_records(&mut msg).unwrap_or_default();
        let from = u64_at(&msg, "from");
        // A terminal that starts over from the first page has nothing more. (Only going back
        // counts: firmware that numbered each page from 0 would look the same as one repeating
        // its last page, and `MAX_PAGES` bounds the latter.)
        let restarted = matches!((paged.last_from, from), (Some(last), Some(f)) if f < last);
        if records.is_empty() || restarted {
            return job.end(paged, End::Complete, Vec::new());
        }
        paged.pages += 1;
        paged.last_from = from;
        let more = match paged.collect {
            // Vendor demo: keep asking while pages hold users; the empty page ends it.
            Collect::Users(_) => true,
            Collect::Logs(_) => !logs_exhausted(&msg, records.len()),
        };
        let truncated = more && paged.pages >= MAX_PAGES;
        let next = (more && !truncated)
            .then(|| Obj::new().str("cmd", &job.name).bool("stn", false).done());
        let continues = next.is_some();
        let mut out = Vec::new();
        match &mut paged.collect {
            Collect::Users(users) => {
                users.extend(records);
                out.extend(next.map(Action::Send));
            }
            Collect::Logs(count) => {
                *count += records.len() as u64;
                // The next page is asked for only once this one is durable, as the vendor demo
                // asks only after storing: the request is what lets the terminal move on, and it
                // keeps one page per session in flight.
                let clock = match &self.state {
                    State::Ready { clock, .. } => Some(clock),
                    _ => None,
                };
                let records = records
                    .into_iter()
                    .map(|r| {
                        let mut r = normalise(r);
                        if let Some(c) = clock {
                            c.stamp(&mut r);
                        }
                        r
                    })
                    .collect();
                out.push(Action::StoreRecords {
                    records,
                    on_stored: next,
                    on_failed: None,
                });
            }
        }
        if !continues {
            let end = if truncated {
                End::Truncated
            } else {
                End::Complete
            };
            return job.end(paged, end, out);
        }
        job.deadline = self.deadline(job.wait, now);
        job.paged = Some(paged);
        self.job = Some(job);
        out
    }
}

impl Paged {
    fn new(collect: Collect) -> Paged {
        Paged {
            collect,
            pages: 0,
            last_from: None,
        }
    }
}

impl Job {
    /// Finishes a paged exchange; a command's result summarises what the pages gathered.
    fn end(self, paged: Paged, end: End, mut out: Vec<Action>) -> Vec<Action> {
        let Some(command_id) = self.command_id else {
            return out;
        };
        let result = match paged.collect {
            Collect::Users(users) => Obj::new()
                .num("count", users.len() as u64)
                .num("pages", paged.pages.into())
                .value("users", &OwnedValue::Array(Box::new(users))),
            Collect::Logs(records) => Obj::new()
                .str("cmd", &self.name)
                .num("pages", paged.pages.into())
                .num("records", records),
        };
        let (ok, result) = match end {
            End::Complete => (true, result),
            End::Truncated => (false, result.bool("truncated", true)),
            End::Failed(reply) => (false, result.value("failed", &reply)),
        };
        out.push(Action::CommandDone {
            command_id,
            ok,
            result: result.done(),
        });
        out
    }
}

/// Why a `sendlog`'s answer must not open the door, if it must not. A terminal in server-verify
/// mode opens on `access` [AF-TD, AF-TPN]; every record must pass: door events (enrollid 0) ask
/// nothing, a face the terminal did not recognise never passes, and under `enrolled` a person
/// (or a record whose user id cannot be read) passes only with a stored user.
fn refusal(records: &[OwnedValue], facts: &AccessFacts) -> Option<&'static str> {
    let rule = facts.policy.rule;
    if rule == AccessRule::Deny {
        return Some("access denied");
    }
    for r in records {
        match u64_at(r, "enrollid") {
            Some(DOOR_EVENTS) => {}
            Some(UNKNOWN_FACE) => return Some("unknown face"),
            id if rule == AccessRule::Enrolled
                && !id.is_some_and(|id| facts.enrolled.contains(&id)) =>
            {
                return Some("not enrolled");
            }
            _ => {}
        }
    }
    None
}

/// Adds `access` in the device's format, and on a refusal its reason as the `message` the reader
/// shows (§3.3 [AF-TD]).
fn with_access(obj: Obj, format: AccessFormat, refusal: Option<&str>) -> Obj {
    let open = refusal.is_none();
    let obj = match format {
        AccessFormat::Int => obj.num("access", u64::from(open)),
        AccessFormat::Bool => obj.bool("access", open),
    };
    match refusal {
        Some(reason) => obj.str("message", reason),
        None => obj,
    }
}

/// Whether a log page of `len` records is the last (§3.6). Log replies carry the total in
/// `count` and the page's last index in `to`; sources disagree on the test (`to >= count`,
/// `to == count`, `to < count - 1`). `to >= count` is never early, whether indexes start at 0 or
/// 1; where it is late by one page, the terminal answers the extra request with an empty page,
/// which ends paging as well. A `count` equal to the page's size with `to` past it is a count per
/// page (§3.9, question 4), not a total: paging goes on until the empty page.
fn logs_exhausted(msg: &OwnedValue, len: usize) -> bool {
    match (u64_at(msg, "to"), u64_at(msg, "count")) {
        (Some(to), Some(count)) => to >= count && count != len as u64,
        _ => false,
    }
}

/// `cloudtime`: now on the terminal's wall clock by the clock rule, which it sets its clock from
/// (§3.2 [AF-TD]); UTC when the rule knows no zone or offset, as its records are then read.
fn cloudtime(clock: &Clock, now: Timestamp) -> String {
    clock
        .wall_or_utc(now)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The terminal showed its clock (`reg` `devinfo.time`): its offset is learned when no zone is
/// configured, and a clock off by more than `clock::MAX_DRIFT` is a `clock_drift` event. The
/// `cloudtime` of the answer then sets it right.
fn drift(clock: &mut Clock, shown: Option<DateTime>, now: Timestamp) -> Option<Action> {
    let drift = clock.observe(shown?, now)?;
    Some(Action::Event {
        kind: "clock_drift".into(),
        payload: clock.drift_payload(&drift),
        on_stored: None,
        on_failed: None,
    })
}

fn reg_ok(now: Timestamp, clock: &Clock) -> String {
    // `nosenduser`: users stay on the terminal unless an operator asks for them (`get_users`).
    Obj::new()
        .str("ret", "reg")
        .bool("result", true)
        .str("cloudtime", &cloudtime(clock, now))
        .bool("nosenduser", true)
        .done()
}

/// `reason` is shown on the terminal's screen.
fn reg_refused(reason: &str) -> String {
    Obj::new()
        .str("ret", "reg")
        .bool("result", false)
        .str("reason", reason)
        .done()
}

impl Conversation for Session {
    fn on_frame(&mut self, frame: &mut [u8], now: Timestamp) -> Vec<Action> {
        let Some(msg) = frame::parse(frame) else {
            return Vec::new();
        };
        // A reply names itself with `ret`; some firmware echoes `cmd` instead (§3.8).
        if let Some(ret) = str_at(&msg, "ret") {
            return if self.awaits(ret) {
                self.on_reply(msg, now)
            } else {
                Vec::new()
            };
        }
        let Some(cmd) = str_at(&msg, "cmd") else {
            return Vec::new();
        };
        match cmd {
            "reg" => self.on_reg(&msg, now),
            "sendlog" => self.on_sendlog(msg),
            "senduser" => self.on_senduser(&msg, now),
            "sendqrcode" => self.on_sendqrcode(),
            "heartbeat" => match &self.state {
                State::Ready { clock, .. } => {
                    vec![Action::Send(
                        Obj::new()
                            .str("ret", "heartbeat")
                            .bool("result", true)
                            .str("cloudtime", &cloudtime(clock, now))
                            .done(),
                    )]
                }
                _ => Vec::new(),
            },
            _ if self.awaits(cmd) => self.on_reply(msg, now),
            // A late reply that echoes one of our commands' names expects nothing.
            _ if command::is_server_command(cmd) => Vec::new(),
            _ => self.on_unrecognised(cmd),
        }
    }

    fn on_identity(&mut self, identity: Identity, now: Timestamp) -> Vec<Action> {
        let State::Identifying(serial, shown) = &mut self.state else {
            return Vec::new();
        };
        let (serial, shown) = (std::mem::take(serial), shown.take());
        match identity {
            Identity::Known(known) => {
                let mut clock = Clock::new(known.zone);
                let drifted = drift(&mut clock, shown, now);
                let reply = reg_ok(now, &clock);
                self.state = State::Ready { serial, clock };
                let mut out = vec![Action::Online];
                out.extend(drifted);
                out.push(Action::Send(reply));
                out.push(self.start_backfill(now));
                out
            }
            Identity::Unknown => {
                self.state = State::Unregistered;
                vec![Action::Send(reg_refused("not approved yet"))]
            }
            Identity::Refused => {
                self.state = State::Unregistered;
                vec![Action::Send(reg_refused("registration refused"))]
            }
        }
    }

    fn on_access(&mut self, facts: AccessFacts, now: Timestamp) -> Vec<Action> {
        let (Some(asking), State::Ready { clock, .. }) = (self.asking.take(), &self.state) else {
            return Vec::new();
        };
        let format = facts.policy.format;
        match asking {
            Asking::Log {
                mut records,
                logindex,
            } => {
                for r in &mut records {
                    clock.stamp(r);
                }
                let refused = refusal(&records, &facts);
                // `count` says what the store was given; `logindex` is echoed for the terminal's
                // own check.
                let mut ack = Obj::new()
                    .str("ret", "sendlog")
                    .bool("result", true)
                    .num("count", records.len() as u64);
                if let Some(index) = &logindex {
                    ack = ack.value("logindex", index);
                }
                let ack = ack.str("cloudtime", &cloudtime(clock, now));
                vec![Action::StoreRecords {
                    records,
                    on_stored: Some(with_access(ack, format, refused).done()),
                    on_failed: Some(failed("sendlog")),
                }]
            }
            // The gateway keeps no QR codes, so it vouches for none, whatever the rule: letting
            // any code in would open the door to anything printed.
            Asking::QrCode => {
                let refused = Obj::new()
                    .str("ret", "sendqrcode")
                    .bool("result", false)
                    .num("reason", 1);
                vec![Action::Send(
                    with_access(refused, format, Some("unknown code")).done(),
                )]
            }
        }
    }

    fn start_command(
        &mut self,
        command_id: &str,
        command: &str,
        payload: &OwnedValue,
        now: Timestamp,
    ) -> Result<Vec<Action>, CommandError> {
        let State::Ready { clock, .. } = &self.state else {
            return Err(CommandError::NotReady);
        };
        // Checked before `Busy`: a bad command is refused now rather than retried later.
        let plan = command::plan(command, payload, clock, now)?;
        if self.job.is_some() {
            return Err(CommandError::Busy);
        }
        let command_id = command_id.to_string();
        match plan {
            Plan::Fire(frame) => Ok(vec![
                Action::Send(frame),
                Action::CommandDone {
                    command_id,
                    ok: true,
                    result: Obj::new().bool("sent", true).done(),
                },
            ]),
            Plan::Request {
                name,
                frame,
                collect,
                wait,
            } => {
                self.job = Some(Job {
                    command_id: Some(command_id),
                    name,
                    wait,
                    deadline: self.deadline(wait, now),
                    paged: collect.map(Paged::new),
                });
                Ok(vec![Action::Send(frame)])
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.is_authenticated() && self.job.is_none()
    }

    fn on_tick(&mut self, now: Timestamp) -> Vec<Action> {
        if self.job.as_ref().is_none_or(|j| now < j.deadline) {
            return Vec::new();
        }
        // The backfill, or a timed-out command's wait for its late reply, ends here; a reply
        // after this finds nothing outstanding under its name and is ignored.
        let Some(job) = self.job.take() else {
            return Vec::new();
        };
        let Some(command_id) = job.command_id else {
            return Vec::new();
        };
        // A command's request stays outstanding for as long again, reporting to no one: the
        // next command could have the same name (photos of several users, one `setuserinfo`
        // each), and its reply could not be told from this one's late reply.
        self.job = Some(Job {
            command_id: None,
            deadline: self.deadline(job.wait, now),
            paged: None,
            ..job
        });
        vec![Action::CommandDone {
            command_id,
            ok: false,
            result: Obj::new().str("error", "timeout").done(),
        }]
    }

    fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }
}
