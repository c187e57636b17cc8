//! Wall-clock helpers. The sans-IO cores never read a clock: the shard runtime reads it here and passes
//! `now` in, so every protocol decision that depends on time is testable with a fixed value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Now, as the conversations take it.
pub fn timestamp_now() -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(now_us() as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-06-12T10:00:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let mut out = String::with_capacity(RFC3339_MS_LEN);
    push_rfc3339_ms(&mut out, ms);
    out
}

/// The length of every `rfc3339_ms` text.
const RFC3339_MS_LEN: usize = 24;

/// The last millisecond jiff's timestamps hold, 9999-12-30T22:00:00Z: the bound this text had
/// when jiff wrote it, kept so that no stored text changes.
const MAX_RFC3339_MS: u64 = 253_402_207_200_000;

/// Appends `rfc3339_ms(ms)` to `out`. Written by hand because every stored punch and event item
/// carries two of these: a general formatter (`strftime`) was 5 % of the server's CPU in an
/// attendance burst. A time past `MAX_RFC3339_MS` is written as the epoch, as it was by jiff.
pub fn push_rfc3339_ms(out: &mut String, ms: u64) {
    let ms = if ms > MAX_RFC3339_MS { 0 } else { ms };
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, milli);
    // Every byte written above is an ASCII digit, or one of the template's.
    out.extend(b.iter().map(|&c| c as char));
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Issues strictly increasing 64-bit ids that are also receive times in microseconds (a hybrid logical
/// clock): `max(now_us, last + 1)`. Record keys built from them sort by time, stay unique across threads,
/// and stay increasing across restarts because the clock has moved on (and `observe` seeds the floor from
/// what the store already holds, in case it has not).
#[derive(Debug, Default)]
pub struct IdClock {
    last: AtomicU64,
}

impl IdClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the floor so no id at or below `seen` is ever issued.
    pub fn observe(&self, seen: u64) {
        self.last.fetch_max(seen, Ordering::AcqRel);
    }

    pub fn next(&self, now_us: u64) -> u64 {
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let id = now_us.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, id, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return id,
                Err(actual) => prev = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_781_258_400_123), "2026-06-12T10:00:00.123Z");
        assert_eq!(rfc3339_ms(MAX_RFC3339_MS), "9999-12-30T22:00:00.000Z");
        assert_eq!(rfc3339_ms(MAX_RFC3339_MS + 1), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(u64::MAX), "1970-01-01T00:00:00.000Z");
    }

    /// The hand-written formatter agrees with jiff's over leap days, century years and the
    /// whole range, sampled.
    #[test]
    fn rfc3339_agrees_with_jiff() {
        let jiff_text = |ms: u64| {
            jiff::Timestamp::from_millisecond(ms as i64)
                .expect("in range")
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let mut ms = 0u64;
        while ms <= MAX_RFC3339_MS {
            assert_eq!(rfc3339_ms(ms), jiff_text(ms), "{ms}");
            // A week and just under an hour: as the samples cross the range they drift through
            // the hours of the day and the days of the month.
            ms += 86_400_000 * 7 + 3_599_999 + 7;
        }
        for ms in [
            951_782_400_000,
            951_868_799_999,
            4_107_542_399_999,
            4_107_542_400_000,
        ] {
            assert_eq!(rfc3339_ms(ms), jiff_text(ms), "{ms}");
        }
    }

    #[test]
    fn id_clock_is_strictly_increasing_even_when_time_stalls_or_goes_back() {
        let c = IdClock::new();
        assert_eq!(c.next(100), 100);
        assert_eq!(c.next(100), 101);
        assert_eq!(c.next(50), 102);
        assert_eq!(c.next(1000), 1000);
        c.observe(5000);
        assert_eq!(c.next(1001), 5001);
    }
}
