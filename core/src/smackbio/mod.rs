//! SmackBio-compatible XML terminals (M50/M60/M70/M82/F500 and rebrands), sans-IO: frames, identity
//! answers and the time in; `terminal::Action`s out. See protocols.md §1.4 and §2.
//!
//! Two dialects are spoken, each terminal answered in the one it used first:
//! * the vendor's, `<Message><Request>Register</Request>…</Message>`: Register (token issued),
//!   then Login with the token, then events and commands;
//! * the iotaccess dashboard page's, `<Request><Operation>Register</Operation>…</Request>`:
//!   Register authenticates by itself and is answered with a `<Session>`.
//!
//! The XML carries no request ids, so (like both vendor samples) one request is outstanding at a
//! time. Its reply is the frame whose `<Response>` (dashboard: `<Operation>`) names the request:
//! F500 firmware also sends frames carrying only `<Result>` to acknowledge the server's previous
//! reply, and a reply to a request that timed out can still arrive; both are consumed without
//! being taken for the answer to anything. After authentication the session sets the terminal's
//! clock (when its zone is known, `crate::clock`) and backfills the logs it missed, one log per
//! step; between steps the backfill is parked, so operator commands go first (`resume`).

mod commands;
mod values;
mod xml;

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use simd_json::OwnedValue;

use crate::clock::Clock;
use crate::terminal::{self, Action, CommandError, Conversation, Identity, Known, Timeouts};
use commands::Op;
use xml::{Dialect, Doc};

/// The command reply timeout of the vendor C# sample (`BeginCommand`): one timeout for every
/// request, as tests and benches run a session. The server gives quick and long requests their
/// own (`Timeouts::VENDOR` unless configured).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Identity answers owed at once; a terminal repeating Register/Login faster than the runtime
/// answers is not served more.
const MAX_PENDING_IDENTITIES: usize = 4;
/// Longest serial number accepted; longer ones are not a terminal's.
const MAX_SERIAL: usize = 64;
/// Most users one `get_users` walk collects (the result is one JSON document).
const MAX_LISTED_USERS: usize = 10_000;

/// One terminal connection.
#[derive(Debug)]
pub struct Session {
    /// The wait of the session's own requests (clock, backfill) and of each further page of a
    /// walk: the long one, since a log may carry its photo.
    timeout: Duration,
    /// An operator command's first request waits by its plan's `Wait`.
    timeouts: Timeouts,
    /// How long a command that timed out stays outstanding for its late reply: its own timeout.
    late_for: Duration,
    seed: u64,
    dialect: Option<Dialect>,
    /// The serial this connection named first; frames naming another are ignored, so one
    /// connection never speaks for two devices.
    serial: Option<String>,
    /// Register/Login frames whose `Identify` is unanswered, oldest first.
    pending: VecDeque<Pending>,
    known: Option<Known>,
    authenticated: bool,
    outstanding: Option<Outstanding>,
    clock: Clock,
    /// The terminal's clock was found drifting: set it when no request is outstanding.
    clock_due: bool,
    backfill: Backfill,
    /// The position past every log known to be stored, this session's and the saved one; live
    /// logs move it once the backfill has caught up, so a reconnect reads only what it missed.
    position: u64,
}

/// Where the backfill of missed logs stands.
#[derive(Debug, PartialEq)]
enum Backfill {
    /// Not logged in yet.
    Idle,
    /// The next step reads from this position, when nothing else is outstanding.
    Parked(u64),
    /// A step is outstanding (`Job::Backfill`).
    Running,
    /// Caught up: the terminal has no log at the next position. Live logs now move the saved
    /// position.
    Done,
    /// The terminal failed or did not answer a step: the saved position stays where the logs
    /// stop being known stored, and the next connection tries from there.
    Stopped,
}

/// A Register or Login waiting for the runtime's `Identity`.
#[derive(Debug)]
enum Pending {
    Register,
    /// With the token the terminal presented.
    Login(Option<String>),
}

#[derive(Debug)]
struct Outstanding {
    job: Job,
    deadline: Timestamp,
    /// The request's name, which its reply names again; `None` for a `raw` message without one.
    name: Option<String>,
}

