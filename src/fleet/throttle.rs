//! Failed-attempt throttling, per source address and per subject (a dashboard username, a device
//! id or serial): a few free failures, then a back-off that doubles with each further failure up
//! to a ceiling, during which even right credentials are refused. That turns online guessing into
//! a handful of tries per hour. Both maps are bounded: past `max_entries` the stalest entry is
//! forgotten, so a flood of random addresses or names costs bounded memory.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures allowed before the back-off starts.
    pub free_failures: u32,
    /// The first back-off; it doubles with each further failure, up to `max_backoff_ms`.
    pub first_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Entries kept per map.
    pub max_entries: usize,
}

impl Policy {
    /// Back-off after `count` failures: none below `free_failures`, then doubling to the ceiling.
    pub fn backoff_ms(&self, count: u32) -> u64 {
        if count < self.free_failures {
            return 0;
        }
        let doublings = (count - self.free_failures).min(20);
        (self.first_backoff_ms << doublings).min(self.max_backoff_ms)
    }
}

#[derive(Default, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
    blocked_until_ms: u64,
}

pub struct Throttle {
    policy: Policy,
    by_addr: HashMap<String, Failures>,
    by_subject: HashMap<String, Failures>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Throttle {
        Throttle {
            policy,
            by_addr: HashMap::new(),
            by_subject: HashMap::new(),
        }
    }

    /// Milliseconds until `addr` (and `subject`, if any) may try again; 0: now.
    pub fn wait_ms(&self, addr: &str, subject: Option<&str>, now: u64) -> u64 {
        let left = |f: Option<&Failures>| f.map_or(0, |f| f.blocked_until_ms.saturating_sub(now));
        let s = subject.map_or(0, |s| left(self.by_subject.get(s)));
        left(self.by_addr.get(addr)).max(s)
    }

    /// Records a failure; returns the back-off it starts (0 while failures are still free).
    pub fn fail(&mut self, addr: &str, subject: Option<&str>, now: u64) -> u64 {
        let policy = self.policy;
        let mut backoff = 0;
        let maps = [
            (&mut self.by_addr, Some(addr)),
            (&mut self.by_subject, subject),
        ];
        for (map, key) in maps {
            let Some(key) = key else { continue };
            if !map.contains_key(key) && map.len() >= policy.max_entries {
                forget_stalest(map, &policy, now);
            }
            let f = map.entry(key.to_string()).or_default();
            // A quiet spell as long as the longest back-off wipes the slate.
            if now.saturating_sub(f.last_ms) > policy.max_backoff_ms {
                *f = Failures::default();
            }
            f.count = f.count.saturating_add(1);
            f.last_ms = now;
            f.blocked_until_ms = now + policy.backoff_ms(f.count);
            backoff = backoff.max(f.blocked_until_ms - now);
        }
        backoff
    }

    /// A success clears both slates.
    pub fn succeed(&mut self, addr: &str, subject: Option<&str>) {
        self.by_addr.remove(addr);
        if let Some(s) = subject {
            self.by_subject.remove(s);
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (self.by_addr.len(), self.by_subject.len())
    }
}

/// Makes room in a full map: drop entries past their quiet spell, else the stalest one.
fn forget_stalest(map: &mut HashMap<String, Failures>, policy: &Policy, now: u64) {
    map.retain(|_, f| now.saturating_sub(f.last_ms) <= policy.max_backoff_ms);
    if map.len() >= policy.max_entries
        && let Some(k) = map
            .iter()
            .min_by_key(|(_, f)| f.last_ms)
            .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        free_failures: 3,
        first_backoff_ms: 1000,
        max_backoff_ms: 60_000,
        max_entries: 100,
    };

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles_to_the_ceiling() {
        assert_eq!(POLICY.backoff_ms(2), 0);
        assert_eq!(POLICY.backoff_ms(3), 1000);
        assert_eq!(POLICY.backoff_ms(4), 2000);
        assert_eq!(POLICY.backoff_ms(9), 60_000);
        assert_eq!(POLICY.backoff_ms(u32::MAX), 60_000);
    }

    #[test]
    fn a_blocked_address_blocks_every_subject_and_a_blocked_subject_every_address() {
        let mut t = Throttle::new(POLICY);
        assert_eq!(t.fail("a", Some("dev"), 0), 0);
        assert_eq!(t.fail("a", Some("dev"), 1), 0);
        assert_eq!(t.fail("a", Some("dev"), 2), 1000);
        assert_eq!(t.wait_ms("a", Some("other"), 2), 1000);
        assert_eq!(t.wait_ms("b", Some("dev"), 2), 1000);
        assert_eq!(t.wait_ms("b", Some("other"), 2), 0);
        assert_eq!(t.wait_ms("a", None, 1002), 0);
        t.succeed("a", Some("dev"));
        assert_eq!(t.wait_ms("a", Some("dev"), 3), 0);
    }

    #[test]
    fn a_quiet_spell_wipes_the_slate() {
        let mut t = Throttle::new(POLICY);
        for i in 0..5 {
            t.fail("a", None, i);
        }
        assert!(t.wait_ms("a", None, 5) > 0);
        assert_eq!(t.fail("a", None, 200_000), 0);
    }

    #[test]
    fn maps_are_bounded() {
        let mut t = Throttle::new(POLICY);
        for i in 0..POLICY.max_entries as u64 + 10 {
            t.fail(&format!("a{i}"), Some(&format!("u{i}")), i);
        }
        let (a, s) = t.len();
        assert!(a <= POLICY.max_entries && s <= POLICY.max_entries);
    }
}
