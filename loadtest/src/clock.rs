//! CLOCK_MONOTONIC in nanoseconds, read through libc.
//!
//! `std::time::Instant` cannot cross a process boundary, but the parent and its worker processes
//! share one kernel clock: a command's send time written by the parent into its payload can be
//! subtracted from a worker's receive time, and every worker can start its run window at the same
//! instant.

use std::time::Duration;

/// Nanoseconds since an arbitrary point (boot), the same in every process on this machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec passed by pointer; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until the monotonic clock reaches `deadline_ns` (returns at once if it has).
pub fn sleep_until(deadline_ns: u64) {
    let now = now_ns();
    if deadline_ns > now {
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

/// Seconds as nanoseconds, saturating (durations come from the command line).
pub fn secs_ns(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1e9).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Microseconds between two monotonic readings, at least 1 (HDR histograms start at 1).
pub fn elapsed_us(from_ns: u64, to_ns: u64) -> u64 {
    (to_ns.saturating_sub(from_ns) / 1000).max(1)
}

/// `YYYY-MM-DD HH:MM:SS` for a count of seconds since 1970-01-01 (UTC, no leap seconds), for the
/// wall-clock times terminals put in their attendance records.
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2026-03-01 12:34:56 UTC
        assert_eq!(civil(1_772_368_496), (2026, 3, 1, 12, 34, 56));
        // 2024-02-29 (leap day)
        assert_eq!(civil(1_709_164_800), (2024, 2, 29, 0, 0, 0));
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
