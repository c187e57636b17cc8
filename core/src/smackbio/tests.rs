//! Transcript tests: exact frames in, exact actions out.

use super::*;
use crate::fixtures::smackbio::{REGISTER, TIMELOG_V2, login, vendor};
use jiff::ToSpan;
use jiff::tz::{TimeZone, offset};
use simd_json::json;
use simd_json::prelude::*;

/// 08:00:00 on the terminal's wall clock (+03:00).
const NOW: &str = "2026-08-29T05:00:00Z";
const DEVICE_NOW: &str = "2026-08-29-T08:00:00Z";
const SEED: u64 = 0x1111_1111_1111_1111;
/// The token `Session::new(…, SEED)` issues.
const FRESH_TOKEN: &str = "d013f876-9104-4f94-add0-95c6b9faa1d0";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn known(token: Option<&str>, log_position: u64) -> Identity {
    Identity::Known(Known {
        device_id: "dev-1".into(),
        zone: Some(TimeZone::fixed(offset(3))),
        token: token.map(str::to_owned),
        log_position,
    })
}

fn session() -> Session {
    Session::new(DEFAULT_COMMAND_TIMEOUT, SEED)
}

fn send(frame: &str) -> String {
    format!("send {frame}")
}

/// Actions as comparable text. An event's durable-reply frames follow it as their own lines.
fn show(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Event {
                kind,
                payload,
                on_stored,
                on_failed,
            } => {
                let mut lines = vec![format!("event {kind} {payload}")];
                lines.extend(on_stored.as_deref().map(send));
                lines.extend(on_failed.as_deref().map(|f| format!("on_failed {f}")));
                lines
            }
            other => vec![show_one(other)],
        })
        .collect()
}

fn show_one(a: &Action) -> String {
    match a {
        Action::Send(f) => send(f),
        Action::Identify {
            serial,
            model,
            firmware,
            token,
            cloud_id,
        } => {
            format!(
                "identify {serial} model={model:?} firmware={firmware:?} token={token:?} cloud_id={cloud_id:?}"
            )
        }
        Action::Online => "online".into(),
        Action::SaveToken(t) => format!("save_token {t}"),
        Action::CheckAccess { enrollids } => format!("check_access {enrollids:?}"),
        Action::StoreRecords {
            records,
            on_stored,
            on_failed,
        } => {
            let records: Vec<String> = records.iter().map(|r| r.encode()).collect();
            format!(
                "store {} stored={on_stored:?} failed={on_failed:?}",
                records.join(",")
            )
        }
        Action::Event { kind, payload, .. } => format!("event {kind} {payload}"),
        Action::StoreUser { enrollid, .. } => format!("store_user {enrollid}"),
        Action::CommandDone {
            command_id,
            ok,
            result,
        } => format!("done {command_id} ok={ok} {result}"),
        Action::SavePosition(p) => format!("save_position {p}"),
        Action::Unrecognised(name) => format!("unrecognised {name}"),
        Action::Close(reason) => format!("close {reason}"),
    }
}

fn feed(s: &mut Session, frame: &str) -> Vec<String> {
    feed_at(s, frame, now())
}

fn feed_at(s: &mut Session, frame: &str, at: Timestamp) -> Vec<String> {
    let mut bytes = frame.as_bytes().to_vec();
    show(&s.on_frame(&mut bytes, at))
}

fn answer(s: &mut Session, identity: Identity) -> Vec<String> {
    show(&s.on_identity(identity, now()))
}

fn set_time_request() -> String {
    send(&vendor("Request", "SetTime", &[("Time", DEVICE_NOW)]))
}

/// Register and Login with a fresh token; the setup's SetTime is outstanding.
fn logged_in(log_position: u64) -> Session {
    let mut s = session();
    feed(&mut s, REGISTER);
    answer(&mut s, known(None, log_position));
    feed(&mut s, &login(FRESH_TOKEN));
    answer(&mut s, known(Some(FRESH_TOKEN), log_position));
    assert!(s.is_authenticated());
    s
}

/// What the runtime does when the session turns idle and no operator command waits.
fn resume(s: &mut Session) -> Vec<String> {
    show(&s.resume(now()))
}

/// Logged in, setup finished (SetTime answered, backfill found no logs): idle.
fn ready() -> Session {
    let mut s = logged_in(0);
    feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    assert!(s.is_idle());
    resume(&mut s);
    feed(
        &mut s,
        &vendor("Response", "GetFirstGlog", &[("Result", "Fail")]),
    );
    assert!(s.is_idle());
    s
}

fn start(s: &mut Session, command: &str, payload: OwnedValue) -> Result<Vec<String>, CommandError> {
    s.start_command("c1", command, &payload, now())
        .map(|a| show(&a))
}

/// The one record stored; a live log may be followed by the position it moves the backfill to.
fn record_of(actions: &[Action]) -> &OwnedValue {
    match actions {
        [Action::StoreRecords { records, .. }]
        | [
            Action::StoreRecords { records, .. },
            Action::SavePosition(_),
        ] if records.len() == 1 => &records[0],
        other => panic!("expected one StoreRecords with one record, got {other:?}"),
    }
}

#[test]
fn register_issues_a_token_then_login_goes_online_and_sets_the_clock() {
    let mut s = session();
    assert_eq!(
        feed(&mut s, REGISTER),
        [
            "identify M82-0001 model=Some(\"M82\") firmware=None token=None cloud_id=Some(\"cloudid12345678\")"
        ]
    );
    assert_eq!(
        answer(&mut s, known(None, 0)),
        [
            format!("save_token {FRESH_TOKEN}"),
            send(&vendor(
                "Response",
                "Register",
                &[
                    ("DeviceSerialNo", "M82-0001"),
                    ("Token", FRESH_TOKEN),
                    ("Result", "OK")
                ]
            )),
        ]
    );
    assert!(!s.is_authenticated());
    assert_eq!(
        feed(&mut s, &login(FRESH_TOKEN)),
        [format!(
            "identify M82-0001 model=None firmware=None token=Some({FRESH_TOKEN:?}) cloud_id=None"
        )]
    );
    assert_eq!(
        answer(&mut s, known(Some(FRESH_TOKEN), 0)),
        [
            "online".to_owned(),
            send(&vendor(
                "Response",
                "Login",
                &[("DeviceSerialNo", "M82-0001"), ("Result", "OK")]
            )),
            set_time_request(),
        ]
    );
    assert!(s.is_authenticated());
    assert!(!s.is_idle(), "the setup runs first");
}

#[test]
fn register_reuses_the_serials_token_exactly_as_the_vendor_answers() {
    let mut s = session();
    feed(
        &mut s,
        "<Message><Request>Register</Request><TerminalType>F500</TerminalType><ProductName>BioFace</ProductName><DeviceSerialNo>DJ20250307014</DeviceSerialNo></Message>",
    );
    assert_eq!(
        answer(
            &mut s,
            known(Some("ee73fe2d-f765-7c13-bc8a-b584b0db5796"), 0)
        ),
        [send(
            "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Response>Register</Response>\r\n\t<DeviceSerialNo>DJ20250307014</DeviceSerialNo>\r\n\t<Token>ee73fe2d-f765-7c13-bc8a-b584b0db5796</Token>\r\n\t<Result>OK</Result>\r\n</Message>"
        )]
    );
}

#[test]
fn register_without_terminal_type_reports_the_product_name() {
    let mut s = session();
    assert_eq!(
        feed(
            &mut s,
            "<Message><Request>Register</Request><ProductName>BioFace</ProductName><DeviceSerialNo>S1</DeviceSerialNo><CloudId></CloudId></Message>"
        ),
        ["identify S1 model=Some(\"BioFace\") firmware=None token=None cloud_id=None"]
    );
}

#[test]
fn register_of_an_unknown_serial_fails_without_a_token() {
    let mut s = session();
    feed(&mut s, REGISTER);
    assert_eq!(
        answer(&mut s, Identity::Unknown),
        [send(&vendor(
            "Response",
            "Register",
            &[("DeviceSerialNo", "M82-0001"), ("Result", "Fail")]
        ))]
    );
    assert!(!s.is_authenticated());
}

