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
/// - per username from one place: a few free, then the long back-off. This is the lock a guesser
///   meets, and only they meet it. The place is the address, or, for a browser that has logged in
///   as this user before (`Attempt::known`), that browser: so even a guesser behind the same NAT
///   or proxy does not lock it.
/// - per username, over all places: a generous ceiling, then a short back-off. This slows a
///   distributed guesser to a trickle without locking the user out: the wait stays short, and
///   known browsers are exempt.
/// - per address, over all usernames: a ceiling against trying one password on many users.
///   Known browsers are exempt here too.
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

/// Where a password attempt comes from.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// The client's address.
    pub addr: &'a str,
    /// A stable id of a browser (or session) already proven to belong to the user, if any.
    pub known: Option<&'a str>,
}

impl Attempt<'_> {
    /// The per-user count's key: the known browser, else the address. Usernames have no NUL and
    /// the tags differ, so keys of different pairs cannot collide.
    fn pair_key(&self, user: &str) -> String {
        match self.known {
            Some(k) => format!("{user}\0k\0{k}"),
            None => format!("{user}\0a\0{}", self.addr),
        }
    }
}

impl LoginThrottle {
    pub fn new(p: LoginPolicy) -> LoginThrottle {
        LoginThrottle {
            pair: Backoff::new(p.pair),
            user: Backoff::new(p.user),
            addr: Backoff::new(p.addr),
        }
    }

    /// Milliseconds until `user` may try a password from `from`; 0: now.
    pub fn wait_ms(&self, from: Attempt<'_>, user: &str, now: u64) -> u64 {
        let pair = self.pair.wait_ms(&from.pair_key(user), now);
        if from.known.is_some() {
            return pair;
        }
        pair.max(self.user.wait_ms(user, now))
            .max(self.addr.wait_ms(from.addr, now))
    }

    pub fn fail(&mut self, from: Attempt<'_>, user: &str, now: u64) {
        self.pair.fail(&from.pair_key(user), now);
        self.user.fail(user, now);
        self.addr.fail(from.addr, now);
    }

    /// A right password clears its own pair's slate only: clearing the user's or the address's
    /// count would hand a guesser who shares them a fresh allowance.
    pub fn succeed(&mut self, from: Attempt<'_>, user: &str) {
        self.pair.clear(&from.pair_key(user));
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

    fn at(addr: &str) -> Attempt<'_> {
        Attempt { addr, known: None }
    }

    fn known<'a>(addr: &'a str, id: &'a str) -> Attempt<'a> {
        Attempt {
            addr,
            known: Some(id),
        }
    }

    #[test]
    fn a_lockout_from_one_address_does_not_reach_the_user_elsewhere() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..5 {
            t.fail(at("attacker"), "admin", i);
        }
        assert!(
            t.wait_ms(at("attacker"), "admin", 5) > 0,
            "the guesser waits"
        );
        assert_eq!(t.wait_ms(at("office"), "admin", 5), 0, "the user does not");
        // Nor does the user's own browser behind the guesser's address (one NAT).
        assert_eq!(t.wait_ms(known("attacker", "browser-1"), "admin", 5), 0);
        // The guesser's other targets from the same address are unaffected until the address
        // ceiling.
        assert_eq!(t.wait_ms(at("attacker"), "bob", 5), 0);
    }

    #[test]
    fn a_known_browsers_own_failures_slow_only_it() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..5 {
            t.fail(known("office", "browser-1"), "admin", i);
        }
        assert!(t.wait_ms(known("office", "browser-1"), "admin", 5) > 0);
        assert_eq!(t.wait_ms(known("office", "browser-2"), "admin", 5), 0);
        assert_eq!(t.wait_ms(at("office"), "admin", 5), 0);
    }

    #[test]
    fn many_addresses_meet_the_users_ceiling_which_stays_short_and_spares_known_browsers() {
        let mut t = LoginThrottle::new(LOGIN);
        let mut now = 0;
        for i in 0..30 {
            now += 1;
            t.fail(at(&format!("bot{i}")), "admin", now);
        }
        let wait = t.wait_ms(at("fresh"), "admin", now);
        assert!(wait > 0, "a distributed guesser is slowed");
        assert!(wait <= LOGIN.user.max_backoff_ms, "briefly: {wait}");
        assert_eq!(t.wait_ms(known("office", "browser-1"), "admin", now), 0);
        // Other users are not slowed by the attack on this one.
        assert_eq!(t.wait_ms(at("fresh"), "bob", now), 0);
    }

    #[test]
    fn spraying_one_address_over_many_users_meets_the_address_ceiling() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..LOGIN.addr.free_failures {
            t.fail(at("sprayer"), &format!("user{i}"), u64::from(i));
        }
        assert!(t.wait_ms(at("sprayer"), "someone-else", 10) > 0);
        assert_eq!(t.wait_ms(known("sprayer", "b"), "someone-else", 10), 0);
        assert_eq!(t.wait_ms(at("office"), "someone-else", 10), 0);
    }

    #[test]
    fn success_clears_only_its_own_pair() {
        let mut t = LoginThrottle::new(LOGIN);
        for i in 0..LOGIN.user.free_failures as u64 + 2 {
            t.fail(at(&format!("bot{i}")), "admin", i);
        }
        for i in 0..5 {
            t.fail(at("office"), "admin", 20 + i);
        }
        t.succeed(at("office"), "admin");
        assert!(t.wait_ms(at("fresh"), "admin", 30) > 0, "the ceiling stays");
        assert_eq!(
            t.wait_ms(at("office"), "admin", 30),
            t.wait_ms(at("fresh"), "admin", 30),
            "its own pair is clear: only the user's ceiling is left"
        );
        assert_eq!(t.wait_ms(known("office", "b"), "admin", 30), 0);
    }
}
