//! Transcript tests: exact frames in, exact actions out.

use jiff::Timestamp;
use jiff::tz::{TimeZone, offset};
use simd_json::OwnedValue;
use simd_json::prelude::*;

use super::{MAX_PAGES, Session, credential_type};
use crate::fixtures::aiface::{EMPTY_LOG_PAGE, REG};
use crate::terminal::{
    AccessFacts, AccessFormat, AccessPolicy, AccessRule, Action, CommandError, Conversation,
    Identity, Known, Timeouts,
};

/// The §3.3 example, verbatim.
const SENDLOG: &str = r#"{
 "cmd": "sendlog",
 "sn": "zx12345678",
 "count": 2,
 "logindex": 10,
 "record": [
 { "enrollid": 1, "time": "2016-03-25 13:49:30", "mode": 0, "inout": 0, "event": 0, "temp": 36.5, "verifymode": 13, "image": "gesg524hgd" },
 { "enrollid": 2, "time": "2016-03-25 13:49:30", "mode": 0, "inout": 0, "event": 1, "verifymode": 13, "temp": 36.5, "image": "gesg524hgd" }
 ]
}"#;

const SENDLOG_RECORDS: &str = r#"[{"enrollid":1,"time":"2016-03-25 13:49:30","mode":0,"inout":0,"event":0,"temp":36.5,"verifymode":13,"image":"gesg524hgd"},{"enrollid":2,"time":"2016-03-25 13:49:30","mode":0,"inout":0,"event":1,"verifymode":13,"temp":36.5,"image":"gesg524hgd"}]"#;

/// 09:00 on the terminal's wall clock (UTC+2) is 07:00 UTC.
const CLOUDTIME: &str = "2026-06-12 09:00:00";
const SENDLOG_FAILED: &str = r#"{"ret":"sendlog","result":false,"reason":1}"#;
const REG_OK: &str =
    r#"send {"ret":"reg","result":true,"cloudtime":"2026-06-12 09:00:00","nosenduser":true}"#;

fn start() -> Timestamp {
    "2026-06-12T07:00:00Z".parse().unwrap()
}

fn known() -> Identity {
    Identity::Known(Known {
        device_id: "dev-1".into(),
        zone: Some(TimeZone::fixed(offset(2))),
        token: None,
        log_position: 0,
    })
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// One line per action, so a transcript compares as a list of strings.
fn render(actions: Vec<Action>) -> Vec<String> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Send(s) => format!("send {s}"),
            Action::Identify { serial, model, firmware, token, cloud_id } => {
                format!("identify {serial} model={model:?} firmware={firmware:?} token={token:?} cloud_id={cloud_id:?}")
            }
            Action::Online => "online".into(),
            Action::SaveToken(t) => format!("save_token {t}"),
            Action::CheckAccess { enrollids } => format!("check_access {enrollids:?}"),
            Action::StoreRecords { records, on_stored, on_failed } => {
                let records = OwnedValue::Array(Box::new(records)).encode();
                format!("store {records} stored={} failed={}", opt(&on_stored), opt(&on_failed))
            }
            Action::Event { kind, payload, .. } => format!("event {kind} {payload}"),
            Action::StoreUser { enrollid, backupnum, payload, on_stored, on_failed } => {
                let backupnum = backupnum.map_or("-".to_string(), |b| b.to_string());
                format!("store_user {enrollid}/{backupnum} {payload} stored={} failed={}", opt(&on_stored), opt(&on_failed))
            }
            Action::CommandDone { command_id, ok, result } => format!("done {command_id} ok={ok} {result}"),
            Action::SavePosition(p) => format!("save_position {p}"),
            Action::Unrecognised(name) => format!("unrecognised {name}"),
            Action::Close(r) => format!("close {r}"),
        })
        .collect()
}

fn parse(text: &str) -> OwnedValue {
    simd_json::to_owned_value(&mut text.as_bytes().to_vec()).unwrap()
}

/// Answers each `CheckAccess` in `actions` as the runtime does: at once, with the device's
/// `policy`, and the asked ids that are in `enrolled` as the ones with a stored user.
fn answer_access(
    s: &mut Session,
    actions: Vec<Action>,
    policy: AccessPolicy,
    enrolled: &[u64],
    now: Timestamp,
) -> Vec<Action> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::CheckAccess { enrollids } => {
                let facts = AccessFacts {
                    policy,
                    enrolled: enrollids
                        .into_iter()
                        .filter(|id| enrolled.contains(id))
                        .collect(),
                };
                out.extend(s.on_access(facts, now));
            }
            other => out.push(other),
        }
    }
    out
}

/// A session, its clock, and the device's access settings and stored users, which `frame`
/// answers access questions with.
struct T {
    s: Session,
    now: Timestamp,
    policy: AccessPolicy,
    enrolled: Vec<u64>,
}

impl T {
    fn new() -> T {
        T {
            s: Session::new(super::DEFAULT_TIMEOUT),
            now: start(),
            policy: AccessPolicy::default(),
            enrolled: Vec::new(),
        }
    }

    /// Registered, with the backfill finished (the terminal had no new logs).
    fn registered() -> T {
        T::registered_with(super::DEFAULT_TIMEOUT.into())
    }

    fn registered_with(timeouts: Timeouts) -> T {
        let mut t = T {
            s: Session::new(timeouts),
            ..T::new()
        };
        t.frame(REG);
        t.identity(known());
        assert_eq!(t.frame(EMPTY_LOG_PAGE), Vec::<String>::new());
        assert!(t.s.is_idle());
        t
    }

    /// A frame from the terminal; an access question it raises is answered as the runtime would.
    fn frame(&mut self, text: &str) -> Vec<String> {
        let mut bytes = text.as_bytes().to_vec();
        let out = self.s.on_frame(&mut bytes, self.now);
        render(answer_access(
            &mut self.s,
            out,
            self.policy,
            &self.enrolled,
            self.now,
        ))
    }

    /// A frame from the terminal, its actions as they come (access questions unanswered).
    fn frame_raw(&mut self, text: &str) -> Vec<String> {
        let mut bytes = text.as_bytes().to_vec();
        render(self.s.on_frame(&mut bytes, self.now))
    }

    fn identity(&mut self, identity: Identity) -> Vec<String> {
        render(self.s.on_identity(identity, self.now))
    }

    fn command(
        &mut self,
        id: &str,
        command: &str,
        payload: &str,
    ) -> Result<Vec<String>, CommandError> {
        self.s
            .start_command(id, command, &parse(payload), self.now)
            .map(render)
    }

    fn tick_ms(&mut self, ms: i64) -> Vec<String> {
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::from_millis(ms))
            .unwrap();
        render(self.s.on_tick(self.now))
    }
}

