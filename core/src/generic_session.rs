//! The generic device protocol as a sans-IO session: text frames and answers in, actions out.
//!
//! The session decides everything the protocol says: who may send what (a first frame must
//! register or subscribe; a device sends data, an admin sends commands, a viewer only listens),
//! which payloads and msg_ids are acceptable, what a repeated msg_id gets, and in what order acks
//! go out. It never authenticates, stores or reaches another session itself: it asks the runtime
//! with an [`Action`] and hears the outcome through [`Session::registered`],
//! [`Session::subscribed`], [`Session::refused`] and [`Session::stored`]. `T` is the runtime's
//! handle on a batch commit: acks wait on it (see `ack_window`).

use simd_json::prelude::*;

use crate::ack_window::{AckWindow, Answer};
use crate::generic::{self, Inbound};
use crate::json;

/// Largest telemetry/event payload (JSON text). Bigger: error `payload_too_large`, session stays open.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Something for the runtime to do, in order.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Write this text frame.
    Send(String),
    /// Authenticate `device_id` with `token` and take its session slot; answer with
    /// `registered` or `refused`.
    Register { device_id: String, token: String },
    /// Authenticate a subscriber (a token, or the upgrade request's dashboard session when
    /// `token` is None) for `role`; answer with `subscribed` or `refused`.
    Subscribe { role: String, token: Option<String> },
    /// Store a record of the registered device (with its msg_id's JSON text, if any); answer
    /// with `stored`. Admin subscribers see it live.
    Store {
        record: Record,
        msg_id: Option<String>,
    },
    /// A record re-sent while its first copy is still committing: not stored again, but admin
    /// subscribers see every message a device sends.
    Seen(Record),
    /// The registered device answered a command (`payload`: JSON text).
    CommandResult {
        command_id: String,
        ok: bool,
        payload: Option<String>,
    },
    /// An admin asks to queue a command for a device (`payload`: JSON text).
    Command {
        device_id: String,
        command: String,
        payload: String,
        ttl_s: Option<u64>,
    },
    /// Count a message of this kind (the runtime's metrics).
    Count(Counted),
    /// Close the session with this code and reason.
    Close(u16, &'static str),
}

/// A record a device sends.
#[derive(Debug, PartialEq)]
pub enum Record {
    /// `payload` and `ts`: JSON text.
    Telemetry {
        payload: String,
        ts: Option<String>,
    },
    Event {
        event_type: String,
        payload: String,
    },
}

/// What the runtime counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Telemetry,
    Event,
    Ping,
    CommandResult,
    /// A message the role may not send.
    Other,
    /// An error frame the session sent.
    ProtocolError,
}

/// What became of a `Store`.
pub enum Stored<T> {
    /// Stored before (its ack was lost): ack now.
    Duplicate,
    /// Staged in the batch `T`: ack once it commits.
    Staged(T),
    /// Could not be staged: the device keeps the record.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Pending,
    /// Register or subscribe sent to the runtime; no answer yet.
    Deciding,
    /// A registered device, by the canonical id the runtime gave.
    Device(String),
    /// An admin subscriber; `read_only` for viewers, who may not send commands.
    Admin {
        read_only: bool,
    },
    /// Refused: the session is closing and reads nothing more.
    Refused,
}

pub struct Session<T> {
    role: Role,
    window: AckWindow<T>,
}

impl<T> Default for Session<T> {
    fn default() -> Self {
        Session {
            role: Role::Pending,
            window: AckWindow::default(),
        }
    }
}

const NOT_REGISTERED: &str = "the first frame must be a register or subscribe message";
const NOT_STORED: &str = "the record could not be stored; send it again";

/// The text of the top-level member `key` as the device sent it, if it can be kept as is: found
/// unambiguously (`raw_member::span`), UTF-8, on one line (records are stored and exported one a
/// line, NDJSON), and within `MAX_PAYLOAD` as sent (the limit is checked on the compact text, which
/// a spaced-out payload exceeds). Otherwise the payload is re-encoded.
fn as_received(frame: &[u8], key: &[u8]) -> Option<String> {
    let text = frame.get(crate::raw_member::span(frame, key)?)?;
    if text.len() > MAX_PAYLOAD || memchr::memchr2(b'\n', b'\r', text).is_some() {
        return None;
    }
    std::str::from_utf8(text).ok().map(str::to_owned)
}