/// What the outstanding request is for.
#[derive(Debug)]
enum Job {
    /// The session's own `SetTime`: after login, or when the clock was found drifting.
    SetClock,
    /// One backfill step; `pos` is the position asked for. Emits no `CommandDone`.
    Backfill {
        pos: u64,
    },
    Command {
        id: String,
        op: Op,
    },
    /// A command that timed out, waiting for its late reply, which is consumed without a word:
    /// the replies carry no id, so it would otherwise be taken for the next command's.
    Late,
}

/// What a frame is, once classified.
enum Kind<'d> {
    /// The terminal asks something of us (Register, Login).
    Request(&'d str),
    Event(&'d str),
    /// A reply, named by its `Response` (dashboard: `Operation`) when it names itself.
    Reply(Option<&'d str>),
    /// A vendor frame with none of `Request`, `Event`, `Response`: F500 firmware acknowledging
    /// the server's previous reply with a bare `<Result>`.
    Ack,
}

impl Session {
    /// A session for a newly accepted connection.
    ///
    /// `timeouts`: how long a request waits for its reply, by its `Wait` (a single `Duration` for
    /// every request, such as `DEFAULT_COMMAND_TIMEOUT`, the vendor's 5 s). `seed`: randomness
    /// drawn by the runtime (the conversation reads no RNG or clock of its own); the token a
    /// vendor Register issues when the serial holds none, and the dashboard dialect's `Session`
    /// id, are derived from it.
    pub fn new(timeouts: impl Into<Timeouts>, seed: u64) -> Session {
        let timeouts = timeouts.into();
        Session {
            timeout: timeouts.long,
            timeouts,
            late_for: timeouts.long,
            seed,
            dialect: None,
            serial: None,
            pending: VecDeque::new(),
            known: None,
            authenticated: false,
            outstanding: None,
            clock: Clock::new(None),
            clock_due: false,
            backfill: Backfill::Idle,
            position: 0,
        }
    }

    /// When the outstanding request times out, for the runtime's timer (`on_tick` enforces it).
    pub fn deadline(&self) -> Option<Timestamp> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }

    fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or(Dialect::Vendor)
    }

    fn send_request(
        &mut self,
        job: Job,
        name: &str,
        fields: &[(&str, &str)],
        now: Timestamp,
    ) -> Action {
        self.outstanding = Some(Outstanding {
            job,
            deadline: self.deadline_from(now),
            name: Some(name.to_owned()),
        });
        Action::Send(self.dialect().message("Request", name, fields))
    }

    /// `SetTime` to the terminal's wall time by the clock rule, if the rule knows it.
    fn set_clock(&mut self, now: Timestamp) -> Option<Action> {
        let time = values::format_time(self.clock.wall(now)?);
        self.clock_due = false;
        Some(self.send_request(Job::SetClock, "SetTime", &[("Time", &time)], now))
    }

    fn deadline_from(&self, now: Timestamp) -> Timestamp {
        now.saturating_add(self.timeout).unwrap_or(Timestamp::MAX)
    }

    fn classify<'d>(doc: &'d Doc<'_>) -> Option<(Dialect, Kind<'d>)> {
        match doc.root() {
            "Message" => {
                // A reply is recognised first: its fields may include any tag name.
                let kind = if let Some(name) = doc.get("Response") {
                    Kind::Reply(Some(name).filter(|n| !n.is_empty()))
                } else if let Some(name) = doc.get("Request") {
                    Kind::Request(name)
                } else if let Some(name) = doc.get("Event") {
                    Kind::Event(name)
                } else {
                    Kind::Ack
                };
                Some((Dialect::Vendor, kind))
            }
            "Request" => {
                let op = doc.get_nonempty("Operation")?;
                let kind = if ["Register", "Login"]
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(op))
                {
                    Kind::Request(op)
                } else {
                    Kind::Event(op)
                };
                Some((Dialect::Dashboard, kind))
            }
            // The page's replies may leave the name out; they are then taken in order.
            "Response" => Some((
                Dialect::Dashboard,
                Kind::Reply(doc.get_nonempty("Operation")),
            )),
            _ => None,
        }
    }

    /// Register or Login: ask the runtime who this is.
    fn on_auth_request(&mut self, doc: &Doc<'_>, login: bool) -> Vec<Action> {
        let Some(serial) = doc
            .get_nonempty("DeviceSerialNo")
            .filter(|s| s.len() <= MAX_SERIAL)
        else {
            return Vec::new();
        };
        if self.serial.as_deref().is_some_and(|s| s != serial)
            || self.pending.len() >= MAX_PENDING_IDENTITIES
        {
            return Vec::new();
        }
        self.serial = Some(serial.to_owned());
        let (model, token) = if login {
            (None, doc.get_nonempty("Token"))
        } else {
            (
                doc.get_nonempty("TerminalType")
                    .or_else(|| doc.get_nonempty("ProductName")),
                None,
            )
        };
        self.pending.push_back(if login {
            Pending::Login(token.map(str::to_owned))
        } else {
            Pending::Register
        });
        vec![Action::Identify {
            serial: serial.to_owned(),
            model: model.map(str::to_owned),
            firmware: None,
            token: token.map(str::to_owned),
            cloud_id: doc.get_nonempty("CloudId").map(str::to_owned),
        }]
    }

    /// The terminal is in: claim its slot (once), answer, and start the setup: the clock when its
    /// zone is configured (a clock set from a guessed zone would put every later punch hours
    /// off), then the backfill from the saved position, parked until nothing else waits.
    fn authenticate(&mut self, reply: String, now: Timestamp) -> Vec<Action> {
        let first = !self.authenticated;
        self.authenticated = true;
        let mut out = Vec::with_capacity(3);
        if first {
            out.push(Action::Online);
        }
        out.push(Action::Send(reply));
        if first {
            let known = self.known.as_ref();
            self.clock = Clock::new(known.and_then(|k| k.zone.clone()));
            self.position = known.map_or(0, |k| k.log_position);
            self.backfill = Backfill::Parked(self.position);
            if self.clock.configured() && self.outstanding.is_none() {
                out.extend(self.set_clock(now));
            }
        }
        out
    }

    fn on_register_answer(
        &mut self,
        serial: &str,
        identity: Identity,
        now: Timestamp,
    ) -> Vec<Action> {
        let dialect = self.dialect();
        match identity {
            Identity::Known(known) => {
                self.known = Some(known);
                match dialect {
                    Dialect::Vendor => {
                        let (token, save) = self.token();
                        let reply = dialect.message(
                            "Response",
                            "Register",
                            &[
                                ("DeviceSerialNo", serial),
                                ("Token", &token),
                                ("Result", "OK"),
                            ],
                        );
                        let mut out: Vec<Action> = save.into_iter().collect();
                        out.push(Action::Send(reply));
                        out
                    }
                    Dialect::Dashboard => {
                        // The page's Register is the whole handshake: its `Session` is not
                        // presented again, so it is not kept.
                        let session =
                            format!("sess_{}", values::token_from(self.seed).replace('-', ""));
                        let mut reply = String::from("<Response>");
                        xml::push_tag(&mut reply, "Result", "success");
                        xml::push_tag(&mut reply, "Session", &session);
                        xml::push_tag(&mut reply, "DeviceSerialNo", serial);
                        reply.push_str("</Response>");
                        self.authenticate(reply, now)
                    }
                }
            }
            Identity::Unknown => {
                let reply = match dialect {
                    Dialect::Vendor => dialect.message(
                        "Response",
                        "Register",
                        &[("DeviceSerialNo", serial), ("Result", "Fail")],
                    ),
                    Dialect::Dashboard => {
                        let mut reply = String::from("<Response>");
                        xml::push_tag(&mut reply, "Result", "fail");
                        xml::push_tag(&mut reply, "DeviceSerialNo", serial);
                        reply.push_str("</Response>");
                        reply
                    }
                };
                vec![Action::Send(reply)]
            }
            // The vendor server closes without a word when the cloud id is wrong; every refusal
            // (a source outside the device's networks too) looks the same to the terminal.
            Identity::Refused => vec![Action::Close("registration refused")],
        }
    }

    /// The serial's token and, when it had none, the action that saves the one issued now. The
    /// vendor reuses a serial's token; a new one only if it has none.
    fn token(&self) -> (String, Option<Action>) {
        match self.known.as_ref().and_then(|k| k.token.clone()) {
            Some(token) => (token, None),
            None => {
                let token = values::token_from(self.seed);
                (token.clone(), Some(Action::SaveToken(token)))
            }
        }
    }

    fn on_login_answer(
        &mut self,
        serial: &str,
        identity: Identity,
        presented: Option<&str>,
        now: Timestamp,
    ) -> Vec<Action> {
        let dialect = self.dialect();
        let reply = |result: &str| {
            dialect.message(
                "Response",
                "Login",
                &[("DeviceSerialNo", serial), ("Result", result)],
            )
        };
        match identity {
            // Firmware that logs in before (or instead of) registering expects its token in the
            // Login reply (Pioneer bridge, F500: protocols.md §2.7 item 1). A Login without a
            // token is therefore a Register and Login in one: it passed the same checks a
            // Register does (allowed sources, cloud id), and gets the serial's token.
            Identity::Known(known) if presented.is_none() => {
                self.known = Some(known);
                let (token, save) = self.token();
                let reply = dialect.message(
                    "Response",
                    "Login",
                    &[
                        ("DeviceSerialNo", serial),
                        ("Token", &token),
                        ("Result", dialect.result(true)),
                    ],
                );
                let mut out: Vec<Action> = save.into_iter().collect();
                out.extend(self.authenticate(reply, now));
                out
            }
            Identity::Known(known) => {
                let matches = |expected: Option<&String>| {
                    presented
                        .zip(expected)
                        .is_some_and(|(p, e)| values::token_eq(p, e))
                };
                if matches(known.token.as_ref()) {
                    self.known = Some(known);
                    self.authenticate(reply(dialect.result(true)), now)
                } else {
                    // What makes the terminal register again for a fresh token.
                    vec![Action::Send(reply(unknown_token(dialect)))]
                }
            }
            Identity::Unknown => vec![Action::Send(reply(unknown_token(dialect)))],
            Identity::Refused => vec![Action::Send(reply(dialect.result(false)))],
        }
    }

    fn on_event(&mut self, doc: &Doc<'_>, name: &str, now: Timestamp) -> Vec<Action> {
        let dialect = self.dialect();
        let Some(event) = [
            "TimeLog_v2",
            "TimeLog",
            "AdminLog_v2",
            "AdminLog",
            "KeepAlive",
        ]
        .into_iter()
        .find(|e| e.eq_ignore_ascii_case(name)) else {
            return self.on_unknown_event(doc, name);
        };
        if event == "KeepAlive" {
            return self.on_keepalive(doc, now);
        }
        let echo = log_echo(dialect, event, doc);
        if event.starts_with("TimeLog") {
            if let Some(minutes) = doc
                .get_nonempty("UtcTimezoneMinutes")
                .and_then(|m| m.parse::<i64>().ok())
            {
                self.clock.learn_offset_minutes(minutes);
            }
            // A punch is answered only once it is durable: `Fail` makes the terminal keep it.
            let mut out = vec![Action::StoreRecords {
                records: vec![self.record(doc)],
                on_stored: Some(dialect.event_ack(event, true, &echo)),
                on_failed: Some(dialect.event_ack(event, false, &echo)),
            }];
            // Once the backfill has caught up, a live log moves the saved position past it (the
            // runtime saves it only if the log was stored), so the next connection's backfill
            // starts after it instead of re-reading every log heard live.
            if self.backfill == Backfill::Done
                && let Some(next) = next_log_position(doc, self.position)
            {
                self.position = next;
                out.push(Action::SavePosition(next));
            }
            out
        } else {
            // An admin log is an event, not a punch, but the terminal drops it once acked just
            // the same: the answer waits for durability too.
            vec![Action::Event {
                kind: "admin_log".into(),
                payload: doc.to_json(),
                on_stored: Some(dialect.event_ack(event, true, &echo)),
                on_failed: Some(dialect.event_ack(event, false, &echo)),
            }]
        }
    }

    /// A log in the common record shape, with the terminal's reported offset when it states none
    /// and no zone is configured (the clock rule).
    fn record(&self, doc: &Doc<'_>) -> OwnedValue {
        let mut record = values::log_record(doc);
        self.clock.stamp(&mut record);
        record
    }

    /// `KeepAlive` is answered with the server's time on the terminal's clock (its own `DevTime`
    /// when the rule knows no zone yet); a clock found drifting is reported as a `clock_drift`
    /// event and, when the zone is configured, set again.
    fn on_keepalive(&mut self, doc: &Doc<'_>, now: Timestamp) -> Vec<Action> {
        let dev_time = doc.get("DevTime").unwrap_or("");
        let mut out = Vec::with_capacity(3);
        if let Some(drift) = values::parse_time(dev_time).and_then(|t| self.clock.observe(t, now)) {
            out.push(Action::Event {
                kind: "clock_drift".into(),
                payload: self.clock.drift_payload(&drift),
                on_stored: None,
                on_failed: None,
            });
            self.clock_due = self.clock.configured();
        }
        let server_time = self
            .clock
            .wall(now)
            .map_or_else(|| dev_time.to_owned(), values::format_time);
        let echo = [("DevTime", dev_time), ("ServerTime", server_time.as_str())];
        out.push(Action::Send(self.dialect().event_ack(
            "KeepAlive",
            true,
            &echo,
        )));
        if self.clock_due && self.outstanding.is_none() {
            out.extend(self.set_clock(now));
        }
        out
    }

    /// An event this conversation does not know (`OpLog_v2` and the like). It is the terminal's
    /// data and it drops it once acknowledged, so it is stored as a `terminal_event` (the whole
    /// message as JSON) and answered `OK` only once durable, `Fail` otherwise, echoing `TransID`
    /// and `LogID` as the `_v2` acks do. The runtime also logs and counts it.
    fn on_unknown_event(&self, doc: &Doc<'_>, name: &str) -> Vec<Action> {
        if !terminal::echoable(name) {
            return vec![Action::Unrecognised("(not a name)".into())];
        }
        let echo: Vec<(&str, &str)> = ["TransID", "LogID"]
            .into_iter()
            .filter_map(|tag| Some((tag, doc.get(tag)?)))
            .collect();
        let dialect = self.dialect();
        vec![
            Action::Unrecognised(name.to_string()),
            Action::Event {
                kind: "terminal_event".into(),
                payload: doc.to_json(),
                on_stored: Some(dialect.event_ack(name, true, &echo)),
                on_failed: Some(dialect.event_ack(name, false, &echo)),
            },
        ]
    }

    /// A request of the terminal's own that this conversation does not know (`Heartbeat` and
    /// the like). Every message the terminal starts expects a reply (without one some firmware
    /// drops the connection or resends forever), and the vendor's sample servers answer unknown
    /// ones with a generic success: so, once logged in, `<Response>name</Response><Result>OK`.
    /// A request carries no data, so nothing is stored; the runtime logs and counts it.
    fn on_unrecognised(&self, name: &str) -> Vec<Action> {
        if !terminal::echoable(name) {
            return vec![Action::Unrecognised("(not a name)".into())];
        }
        let mut out = vec![Action::Unrecognised(name.to_string())];
        if self.authenticated {
            out.push(Action::Send(self.dialect().event_ack(name, true, &[])));
        }
        out
    }

    /// A reply: the answer to the outstanding request if it names that request (or names
    /// nothing, in the dashboard dialect, whose replies may not). A reply naming another request
    /// answers one that timed out, and is dropped rather than taken for this one's answer.
    fn on_reply(&mut self, doc: &Doc<'_>, name: Option<&str>, now: Timestamp) -> Vec<Action> {
        let matches = self
            .outstanding
            .as_ref()
            .is_some_and(|o| match (name, o.name.as_deref()) {
                (Some(got), Some(asked)) => answers(got, asked),
                _ => true,
            });
        let Some(outstanding) = self.outstanding.take_if(|_| matches) else {
            return Vec::new();
        };
        match outstanding.job {
            Job::SetClock => Vec::new(),
            Job::Backfill { pos } => self.on_backfill_step(doc, pos),
            Job::Command { id, op } => self.on_command_reply(id, op, doc, now),
            Job::Late => Vec::new(),
        }
    }

    /// One backfill step answered: the log is stored and the walk parks at the next position.
    /// `Fail` is the vendor PHP sample's "no more": caught up. Any other verdict, or a log that
    /// does not move the walk forward, stops it where it is.
    fn on_backfill_step(&mut self, doc: &Doc<'_>, pos: u64) -> Vec<Action> {
        if !result_ok(doc) {
            let no_more = doc
                .get("Result")
                .is_some_and(|r| r.eq_ignore_ascii_case("Fail"));
            self.backfill = if no_more {
                Backfill::Done
            } else {
                Backfill::Stopped
            };
            return Vec::new();
        }
        let mut out = vec![self.store_fetched(doc)];
        match next_log_position(doc, pos) {
            Some(next) => {
                self.backfill = Backfill::Parked(next);
                if next > self.position {
                    self.position = next;
                    out.push(Action::SavePosition(next));
                }
            }
            None => self.backfill = Backfill::Stopped,
        }
        out
    }

    /// A log fetched by request: stored, with nothing to tell the terminal either way.
    fn store_fetched(&self, doc: &Doc<'_>) -> Action {
        Action::StoreRecords {
            records: vec![self.record(doc)],
            on_stored: None,
            on_failed: None,
        }
    }

    /// Asks for logs from `pos`: `GetFirstGlog` from the start (its `BeginLogPos` is always 0 in
    /// the vendor samples), else `GetNextGlog`.
    fn request_log(&mut self, job: Job, pos: u64, now: Timestamp) -> Action {
        let begin = pos.to_string();
        let name = if pos == 0 {
            "GetFirstGlog"
        } else {
            "GetNextGlog"
        };
        self.send_request(job, name, &[("BeginLogPos", &begin)], now)
    }

    fn on_command_reply(
        &mut self,
        id: String,
        op: Op,
        doc: &Doc<'_>,
        now: Timestamp,
    ) -> Vec<Action> {
        let done = |id: String, ok: bool, result: String| Action::CommandDone {
            command_id: id,
            ok,
            result,
        };
        // The walks end on `Fail` (the vendor PHP sample's "no more"); other results are errors.
        let result = doc.get("Result").unwrap_or("no result");
        let error = || format!("{{\"error\":{}}}", crate::json::quote(result));
        match op {
            Op::Single { store_log } => {
                let ok = single_ok(doc);
                let mut out = Vec::with_capacity(2);
                if store_log && ok && doc.get_nonempty("Time").is_some() {
                    out.push(self.store_fetched(doc));
                }
                out.push(done(id, ok, doc.to_json()));
                out
            }
            Op::Users {
                walk,
                mut users,
                asked,
            } => {
                if result_ok(doc) {
                    users.push(values::user_json(doc));
                    let truncated = users.len() >= MAX_LISTED_USERS;
                    let more = walk && !truncated && doc.get("More").is_some_and(values::is_yes);
                    // A terminal answering with the id it was asked about would be walked forever.
                    let last = doc
                        .get_nonempty("UserID")
                        .filter(|id| more && asked.as_deref() != Some(*id));
                    if let Some(last) = last {
                        let asked = Some(last.to_owned());
                        let op = Op::Users { walk, users, asked };
                        let last = last.to_owned();
                        return vec![self.send_request(
                            Job::Command { id, op },
                            "GetNextUserDataExt",
                            &[("UserID", &last)],
                            now,
                        )];
                    }
                    let extra = if truncated { ",\"truncated\":true" } else { "" };
                    vec![done(
                        id,
                        true,
                        format!("{{\"users\":[{}]{extra}}}", users.join(",")),
                    )]
                } else if walk && result == "Fail" {
                    vec![done(
                        id,
                        true,
                        format!("{{\"users\":[{}]}}", users.join(",")),
                    )]
                } else {
                    vec![done(id, false, error())]
                }
            }
            Op::Logs { records, pos } => {
                if result_ok(doc) {
                    let records = records + 1;
                    let mut out = vec![self.store_fetched(doc)];
                    match next_log_position(doc, pos) {
                        Some(next) => out.push(self.request_log(
                            Job::Command {
                                id,
                                op: Op::Logs { records, pos: next },
                            },
                            next,
                            now,
                        )),
                        None => out.push(done(id, true, logs_json(records, pos))),
                    }
                    out
                } else if result == "Fail" {
                    vec![done(id, true, logs_json(records, pos))]
                } else {
                    vec![done(id, false, error())]
                }
            }
        }
    }
}