fn invalid(r: Result<Vec<String>, CommandError>) -> String {
    match r {
        Err(CommandError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn registration_known_goes_online_sets_the_clock_and_starts_the_backfill() {
    let mut t = T::new();
    assert_eq!(
        t.frame(REG),
        [
            r#"identify ZX0006827500 model=Some("tfs30") firmware=Some("th600w v6.1") token=None cloud_id=None"#
        ]
    );
    assert!(!t.s.is_authenticated());
    // The vendor document's `reg` shows a clock ten years behind (`devinfo.time` 2016): reported
    // as a drift, and the `cloudtime` of the answer sets it right.
    assert_eq!(
        t.identity(known()),
        [
            "online",
            r#"event clock_drift {"device_time":"2016-03-25 13:49:30","expected":"2026-06-12 09:00:00","drift_seconds":-322341030,"zone":"fixed"}"#,
            REG_OK,
            r#"send {"cmd":"getnewlog","stn":true}"#
        ]
    );
    assert!(t.s.is_authenticated());
    assert!(!t.s.is_idle(), "the backfill is outstanding");
    // A second answer to the same question changes nothing.
    assert_eq!(t.identity(known()), Vec::<String>::new());
}

#[test]
fn registration_unknown_and_refused_stay_unauthenticated_until_a_retry_succeeds() {
    let mut t = T::new();
    t.frame(REG);
    assert_eq!(
        t.identity(Identity::Unknown),
        [r#"send {"ret":"reg","result":false,"reason":"not approved yet"}"#]
    );
    assert!(!t.s.is_authenticated());
    assert_eq!(
        t.command("c1", "open_door", "null"),
        Err(CommandError::NotReady)
    );
    assert_eq!(t.frame(SENDLOG), [format!("send {SENDLOG_FAILED}")]);
    // The terminal retries on the same socket.
    assert_eq!(t.frame(REG).len(), 1);
    assert_eq!(
        t.identity(Identity::Refused),
        [r#"send {"ret":"reg","result":false,"reason":"registration refused"}"#]
    );
    assert!(!t.s.is_authenticated());
    assert_eq!(
        t.frame(r#"{"cmd":"reg","sn":"ZX0006827500"}"#),
        ["identify ZX0006827500 model=None firmware=None token=None cloud_id=None"]
    );
    assert_eq!(t.identity(known())[..2], ["online", REG_OK]);
    assert!(t.s.is_authenticated());
}

#[test]
fn nothing_is_stored_or_answered_true_before_authentication() {
    let mut t = T::new();
    assert_eq!(
        t.frame(r#"{"cmd":"reg","devinfo":{}}"#),
        [r#"send {"ret":"reg","result":false,"reason":"sn is required"}"#]
    );
    assert_eq!(t.frame(SENDLOG), [format!("send {SENDLOG_FAILED}")]);
    assert_eq!(
        t.frame(r#"{"cmd":"senduser","enrollid":1,"backupnum":0,"record":"x"}"#),
        [r#"send {"ret":"senduser","result":false,"reason":1}"#]
    );
    assert_eq!(
        t.frame(r#"{"cmd":"heartbeat","sn":"ZX0006827500"}"#),
        Vec::<String>::new()
    );
    assert_eq!(
        t.frame(r#"{"ret":"getuserlist","result":true,"count":0,"record":[]}"#),
        Vec::<String>::new()
    );
    assert_eq!(
        t.frame(r#"{"cmd":"getnewlog","count":1,"record":[{"enrollid":1,"time":"t"}]}"#),
        Vec::<String>::new()
    );
    // While the identity is being looked up: a repeated reg waits for the first one's answer.
    assert_eq!(t.frame(REG).len(), 1);
    assert_eq!(t.frame(REG), Vec::<String>::new());
    assert_eq!(t.frame(SENDLOG), [format!("send {SENDLOG_FAILED}")]);
    assert!(!t.s.is_idle());
}

#[test]
fn sendlog_is_acknowledged_only_through_the_store_action() {
    let mut t = T::registered();
    let ack = format!(
        r#"{{"ret":"sendlog","result":true,"count":2,"logindex":10,"cloudtime":"{CLOUDTIME}","access":1}}"#
    );
    let expected = [format!(
        "store {SENDLOG_RECORDS} stored={ack} failed={SENDLOG_FAILED}"
    )];
    assert_eq!(t.frame(SENDLOG), expected);
    // Re-sent (say the commit failed and the terminal heard false): the same request to the
    // store again; de-duplication is the store's.
    assert_eq!(t.frame(SENDLOG), expected);
}

#[test]
fn sendlog_with_trailing_commas_records_and_userid() {
    let mut t = T::registered();
    let frame = r#"{"cmd":"sendlog","sn":"ZX0006827500","count":2,"logindex":"7","records":[{"userid":5,"time":"2026-06-12 08:59:00","mode":8,},{"userid":"6","enrollid":6,"time":"2026-06-12 08:59:30",},],}"#;
    assert_eq!(
        t.frame(frame),
        [format!(
            r#"store [{{"mode":8,"time":"2026-06-12 08:59:00","enrollid":5}},{{"userid":"6","enrollid":6,"time":"2026-06-12 08:59:30"}}] stored={{"ret":"sendlog","result":true,"count":2,"logindex":"7","cloudtime":"{CLOUDTIME}","access":1}} failed={SENDLOG_FAILED}"#
        )]
    );
    // Without `logindex` nothing is echoed; without records there is nothing to store.
    assert_eq!(
        t.frame(r#"{"cmd":"sendlog","record":[]}"#),
        [format!(
            r#"store [] stored={{"ret":"sendlog","result":true,"count":0,"cloudtime":"{CLOUDTIME}","access":1}} failed={SENDLOG_FAILED}"#
        )]
    );
    // One punch sent as an object instead of an array (firmware that sends one at a time): one
    // record, not a refusal the terminal would resend forever.
    assert_eq!(
        t.frame(r#"{"cmd":"sendlog","record":{"enrollid":1,"time":"2026-06-12 09:00:00"}}"#),
        [format!(
            r#"store [{{"enrollid":1,"time":"2026-06-12 09:00:00"}}] stored={{"ret":"sendlog","result":true,"count":1,"cloudtime":"{CLOUDTIME}","access":1}} failed={SENDLOG_FAILED}"#
        )]
    );
    // Neither an array nor a record: refused.
    assert_eq!(
        t.frame(r#"{"cmd":"sendlog","record":"x"}"#),
        [format!("send {SENDLOG_FAILED}")]
    );
}

#[test]
fn sendlog_asks_for_the_access_settings_before_it_stores() {
    let mut t = T::registered();
    // The persons' ids, each once; door events and unknown faces ask nothing.
    let frame = r#"{"cmd":"sendlog","logindex":3,"record":[{"enrollid":7,"time":"2026-06-12 08:59:00"},{"enrollid":"5","time":"2026-06-12 08:59:01"},{"enrollid":7,"time":"2026-06-12 08:59:02"},{"enrollid":0,"time":"2026-06-12 08:59:03"},{"enrollid":99999999,"time":"2026-06-12 08:59:04"}]}"#;
    assert_eq!(t.frame_raw(frame), ["check_access [5, 7]"]);
    let facts = AccessFacts {
        policy: AccessPolicy::default(),
        enrolled: Vec::new(),
    };
    let out = render(t.s.on_access(facts.clone(), t.now));
    assert_eq!(out.len(), 1);
    assert!(
        out[0].starts_with("store [")
            && out[0].contains(r#"stored={"ret":"sendlog","result":true,"count":5,"logindex":3,"#)
            && out[0].contains(r#""access":0,"message":"unknown face"} failed="#),
        "{out:?}"
    );
    // An answer nobody asked for (or a second one) does nothing.
    assert_eq!(
        render(t.s.on_access(facts.clone(), t.now)),
        Vec::<String>::new()
    );
    // Nor before registration, where sendlog is refused without asking.
    let mut fresh = T::new();
    assert_eq!(fresh.frame_raw(SENDLOG), [format!("send {SENDLOG_FAILED}")]);
    assert_eq!(
        render(fresh.s.on_access(facts, fresh.now)),
        Vec::<String>::new()
    );
    assert_eq!(
        fresh.frame_raw(r#"{"cmd":"sendqrcode","record":"1"}"#),
        [r#"send {"ret":"sendqrcode","result":false,"reason":1}"#]
    );
}

#[test]
fn the_access_answer_follows_the_devices_rule_and_format() {
    let punch = |id: u64| {
        format!(
            r#"{{"cmd":"sendlog","count":1,"logindex":4,"record":[{{"enrollid":{id},"time":"2026-06-12 08:59:00","mode":8}}]}}"#
        )
    };
    let ack = |access: &str| {
        format!(
            r#"stored={{"ret":"sendlog","result":true,"count":1,"logindex":4,"cloudtime":"{CLOUDTIME}",{access}}} failed={SENDLOG_FAILED}"#
        )
    };
    let answer = |t: &mut T, frame: &str| {
        let out = t.frame(frame);
        assert_eq!(out.len(), 1, "{out:?}");
        out[0].split_once("] ").map(|(_, a)| a.to_string()).unwrap()
    };
    let mut t = T::registered();
    t.enrolled = vec![7];
    let door = r#"{"cmd":"sendlog","count":1,"logindex":4,"record":[{"enrollid":0,"time":"2026-06-12 08:59:00","event":"UI_MGLOG_OPENED"}]}"#;
    let face = r#"{"cmd":"sendlog","count":1,"logindex":4,"record":[{"enrollid":99999999,"time":"2026-06-12 08:59:00","event":2}]}"#;
    let no_id =
        r#"{"cmd":"sendlog","count":1,"logindex":4,"record":[{"time":"2026-06-12 08:59:00"}]}"#;
    for (rule, format, frame, access) in [
        // allow (the default): everyone the terminal recognised.
        (
            AccessRule::Allow,
            AccessFormat::Int,
            punch(7),
            r#""access":1"#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Int,
            punch(8),
            r#""access":1"#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Int,
            door.to_string(),
            r#""access":1"#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Int,
            no_id.to_string(),
            r#""access":1"#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Int,
            face.to_string(),
            r#""access":0,"message":"unknown face""#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Bool,
            punch(8),
            r#""access":true"#,
        ),
        (
            AccessRule::Allow,
            AccessFormat::Bool,
            face.to_string(),
            r#""access":false,"message":"unknown face""#,
        ),
        // deny: no one, door events included.
        (
            AccessRule::Deny,
            AccessFormat::Int,
            punch(7),
            r#""access":0,"message":"access denied""#,
        ),
        (
            AccessRule::Deny,
            AccessFormat::Bool,
            door.to_string(),
            r#""access":false,"message":"access denied""#,
        ),
        // enrolled: only users this device has sent the server.
        (
            AccessRule::Enrolled,
            AccessFormat::Int,
            punch(7),
            r#""access":1"#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Int,
            punch(8),
            r#""access":0,"message":"not enrolled""#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Bool,
            punch(7),
            r#""access":true"#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Bool,
            punch(8),
            r#""access":false,"message":"not enrolled""#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Int,
            door.to_string(),
            r#""access":1"#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Int,
            no_id.to_string(),
            r#""access":0,"message":"not enrolled""#,
        ),
        (
            AccessRule::Enrolled,
            AccessFormat::Int,
            face.to_string(),
            r#""access":0,"message":"unknown face""#,
        ),
    ] {
        t.policy = AccessPolicy { rule, format };
        assert_eq!(
            answer(&mut t, &frame),
            ack(access),
            "{rule:?} {format:?} {frame}"
        );
    }
    // Several records: every one must pass.
    t.policy = AccessPolicy {
        rule: AccessRule::Enrolled,
        format: AccessFormat::Bool,
    };
    let two = r#"{"cmd":"sendlog","record":[{"enrollid":7,"time":"2026-06-12 08:59:00"},{"enrollid":8,"time":"2026-06-12 08:59:01"}]}"#;
    assert!(answer(&mut t, two).ends_with(&format!(
        r#""access":false,"message":"not enrolled"}} failed={SENDLOG_FAILED}"#
    )));
    t.enrolled.push(8);
    assert!(answer(&mut t, two).ends_with(&format!(r#""access":true}} failed={SENDLOG_FAILED}"#)));
    // A QR code is refused whatever the rule (the gateway keeps no codes), in the device's format.
    for (rule, format, access) in [
        (AccessRule::Allow, AccessFormat::Bool, "false"),
        (AccessRule::Enrolled, AccessFormat::Int, "0"),
    ] {
        t.policy = AccessPolicy { rule, format };
        assert_eq!(
            t.frame(r#"{"cmd":"sendqrcode","record":"7"}"#),
            [format!(
                r#"send {{"ret":"sendqrcode","result":false,"reason":1,"access":{access},"message":"unknown code"}}"#
            )]
        );
    }
}

#[test]
fn access_settings_are_read_strictly() {
    let settings = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        AccessPolicy::parse(&settings(&[])),
        Ok(AccessPolicy::default())
    );
    assert_eq!(
        AccessPolicy::parse(&settings(&[
            ("server_verify_access", "enrolled"),
            ("access_format", "bool")
        ])),
        Ok(AccessPolicy {
            rule: AccessRule::Enrolled,
            format: AccessFormat::Bool
        })
    );
    assert_eq!(
        AccessPolicy::parse(&settings(&[("server_verify_access", "Deny")])),
        Err("settings.server_verify_access must be allow, deny or enrolled".into())
    );
    assert_eq!(
        AccessPolicy::parse(&settings(&[("access_format", "boolean")])),
        Err("settings.access_format must be int or bool".into())
    );
    assert_eq!(AccessPolicy::DENY.rule, AccessRule::Deny);
}

#[test]
fn unknown_faces_and_door_events_pass_through_to_the_store() {
    let mut t = T::registered();
    let door = r#"{"cmd":"sendlog","count":1,"logindex":11,"record":[{"enrollid":0,"time":"2026-06-12 08:59:00","mode":0,"inout":1,"event":"UI_MGLOG_OPENED"}]}"#;
    assert_eq!(
        t.frame(door),
        [format!(
            r#"store [{{"enrollid":0,"time":"2026-06-12 08:59:00","mode":0,"inout":1,"event":"UI_MGLOG_OPENED"}}] stored={{"ret":"sendlog","result":true,"count":1,"logindex":11,"cloudtime":"{CLOUDTIME}","access":1}} failed={SENDLOG_FAILED}"#
        )]
    );
    // An unknown face is stored as sent (the store makes it an `unknown_face` event), and a
    // terminal in server-verify mode is not told to open the door for it.
    let face = r#"{"cmd":"sendlog","count":1,"logindex":12,"record":[{"enrollid":99999999,"time":"2026-06-12 08:59:10","mode":8,"inout":0,"event":2,"image":"/9j/4AAQSkZJRg=="}]}"#;
    assert_eq!(
        t.frame(face),
        [format!(
            r#"store [{{"enrollid":99999999,"time":"2026-06-12 08:59:10","mode":8,"inout":0,"event":2,"image":"/9j/4AAQSkZJRg=="}}] stored={{"ret":"sendlog","result":true,"count":1,"logindex":12,"cloudtime":"{CLOUDTIME}","access":0,"message":"unknown face"}} failed={SENDLOG_FAILED}"#
        )]
    );
}

#[test]
fn senduser_is_stored_then_acknowledged() {
    let mut t = T::registered();
    let ack = format!(r#"{{"ret":"senduser","result":true,"cloudtime":"{CLOUDTIME}"}}"#);
    let failed = r#"{"ret":"senduser","result":false,"reason":1}"#;
    // §3.3's three examples: one person's fingerprint, card and password, each its own
    // credential (keyed by `backupnum`), none overwriting another.
    assert_eq!(
        t.frame(r#"{ "cmd": "senduser", "enrollid": 1, "name": "chingzou", "backupnum": 0, "admin": 0, "record": "kajgksjgaglas" }"#),
        [format!(r#"store_user 1/0 {{"name":"chingzou","backupnum":0,"admin":0,"record":"kajgksjgaglas"}} stored={ack} failed={failed}"#)]
    );
    assert_eq!(
        t.frame(r#"{ "cmd": "senduser", "enrollid": 1, "name": "chingzou", "backupnum": 11, "admin": 0, "record": 2352253 }"#),
        [format!(r#"store_user 1/11 {{"name":"chingzou","backupnum":11,"admin":0,"record":2352253}} stored={ack} failed={failed}"#)]
    );
    assert_eq!(
        t.frame(r#"{ "cmd": "senduser", "enrollid": 1, "name": "chingzou", "backupnum": 10, "admin": 0, "record": 12345678 }"#),
        [format!(r#"store_user 1/10 {{"name":"chingzou","backupnum":10,"admin":0,"record":12345678}} stored={ack} failed={failed}"#)]
    );
    assert_eq!(
        t.frame(r#"{"cmd":"senduser","userid":"12","name":"chingzou","backupnum":"50","admin":0,"record":"/9j/",}"#),
        [format!(r#"store_user 12/50 {{"name":"chingzou","backupnum":"50","admin":0,"record":"/9j/"}} stored={ack} failed={failed}"#)]
    );
    // Without a backupnum (or with null) there is no telling what `record` is: the person alone.
    assert_eq!(
        t.frame(r#"{"cmd":"senduser","enrollid":3,"name":"ann","admin":1}"#),
        [format!(
            r#"store_user 3/- {{"name":"ann","admin":1}} stored={ack} failed={failed}"#
        )]
    );
    assert_eq!(
        t.frame(r#"{"cmd":"senduser","enrollid":3,"name":"ann","backupnum":null}"#),
        [format!(
            r#"store_user 3/- {{"name":"ann","backupnum":null}} stored={ack} failed={failed}"#
        )]
    );
    for refused in [
        r#"{"cmd":"senduser","name":"x","backupnum":0}"#,
        r#"{"cmd":"senduser","enrollid":0,"backupnum":0}"#,
        r#"{"cmd":"senduser","enrollid":1,"backupnum":100,"record":"x"}"#,
        r#"{"cmd":"senduser","enrollid":1,"backupnum":-1,"record":"x"}"#,
        r#"{"cmd":"senduser","enrollid":1,"backupnum":"finger","record":"x"}"#,
        r#"{"cmd":"senduser","enrollid":1,"backupnum":1.5,"record":"x"}"#,
    ] {
        assert_eq!(t.frame(refused), [format!("send {failed}")], "{refused}");
    }
}

#[test]
fn credential_types_follow_the_vendor_codes() {
    let types: Vec<_> = [0, 9, 10, 11, 12, 13, 20, 27, 30, 37, 40, 50, 51, 99]
        .into_iter()
        .map(credential_type)
        .collect();
    assert_eq!(
        types,
        [
            "fingerprint",
            "fingerprint",
            "password",
            "card",
            "other",
            "other",
            "face",
            "face",
            "palm",
            "palm",
            "other",
            "photo",
            "other",
            "other"
        ]
    );
}

#[test]
fn other_terminal_messages() {
    let mut t = T::registered();
    assert_eq!(
        t.frame(r#"{ "cmd": "sendqrcode", "sn": "AI07F123456", "record": "123456" }"#),
        [
            r#"send {"ret":"sendqrcode","result":false,"reason":1,"access":0,"message":"unknown code"}"#
        ]
    );
    assert_eq!(
        t.frame(r#"{"cmd":"heartbeat","sn":"ZX0006827500"}"#),
        [format!(
            r#"send {{"ret":"heartbeat","result":true,"cloudtime":"{CLOUDTIME}"}}"#
        )]
    );
    // A message of the terminal's own that the server does not know gets a generic success
    // (without a reply some firmware drops the connection or resends forever) and is reported.
    assert_eq!(
        t.frame(r#"{"cmd":"sendgps","lat":1}"#),
        [
            "unrecognised sendgps",
            r#"send {"ret":"sendgps","result":true}"#
        ]
    );
    assert_eq!(
        t.frame(&format!(r#"{{"cmd":"{}"}}"#, "x".repeat(65))),
        ["unrecognised (not a name)"],
        "a name too long to be one is not echoed"
    );
    for ignored in [
        // A late reply that echoes one of the server's own commands expects nothing.
        r#"{"cmd":"getuserlist","result":true,"count":0}"#,
        r#"{"ret":"opendoor","result":true}"#,
        "{}",
        "[]",
        "null",
        "",
    ] {
        assert_eq!(t.frame(ignored), Vec::<String>::new(), "{ignored}");
    }
    // The same serial registering again hears a fresh cloudtime; another serial is not this device.
    assert_eq!(t.frame(REG), [REG_OK]);
    assert_eq!(
        t.frame(r#"{"cmd":"reg","sn":"OTHER"}"#),
        [
            r#"send {"ret":"reg","result":false,"reason":"one serial per connection"}"#,
            "close reg with another serial"
        ]
    );
}

#[test]
fn backfill_pages_getnewlog_until_to_reaches_count_then_one_empty_page() {
    let mut t = T::new();
    t.frame(REG);
    assert_eq!(
        t.identity(known()).last().map(String::as_str),
        Some(r#"send {"cmd":"getnewlog","stn":true}"#)
    );
    assert_eq!(
        t.command("c1", "open_door", "null"),
        Err(CommandError::Busy)
    );
    let next = r#"{"cmd":"getnewlog","stn":false}"#;
    let rec = |i: u32| {
        format!(
            r#"{{"enrollid":{i},"time":"2026-06-12 0{}:00:00","mode":8,"inout":0,"event":0}}"#,
            i % 10
        )
    };
    // Indexes from 0, as in §3.4's example: the last page ends at to = count - 1.
    for (from, to) in [(0, 49), (50, 99), (100, 119)] {
        let page = format!(
            r#"{{"ret":"getnewlog","result":true,"count":120,"from":{from},"to":{to},"record":[{},{}]}}"#,
            rec(from),
            rec(to)
        );
        assert_eq!(
            t.frame(&page),
            [format!(
                "store [{},{}] stored={next} failed=-",
                rec(from),
                rec(to)
            )]
        );
        assert!(!t.s.is_idle());
    }
    // `to >= count` was not reached: one more request, answered with the empty page.
    assert_eq!(t.frame(EMPTY_LOG_PAGE), Vec::<String>::new());
    assert!(t.s.is_idle());
}

#[test]
fn backfill_ends_on_to_equal_count_without_a_command_done() {
    let mut t = T::new();
    t.frame(REG);
    t.identity(known());
    // Indexes from 1: the last page ends at to = count.
    let page1 = r#"{"ret":"getnewlog","result":true,"count":3,"from":1,"to":2,"record":[{"userid":1,"time":"2026-06-12 08:00:00"},{"enrollid":2,"time":"2026-06-12 08:01:00"},]}"#;
    assert_eq!(
        t.frame(page1),
        [
            r#"store [{"time":"2026-06-12 08:00:00","enrollid":1},{"enrollid":2,"time":"2026-06-12 08:01:00"}] stored={"cmd":"getnewlog","stn":false} failed=-"#
        ]
    );
    let page2 = r#"{"ret":"getnewlog","result":true,"count":3,"from":3,"to":3,"record":[{"enrollid":3,"time":"2026-06-12 08:02:00"}]}"#;
    assert_eq!(
        t.frame(page2),
        [r#"store [{"enrollid":3,"time":"2026-06-12 08:02:00"}] stored=- failed=-"#]
    );
    assert!(t.s.is_idle());
}

#[test]
fn backfill_gives_up_on_timeout_or_failure_and_ignores_late_pages() {
    let mut t = T::new();
    t.frame(REG);
    t.identity(known());
    assert_eq!(t.tick_ms(4_999), Vec::<String>::new());
    assert!(!t.s.is_idle());
    assert_eq!(
        t.tick_ms(1),
        Vec::<String>::new(),
        "the backfill reports to no one"
    );
    assert!(t.s.is_idle());
    assert_eq!(t.frame(r#"{"ret":"getnewlog","result":true,"count":1,"from":0,"to":0,"record":[{"enrollid":1,"time":"t"}]}"#), Vec::<String>::new());

    let mut t = T::new();
    t.frame(REG);
    t.identity(known());
    assert_eq!(
        t.frame(r#"{"ret":"getnewlog","result":false,"reason":1}"#),
        Vec::<String>::new()
    );
    assert!(t.s.is_idle());
}

#[test]
fn open_door_round_trip() {
    let mut t = T::registered();
    assert_eq!(
        t.command("c1", "open_door", "null").unwrap(),
        [r#"send {"cmd":"opendoor","doornum":1}"#]
    );
    assert!(!t.s.is_idle());
    // A sendlog in between is handled on its own.
    assert_eq!(t.frame(SENDLOG).len(), 1);
    assert_eq!(
        t.frame(r#"{"ret":"opendoor","result":true}"#),
        [r#"done c1 ok=true {"ret":"opendoor","result":true}"#]
    );
    assert!(t.s.is_idle());
    assert_eq!(
        t.command("c2", "open_door", r#"{"door":2}"#).unwrap(),
        [r#"send {"cmd":"opendoor","doornum":2}"#]
    );
    assert_eq!(
        t.frame(r#"{"ret":"opendoor","result":false,"reason":1}"#),
        [r#"done c2 ok=false {"ret":"opendoor","result":false,"reason":1}"#]
    );
    // Native form: sent as given (attendance machines take no door number).
    assert_eq!(
        t.command("c3", "opendoor", "{}").unwrap(),
        [r#"send {"cmd":"opendoor"}"#]
    );
    // Firmware that echoes `cmd` instead of `ret`.
    assert_eq!(
        t.frame(r#"{"cmd":"opendoor","result":true}"#),
        [r#"done c3 ok=true {"cmd":"opendoor","result":true}"#]
    );
    assert!(invalid(t.command("c4", "open_door", r#"{"door":5}"#)).contains("door"));
}

#[test]
fn reboot_finishes_without_a_reply() {
    let mut t = T::registered();
    assert_eq!(
        t.command("c1", "reboot", "null").unwrap(),
        [
            r#"send {"cmd":"reboot"}"#,
            r#"done c1 ok=true {"sent":true}"#
        ]
    );
    assert!(t.s.is_idle());
    assert_eq!(
        t.command("c2", "raw", r#"{"cmd":"reboot"}"#).unwrap(),
        [
            r#"send {"cmd":"reboot"}"#,
            r#"done c2 ok=true {"sent":true}"#
        ]
    );
    assert!(t.s.is_idle());
}

#[test]
fn a_command_times_out_and_its_late_reply_is_consumed_without_a_word() {
    let mut t = T::registered();
    assert_eq!(
        t.command("c1", "getdevinfo", "null").unwrap(),
        [r#"send {"cmd":"getdevinfo"}"#]
    );
    assert_eq!(t.tick_ms(4_999), Vec::<String>::new());
    assert_eq!(t.tick_ms(1), [r#"done c1 ok=false {"error":"timeout"}"#]);
    // The request stays outstanding for its late reply: nothing new goes out meanwhile.
    assert!(!t.s.is_idle());
    assert_eq!(
        t.command("c2", "getdevinfo", "null"),
        Err(CommandError::Busy)
    );
    assert_eq!(
        t.frame(r#"{"ret":"getdevinfo","result":true,"volume":6}"#),
        Vec::<String>::new()
    );
    assert!(t.s.is_idle());
    assert_eq!(t.tick_ms(60_000), Vec::<String>::new());
    // A reply that never comes is waited for as long as the command was, then forgotten.
    t.command("c3", "getdevinfo", "null").unwrap();
    assert_eq!(
        t.tick_ms(5_000),
        [r#"done c3 ok=false {"error":"timeout"}"#]
    );
    assert_eq!(t.tick_ms(4_999), Vec::<String>::new());
    assert!(!t.s.is_idle());
    assert_eq!(t.tick_ms(1), Vec::<String>::new());
    assert!(t.s.is_idle());
    assert_eq!(
        t.frame(r#"{"ret":"getdevinfo","result":true}"#),
        Vec::<String>::new()
    );
}

#[test]
fn each_command_waits_as_long_as_what_it_asks_takes() {
    let mut t = T::registered_with(Timeouts::VENDOR);
    // A door is answered from memory: the vendor C# sample's 5 s.
    t.command("door", "open_door", "null").unwrap();
    assert_eq!(t.tick_ms(4_999), Vec::<String>::new());
    assert_eq!(t.tick_ms(1), [r#"done door ok=false {"error":"timeout"}"#]);
    assert_eq!(
        t.frame(r#"{"ret":"opendoor","result":true}"#),
        Vec::<String>::new()
    );
    // Photo enrolment: the terminal computes a face template before it answers, well past 5 s;
    // the vendor PHP sample waits 30 s.
    assert_eq!(
        t.command(
            "photo",
            "set_user",
            r#"{"enrollid":7,"backupnum":50,"record":"/9j/4AAQ"}"#
        )
        .unwrap(),
        [r#"send {"cmd":"setuserinfo","enrollid":7,"backupnum":50,"admin":0,"record":"/9j/4AAQ"}"#]
    );
    assert_eq!(t.tick_ms(20_000), Vec::<String>::new());
    assert_eq!(
        t.frame(r#"{"ret":"setuserinfo","result":true}"#),
        [r#"done photo ok=true {"ret":"setuserinfo","result":true}"#]
    );
    // A walk waits that long for each page.
    t.command("list", "get_users", "null").unwrap();
    assert_eq!(t.tick_ms(29_000), Vec::<String>::new());
    assert_eq!(
        t.frame(r#"{"ret":"getuserlist","result":true,"count":1,"from":0,"to":0,"record":[{"enrollid":7,"admin":0,"backupnum":50}]}"#),
        [r#"send {"cmd":"getuserlist","stn":false}"#]
    );
    assert_eq!(t.tick_ms(29_999), Vec::<String>::new());
    assert_eq!(t.tick_ms(1), [r#"done list ok=false {"error":"timeout"}"#]);
    // Native and raw forms wait by the request they send; what is not known to be quick waits long.
    assert_eq!(t.tick_ms(30_000), Vec::<String>::new());
    for (command, payload, wait_ms) in [
        ("gettime", "null", 5_000),
        ("raw", r#"{"cmd":"opendoor"}"#, 5_000),
        ("getuserinfo", r#"{"enrollid":7,"backupnum":50}"#, 30_000),
        ("raw", r#"{"cmd":"getfacetemplate"}"#, 30_000),
    ] {
        assert!(t.s.is_idle(), "{command} {payload}");
        t.command("c", command, payload).unwrap();
        assert_eq!(
            t.tick_ms(wait_ms - 1),
            Vec::<String>::new(),
            "{command} {payload}"
        );
        assert_eq!(t.tick_ms(1), [r#"done c ok=false {"error":"timeout"}"#]);
        t.tick_ms(wait_ms);
    }
}

#[test]
fn a_late_reply_is_not_taken_for_the_next_command_of_the_same_name() {
    let mut t = T::registered_with(Timeouts::VENDOR);
    let photo = |id: u32| format!(r#"{{"enrollid":{id},"backupnum":50,"record":"/9j/{id}"}}"#);
    t.command("u1", "set_user", &photo(1)).unwrap();
    assert_eq!(
        t.tick_ms(30_000),
        [r#"done u1 ok=false {"error":"timeout"}"#]
    );
    // The next user's photo waits for the first one's reply...
    assert_eq!(
        t.command("u2", "set_user", &photo(2)),
        Err(CommandError::Busy)
    );
    t.tick_ms(10_000);
    // ...which is consumed as the first one's: it says nothing about the second.
    assert_eq!(
        t.frame(r#"{"ret":"setuserinfo","result":false,"reason":10}"#),
        Vec::<String>::new()
    );
    assert!(t.s.is_idle());
    assert_eq!(t.command("u2", "set_user", &photo(2)).unwrap().len(), 1);
    assert_eq!(
        t.frame(r#"{"ret":"setuserinfo","result":true}"#),
        [r#"done u2 ok=true {"ret":"setuserinfo","result":true}"#]
    );
}

#[test]
fn the_timeout_is_a_constructor_parameter() {
    let mut t = T {
        s: Session::new(std::time::Duration::from_millis(200)),
        ..T::new()
    };
    t.frame(REG);
    t.identity(known());
    t.frame(EMPTY_LOG_PAGE);
    t.command("c1", "gettime", "null").unwrap();
    assert_eq!(t.tick_ms(200), [r#"done c1 ok=false {"error":"timeout"}"#]);
}

#[test]
fn sendlog_in_the_middle_of_a_paged_getuserlist() {
    let mut t = T::registered();
    assert_eq!(
        t.command("u1", "get_users", "null").unwrap(),
        [r#"send {"cmd":"getuserlist","stn":true}"#]
    );
    let next = r#"send {"cmd":"getuserlist","stn":false}"#;
    assert_eq!(
        t.frame(r#"{"ret":"getuserlist","result":true,"count":2,"from":0,"to":1,"record":[{"enrollid":1,"admin":0,"backupnum":0},{"enrollid":2,"admin":1,"backupnum":11}]}"#),
        [next]
    );
    assert_eq!(
        t.frame(SENDLOG)[0],
        format!(
            r#"store {SENDLOG_RECORDS} stored={{"ret":"sendlog","result":true,"count":2,"logindex":10,"cloudtime":"{CLOUDTIME}","access":1}} failed={SENDLOG_FAILED}"#
        )
    );
    assert!(!t.s.is_idle());
    // Each wait for a page has its own timeout.
    assert_eq!(t.tick_ms(4_000), Vec::<String>::new());
    assert_eq!(t.frame(r#"{"ret":"getuserlist","result":true,"count":1,"from":2,"to":2,"record":[{"enrollid":3,"admin":0,"backupnum":50},]}"#), [next]);
    assert_eq!(t.tick_ms(4_000), Vec::<String>::new());
    assert_eq!(
        t.frame(r#"{"ret":"getuserlist","result":true,"count":0,"from":0,"to":0,"record":[]}"#),
        [
            r#"done u1 ok=true {"count":3,"pages":2,"users":[{"enrollid":1,"admin":0,"backupnum":0},{"enrollid":2,"admin":1,"backupnum":11},{"enrollid":3,"admin":0,"backupnum":50}]}"#
        ]
    );
    assert!(t.s.is_idle());
}

#[test]
fn paged_replies_that_echo_cmd_or_start_over() {
    let mut t = T::registered();
    t.command("u1", "getuserlist", "null").unwrap();
    let next = r#"send {"cmd":"getuserlist","stn":false}"#;
    let page = |from: u32| {
        format!(
            r#"{{"cmd":"getuserlist","count":1,"from":{from},"to":{from},"record":[{{"enrollid":{from},"admin":0,"backupnum":0}}]}}"#
        )
    };
    assert_eq!(t.frame(&page(0)), [next]);
    assert_eq!(t.frame(&page(1)), [next]);
    // The terminal serves the first page again instead of an empty one: the list is complete.
    assert_eq!(
        t.frame(&page(0)),
        [
            r#"done u1 ok=true {"count":2,"pages":2,"users":[{"enrollid":0,"admin":0,"backupnum":0},{"enrollid":1,"admin":0,"backupnum":0}]}"#
        ]
    );
}

#[test]
fn log_pages_counted_per_page_are_not_mistaken_for_the_end() {
    let mut t = T::registered();
    t.command("f1", "getalllog", "null").unwrap();
    let rec = r#"{"enrollid":1,"time":"2026-06-12 08:00:00"}"#;
    let next = r#"stored={"cmd":"getalllog","stn":false} failed=-"#;
    // `count` is this page's size, yet `to` is past it: keep going until the empty page.
    for (from, to) in [(0, 1), (2, 3)] {
        let page = format!(
            r#"{{"ret":"getalllog","result":true,"count":2,"from":{from},"to":{to},"record":[{rec},{rec}]}}"#
        );
        assert_eq!(t.frame(&page), [format!("store [{rec},{rec}] {next}")]);
    }
    assert_eq!(
        t.frame(r#"{"ret":"getalllog","result":true,"count":0,"from":0,"to":0,"record":[]}"#),
        [r#"done f1 ok=true {"cmd":"getalllog","pages":2,"records":4}"#]
    );
}

#[test]
fn a_page_refused_fails_the_command_with_what_was_gathered() {
    let mut t = T::registered();
    t.command("u1", "get_users", "null").unwrap();
    t.frame(r#"{"ret":"getuserlist","result":true,"count":1,"from":0,"to":0,"record":[{"enrollid":1,"admin":0,"backupnum":0}]}"#);
    assert_eq!(
        t.frame(r#"{"ret":"getuserlist","result":false,"reason":3}"#),
        [
            r#"done u1 ok=false {"count":1,"pages":1,"users":[{"enrollid":1,"admin":0,"backupnum":0}],"failed":{"ret":"getuserlist","result":false,"reason":3}}"#
        ]
    );
}

#[test]
fn a_terminal_that_never_stops_paging_is_cut_off() {
    let mut t = T::registered();
    t.command("u1", "get_users", "null").unwrap();
    for page in 0..MAX_PAGES - 1 {
        let out = t.frame(&format!(r#"{{"ret":"getuserlist","result":true,"count":1,"from":{page},"to":{page},"record":[{{"enrollid":{page}}}]}}"#));
        assert_eq!(out, [r#"send {"cmd":"getuserlist","stn":false}"#]);
    }
    let out = t.frame(r#"{"ret":"getuserlist","result":true,"count":1,"from":999999,"to":999999,"record":[{"enrollid":1}]}"#);
    assert!(
        out[0].starts_with(&format!(
            r#"done u1 ok=false {{"count":{MAX_PAGES},"pages":{MAX_PAGES},"users":["#
        )),
        "{out:?}"
    );
    assert!(out[0].ends_with(r#"],"truncated":true}"#));
    assert!(t.s.is_idle());
}

#[test]
fn fetch_logs_pages_into_the_store_and_summarises() {
    let mut t = T::registered();
    assert_eq!(
        t.command(
            "f1",
            "fetch_logs",
            r#"{"all":true,"from":"2018-11-1","to":"2018-12-30"}"#
        )
        .unwrap(),
        [r#"send {"cmd":"getalllog","stn":true,"from":"2018-11-1","to":"2018-12-30"}"#]
    );
    let r1 = r#"{"enrollid":1,"time":"2018-11-02 08:00:00","mode":0,"inout":0,"event":0}"#;
    let r2 = r#"{"enrollid":2,"time":"2018-11-02 08:01:00","mode":0,"inout":0,"event":0}"#;
    assert_eq!(
        t.frame(&format!(
            r#"{{"ret":"getalllog","result":true,"count":3,"from":0,"to":1,"record":[{r1},{r2}]}}"#
        )),
        [format!(
            r#"store [{r1},{r2}] stored={{"cmd":"getalllog","stn":false}} failed=-"#
        )]
    );
    // A sendlog between pages is answered on its own.
    assert_eq!(t.frame(SENDLOG).len(), 1);
    assert_eq!(
        t.frame(&format!(
            r#"{{"cmd":"getalllog","count":3,"from":2,"to":3,"record":[{r1}]}}"#
        )),
        [
            format!("store [{r1}] stored=- failed=-"),
            r#"done f1 ok=true {"cmd":"getalllog","pages":2,"records":3}"#.to_string()
        ]
    );
    assert!(t.s.is_idle());

    assert_eq!(
        t.command("f2", "fetch_logs", "null").unwrap(),
        [r#"send {"cmd":"getnewlog","stn":true}"#]
    );
    assert_eq!(
        t.frame(EMPTY_LOG_PAGE),
        [r#"done f2 ok=true {"cmd":"getnewlog","pages":0,"records":0}"#]
    );
    assert_eq!(
        t.command("f3", "getnewlog", "null").unwrap(),
        [r#"send {"cmd":"getnewlog","stn":true}"#]
    );
    assert_eq!(
        t.frame(r#"{"ret":"getnewlog","result":false,"reason":1}"#),
        [
            r#"done f3 ok=false {"cmd":"getnewlog","pages":0,"records":0,"failed":{"ret":"getnewlog","result":false,"reason":1}}"#
        ]
    );
}

#[test]
fn destructive_commands_need_confirm() {
    let mut t = T::registered();
    for name in [
        "cleanlog",
        "initsys",
        "cleanuser",
        "cleanadmin",
        "cleanuserlock",
    ] {
        assert!(
            invalid(t.command("d", name, "null")).contains("confirm"),
            "{name}"
        );
        assert!(
            invalid(t.command("d", name, r#"{"confirm":false}"#)).contains("confirm"),
            "{name}"
        );
        let raw = format!(r#"{{"cmd":"{name}"}}"#);
        assert!(
            invalid(t.command("d", "raw", &raw)).contains("confirm"),
            "{name}"
        );
    }
    assert_eq!(
        t.command("d1", "cleanlog", r#"{"confirm":true}"#).unwrap(),
        [r#"send {"cmd":"cleanlog"}"#]
    );
    assert_eq!(
        t.frame(r#"{"ret":"cleanlog","result":true}"#),
        [r#"done d1 ok=true {"ret":"cleanlog","result":true}"#]
    );
    assert_eq!(
        t.command("d2", "raw", r#"{"cmd":"initsys","confirm":true}"#)
            .unwrap(),
        [r#"send {"cmd":"initsys"}"#]
    );
}

#[test]
fn one_command_at_a_time() {
    let mut t = T::registered();
    t.command("c1", "getdevinfo", "null").unwrap();
    assert_eq!(
        t.command("c2", "open_door", "null"),
        Err(CommandError::Busy)
    );
    assert!(!t.s.is_idle());
    // A bad command is refused as such even while busy.
    assert!(invalid(t.command("c3", "frobnicate", "null")).contains("unknown command"));
    assert_eq!(
        t.frame(r#"{"ret":"getdevinfo","result":true,"deviceid":1}"#),
        [r#"done c1 ok=true {"ret":"getdevinfo","result":true,"deviceid":1}"#]
    );
    assert_eq!(t.command("c2", "open_door", "null").unwrap().len(), 1);
}

#[test]
fn commands_translate_to_native_frames() {
    let mut t = T::registered();
    let mut sent = |command: &str, payload: &str| {
        let out = t.command("c", command, payload).unwrap();
        // Time it out, and its wait for a late reply, so the next can start.
        t.tick_ms(5_000);
        t.tick_ms(5_000);
        out
    };
    assert_eq!(
        sent("set_time", "null"),
        [format!(
            r#"send {{"cmd":"settime","cloudtime":"{CLOUDTIME}"}}"#
        )]
    );
    assert_eq!(
        sent("set_time", r#"{"time":"2026-01-02 03:04:05"}"#),
        [r#"send {"cmd":"settime","cloudtime":"2026-01-02 03:04:05"}"#]
    );
    assert_eq!(
        sent("settime", r#"{"cloudtime":"2026-01-02 03:04:05"}"#),
        [r#"send {"cmd":"settime","cloudtime":"2026-01-02 03:04:05"}"#]
    );
    assert_eq!(
        sent(
            "set_user",
            r#"{"record":"1234","admin":1,"backupnum":10,"name":"Zoë","enrollid":7}"#
        ),
        [
            r#"send {"cmd":"setuserinfo","enrollid":7,"name":"Zoë","backupnum":10,"admin":1,"record":"1234"}"#
        ]
    );
    assert_eq!(
        sent(
            "set_user",
            r#"{"enrollid":"8","backupnum":11,"record":2352253}"#
        ),
        [r#"send {"cmd":"setuserinfo","enrollid":8,"backupnum":11,"admin":0,"record":2352253}"#]
    );
    assert_eq!(
        sent("delete_user", r#"{"enrollid":7}"#),
        [r#"send {"cmd":"deleteuser","enrollid":7,"backupnum":13}"#]
    );
    assert_eq!(
        sent("delete_user", r#"{"enrollid":7,"backupnum":11}"#),
        [r#"send {"cmd":"deleteuser","enrollid":7,"backupnum":11}"#]
    );
    assert_eq!(
        sent("enableuser", r#"{"enrollid":1,"enflag":0}"#),
        [r#"send {"cmd":"enableuser","enrollid":1,"enflag":0}"#]
    );
    assert_eq!(
        sent("getuserinfo", r#"{"enrollid":1,"backupnum":0}"#),
        [r#"send {"cmd":"getuserinfo","enrollid":1,"backupnum":0}"#]
    );
    assert_eq!(
        sent("raw", r#"{"cmd":"getdevlock","sn":"ZX0006827500"}"#),
        [r#"send {"cmd":"getdevlock","sn":"ZX0006827500"}"#]
    );
}

#[test]
fn raw_replies_are_matched_by_their_cmd() {
    let mut t = T::registered();
    assert_eq!(
        t.command("r1", "raw", r#"{"cmd":"gettime"}"#).unwrap(),
        [r#"send {"cmd":"gettime"}"#]
    );
    assert_eq!(
        t.frame(r#"{"ret":"opendoor","result":true}"#),
        Vec::<String>::new()
    );
    assert_eq!(
        t.frame(r#"{"ret":"gettime","time":"2022-11-09 19:31:49"}"#),
        [r#"done r1 ok=true {"ret":"gettime","time":"2022-11-09 19:31:49"}"#]
    );
}

#[test]
fn bad_commands_are_invalid() {
    let mut t = T::registered();
    for (command, payload, says) in [
        ("frobnicate", "null", "unknown command"),
        ("open_door", "[1]", "object"),
        ("open_door", r#"{"door":"x"}"#, "door"),
        (
            "set_time",
            r#"{"time":"2026-01-02T03:04:05Z"}"#,
            "YYYY-MM-DD HH:MM:SS",
        ),
        ("set_user", r#"{"backupnum":0,"record":"x"}"#, "enrollid"),
        (
            "set_user",
            r#"{"enrollid":99999999,"backupnum":0,"record":"x"}"#,
            "reserved",
        ),
        ("set_user", r#"{"enrollid":1,"record":"x"}"#, "backupnum"),
        ("set_user", r#"{"enrollid":1,"backupnum":0}"#, "record"),
        (
            "set_user",
            r#"{"enrollid":1,"backupnum":0,"record":"x","admin":3}"#,
            "admin",
        ),
        (
            "set_user",
            r#"{"enrollid":1,"backupnum":0,"record":"x","name":5}"#,
            "name",
        ),
        ("delete_user", "null", "enrollid"),
        ("delete_user", r#"{"enrollid":0}"#, "reserved"),
        ("fetch_logs", r#"{"all":"yes"}"#, "all"),
        ("fetch_logs", r#"{"all":true,"from":"2018-13-01"}"#, "from"),
        ("raw", r#"{"cmd":"sendlog"}"#, "sendlog"),
        ("raw", r#"{"sn":"x"}"#, "cmd"),
        ("raw", "null", "cmd"),
    ] {
        assert!(
            invalid(t.command("c", command, payload)).contains(says),
            "{command} {payload}"
        );
        assert!(t.s.is_idle());
    }
    let forty_nine = format!(
        r#"{{"count":49,"record":[{}]}}"#,
        vec![r#"{"enrollid":1,"name":"a"}"#; 49].join(",")
    );
    assert_eq!(t.command("c", "setusername", &forty_nine).unwrap().len(), 1);
    t.tick_ms(5_000);
    let fifty = format!(
        r#"{{"count":50,"record":[{}]}}"#,
        vec![r#"{"enrollid":1,"name":"a"}"#; 50].join(",")
    );
    assert!(invalid(t.command("c", "setusername", &fifty)).contains("49"));
}

/// xorshift64*: a deterministic stream without a new dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_frames_never_panic_and_store_nothing_before_authentication() {
    const SEEDS: &[&str] = &[
        REG,
        SENDLOG,
        EMPTY_LOG_PAGE,
        r#"{"cmd":"senduser","enrollid":1,"name":"n","backupnum":0,"admin":0,"record":"r"}"#,
        r#"{"ret":"getuserlist","result":true,"count":1,"from":0,"to":0,"record":[{"enrollid":1}]}"#,
        r#"{"cmd":"getalllog","count":9,"from":3,"to":4,"records":[{"userid":1,"time":"t"},]}"#,
        r#"{"ret":"opendoor","result":false,"reason":1}"#,
        r#"{"cmd":"sendqrcode","record":"1"}"#,
        r#"{"cmd":"heartbeat"}"#,
        r#"{"cmd":"reg","sn":12345}"#,
    ];
    const ALPHABET: &[u8] =
        b"{}[],:\"\\ 0123456789-.eE+truefalsnul cmdretsendlogrecordenrollid\xff\x00";
    const COMMANDS: &[&str] = &[
        "open_door",
        "reboot",
        "set_time",
        "get_users",
        "set_user",
        "delete_user",
        "fetch_logs",
        "raw",
        "cleanlog",
        "getdevinfo",
        "opendoor",
        "getuserlist",
        "nonsense",
    ];
    const PAYLOADS: &[&str] = &[
        "null",
        "{}",
        "[]",
        "7",
        r#"{"confirm":true}"#,
        r#"{"cmd":"getuserlist"}"#,
        r#"{"enrollid":3,"backupnum":0,"record":"x"}"#,
        r#"{"all":true}"#,
        r#"{"door":9}"#,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // What the run reached, so a change that made it stall at `reg` would not pass unnoticed.
    let (mut stored, mut done) = (0, 0);
    for _ in 0..200 {
        let mut s = Session::new(super::DEFAULT_TIMEOUT);
        let mut now = start();
        for _ in 0..200 {
            let authenticated = s.is_authenticated();
            let actions = match rng.below(8) {
                0 => {
                    let len = rng.below(64);
                    let mut bytes: Vec<u8> = (0..len)
                        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                        .collect();
                    s.on_frame(&mut bytes, now)
                }
                1..=3 => {
                    // A real frame, cut short or with bytes flipped.
                    let mut bytes = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
                    for _ in 0..rng.below(4) {
                        let i = rng.below(bytes.len());
                        match rng.below(3) {
                            0 => bytes[i] = ALPHABET[rng.below(ALPHABET.len())],
                            1 => bytes.truncate(i),
                            _ => bytes.insert(i, b','),
                        }
                        if bytes.is_empty() {
                            break;
                        }
                    }
                    s.on_frame(&mut bytes, now)
                }
                4 => {
                    let identity = match rng.below(3) {
                        0 => known(),
                        1 => Identity::Unknown,
                        _ => Identity::Refused,
                    };
                    s.on_identity(identity, now)
                }
                5 => {
                    let payload = parse(PAYLOADS[rng.below(PAYLOADS.len())]);
                    let was_idle = s.is_idle();
                    match s.start_command("c", COMMANDS[rng.below(COMMANDS.len())], &payload, now) {
                        Ok(actions) => {
                            assert!(was_idle);
                            actions
                        }
                        Err(CommandError::Busy) => {
                            assert!(!was_idle);
                            Vec::new()
                        }
                        Err(_) => Vec::new(),
                    }
                }
                _ => {
                    now = now
                        .checked_add(jiff::SignedDuration::from_millis(rng.below(3_000) as i64))
                        .unwrap();
                    s.on_tick(now)
                }
            };
            let policy = AccessPolicy {
                rule: [AccessRule::Allow, AccessRule::Deny, AccessRule::Enrolled][rng.below(3)],
                format: [AccessFormat::Int, AccessFormat::Bool][rng.below(2)],
            };
            let actions = answer_access(&mut s, actions, policy, &[1], now);
            if !authenticated {
                assert!(
                    !actions.iter().any(|a| matches!(
                        a,
                        Action::StoreRecords { .. }
                            | Action::StoreUser { .. }
                            | Action::CommandDone { .. }
                    )),
                    "{actions:?}"
                );
            }
            for a in &actions {
                match a {
                    Action::StoreRecords { .. } | Action::StoreUser { .. } => stored += 1,
                    Action::CommandDone { .. } => done += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(stored > 100 && done > 100, "stored {stored}, done {done}");
}

/// The clock rule (`crate::clock`) for AiFace: without a configured zone the `reg` answer keeps
/// the offset the terminal's own clock shows (`devinfo.time`) and records are read at it; a
/// terminal that shows no clock is set to UTC, as its records are then read (never the server's
/// zone).
#[test]
fn without_a_zone_the_terminals_own_offset_is_kept() {
    let no_zone = || {
        Identity::Known(Known {
            device_id: "dev-1".into(),
            zone: None,
            token: None,
            log_position: 0,
        })
    };
    // 12:30:20 on the terminal at 07:00 UTC: +05:30, 20 s fast (within the drift bound).
    let mut t = T::new();
    t.frame(r#"{"cmd":"reg","sn":"AF-1","devinfo":{"time":"2026-06-12 12:30:20"}}"#);
    assert_eq!(
        t.identity(no_zone())[..2],
        [
            "online",
            r#"send {"ret":"reg","result":true,"cloudtime":"2026-06-12 12:30:00","nosenduser":true}"#
        ]
    );
    t.frame(EMPTY_LOG_PAGE);
    let stored = t.frame(
        r#"{"cmd":"sendlog","sn":"AF-1","record":[{"enrollid":5,"time":"2026-06-12 12:29:00"}]}"#,
    );
    assert!(
        stored[0].contains(r#""utc_offset_minutes":330"#),
        "{stored:?}"
    );
    // No clock shown: UTC.
    let mut t = T::new();
    t.frame(r#"{"cmd":"reg","sn":"AF-2"}"#);
    assert_eq!(
        t.identity(no_zone())[1],
        r#"send {"ret":"reg","result":true,"cloudtime":"2026-06-12 07:00:00","nosenduser":true}"#
    );
}
