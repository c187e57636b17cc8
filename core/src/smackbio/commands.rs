//! Turning a queued command (protocol-neutral name, native name, or `raw`) into the first request
//! frame and the plan for its replies. Everything an operator can get wrong is caught here, before
//! anything is sent.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use simd_json::OwnedValue;
use simd_json::prelude::*;

use super::values::{self, MAX_NAME_UNITS};
use super::xml::Dialect;
use crate::clock::Clock;
use crate::terminal::{CommandError, Wait};

/// Largest `raw` message accepted (the runtime's frame cap).
const MAX_RAW: usize = 1 << 20;

/// What to do with the replies of a started command.
#[derive(Debug)]
pub(super) enum Op {
    /// One request; its reply is the result. `store_log`: the reply is a time log
    /// (`GetFirstGlog` / `GetNextGlog`), stored as well so nothing fetched is lost.
    Single { store_log: bool },
    /// `get_users`: one `GetUserData`, or the walk `GetFirstUserData` → `GetNextUserDataExt`
    /// (previous `UserID`) while `More` is `Yes`. Users are kept as JSON text; `asked` is the
    /// `UserID` the walk last sent.
    Users {
        walk: bool,
        users: Vec<String>,
        asked: Option<String>,
    },
    /// `fetch_logs`: `GetFirstGlog` (or `GetNextGlog` from a position) → `GetNextGlog`
    /// (`LogID` + 1) until `Result` is `Fail`. Each log is stored; `records` counts them and `pos`
    /// is the position last asked for.
    Logs { records: u64, pos: u64 },
}

/// A command ready to go: the frame to send, what its replies mean, and how long the first may
/// take.
#[derive(Debug)]
pub(super) struct Planned {
    pub frame: String,
    pub op: Op,
    pub wait: Wait,
}

/// Requests the terminal answers from memory (its lock, clock, settings and status, one small
/// user field): `Wait::Quick`. Everything else waits long: user data with photos and templates
/// (`SetUserData`, `SetUserPhoto`, `EnrollFaceByPhoto`, `SetFaceData`, `RemoteEnroll` …), their
/// reads, log walks (a log may carry its `LogImage`), wipes, firmware upgrades, `raw`, and names
/// this list does not know.
const QUICK: &[&str] = &[
    "LockControl",
    "LockControlStatus",
    "SetTime",
    "GetTime",
    "Restart",
    "GetDeviceInfo",
    "GetDeviceInfoExt",
    "GetDeviceInfoAll",
    "SetDeviceInfo",
    "SetDeviceInfoExt",
    "GetDeviceStatus",
    "GetDeviceStatusAll",
    "GetFirmwareVersion",
    "GetGlogPosInfo",
    "EnableDevice",
    "GetUserAttendOnly",
    "SetUserAttendOnly",
    "GetUserCardNo",
    "GetUserPassword",
];

fn wait_for(name: &str) -> Wait {
    if QUICK.contains(&name) {
        Wait::Quick
    } else {
        Wait::Long
    }
}

fn invalid(msg: impl Into<String>) -> CommandError {
    CommandError::Invalid(msg.into())
}