#[test]
fn a_wrong_cloud_id_closes_without_a_reply() {
    let mut s = session();
    feed(&mut s, REGISTER);
    assert_eq!(
        answer(&mut s, Identity::Refused),
        ["close registration refused"]
    );
}

/// Pioneer-bridge and F500 firmware log in before (or without) registering and expect the token
/// in the Login reply (protocols.md §2.7 item 1): a Login without a token is a Register and a
/// Login in one. It has passed the runtime's Register checks (allowed sources, cloud id).
#[test]
fn a_login_without_a_token_gets_the_serials_token() {
    let ok_with = |token: &str| {
        send(&vendor(
            "Response",
            "Login",
            &[
                ("DeviceSerialNo", "M82-0001"),
                ("Token", token),
                ("Result", "OK"),
            ],
        ))
    };
    // Never registered: a token is issued, saved, and handed over in the Login reply.
    let mut s = session();
    assert_eq!(
        feed(
            &mut s,
            "<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo><Token/></Message>",
        ),
        ["identify M82-0001 model=None firmware=None token=None cloud_id=None"]
    );
    assert_eq!(
        answer(&mut s, known(None, 0)),
        [
            format!("save_token {FRESH_TOKEN}"),
            "online".to_owned(),
            ok_with(FRESH_TOKEN),
            set_time_request(),
        ]
    );
    assert!(s.is_authenticated());
    // Registered before: the serial's token, nothing saved.
    let mut s = session();
    feed(
        &mut s,
        "<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo></Message>",
    );
    assert_eq!(
        answer(&mut s, known(Some("kept-token"), 0)),
        [
            "online".to_owned(),
            ok_with("kept-token"),
            set_time_request()
        ]
    );
    // Refused (wrong cloud id, outside its networks) or unknown: as any Login.
    let mut s = session();
    feed(
        &mut s,
        "<Message><Request>Login</Request><DeviceSerialNo>M82-0001</DeviceSerialNo></Message>",
    );
    assert_eq!(
        answer(&mut s, Identity::Refused),
        [send(&vendor(
            "Response",
            "Login",
            &[("DeviceSerialNo", "M82-0001"), ("Result", "Fail")]
        ))]
    );
    assert!(!s.is_authenticated());
}

#[test]
fn login_failures() {
    let fail = |result: &str| {
        send(&vendor(
            "Response",
            "Login",
            &[("DeviceSerialNo", "M82-0001"), ("Result", result)],
        ))
    };
    // Another token than the serial's.
    let mut s = session();
    feed(&mut s, &login("stale"));
    assert_eq!(
        answer(&mut s, known(Some(FRESH_TOKEN), 0)),
        [fail("FailUnknownToken")]
    );
    // A token presented where the serial has none.
    let mut s = session();
    feed(&mut s, &login("t"));
    assert_eq!(answer(&mut s, known(None, 0)), [fail("FailUnknownToken")]);
    // Unknown serial; refused device.
    let mut s = session();
    feed(&mut s, &login("t"));
    assert_eq!(
        answer(&mut s, Identity::Unknown),
        [fail("FailUnknownToken")]
    );
    let mut s = session();
    feed(&mut s, &login("t"));
    assert_eq!(answer(&mut s, Identity::Refused), [fail("Fail")]);
    assert!(!s.is_authenticated());
    assert!(!s.is_idle());
    assert_eq!(
        start(&mut s, "reboot", OwnedValue::null()),
        Err(CommandError::NotReady)
    );
    assert!(feed(&mut s, TIMELOG_V2).is_empty());
}

#[test]
fn login_on_a_new_connection_needs_no_register() {
    let mut s = session();
    feed(&mut s, &login("ee73"));
    assert_eq!(answer(&mut s, known(Some("ee73"), 0))[0], "online");
    assert!(s.is_authenticated());
}

#[test]
fn a_connection_speaks_for_one_serial_only() {
    let mut s = session();
    feed(&mut s, REGISTER);
    assert!(feed(&mut s, "<Message><Request>Login</Request><DeviceSerialNo>OTHER</DeviceSerialNo><Token>x</Token></Message>").is_empty());
    let long = format!(
        "<Message><Request>Register</Request><DeviceSerialNo>{}</DeviceSerialNo></Message>",
        "9".repeat(65)
    );
    assert!(feed(&mut session(), &long).is_empty());
}

#[test]
fn identity_answers_are_matched_to_requests_in_order() {
    let mut s = session();
    feed(&mut s, REGISTER);
    feed(&mut s, &login(FRESH_TOKEN));
    assert_eq!(
        answer(&mut s, known(None, 0))[0],
        format!("save_token {FRESH_TOKEN}")
    );
    assert_eq!(answer(&mut s, known(Some(FRESH_TOKEN), 0))[0], "online");
    // An answer nobody asked for is ignored; so are requests beyond the bound.
    assert!(answer(&mut s, known(None, 0)).is_empty());
    let mut s = session();
    for _ in 0..MAX_PENDING_IDENTITIES {
        assert_eq!(feed(&mut s, REGISTER).len(), 1);
    }
    assert!(feed(&mut s, REGISTER).is_empty());
}

#[test]
fn the_misspelt_request_tag_is_read() {
    let mut s = session();
    let actions = feed(
        &mut s,
        "<Message><Reuqest>Register</Request><DeviceSerialNo>M82-0001</DeviceSerialNo></Message>",
    );
    assert_eq!(
        actions,
        ["identify M82-0001 model=None firmware=None token=None cloud_id=None"]
    );
}

