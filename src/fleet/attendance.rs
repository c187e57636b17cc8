//! Attendance punches: their keys and how they are stored. Normalising the records terminals send
//! (sans-IO) is `fleetgate_core::attendance`, re-exported here.
//!
//! A punch is payroll data: it is stored exactly once however often the terminal re-sends it, and
//! acknowledged only after the batch holding it commits. Identity is (device, user id, device local
//! time, event): the same punch re-sent is recognised even if the device's time zone setting has
//! changed since, because the key uses the local time as sent, not the derived UTC instant.

use std::rc::Rc;

use uuid::Uuid;

use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::fleet::webhooks;
use crate::json;
use crate::store::commit::{Batcher, Staging, Ticket};
use crate::store::{Cf, StoreError, keys};
use crate::time::{now_ms, now_us, push_rfc3339_ms};

// Normalising what terminals send is sans-IO and lives in the core crate (fuzzed there).
pub use fleetgate_core::attendance::{
    Kind, MAX_PHOTO, MAX_RECORDS, Punch, RecordError, UNKNOWN_FACE, identity, parse_record,
    parse_time,
};

// The key layouts live with the others in `store::keys`; the names here are the rules' own.
pub use crate::store::keys::{
    attendance as key, attendance_by_time as time_key, attendance_dedup as dedup_key,
    primary_from_time_key,
};