/// Whether a reply named `got` answers the request `asked`: the same name, or another step of
/// the same walk (a `GetFirstGlog` answered as `GetNextGlog`, `GetFirstUserData` as
/// `GetNextUserDataExt`), which firmware and the vendor samples use interchangeably.
fn answers(got: &str, asked: &str) -> bool {
    fn walk(name: &str) -> String {
        let lower = name.to_ascii_lowercase();
        let rest = ["getfirst", "getnext", "get"]
            .into_iter()
            .find_map(|p| lower.strip_prefix(p))
            .unwrap_or(&lower);
        rest.strip_suffix("ext").unwrap_or(rest).to_owned()
    }
    got.eq_ignore_ascii_case(asked) || {
        let family = walk(asked);
        (family == "glog" || family == "userdata") && walk(got) == family
    }
}

/// `Result` says OK (the dashboard page writes `success`).
fn result_ok(doc: &Doc<'_>) -> bool {
    doc.get("Result")
        .is_some_and(|r| r.eq_ignore_ascii_case("OK") || r.eq_ignore_ascii_case("success"))
}

/// A single request's verdict: its `Result`; else `ResultCode` `Success` (remote enrolment);
/// else, for replies that carry no verdict (`GetTime` answers with `Time`), that it names what
/// it answers.
fn single_ok(doc: &Doc<'_>) -> bool {
    match (doc.get("Result"), doc.get("ResultCode")) {
        (Some(_), _) => result_ok(doc),
        (None, Some(code)) => code.eq_ignore_ascii_case("Success"),
        (None, None) => doc
            .get_nonempty("Response")
            .or_else(|| doc.get_nonempty("Operation"))
            .is_some(),
    }
}

