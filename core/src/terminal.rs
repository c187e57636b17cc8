//! The boundary between a biometric terminal's conversation (sans-IO: `aiface`, `smackbio`) and the
//! shard runtime that drives it.
//!
//! A conversation takes frames, identity answers, storage outcomes and the current time in, and
//! gives `Action`s out. It never touches a socket, the store or a clock; the runtime performs each
//! action and feeds the outcome back. Replies that depend on durability are carried inside the
//! action (`on_stored` / `on_failed`), so the runtime sends exactly one of them after the commit.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use simd_json::OwnedValue;

/// What the runtime knows about the serial a terminal presented.
#[derive(Clone, Debug)]
pub enum Identity {
    Known(Known),
    /// No device has this serial: the runtime has put it on the pending list.
    Unknown,
    /// The device exists but may not be spoken for here: the presented cloud id or token is
    /// wrong, or the connection comes from outside the device's allowed sources, or the serial is
    /// throttled or banned.
    Refused,
}

#[derive(Clone, Debug)]
pub struct Known {
    pub device_id: String,
    /// The device's configured zone (setting `timezone`), if any: terminals speak wall-clock
    /// time, and `crate::clock` decides which.
    pub zone: Option<TimeZone>,
    /// SmackBio: the token issued to this serial before, if any (kept across sessions).
    pub token: Option<String>,
    /// SmackBio: where the last backfill stopped (a log position; 0 = from the start).
    pub log_position: u64,
}

/// The device setting that says whom a terminal asking the server (AiFace server-verify mode:
/// `sendlog` decides whether the door opens) is told to let in: see `AccessRule`.
pub const SETTING_ACCESS_RULE: &str = "server_verify_access";
/// The device setting that says how `access` is written: see `AccessFormat`.
pub const SETTING_ACCESS_FORMAT: &str = "access_format";

/// Whom the answer to a terminal's access question lets in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessRule {
    /// Everyone the terminal recognised (never an unknown face): what the server did before the
    /// rule was a setting.
    #[default]
    Allow,
    /// No one: the door stays shut whatever the terminal recognised.
    Deny,
    /// Only users this device has sent the server (`senduser`): a person the terminal recognises
    /// but never sent (enrolled before it spoke to this server, or on firmware that does not
    /// push users) is refused.
    Enrolled,
}

/// How `access` is written. The sources disagree (protocols.md §3.9 question 3): an integer
/// 1/0 in the vendor document [AF-TD], a boolean true/false on Topdata firmware [AF-TPN].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessFormat {
    #[default]
    Int,
    Bool,
}

/// A device's access settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub rule: AccessRule,
    pub format: AccessFormat,
}

impl AccessPolicy {
    /// What the runtime applies when it cannot read a device's policy (the API refuses unknown
    /// values, so one can only come from a store written some other way): the door stays shut
    /// rather than the server guessing that `allow` was meant.
    pub const DENY: AccessPolicy = AccessPolicy {
        rule: AccessRule::Deny,
        format: AccessFormat::Int,
    };

    /// The policy a device's settings give, or why a value is not one this build knows (the
    /// message the API answers a bad setting with).
    pub fn parse(settings: &BTreeMap<String, String>) -> Result<AccessPolicy, String> {
        let rule = match settings.get(SETTING_ACCESS_RULE).map(String::as_str) {
            None | Some("allow") => AccessRule::Allow,
            Some("deny") => AccessRule::Deny,
            Some("enrolled") => AccessRule::Enrolled,
            Some(_) => {
                return Err(format!(
                    "settings.{SETTING_ACCESS_RULE} must be allow, deny or enrolled"
                ));
            }
        };
        let format = match settings.get(SETTING_ACCESS_FORMAT).map(String::as_str) {
            None | Some("int") => AccessFormat::Int,
            Some("bool") => AccessFormat::Bool,
            Some(_) => {
                return Err(format!(
                    "settings.{SETTING_ACCESS_FORMAT} must be int or bool"
                ));
            }
        };
        Ok(AccessPolicy { rule, format })
    }
}

/// The answer to `Action::CheckAccess`: the device's access policy as it is now, and which of the
/// asked user ids it has a stored user for (looked up only under `AccessRule::Enrolled`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessFacts {
    pub policy: AccessPolicy,
    pub enrolled: Vec<u64>,
}

/// Longest message name an `Action::Unrecognised` carries, and that a generic answer echoes: a
/// real message name is a word, and a terminal (or anyone) must not make the server echo
/// megabytes back.
pub const MAX_UNRECOGNISED: usize = 64;

/// Whether `name` may be echoed in a generic answer: a short word of letters, digits, `_`, `-`.
pub fn echoable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_UNRECOGNISED
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How long a request may take the terminal, by what it asks of it. Every command plan carries
/// one, and the conversation's deadline for the request (for each page of a paged one) follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Answered from the terminal's memory: a door, the clock, a setting.
    Quick,
    /// Work on the terminal's side: users written to flash, a face template computed from a
    /// photo, a template or photo read back, a wipe, a page of a walk (whose logs may carry
    /// photos). Also every request the conversation cannot classify: waiting too long only delays
    /// the next command, while giving up too early fails one that succeeds.
    Long,
}

/// The timeouts of the two kinds of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub quick: Duration,
    pub long: Duration,
}

impl Timeouts {
    /// The vendor samples' values. The SmackBio C# sample gives every command 5 s
    /// (`BeginCommand`), which fits what a terminal answers from memory; the PHP sample gives
    /// every request 30 s (`start_request_timeout_monitor`), which photo enrolment needs: the
    /// terminal computes a face template from the photo before it answers, and a reply that
    /// outlived a 5 s timeout used to be taken for the next command's (protocols.md §2.6, issue 15).
    pub const VENDOR: Timeouts = Timeouts {
        quick: Duration::from_secs(5),
        long: Duration::from_secs(30),
    };

