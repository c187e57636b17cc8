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
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
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