#[test]
fn dashboard_dialect_register_and_timelog() {
    let mut s = session();
    assert_eq!(
        feed(
            &mut s,
            "<Request>\n  <Operation>Register</Operation>\n  <DeviceSerialNo>FK628001</DeviceSerialNo>\n  <CloudId>cloud_001</CloudId>\n</Request>"
        ),
        ["identify FK628001 model=None firmware=None token=None cloud_id=Some(\"cloud_001\")"]
    );
    assert_eq!(
        answer(&mut s, known(None, 0)),
        [
            "online".to_owned(),
            send(
                "<Response><Result>success</Result><Session>sess_d013f87691044f94add095c6b9faa1d0</Session><DeviceSerialNo>FK628001</DeviceSerialNo></Response>"
            ),
            send(&format!(
                "<Request><Operation>SetTime</Operation><Time>{DEVICE_NOW}</Time></Request>"
            )),
        ]
    );
    // The setup goes on in the same dialect.
    assert!(
        feed(
            &mut s,
            "<Response><Operation>SetTime</Operation><Result>success</Result></Response>"
        )
        .is_empty()
    );
    assert_eq!(
        resume(&mut s),
        [send(
            "<Request><Operation>GetFirstGlog</Operation><BeginLogPos>0</BeginLogPos></Request>"
        )]
    );
    assert!(
        feed(
            &mut s,
            "<Response><Operation>GetFirstGlog</Operation><Result>fail</Result></Response>"
        )
        .is_empty()
    );
    assert!(s.is_idle());

    let punch = "<Request><Operation>TimeLog_v2</Operation><LogId>77</LogId><DeviceSerialNo>FK628001</DeviceSerialNo><UserID>5</UserID><Time>2026-08-29-T07:59:00Z</Time></Request>";
    let mut bytes = punch.as_bytes().to_vec();
    let actions = s.on_frame(&mut bytes, now());
    assert_eq!(
        record_of(&actions),
        &json!({"enrollid": 5, "time": "2026-08-29 07:59:00", "logid": "77"})
    );
    assert_eq!(
        show(&actions),
        [format!(
            "store {} stored={:?} failed={:?}",
            record_of(&actions).encode(),
            Some(
                "<Response><Operation>TimeLog_v2</Operation><Result>success</Result><LogId>77</LogId></Response>"
            ),
            Some(
                "<Response><Operation>TimeLog_v2</Operation><Result>fail</Result><LogId>77</LogId></Response>"
            ),
        )]
    );
    assert_eq!(
        feed(
            &mut s,
            "<Request><Operation>KeepAlive</Operation><DevTime>2026-08-29-T07:59:59Z</DevTime></Request>"
        ),
        [send(&format!(
            "<Response><Operation>KeepAlive</Operation><Result>success</Result><DevTime>2026-08-29-T07:59:59Z</DevTime><ServerTime>{DEVICE_NOW}</ServerTime></Response>"
        ))]
    );
    // Commands go out in the dialect too, and its replies are read.
    assert_eq!(
        start(&mut s, "open_door", json!({})).unwrap(),
        [send(
            "<Request><Operation>LockControl</Operation><Mode>1</Mode></Request>"
        )]
    );
    assert_eq!(
        feed(
            &mut s,
            "<Response><Operation>LockControl</Operation><Result>success</Result></Response>"
        ),
        [r#"done c1 ok=true {"Operation":"LockControl","Result":"success"}"#]
    );
}

#[test]
fn dashboard_dialect_unknown_serial() {
    let mut s = session();
    feed(
        &mut s,
        "<Request><Operation>Register</Operation><DeviceSerialNo>FK1</DeviceSerialNo></Request>",
    );
    assert_eq!(
        answer(&mut s, Identity::Unknown),
        [send(
            "<Response><Result>fail</Result><DeviceSerialNo>FK1</DeviceSerialNo></Response>"
        )]
    );
    feed(
        &mut s,
        "<Request><Operation>Register</Operation><DeviceSerialNo>FK1</DeviceSerialNo></Request>",
    );
    assert_eq!(
        answer(&mut s, Identity::Refused),
        ["close registration refused"]
    );
}

#[test]
fn timelog_is_acknowledged_only_through_the_store_with_its_trans_id() {
    let mut s = ready();
    let mut bytes = TIMELOG_V2.as_bytes().to_vec();
    let actions = s.on_frame(&mut bytes, now());
    assert_eq!(
        record_of(&actions),
        &json!({
            "enrollid": 42,
            "time": "2026-08-29 08:15:30",
            "utc_offset_minutes": 180,
            "action": "FP",
            "attendstat": "Duty On",
            "apstat": "None",
            "jobcode": "0",
            "terminal_id": "1",
            "logid": "24",
            "image": "AAAAAAAA",
        })
    );
    // The backfill has caught up, so the live log moves the saved position past it.
    let [
        Action::StoreRecords {
            on_stored,
            on_failed,
            ..
        },
        Action::SavePosition(25),
    ] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        on_stored.as_deref(),
        Some(
            "<?xml version=\"1.0\"?><Message><Response>TimeLog_v2</Response><Result>OK</Result><TransID>tx-7</TransID></Message>"
        )
    );
    assert_eq!(
        on_failed.as_deref(),
        Some(
            "<?xml version=\"1.0\"?><Message><Response>TimeLog_v2</Response><Result>Fail</Result><TransID>tx-7</TransID></Message>"
        )
    );
    // Nothing is sent directly: the runtime answers after the commit.
    assert!(!actions.iter().any(|a| matches!(a, Action::Send(_))));
}

#[test]
fn a_resent_log_is_stored_the_same_way_again() {
    let mut s = ready();
    let first = feed(&mut s, TIMELOG_V2);
    assert_eq!(first.last().map(String::as_str), Some("save_position 25"));
    // The position does not move again: it only ever goes forward.
    assert_eq!(feed(&mut s, TIMELOG_V2), first[..first.len() - 1]);
}

#[test]
fn padded_unpadded_and_sparse_logs() {
    let mut s = ready();
    let frame = "<Message>\r\n\t<Event>\tTimeLog_v2 </Event>\r\n\t<UserID> 0042 </UserID>\r\n\t<Time> 2026-9-6-T8:55:20Z </Time>\r\n\t<BodyTemperature100>3655</BodyTemperature100>\r\n\t<TransID> t1 </TransID>\r\n</Message>";
    let mut bytes = frame.as_bytes().to_vec();
    let actions = s.on_frame(&mut bytes, now());
    // No UtcTimezoneMinutes: none in the record.
    assert_eq!(
        record_of(&actions),
        &json!({"enrollid": 42, "time": "2026-09-06 08:55:20", "temperature": 36.55})
    );
    let [Action::StoreRecords { on_stored, .. }] = &actions[..] else {
        unreachable!()
    };
    assert!(
        on_stored
            .as_deref()
            .is_some_and(|f| f.ends_with("<TransID>t1</TransID></Message>"))
    );
}

/// Terminals with alphanumeric user ids send `UserID_Base36` (protocols.md §2.2, the vendor PHP
/// sample). The store keys punches by a number, so such an id used to be filed as an invalid
/// record while the terminal heard OK; it is now the number it spells, its text kept beside it.
#[test]
fn base36_user_ids_become_the_number_they_spell() {
    let mut s = ready();
    // A numeric UserID stays the key.
    let mut bytes = b"<Message><Event>TimeLog_v2</Event><UserID>13838</UserID><UserID_Base36>AOE</UserID_Base36><Time>2026-08-29-T08:15:30Z</Time><TransID>1</TransID></Message>".to_vec();
    assert_eq!(
        record_of(&s.on_frame(&mut bytes, now())),
        &json!({"enrollid": 13838, "user_id_base36": "AOE", "time": "2026-08-29 08:15:30"})
    );
    // No numeric UserID: the base-36 id, either case, read as a number ("ab2" = 13358).
    let mut bytes = b"<Message><Event>TimeLog_v2</Event><UserID>AB2</UserID><UserID_Base36>ab2</UserID_Base36><Time>2026-08-29-T08:15:30Z</Time><TransID>2</TransID></Message>".to_vec();
    assert_eq!(
        record_of(&s.on_frame(&mut bytes, now())),
        &json!({"enrollid": 13358, "user_id_base36": "ab2", "time": "2026-08-29 08:15:30"})
    );
    let mut bytes = b"<Message><Event>TimeLog_v2</Event><UserID_Base36>77</UserID_Base36><TransID>1</TransID></Message>".to_vec();
    assert_eq!(
        record_of(&s.on_frame(&mut bytes, now())),
        &json!({"enrollid": 259, "user_id_base36": "77"})
    );
}

#[test]
fn ids_that_are_no_number_and_unreadable_times_are_kept_as_sent() {
    let mut s = ready();
    // Too long for 64 bits, or not base 36: kept as text (the store files it as invalid).
    let mut bytes = b"<Message><Event>TimeLog_v2</Event><UserID>x-1</UserID><UserID_Base36>ZZZZZZZZZZZZZZZZZZZZ</UserID_Base36><Time>yesterday</Time><TransID>1</TransID></Message>".to_vec();
    assert_eq!(
        record_of(&s.on_frame(&mut bytes, now())),
        &json!({"enrollid": "x-1", "user_id_base36": "ZZZZZZZZZZZZZZZZZZZZ", "time": "yesterday"})
    );
}

#[test]
fn deprecated_timelog_has_no_trans_id() {
    let mut s = ready();
    let mut bytes = b"<Message><Event>TimeLog</Event><UserID>1</UserID><Time>2026-08-29-T08:00:00Z</Time></Message>".to_vec();
    let actions = s.on_frame(&mut bytes, now());
    let [
        Action::StoreRecords {
            on_stored,
            on_failed,
            ..
        },
    ] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        on_stored.as_deref(),
        Some(
            "<?xml version=\"1.0\"?><Message><Response>TimeLog</Response><Result>OK</Result></Message>"
        )
    );
    assert_eq!(
        on_failed.as_deref(),
        Some(
            "<?xml version=\"1.0\"?><Message><Response>TimeLog</Response><Result>Fail</Result></Message>"
        )
    );
}

