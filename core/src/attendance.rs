//! Attendance records as terminals send them, normalised (sans-IO): the time forms, the kind of
//! record, the photo, and the idempotency identity. The server (`fleetgate::attendance`) keys,
//! stores and exports them.
//!
//! A punch is payroll data: it is stored exactly once however often the terminal re-sends it.
//! Identity is (user id, device local time, event): the same punch re-sent is recognised even if
//! the device's time zone setting has changed since, because it uses the local time as sent, not
//! the derived UTC instant.

use base64::Engine;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};
use simd_json::OwnedValue as Value;
use simd_json::prelude::*;

use crate::json;

/// The user id terminals send for a face they did not recognise.
pub const UNKNOWN_FACE: u64 = 99_999_999;
/// Largest photo kept (decoded bytes). Larger ones are dropped and the record says so.
pub const MAX_PHOTO: usize = 512 * 1024;
/// Records accepted in one `sendlog`.
pub const MAX_RECORDS: usize = 1000;

/// What one record of a `sendlog` is.
#[derive(Debug, PartialEq)]
pub enum Kind {
    /// A person's punch: attendance.
    Punch,
    /// `enrollid` 0: a door or system event.
    Door,
    /// `enrollid` 99999999: an unrecognised face.
    UnknownFace,
}

/// A record as the terminal sent it, normalised.
#[derive(Debug)]
pub struct Punch {
    pub kind: Kind,
    pub enrollid: u64,
    /// The local time exactly as sent.
    pub local_raw: String,
    pub local: DateTime,
    /// An explicit offset or `Z` in the time, if the device sent one.
    pub explicit_utc: Option<jiff::Timestamp>,
    /// The device's own UTC offset for this record (SmackBio `UtcTimezoneMinutes`), if sent.
    pub utc_offset_minutes: Option<i32>,
    pub event: Option<i64>,
    /// Every field the device sent except the photo, as JSON text.
    pub fields: String,
    /// The decoded photo, if one was sent and fits `MAX_PHOTO`.
    pub photo: Option<Vec<u8>>,
    pub photo_dropped: bool,
}

#[derive(Debug, PartialEq)]
pub struct RecordError(pub String);

/// Parses the time forms terminals send: `2026-06-12T09:15:30`, `2026-06-12T09:15:30.123456`,
/// `2026-06-12 09:15:30`, unpadded parts (`2026-9-6 8:55:20`), and an optional `Z` or offset.
pub fn parse_time(s: &str) -> Option<(DateTime, Option<jiff::Timestamp>)> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        // Carries its own offset: the instant is known; keep the wall time as written too.
        let local = s
            .get(..19)
            .and_then(parse_civil)
            .unwrap_or_else(|| ts.to_zoned(TimeZone::UTC).datetime());
        return Some((local, Some(ts)));
    }
    parse_civil(s).map(|d| (d, None))
}

