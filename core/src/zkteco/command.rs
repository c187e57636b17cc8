//! An operator's command as the ADMS line a terminal runs (`C:<id>:<line>` in the poll's answer,
//! protocols.md §4.2 [ZK-PUSH]). Checked when the command is queued, so a bad payload is the
//! operator's 400, and again when it is handed out.
//!
//! | Name | Line |
//! |---|---|
//! | `reboot` | `REBOOT` |
//! | `info` | `INFO` (the terminal answers with its firmware, counts and address) |
//! | `check` | `CHECK` (the terminal handshakes again and uploads what is newer than its stamps) |
//! | `set_user` | `DATA UPDATE USERINFO PIN=…\tName=…\tPri=…\tPasswd=…\tCard=…\tGrp=…` |
//! | `delete_user` | `DATA DELETE USERINFO PIN=…` |
//! | `get_users` | `DATA QUERY USERINFO` (`PIN=…` for one): the users arrive as `OPERLOG` uploads |
//! | `fetch_logs` | `DATA QUERY ATTLOG StartTime=…\tEndTime=…`: the punches arrive as `ATTLOG` uploads |
//! | `clear_log` | `CLEAR LOG`, only with `"confirm": true` |
//! | `raw` | `{"command": "<line>"}`, sent as written |
//!
//! The old `USER ADD`/`USER DEL` forms are not offered: recent firmware refuses them.

use jiff::civil::DateTime;
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::attendance::parse_time;

/// Longest line a `raw` command may send.
pub const MAX_RAW: usize = 4096;
/// The first time `fetch_logs` asks for when the payload names none.
const EPOCH: &str = "2000-01-01 00:00:00";

/// The line for command `name` with its `payload` (JSON text); `now` is the device's wall clock,
/// the end of a `fetch_logs` that names none. `Err` is the operator's message.
pub fn line(name: &str, payload: &str, now: DateTime) -> Result<String, String> {
    let mut bytes = payload.as_bytes().to_vec();
    let p = if payload.trim().is_empty() {
        OwnedValue::from(simd_json::owned::Object::new())
    } else {
        simd_json::to_owned_value(&mut bytes).map_err(|_| "`payload` must be JSON".to_string())?
    };
    if !p.is_object() {
        return Err("`payload` must be an object".into());
    }
    match name {
        "reboot" | "REBOOT" => Ok("REBOOT".into()),
        "info" | "INFO" => Ok("INFO".into()),
        "check" | "CHECK" => Ok("CHECK".into()),
        "set_user" => set_user(&p),
        "delete_user" => Ok(format!("DATA DELETE USERINFO PIN={}", pin(&p)?)),
        "get_users" => match p.get("enrollid").or_else(|| p.get("pin")) {
            Some(_) => Ok(format!("DATA QUERY USERINFO PIN={}", pin(&p)?)),
            None => Ok("DATA QUERY USERINFO".into()),
        },
        "fetch_logs" => {
            let start = time_field(&p, "start")?.unwrap_or_else(|| EPOCH.to_string());
            let end = time_field(&p, "end")?.unwrap_or_else(|| now.strftime("%Y-%m-%d %H:%M:%S").to_string());
            Ok(format!("DATA QUERY ATTLOG StartTime={start}\tEndTime={end}"))
        }
        "clear_log" | "CLEAR LOG" => {
            if p.get("confirm").and_then(|c| c.as_bool()) == Some(true) {
                Ok("CLEAR LOG".into())
            } else {
                Err("`clear_log` erases every punch on the terminal: send it with \"confirm\": true".into())
            }
        }
        "raw" => {
            let line = p
                .get("command")
                .and_then(|c| c.as_str())
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .ok_or("`raw` takes {\"command\": \"<the ADMS command line>\"}")?;
            if line.len() > MAX_RAW || line.contains(['\r', '\n']) {
                return Err(format!(
                    "`command` must be one line of at most {MAX_RAW} bytes"
                ));
            }
            Ok(line.to_string())
        }
        "set_time" => Err(
            "ZKTeco ADMS terminals set their clock from the server's answers (HTTP Date) on every poll; there is no command for it"
                .into(),
        ),
        other => Err(format!(
            "ZKTeco ADMS terminals do not know `{other}`: use reboot, info, check, set_user, delete_user, get_users, fetch_logs, clear_log or raw"
        )),
    }
}

/// The PIN (`enrollid`, or `pin`): a number from 1 up.
fn pin(p: &OwnedValue) -> Result<u64, String> {
    p.get("enrollid")
        .or_else(|| p.get("pin"))
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .filter(|&n| n > 0)
        .ok_or_else(|| "`enrollid` must be the user's PIN, a number from 1 up".to_string())
}

/// A text field that goes into a tab-separated line: no tabs or line breaks, at most `max`.
fn text_field(p: &OwnedValue, key: &str, max: usize) -> Result<Option<String>, String> {
    let Some(v) = p.get(key) else {
        return Ok(None);
    };
    let s = match (v.as_str(), v.as_u64()) {
        (Some(s), _) => s.to_string(),
        (None, Some(n)) => n.to_string(),
        _ => return Err(format!("`{key}` must be a string")),
    };
    if s.len() > max || s.contains(['\t', '\r', '\n']) {
        return Err(format!(
            "`{key}` must be at most {max} bytes, without tabs or line breaks"
        ));
    }
    Ok(Some(s))
}

fn set_user(p: &OwnedValue) -> Result<String, String> {
    let pin = pin(p)?;
    let name = text_field(p, "name", 24)?.unwrap_or_default();
    let pri = match p.get("admin").or_else(|| p.get("privilege")) {
        None => 0,
        Some(v) => v
            .as_u64()
            .filter(|&n| n <= 14)
            .ok_or("`admin` must be the privilege: 0 (user) to 14 (super administrator)")?,
    };
    let passwd = text_field(p, "password", 8)?.unwrap_or_default();
    let card = text_field(p, "card", 20)?.unwrap_or_default();
    let grp = match p.get("group") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|&n| (1..=99).contains(&n))
            .ok_or("`group` must be a number from 1 to 99")?,
    };
    Ok(format!(
        "DATA UPDATE USERINFO PIN={pin}\tName={name}\tPri={pri}\tPasswd={passwd}\tCard={card}\tGrp={grp}"
    ))
}

/// A time in the terminal's own clock, `YYYY-MM-DD HH:MM:SS`, if the payload gives one.
fn time_field(p: &OwnedValue, key: &str) -> Result<Option<String>, String> {
    let Some(v) = p.get(key) else {
        return Ok(None);
    };
    let t = v
        .as_str()
        .and_then(parse_time)
        .filter(|(_, explicit)| explicit.is_none())
        .ok_or_else(|| {
            format!("`{key}` must be a time on the terminal's clock, YYYY-MM-DD HH:MM:SS")
        })?
        .0;
    Ok(Some(t.strftime("%Y-%m-%d %H:%M:%S").to_string()))
}
