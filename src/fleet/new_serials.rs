//! How many serials no device has one source address may present (`--new-serials-per-minute`).
//!
//! Each such serial takes a place in the bounded pending list (or, with `--auto-approve`, becomes a
//! device). Unlimited, one address cycling serials at a thousand a second evicts every real terminal
//! waiting for approval within seconds. Serials already pending do not count: a real terminal
//! retrying for days costs nothing.
//!
//! A GCRA per address (one timestamp each: the "theoretical arrival time"), equivalent to a token
//! bucket of `per_minute` a minute with bursts of twice that. IPv6 addresses count per /64, the
//! block one subscriber gets, so one host cannot take fresh addresses from its prefix. The map is
//! bounded: entries whose bucket is full again are swept (at most once a second, when the map is
//! full); if it is still full, new addresses are refused until room frees up, which protects the
//! pending list rather than the newcomers of a flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::cidr::mask;

/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 4096;
/// How often a full map may be swept for entries that have refilled.
const SWEEP_EVERY_MS: u64 = 1000;

pub struct NewSerials {
    /// Milliseconds per new serial at the sustained rate; 0 = no limit.
    interval_ms: u64,
    /// How far ahead of now an address's arrival time may run: the burst beyond the first one.
    tolerance_ms: u64,
    inner: Mutex<Arrivals>,
}

#[derive(Default)]
struct Arrivals {
    /// Per address: when its bucket is full again.
    tat: HashMap<IpAddr, u64>,
    swept_ms: u64,
}

impl NewSerials {
    /// `per_minute` new serials a minute per address, in bursts of up to twice that; 0 = no limit.
    pub fn new(per_minute: u32) -> NewSerials {
        let interval_ms = if per_minute == 0 {
            0
        } else {
            60_000 / u64::from(per_minute)
        };
        let burst = u64::from(per_minute) * 2;
        NewSerials {
            interval_ms,
            tolerance_ms: interval_ms * burst.saturating_sub(1),
            inner: Mutex::new(Arrivals::default()),
        }
    }

    /// Whether `ip` may present one more new serial now; counts it if so.
    pub fn admit(&self, ip: IpAddr, now: u64) -> bool {
        if self.interval_ms == 0 {
            return true;
        }
        let key = match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 => mask(v6, 64),
        };
        // Each update is one insert or field write: a poisoned map is still consistent.
        let mut a = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !a.tat.contains_key(&key) && a.tat.len() >= MAX_ADDRESSES {
            if now.saturating_sub(a.swept_ms) < SWEEP_EVERY_MS {
                return false;
            }
            a.swept_ms = now;
            a.tat.retain(|_, tat| *tat > now);
            if a.tat.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let tat = a.tat.entry(key).or_insert(now);
        let start = (*tat).max(now);
        if start - now > self.tolerance_ms {
            return false;
        }
        *tat = start + self.interval_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_the_rate() {
        let r = NewSerials::new(10);
        let a = ip("192.0.2.1");
        assert_eq!((0..25).filter(|_| r.admit(a, 1_000)).count(), 20);
        // Another address has its own bucket.
        assert!(r.admit(ip("192.0.2.2"), 1_000));
        // One more every 6 s.
        assert!(!r.admit(a, 6_999));
        assert!(r.admit(a, 7_000));
        assert!(!r.admit(a, 7_001));
        // A long pause refills the bucket, but no further than the burst.
        assert_eq!((0..25).filter(|_| r.admit(a, 1_000_000)).count(), 20);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let r = NewSerials::new(1);
        assert!(r.admit(ip("2001:db8:1:2::1"), 0));
        assert!(r.admit(ip("2001:db8:1:2::ffff"), 0));
        assert!(!r.admit(ip("2001:db8:1:2:aaaa::1"), 0), "same /64");
        assert!(r.admit(ip("2001:db8:1:3::1"), 0), "another /64");
        assert!(r.admit(ip("198.51.100.7"), 0));
        assert!(r.admit(ip("::ffff:198.51.100.7"), 0));
        assert!(!r.admit(ip("198.51.100.7"), 0));
    }

    #[test]
    fn zero_means_no_limit() {
        let r = NewSerials::new(0);
        assert!((0..10_000).all(|_| r.admit(ip("192.0.2.1"), 0)));
    }

    #[test]
    fn the_map_is_bounded_and_refilled_addresses_make_room() {
        let r = NewSerials::new(60);
        let addr = |i: usize| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        for i in 0..MAX_ADDRESSES {
            assert!(r.admit(addr(i), 0));
        }
        assert!(!r.admit(ip("192.0.2.1"), 0), "full: a new address waits");
        assert!(r.admit(addr(3), 0), "known addresses keep their buckets");
        // One second later every bucket holds its single use again (60/min): swept.
        assert!(r.admit(ip("192.0.2.1"), 1_001));
        assert!(r.inner.lock().unwrap().tat.len() <= 2);
    }
}
