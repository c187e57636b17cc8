//! The tables an ADMS terminal uploads (`POST cdata?table=…`), read into what the server stores:
//! punches in the shape `crate::attendance::parse_record` takes, the people and credentials of
//! `OPERLOG`, and the photo of `ATTPHOTO`. Lines end CRLF or LF; blank lines are skipped; a line
//! that cannot be read is returned as such, so the server keeps it rather than drops it.

use jiff::civil::DateTime;
use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::attendance::MAX_PHOTO;
use crate::json;

/// The lines of a text body: CRLF or LF, blank lines skipped, invalid UTF-8 replaced.
fn lines(body: &[u8]) -> impl Iterator<Item = String> + '_ {
    body.split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .filter(|l| !l.trim().is_empty())
}

/// Reads an `ATTLOG` body: one punch a line, `PIN\tYYYY-MM-DD HH:MM:SS\tstatus\tverify\t
/// workcode\treserved…` (protocols.md §4.2 [ZK-PUSH]). Each becomes a record for
/// `attendance::parse_record`: `enrollid` (the PIN: a number when it is written as one, else the
/// text as sent, which the store keeps as an unreadable record), `time`, and the terminal's
/// fields under the names the attendance export reads: `inout` (the status: 0 check-in,
/// 1 check-out, … 255 undefined), `verifymode` (the verify code), `workcode`, and `reserved`
/// for any further field that is not blank. Blank trailing fields are dropped. A line without a
/// time is returned as `{"line": …}`, which the store keeps as an unreadable record.
pub fn attlog(body: &[u8]) -> Vec<OwnedValue> {
    lines(body).map(|l| attlog_line(&l)).collect()
}

fn attlog_line(line: &str) -> OwnedValue {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    let (pin, time) = match (f.first(), f.get(1)) {
        (Some(p), Some(t)) if !p.is_empty() && !t.is_empty() => (*p, *t),
        _ => {
            let mut o = simd_json::owned::Object::new();
            o.insert("line".into(), OwnedValue::from(line.to_string()));
            return OwnedValue::from(o);
        }
    };
    let mut o = simd_json::owned::Object::new();
    o.insert("enrollid".into(), pin_value(pin));
    o.insert("time".into(), OwnedValue::from(time.to_string()));
    for (i, name) in [(2, "inout"), (3, "verifymode")] {
        if let Some(v) = f.get(i).filter(|v| !v.is_empty()) {
            o.insert(name.into(), number_or_text(v));
        }
    }
    if let Some(w) = f.get(4).filter(|v| !v.is_empty()) {
        o.insert("workcode".into(), OwnedValue::from(w.to_string()));
    }
    let reserved: Vec<OwnedValue> = f
        .iter()
        .skip(5)
        .filter(|v| !v.is_empty())
        .map(|v| OwnedValue::from(v.to_string()))
        .collect();
    if !reserved.is_empty() {
        o.insert("reserved".into(), OwnedValue::from(reserved));
    }
    OwnedValue::from(o)
}

/// A PIN as a number when it is written as one (`12`, not `0012`), else as the text sent.
fn pin_value(pin: &str) -> OwnedValue {
    match pin.parse::<u64>() {
        Ok(n) if n.to_string() == pin => OwnedValue::from(n),
        _ => OwnedValue::from(pin.to_string()),
    }
}

fn number_or_text(v: &str) -> OwnedValue {
    v.parse::<i64>()
        .map_or_else(|_| OwnedValue::from(v.to_string()), OwnedValue::from)
}

/// A PIN the people registry can key: a number from 1 up (leading zeros read as the number).
fn person_pin(pin: &str) -> Option<u64> {
    pin.trim().parse::<u64>().ok().filter(|&n| n > 0)
}

/// One line of an `OPERLOG` upload.
#[derive(Debug, PartialEq)]
pub enum OperLine {
    /// A person (`USER`) or one of their credentials (`FP`, `FACE`, `USERPIC`, `BIODATA`, and the
    /// card and password of a `USER` line), in the people registry's terms: `backupnum` None is
    /// the person; 0–9 a fingerprint, 10 the password, 11 the card, 20–27 a face, 30–37 a palm,
    /// 50 the photo (the AiFace numbering, protocols.md §3.5). `payload` is a JSON object.
    Enrolled {
        pin: u64,
        backupnum: Option<u8>,
        payload: String,
    },
    /// `OPLOG`: something done on the terminal (an administrator's operation, an alarm), kept as
    /// an event: `{"code","admin","time","fields"}`.
    Operation { payload: String, line: String },
    /// A line this server does not read, kept as it came.
    Unread { line: String },
}