#[test]
fn admin_logs_are_events_answered_once_stored() {
    // The terminal drops a log once it is acked: OK only after the event is durable, Fail
    // (the terminal keeps it) if it was not stored.
    let mut s = ready();
    assert_eq!(
        feed(&mut s, "<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>AdminLog_v2</Event><LogID>3</LogID><AdminID>1</AdminID><UserID>42</UserID><Action>EnrollFace</Action><TransID>a-1</TransID></Message>"),
        [
            r#"event admin_log {"DeviceSerialNo":"M82-0001","Event":"AdminLog_v2","LogID":"3","AdminID":"1","UserID":"42","Action":"EnrollFace","TransID":"a-1"}"#.to_owned(),
            send("<?xml version=\"1.0\"?><Message><Response>AdminLog_v2</Response><Result>OK</Result><TransID>a-1</TransID></Message>"),
            "on_failed <?xml version=\"1.0\"?><Message><Response>AdminLog_v2</Response><Result>Fail</Result><TransID>a-1</TransID></Message>".to_owned(),
        ]
    );
    assert_eq!(
        feed(
            &mut s,
            "<Message><Event>AdminLog</Event><Action>SetPWD</Action></Message>"
        )[1],
        send(
            "<?xml version=\"1.0\"?><Message><Response>AdminLog</Response><Result>OK</Result></Message>"
        )
    );
}

#[test]
fn keepalive_is_answered_with_the_server_time_on_the_devices_clock() {
    let mut s = ready();
    // One second and a half past: zero-padded, whole seconds.
    let at = now() + 1.second() + 500.milliseconds();
    assert_eq!(
        feed_at(
            &mut s,
            "<Message><DeviceSerialNo>M82-0001</DeviceSerialNo><Event>KeepAlive</Event><DevTime>2026-08-29-T08:00:00Z</DevTime></Message>",
            at
        ),
        [send(
            "<?xml version=\"1.0\"?><Message><Response>KeepAlive</Response><Result>OK</Result><DevTime>2026-08-29-T08:00:00Z</DevTime><ServerTime>2026-08-29-T08:00:01Z</ServerTime></Message>"
        )]
    );
}

#[test]
fn events_before_login_are_neither_stored_nor_answered() {
    let mut s = session();
    assert!(feed(&mut s, TIMELOG_V2).is_empty());
    assert!(
        feed(
            &mut s,
            "<Message><Event>KeepAlive</Event><DevTime>x</DevTime></Message>"
        )
        .is_empty()
    );
    feed(&mut s, REGISTER);
    answer(&mut s, known(None, 0));
    assert!(
        feed(&mut s, TIMELOG_V2).is_empty(),
        "registered is not logged in"
    );
}

#[test]
fn unknown_events_and_requests_get_a_generic_success_and_are_reported() {
    let mut s = ready();
    // Every message the terminal starts expects a reply; the vendor samples answer unknown ones
    // with a generic success. An event is the terminal's data, dropped once acknowledged: it is
    // stored, and the OK (echoing TransID and LogID, as the Pioneer bridge's OpLog_v2 ack does)
    // waits for the commit; Fail makes the terminal keep it.
    assert_eq!(
        feed(
            &mut s,
            "<Message><Event>OpLog_v2</Event><LogID>9</LogID><TransID>1</TransID></Message>"
        ),
        [
            "unrecognised OpLog_v2".to_string(),
            r#"event terminal_event {"Event":"OpLog_v2","LogID":"9","TransID":"1"}"#.to_string(),
            send(
                r#"<?xml version="1.0"?><Message><Response>OpLog_v2</Response><Result>OK</Result><TransID>1</TransID><LogID>9</LogID></Message>"#
            ),
            r#"on_failed <?xml version="1.0"?><Message><Response>OpLog_v2</Response><Result>Fail</Result><TransID>1</TransID><LogID>9</LogID></Message>"#.to_string(),
        ]
    );
    // A request carries no data: answered at once, nothing stored.
    assert_eq!(
        feed(&mut s, "<Message><Request>Heartbeat</Request></Message>"),
        [
            "unrecognised Heartbeat".to_string(),
            send(
                r#"<?xml version="1.0"?><Message><Response>Heartbeat</Response><Result>OK</Result></Message>"#
            )
        ]
    );
    // A name that is not a word is reported, never echoed.
    assert_eq!(
        feed(&mut s, "<Message><Request>a b</Request></Message>"),
        ["unrecognised (not a name)"]
    );
    // Not a SmackBio message at all: nothing.
    assert!(feed(&mut s, "<Other><Event>TimeLog_v2</Event></Other>").is_empty());
}

