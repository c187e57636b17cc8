//! SmackBio value formats (protocols.md §2.2): device times, names, cards, user periods, and the
//! conversion of a time log into the gateway's common record shape.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::civil::{Date, DateTime};
use simd_json::OwnedValue;
use simd_json::owned::Object;

use super::xml::Doc;
use crate::json;

/// Longest user name the terminal stores, in UTF-16 code units (C# `MAX_NAME_LEN`).
pub(super) const MAX_NAME_UNITS: usize = 24;

/// Parses a terminal time: `yyyy-MM-dd-THH:mm:ssZ` with or without zero padding
/// (`2026-9-6-T8:55:20Z`), and the `T` / space forms. The `Z` is not UTC: it is the device's wall
/// clock, so the result is a civil time.
pub(super) fn parse_time(s: &str) -> Option<DateTime> {
    let s = s.trim();
    let s = s.strip_suffix(['Z', 'z']).unwrap_or(s);
    let (date, time) = s.split_once("-T").or_else(|| s.split_once(['T', ' ']))?;
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let mut t = time.split(':');
    let (h, mi) = (num(t.next())?, num(t.next())?);
    let se = match t.next() {
        Some(p) => num(Some(p))?,
        None => 0,
    };
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    DateTime::new(y, mo, da, h, mi, se, 0).ok()
}

fn num<T: std::str::FromStr>(part: Option<&str>) -> Option<T> {
    let part = part?.trim();
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// A civil time as terminals write it, zero-padded: `2026-08-29-T08:15:30Z`.
pub(super) fn format_time(t: DateTime) -> String {
    t.strftime("%Y-%m-%d-T%H:%M:%SZ").to_string()
}

/// A base-36 user id (`0-9`, `A-Z`, either case) as the number it spells; `None` if it is not
/// one or does not fit.
fn from_base36(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.chars().try_fold(0u64, |n, c| {
        n.checked_mul(36)?.checked_add(u64::from(c.to_digit(36)?))
    })
}

/// A user id as a JSON value: a number when it is one (the store keys punches by numeric
/// `enrollid`), else the string as sent so nothing is lost.
fn id_value(id: &str) -> OwnedValue {
    match num::<u64>(Some(id)) {
        Some(n) => OwnedValue::from(n),
        None => OwnedValue::from(id.to_owned()),
    }
}

/// A time log (`TimeLog_v2` / `TimeLog` event, or a `GetFirstGlog` / `GetNextGlog` reply) in the
/// common record shape. Fields the terminal did not send are left out.
pub(super) fn log_record(doc: &Doc<'_>) -> OwnedValue {
    let mut rec = Object::default();
    let mut put = |key: &str, value: OwnedValue| {
        rec.insert(key.to_owned(), value);
    };
    // Terminals with alphanumeric user ids send `UserID_Base36` beside `UserID` (the vendor PHP
    // sample shows that form, §2.2). The store keys punches by a numeric id: `UserID` when it is
    // one, else the base-36 id read as the number it spells; the text is kept as sent.
    let base36 = doc.get_nonempty("UserID_Base36");
    let user_id = doc.get_nonempty("UserID");
    let numeric = user_id
        .and_then(|id| num::<u64>(Some(id)))
        .or_else(|| base36.and_then(from_base36));
    match (numeric, user_id.or(base36)) {
        (Some(n), _) => put("enrollid", OwnedValue::from(n)),
        (None, Some(id)) => put("enrollid", id_value(id)),
        (None, None) => {}
    }
    if let Some(b36) = base36 {
        put("user_id_base36", OwnedValue::from(b36.to_owned()));
    }
    if let Some(raw) = doc.get_nonempty("Time") {
        // An unreadable time is kept as sent: the store then files the record as invalid
        // instead of it vanishing.
        let time = parse_time(raw).map_or_else(
            || raw.to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        );
        put("time", OwnedValue::from(time));
    }
    if let Some(offset) = doc.get_nonempty("UtcTimezoneMinutes") {
        let value = offset
            .parse::<i64>()
            .map_or_else(|_| OwnedValue::from(offset.to_owned()), OwnedValue::from);
        put("utc_offset_minutes", value);
    }
    for (key, tag) in [
        ("action", "Action"),
        ("attendstat", "AttendStat"),
        ("apstat", "APStat"),
        ("jobcode", "JobCode"),
        ("terminal_id", "TerminalID"),
        ("attend_only", "AttendOnly"),
        ("expired", "Expired"),
        ("latitude", "Latitude"),
        ("longitude", "Longitude"),
    ] {
        if let Some(v) = doc.get_nonempty(tag) {
            put(key, OwnedValue::from(v.to_owned()));
        }
    }
    // The dashboard page spells it `LogId`.
    if let Some(v) = doc
        .get_nonempty("LogID")
        .or_else(|| doc.get_nonempty("LogId"))
    {
        put("logid", OwnedValue::from(v.to_owned()));
    }
    // Hundredths of a degree; the vendor code uses -1 for "not measured".
    if let Some(t) = doc
        .get_nonempty("BodyTemperature100")
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| *t >= 0)
    {
        put("temperature", OwnedValue::from(t as f64 / 100.0));
    }
    if let Some(img) = doc.get_nonempty("LogImage") {
        // Some firmware wraps long base64 lines; the decoder wants it unbroken.
        let img: String = img.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        put("image", OwnedValue::from(img));
    }
    OwnedValue::from(rec)
}

