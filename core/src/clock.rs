//! One clock rule for every terminal, sans-IO: which wall clock a terminal keeps, how the server
//! sets it, and when it has drifted.
//!
//! Terminals speak wall-clock time with no offset (AiFace `time`, SmackBio `Time` whose `Z` is
//! not UTC). The rule, in order:
//! 1. the device's configured zone (setting `timezone`): the server sets the terminal's clock in
//!    it and reads its times in it;
//! 2. else the offset the terminal reports: SmackBio's `UtcTimezoneMinutes` on a record (which
//!    wins for that record in any case), or the offset its own clock shows against the server's
//!    (AiFace `reg` `devinfo.time`, SmackBio `KeepAlive` `DevTime`), rounded to the quarter hour
//!    that every real zone offset is a multiple of. The server then never moves the terminal's
//!    clock to another zone: it keeps the terminal's own offset;
//! 3. else UTC, which is how the store reads records that carry no offset: AiFace and HTTP
//!    terminals, whose records never carry one, are set to UTC (`wall_or_utc`), so what they
//!    record from then on is read right. SmackBio records carry the terminal's own configured
//!    offset (`UtcTimezoneMinutes`), which a clock set to UTC would contradict: those are not
//!    set at all until the rule knows their wall time.
//!
//! The server's own zone is never used: a gateway in one zone serves terminals in many.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use simd_json::OwnedValue;
use simd_json::prelude::*;

/// How far a terminal's clock may be from the server's before a `clock_drift` event is stored.
/// Attendance is read to the minute; a minute off puts punches on the wrong side of a shift edge.
pub const MAX_DRIFT: SignedDuration = SignedDuration::from_secs(60);

/// Real zone offsets are whole quarter hours, within ±14 h (Kiribati +14, Baker Island −12).
const QUARTER_HOUR: i64 = 15 * 60;
const MAX_OFFSET_SECONDS: i64 = 14 * 3600;

/// A terminal's clock as this session knows it.
#[derive(Clone, Debug)]
pub struct Clock {
    zone: Option<TimeZone>,
    /// Seconds east of UTC the terminal reported, when no zone is configured.
    reported: Option<i32>,
    /// A drift was reported and the clock has not been seen right since: report it once.
    drifting: bool,
}

/// A terminal's clock found off by more than `MAX_DRIFT`.
#[derive(Debug, PartialEq)]
pub struct Drift {
    pub device: DateTime,
    pub expected: DateTime,
    /// Positive: the terminal is ahead.
    pub seconds: i64,
}

impl Clock {
    /// `zone`: the device's configured zone, if any.
    pub fn new(zone: Option<TimeZone>) -> Clock {
        Clock {
            zone,
            reported: None,
            drifting: false,
        }
    }

    /// Whether the server may set the terminal's clock: it knows which wall time to set.
    pub fn known(&self) -> bool {
        self.zone.is_some() || self.reported.is_some()
    }

    /// Whether the zone was configured (the clock is then set at every login).
    pub fn configured(&self) -> bool {
        self.zone.is_some()
    }

    /// The terminal's wall time at `now`, if the rule knows it.
    pub fn wall(&self, now: Timestamp) -> Option<DateTime> {
        match (&self.zone, self.reported) {
            (Some(tz), _) => Some(now.to_zoned(tz.clone()).datetime()),
            (None, Some(secs)) => {
                let off = Offset::from_seconds(secs).ok()?;
                Some(now.to_zoned(TimeZone::fixed(off)).datetime())
            }
            (None, None) => None,
        }
    }

    /// The terminal's wall time at `now` by the rule, UTC when it knows none (rule 3).
    pub fn wall_or_utc(&self, now: Timestamp) -> DateTime {
        self.wall(now)
            .unwrap_or_else(|| now.to_zoned(TimeZone::UTC).datetime())
    }