#[test]
fn backfill_walks_from_the_stored_position_and_saves_progress() {
    let mut s = logged_in(100);
    // The clock is set first; the backfill waits, parked, for the session to be idle.
    assert!(feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")])).is_empty());
    assert!(s.is_idle());
    assert_eq!(
        resume(&mut s),
        [send(&vendor(
            "Request",
            "GetNextGlog",
            &[("BeginLogPos", "100")]
        ))]
    );
    assert_eq!(
        start(&mut s, "reboot", OwnedValue::null()),
        Err(CommandError::Busy)
    );
    // A live punch during the walk is an event, not the walk's reply; it does not move the
    // position while older logs may still be unread.
    assert_eq!(feed(&mut s, TIMELOG_V2).len(), 1);
    let log = "<Message><Response>GetNextGlog</Response><LogID>100</LogID><Time>2026-08-01-T09:00:00Z</Time><UserID>7</UserID><Action>Face</Action><AttendStat>Duty On</AttendStat><APStat>None</APStat><JobCode>0</JobCode><Photo>No</Photo><Result>OK</Result></Message>";
    let mut bytes = log.as_bytes().to_vec();
    let actions = s.on_frame(&mut bytes, now());
    let Action::StoreRecords {
        records,
        on_stored: None,
        on_failed: None,
    } = &actions[0]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(
        records[..],
        [
            json!({"enrollid": 7, "time": "2026-08-01 09:00:00", "action": "Face", "attendstat": "Duty On", "apstat": "None", "jobcode": "0", "logid": "100"})
        ]
    );
    assert_eq!(show(&actions[1..]), ["save_position 101"]);
    // Between steps the walk yields: an operator command goes first.
    assert!(s.is_idle());
    assert_eq!(
        start(&mut s, "reboot", OwnedValue::null()),
        Ok(vec![send(&vendor("Request", "Restart", &[]))])
    );
    assert!(resume(&mut s).is_empty());
    assert_eq!(
        feed(&mut s, &vendor("Response", "Restart", &[("Result", "OK")])),
        [r#"done c1 ok=true {"Response":"Restart","Result":"OK"}"#]
    );
    assert_eq!(
        resume(&mut s),
        [send(&vendor(
            "Request",
            "GetNextGlog",
            &[("BeginLogPos", "101")]
        ))]
    );
    // `Fail`: no more logs. The walk ends without a CommandDone.
    assert!(
        feed(
            &mut s,
            &vendor("Response", "GetNextGlog", &[("Result", "Fail")])
        )
        .is_empty()
    );
    assert!(s.is_idle() && resume(&mut s).is_empty());
    // Caught up: a live log now moves the saved position past it (only forward), so the next
    // connection reads only what it missed.
    let live = |id: &str| {
        format!(
            "<Message><Event>TimeLog_v2</Event><LogID>{id}</LogID><UserID>7</UserID><Time>2026-08-29-T08:15:30Z</Time><TransID>t{id}</TransID></Message>"
        )
    };
    assert_eq!(
        feed(&mut s, &live("300")).last().map(String::as_str),
        Some("save_position 301")
    );
    assert_eq!(feed(&mut s, &live("42")).len(), 1);
}

#[test]
fn backfill_from_the_start_and_a_terminal_that_repeats_itself() {
    let mut s = logged_in(0);
    assert!(feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")])).is_empty());
    assert_eq!(
        resume(&mut s),
        [send(&vendor(
            "Request",
            "GetFirstGlog",
            &[("BeginLogPos", "0")]
        ))]
    );
    let log = |name: &str, id: &str| {
        vendor(
            "Response",
            name,
            &[
                ("LogID", id),
                ("UserID", "1"),
                ("Time", "2026-08-01-T09:00:00Z"),
                ("Result", "OK"),
            ],
        )
    };
    assert_eq!(
        feed(&mut s, &log("GetFirstGlog", "5"))[1..],
        ["save_position 6"]
    );
    assert_eq!(
        resume(&mut s),
        [send(&vendor(
            "Request",
            "GetNextGlog",
            &[("BeginLogPos", "6")]
        ))]
    );
    // An older log than asked for is stored, but the walk stops rather than loop, and the
    // position stays: live logs do not move it past logs never read.
    assert_eq!(feed(&mut s, &log("GetNextGlog", "2")).len(), 1);
    assert!(s.is_idle() && resume(&mut s).is_empty());
    assert_eq!(feed(&mut s, TIMELOG_V2).len(), 1);
}

#[test]
fn a_backfill_step_the_terminal_cannot_answer_keeps_the_position() {
    let mut s = logged_in(7);
    feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    resume(&mut s);
    assert!(
        feed(
            &mut s,
            &vendor("Response", "GetNextGlog", &[("Result", "Device Not Ready")])
        )
        .is_empty()
    );
    assert!(resume(&mut s).is_empty());
    // Logs 7.. are unread: a live log must not move the position past them.
    assert_eq!(feed(&mut s, TIMELOG_V2).len(), 1);
    // The same when a step times out.
    let mut s = logged_in(7);
    feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    resume(&mut s);
    assert!(show(&s.on_tick(now() + 6.seconds())).is_empty());
    assert!(s.is_idle() && resume(&mut s).is_empty());
    assert_eq!(feed(&mut s, TIMELOG_V2).len(), 1);
}

/// F500 firmware sends frames carrying only `<Result>` to acknowledge the server's previous
/// reply, and a reply can arrive after its request timed out (protocols.md §2.4, [SB-F5]). Taken
/// as the answer to the outstanding request, one such frame shifted every later answer by one: a
/// backfill stored an empty record as invalid and stopped, and operators saw the wrong results.
/// Replies are matched by name; acks and late replies are consumed.
#[test]
fn bare_result_acks_and_late_replies_shift_nothing() {
    let bare_ack = "<?xml version=\"1.0\"?><Message><Result>OK</Result></Message>";
    let mut s = logged_in(0);
    // The ack of the server's Login reply arrives where the SetTime reply is awaited.
    assert!(feed(&mut s, bare_ack).is_empty());
    assert!(!s.is_idle());
    assert!(feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")])).is_empty());
    resume(&mut s);
    // Interleaved with the backfill: an ack, a KeepAlive (answered, and acked again), the log.
    assert!(feed(&mut s, bare_ack).is_empty());
    let keepalive = feed(
        &mut s,
        "<Message><Event>KeepAlive</Event><DevTime>2026-08-29-T08:00:00Z</DevTime></Message>",
    );
    assert_eq!(keepalive.len(), 1);
    assert!(feed(&mut s, bare_ack).is_empty());
    let log = vendor(
        "Response",
        "GetFirstGlog",
        &[
            ("LogID", "0"),
            ("UserID", "5"),
            ("Time", "2026-08-01-T09:00:00Z"),
            ("Result", "OK"),
        ],
    );
    let stored = feed(&mut s, &log);
    assert!(stored[0].starts_with(r#"store {"enrollid":5,"time":"2026-08-01 09:00:00""#));
    assert_eq!(stored[1..], ["save_position 1"]);
    resume(&mut s);
    assert!(
        feed(
            &mut s,
            &vendor("Response", "GetNextGlog", &[("Result", "Fail")])
        )
        .is_empty()
    );
    // A command times out. Its reply may still come while the session waits for it (consumed
    // as its own), or later still, after the next command went out: dropped by its name.
    start(&mut s, "open_door", OwnedValue::null()).expect("open_door starts");
    let done = show(&s.on_tick(now() + 6.seconds()));
    assert_eq!(done, [r#"done c1 ok=false {"error":"timeout"}"#]);
    assert!(s.on_tick(now() + 20.seconds()).is_empty());
    assert!(s.is_idle());
    assert_eq!(
        s.start_command("c2", "GetTime", &OwnedValue::null(), now() + 20.seconds())
            .map(|a| show(&a)),
        Ok(vec![send(&vendor("Request", "GetTime", &[]))])
    );
    assert!(
        feed(
            &mut s,
            &vendor("Response", "LockControl", &[("Result", "OK")])
        )
        .is_empty()
    );
    assert!(feed(&mut s, bare_ack).is_empty());
    assert!(!s.is_idle());
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetTime", &[("Time", "2026-08-29-T08:00:00Z")])
        ),
        [r#"done c2 ok=true {"Response":"GetTime","Time":"2026-08-29-T08:00:00Z"}"#]
    );
    // A reply to nothing at all is dropped too.
    assert!(feed(&mut s, &vendor("Response", "GetTime", &[("Result", "OK")])).is_empty());
}

/// The clock rule (`crate::clock`): without a configured zone the server neither sets the
/// terminal's clock at login nor answers KeepAlive in its own zone; it learns the terminal's
/// offset from what it shows, and stamps records that state none.
#[test]
fn without_a_zone_the_terminals_own_clock_is_kept() {
    let mut s = session();
    feed(&mut s, &login("tok"));
    let no_zone = Identity::Known(Known {
        device_id: "dev-1".into(),
        zone: None,
        token: Some("tok".into()),
        log_position: 0,
    });
    // No SetTime: the backfill is parked at once.
    assert_eq!(
        answer(&mut s, no_zone),
        [
            "online".to_owned(),
            send(&vendor(
                "Response",
                "Login",
                &[("DeviceSerialNo", "M82-0001"), ("Result", "OK")]
            ))
        ]
    );
    assert!(s.is_idle());
    assert_eq!(
        start(&mut s, "set_time", OwnedValue::null()),
        Err(CommandError::Invalid(
            "the device has no timezone setting and has not shown its clock: give {\"time\":\"YYYY-MM-DD HH:MM:SS\"}".into()
        ))
    );
    resume(&mut s);
    feed(
        &mut s,
        &vendor("Response", "GetFirstGlog", &[("Result", "Fail")]),
    );
    // The terminal shows 10:30 at 05:00 UTC: +05:30 learned; ServerTime on its clock.
    assert_eq!(
        feed(
            &mut s,
            "<Message><Event>KeepAlive</Event><DevTime>2026-08-29-T10:30:20Z</DevTime></Message>"
        ),
        [send(
            "<?xml version=\"1.0\"?><Message><Response>KeepAlive</Response><Result>OK</Result><DevTime>2026-08-29-T10:30:20Z</DevTime><ServerTime>2026-08-29-T10:30:00Z</ServerTime></Message>"
        )]
    );
    // A punch without UtcTimezoneMinutes is read at that offset.
    let mut bytes = b"<Message><Event>TimeLog_v2</Event><UserID>3</UserID><Time>2026-08-29-T10:29:00Z</Time><TransID>1</TransID></Message>".to_vec();
    assert_eq!(
        record_of(&s.on_frame(&mut bytes, now())),
        &json!({"enrollid": 3, "time": "2026-08-29 10:29:00", "utc_offset_minutes": 330})
    );
}

/// A terminal whose clock drifts beyond `clock::MAX_DRIFT` is reported once (`clock_drift`) and,
/// with a configured zone, set again as soon as nothing else is outstanding.
#[test]
fn a_drifting_clock_is_reported_and_set() {
    let mut s = ready();
    let keepalive =
        |t: &str| format!("<Message><Event>KeepAlive</Event><DevTime>{t}</DevTime></Message>");
    let out = feed(&mut s, &keepalive("2026-08-29-T07:00:00Z"));
    assert_eq!(
        out[0],
        r#"event clock_drift {"device_time":"2026-08-29 07:00:00","expected":"2026-08-29 08:00:00","drift_seconds":-3600,"zone":"fixed"}"#
    );
    assert!(out[1].contains("<Response>KeepAlive</Response>"));
    assert_eq!(out[2..], [set_time_request()]);
    // Reported once while it stays off.
    assert_eq!(feed(&mut s, &keepalive("2026-08-29-T07:00:00Z")).len(), 1);
    // Busy when it drifts again: the clock is set once the command is done.
    feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    assert_eq!(feed(&mut s, &keepalive(DEVICE_NOW)).len(), 1);
    start(&mut s, "reboot", OwnedValue::null()).expect("reboot starts");
    let out = feed(&mut s, &keepalive("2026-08-29-T08:05:00Z"));
    assert_eq!(out.len(), 2);
    feed(&mut s, &vendor("Response", "Restart", &[("Result", "OK")]));
    assert_eq!(resume(&mut s), [set_time_request()]);
}

#[test]
fn a_silent_setup_is_abandoned_without_a_command_result() {
    let mut s = logged_in(0);
    assert_eq!(s.deadline(), Some(now() + 5.seconds()));
    assert!(show(&s.on_tick(now() + 4.seconds())).is_empty());
    assert!(show(&s.on_tick(now() + 5.seconds())).is_empty());
    assert!(s.is_idle());
    assert_eq!(s.deadline(), None);
}

#[test]
fn lock_control_is_answered_by_its_reply_between_events() {
    let mut s = ready();
    assert_eq!(
        start(&mut s, "open_door", json!({})).unwrap(),
        [send(&vendor("Request", "LockControl", &[("Mode", "1")]))]
    );
    assert!(!s.is_idle());
    assert_eq!(
        start(&mut s, "reboot", OwnedValue::null()),
        Err(CommandError::Busy)
    );
    // A punch in between is stored and acknowledged as usual, and does not answer the command.
    let punch = feed(&mut s, TIMELOG_V2);
    assert!(punch[0].starts_with("store {") && punch[0].contains("<TransID>tx-7</TransID>"));
    assert!(
        feed(
            &mut s,
            "<Message><Event>KeepAlive</Event><DevTime>t</DevTime></Message>"
        )[0]
        .starts_with("send")
    );
    // Nor does a Register the terminal repeats.
    assert_eq!(feed(&mut s, REGISTER).len(), 1);
    assert_eq!(
        feed(
            &mut s,
            "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Response>LockControl</Response>\r\n\t<Result>OK</Result>\r\n</Message>"
        ),
        [r#"done c1 ok=true {"Response":"LockControl","Result":"OK"}"#]
    );
    assert!(s.is_idle());
    // A reply nobody waits for is dropped.
    assert!(
        feed(
            &mut s,
            &vendor("Response", "LockControl", &[("Result", "OK")])
        )
        .is_empty()
    );
}

#[test]
fn failed_and_verdictless_replies() {
    let mut s = ready();
    start(&mut s, "open_door", json!({"mode": 4})).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "LockControl", &[("Result", "Device Not Ready")])
        ),
        [r#"done c1 ok=false {"Response":"LockControl","Result":"Device Not Ready"}"#]
    );
    start(&mut s, "GetTime", OwnedValue::null()).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetTime", &[("Time", "2026-08-29-T08:00:00Z")])
        ),
        [r#"done c1 ok=true {"Response":"GetTime","Time":"2026-08-29-T08:00:00Z"}"#]
    );
    start(
        &mut s,
        "RemoteEnroll",
        json!({"UserID": 5, "Backup": "RemoteEnrollFace"}),
    )
    .unwrap();
    assert!(
        feed(
            &mut s,
            &vendor(
                "Response",
                "RemoteEnroll",
                &[("ResultCode", "FaceAlreadyEnrolled")]
            )
        )[0]
        .starts_with("done c1 ok=false")
    );
    // A frame carrying only a Result answers nothing: F500 firmware acknowledges the server's
    // previous reply that way.
    start(&mut s, "reboot", OwnedValue::null()).unwrap();
    assert!(feed(&mut s, "<Message><Result>OK</Result></Message>").is_empty());
    assert!(!s.is_idle());
}

#[test]
fn a_command_times_out_and_a_late_reply_is_ignored() {
    let mut s = ready();
    let at = now();
    s.start_command("c9", "reboot", &OwnedValue::null(), at)
        .unwrap();
    assert!(s.on_tick(at + 4999.milliseconds()).is_empty());
    assert_eq!(
        show(&s.on_tick(at + 5.seconds())),
        [r#"done c9 ok=false {"error":"timeout"}"#]
    );
    assert!(s.on_tick(at + 6.seconds()).is_empty());
    // Outstanding for its late reply, which is consumed as its own.
    assert!(!s.is_idle());
    assert!(feed(&mut s, &vendor("Response", "Restart", &[("Result", "OK")])).is_empty());
    assert!(s.is_idle());
    // The timeout is the constructor's.
    let mut s = Session::new(Duration::from_millis(250), 0);
    feed(&mut s, &login("t"));
    answer(&mut s, known(Some("t"), 0));
    assert_eq!(s.deadline(), Some(now() + 250.milliseconds()));
}

/// Logged in with the server's timeouts, setup finished.
fn ready_with_vendor_timeouts() -> Session {
    let mut s = Session::new(Timeouts::VENDOR, SEED);
    feed(&mut s, REGISTER);
    answer(&mut s, known(None, 0));
    feed(&mut s, &login(FRESH_TOKEN));
    answer(&mut s, known(Some(FRESH_TOKEN), 0));
    feed(&mut s, &vendor("Response", "SetTime", &[("Result", "OK")]));
    feed(
        &mut s,
        &vendor("Response", "GetFirstGlog", &[("Result", "Fail")]),
    );
    assert!(s.is_idle());
    s
}

#[test]
fn each_command_waits_as_long_as_what_it_asks_takes() {
    let mut s = ready_with_vendor_timeouts();
    let mut at = now();
    // (command, payload, the vendor sample whose timeout it gets): C# 5 s for what the terminal
    // answers from memory, PHP 30 s for user data, enrolment, photos and walks.
    for (command, payload, wait) in [
        ("open_door", OwnedValue::null(), 5),
        ("set_time", OwnedValue::null(), 5),
        ("GetDeviceInfo", json!({"ParamName": "ManagersNumber"}), 5),
        ("set_user", json!({"enrollid": 7, "name": "Ann"}), 30),
        ("delete_user", json!({"enrollid": 7}), 30),
        (
            "RemoteEnroll",
            json!({"UserID": 7, "Backup": "RemoteEnrollFace"}),
            30,
        ),
        (
            "EnrollFaceByPhoto",
            json!({"UserID": 7, "PhotoSize": 4, "PhotoData": "/9j/"}),
            30,
        ),
        ("get_users", OwnedValue::null(), 30),
        ("fetch_logs", OwnedValue::null(), 30),
        (
            "raw",
            json!({"xml": "<Message><Request>GetTime</Request></Message>"}),
            30,
        ),
    ] {
        assert!(s.is_idle(), "{command}");
        s.start_command("c", command, &payload, at).unwrap();
        assert!(
            s.on_tick(at + (wait * 1000 - 1).milliseconds()).is_empty(),
            "{command}"
        );
        at += wait.seconds();
        assert_eq!(
            show(&s.on_tick(at)),
            [r#"done c ok=false {"error":"timeout"}"#],
            "{command}"
        );
        // No late reply: the wait for it ends as long again after.
        at += wait.seconds();
        assert!(s.on_tick(at).is_empty());
    }
    // Photo enrolment answered after 20 s is the command's answer.
    s.start_command(
        "photo",
        "EnrollFaceByPhoto",
        &json!({"UserID": 7, "PhotoData": "/9j/"}),
        at,
    )
    .unwrap();
    assert!(s.on_tick(at + 20.seconds()).is_empty());
    assert_eq!(
        feed_at(
            &mut s,
            &vendor("Response", "EnrollFaceByPhoto", &[("Result", "OK")]),
            at + 20.seconds()
        ),
        [r#"done photo ok=true {"Response":"EnrollFaceByPhoto","Result":"OK"}"#]
    );
}

#[test]
fn a_late_reply_is_not_taken_for_the_next_command() {
    let mut s = ready_with_vendor_timeouts();
    let at = now();
    let user = |id: u64| json!({"enrollid": id, "name": "Ann"});
    s.start_command("u1", "set_user", &user(1), at).unwrap();
    assert_eq!(
        show(&s.on_tick(at + 30.seconds())),
        [r#"done u1 ok=false {"error":"timeout"}"#]
    );
    // Replies carry no id and come in order: the next user waits for the first one's reply...
    assert!(matches!(
        s.start_command("u2", "set_user", &user(2), at + 31.seconds()),
        Err(CommandError::Busy)
    ));
    // ...which is consumed as the first one's.
    let fail = vendor("Response", "SetUserData", &[("Result", "Fail")]);
    assert!(feed_at(&mut s, &fail, at + 40.seconds()).is_empty());
    assert!(s.is_idle());
    assert_eq!(
        s.start_command("u2", "set_user", &user(2), at + 40.seconds())
            .map(|a| a.len()),
        Ok(1)
    );
    assert_eq!(
        feed_at(
            &mut s,
            &vendor("Response", "SetUserData", &[("Result", "OK")]),
            at + 41.seconds()
        ),
        [r#"done u2 ok=true {"Response":"SetUserData","Result":"OK"}"#]
    );
}

#[test]
fn commands_are_checked_before_anything_is_sent() {
    let mut s = ready();
    let invalid = |r: Result<Vec<String>, CommandError>| matches!(r, Err(CommandError::Invalid(_)));
    assert!(invalid(start(&mut s, "dance", json!({}))));
    assert!(invalid(start(&mut s, "open_door", json!({"mode": 9}))));
    assert!(invalid(start(&mut s, "set_user", json!({"name": "no id"}))));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": 1, "name": "x".repeat(25)})
    )));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": 1, "card": 1u64 << 32})
    )));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": 1, "password": "12a"})
    )));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": 1, "period_start": "2026-01-01"})
    )));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": 1, "timesets": [50]})
    )));
    assert!(invalid(start(
        &mut s,
        "set_user",
        json!({"enrollid": "a<b"})
    )));
    assert!(invalid(start(&mut s, "delete_user", json!({}))));
    assert!(invalid(start(&mut s, "set_time", json!({"time": "noon"}))));
    assert!(invalid(start(
        &mut s,
        "fetch_logs",
        json!({"from_position": 3, "enrollid": 1})
    )));
    assert!(invalid(start(&mut s, "raw", json!({}))));
    assert!(invalid(start(
        &mut s,
        "GetDeviceInfo",
        json!({"Param Name": "x"})
    )));
    assert!(invalid(start(
        &mut s,
        "GetDeviceInfo",
        json!({"ParamName": ["x"]})
    )));
    assert!(invalid(start(&mut s, "GetDeviceInfo", json!("ParamName"))));
    assert!(invalid(start(&mut s, "Get<Time>", json!({}))));
    assert!(s.is_idle(), "a refused command leaves the session idle");
}