fn logs_json(records: u64, pos: u64) -> String {
    format!("{{\"records\":{records},\"next_position\":{pos}}}")
}

/// Where the walk goes after a log: `LogID + 1` (vendor PHP sample), if that moves forward. A
/// terminal that answers with an older log would otherwise be walked forever.
fn next_log_position(doc: &Doc<'_>, asked: u64) -> Option<u64> {
    let id: u64 = doc.get("LogID")?.parse().ok()?;
    id.checked_add(1).filter(|next| *next > asked)
}

/// The fields echoed in an event's answer. Vendor: `TransID` for the `_v2` events (always
/// present, empty if the terminal sent none, as the C# sample writes it). Dashboard: the page was
/// cut off before its answer, so it echoes `LogId` (and `TransID`) when the terminal sent them.
fn log_echo<'d>(dialect: Dialect, event: &str, doc: &'d Doc<'_>) -> Vec<(&'static str, &'d str)> {
    match dialect {
        Dialect::Vendor if event.ends_with("_v2") => {
            vec![("TransID", doc.get("TransID").unwrap_or(""))]
        }
        Dialect::Vendor => Vec::new(),
        Dialect::Dashboard => {
            let log_id = doc
                .get_nonempty("LogId")
                .or_else(|| doc.get_nonempty("LogID"));
            [("LogId", log_id), ("TransID", doc.get_nonempty("TransID"))]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect()
        }
    }
}

