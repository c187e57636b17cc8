//! Who may speak as a device. Terminals identify by serial alone, which anyone who has read the
//! label can present; these are the checks that narrow that down, and the record that shows an
//! operator when a live session was taken over (see `docs/security.md`, "Terminal identity").
//!
//! * `admit`: a device bound to networks (`settings.allowed_sources`) is refused from anywhere
//!   else, before any other check, so an outsider cannot close its live session, flap-ban it or
//!   run down its authentication back-off.
//! * `secret_matches`, `secret_for_storage`: SmackBio's cloud id, a shared secret the terminal sends
//!   with every Register, kept as a hash and compared in constant time.
//! * `takeover`: a `device_takeover` event when a registration displaces a live session talking to
//!   another address.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::fleet::auth;
use crate::fleet::guard::{self, Limit};
use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::generic;
use crate::json;
use crate::store::commit::Batcher;
use crate::store::records::{self, Source};
use crate::time::{now_us, rfc3339_ms};

/// The device setting with SmackBio's cloud id.
pub const SETTING_CLOUD_ID: &str = "cloud_id";
/// The event a takeover leaves.
pub const TAKEOVER_EVENT: &str = "device_takeover";
/// How a stored secret says it is a hash (anything else was stored before secrets were hashed).
const HASHED: &str = "sha256:";

/// Whether `dev` may be spoken for from `ip`. A refusal is counted
/// (`fleetgate_limit_hits_total{limit="source_not_allowed"}`) and logged with the address and what
/// was presented (a serial or a device id).
pub fn admit(dev: &Device, ip: IpAddr, presented: &str) -> bool {
    if dev.source_allowed(ip) {
        return true;
    }
    guard::hit(Limit::SourceNotAllowed);
    tracing::warn!(%ip, presented, device = %dev.id, "refused: the device is not allowed to connect from this address");
    false
}

/// The form a shared secret is kept in: its SHA-256, so the API never shows it. Empty stays empty
/// (no secret), and a value already in the stored form is kept (a client that writes back the
/// settings it read must not hash the hash).
pub fn secret_for_storage(value: &str) -> String {
    if value.is_empty() || is_stored_hash(value) {
        return value.to_string();
    }
    format!("{HASHED}{}", auth::hex(&Sha256::digest(value.as_bytes())))
}

fn is_stored_hash(value: &str) -> bool {
    value
        .strip_prefix(HASHED)
        .is_some_and(|h| h.len() == 64 && auth::unhex(h).is_some())
}

/// Whether `presented` is the secret `stored` (as `secret_for_storage` left it, or as written
/// before secrets were hashed). Both sides are hashed first, so the comparison takes the same
/// time whatever the lengths and contents.
pub fn secret_matches(stored: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let expected: [u8; 32] = stored
        .strip_prefix(HASHED)
        .filter(|_| is_stored_hash(stored))
        .and_then(auth::unhex)
        .and_then(|h| h.try_into().ok())
        .unwrap_or_else(|| Sha256::digest(stored.as_bytes()).into());
    let given: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    given.ct_eq(&expected).into()
}

/// A registration from `remote` took `dev`'s slot from a live session talking to `previous`, a
/// different address: stored as a `device_takeover` event and shown to admin subscribers, so an
/// operator sees an impersonation (or a terminal that moved).
pub fn takeover(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    previous: SocketAddr,
    remote: SocketAddr,
    protocol: &str,
) {
    tracing::warn!(device = %dev.id, %previous, %remote, protocol, "a live session was taken over from another address");
    metrics::counter!("fleetgate_device_takeovers_total", "protocol" => protocol.to_string())
        .increment(1);
    let mut payload = String::from("{\"previous\":");
    json::push_str(&mut payload, &previous.to_string());
    payload.push_str(",\"remote\":");
    json::push_str(&mut payload, &remote.to_string());
    payload.push_str(",\"protocol\":");
    json::push_str(&mut payload, protocol);
    payload.push('}');
    let id = fleet.store.ids.next(now_us());
    let staged = batch.stage(|st| {
        records::stage_event(
            st,
            id,
            Some(&dev.id),
            TAKEOVER_EVENT,
            Source::Server,
            &payload,
            None,
        )
    });
    if let Err(e) = staged {
        tracing::error!(error = %e, "recording a takeover event failed");
    }
    if fleet.has_admins() {
        let ts = rfc3339_ms(id / 1000);
        fleet.broadcast(generic::event_broadcast(
            &dev.id.to_string(),
            TAKEOVER_EVENT,
            &ts,
            &payload,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_kept_hashed_and_matches_only_itself() {
        let stored = secret_for_storage("cloudid12345678");
        assert!(stored.starts_with(HASHED) && !stored.contains("cloudid"));
        assert!(secret_matches(&stored, Some("cloudid12345678")));
        assert!(!secret_matches(&stored, Some("cloudid1234567")));
        assert!(!secret_matches(&stored, None));
        // Written back as read: not hashed again.
        assert_eq!(secret_for_storage(&stored), stored);
        assert_eq!(secret_for_storage(""), "");
    }

    #[test]
    fn a_secret_stored_before_hashing_still_matches() {
        assert!(secret_matches("cloud_001", Some("cloud_001")));
        assert!(!secret_matches("cloud_001", Some("cloud_002")));
        // Looks like the stored form but is not one: compared as plain text.
        assert!(secret_matches("sha256:xyz", Some("sha256:xyz")));
    }
}
