//! Failed-attempt back-off: a few free failures per key, then a wait that doubles with each further
//! failure up to a ceiling. Keys are whatever the caller counts by (an address, a username, a
//! username at an address). Every map is bounded: past `max_entries` the stalest entry is
//! forgotten, so a flood of random addresses or names costs bounded memory.
//!
//! `LoginThrottle` combines three of them for dashboard passwords so that guessing is slowed
//! everywhere while nobody can aim a lockout at another user (see its doc).

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

    /// A slate is wiped after a quiet spell this long (at least the longest back-off).
    fn quiet_ms(&self) -> u64 {
        self.max_backoff_ms.max(15 * 60 * 1000)
    }
}

#[derive(Default, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
    blocked_until_ms: u64,
}

/// Failures counted per key under one policy.
pub struct Backoff {
    policy: Policy,
    map: HashMap<String, Failures>,
}

impl Backoff {
    pub fn new(policy: Policy) -> Backoff {
        Backoff {
            policy,
            map: HashMap::new(),
        }
    }

    /// Milliseconds until `key` may try again; 0: now.
    pub fn wait_ms(&self, key: &str, now: u64) -> u64 {
        self.map
            .get(key)
            .map_or(0, |f| f.blocked_until_ms.saturating_sub(now))
    }

    /// Records a failure; returns the back-off now in effect for `key` (0 while still free).
    pub fn fail(&mut self, key: &str, now: u64) -> u64 {
        let policy = self.policy;
        if !self.map.contains_key(key) && self.map.len() >= policy.max_entries {
            self.forget_stalest(now);
        }
        let f = self.map.entry(key.to_string()).or_default();
        if now.saturating_sub(f.last_ms) > policy.quiet_ms() {
            *f = Failures::default();
        }
        f.count = f.count.saturating_add(1);
        f.last_ms = now;
        f.blocked_until_ms = now + policy.backoff_ms(f.count);
        f.blocked_until_ms - now
    }

    pub fn clear(&mut self, key: &str) {
        self.map.remove(key);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Makes room in a full map: drop entries past their quiet spell, else the stalest one.
    fn forget_stalest(&mut self, now: u64) {
        let quiet = self.policy.quiet_ms();
        self.map
            .retain(|_, f| now.saturating_sub(f.last_ms) <= quiet);
        if self.map.len() >= self.policy.max_entries
            && let Some(k) = self
                .map
                .iter()
                .min_by_key(|(_, f)| f.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&k);
        }
    }
}

/// Dashboard password attempts. Passwords are low-entropy, so guessing must be slowed; but a
/// lockout keyed by username alone can be aimed (anyone can fail five times as `admin`), and one
/// keyed by address alone lets a botnet guess freely. So failures are counted three ways:
/// - per username at an address: a few free, then the long back-off. This is the lock a guesser
///   meets, and only they (and whoever shares their address) meet it.
/// - per username, over all addresses: a generous ceiling, then a short back-off. This slows a
///   distributed guesser to a trickle without locking the user out: the wait stays short, and a
///   browser that has logged in as this user before (`trusted`) is exempt.
/// - per address, over all usernames: a ceiling against trying one password on many users.
///   Trusted browsers are exempt here too.
pub struct LoginThrottle {
    pair: Backoff,
    user: Backoff,
    addr: Backoff,
}

/// The three policies of `LoginThrottle`.
#[derive(Clone, Copy, Debug)]
pub struct LoginPolicy {
    pub pair: Policy,
    pub user: Policy,
    pub addr: Policy,
}

impl LoginThrottle {
    pub fn new(p: LoginPolicy) -> LoginThrottle {
        LoginThrottle {
            pair: Backoff::new(p.pair),
            user: Backoff::new(p.user),
            addr: Backoff::new(p.addr),
        }
    }

    /// Milliseconds until `user` may try a password from `addr`; 0: now.
    pub fn wait_ms(&self, addr: &str, user: &str, trusted: bool, now: u64) -> u64 {
        let pair = self.pair.wait_ms(&pair_key(addr, user), now);
        if trusted {
            return pair;
        }
        pair.max(self.user.wait_ms(user, now))
            .max(self.addr.wait_ms(addr, now))
    }

    pub fn fail(&mut self, addr: &str, user: &str, now: u64) {
        self.pair.fail(&pair_key(addr, user), now);
        self.user.fail(user, now);
        self.addr.fail(addr, now);
    }