fn error(out: &mut Vec<Action>, code: &str, message: &str, msg_id: Option<&str>) {
    out.push(Action::Count(Counted::ProtocolError));
    out.push(Action::Send(generic::error(code, message, msg_id)));
}

impl<T: Clone> Session<T> {
    /// The registered device's id, once registered.
    pub fn device_id(&self) -> Option<&str> {
        match &self.role {
            Role::Device(id) => Some(id),
            _ => None,
        }
    }

    /// A text frame from the peer (parsed in place).
    pub fn on_frame(&mut self, frame: &mut [u8]) -> Vec<Action> {
        let mut out = Vec::new();
        if self.role == Role::Refused {
            return out;
        }
        // A payload is part of its frame: a frame within the limit cannot carry a payload over
        // it, so only larger frames pay for measuring (re-encoding) the payload in `classify`.
        let payload_limit = if frame.len() <= MAX_PAYLOAD {
            usize::MAX
        } else {
            MAX_PAYLOAD
        };
        // A registered device's payload is kept as it was sent (validated by the parse below, not
        // re-encoded): found before the parse, which overwrites strings in place.
        let mut raw_payload = match self.role {
            Role::Device(_) => as_received(frame, b"payload"),
            _ => None,
        };
        let value = match generic::parse(frame) {
            Ok(v) => v,
            Err(e) => {
                if self.role == Role::Pending {
                    self.not_registered(&mut out);
                } else {
                    error(&mut out, e.code, &e.message, None);
                }
                return out;
            }
        };
        let msg = match generic::classify(&value, payload_limit) {
            Ok(m) => m,
            Err(e) => {
                if self.role == Role::Pending {
                    self.not_registered(&mut out);
                } else {
                    let id = value.get("msg_id").map(json::encode);
                    error(&mut out, e.code, &e.message, id.as_deref());
                }
                return out;
            }
        };
        match (&self.role, msg) {
            (Role::Pending, Inbound::Register { device_id, token }) => {
                self.role = Role::Deciding;
                out.push(Action::Register {
                    device_id: device_id.to_string(),
                    token: token.to_string(),
                });
            }
            (Role::Pending, Inbound::Subscribe { role, token }) => {
                self.role = Role::Deciding;
                out.push(Action::Subscribe {
                    role: role.to_string(),
                    token: token.map(str::to_string),
                });
            }
            (Role::Pending | Role::Deciding, _) => self.not_registered(&mut out),
            (_, Inbound::Ping) => {
                out.push(Action::Count(Counted::Ping));
                out.push(Action::Send(generic::PONG.to_string()));
            }
            (_, Inbound::Pong) => {}
            (_, Inbound::Register { .. } | Inbound::Subscribe { .. }) => error(
                &mut out,
                "already_registered",
                "this session is already registered",
                None,
            ),
            (
                Role::Device(id),
                Inbound::Telemetry {
                    device_id,
                    payload,
                    ts,
                    msg_id,
                },
            ) => {
                out.push(Action::Count(Counted::Telemetry));
                let msg_id = msg_id.map(json::encode);
                if mismatch(id, device_id) {
                    return mismatch_error(out, msg_id);
                }
                let record = Record::Telemetry {
                    payload: raw_payload.take().unwrap_or_else(|| json::encode(payload)),
                    ts: ts.map(json::encode),
                };
                self.store(&mut out, record, msg_id);
            }
            (
                Role::Device(id),
                Inbound::Event {
                    device_id,
                    event_type,
                    payload,
                    msg_id,
                },
            ) => {
                out.push(Action::Count(Counted::Event));
                let msg_id = msg_id.map(json::encode);
                if mismatch(id, device_id) {
                    return mismatch_error(out, msg_id);
                }
                let record = Record::Event {
                    event_type: event_type.to_string(),
                    payload: payload.map_or_else(
                        || "{}".to_string(),
                        |p| raw_payload.take().unwrap_or_else(|| json::encode(p)),
                    ),
                };
                self.store(&mut out, record, msg_id);
            }
            (
                Role::Device(_),
                Inbound::CommandResult {
                    command_id,
                    ok,
                    payload,
                },
            ) => {
                out.push(Action::Count(Counted::CommandResult));
                out.push(Action::CommandResult {
                    command_id: command_id.to_string(),
                    ok,
                    payload: payload.map(|p| raw_payload.take().unwrap_or_else(|| json::encode(p))),
                });
            }
            (Role::Admin { read_only: true }, Inbound::Command { .. }) => {
                error(&mut out, "forbidden", "viewers may not send commands", None)
            }
            (
                Role::Admin { read_only: false },
                Inbound::Command {
                    device_id,
                    command,
                    payload,
                    ttl_s,
                },
            ) => out.push(Action::Command {
                device_id: device_id.to_string(),
                command: command.to_string(),
                payload: payload.map_or_else(|| "{}".to_string(), json::encode),
                ttl_s,
            }),
            (_, _) => {
                out.push(Action::Count(Counted::Other));
                error(
                    &mut out,
                    "invalid_message",
                    "this message type is not accepted in this role",
                    None,
                );
            }
        }
        out
    }