#[test]
fn set_user_packs_name_card_and_period() {
    let mut s = ready();
    let sent = start(
        &mut s,
        "set_user",
        json!({"enrollid": 42, "name": "Ana", "privilege": "manager", "depart": 2, "enabled": false, "timesets": [1, 2], "period_start": "2026-01-01", "period_end": "2026-12-31", "card": 123456, "password": "0123"}),
    )
    .unwrap();
    assert_eq!(
        sent,
        [send(&vendor(
            "Request",
            "SetUserData",
            &[
                ("UserID", "42"),
                ("Type", "Set"),
                ("Name", &values::encode_name("Ana").unwrap()),
                ("Depart", "2"),
                ("Privilege", "Manager"),
                ("Enabled", "No"),
                ("TimeSet1", "1"),
                ("TimeSet2", "2"),
                ("UserPeriod_Used", "Yes"),
                ("UserPeriod_Start", &((26 << 16) + (1 << 8) + 1).to_string()),
                ("UserPeriod_End", &((26 << 16) + (12 << 8) + 31).to_string()),
                ("Card", "QOIBAA=="),
                ("PWD", "0123"),
            ]
        ))]
    );
    assert_eq!(
        feed(
            &mut s,
            &vendor(
                "Response",
                "SetUserData",
                &[("Result", "OK"), ("Type", "Set")]
            )
        ),
        [r#"done c1 ok=true {"Response":"SetUserData","Result":"OK","Type":"Set"}"#]
    );
    // Defaults: a plain enabled user, period unused (today, as the vendor sends it).
    let today = ((26 << 16) + (8 << 8) + 29).to_string();
    assert_eq!(
        start(&mut s, "set_user", json!({"enrollid": "7"})).unwrap(),
        [send(&vendor(
            "Request",
            "SetUserData",
            &[
                ("UserID", "7"),
                ("Type", "Set"),
                ("Depart", "0"),
                ("Privilege", "User"),
                ("Enabled", "Yes"),
                ("UserPeriod_Used", "No"),
                ("UserPeriod_Start", &today),
                ("UserPeriod_End", &today),
            ]
        ))]
    );
}

#[test]
fn delete_user_reboot_set_time_and_native_commands() {
    let cases: [(&str, OwnedValue, String); 6] = [
        (
            "delete_user",
            json!({"enrollid": 42}),
            vendor(
                "Request",
                "SetUserData",
                &[("UserID", "42"), ("Type", "Delete")],
            ),
        ),
        (
            "reboot",
            OwnedValue::null(),
            vendor("Request", "Restart", &[]),
        ),
        (
            "set_time",
            json!({}),
            vendor("Request", "SetTime", &[("Time", DEVICE_NOW)]),
        ),
        (
            "set_time",
            json!({"time": "2026-1-2 3:04:05"}),
            vendor("Request", "SetTime", &[("Time", "2026-01-02-T03:04:05Z")]),
        ),
        (
            "GetDeviceStatus",
            json!({"ParamName": "UserCount"}),
            vendor("Request", "GetDeviceStatus", &[("ParamName", "UserCount")]),
        ),
        (
            "EnableDevice",
            json!({"Enable": false, "Level": 2, "Note": "a&b"}),
            vendor(
                "Request",
                "EnableDevice",
                &[("Enable", "No"), ("Level", "2"), ("Note", "a&amp;b")],
            ),
        ),
    ];
    for (command, payload, frame) in cases {
        let mut s = ready();
        assert_eq!(
            start(&mut s, command, payload).unwrap(),
            [send(&frame)],
            "{command}"
        );
    }
}

#[test]
fn raw_is_sent_verbatim_and_answered_by_the_reply_naming_it() {
    let mut s = ready();
    let xml = "<Message><Request>GetDeviceInfoAll</Request></Message>";
    assert_eq!(
        start(&mut s, "raw", json!({"xml": xml})).unwrap(),
        [send(xml)]
    );
    assert!(feed(&mut s, TIMELOG_V2)[0].starts_with("store "));
    assert_eq!(
        feed(
            &mut s,
            "<Message><Response>GetDeviceInfoAll</Response><Language>0</Language><Result>OK</Result></Message>"
        ),
        [r#"done c1 ok=true {"Response":"GetDeviceInfoAll","Language":"0","Result":"OK"}"#]
    );
}

#[test]
fn get_users_walks_until_more_is_no() {
    let mut s = ready();
    assert_eq!(
        start(&mut s, "get_users", json!({})).unwrap(),
        [send(&vendor("Request", "GetFirstUserData", &[]))]
    );
    let user = |id: &str, more: &str| {
        vendor(
            "Response",
            "GetNextUserDataExt",
            &[
                ("UserID", id),
                ("Privilege", "User"),
                ("Enabled", "Yes"),
                ("More", more),
                ("Result", "OK"),
            ],
        )
    };
    assert_eq!(
        feed(&mut s, &user("1", "Yes")),
        [send(&vendor(
            "Request",
            "GetNextUserDataExt",
            &[("UserID", "1")]
        ))]
    );
    assert_eq!(
        feed(&mut s, &user("2", "Yes")),
        [send(&vendor(
            "Request",
            "GetNextUserDataExt",
            &[("UserID", "2")]
        ))]
    );
    assert_eq!(
        feed(&mut s, &user("3", "No")),
        [
            r#"done c1 ok=true {"users":[{"enrollid":1,"privilege":"User","enabled":true},{"enrollid":2,"privilege":"User","enabled":true},{"enrollid":3,"privilege":"User","enabled":true}]}"#
        ]
    );
    // A terminal that repeats the user it was asked about ends the walk.
    start(&mut s, "get_users", json!({})).unwrap();
    feed(&mut s, &user("1", "Yes"));
    assert!(feed(&mut s, &user("1", "Yes"))[0].starts_with("done c1 ok=true"));
    // An empty terminal answers the first request with Fail; other results are errors.
    start(&mut s, "get_users", json!({})).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetFirstUserData", &[("Result", "Fail")])
        ),
        [r#"done c1 ok=true {"users":[]}"#]
    );
    start(&mut s, "get_users", json!({})).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &vendor(
                "Response",
                "GetFirstUserData",
                &[("Result", "Device Not Ready")]
            )
        ),
        [r#"done c1 ok=false {"error":"Device Not Ready"}"#]
    );
}