/// Reads an `OPERLOG` body (protocols.md §4.2 [ZK-PUSH]): `USER PIN=…\tName=…\tPri=…\tPasswd=…
/// \tCard=…\tGrp=…\tTZ=…`, `FP PIN=…\tFID=…\tSize=…\tValid=…\tTMP=…`, `FACE …`, `USERPIC …`,
/// `BIODATA …` and `OPLOG <code>\t<admin>\t<time>\t…`. Keys are read in any case (firmware writes
/// `PIN` and `Pin`). A `USER` line gives the person, then its password and card.
pub fn operlog(body: &[u8]) -> Vec<OperLine> {
    let mut out = Vec::new();
    for line in lines(body) {
        let (kind, rest) = line.split_once([' ', '\t']).unwrap_or((line.as_str(), ""));
        let read = match kind {
            "USER" => user(rest, &mut out),
            "FP" => credential(rest, |fid| (fid <= 9).then_some(fid as u8), "TMP"),
            "FACE" => credential(rest, |fid| Some(20 + fid.min(7) as u8), "TMP"),
            "USERPIC" => credential(rest, |_| Some(50), "Content"),
            "BIODATA" => biodata(rest),
            "OPLOG" => Some(operation(rest, &line)),
            _ => None,
        };
        match read {
            Some(Some(l)) => out.push(l),
            // `USER` pushed its own lines.
            Some(None) => {}
            None => out.push(OperLine::Unread { line }),
        }
    }
    out
}

/// The `key=value` fields of a line, tab-separated.
fn kv(rest: &str) -> Vec<(&str, &str)> {
    rest.split('\t')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn field<'a>(f: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    f.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| *v)
}

/// A `USER` line: the person, and their card and password as credentials of their own.
fn user(rest: &str, out: &mut Vec<OperLine>) -> Option<Option<OperLine>> {
    let f = kv(rest);
    let pin = person_pin(field(&f, "PIN")?)?;
    let mut person = format!("{{\"enrollid\":{pin}");
    if let Some(name) = field(&f, "Name") {
        person.push_str(",\"name\":");
        json::push_str(&mut person, name);
    }
    if let Some(pri) = field(&f, "Pri").and_then(|p| p.parse::<i64>().ok()) {
        person.push_str(&format!(",\"admin\":{pri}"));
    }
    for (key, name) in [("Grp", "group"), ("TZ", "timezones"), ("Verify", "verify")] {
        if let Some(v) = field(&f, key).filter(|v| !v.is_empty()) {
            person.push_str(&format!(",\"{name}\":"));
            json::push_str(&mut person, v);
        }
    }
    person.push('}');
    out.push(OperLine::Enrolled {
        pin,
        backupnum: None,
        payload: person,
    });
    for (key, backupnum) in [("Passwd", 10u8), ("Card", 11u8)] {
        if let Some(v) = field(&f, key).filter(|v| !v.is_empty() && *v != "0") {
            let mut p = format!("{{\"enrollid\":{pin},\"backupnum\":{backupnum},\"record\":");
            json::push_str(&mut p, v);
            p.push('}');
            out.push(OperLine::Enrolled {
                pin,
                backupnum: Some(backupnum),
                payload: p,
            });
        }
    }
    Some(None)
}

/// A credential line (`FP`, `FACE`, `USERPIC`): `slot` maps its `FID` (0 when absent) to the
/// registry's `backupnum`; `data` names the field holding the template or picture.
fn credential(
    rest: &str,
    slot: impl Fn(u64) -> Option<u8>,
    data: &str,
) -> Option<Option<OperLine>> {
    let f = kv(rest);
    let pin = person_pin(field(&f, "PIN")?)?;
    let fid = match field(&f, "FID") {
        Some(v) => v.parse::<u64>().ok()?,
        None => 0,
    };
    let backupnum = slot(fid)?;
    Some(Some(enrolled_credential(pin, backupnum, &f, data)))
}

fn enrolled_credential(pin: u64, backupnum: u8, f: &[(&str, &str)], data: &str) -> OperLine {
    let mut p = format!("{{\"enrollid\":{pin},\"backupnum\":{backupnum}");
    for (k, v) in f {
        if k.eq_ignore_ascii_case("PIN") {
            continue;
        }
        let name = if k.eq_ignore_ascii_case(data) {
            "record".to_string()
        } else {
            k.to_ascii_lowercase()
        };
        p.push(',');
        json::push_str(&mut p, &name);
        p.push(':');
        json::push_str(&mut p, v);
    }
    p.push('}');
    OperLine::Enrolled {
        pin,
        backupnum: Some(backupnum),
        payload: p,
    }
}

