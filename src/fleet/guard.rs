//! Abuse limits shared by every shard: connections per source address, failed authentications
//! (through `throttle`'s back-off), and flapping devices. Each is checked on a
//! rare path (accept, register), never per message, so one mutex per map is cheap enough; each map
//! is bounded. Every hit is counted in `fleetgate_limit_hits_total{limit=…}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::fleet::throttle::{Backoff, Policy};

/// Devices tracked for flapping at once; past it the stalest entry is forgotten.
const MAX_FLAP_ENTRIES: usize = 100_000;
/// The flapping window.
const FLAP_WINDOW_MS: u64 = 60_000;

/// A limit that was hit, for the metric's label and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    PerAddress,
    AuthThrottled,
    Flapping,
    MsgRate,
    RateDisconnect,
    WriteTimeout,
    BufferBudget,
    /// A message or body beyond `--max-message` found `--large-message-budget-mb` spent.
    LargeMessageBudget,
    /// A device was presented from outside its `allowed_sources` (`fleet::identity`).
    SourceNotAllowed,
    /// An address presented new serials faster than `--new-serials-per-minute` (`fleet::new_serials`).
    PendingRate,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::PerAddress => "connections_per_ip",
            Limit::AuthThrottled => "auth_throttled",
            Limit::Flapping => "flapping",
            Limit::MsgRate => "msg_rate",
            Limit::RateDisconnect => "msg_rate_disconnect",
            Limit::WriteTimeout => "write_timeout",
            Limit::BufferBudget => "buffer_budget",
            Limit::LargeMessageBudget => "large_message_budget",
            Limit::SourceNotAllowed => "source_not_allowed",
            Limit::PendingRate => "pending_rate",
        }
    }
}

pub fn hit(limit: Limit) {
    metrics::counter!("fleetgate_limit_hits_total", "limit" => limit.as_str()).increment(1);
}

/// Subjects (device ids, serials) are bounded strings without NUL.
fn pair_key(subject: &str, ip: &str) -> String {
    format!("{subject}\0{ip}")
}

#[derive(Default)]
struct Flap {
    /// Registrations in the current window.
    count: u32,
    window_start_ms: u64,
    banned_until_ms: u64,
}

/// The guard's limits (`serve`'s abuse flags; see `docs/security.md`).
#[derive(Clone, Debug)]
pub struct GuardLimits {
    /// Open connections per source address; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Failed authentications per address and per subject before back-off.
    pub auth_free_failures: u32,
    /// Longest authentication back-off, seconds.
    pub auth_max_backoff_s: u64,
    /// Registrations of one device per minute before it counts as flapping; 0 = off.
    pub flap_max_per_minute: u32,
    /// How long a flapping device is banned, seconds.
    pub flap_ban_s: u64,
}

/// Failed authentications, counted per address and per (subject, address).
struct AuthFailures {
    by_addr: Backoff,
    by_pair: Backoff,
}

