//! Biometric terminals on `/ws`: dialect detection, and a terminal session's runtime state around
//! its sans-IO conversation (`aiface` or `smackbio`). The session carries out the conversation's
//! actions in `terminal_actions`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use simd_json::prelude::*;

use crate::fleet::registry::{Claim, Device};
use crate::keepalive::Keepalive;
use crate::shard::local::{Limits, Local};
use crate::store::commit::Ticket;
use crate::store::records::{CommandRecord, Protocol};
use crate::terminal::Conversation;

/// How often a terminal with an outstanding command is given the time (command timeouts).
pub const TICK: Duration = Duration::from_millis(250);

/// Device settings this runtime keeps for terminals.
pub(super) const SETTING_TOKEN_HASH: &str = "smackbio_token_hash";
pub(super) const SETTING_LOG_POSITION: &str = "log_position";
/// How often a terminal's log position is saved at most while logs flow. A crash loses at most
/// this much progress: the next backfill then reads those logs again, and the store drops them
/// as duplicates.
pub(super) const POSITION_SAVE_EVERY_MS: u64 = 10_000;

/// How many stored log frames a terminal may have unanswered: past it, the session waits for the
/// oldest commit before it stages more (and so before it reads more).
pub(super) const MAX_UNANSWERED: usize = 64;

/// Log frames staged and not yet answered. The reply waits for the commit, but the session reads
/// on meanwhile, so the frames of a burst share commits; replies leave in the order the frames came.
pub(super) struct Unanswered {
    pub(super) outcome: Staged,
    pub(super) on_stored: Option<String>,
    pub(super) on_failed: Option<String>,
    /// The log position the records move the terminal to, saved only if they are stored.
    pub(super) position: Option<u64>,
}

/// What became of a log frame's records when they were staged.
pub(super) enum Staged {
    /// In this batch: answered once it resolves.
    Batch(Rc<Ticket>),
    /// Known at once: stored before (repeats only), or not staged (`false`).
    Known(bool),
}

pub struct Terminal {
    pub(super) conv: Box<dyn Conversation>,
    pub(super) protocol: Protocol,
    /// The device the terminal identified as; not yet its session.
    pub(super) dev: Option<Arc<Device>>,
    /// Once online: the device's one session slot, through which its records are staged.
    pub(super) claim: Option<Claim>,
    /// The command from the durable queue that the conversation is running.
    pub(super) command: Option<CommandRecord>,
    /// A log position reached but not saved yet, and when one was last saved (ms): saving means
    /// rewriting the device's record, so positions are saved at most every
    /// `POSITION_SAVE_EVERY_MS` and when the session ends (`terminal_actions`).
    pub(super) unsaved_position: Option<u64>,
    pub(super) position_saved_ms: u64,
    /// Log frames stored and not yet answered, oldest first (`terminal_actions::Unanswered`).
    pub(super) unanswered: VecDeque<Unanswered>,
}

impl Terminal {
    /// The device, once this session is its live one.
    pub fn device(&self) -> Option<&Arc<Device>> {
        self.claim.as_ref().map(Claim::device)
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Its dialect's ping interval and idle timeout.
    pub fn keepalive(&self, limits: &Limits) -> Keepalive {
        keepalive(limits, self.protocol)
    }
}

fn keepalive(limits: &Limits, protocol: Protocol) -> Keepalive {
    match protocol {
        Protocol::Smackbio => limits.smackbio,
        // A terminal session speaks one of the two dialects; `sniff` makes no other.
        Protocol::Aiface | Protocol::Generic | Protocol::Http | Protocol::Zkteco => limits.aiface,
    }
}

/// Decides a session's dialect from its first frame: XML → SmackBio, JSON with `"cmd"` and no
/// `"type"` → AiFace; anything else stays with the generic protocol.
pub fn sniff(frame: &[u8], local: &Local) -> Option<Terminal> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace())?;
    let limits = local.limits();
    // A command waiting longer than its dialect's idle timeout would see the session closed first.
    let timeouts = |protocol| {
        let idle = Duration::from_secs(keepalive(limits, protocol).idle_s.into());
        limits.terminal_timeouts.capped(idle)
    };
    let (conv, protocol): (Box<dyn Conversation>, Protocol) = if *first == b'<' {
        let Some(seed) = session_seed() else {
            // Tokens from a predictable seed could be guessed: refuse the session instead.
            tracing::error!("the OS random source failed; refusing a SmackBio session");
            return None;
        };
        (
            Box::new(crate::smackbio::Session::new(
                timeouts(Protocol::Smackbio),
                seed,
            )),
            Protocol::Smackbio,
        )
    } else {
        // A session's first frame: parsed from a copy, since the conversation reads it again.
        let mut copy = frame.to_vec();
        let n = crate::lenient::strip_trailing_commas(&mut copy);
        copy.truncate(n);
        if crate::lenient::too_deep(&copy, crate::lenient::MAX_JSON_DEPTH) {
            return None;
        }
        let v = simd_json::to_borrowed_value(&mut copy).ok()?;
        if v.get("cmd").is_none() || v.get("type").is_some() {
            return None;
        }
        (
            Box::new(crate::aiface::Session::new(timeouts(Protocol::Aiface))),
            Protocol::Aiface,
        )
    };
    metrics::counter!("fleetgate_terminal_sessions_total", "protocol" => protocol.as_str())
        .increment(1);
    Some(Terminal {
        conv,
        protocol,
        dev: None,
        claim: None,
        command: None,
        unsaved_position: None,
        position_saved_ms: 0,
        unanswered: VecDeque::new(),
    })
}

/// Randomness for SmackBio session tokens, drawn here so the conversation stays deterministic.
fn session_seed() -> Option<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}