fn parse_civil(s: &str) -> Option<DateTime> {
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|p| p.trim().parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let mut t = hms.split(':').map(|p| p.trim().parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if t.next().is_some() {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
    };
    DateTime::new(
        i16::try_from(y).ok()?,
        i8::try_from(mo).ok()?,
        i8::try_from(da).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(se).ok()?,
        i32::try_from(nanos).ok()?,
    )
    .ok()
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Normalises one record. Field names vary by firmware: `enrollid` or `userid`.
pub fn parse_record(v: &Value) -> Result<Punch, RecordError> {
    let obj = v
        .as_object()
        .ok_or_else(|| RecordError("a record must be an object".into()))?;
    let enrollid = v
        .get("enrollid")
        .or_else(|| v.get("userid"))
        .and_then(as_u64)
        .ok_or_else(|| RecordError("enrollid is missing or not a number".into()))?;
    let local_raw = v
        .get("time")
        .and_then(|t| t.as_str())
        .ok_or_else(|| RecordError("time is missing".into()))?;
    let (local, explicit_utc) = parse_time(local_raw)
        .ok_or_else(|| RecordError(format!("time {local_raw:?} is not a date and time")))?;
    let event = v.get("event").and_then(|e| {
        e.as_i64()
            .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
    });
    let mut photo = None;
    let mut photo_dropped = false;
    if let Some(img) = v
        .get("image")
        .and_then(|i| i.as_str())
        .filter(|s| !s.is_empty())
    {
        let img = strip_data_url(img.trim());
        // base64 is 4/3 of the bytes: refuse to decode anything that cannot fit.
        if img.len() / 4 * 3 > MAX_PHOTO {
            photo_dropped = true;
        } else {
            match base64::engine::general_purpose::STANDARD.decode(img) {
                Ok(b) if b.len() <= MAX_PHOTO => photo = Some(b),
                _ => photo_dropped = true,
            }
        }
    }
    let mut fields = String::with_capacity(128);
    fields.push('{');
    let mut scratch = Vec::new();
    for (k, val) in obj.iter().filter(|(k, _)| *k != "image") {
        if fields.len() > 1 {
            fields.push(',');
        }
        json::push_str(&mut fields, k);
        fields.push(':');
        json::push_encoded(&mut fields, val, &mut scratch);
    }
    fields.push('}');
    let utc_offset_minutes = v
        .get("utc_offset_minutes")
        .and_then(|m| m.as_i64())
        .and_then(|m| i32::try_from(m).ok())
        .filter(|m| m.abs() <= 18 * 60);
    let kind = match enrollid {
        0 => Kind::Door,
        UNKNOWN_FACE => Kind::UnknownFace,
        _ => Kind::Punch,
    };
    Ok(Punch {
        kind,
        enrollid,
        local_raw: local_raw.to_string(),
        local,
        explicit_utc,
        utc_offset_minutes,
        event,
        fields,
        photo,
        photo_dropped,
    })
}

/// A punch's idempotency key's hash, from its parts: what `Punch::identity` is, for a caller that
/// names a punch without its record (a ZKTeco `ATTPHOTO` names its punch by PIN and time).
pub fn identity(enrollid: u64, local: &DateTime, event: Option<i64>) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(enrollid.to_be_bytes());
    h.update(local.to_string().as_bytes());
    h.update(event.unwrap_or(i64::MIN).to_be_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

impl Punch {
    /// The idempotency key's hash: user id, local wall time (normalised), event.
    pub fn identity(&self) -> [u8; 16] {
        identity(self.enrollid, &self.local, self.event)
    }

    /// The UTC instant: an explicit offset in the time wins, then the offset the device gave for
    /// this record, then the device's configured zone.
    pub fn utc(&self, tz: &TimeZone) -> Option<jiff::Timestamp> {
        if let Some(t) = self.explicit_utc {
            return Some(t);
        }
        if let Some(m) = self.utc_offset_minutes {
            let off = jiff::tz::Offset::from_seconds(m * 60).ok()?;
            return self
                .local
                .to_zoned(TimeZone::fixed(off))
                .ok()
                .map(|z| z.timestamp());
        }
        self.local.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
    }
}

/// The base64 part of a photo sent as a `data:` URL (`data:image/jpeg;base64,…`), as some AiFace
/// firmware sends it in `sendlog`, where the documented form is bare base64. Anything else is
/// returned as it is.
fn strip_data_url(img: &str) -> &str {
    match img.split_once(',') {
        Some((head, b64))
            if head.len() <= 64
                && head
                    .get(..5)
                    .is_some_and(|d| d.eq_ignore_ascii_case("data:"))
                && head.to_ascii_lowercase().ends_with(";base64") =>
        {
            b64
        }
        _ => img,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_time_form_devices_send() {
        let want = DateTime::new(2026, 6, 12, 9, 15, 30, 0).unwrap();
        for s in [
            "2026-06-12T09:15:30",
            "2026-06-12 09:15:30",
            "2026-6-12 9:15:30",
            " 2026-06-12T09:15:30 ",
        ] {
            assert_eq!(parse_time(s).map(|t| t.0), Some(want), "{s}");
        }
        let (d, utc) = parse_time("2026-06-12T09:15:30.123456").unwrap();
        assert_eq!(d.subsec_nanosecond(), 123_456_000);
        assert!(utc.is_none());
        let (_, utc) = parse_time("2026-06-12T09:15:30Z").unwrap();
        assert_eq!(utc.map(|t| t.as_second()), Some(1_781_255_730));
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00:00",
            "2026-06-12",
            "2026-06-12T09:15:30.x",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    fn rec(text: &str) -> Result<Punch, RecordError> {
        let mut b = text.as_bytes().to_vec();
        let v = simd_json::to_owned_value(&mut b).unwrap();
        parse_record(&v)
    }

    #[test]
    fn records_keep_every_field_but_the_photo() {
        let p = rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30","mode":1,"inout":0,"event":0,"temp":36.5,"image":"aGk="}"#).unwrap();
        assert_eq!(p.kind, Kind::Punch);
        assert_eq!(p.photo.as_deref(), Some(&b"hi"[..]));
        assert!(!p.fields.contains("image"));
        assert!(p.fields.contains("\"temp\":36.5"));
        assert_eq!(
            rec(r#"{"userid":"7","time":"2026-06-12 09:15:30"}"#)
                .unwrap()
                .enrollid,
            7
        );
        assert_eq!(
            rec(r#"{"enrollid":0,"time":"2026-06-12 09:15:30"}"#)
                .unwrap()
                .kind,
            Kind::Door
        );
        assert_eq!(
            rec(r#"{"enrollid":99999999,"time":"2026-06-12 09:15:30","event":2}"#)
                .unwrap()
                .kind,
            Kind::UnknownFace
        );
        assert!(rec(r#"{"time":"2026-06-12 09:15:30"}"#).is_err());
        assert!(rec(r#"{"enrollid":1,"time":"soon"}"#).is_err());
    }

    #[test]
    fn photos_sent_as_data_urls_are_decoded() {
        let p = rec(r#"{"enrollid":99999999,"time":"2026-06-12 09:15:30","image":"data:image/jpeg;base64,aGk="}"#)
            .unwrap();
        assert_eq!(p.photo.as_deref(), Some(&b"hi"[..]));
        assert!(!p.photo_dropped);
        let p = rec(
            r#"{"enrollid":1,"time":"2026-06-12 09:15:30","image":"DATA:image/png;BASE64,aGk="}"#,
        )
        .unwrap();
        assert_eq!(p.photo.as_deref(), Some(&b"hi"[..]));
        // A data URL that is not base64 is not a photo this server can read.
        let p = rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30","image":"data:image/jpeg,hi"}"#)
            .unwrap();
        assert!(p.photo.is_none() && p.photo_dropped);
    }

    #[test]
    fn identity_ignores_format_but_not_content() {
        let a = rec(r#"{"enrollid":1,"time":"2026-06-12T09:15:30","event":0}"#).unwrap();
        let b =
            rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30","event":0,"temp":36.6}"#).unwrap();
        let c = rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:31","event":0}"#).unwrap();
        let d = rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30","event":1}"#).unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.identity(), c.identity());
        assert_ne!(a.identity(), d.identity());
    }

    #[test]
    fn utc_uses_the_device_zone() {
        let p = rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30"}"#).unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(p.utc(&berlin).unwrap().to_string(), "2026-06-12T07:15:30Z");
        assert_eq!(
            p.utc(&TimeZone::UTC).unwrap().to_string(),
            "2026-06-12T09:15:30Z"
        );
        let q =
            rec(r#"{"enrollid":1,"time":"2026-06-12 09:15:30","utc_offset_minutes":480}"#).unwrap();
        assert_eq!(q.utc(&berlin).unwrap().to_string(), "2026-06-12T01:15:30Z");
    }
}