fn unknown_token(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Vendor => "FailUnknownToken",
        Dialect::Dashboard => "fail",
    }
}

impl Conversation for Session {
    fn on_frame(&mut self, frame: &mut [u8], now: Timestamp) -> Vec<Action> {
        let Some(doc) = Doc::parse(frame) else {
            return Vec::new();
        };
        let Some((dialect, kind)) = Self::classify(&doc) else {
            return Vec::new();
        };
        self.dialect.get_or_insert(dialect);
        match kind {
            Kind::Request(name) if name.eq_ignore_ascii_case("Register") => {
                self.on_auth_request(&doc, false)
            }
            Kind::Request(name) if name.eq_ignore_ascii_case("Login") => {
                self.on_auth_request(&doc, true)
            }
            Kind::Request(name) => self.on_unrecognised(name),
            // Before login the vendor server neither stores nor answers events.
            Kind::Event(_) if !self.authenticated => Vec::new(),
            Kind::Event(name) => self.on_event(&doc, name, now),
            Kind::Reply(name) => self.on_reply(&doc, name, now),
            // Consumed: it answers nothing of ours, and nothing answers it.
            Kind::Ack => Vec::new(),
        }
    }

    fn on_identity(&mut self, identity: Identity, now: Timestamp) -> Vec<Action> {
        let Some(pending) = self.pending.pop_front() else {
            return Vec::new();
        };
        let serial = self.serial.clone().unwrap_or_default();
        match pending {
            Pending::Register => self.on_register_answer(&serial, identity, now),
            Pending::Login(token) => self.on_login_answer(&serial, identity, token.as_deref(), now),
        }
    }