/// A `BIODATA` line (push 2.4's unified templates): `Type` 1 is a fingerprint (`No` its finger),
/// 2 and 9 a face, 8 a palm; other types are not read.
fn biodata(rest: &str) -> Option<Option<OperLine>> {
    let f = kv(rest);
    let pin = person_pin(field(&f, "Pin")?)?;
    let no = field(&f, "No")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let backupnum = match field(&f, "Type")?.parse::<u32>().ok()? {
        1 if no <= 9 => no as u8,
        2 | 9 => 20 + no.min(7) as u8,
        8 => 30 + no.min(7) as u8,
        _ => return None,
    };
    Some(Some(enrolled_credential(pin, backupnum, &f, "Tmp")))
}

/// An `OPLOG` line: `code\tadmin\ttime\tvalue1\tvalue2\tvalue3\treserved`.
fn operation(rest: &str, line: &str) -> Option<OperLine> {
    let f: Vec<&str> = rest.split('\t').map(str::trim).collect();
    let mut p = String::from("{\"code\":");
    json::push_str(&mut p, f.first().copied().unwrap_or(""));
    p.push_str(",\"admin\":");
    json::push_str(&mut p, f.get(1).copied().unwrap_or(""));
    p.push_str(",\"time\":");
    json::push_str(&mut p, f.get(2).copied().unwrap_or(""));
    p.push_str(",\"fields\":[");
    for (i, v) in f.iter().skip(3).enumerate() {
        if i > 0 {
            p.push(',');
        }
        json::push_str(&mut p, v);
    }
    p.push_str("]}");
    Some(OperLine::Operation {
        payload: p,
        line: line.to_string(),
    })
}

/// An `ATTPHOTO` upload: the photo a terminal took at a punch.
#[derive(Debug, PartialEq)]
pub struct AttPhoto<'a> {
    /// The punch's PIN and local time, from the file name (`YYYYMMDDHHMMSS-PIN.jpg`).
    pub pin: u64,
    pub local: DateTime,
    /// The JPEG, at most `MAX_PHOTO` bytes.
    pub photo: &'a [u8],
}

/// Why an `ATTPHOTO` upload cannot be kept.
#[derive(Debug, PartialEq, Eq)]
pub enum PhotoError {
    /// No `PIN=<time>-<pin>.jpg` header, or one this server cannot read.
    Unnamed,
    TooLarge,
}

/// Reads an `ATTPHOTO` body: `key=value` header lines (`PIN=20260612091530-7.jpg`, `SN=…`,
/// `size=…`, `CMD=uploadphoto`), a NUL, then the JPEG's bytes [ZK-PUSH].
pub fn attphoto(body: &[u8]) -> Result<AttPhoto<'_>, PhotoError> {
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(PhotoError::Unnamed)?;
    let (head, photo) = (&body[..nul], &body[nul + 1..]);
    if photo.len() > MAX_PHOTO {
        return Err(PhotoError::TooLarge);
    }
    let head = String::from_utf8_lossy(head);
    let name = head
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("PIN"))
        .map(|(_, v)| v.trim())
        .ok_or(PhotoError::Unnamed)?;
    let stem = name.split('.').next().unwrap_or(name);
    let (time, pin) = stem.split_once('-').ok_or(PhotoError::Unnamed)?;
    let pin = person_pin(pin).ok_or(PhotoError::Unnamed)?;
    let local = compact_time(time).ok_or(PhotoError::Unnamed)?;
    Ok(AttPhoto { pin, local, photo })
}

/// `YYYYMMDDHHMMSS` as a civil time.
fn compact_time(s: &str) -> Option<DateTime> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i16>().ok();
    DateTime::new(
        n(0..4)?,
        i8::try_from(n(4..6)?).ok()?,
        i8::try_from(n(6..8)?).ok()?,
        i8::try_from(n(8..10)?).ok()?,
        i8::try_from(n(10..12)?).ok()?,
        i8::try_from(n(12..14)?).ok()?,
        0,
    )
    .ok()
}

/// A `table=options` upload (`~DeviceName=…,FWVersion=…`, one or several per line, `,`- or
/// line-separated): the terminal's report of itself, as a JSON object of at most 64 fields,
/// kept as the device's info.
pub fn options(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s = String::from("{");
    for (n, (k, v)) in text
        .split(['\n', ','])
        .filter_map(|p| p.trim().split_once('='))
        .take(64)
        .enumerate()
    {
        if n > 0 {
            s.push(',');
        }
        json::push_str(&mut s, &k.trim().chars().take(64).collect::<String>());
        s.push(':');
        json::push_str(&mut s, &v.trim().chars().take(256).collect::<String>());
    }
    s.push('}');
    s
}

/// The number of records a body holds, for an upload this server keeps as it came: its lines.
pub fn count_lines(body: &[u8]) -> usize {
    lines(body).count()
}