    /// The zone to write wall times in for commands (user periods, `set_time`): the configured
    /// one, else the reported offset, else UTC (the operator then gave explicit times).
    pub fn tz(&self) -> TimeZone {
        match (&self.zone, self.reported) {
            (Some(tz), _) => tz.clone(),
            (None, Some(secs)) => Offset::from_seconds(secs).map_or(TimeZone::UTC, TimeZone::fixed),
            (None, None) => TimeZone::UTC,
        }
    }

    /// The terminal stated its offset (SmackBio `UtcTimezoneMinutes`). Kept only when no zone
    /// is configured; out-of-range values are not an offset.
    pub fn learn_offset_minutes(&mut self, minutes: i64) {
        let secs = minutes.saturating_mul(60);
        if self.zone.is_none() && secs.abs() <= MAX_OFFSET_SECONDS {
            self.reported = i32::try_from(secs).ok();
        }
    }

    /// The terminal showed its own clock (`device`) at `now`. Without a configured zone or a
    /// stated offset, its offset is learned from it (to the quarter hour). Returns a drift the
    /// first time the clock is seen off by more than `MAX_DRIFT`; once it is seen right again, a
    /// later drift is reported again.
    pub fn observe(&mut self, device: DateTime, now: Timestamp) -> Option<Drift> {
        if !self.known() {
            let apart = device
                .to_zoned(TimeZone::UTC)
                .ok()?
                .timestamp()
                .duration_since(now)
                .as_secs();
            let quarters = (apart as f64 / QUARTER_HOUR as f64).round() as i64;
            let secs = quarters.saturating_mul(QUARTER_HOUR);
            if secs.abs() > MAX_OFFSET_SECONDS {
                return None;
            }
            self.reported = i32::try_from(secs).ok();
        }
        let expected = self.wall(now)?;
        let seconds = expected.duration_until(device).as_secs();
        if seconds.unsigned_abs() <= MAX_DRIFT.as_secs().unsigned_abs() {
            self.drifting = false;
            return None;
        }
        if std::mem::replace(&mut self.drifting, true) {
            return None;
        }
        Some(Drift {
            device,
            expected,
            seconds,
        })
    }

    /// Gives a record the terminal's reported offset when it carries none and no zone is
    /// configured, so the store reads its wall time at the terminal's offset instead of UTC.
    pub fn stamp(&self, record: &mut OwnedValue) {
        let (None, Some(secs)) = (&self.zone, self.reported) else {
            return;
        };
        if let Some(obj) = record.as_object_mut()
            && !obj.contains_key("utc_offset_minutes")
        {
            obj.insert(
                "utc_offset_minutes".into(),
                OwnedValue::from(i64::from(secs / 60)),
            );
        }
    }

