//! Translating an operator's command (a neutral name, a native name or `raw`) into the native
//! request and what finishes it. Validation happens here, before anything reaches the terminal,
//! so a bad payload is the operator's `Invalid` rather than a terminal's `"reason":1`.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use simd_json::OwnedValue;
use simd_json::prelude::*;

use super::frame::{Obj, as_u64};
use super::{Collect, DEVICE_MESSAGES, MAX_BACKUPNUM, is_person};
use crate::clock::Clock;
use crate::terminal::{CommandError, Wait};

/// `setusername` takes fewer than 50 records per request (§3.4).
const MAX_SETUSERNAME: usize = 49;
/// `setuserlock` takes at most 40 records per request (§3.4).
const MAX_SETUSERLOCK: usize = 40;

/// Commands that erase data on the terminal: they run only with `"confirm": true`.
const DESTRUCTIVE: &[&str] = &[
    "cleanlog",
    "initsys",
    "cleanuser",
    "cleanadmin",
    "cleanuserlock",
];

/// Native commands sent as the payload says, one request and one reply (§3.4).
const PASS_THROUGH: &[&str] = &[
    "getuserinfo",
    "setuserinfo",
    "deleteuser",
    "getusername",
    "setusername",
    "enableuser",
    "opendoor",
    "gettime",
    "getdevinfo",
    "setdevinfo",
    "getdevlock",
    "setdevlock",
    "getuserlock",
    "setuserlock",
    "deleteuserlock",
    "getquestionnaire",
    "setquestionnaire",
    "getholiday",
    "setholiday",
    "enabledevice",
    "disabledevice",
];

/// Requests the terminal answers from memory (a door, its clock, a setting, one name or lock
/// record): `Wait::Quick`. Everything else waits long: user data and templates written or read
/// (`setuserinfo` with a photo makes the terminal compute a face template first), batches,
/// wipes, pages, and names this list does not know.
const QUICK: &[&str] = &[
    "opendoor",
    "settime",
    "gettime",
    "getdevinfo",
    "setdevinfo",
    "getusername",
    "enableuser",
    "getdevlock",
    "setdevlock",
    "getuserlock",
    "deleteuserlock",
    "getquestionnaire",
    "setquestionnaire",
    "getholiday",
    "setholiday",
    "enabledevice",
    "disabledevice",
];

/// How long the request named `name` may take the terminal.
pub(super) fn wait_for(name: &str) -> Wait {
    if QUICK.contains(&name) {
        Wait::Quick
    } else {
        Wait::Long
    }
}

/// Whether `name` is a command this server sends (so a frame carrying it as `cmd` is a reply that
/// echoes its name, not a message of the terminal's own).
pub(super) fn is_server_command(name: &str) -> bool {
    const OTHERS: &[&str] = &["reboot", "settime", "getuserlist", "getnewlog", "getalllog"];
    [PASS_THROUGH, DESTRUCTIVE, OTHERS]
        .iter()
        .any(|names| names.contains(&name))
}

type Fields = simd_json::owned::Object;

/// What starting a command sends and how it finishes.
pub(super) enum Plan {
    /// Sent with no reply to wait for (`reboot`: the terminal restarts at once).
    Fire(String),
    /// Sent; the reply named `name` finishes the command, or pages on when `collect` says what
    /// the pages gather. `wait`: how long each reply may take.
    Request {
        name: String,
        frame: String,
        collect: Option<Collect>,
        wait: Wait,
    },
}

fn invalid(msg: impl Into<String>) -> CommandError {
    CommandError::Invalid(msg.into())
}

fn single(name: &str, frame: String) -> Plan {
    Plan::Request {
        name: name.to_string(),
        frame,
        collect: None,
        wait: wait_for(name),
    }
}