    pub fn of(self, wait: Wait) -> Duration {
        match wait {
            Wait::Quick => self.quick,
            Wait::Long => self.long,
        }
    }

    /// None longer than `max` (a session silent that long is closed anyway).
    pub fn capped(self, max: Duration) -> Timeouts {
        Timeouts {
            quick: self.quick.min(max),
            long: self.long.min(max),
        }
    }
}

/// One timeout for every request (tests, benches, fuzzing).
impl From<Duration> for Timeouts {
    fn from(every: Duration) -> Timeouts {
        Timeouts {
            quick: every,
            long: every,
        }
    }
}

/// What a conversation asks the runtime to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Write this text frame to the terminal.
    Send(String),
    /// Resolve the serial (and the token or cloud id it presented) and call the conversation's
    /// `on_identity` with the answer. Unknown serials go on the pending list.
    Identify {
        serial: String,
        model: Option<String>,
        firmware: Option<String>,
        token: Option<String>,
        cloud_id: Option<String>,
    },
    /// The terminal is now authenticated: claim the device's session slot (closing an older
    /// session of the same serial) and mark it online.
    Online,
    /// Remember a token issued to this serial (SmackBio Register).
    SaveToken(String),
    /// Store attendance records in the common shape (`enrollid`, `time` as the device's local
    /// wall time `YYYY-MM-DD HH:MM:SS`, and any other fields the device sent), de-duplicated against
    /// what is stored; then send `on_stored` if they are durable, else `on_failed` (if any).
    StoreRecords {
        records: Vec<OwnedValue>,
        on_stored: Option<String>,
        on_failed: Option<String>,
    },
    /// Store a non-attendance event (door, unknown face, admin log, user enrolled on the keypad);
    /// when the terminal expects an answer, send `on_stored` once it is durable, else `on_failed`.
    Event {
        kind: String,
        payload: String,
        on_stored: Option<String>,
        on_failed: Option<String>,
    },
    /// The terminal asks whether a door opens for these users (AiFace server-verify mode): read the
    /// device's access settings as they are now (an operator's change applies to the next punch)
    /// and, under `AccessRule::Enrolled`, which of the ids have a stored user; then call the
    /// conversation's `on_access` with them, before anything else the terminal sent.
    CheckAccess { enrollids: Vec<u64> },
    /// Store a user record the terminal pushed (AiFace `senduser`), one per credential: under
    /// (device, `enrollid`, `backupnum`), or the person alone (name, admin level) when `backupnum`
    /// is `None`. Then reply as above.
    StoreUser {
        enrollid: u64,
        backupnum: Option<u8>,
        payload: String,
        on_stored: Option<String>,
        on_failed: Option<String>,
    },
    /// The outstanding command has finished: `ok` and its result as JSON text.
    CommandDone {
        command_id: String,
        ok: bool,
        result: String,
    },
    /// Remember where backfill stopped (SmackBio log position).
    SavePosition(u64),
    /// The terminal sent a message this conversation does not know, by its name (at most
    /// `MAX_UNRECOGNISED` characters): the runtime logs and counts it. The generic answer the
    /// terminal expects, if any, is a `Send` beside it.
    Unrecognised(String),
    /// Close the session; `reason` goes into the `device_disconnected` event.
    Close(&'static str),
}

/// Why a command could not be started.
#[derive(Debug, PartialEq)]
pub enum CommandError {
    /// Another command is outstanding; try again when `is_idle()`.
    Busy,
    /// The terminal is not authenticated yet.
    NotReady,
    /// Unknown command or bad payload; the message is for the operator.
    Invalid(String),
}

/// Both dialects implement this; the runtime drives any terminal through it.
pub trait Conversation {
    /// A text frame from the terminal (the first frame included).
    fn on_frame(&mut self, frame: &mut [u8], now: Timestamp) -> Vec<Action>;
    /// The answer to `Action::Identify`.
    fn on_identity(&mut self, identity: Identity, now: Timestamp) -> Vec<Action>;
    /// The answer to `Action::CheckAccess`. Dialects that never ask have nothing to do.
    fn on_access(&mut self, _facts: AccessFacts, _now: Timestamp) -> Vec<Action> {
        Vec::new()
    }
    /// Starts a command from the durable queue: protocol-neutral names (`open_door`, `reboot`,
    /// `set_time`, `get_users`, `set_user`, `delete_user`, `fetch_logs`), native names, or `raw`
    /// (payload = the native message). At most one is outstanding.
    fn start_command(
        &mut self,
        command_id: &str,
        command: &str,
        payload: &OwnedValue,
        now: Timestamp,
    ) -> Result<Vec<Action>, CommandError>;
    /// Whether a command may be started.
    fn is_idle(&self) -> bool;
    /// Time passes: an outstanding command past its timeout finishes as failed. Its request then
    /// stays outstanding, reporting to no one, for as long again: a late reply is consumed as its
    /// own instead of being taken for the next command's, and nothing new is sent meanwhile.
    fn on_tick(&mut self, now: Timestamp) -> Vec<Action>;
    /// Called when the session is idle and no operator command waits: the conversation's own
    /// background work (a SmackBio backfill step, a clock to set) takes its turn, so an operator
    /// command never waits behind a whole history.
    fn resume(&mut self, _now: Timestamp) -> Vec<Action> {
        Vec::new()
    }
    /// Whether the terminal has authenticated (registered / logged in).
    fn is_authenticated(&self) -> bool;
}