    /// The payload of a `clock_drift` event: what the terminal showed, what it should have, and
    /// by which rule.
    pub fn drift_payload(&self, drift: &Drift) -> String {
        let fmt = |t: DateTime| t.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let mut out = String::from("{\"device_time\":");
        crate::json::push_str(&mut out, &fmt(drift.device));
        out.push_str(",\"expected\":");
        crate::json::push_str(&mut out, &fmt(drift.expected));
        out.push_str(",\"drift_seconds\":");
        out.push_str(&drift.seconds.to_string());
        match (&self.zone, self.reported) {
            (Some(tz), _) => {
                out.push_str(",\"zone\":");
                crate::json::push_str(&mut out, tz.iana_name().unwrap_or("fixed"));
            }
            (None, Some(secs)) => {
                out.push_str(",\"utc_offset_minutes\":");
                out.push_str(&(secs / 60).to_string());
            }
            (None, None) => {}
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("test time")
    }

    fn civil(s: &str) -> DateTime {
        s.parse().expect("test civil time")
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").expect("tzdb")
    }

    #[test]
    fn a_configured_zone_decides_the_wall_time_even_in_daylight_saving() {
        let c = Clock::new(Some(berlin()));
        assert!(c.known() && c.configured());
        // 08:00 UTC in July is 10:00 in Berlin (CEST), in January 09:00 (CET).
        assert_eq!(
            c.wall(at("2026-07-01T08:00:00Z")),
            Some(civil("2026-07-01T10:00:00"))
        );
        assert_eq!(
            c.wall(at("2026-01-05T08:00:00Z")),
            Some(civil("2026-01-05T09:00:00"))
        );
    }

    #[test]
    fn without_a_zone_nothing_is_assumed_and_the_server_zone_is_never_used() {
        let c = Clock::new(None);
        assert!(!c.known());
        assert_eq!(c.wall(at("2026-07-01T08:00:00Z")), None);
        let mut rec = simd_json::json!({"enrollid": 1});
        c.stamp(&mut rec);
        assert_eq!(rec, simd_json::json!({"enrollid": 1}));
    }

    #[test]
    fn the_offset_a_terminal_shows_is_learned_to_the_quarter_hour() {
        let mut c = Clock::new(None);
        // India, +05:30, with the terminal 40 s ahead: no drift event (within a minute).
        assert_eq!(
            c.observe(civil("2026-07-01T13:30:40"), at("2026-07-01T08:00:00Z")),
            None
        );
        assert!(c.known() && !c.configured());
        assert_eq!(
            c.wall(at("2026-07-01T09:00:00Z")),
            Some(civil("2026-07-01T14:30:00"))
        );
        let mut rec = simd_json::json!({"enrollid": 1});
        c.stamp(&mut rec);
        assert_eq!(
            rec,
            simd_json::json!({"enrollid": 1, "utc_offset_minutes": 330})
        );
        // A record's own offset is kept.
        let mut rec = simd_json::json!({"enrollid": 1, "utc_offset_minutes": 480});
        c.stamp(&mut rec);
        assert_eq!(rec["utc_offset_minutes"], 480);
    }

    #[test]
    fn a_stated_offset_is_learned_and_a_configured_zone_ignores_it() {
        let mut c = Clock::new(None);
        c.learn_offset_minutes(480);
        assert_eq!(
            c.wall(at("2026-07-01T00:00:00Z")),
            Some(civil("2026-07-01T08:00:00"))
        );
        c.learn_offset_minutes(100_000);
        assert_eq!(c.tz(), TimeZone::fixed(Offset::constant(8)));
        let mut z = Clock::new(Some(berlin()));
        z.learn_offset_minutes(480);
        assert_eq!(z.tz(), berlin());
    }

    #[test]
    fn drift_is_reported_once_until_the_clock_is_right_again() {
        let mut c = Clock::new(Some(berlin()));
        let now = at("2026-07-01T08:00:00Z");
        let drift = c.observe(civil("2026-07-01T10:03:00"), now);
        assert_eq!(
            drift,
            Some(Drift {
                device: civil("2026-07-01T10:03:00"),
                expected: civil("2026-07-01T10:00:00"),
                seconds: 180,
            })
        );
        let payload = c.drift_payload(drift.as_ref().expect("drift"));
        assert_eq!(
            payload,
            r#"{"device_time":"2026-07-01 10:03:00","expected":"2026-07-01 10:00:00","drift_seconds":180,"zone":"Europe/Berlin"}"#
        );
        assert_eq!(c.observe(civil("2026-07-01T10:03:00"), now), None);
        assert_eq!(c.observe(civil("2026-07-01T10:00:30"), now), None);
        // Behind by two hours: the factory-default zone, or daylight saving not applied.
        assert_eq!(
            c.observe(civil("2026-07-01T08:00:00"), now)
                .map(|d| d.seconds),
            Some(-7200)
        );
    }

    #[test]
    fn a_learned_offset_then_catches_drift_within_the_quarter_hour() {
        let mut c = Clock::new(None);
        c.learn_offset_minutes(60);
        let now = at("2026-07-01T08:00:00Z");
        assert_eq!(
            c.observe(civil("2026-07-01T09:05:00"), now)
                .map(|d| d.seconds),
            Some(300)
        );
        // Nonsense clocks teach nothing.
        let mut c = Clock::new(None);
        assert_eq!(c.observe(civil("1999-01-01T00:00:00"), now), None);
        assert!(!c.known());
    }
}
