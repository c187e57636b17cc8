//! Key layouts. Every key starts with what queries filter on, so each API list is one prefix scan:
//! big-endian integers make byte order equal time order, and newest-first is a reverse scan.

use uuid::Uuid;

pub const DEVICE_LEN: usize = 16;

pub fn device(id: &Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// `telemetry`: device ‖ receive-id (µs hybrid clock).
pub fn telemetry(dev: &Uuid, id: u64) -> [u8; 24] {
    join(dev, id)
}

/// `events`: event id alone, for the global stream.
pub fn event(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// `events_by_device`: device ‖ event id (an index; the value is empty).
pub fn event_by_device(dev: &Uuid, id: u64) -> [u8; 24] {
    join(dev, id)
}

/// `msg_ids`: device ‖ the msg_id's JSON text, so `7` and `"7"` stay distinct as the device sent them.
pub fn msg_id(dev: &Uuid, msg_id_json: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + msg_id_json.len());
    k.extend_from_slice(dev.as_bytes());
    k.extend_from_slice(msg_id_json.as_bytes());
    k
}

/// `commands`: device ‖ per-device sequence, so delivery order is key order.
pub fn command(dev: &Uuid, seq: u64) -> [u8; 24] {
    join(dev, seq)
}

/// `users`: device ‖ the terminal's user id (`enrollid`): the prefix of a user's entries. Stores
/// written before credentials had keys of their own hold one entry under exactly this key, the
/// user's last `senduser` whatever its credential; it is still read.
pub fn user(dev: &Uuid, enrollid: u64) -> [u8; 24] {
    join(dev, enrollid)
}

/// The `slot` of a user's entry that names the person alone (name, admin level), sorting after
/// every credential.
pub const USER_PERSON: u8 = 0xff;

/// `users`: device ‖ `enrollid` ‖ slot: one entry per credential, the slot being its `backupnum`
/// (0–99), or `USER_PERSON`.
pub fn user_entry(dev: &Uuid, enrollid: u64, slot: u8) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..24].copy_from_slice(&join(dev, enrollid));
    k[24] = slot;
    k
}

/// `command_ids`: command UUID → `commands` key.
/// A person of the people registry, by PIN.
pub fn person(pin: u64) -> [u8; 8] {
    pin.to_be_bytes()
}

pub fn command_id(id: &Uuid) -> [u8; 16] {
    *id.as_bytes()
}

/// `attendance` key: device ‖ UTC µs ‖ identity prefix. Per-device time order, unique per punch.
pub fn attendance(dev: &Uuid, utc_us: u64, identity: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(dev.as_bytes());
    k[16..24].copy_from_slice(&utc_us.to_be_bytes());
    k[24..].copy_from_slice(&identity[..8]);
    k
}

/// `attendance_by_time` key: UTC µs ‖ device ‖ identity prefix, for lists across devices.
pub fn attendance_by_time(primary: &[u8; 32]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&primary[16..24]);
    k[8..24].copy_from_slice(&primary[..16]);
    k[24..].copy_from_slice(&primary[24..]);
    k
}

pub fn primary_from_time_key(t: &[u8]) -> Option<[u8; 32]> {
    let t: &[u8; 32] = t.try_into().ok()?;
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&t[8..24]);
    k[16..24].copy_from_slice(&t[..8]);
    k[24..].copy_from_slice(&t[24..]);
    Some(k)
}

/// `attendance_dedup` key: device ‖ identity.
pub fn attendance_dedup(dev: &Uuid, identity: &[u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(dev.as_bytes());
    k[16..].copy_from_slice(identity);
    k
}

pub fn suffix_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub fn uuid_prefix(key: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(key.get(..16)?).ok()
}

fn join(dev: &Uuid, n: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(dev.as_bytes());
    k[16..].copy_from_slice(&n.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_device_then_time() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert!(telemetry(&a, 5) < telemetry(&a, 6));
        assert!(telemetry(&a, u64::MAX) < telemetry(&b, 0));
        assert_eq!(suffix_u64(&telemetry(&a, 42)), Some(42));
        assert_eq!(uuid_prefix(&command(&b, 1)), Some(b));
        assert_eq!(suffix_u64(b"short"), None);
    }

    #[test]
    fn a_users_entries_follow_its_old_key_and_precede_the_next_user() {
        let a = Uuid::from_u128(1);
        assert!(user(&a, 7).as_slice() < user_entry(&a, 7, 0).as_slice());
        assert!(user_entry(&a, 7, 0) < user_entry(&a, 7, 11));
        assert!(user_entry(&a, 7, 11) < user_entry(&a, 7, USER_PERSON));
        assert!(user_entry(&a, 7, USER_PERSON).as_slice() < user(&a, 8).as_slice());
        assert!(user_entry(&a, 7, 3).starts_with(&user(&a, 7)));
    }
}