/// Plans `command`. `now` and `clock` give "now" on the terminal's wall clock.
pub(super) fn plan(
    dialect: Dialect,
    command: &str,
    payload: &OwnedValue,
    now: Timestamp,
    clock: &Clock,
) -> Result<Planned, CommandError> {
    let request = |name: &str, fields: &[(&str, &str)]| dialect.message("Request", name, fields);
    let single = |frame: String, wait: Wait| Planned {
        frame,
        op: Op::Single { store_log: false },
        wait,
    };
    match command {
        "open_door" => {
            // 1 = ForceOpen. Which mode is a single timed unlock is not documented (§2.7 item 7),
            // so the operator may pick another (`AutoRecover` = 4 ends a forced state).
            let mode = opt_u64(payload, "mode")?.unwrap_or(1);
            if !(1..=7).contains(&mode) {
                return Err(invalid(
                    "mode must be 1..7 (1 ForceOpen, 2 ForceClose, 3 NormalOpen, 4 AutoRecover, 5 Restart, 6 CancelWarning, 7 IllegalOpen)",
                ));
            }
            Ok(single(
                request("LockControl", &[("Mode", &mode.to_string())]),
                Wait::Quick,
            ))
        }
        "reboot" => Ok(single(request("Restart", &[]), Wait::Quick)),
        "set_time" => {
            let time = match opt_str(payload, "time")? {
                Some(t) => values::format_time(local_time(t)?),
                // Never a guessed zone: that would move every later punch by hours.
                None => values::format_time(clock.wall(now).ok_or_else(|| {
                    invalid("the device has no timezone setting and has not shown its clock: give {\"time\":\"YYYY-MM-DD HH:MM:SS\"}")
                })?),
            };
            Ok(single(request("SetTime", &[("Time", &time)]), Wait::Quick))
        }
        "get_users" => match opt_user_id(payload)? {
            Some(id) => Ok(Planned {
                frame: request("GetUserData", &[("UserID", &id)]),
                op: Op::Users {
                    walk: false,
                    users: Vec::new(),
                    asked: None,
                },
                wait: Wait::Long,
            }),
            None => Ok(Planned {
                frame: request("GetFirstUserData", &[]),
                op: Op::Users {
                    walk: true,
                    users: Vec::new(),
                    asked: None,
                },
                wait: Wait::Long,
            }),
        },
        "set_user" => Ok(single(
            set_user(dialect, payload, now, &clock.tz())?,
            Wait::Long,
        )),
        "delete_user" => {
            let id = opt_user_id(payload)?.ok_or_else(|| invalid("enrollid is required"))?;
            Ok(single(
                request("SetUserData", &[("UserID", &id), ("Type", "Delete")]),
                Wait::Long,
            ))
        }
        "fetch_logs" => fetch_logs(dialect, payload),
        "raw" => {
            let xml = opt_str(payload, "xml")?
                .filter(|x| !x.trim().is_empty())
                .ok_or_else(|| invalid("raw needs {\"xml\": \"<Message>…</Message>\"}"))?;
            if xml.len() > MAX_RAW {
                return Err(invalid("xml is larger than 1 MiB"));
            }
            Ok(single(xml.to_owned(), Wait::Long))
        }
        native if is_native_name(native) => {
            let fields = native_fields(payload)?;
            let refs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let store_log = matches!(native, "GetFirstGlog" | "GetNextGlog");
            Ok(Planned {
                frame: request(native, &refs),
                op: Op::Single { store_log },
                wait: wait_for(native),
            })
        }
        other => Err(invalid(format!(
            "unknown command {other:?}: use open_door, reboot, set_time, get_users, set_user, delete_user, fetch_logs, raw, or a native request name such as GetDeviceInfo"
        ))),
    }
}

/// `SetUserData` with `Type=Set`, fields in the vendor sample's order.
fn set_user(
    dialect: Dialect,
    payload: &OwnedValue,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<String, CommandError> {
    let id = opt_user_id(payload)?.ok_or_else(|| invalid("enrollid is required"))?;
    let mut fields: Vec<(&str, String)> = vec![("UserID", id), ("Type", "Set".into())];
    if let Some(name) = opt_str(payload, "name")? {
        let encoded = values::encode_name(name)
            .ok_or_else(|| invalid(format!("name is longer than {MAX_NAME_UNITS} UTF-16 units")))?;
        fields.push(("Name", encoded));
    }
    let depart = opt_u64(payload, "depart")?.unwrap_or(0);
    if depart > 255 {
        return Err(invalid("depart must be 0..255"));
    }
    fields.push(("Depart", depart.to_string()));
    let privilege = match opt_str(payload, "privilege")? {
        None => "User",
        Some(p) => ["User", "Manager", "Administrator"]
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(p))
            .ok_or_else(|| invalid("privilege must be User, Manager or Administrator"))?,
    };
    fields.push(("Privilege", privilege.into()));
    let enabled = opt_bool(payload, "enabled")?.unwrap_or(true);
    fields.push(("Enabled", if enabled { "Yes" } else { "No" }.into()));
    if let Some(sets) = payload.get("timesets").filter(|v| !v.is_null()) {
        let sets = sets
            .as_array()
            .ok_or_else(|| invalid("timesets must be an array of up to 5 numbers 0..49"))?;
        if sets.len() > 5 {
            return Err(invalid("timesets has more than 5 entries"));
        }
        const TAGS: [&str; 5] = ["TimeSet1", "TimeSet2", "TimeSet3", "TimeSet4", "TimeSet5"];
        for (tag, set) in TAGS.into_iter().zip(sets) {
            let set = set
                .as_u64()
                .filter(|s| *s <= 49)
                .ok_or_else(|| invalid("timesets entries must be 0..49"))?;
            fields.push((tag, set.to_string()));
        }
    }
    let start = opt_str(payload, "period_start")?.map(date).transpose()?;
    let end = opt_str(payload, "period_end")?.map(date).transpose()?;
    let (used, start, end) = match (start, end) {
        (Some(s), Some(e)) if s <= e => (true, s, e),
        (None, None) => {
            // The vendor sample always sends both days; unused, they are today.
            let today = now.to_zoned(tz.clone()).date();
            (false, today, today)
        }
        _ => {
            return Err(invalid(
                "period_start and period_end go together, start first",
            ));
        }
    };
    let packed = |d: Date| {
        values::pack_period(d).ok_or_else(|| invalid("period days must be in 2000 or later"))
    };
    fields.push(("UserPeriod_Used", if used { "Yes" } else { "No" }.into()));
    fields.push(("UserPeriod_Start", packed(start)?.to_string()));
    fields.push(("UserPeriod_End", packed(end)?.to_string()));
    if let Some(card) = opt_u64(payload, "card")? {
        let card = u32::try_from(card).map_err(|_| invalid("card must fit in 32 bits"))?;
        fields.push(("Card", values::encode_card(card)));
    }
    if let Some(pwd) = opt_str(payload, "password")? {
        if pwd.is_empty() || !pwd.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("password must be digits"));
        }
        fields.push(("PWD", pwd.to_owned()));
    }
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Ok(dialect.message("Request", "SetUserData", &refs))
}