/// The API item for a stored punch, built once at write time.
#[allow(clippy::too_many_arguments)]
pub fn item_json(
    primary: &[u8; 32],
    dev: &Uuid,
    serial: Option<&str>,
    p: &Punch,
    utc_us: u64,
    received_ms: u64,
    has_photo: bool,
) -> String {
    use std::fmt::Write as _;
    // Built without temporary strings: every stored punch passes here.
    let mut s = String::with_capacity(256 + p.fields.len());
    s.push_str("{\"id\":\"");
    crate::fleet::auth::push_hex(&mut s, primary);
    s.push_str("\",\"device_id\":\"");
    s.push_str(dev.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    s.push_str("\",\"serial\":");
    match serial {
        Some(x) => json::push_str(&mut s, x),
        None => s.push_str("null"),
    }
    // Writing into a String cannot fail.
    let _ = write!(s, ",\"enrollid\":{}", p.enrollid);
    s.push_str(",\"local_time\":");
    json::push_str(&mut s, &p.local_raw);
    s.push_str(",\"utc_time\":\"");
    push_rfc3339_ms(&mut s, utc_us / 1000);
    s.push_str("\",\"received_at\":\"");
    push_rfc3339_ms(&mut s, received_ms);
    s.push_str("\",\"fields\":");
    s.push_str(&p.fields);
    if has_photo {
        s.push_str(",\"photo_url\":\"/api/attendance/");
        crate::fleet::auth::push_hex(&mut s, primary);
        s.push_str("/photo\"");
    }
    if p.photo_dropped {
        s.push_str(",\"photo_dropped\":true");
    }
    s.push('}');
    s
}

/// The punch's own `enrollid` in an item written by `item_json`, read without parsing the item (a
/// filtered list may examine thousands). The first `,"enrollid":` in the item is the top-level
/// field: everything before it is written by `item_json` (hex ids, and the serial as an escaped
/// JSON string, in which every `"` follows a backslash and so cannot close `"enrollid"`), while
/// the device's `fields`, which may hold an `"enrollid"` of their own at any depth, come after it.
pub fn item_enrollid(item: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b",\"enrollid\":";
    let at = item.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = item[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&item[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Stages a punch with its index, de-duplication entry and photo.
pub fn stage(
    st: &mut Staging<'_>,
    dev: &Uuid,
    primary: &[u8; 32],
    identity: &[u8; 16],
    item: &str,
    photo: Option<&[u8]>,
) -> Result<(), StoreError> {
    st.put(Cf::Attendance, primary, item.as_bytes())?;
    st.put(Cf::AttendanceByTime, &time_key(primary), &[])?;
    st.put(Cf::AttendanceDedup, &dedup_key(dev, identity), primary)?;
    if let Some(b) = photo {
        st.put(Cf::Photos, primary, b)?;
    }
    Ok(())
}

/// Whether a spreadsheet could take a cell as a formula (CSV injection): it begins, after any
/// spaces, with `=`, `+`, `-` or `@`, or with a tab or line break, which spreadsheets skip before
/// reading what follows. A plain number such as `-5` or `+1.5` is data, not a formula.
fn formula_like(s: &str) -> bool {
    s.trim_start_matches(' ')
        .starts_with(['=', '+', '-', '@', '\t', '\r', '\n'])
        && s.parse::<f64>().is_err()
}

/// A CSV field: quoted when it holds a separator, quote or line break (RFC 4180); a cell a
/// spreadsheet could run as a formula (`formula_like`) is prefixed with `'`, which makes it text.
pub fn csv_field(out: &mut String, s: &str) {
    let guarded = formula_like(s);
    let needs_quotes = guarded || s.contains([',', '"', '\n', '\r']);
    if needs_quotes {
        out.push('"');
        if guarded {
            out.push('\'');
        }
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// What a terminal or HTTP device hears when its records could not be stored: it keeps them.
pub const NOT_STORED: &str = "the records could not be stored; keep them and send again";

/// Stages a batch of records a device sent (`sendlog` and the terminals' logs). Punches are
/// de-duplicated against the store and within the batch; door events and unknown faces become
/// events; a record that cannot be read is kept as an `attendance_invalid` event rather than
/// dropped (a re-send could never fix it, and refusing the batch would make the device re-send it
/// forever). Returns the ticket to wait on before answering, or None when nothing new was staged.
pub fn stage_records(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    list: &[simd_json::OwnedValue],
) -> Result<Option<Rc<Ticket>>, StoreError> {
    stage_records_with(fleet, batch, dev, list, |_| Ok(false))
}

/// `stage_records`, for terminals whose photos come apart from their punches (ZKTeco
/// `ATTPHOTO`): `photo_stored` says whether a photo is already stored under a punch's key, so
/// its item links it.
pub fn stage_records_with(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    list: &[simd_json::OwnedValue],
    photo_stored: impl Fn(&[u8; 32]) -> Result<bool, StoreError>,
) -> Result<Option<Rc<Ticket>>, StoreError> {
    let store = &fleet.store;
    // The clock rule (`crate::clock`): the configured zone, else the offset the record carries
    // (its own, or the one its terminal reported), else UTC; never the server's own zone, which
    // would make a stored time depend on where the gateway runs.
    let tz = dev.zone().unwrap_or(jiff::tz::TimeZone::UTC);
    let serial = dev.with_record(|r| r.serial.clone());
    let received = now_ms();
    let mut seen = std::collections::HashSet::new();
    let mut staged_any = false;
    // Counted here and reported once: a counter looked up per record was 3 % of a burst's CPU.
    let (mut punches, mut duplicates) = (0u64, 0u64);
    let ticket = batch.stage(|st| {
        for raw in list {
            let p = match parse_record(raw) {
                Ok(p) => p,
                Err(e) => {
                    let mut payload = String::from("{\"error\":");
                    json::push_str(&mut payload, &e.0);
                    payload.push_str(",\"record\":");
                    payload.push_str(&json::encode(raw));
                    payload.push('}');
                    let id = store.ids.next(now_us());
                    webhooks::stage_device_event(
                        &fleet.webhooks,
                        st,
                        id,
                        &dev.id,
                        "attendance_invalid",
                        &payload,
                        None,
                    )?;
                    staged_any = true;
                    continue;
                }
            };
            let identity = p.identity();
            if !seen.insert(identity)
                || store.exists(Cf::AttendanceDedup, &dedup_key(&dev.id, &identity))?
            {
                duplicates += 1;
                continue;
            }
            let utc_us = p
                .utc(&tz)
                .map_or(received * 1000, |t| t.as_microsecond().max(0) as u64);
            let primary = key(&dev.id, utc_us, &identity);
            let item = item_json(
                &primary,
                &dev.id,
                serial.as_deref(),
                &p,
                utc_us,
                received,
                p.photo.is_some() || photo_stored(&primary)?,
            );
            match p.kind {
                Kind::Punch => {
                    stage(st, &dev.id, &primary, &identity, &item, p.photo.as_deref())?;
                    punches += 1;
                    if fleet.webhooks.wants(webhooks::Kind::Attendance) {
                        // The message carries the punch's person as they are when it is stored.
                        let data = match (fleet.people.on_punch(p.enrollid), item.strip_suffix('}'))
                        {
                            (Some(person), Some(body)) => format!("{body},\"person\":{person}}}"),
                            _ => item.clone(),
                        };
                        let at = utc_us / 1000;
                        webhooks::stage_identified(
                            &fleet.webhooks,
                            st,
                            webhooks::Kind::Attendance,
                            &dev.id,
                            identity,
                            "attendance.punch",
                            at,
                            &data,
                        )?;
                    }
                }
                Kind::Door | Kind::UnknownFace => {
                    // Not attendance: an event, de-duplicated like a punch.
                    let kind = if p.kind == Kind::Door {
                        "door_event"
                    } else {
                        "unknown_face"
                    };
                    let id = store.ids.next(now_us());
                    webhooks::stage_device_event(
                        &fleet.webhooks,
                        st,
                        id,
                        &dev.id,
                        kind,
                        &item,
                        None,
                    )?;
                    st.put(
                        Cf::AttendanceDedup,
                        &dedup_key(&dev.id, &identity),
                        &keys::event(id),
                    )?;
                    if let Some(ph) = &p.photo {
                        st.put(Cf::Photos, &primary, ph)?;
                    }
                }
            }
            staged_any = true;
        }
        Ok(())
    });
    metrics::counter!("fleetgate_attendance_duplicates_total").increment(duplicates);
    let ticket = ticket?;
    metrics::counter!("fleetgate_attendance_records_total").increment(punches);
    Ok(staged_any.then_some(ticket))
}

/// Stores a batch of records and waits for the commit: `Err` carries what to tell the device.
pub async fn store_records(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    list: &[simd_json::OwnedValue],
) -> Result<(), &'static str> {
    let ticket = stage_records(fleet, batch, dev, list).map_err(|e| {
        tracing::error!(error = %e, "staging attendance failed");
        NOT_STORED
    })?;
    match ticket {
        Some(t) if !t.wait().await => Err(NOT_STORED),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_between_indexes() {
        let dev = Uuid::from_u128(9);
        let k = key(&dev, 42, &[7; 16]);
        assert_eq!(primary_from_time_key(&time_key(&k)), Some(k));
    }

    #[test]
    fn the_enrollid_read_back_is_the_punchs_own_not_one_nested_in_its_fields() {
        let raw: simd_json::OwnedValue = simd_json::json!({
            "enrollid": 7,
            "time": "2026-06-10 08:00:00",
            "name": "\",\"enrollid\":5,",
            "extra": {"enrollid": 5, "deeper": [{"enrollid": 5}]}
        });
        let p = parse_record(&raw).expect("a valid record");
        let dev = Uuid::from_u128(1);
        let primary = key(&dev, 1, &p.identity());
        // A serial that spells the key too: escaped, it cannot be taken for the field.
        let serial = Some(",\"enrollid\":5,");
        let item = item_json(&primary, &dev, serial, &p, 1, 1, false);
        assert!(item.contains("\"enrollid\":5,"), "the trap is set: {item}");
        assert_eq!(item_enrollid(item.as_bytes()), Some(7), "{item}");

        for id in [0, 5, 50, 55, u64::MAX] {
            let raw = simd_json::json!({"enrollid": id, "time": "2026-06-10 08:00:00"});
            let p = parse_record(&raw).expect("a valid record");
            let item = item_json(&primary, &dev, None, &p, 1, 1, false);
            assert_eq!(item_enrollid(item.as_bytes()), Some(id), "{item}");
        }
        assert_eq!(item_enrollid(b"{\"enrollid\":5}"), None, "not an item");
        assert_eq!(item_enrollid(b"{\"id\":\"x\",\"enrollid\":}"), None);
    }

    #[test]
    fn csv_fields_are_quoted_and_formula_safe() {
        let mut s = String::new();
        csv_field(&mut s, "a,b");
        s.push('|');
        csv_field(&mut s, "say \"hi\"");
        s.push('|');
        csv_field(&mut s, "=1+1");
        s.push('|');
        csv_field(&mut s, "-5");
        assert_eq!(s, "\"a,b\"|\"say \"\"hi\"\"\"|\"'=1+1\"|-5");
    }

    #[test]
    fn csv_formulas_behind_spaces_tabs_and_line_breaks_are_guarded() {
        let cell = |v: &str| {
            let mut s = String::new();
            csv_field(&mut s, v);
            s
        };
        for (v, want) in [
            ("\t=1+1", "\"'\t=1+1\""),
            ("\r=1+1", "\"'\r=1+1\""),
            ("\n=1+1", "\"'\n=1+1\""),
            ("\tplain", "\"'\tplain\""),
            ("  =HYPERLINK(\"x\")", "\"'  =HYPERLINK(\"\"x\"\")\""),
            (" @SUM(A1)", "\"' @SUM(A1)\""),
            (" +1", "\"' +1\""),
            ("   -2+3", "\"'   -2+3\""),
            ("@x", "\"'@x\""),
            ("+cmd", "\"'+cmd\""),
        ] {
            assert_eq!(cell(v), want, "{v:?}");
        }
        // Numbers, text, spaces inside or alone, and formula characters later in the cell are data.
        for v in ["-5", "+1.5", "36.5", "Doe John", "a=b", "  ", "", "x\t=1"] {
            assert!(!formula_like(v), "{v:?}");
        }
        assert_eq!(cell("a=b"), "a=b");
        assert_eq!(cell("-5"), "-5");
    }
}