#[test]
fn get_users_for_one_id() {
    let mut s = ready();
    assert_eq!(
        start(&mut s, "get_users", json!({"enrollid": 42})).unwrap(),
        [send(&vendor("Request", "GetUserData", &[("UserID", "42")]))]
    );
    assert_eq!(
        feed(
            &mut s,
            &vendor(
                "Response",
                "GetUserData",
                &[
                    ("UserID", "42"),
                    ("Card", "QOIBAA=="),
                    ("More", "Yes"),
                    ("Result", "OK")
                ]
            )
        ),
        [r#"done c1 ok=true {"users":[{"enrollid":42,"card":123456}]}"#]
    );
    start(&mut s, "get_users", json!({"user_id": "A7"})).unwrap();
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetUserData", &[("Result", "Fail")])
        ),
        [r#"done c1 ok=false {"error":"Fail"}"#]
    );
}

#[test]
fn fetch_logs_stores_every_log_and_reports_the_count() {
    let mut s = ready();
    assert_eq!(
        start(&mut s, "fetch_logs", json!({"enrollid": 7, "start_time": "2026-08-01 00:00:00", "end_time": "2026-8-31-T23:59:59Z"})).unwrap(),
        [send(&vendor(
            "Request",
            "GetFirstGlog",
            &[("BeginLogPos", "0"), ("UserID", "7"), ("StartTime", "2026-08-01-T00:00:00Z"), ("EndTime", "2026-08-31-T23:59:59Z")]
        ))]
    );
    let log = |id: &str| {
        vendor(
            "Response",
            "GetFirstGlog",
            &[
                ("LogID", id),
                ("UserID", "7"),
                ("Time", "2026-08-02-T09:00:00Z"),
                ("Result", "OK"),
            ],
        )
    };
    let actions = feed(&mut s, &log("10"));
    assert!(
        actions[0].starts_with("store {\"enrollid\":7")
            && actions[0].ends_with("stored=None failed=None")
    );
    assert_eq!(
        actions[1],
        send(&vendor("Request", "GetNextGlog", &[("BeginLogPos", "11")]))
    );
    assert_eq!(
        feed(&mut s, &log("12"))[1],
        send(&vendor("Request", "GetNextGlog", &[("BeginLogPos", "13")]))
    );
    // No SavePosition: the backfill's bookkeeping is not the operator's.
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetNextGlog", &[("Result", "Fail")])
        ),
        [r#"done c1 ok=true {"records":2,"next_position":13}"#]
    );
    // From a position; an error ends the walk as failed.
    assert_eq!(
        start(&mut s, "fetch_logs", json!({"from_position": 500})).unwrap(),
        [send(&vendor(
            "Request",
            "GetNextGlog",
            &[("BeginLogPos", "500")]
        ))]
    );
    assert_eq!(
        feed(
            &mut s,
            &vendor("Response", "GetNextGlog", &[("Result", "Invalid Param")])
        ),
        [r#"done c1 ok=false {"error":"Invalid Param"}"#]
    );
}