    fn not_registered(&mut self, out: &mut Vec<Action>) {
        error(out, "not_registered", NOT_REGISTERED, None);
        self.role = Role::Refused;
        out.push(Action::Close(1008, "not registered"));
    }

    /// A record with a msg_id already in flight is answered by its first copy's batch; anything
    /// else goes to the runtime to store.
    fn store(&mut self, out: &mut Vec<Action>, record: Record, msg_id: Option<String>) {
        if msg_id.as_deref().is_some_and(|m| self.window.repeat(m)) {
            return out.push(Action::Seen(record));
        }
        out.push(Action::Store { record, msg_id });
    }

    /// The runtime's answer to `Register`: `device_id` is the device's canonical id. Returns the
    /// `registered` frame (with `server_time`), which must reach the device before anything else
    /// the registration brings (queued commands).
    pub fn registered(&mut self, device_id: String, server_time: &str) -> String {
        let frame = generic::registered(&device_id, server_time);
        self.role = Role::Device(device_id);
        frame
    }

    /// The runtime's answer to `Subscribe`; returns the `subscribed` frame.
    pub fn subscribed(&mut self, read_only: bool, server_time: &str) -> String {
        self.role = Role::Admin { read_only };
        generic::subscribed(server_time)
    }

    /// The runtime found that a subscribed admin's permissions changed (its user was demoted or
    /// promoted while connected). Returns the `role_changed` frame to send, if anything changed.
    pub fn admin_role(&mut self, read_only: bool) -> Option<String> {
        match &mut self.role {
            Role::Admin { read_only: was } if *was != read_only => {
                *was = read_only;
                Some(generic::role_changed(read_only))
            }
            _ => None,
        }
    }