fn fetch_logs(dialect: Dialect, payload: &OwnedValue) -> Result<Planned, CommandError> {
    let user = opt_user_id(payload)?;
    let start = opt_str(payload, "start_time")?
        .map(local_time)
        .transpose()?
        .map(values::format_time);
    let end = opt_str(payload, "end_time")?
        .map(local_time)
        .transpose()?
        .map(values::format_time);
    if let Some(pos) = opt_u64(payload, "from_position")? {
        // `GetNextGlog` carries no filters, so a walk from a position cannot be filtered.
        if user.is_some() || start.is_some() || end.is_some() {
            return Err(invalid("from_position cannot be combined with filters"));
        }
        let begin = pos.to_string();
        return Ok(Planned {
            frame: dialect.message("Request", "GetNextGlog", &[("BeginLogPos", &begin)]),
            op: Op::Logs { records: 0, pos },
            wait: Wait::Long,
        });
    }
    let mut fields = vec![("BeginLogPos", "0")];
    for (tag, value) in [("UserID", &user), ("StartTime", &start), ("EndTime", &end)] {
        if let Some(v) = value {
            fields.push((tag, v));
        }
    }
    Ok(Planned {
        frame: dialect.message("Request", "GetFirstGlog", &fields),
        op: Op::Logs { records: 0, pos: 0 },
        wait: Wait::Long,
    })
}

/// Native request names are used as tag names, so they must be plain identifiers.
fn is_native_name(name: &str) -> bool {
    is_tag_name(name) && name.starts_with(|c: char| c.is_ascii_uppercase())
}

fn is_tag_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A native command's payload: an object whose members become tags, in order. Booleans are
/// written `Yes`/`No` as terminals expect.
fn native_fields(payload: &OwnedValue) -> Result<Vec<(String, String)>, CommandError> {
    if payload.is_null() {
        return Ok(Vec::new());
    }
    let obj = payload
        .as_object()
        .ok_or_else(|| invalid("a native command's payload must be an object of tag values"))?;
    obj.iter()
        .map(|(tag, value)| {
            if !is_tag_name(tag) {
                return Err(invalid(format!("{tag:?} is not a tag name")));
            }
            let text = if let Some(s) = value.as_str() {
                s.to_owned()
            } else if let Some(b) = value.as_bool() {
                if b { "Yes" } else { "No" }.to_owned()
            } else if value.is_number() {
                value.encode()
            } else {
                return Err(invalid(format!(
                    "{tag} must be a string, number or boolean"
                )));
            };
            Ok((tag.to_string(), text))
        })
        .collect()
}

fn opt_str<'v>(payload: &'v OwnedValue, key: &str) -> Result<Option<&'v str>, CommandError> {
    match payload.get(key) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a string"))),
    }
}

fn opt_u64(payload: &OwnedValue, key: &str) -> Result<Option<u64>, CommandError> {
    match payload.get(key) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be a non-negative integer"))),
    }
}

fn opt_bool(payload: &OwnedValue, key: &str) -> Result<Option<bool>, CommandError> {
    match payload.get(key) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} must be true or false"))),
    }
}

/// `enrollid` (or `user_id`): a number, or a string of digits and letters (newer firmware has
/// alphanumeric ids).
fn opt_user_id(payload: &OwnedValue) -> Result<Option<String>, CommandError> {
    let Some(v) = payload
        .get("enrollid")
        .or_else(|| payload.get("user_id"))
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    if let Some(n) = v.as_u64() {
        return Ok(Some(n.to_string()));
    }
    match v.as_str() {
        Some(s)
            if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Ok(Some(s.to_owned()))
        }
        _ => Err(invalid(
            "enrollid must be a number or up to 20 letters and digits",
        )),
    }
}

/// An operator's local time (`YYYY-MM-DD HH:MM:SS`, or the terminal's own format).
fn local_time(s: &str) -> Result<DateTime, CommandError> {
    values::parse_time(s)
        .ok_or_else(|| invalid(format!("{s:?} is not a local time YYYY-MM-DD HH:MM:SS")))
}

fn date(s: &str) -> Result<Date, CommandError> {
    s.trim()
        .parse::<Date>()
        .map_err(|_| invalid(format!("{s:?} is not a date YYYY-MM-DD")))
}