pub(super) fn plan(
    command: &str,
    payload: &OwnedValue,
    clock: &Clock,
    now: Timestamp,
) -> Result<Plan, CommandError> {
    // A command without a payload arrives as `null`; every payload is an object of fields.
    let empty = Fields::new();
    let fields = match payload.as_object() {
        Some(f) => f,
        None if payload.is_null() => &empty,
        None => return Err(invalid("the payload must be a JSON object")),
    };
    match command {
        "open_door" => {
            let door = match u64_field(fields, "door")? {
                Some(d) => Some(d),
                None => u64_field(fields, "doornum")?,
            };
            let door = door.unwrap_or(1);
            if !(1..=4).contains(&door) {
                return Err(invalid("door must be 1 to 4"));
            }
            Ok(single(
                "opendoor",
                Obj::new()
                    .str("cmd", "opendoor")
                    .num("doornum", door)
                    .done(),
            ))
        }
        "reboot" => Ok(Plan::Fire(Obj::new().str("cmd", "reboot").done())),
        "set_time" | "settime" => {
            let given = match str_field(fields, "time")? {
                Some(t) => Some(t),
                None => str_field(fields, "cloudtime")?,
            };
            let time = match given {
                Some(t) => DateTime::strptime("%Y-%m-%d %H:%M:%S", t)
                    .map_err(|_| {
                        invalid(format!(
                            "time {t:?} is not YYYY-MM-DD HH:MM:SS (the terminal's local time)"
                        ))
                    })?
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string(),
                // The clock rule's wall time, as `cloudtime` in every answer gives it.
                None => clock
                    .wall_or_utc(now)
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string(),
            };
            Ok(single(
                "settime",
                Obj::new()
                    .str("cmd", "settime")
                    .str("cloudtime", &time)
                    .done(),
            ))
        }
        "get_users" | "getuserlist" => Ok(Plan::Request {
            name: "getuserlist".into(),
            frame: Obj::new()
                .str("cmd", "getuserlist")
                .bool("stn", true)
                .done(),
            collect: Some(Collect::Users(Vec::new())),
            wait: Wait::Long,
        }),
        "set_user" => set_user(fields),
        "delete_user" => {
            let enrollid = enrollid(fields)?;
            // 13 = all of the user's data (§3.4); 0–9 one finger, 10 password, 11 card, 12 all fingers.
            let backupnum = u64_field(fields, "backupnum")?.unwrap_or(13);
            if backupnum > u64::from(MAX_BACKUPNUM) {
                return Err(invalid(
                    "backupnum must be 0 to 99 (13 = all of the user's data)",
                ));
            }
            let frame = Obj::new()
                .str("cmd", "deleteuser")
                .num("enrollid", enrollid)
                .num("backupnum", backupnum)
                .done();
            Ok(single("deleteuser", frame))
        }
        "fetch_logs" => {
            let all = match fields.get("all") {
                None => false,
                Some(a) => a
                    .as_bool()
                    .ok_or_else(|| invalid("all must be true or false"))?,
            };
            logs(if all { "getalllog" } else { "getnewlog" }, fields)
        }
        "getnewlog" | "getalllog" => logs(command, fields),
        "raw" => raw(fields),
        _ if DESTRUCTIVE.contains(&command) => {
            confirmed(command, fields)?;
            Ok(single(command, Obj::new().str("cmd", command).done()))
        }
        _ if PASS_THROUGH.contains(&command) => {
            let limit = match command {
                "setusername" => Some(MAX_SETUSERNAME),
                "setuserlock" => Some(MAX_SETUSERLOCK),
                _ => None,
            };
            if let Some(max) = limit
                && fields
                    .get("record")
                    .and_then(|r| r.as_array())
                    .is_some_and(|r| r.len() > max)
            {
                return Err(invalid(format!(
                    "{command} takes at most {max} records per request"
                )));
            }
            Ok(single(command, native(command, fields)))
        }
        _ => Err(invalid(format!(
            "unknown command {command:?}: use open_door, reboot, set_time, get_users, set_user, delete_user, fetch_logs, \
             a native AiFace command, or raw"
        ))),
    }
}

/// `set_user` → `setuserinfo` with the keys in §3.4's order. `backupnum` says what `record` is:
/// 0–9 a fingerprint template, 10 a password, 11 a card number, 20–27 a face, 50 a base64 photo.
fn set_user(fields: &Fields) -> Result<Plan, CommandError> {
    let enrollid = enrollid(fields)?;
    let backupnum = u64_field(fields, "backupnum")?
        .ok_or_else(|| invalid("backupnum is required: what record is (0–9 fingerprint, 10 password, 11 card, 50 photo)"))?;
    if backupnum > u64::from(MAX_BACKUPNUM) {
        return Err(invalid("backupnum must be 0 to 99"));
    }
    let admin = u64_field(fields, "admin")?.unwrap_or(0);
    if admin > 2 {
        return Err(invalid(
            "admin must be 0 (user), 1 (administrator) or 2 (super user)",
        ));
    }
    let record = match fields.get("record") {
        Some(r) if r.is_str() || r.is_u64() => r,
        _ => {
            return Err(invalid(
                "record is required: the credential as a string (or a card number)",
            ));
        }
    };
    let mut frame = Obj::new()
        .str("cmd", "setuserinfo")
        .num("enrollid", enrollid);
    if let Some(name) = str_field(fields, "name")? {
        frame = frame.str("name", name);
    }
    let frame = frame
        .num("backupnum", backupnum)
        .num("admin", admin)
        .value("record", record)
        .done();
    Ok(single("setuserinfo", frame))
}