    /// The runtime refused a `Register` or `Subscribe` (error `code`, then close 1008 or, for
    /// a device whose previous session did not let go, 1013). A refusal is an answer, not a
    /// protocol error: it is not counted as one.
    pub fn refused(
        &mut self,
        code: &str,
        message: &str,
        close: (u16, &'static str),
    ) -> Vec<Action> {
        self.role = Role::Refused;
        vec![
            Action::Send(generic::error(code, message, None)),
            Action::Close(close.0, close.1),
        ]
    }

    /// The runtime's answer to `Store`.
    pub fn stored(&mut self, msg_id: Option<String>, outcome: Stored<T>) -> Vec<Action> {
        let mut out = Vec::new();
        match (outcome, msg_id) {
            (Stored::Staged(batch), Some(m)) => self.window.staged(m, batch),
            (Stored::Duplicate, Some(m)) => out.push(Action::Send(generic::ack(&m))),
            (Stored::Failed, m) => error(&mut out, "not_stored", NOT_STORED, m.as_deref()),
            (Stored::Staged(_) | Stored::Duplicate, None) => {}
        }
        out
    }

    /// Acks (or "not stored" errors) for every msg_id at the front whose batch has resolved
    /// (`outcome`: Some(committed)), in arrival order.
    pub fn acks(&mut self, outcome: impl Fn(&T) -> Option<bool>) -> Vec<Action> {
        let mut out = Vec::new();
        self.window.drain(outcome, |a| match a {
            Answer::Ack(m) => out.push(Action::Send(generic::ack(&m))),
            Answer::NotStored(m) => error(&mut out, "not_stored", NOT_STORED, Some(&m)),
        });
        out
    }

    /// msg_ids waiting for their commit (the runtime stops reading past its in-flight limit).
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// The batch the oldest unanswered msg_id waits for.
    pub fn oldest_batch(&self) -> Option<&T> {
        self.window.front()
    }

    /// The batch the newest msg_id waits for: once it resolves, all can be answered.
    pub fn newest_batch(&self) -> Option<&T> {
        self.window.back()
    }
}

/// A message naming a device other than the registered one. Ids compare as UUIDs, as the server
/// parses them: case and the hyphenated, simple, braced and urn forms do not matter.
fn mismatch(registered: &str, claimed: Option<&str>) -> bool {
    claimed.is_some_and(|d| uuid::Uuid::parse_str(d).ok() != uuid::Uuid::parse_str(registered).ok())
}

fn mismatch_error(mut out: Vec<Action>, msg_id: Option<String>) -> Vec<Action> {
    error(
        &mut out,
        "device_mismatch",
        "device_id does not match the registered device",
        msg_id.as_deref(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    type Batch = Rc<Cell<Option<bool>>>;

    const DEV: &str = "0193b0de-4151-7c3a-9d2e-5f8a1b6c4d20";

    fn frame(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn sent(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    fn registered() -> Session<Batch> {
        let mut s = Session::default();
        let a = s.on_frame(&mut frame(&format!(
            r#"{{"type":"register","device_id":"{DEV}","token":"t"}}"#
        )));
        assert_eq!(
            a,
            vec![Action::Register {
                device_id: DEV.into(),
                token: "t".into()
            }]
        );
        let a = s.registered(DEV.into(), "2026-12-03T00:00:00.000Z");
        assert!(a.contains(r#""type":"registered""#));
        assert_eq!(s.device_id(), Some(DEV));
        s
    }

    #[test]
    fn the_first_frame_must_register_or_subscribe() {
        let mut s: Session<Batch> = Session::default();
        let a = s.on_frame(&mut frame(r#"{"type":"telemetry","payload":{}}"#));
        assert!(sent(&a)[0].contains("not_registered"));
        assert_eq!(a.last(), Some(&Action::Close(1008, "not registered")));
        assert!(
            s.on_frame(&mut frame(r#"{"type":"ping"}"#)).is_empty(),
            "nothing after"
        );
        let mut s: Session<Batch> = Session::default();
        let a = s.on_frame(&mut frame("not json"));
        assert_eq!(a.last(), Some(&Action::Close(1008, "not registered")));
    }

    #[test]
    fn frames_before_the_runtime_answers_a_register_are_refused() {
        let mut s: Session<Batch> = Session::default();
        s.on_frame(&mut frame(&format!(
            r#"{{"type":"register","device_id":"{DEV}","token":"t"}}"#
        )));
        let a = s.on_frame(&mut frame(r#"{"type":"telemetry","payload":{}}"#));
        assert_eq!(a.last(), Some(&Action::Close(1008, "not registered")));
    }

    /// What a device sent is what is stored: its numbers, spacing and key order, not the parser's
    /// re-encoding; a payload spread over lines is re-encoded onto one (records are stored and
    /// exported one a line).
    #[test]
    fn payloads_are_stored_as_the_device_sent_them() {
        let stored = |f: &str| {
            let mut s = registered();
            s.on_frame(&mut frame(f))
                .into_iter()
                .find_map(|a| match a {
                    Action::Store { record, .. } => Some(record),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("not stored: {f}"))
        };
        let sent = r#"{"z": 1.50, "a": [1e3, "x\"y"], "b": -0.0}"#;
        assert_eq!(
            stored(&format!(
                r#"{{"type":"telemetry","payload":{sent},"msg_id":"m"}}"#
            )),
            Record::Telemetry {
                payload: sent.into(),
                ts: None
            }
        );
        assert_eq!(
            stored(&format!(
                r#"{{"type":"event","event_type":"door","payload":{sent}}}"#
            )),
            Record::Event {
                event_type: "door".into(),
                payload: sent.into()
            }
        );
        let Record::Telemetry { payload, .. } =
            stored("{\"type\":\"telemetry\",\"payload\":{\n  \"t\": 1\n}}")
        else {
            panic!("telemetry")
        };
        assert_eq!(payload, r#"{"t":1}"#);
        // Spaced out past the limit as sent, within it once compact: stored compact.
        let spaced = format!(r#"{{"a":1{}}}"#, " ".repeat(MAX_PAYLOAD));
        let Record::Telemetry { payload, .. } =
            stored(&format!(r#"{{"type":"telemetry","payload":{spaced}}}"#))
        else {
            panic!("telemetry")
        };
        assert_eq!(payload, r#"{"a":1}"#);
    }

    #[test]
    fn telemetry_is_stored_and_acked_only_once_its_batch_commits() {
        let mut s = registered();
        let a = s.on_frame(&mut frame(
            r#"{"type":"telemetry","msg_id":"m1","payload":{"t":1}}"#,
        ));
        assert_eq!(
            a,
            vec![
                Action::Count(Counted::Telemetry),
                Action::Store {
                    record: Record::Telemetry {
                        payload: r#"{"t":1}"#.into(),
                        ts: None
                    },
                    msg_id: Some("\"m1\"".into()),
                }
            ]
        );
        let b: Batch = Rc::new(Cell::new(None));
        assert!(
            s.stored(Some("\"m1\"".into()), Stored::Staged(b.clone()))
                .is_empty()
        );
        assert_eq!(s.in_flight(), 1);
        assert!(s.acks(|b| b.get()).is_empty(), "no ack before the commit");
        // The device re-sends while the first copy commits: not stored again.
        let again = s.on_frame(&mut frame(
            r#"{"type":"telemetry","msg_id":"m1","payload":{"t":1}}"#,
        ));
        assert_eq!(
            again,
            vec![
                Action::Count(Counted::Telemetry),
                Action::Seen(Record::Telemetry {
                    payload: r#"{"t":1}"#.into(),
                    ts: None
                })
            ]
        );
        b.set(Some(true));
        let acks = sent(&s.acks(|b| b.get()));
        assert_eq!(acks, vec![generic::ack("\"m1\""), generic::ack("\"m1\"")]);
    }

    #[test]
    fn a_failed_batch_answers_not_stored_and_duplicates_are_acked_at_once() {
        let mut s = registered();
        let b: Batch = Rc::new(Cell::new(Some(false)));
        s.stored(Some("7".into()), Stored::Staged(b));
        let a = sent(&s.acks(|b| b.get()));
        assert!(
            a[0].contains("not_stored") && a[0].contains("\"msg_id\":7"),
            "{a:?}"
        );
        let dup = sent(&s.stored(Some("8".into()), Stored::Duplicate));
        assert_eq!(dup, vec![generic::ack("8")]);
        let failed = sent(&s.stored(None, Stored::Failed));
        assert!(failed[0].contains("not_stored"));
    }

    #[test]
    fn a_device_speaks_only_for_itself() {
        let mut s = registered();
        let other = r#"{"type":"telemetry","device_id":"0193b0de-4151-7c3a-9d2e-000000000000","msg_id":"x","payload":{}}"#;
        let a = s.on_frame(&mut frame(other));
        assert!(sent(&a)[0].contains("device_mismatch"));
        assert!(!a.iter().any(|a| matches!(a, Action::Store { .. })));
        let same_upper = DEV.to_uppercase();
        let a = s.on_frame(&mut frame(&format!(
            r#"{{"type":"event","device_id":"{same_upper}","event_type":"door","payload":{{}}}}"#
        )));
        assert!(a.iter().any(|a| matches!(a, Action::Store { .. })), "{a:?}");
    }

    #[test]
    fn roles_decide_what_may_be_sent() {
        let mut s = registered();
        let a = s.on_frame(&mut frame(
            r#"{"type":"command","device_id":"d","command":"reboot"}"#,
        ));
        assert!(sent(&a)[0].contains("invalid_message"));
        let a = s.on_frame(&mut frame(&format!(
            r#"{{"type":"register","device_id":"{DEV}","token":"t"}}"#
        )));
        assert!(sent(&a)[0].contains("already_registered"));

        let mut viewer: Session<Batch> = Session::default();
        viewer.on_frame(&mut frame(r#"{"type":"subscribe","role":"admin"}"#));
        viewer.subscribed(true, "now");
        let a = viewer.on_frame(&mut frame(
            r#"{"type":"command","device_id":"d","command":"reboot"}"#,
        ));
        assert!(sent(&a)[0].contains("forbidden"));

        let mut admin: Session<Batch> = Session::default();
        admin.on_frame(&mut frame(
            r#"{"type":"subscribe","role":"admin","token":"x"}"#,
        ));
        admin.subscribed(false, "now");
        let a = admin.on_frame(&mut frame(
            r#"{"type":"command","device_id":"d","command":"reboot","ttl_s":5}"#,
        ));
        assert_eq!(
            a,
            vec![Action::Command {
                device_id: "d".into(),
                command: "reboot".into(),
                payload: "{}".into(),
                ttl_s: Some(5)
            }]
        );
        let a = admin.on_frame(&mut frame(r#"{"type":"telemetry","payload":{}}"#));
        assert!(sent(&a)[0].contains("invalid_message"));
    }

    #[test]
    fn a_demoted_admin_is_told_once_and_may_no_longer_send_commands() {
        let mut admin: Session<Batch> = Session::default();
        admin.on_frame(&mut frame(
            r#"{"type":"subscribe","role":"admin","token":"x"}"#,
        ));
        admin.subscribed(false, "now");
        assert_eq!(admin.admin_role(false), None, "unchanged: nothing to say");
        let told = admin.admin_role(true).expect("a role_changed frame");
        assert!(told.contains("\"read_only\":true"), "{told}");
        assert_eq!(admin.admin_role(true), None);
        let a = admin.on_frame(&mut frame(
            r#"{"type":"command","device_id":"d","command":"unlock"}"#,
        ));
        assert!(sent(&a)[0].contains("forbidden"), "{a:?}");
        // A device session has no admin role to change.
        assert_eq!(registered().admin_role(true), None);
    }

    #[test]
    fn a_refused_registration_closes_with_the_runtimes_code() {
        let mut s: Session<Batch> = Session::default();
        s.on_frame(&mut frame(&format!(
            r#"{{"type":"register","device_id":"{DEV}","token":"bad"}}"#
        )));
        let a = s.refused(
            "auth_failed",
            "unknown device_id or wrong token",
            (1008, "authentication failed"),
        );
        assert!(sent(&a)[0].contains("auth_failed"));
        assert_eq!(
            a.last(),
            Some(&Action::Close(1008, "authentication failed"))
        );
        assert!(s.on_frame(&mut frame(r#"{"type":"ping"}"#)).is_empty());
    }

    #[test]
    fn uuids_compare_in_every_textual_form() {
        let plain = "0193b0de41517c3a9d2e5f8a1b6c4d20";
        assert!(!mismatch(DEV, Some(plain)));
        assert!(!mismatch(DEV, Some(&format!("{{{DEV}}}"))));
        assert!(!mismatch(DEV, Some(&format!("urn:uuid:{DEV}"))));
        assert!(mismatch(DEV, Some("not-a-uuid")));
        assert!(!mismatch(DEV, None));
    }
}