#[test]
fn native_log_requests_store_what_they_fetch() {
    let mut s = ready();
    start(&mut s, "GetNextGlog", json!({"BeginLogPos": 3})).unwrap();
    let actions = feed(
        &mut s,
        &vendor(
            "Response",
            "GetNextGlog",
            &[
                ("LogID", "3"),
                ("UserID", "9"),
                ("Time", "2026-08-02-T09:00:00Z"),
                ("Result", "OK"),
            ],
        ),
    );
    assert!(actions[0].starts_with("store {\"enrollid\":9"));
    assert!(
        actions[1].starts_with("done c1 ok=true {\"Response\":\"GetNextGlog\",\"LogID\":\"3\"")
    );
}

#[test]
fn the_setup_runs_once_per_connection() {
    let mut s = ready();
    feed(&mut s, &login(FRESH_TOKEN));
    assert_eq!(
        answer(&mut s, known(Some(FRESH_TOKEN), 0)),
        [send(&vendor(
            "Response",
            "Login",
            &[("DeviceSerialNo", "M82-0001"), ("Result", "OK")]
        ))]
    );
    assert!(s.is_idle());
}

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
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
fn garbage_never_panics() {
    let seeds = [
        REGISTER.to_owned(),
        TIMELOG_V2.to_owned(),
        login(FRESH_TOKEN),
        vendor("Response", "GetNextGlog", &[("LogID", "18446744073709551615"), ("Time", "2026-9-6-T8:55:20Z"), ("Result", "OK")]),
        vendor("Response", "GetNextUserDataExt", &[("UserID", "1"), ("Name", "!!"), ("Card", "AQ"), ("Fingers", "4294967295"), ("UserPeriod_Used", "Yes"), ("UserPeriod_Start", "4294967295"), ("More", "Yes"), ("Result", "OK")]),
        "<Request><Operation>TimeLog_v2</Operation><LogId>1</LogId><BodyTemperature100>-99999999999999999999</BodyTemperature100></Request>".to_owned(),
    ];
    let tokens = [
        "<",
        ">",
        "</",
        "/>",
        "&",
        "&#",
        "&#x110000;",
        "&amp;",
        "<![CDATA[",
        "]]>",
        "<?",
        "?>",
        "<!--",
        "-->",
        "<!DOCTYPE x [<!ENTITY a \"b\">]>",
        "<Message>",
        "</Message>",
        "<Event>",
        "<Response>",
        "<Request>",
        "Reuqest",
        "\u{0}",
        "\u{feff}",
        "é",
        "\r\n\t",
        "\"",
        "'",
        "=",
    ];
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut s = if round % 3 == 0 {
            ready()
        } else {
            logged_in(round as u64)
        };
        if round % 5 == 0 {
            s.start_command(
                "c",
                ["get_users", "fetch_logs", "open_door", "raw"][round % 4],
                &json!({"xml": "<x/>"}),
                now(),
            )
            .ok();
        }
        let mut frame = seeds[noise.below(seeds.len())].clone().into_bytes();
        for _ in 0..=noise.below(8) {
            match noise.below(4) {
                0 if !frame.is_empty() => {
                    let at = noise.below(frame.len());
                    frame[at] = noise.next() as u8;
                }
                1 if !frame.is_empty() => frame.truncate(noise.below(frame.len())),
                _ => {
                    let at = noise.below(frame.len() + 1);
                    let token = tokens[noise.below(tokens.len())].as_bytes();
                    frame.splice(at..at, token.iter().copied());
                }
            }
        }
        s.on_frame(&mut frame, now());
        s.on_identity(known(None, u64::MAX), now());
        s.on_tick(Timestamp::MAX);
    }
    // Pure noise, and deep nesting.
    for _ in 0..2_000 {
        let mut s = ready();
        let mut frame: Vec<u8> = (0..noise.below(300)).map(|_| noise.next() as u8).collect();
        s.on_frame(&mut frame, now());
    }
    let mut s = ready();
    let mut deep = "<Message>".repeat(100_000).into_bytes();
    assert!(s.on_frame(&mut deep, now()).is_empty());
}
