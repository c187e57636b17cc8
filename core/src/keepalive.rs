//! When a quiet WebSocket peer is pinged and when it is given up, sans-IO: times in, the next
//! deadline out.
//!
//! A peer is heard whenever any frame arrives from it, a Pong included. After `ping_s` seconds
//! of quiet the server sends a Ping, and another every `ping_s` while the quiet lasts; after
//! `idle_s` seconds of quiet the session is closed. A terminal that answers Pings is therefore
//! never quiet for longer than one interval and a round trip, and one that stops answering is
//! closed `idle_s` after it was last heard, whatever its dialect sends of its own.
//!
//! The runtime keeps a single deadline per connection in its timer wheel: [`Keepalive::heard`]
//! gives it after every frame (moving a deadline later costs the wheel nothing), and
//! [`Keepalive::after_ping`] gives the one after a Ping falls due. Seconds fit in `u16` so the
//! runtime's per-connection deadline stays the size it was.

/// One dialect's ping interval and idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Seconds of quiet before each Ping; 0 sends none.
    pub ping_s: u16,
    /// Seconds of quiet before the session is closed.
    pub idle_s: u16,
}

/// What falls due next on a quiet session, and when (milliseconds, the caller's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send a Ping at `at_ms`, when the peer will have been quiet for `quiet_s` seconds.
    Ping { at_ms: u64, quiet_s: u16 },
    /// Close the session at `at_ms`.
    Close { at_ms: u64 },
}

impl Keepalive {
    /// AiFace-family terminals. The vendor's demo server writes to every registered terminal once
    /// nothing has arrived for 15 s (protocols.md §3.7 [AF-PHD]); implementers that run real
    /// terminals ping after 10 s (closing after 30 s) or every 30 s (closing after 120 s)
    /// [AF-LV, AF-PY]. No vendor text gives a timeout, so the longest an implementer uses is
    /// taken: a terminal whose firmware ignored Pings would be closed no sooner than before
    /// (90 s), and one that answers them never is.
    pub const AIFACE: Keepalive = Keepalive {
        ping_s: 15,
        idle_s: 120,
    };

    /// SmackBio-compatible terminals. The vendor's PHP sample reaps a connection after 120 s
    /// without a frame or a Ping from it (`check_timeouted_connections`, §2.6 [SB-PHP]); the
    /// terminals ping and send `KeepAlive` themselves (every 30 s by one guide [SB-GD]), so the
    /// server's Ping, at a third of that, reaches only firmware that sends neither, twice before
    /// it is given up. (The C# sample waits 10 minutes, but only for terminals that once sent
    /// `KeepAlive` [SB-CS].)
    pub const SMACKBIO: Keepalive = Keepalive {
        ping_s: 40,
        idle_s: 120,
    };

    /// Whether Pings are sent at all: an interval of 0, or one that is not shorter than the idle
    /// timeout, sends none.
    fn pings(self) -> bool {
        self.ping_s > 0 && self.ping_s < self.idle_s
    }

    /// The peer was heard at `now_ms`: the first thing due if it stays quiet.
    pub fn heard(self, now_ms: u64) -> Step {
        if self.pings() {
            Step::Ping {
                at_ms: now_ms.saturating_add(secs(self.ping_s)),
                quiet_s: self.ping_s,
            }
        } else {
            Step::Close {
                at_ms: now_ms.saturating_add(secs(self.idle_s)),
            }
        }
    }

    /// The Ping due at `at_ms` (after `quiet_s` seconds of quiet) is being sent: what is due
    /// after it if the peer stays quiet.
    pub fn after_ping(self, at_ms: u64, quiet_s: u16) -> Step {
        let next = quiet_s.saturating_add(self.ping_s);
        if self.pings() && next < self.idle_s {
            Step::Ping {
                at_ms: at_ms.saturating_add(secs(self.ping_s)),
                quiet_s: next,
            }
        } else {
            Step::Close {
                at_ms: at_ms.saturating_add(secs(self.idle_s.saturating_sub(quiet_s))),
            }
        }
    }

    /// Why these values cannot be used, for a start-up error.
    pub fn check(self) -> Result<(), String> {
        if self.idle_s == 0 {
            return Err("the idle timeout must be at least 1 s".into());
        }
        if self.ping_s >= self.idle_s {
            return Err(format!(
                "the ping interval ({} s) must be shorter than the idle timeout ({} s), or 0 for no pings",
                self.ping_s, self.idle_s
            ));
        }
        Ok(())
    }
}

fn secs(s: u16) -> u64 {
    u64::from(s) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows the deadlines of a peer heard at `heard` that stays quiet: the pings sent, and when
    /// the session closes.
    fn quiet_from(k: Keepalive, heard: u64) -> (Vec<u64>, u64) {
        let mut pings = Vec::new();
        let mut step = k.heard(heard);
        loop {
            match step {
                Step::Ping { at_ms, quiet_s } => {
                    pings.push(at_ms);
                    step = k.after_ping(at_ms, quiet_s);
                }
                Step::Close { at_ms } => return (pings, at_ms),
            }
        }
    }

    #[test]
    fn a_quiet_aiface_terminal_is_pinged_every_15_s_and_closed_at_120_s() {
        let (pings, close) = quiet_from(Keepalive::AIFACE, 1_000);
        let expected: Vec<u64> = (1..=7).map(|n| 1_000 + n * 15_000).collect();
        assert_eq!(pings, expected);
        assert_eq!(close, 121_000);
    }

    #[test]
    fn a_quiet_smackbio_terminal_is_pinged_twice_and_closed_at_120_s() {
        assert_eq!(
            quiet_from(Keepalive::SMACKBIO, 0),
            (vec![40_000, 80_000], 120_000)
        );
    }

    #[test]
    fn being_heard_starts_the_quiet_over() {
        let k = Keepalive::AIFACE;
        // A Pong at 16 s answers the Ping sent at 15 s: the next Ping is 15 s after it.
        assert_eq!(
            k.heard(16_000),
            Step::Ping {
                at_ms: 31_000,
                quiet_s: 15
            }
        );
    }

    #[test]
    fn an_interval_that_does_not_fit_sends_no_pings() {
        for ping_s in [0, 120, 500] {
            let k = Keepalive {
                ping_s,
                idle_s: 120,
            };
            assert_eq!(quiet_from(k, 5), (vec![], 120_005), "{ping_s}");
        }
        // The last interval may be cut short by the idle timeout.
        let k = Keepalive {
            ping_s: 50,
            idle_s: 120,
        };
        assert_eq!(quiet_from(k, 0), (vec![50_000, 100_000], 120_000));
    }

    #[test]
    fn start_up_refuses_what_cannot_work() {
        assert!(Keepalive::AIFACE.check().is_ok());
        assert!(Keepalive::SMACKBIO.check().is_ok());
        assert!(
            Keepalive {
                ping_s: 0,
                idle_s: 1
            }
            .check()
            .is_ok()
        );
        for (ping_s, idle_s) in [(0, 0), (120, 120), (121, 120)] {
            assert!(
                Keepalive { ping_s, idle_s }.check().is_err(),
                "{ping_s}/{idle_s}"
            );
        }
    }
}