/// `getnewlog` / `getalllog` paging; `getalllog` may be limited to dates (`from`, `to`).
fn logs(name: &str, fields: &Fields) -> Result<Plan, CommandError> {
    let mut frame = Obj::new().str("cmd", name).bool("stn", true);
    if name == "getalllog" {
        for key in ["from", "to"] {
            if let Some(d) = str_field(fields, key)? {
                if !is_date(d) {
                    return Err(invalid(format!("{key} must be a date YYYY-MM-DD")));
                }
                frame = frame.str(key, d);
            }
        }
    }
    Ok(Plan::Request {
        name: name.to_string(),
        frame: frame.done(),
        collect: Some(Collect::Logs(0)),
        wait: Wait::Long,
    })
}

/// `raw`: the payload is the native message. Its reply is matched by its `cmd`, so it must not be
/// a name the terminal itself sends; destructive ones need `confirm` like their named forms.
fn raw(fields: &Fields) -> Result<Plan, CommandError> {
    let Some(name) = fields.get("cmd").and_then(|c| c.as_str()) else {
        return Err(invalid(
            "raw takes the native message as the payload: an object with \"cmd\"",
        ));
    };
    if name.is_empty() || DEVICE_MESSAGES.contains(&name) {
        return Err(invalid(format!(
            "raw cannot send {name:?}: its reply could not be told from the terminal's own messages"
        )));
    }
    if DESTRUCTIVE.contains(&name) {
        confirmed(name, fields)?;
    }
    let frame = native(name, fields);
    Ok(if name == "reboot" {
        Plan::Fire(frame)
    } else {
        single(name, frame)
    })
}

/// `{"cmd":name, …fields}`. `confirm` is the gateway's own flag and never reaches the terminal.
fn native(name: &str, fields: &Fields) -> String {
    fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cmd" | "confirm"))
        .fold(Obj::new().str("cmd", name), |frame, (k, v)| {
            frame.value(k, v)
        })
        .done()
}

fn confirmed(name: &str, fields: &Fields) -> Result<(), CommandError> {
    match fields.get("confirm").and_then(|c| c.as_bool()) {
        Some(true) => Ok(()),
        _ => Err(invalid(format!(
            "{name} erases data on the terminal: send it with \"confirm\": true"
        ))),
    }
}

/// The user a command is about: a person's id, not the ids reserved for door events (0) and
/// unknown faces (99999999).
fn enrollid(fields: &Fields) -> Result<u64, CommandError> {
    match u64_field(fields, "enrollid")? {
        None => Err(invalid("enrollid is required")),
        Some(id) if is_person(id) => Ok(id),
        Some(_) => Err(invalid(
            "enrollid 0 and 99999999 are reserved by the terminal",
        )),
    }
}

fn u64_field(fields: &Fields, key: &str) -> Result<Option<u64>, CommandError> {
    match fields.get(key) {
        None => Ok(None),
        Some(v) => as_u64(v)
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a non-negative integer"))),
    }
}

fn str_field<'f>(fields: &'f Fields, key: &str) -> Result<Option<&'f str>, CommandError> {
    match fields.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a string"))),
    }
}

/// A date as `getalllog` takes it: `2018-11-1` (unpadded parts allowed, as §3.4's example).
fn is_date(s: &str) -> bool {
    let mut parts = s.split('-').map(|p| p.parse::<i64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(y)), Some(Some(m)), Some(Some(d)), None) => {
            match (i16::try_from(y), i8::try_from(m), i8::try_from(d)) {
                (Ok(y), Ok(m), Ok(d)) => Date::new(y, m, d).is_ok(),
                _ => false,
            }
        }
        _ => false,
    }
}