    /// A right password clears its own (user, address) slate only: clearing the user's or the
    /// address's count would hand a guesser who shares them a fresh allowance.
    pub fn succeed(&mut self, addr: &str, user: &str) {
        self.pair.clear(&pair_key(addr, user));
    }
}

/// Usernames have no NUL, so the pair key cannot collide with another pair's.
fn pair_key(addr: &str, user: &str) -> String {
    format!("{user}\0{addr}")
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

    const LOGIN: LoginPolicy = LoginPolicy {
        pair: POLICY,
        user: Policy {
            free_failures: 10,
            first_backoff_ms: 1000,
            max_backoff_ms: 8000,
            max_entries: 100,
        },
        addr: Policy {
            free_failures: 6,
            first_backoff_ms: 1000,
            max_backoff_ms: 60_000,
            max_entries: 100,
        },
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
    fn a_key_backs_off_alone_and_clears() {
        let mut b = Backoff::new(POLICY);
        assert_eq!(b.fail("a", 0), 0);
        assert_eq!(b.fail("a", 1), 0);
        assert_eq!(b.fail("a", 2), 1000);
        assert_eq!(b.wait_ms("a", 2), 1000);
        assert_eq!(b.wait_ms("b", 2), 0);
        assert_eq!(b.wait_ms("a", 1002), 0);
        b.clear("a");
        assert_eq!(b.fail("a", 3), 0);
    }

    #[test]
    fn a_quiet_spell_wipes_the_slate() {
        let mut b = Backoff::new(POLICY);
        for i in 0..5 {
            b.fail("a", i);
        }
        assert!(b.wait_ms("a", 5) > 0);
        assert_eq!(b.fail("a", 5 + POLICY.quiet_ms() + 1), 0);
    }

    #[test]
    fn maps_are_bounded() {
        let mut b = Backoff::new(POLICY);
        for i in 0..POLICY.max_entries as u64 + 10 {
            b.fail(&format!("a{i}"), i);
        }
        assert!(b.len() <= POLICY.max_entries);
    }

    #[test]
    fn a_lockout_from_one_address_does_not_reach_the_user_elsewhere() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..5 {
            t.fail("attacker", "admin", i);
        }
        assert!(
            t.wait_ms("attacker", "admin", false, 5) > 0,
            "the guesser waits"
        );
        assert!(
            t.wait_ms("attacker", "admin", true, 5) > 0,
            "whatever it claims"
        );
        assert_eq!(
            t.wait_ms("office", "admin", false, 5),
            0,
            "the user does not"
        );
        // The guesser's other targets from the same address are unaffected until the address
        // ceiling.
        assert_eq!(t.wait_ms("attacker", "bob", false, 5), 0);
    }

    #[test]
    fn many_addresses_meet_the_users_ceiling_which_stays_short_and_spares_trusted_browsers() {
        let mut t = LoginThrottle::new(LOGIN);
        let mut now = 0;
        for i in 0..30 {
            now += 1;
            t.fail(&format!("bot{i}"), "admin", now);
        }
        let wait = t.wait_ms("fresh", "admin", false, now);
        assert!(wait > 0, "a distributed guesser is slowed");
        assert!(wait <= LOGIN.user.max_backoff_ms, "briefly: {wait}");
        assert_eq!(t.wait_ms("office", "admin", true, now), 0);
        // Other users are not slowed by the attack on this one.
        assert_eq!(t.wait_ms("fresh", "bob", false, now), 0);
    }

    #[test]
    fn spraying_one_address_over_many_users_meets_the_address_ceiling() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..LOGIN.addr.free_failures {
            t.fail("sprayer", &format!("user{i}"), u64::from(i));
        }
        assert!(t.wait_ms("sprayer", "someone-else", false, 10) > 0);
        assert_eq!(t.wait_ms("sprayer", "someone-else", true, 10), 0);
        assert_eq!(t.wait_ms("office", "someone-else", false, 10), 0);
    }

    #[test]
    fn success_clears_only_its_own_pair() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..LOGIN.user.free_failures as u64 + 2 {
            t.fail(&format!("bot{i}"), "admin", i);
        }
        t.fail("office", "admin", 20);
        t.succeed("office", "admin");
        assert!(
            t.wait_ms("fresh", "admin", false, 21) > 0,
            "the ceiling stays"
        );
        assert_eq!(t.wait_ms("office", "admin", true, 21), 0);
    }
}