pub struct Guard {
    per_ip_max: usize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    auth: Mutex<AuthFailures>,
    flap_max: u32,
    flap_ban_ms: u64,
    flaps: Mutex<HashMap<Uuid, Flap>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert, remove or field write: a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Guard {
    pub fn new(cfg: &GuardLimits) -> Guard {
        Guard {
            per_ip_max: cfg.max_connections_per_ip,
            per_ip: Mutex::new(HashMap::new()),
            auth: Mutex::new({
                let policy = Policy {
                    free_failures: cfg.auth_free_failures,
                    first_backoff_ms: 1000,
                    max_backoff_ms: cfg.auth_max_backoff_s.max(1) * 1000,
                    max_entries: 100_000,
                };
                AuthFailures {
                    by_addr: Backoff::new(policy),
                    by_pair: Backoff::new(policy),
                }
            }),
            flap_max: cfg.flap_max_per_minute,
            flap_ban_ms: cfg.flap_ban_s * 1000,
            flaps: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip`; false (not counted) when the address is at its limit.
    /// The map holds only addresses with open connections, so it is bounded by the connection cap.
    pub fn connect(&self, ip: IpAddr) -> bool {
        if self.per_ip_max == 0 {
            return true;
        }
        let mut m = lock(&self.per_ip);
        let n = m.entry(ip).or_insert(0);
        if *n as usize >= self.per_ip_max {
            if *n == 0 {
                m.remove(&ip);
            }
            hit(Limit::PerAddress);
            return false;
        }
        *n += 1;
        true
    }

    /// Releases a connection that `connect` counted.
    pub fn disconnect(&self, ip: IpAddr) {
        if self.per_ip_max == 0 {
            return;
        }
        let mut m = lock(&self.per_ip);
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    /// A high-entropy credential (device token, API token, admin token) that failed from `ip`.
    /// Returns the back-off now in effect for the address: while it runs, its failures are
    /// answered "throttled" instead of "wrong". Only failures are ever throttled: a right token is
    /// checked first and let in whatever others did from its address, because guessing 238 bits
    /// is hopeless and refusing it would let one noisy client lock out everyone behind its NAT.
    pub fn token_failed(&self, ip: IpAddr, now: u64) -> u64 {
        let wait = lock(&self.auth).by_addr.fail(&ip.to_string(), now);
        if wait > 0 {
            hit(Limit::AuthThrottled);
            tracing::warn!(%ip, backoff_ms = wait, "failed token authentications: throttling this address's failures");
        }
        wait
    }

    /// A low-entropy secret (a terminal's cloud id) is checked only after this: milliseconds until
    /// `ip` may try again for `subject` (a serial), counted per address and per (subject,
    /// address), never per subject alone, so failing on purpose from one address cannot lock the
    /// real terminal out at its own.
    pub fn auth_wait_ms(&self, ip: IpAddr, subject: Option<&str>, now: u64) -> u64 {
        let ip = ip.to_string();
        let a = lock(&self.auth);
        let pair = subject.map_or(0, |s| a.by_pair.wait_ms(&pair_key(s, &ip), now));
        let wait = a.by_addr.wait_ms(&ip, now).max(pair);
        if wait > 0 {
            hit(Limit::AuthThrottled);
        }
        wait
    }

    pub fn auth_failed(&self, ip: IpAddr, subject: Option<&str>, now: u64) {
        let key = ip.to_string();
        let mut a = lock(&self.auth);
        let mut backoff = a.by_addr.fail(&key, now);
        if let Some(s) = subject {
            backoff = backoff.max(a.by_pair.fail(&pair_key(s, &key), now));
        }
        if backoff > 0 {
            tracing::warn!(%ip, subject, backoff_ms = backoff, "authentication failures: backing off");
        }
    }

    /// A success clears the (subject, address) slate; the address's own count stays, so a client
    /// cannot wash its failures with one credential it owns.
    pub fn auth_ok(&self, ip: IpAddr, subject: Option<&str>) {
        if let Some(s) = subject {
            lock(&self.auth)
                .by_pair
                .clear(&pair_key(s, &ip.to_string()));
        }
    }

    /// A registration of `device`: `Err(ms)` while it is banned for flapping (this registration
    /// may be the one that starts the ban).
    pub fn registration(&self, device: Uuid, now: u64) -> Result<(), u64> {
        if self.flap_max == 0 {
            return Ok(());
        }
        let mut m = lock(&self.flaps);
        if !m.contains_key(&device) && m.len() >= MAX_FLAP_ENTRIES {
            let ban = self.flap_ban_ms;
            m.retain(|_, f| {
                now.saturating_sub(f.window_start_ms) < FLAP_WINDOW_MS || f.banned_until_ms > now
            });
            if m.len() >= MAX_FLAP_ENTRIES
                && let Some(k) = m
                    .iter()
                    .min_by_key(|(_, f)| {
                        f.window_start_ms.max(f.banned_until_ms.saturating_sub(ban))
                    })
                    .map(|(k, _)| *k)
            {
                m.remove(&k);
            }
        }
        let f = m.entry(device).or_default();
        if f.banned_until_ms > now {
            hit(Limit::Flapping);
            return Err(f.banned_until_ms - now);
        }
        if now.saturating_sub(f.window_start_ms) >= FLAP_WINDOW_MS {
            f.window_start_ms = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count > self.flap_max {
            f.banned_until_ms = now + self.flap_ban_ms;
            f.count = 0;
            hit(Limit::Flapping);
            tracing::warn!(%device, ban_s = self.flap_ban_ms / 1000, "device is flapping: banned");
            return Err(self.flap_ban_ms);
        }
        Ok(())
    }
}

/// One session's frame rate: a token bucket (`rate` per second, bursts of twice that) that may go
/// into debt, so a read that brought many frames is paid for by waiting before the next read.
/// Sans-IO: the caller passes the time.
pub struct MsgRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
    /// Since when the session has been held back without its bucket refilling completely.
    held_since_ms: Option<u64>,
}

impl MsgRate {
    pub fn new(per_second: u32, now: u64) -> MsgRate {
        let rate = f64::from(per_second.max(1));
        MsgRate {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last_ms: now,
            held_since_ms: None,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now);
        self.tokens = (self.tokens + elapsed * self.rate / 1000.0).min(self.burst);
        if self.tokens >= self.burst {
            // A full bucket means the device paused: whatever held it back is over.
            self.held_since_ms = None;
        }
    }

    /// Frames received.
    pub fn spend(&mut self, frames: u32, now: u64) {
        self.refill(now);
        self.tokens -= f64::from(frames);
    }

    /// How long to stop reading before the next read (0: read now). The first hold of a spell is
    /// reported as `true`.
    pub fn hold_ms(&mut self, now: u64) -> (u64, bool) {
        self.refill(now);
        if self.tokens >= 0.0 {
            return (0, false);
        }
        let started = self.held_since_ms.is_none();
        self.held_since_ms.get_or_insert(now);
        (
            (-self.tokens * 1000.0 / self.rate).ceil().max(1.0) as u64,
            started,
        )
    }

    /// How long the session has been held back without a pause.
    pub fn held_for_ms(&self, now: u64) -> u64 {
        self.held_since_ms.map_or(0, |t| now.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve`'s defaults, changed by `f`.
    fn guard(f: impl FnOnce(&mut GuardLimits)) -> Guard {
        let mut limits = GuardLimits {
            max_connections_per_ip: 1000,
            auth_free_failures: 10,
            auth_max_backoff_s: 900,
            flap_max_per_minute: 15,
            flap_ban_s: 300,
        };
        f(&mut limits);
        Guard::new(&limits)
    }

    #[test]
    fn connections_per_address_are_capped_and_released() {
        let g = guard(|l| l.max_connections_per_ip = 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(g.connect(a) && g.connect(a));
        assert!(!g.connect(a));
        assert!(g.connect(b));
        g.disconnect(a);
        assert!(g.connect(a));
        g.disconnect(a);
        g.disconnect(a);
        g.disconnect(b);
        assert!(lock(&g.per_ip).is_empty());
    }

    #[test]
    fn zero_means_no_address_limit() {
        let g = guard(|l| l.max_connections_per_ip = 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..5000).all(|_| g.connect(a)));
    }

    #[test]
    fn a_burst_within_the_bucket_is_free_and_debt_is_paid_by_waiting() {
        let mut r = MsgRate::new(100, 0);
        r.spend(200, 0);
        assert_eq!(r.hold_ms(0), (0, false));
        r.spend(50, 0);
        assert_eq!(r.hold_ms(0), (500, true));
        assert_eq!(r.hold_ms(250), (250, false));
        assert_eq!(r.hold_ms(500), (0, false));
    }

    #[test]
    fn sending_just_over_the_rate_stays_held_until_a_pause() {
        let mut r = MsgRate::new(100, 0);
        r.spend(200, 0);
        let mut now = 0;
        // 110 frames a second against 100: the bucket never refills.
        for _ in 0..30 {
            now += 1000;
            r.spend(110, now);
            r.hold_ms(now);
        }
        assert!(r.held_for_ms(now) >= 25_000);
        // A pause long enough to refill the bucket ends the spell.
        now += 5000;
        assert_eq!(r.hold_ms(now), (0, false));
        assert_eq!(r.held_for_ms(now), 0);
    }

    #[test]
    fn token_failures_back_off_per_address_only() {
        let g = guard(|l| l.auth_free_failures = 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(g.token_failed(a, 0), 0);
        assert_eq!(g.token_failed(a, 1), 1000);
        assert_eq!(g.token_failed(a, 2), 2000);
        assert_eq!(g.token_failed(b, 2), 0, "another address has its own count");
    }

    #[test]
    fn secret_failures_cannot_lock_a_subject_out_at_another_address() {
        let g = guard(|l| l.auth_free_failures = 2);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let site: IpAddr = "10.0.0.2".parse().unwrap();
        for t in 0..5 {
            g.auth_failed(attacker, Some("SN1"), t);
        }
        assert!(g.auth_wait_ms(attacker, Some("SN1"), 5) > 0);
        assert_eq!(g.auth_wait_ms(site, Some("SN1"), 5), 0);
        g.auth_ok(site, Some("SN1"));
        assert!(g.auth_wait_ms(attacker, Some("SN1"), 6) > 0, "not washed");
    }

    #[test]
    fn flapping_bans_then_lets_back() {
        let g = guard(|l| {
            l.flap_max_per_minute = 3;
            l.flap_ban_s = 10;
        });
        let d = Uuid::new_v4();
        for t in 0..3 {
            assert_eq!(g.registration(d, t), Ok(()));
        }
        assert_eq!(g.registration(d, 3), Err(10_000));
        assert_eq!(g.registration(d, 5_003), Err(5_000));
        assert_eq!(g.registration(d, 10_003), Ok(()));
        // Another device is unaffected.
        assert_eq!(g.registration(Uuid::new_v4(), 4), Ok(()));
    }

    #[test]
    fn registrations_spread_over_minutes_are_not_flapping() {
        let g = guard(|l| l.flap_max_per_minute = 2);
        let d = Uuid::new_v4();
        for i in 0..10 {
            assert_eq!(g.registration(d, i * 40_000), Ok(()));
        }
    }
}