    fn start_command(
        &mut self,
        command_id: &str,
        command: &str,
        payload: &OwnedValue,
        now: Timestamp,
    ) -> Result<Vec<Action>, CommandError> {
        if !self.authenticated {
            return Err(CommandError::NotReady);
        }
        let planned = commands::plan(self.dialect(), command, payload, now, &self.clock)?;
        if self.outstanding.is_some() {
            return Err(CommandError::Busy);
        }
        // The reply names what the frame requests; a `raw` frame names it too, or is answered
        // by the next reply of any name.
        let name = Doc::parse(planned.frame.as_bytes()).and_then(|d| {
            d.get_nonempty("Request")
                .or_else(|| d.get_nonempty("Operation"))
                .map(str::to_owned)
        });
        let job = Job::Command {
            id: command_id.to_owned(),
            op: planned.op,
        };
        self.late_for = self.timeouts.of(planned.wait);
        self.outstanding = Some(Outstanding {
            job,
            deadline: now.saturating_add(self.late_for).unwrap_or(Timestamp::MAX),
            name,
        });
        Ok(vec![Action::Send(planned.frame)])
    }

    fn is_idle(&self) -> bool {
        self.authenticated && self.outstanding.is_none()
    }

    fn on_tick(&mut self, now: Timestamp) -> Vec<Action> {
        if self.outstanding.as_ref().is_none_or(|o| now < o.deadline) {
            return Vec::new();
        }
        let Some(Outstanding { job, name, .. }) = self.outstanding.take() else {
            return Vec::new();
        };
        match job {
            Job::Command { id, .. } => {
                // Outstanding for as long again under its name: replies carry no id, so a late
                // reply must not be taken for the next command of the same name (a run of
                // `set_user`s). Replies of other names are told apart by name anyway.
                self.outstanding = Some(Outstanding {
                    job: Job::Late,
                    deadline: now.saturating_add(self.late_for).unwrap_or(Timestamp::MAX),
                    name,
                });
                vec![Action::CommandDone {
                    command_id: id,
                    ok: false,
                    result: r#"{"error":"timeout"}"#.into(),
                }]
            }
            // A terminal that does not answer a backfill step is left as it is: it is online,
            // its live logs still arrive, commands may proceed, and the next connection
            // resumes the backfill from the saved position.
            Job::Backfill { .. } => {
                self.backfill = Backfill::Stopped;
                Vec::new()
            }
            Job::SetClock | Job::Late => Vec::new(),
        }
    }

    /// Nothing is outstanding and no operator command waits: the session's own work goes on,
    /// a clock found drifting first, then the next backfill step.
    fn resume(&mut self, now: Timestamp) -> Vec<Action> {
        if !self.authenticated || self.outstanding.is_some() {
            return Vec::new();
        }
        if self.clock_due
            && let Some(set) = self.set_clock(now)
        {
            return vec![set];
        }
        match self.backfill {
            Backfill::Parked(pos) => {
                self.backfill = Backfill::Running;
                vec![self.request_log(Job::Backfill { pos }, pos, now)]
            }
            _ => Vec::new(),
        }
    }

    fn is_authenticated(&self) -> bool {
        self.authenticated
    }
}

#[cfg(test)]
mod tests;