/// A user name for `SetUserData`: UTF-16LE in a zero-filled `(24 + 1) * 2` byte buffer, base64.
/// `None` when it does not fit (the C# sample silently cuts it to 12 characters; we refuse).
pub(super) fn encode_name(name: &str) -> Option<String> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return None;
    }
    let mut buf = [0u8; (MAX_NAME_UNITS + 1) * 2];
    for (slot, unit) in buf.chunks_exact_mut(2).zip(units) {
        slot.copy_from_slice(&unit.to_le_bytes());
    }
    Some(B64.encode(buf))
}

/// The reverse of `encode_name`: up to the first NUL.
pub(super) fn decode_name(b64: &str) -> Option<String> {
    let bytes = B64.decode(b64.trim()).ok()?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .take_while(|u| *u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// A card number: base64 of the little-endian u32.
pub(super) fn encode_card(card: u32) -> String {
    B64.encode(card.to_le_bytes())
}

pub(super) fn decode_card(b64: &str) -> Option<u32> {
    let bytes = B64.decode(b64.trim()).ok()?;
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A user period day: `((yy - 2000) << 16) + (mm << 8) + dd`. `None` before 2000 (not representable).
pub(super) fn pack_period(d: Date) -> Option<u32> {
    let years = u32::try_from(d.year()).ok()?.checked_sub(2000)?;
    Some((years << 16) + ((d.month() as u32) << 8) + d.day() as u32)
}

pub(super) fn unpack_period(v: u32) -> Option<Date> {
    let year = i16::try_from(2000 + (v >> 16)).ok()?;
    Date::new(year, ((v >> 8) & 0xff) as i8, (v & 0xff) as i8).ok()
}

/// A token in the shape the vendor issues (a GUID string, which every firmware accepts), derived
/// from the runtime's random seed: splitmix64 spreads it over 16 bytes, version and variant bits
/// are set as for UUID v4.
pub(super) fn token_from(seed: u64) -> String {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&next().to_le_bytes());
    b[8..].copy_from_slice(&next().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Compares a presented token with the expected one without an early exit on the first difference.
pub(super) fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `Yes`/`No` flags; the C# sample also takes `True`, `Y`, `T`.
pub(super) fn is_yes(v: &str) -> bool {
    matches!(
        v.trim(),
        "Yes" | "YES" | "yes" | "True" | "true" | "Y" | "T"
    )
}

/// A `GetUserData` / `GetNextUserDataExt` reply as a user object with decoded fields (templates
/// and photos are left out: they are megabytes per user; native `GetUserData` returns them).
pub(super) fn user_json(doc: &Doc<'_>) -> String {
    let mut out = String::from("{\"enrollid\":");
    match doc
        .get_nonempty("UserID")
        .map(|id| (id, num::<u64>(Some(id))))
    {
        Some((_, Some(n))) => out.push_str(&n.to_string()),
        Some((id, None)) => json::push_str(&mut out, id),
        None => out.push_str("null"),
    }
    if let Some(name) = doc.get_nonempty("Name").and_then(decode_name) {
        out.push_str(",\"name\":");
        json::push_str(&mut out, &name);
    }
    for (key, tag) in [
        ("privilege", "Privilege"),
        ("depart", "Depart"),
        ("password", "PWD"),
    ] {
        if let Some(v) = doc.get_nonempty(tag) {
            out.push_str(&format!(",\"{key}\":"));
            json::push_str(&mut out, v);
        }
    }
    if let Some(v) = doc.get_nonempty("Enabled") {
        out.push_str(&format!(",\"enabled\":{}", is_yes(v)));
    }
    if let Some(card) = doc.get_nonempty("Card").and_then(decode_card) {
        out.push_str(&format!(",\"card\":{card}"));
    }
    let timesets: Vec<String> = (1..=5)
        .filter_map(|i| {
            doc.get_nonempty(&format!("TimeSet{i}"))
                .and_then(|v| v.parse::<u8>().ok())
        })
        .map(|v| v.to_string())
        .collect();
    if !timesets.is_empty() {
        out.push_str(&format!(",\"timesets\":[{}]", timesets.join(",")));
    }
    if let Some(used) = doc.get_nonempty("UserPeriod_Used") {
        out.push_str(&format!(",\"period_used\":{}", is_yes(used)));
        for (key, tag) in [
            ("period_start", "UserPeriod_Start"),
            ("period_end", "UserPeriod_End"),
        ] {
            if let Some(d) = doc
                .get_nonempty(tag)
                .and_then(|v| v.parse::<u32>().ok())
                .and_then(unpack_period)
            {
                out.push_str(&format!(",\"{key}\":\"{d}\""));
            }
        }
    }
    if let Some(v) = doc.get_nonempty("FaceEnrolled") {
        out.push_str(&format!(",\"face_enrolled\":{}", is_yes(v)));
    }
    if let Some(mask) = doc
        .get_nonempty("Fingers")
        .and_then(|v| v.parse::<u32>().ok())
    {
        // Bit 2i: finger i enrolled; bit 2i+1: finger i is a duress finger (§2.2).
        let list = |bit: u32| -> String {
            let fingers: Vec<String> = (0..10)
                .filter(|i| mask >> (2 * i + bit) & 1 == 1)
                .map(|i| i.to_string())
                .collect();
            fingers.join(",")
        };
        out.push_str(&format!(
            ",\"fingers\":[{}],\"duress_fingers\":[{}]",
            list(0),
            list(1)
        ));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn device_times_padded_unpadded_and_other_separators() {
        let t = date(2026, 9, 6).at(8, 55, 20, 0);
        assert_eq!(parse_time("2026-9-6-T8:55:20Z"), Some(t));
        assert_eq!(parse_time(" 2026-09-06-T08:55:20Z "), Some(t));
        assert_eq!(parse_time("2026-09-06T08:55:20"), Some(t));
        assert_eq!(parse_time("2026-09-06 08:55:20"), Some(t));
        assert_eq!(
            parse_time("2026-09-06 08:55"),
            Some(date(2026, 9, 6).at(8, 55, 0, 0))
        );
        for bad in [
            "",
            "2026-13-01-T00:00:00Z",
            "2026-02-30-T00:00:00Z",
            "x-1-1-T1:1:1Z",
            "2026-1-1-T1:1:1:1Z",
            "2026-1-1-1-T1:1:1Z",
            "2026-+1-1-T1:1:1Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(format_time(t), "2026-09-06-T08:55:20Z");
    }

    #[test]
    fn names_are_utf16le_in_a_zero_filled_50_byte_buffer() {
        let b64 = encode_name("Zoë").unwrap();
        let raw = B64.decode(&b64).unwrap();
        assert_eq!(raw.len(), 50);
        assert_eq!(&raw[..6], &[b'Z', 0, b'o', 0, 0xeb, 0]);
        assert!(raw[6..].iter().all(|b| *b == 0));
        assert_eq!(decode_name(&b64).as_deref(), Some("Zoë"));
        assert!(encode_name(&"x".repeat(24)).is_some());
        assert_eq!(encode_name(&"x".repeat(25)), None);
        // A character outside the BMP takes two units.
        assert_eq!(encode_name(&format!("{}😀", "x".repeat(23))), None);
    }

    #[test]
    fn cards_and_periods() {
        assert_eq!(encode_card(0x0403_0201), B64.encode([1, 2, 3, 4]));
        assert_eq!(decode_card(&encode_card(123_456)), Some(123_456));
        assert_eq!(decode_card("AQI="), None);
        assert_eq!(
            pack_period(date(2026, 3, 5)),
            Some((26 << 16) + (3 << 8) + 5)
        );
        assert_eq!(
            unpack_period((26 << 16) + (3 << 8) + 5),
            Some(date(2026, 3, 5))
        );
        assert_eq!(pack_period(date(1999, 12, 31)), None);
        assert_eq!(unpack_period(0), None);
    }

    #[test]
    fn tokens_look_like_guids_and_compare_exactly() {
        let t = token_from(1);
        assert_eq!(t.len(), 36);
        assert_eq!(t.as_bytes()[14], b'4');
        assert!(matches!(t.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert!(t.split('-').map(str::len).eq([8, 4, 4, 4, 12]));
        assert_ne!(token_from(2), t, "different seeds, different tokens");
        assert!(token_eq(&t, &token_from(1)));
        assert!(!token_eq(&t, &token_from(2)));
        assert!(!token_eq(&t, ""));
    }

    #[test]
    fn user_replies_are_decoded() {
        let frame = format!(
            "<Message><Response>GetUserData</Response><UserID>42</UserID><Name>{}</Name><Privilege>Manager</Privilege><Depart>3</Depart><Enabled>Yes</Enabled><TimeSet1>1</TimeSet1><TimeSet2>49</TimeSet2><UserPeriod_Used>Yes</UserPeriod_Used><UserPeriod_Start>{}</UserPeriod_Start><UserPeriod_End>{}</UserPeriod_End><Card>{}</Card><PWD>0123</PWD><FaceEnrolled>No</FaceEnrolled><Fingers>7</Fingers><Result>OK</Result></Message>",
            encode_name("Ana").unwrap(),
            pack_period(date(2026, 1, 1)).unwrap(),
            pack_period(date(2026, 12, 31)).unwrap(),
            encode_card(99),
        );
        let doc = Doc::parse(frame.as_bytes()).unwrap();
        assert_eq!(
            user_json(&doc),
            r#"{"enrollid":42,"name":"Ana","privilege":"Manager","depart":"3","password":"0123","enabled":true,"card":99,"timesets":[1,49],"period_used":true,"period_start":"2026-01-01","period_end":"2026-12-31","face_enrolled":false,"fingers":[0,1],"duress_fingers":[0]}"#
        );
    }
}
