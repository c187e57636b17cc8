//! The people a terminal has enrolled and sent the server (AiFace `senduser`). A person's
//! fingerprints, card, password, faces, palms and photo each come in a `senduser` of their own
//! (`backupnum` says which, protocols.md §3.5), so each is stored apart under (device, enrollid,
//! backupnum) and read back merged into one user with all its credentials. A `senduser` without
//! a `backupnum` names the person alone (name, admin level).
//!
//! Stores written before this layout hold one entry per user under (device, enrollid): whatever
//! it sent last. That entry is still read, as one more credential (its `backupnum` is in it), and
//! gives way to a newer entry of the same credential, and to a newer name and admin level.

use std::collections::BTreeMap;

use simd_json::OwnedValue;
use simd_json::prelude::*;
use uuid::Uuid;

use crate::aiface::credential_type;
use crate::json;
use crate::store::commit::Staging;
use crate::store::{Cf, Store, StoreError, keys};
use crate::time::rfc3339_ms;

/// Stages one `senduser`: `payload` (the fields as the terminal sent them, a JSON object) under
/// its credential (`backupnum` 0–99, which the conversation checked), or as the person when there
/// is none. `stored_at_us`, from the store's id clock (strictly increasing, so two `senduser`s of
/// one millisecond stay ordered), decides which entry's name and admin level a reader shows.
pub fn stage(
    st: &mut Staging<'_>,
    dev: &Uuid,
    enrollid: u64,
    backupnum: Option<u8>,
    payload: &str,
    stored_at_us: u64,
) -> Result<(), StoreError> {
    let slot = backupnum.unwrap_or(keys::USER_PERSON);
    let value = format!("{{\"stored_at\":{stored_at_us},\"user\":{payload}}}");
    st.put(
        Cf::Users,
        &keys::user_entry(dev, enrollid, slot),
        value.as_bytes(),
    )
}

/// Whether the device has sent the server anything about `enrollid` (any credential, or the
/// person alone).
pub fn is_enrolled(store: &Store, dev: &Uuid, enrollid: u64) -> Result<bool, StoreError> {
    let prefix = keys::user(dev, enrollid);
    let mut found = false;
    store.visit_from(Cf::Users, &prefix, &prefix, |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}

/// A page of the device's users in `enrollid` order, from `from` on: each as JSON
/// (`{"enrollid","name","admin","credentials":[{"backupnum","type","stored_at"}]}`), and the
/// `enrollid` the next page starts at, if there is one. The credentials themselves (templates,
/// passwords, card numbers, photos) stay in the store: the list says what a person has, not
/// what it is.
pub fn list(
    store: &Store,
    dev: &Uuid,
    from: u64,
    limit: usize,
) -> Result<(Vec<String>, Option<u64>), StoreError> {
    let mut items = Vec::new();
    let mut current: Option<User> = None;
    let mut next = None;
    let start = keys::user(dev, from);
    store.visit_from(Cf::Users, &keys::device(dev), &start, |k, v| {
        let Some(enrollid) = k.get(16..24).and_then(keys::suffix_u64) else {
            return Ok(true);
        };
        if let Some(done) = current.take_if(|u| u.enrollid != enrollid) {
            items.push(done.json());
            if items.len() == limit {
                next = Some(enrollid);
                return Ok(false);
            }
        }
        current.get_or_insert_with(|| User::new(enrollid)).add(k, v);
        Ok(true)
    })?;
    if let Some(last) = current {
        items.push(last.json());
    }
    Ok((items, next))
}

/// One user, merged from its entries.
struct User {
    enrollid: u64,
    /// The name and admin level as sent (JSON text), with the time of the entry they came from
    /// (0 for the old layout's entry, which is older than any other).
    name: Option<(u64, String)>,
    admin: Option<(u64, String)>,
    /// Credential (`backupnum`) → when it was stored, in µs (`None`: by the old layout, time
    /// unknown).
    credentials: BTreeMap<u8, Option<u64>>,
}

impl User {
    fn new(enrollid: u64) -> User {
        User {
            enrollid,
            name: None,
            admin: None,
            credentials: BTreeMap::new(),
        }
    }

    fn add(&mut self, key: &[u8], value: &[u8]) {
        let mut bytes = value.to_vec();
        // An entry that does not parse still shows that the credential exists.
        let v = simd_json::to_owned_value(&mut bytes).ok();
        let (stored_at, credential, fields) = match key.get(24) {
            Some(&slot) => (
                v.as_ref()
                    .and_then(|v| v.get("stored_at"))
                    .and_then(|t| t.as_u64()),
                Some(slot).filter(|&s| s != keys::USER_PERSON),
                v.as_ref().and_then(|v| v.get("user")),
            ),
            // The old layout: the entry is the payload, its credential named inside.
            None => (
                None,
                v.as_ref()
                    .and_then(|v| v.get("backupnum"))
                    .and_then(number)
                    .and_then(|b| u8::try_from(b).ok())
                    .filter(|&b| b != keys::USER_PERSON),
                v.as_ref(),
            ),
        };
        let at = stored_at.unwrap_or(0);
        if let Some(f) = fields {
            keep_newer(&mut self.name, f, "name", at);
            keep_newer(&mut self.admin, f, "admin", at);
        }
        if let Some(b) = credential {
            let known = self.credentials.get(&b).copied().flatten();
            if known.is_none() || stored_at.is_some() {
                self.credentials.insert(b, stored_at);
            }
        }
    }

    fn json(&self) -> String {
        let mut s = format!("{{\"enrollid\":{},\"name\":", self.enrollid);
        s.push_str(self.name.as_ref().map_or("null", |(_, n)| n));
        s.push_str(",\"admin\":");
        s.push_str(self.admin.as_ref().map_or("null", |(_, a)| a));
        s.push_str(",\"credentials\":[");
        for (i, (b, at)) in self.credentials.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{{\"backupnum\":{b},\"type\":"));
            json::push_str(&mut s, credential_type(*b));
            s.push_str(",\"stored_at\":");
            match at {
                Some(us) => json::push_str(&mut s, &rfc3339_ms(us / 1000)),
                None => s.push_str("null"),
            }
            s.push('}');
        }
        s.push_str("]}");
        s
    }
}

/// Takes `fields[key]` (unless null) into `slot` if its entry, stored at `at`, is not older.
fn keep_newer(slot: &mut Option<(u64, String)>, fields: &OwnedValue, key: &str, at: u64) {
    if let Some(x) = fields.get(key).filter(|x| !x.is_null())
        && slot.as_ref().is_none_or(|(t, _)| at >= *t)
    {
        *slot = Some((at, x.encode()));
    }
}

/// A number as firmware sends one: `11` or `"11"`.
fn number(v: &OwnedValue) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::shard_stub::with_batcher;
    use crate::store::commit::Batcher;
    use crate::store::records::stage_device_delete;
    use crate::store::temp::TempStore;

    /// Runs `f` with a batcher on a temporary store, as a shard would.
    fn with_store(name: &str, f: impl AsyncFnOnce(&Store, &Batcher)) {
        let tmp = TempStore::open(name, false).expect("store");
        with_batcher(tmp.store(), async |batcher| f(tmp.store(), batcher).await);
    }

    fn page(store: &Store, dev: &Uuid, from: u64, limit: usize) -> (Vec<String>, Option<u64>) {
        list(store, dev, from, limit).expect("list")
    }

    #[test]
    fn a_persons_credentials_are_kept_apart_and_read_as_one_user() {
        let dev = Uuid::from_u128(7);
        let other = Uuid::from_u128(8);
        with_store("enrolled", async |store, batcher| {
            batcher
                .commit(|st| {
                    // Written by a build before credentials had keys of their own: user 1's last
                    // senduser (its card), and user 4's fingerprint.
                    st.put(
                        Cf::Users,
                        &keys::user(&dev, 1),
                        br#"{"name":"old name","backupnum":"11","admin":0,"record":2352253}"#,
                    )?;
                    st.put(
                        Cf::Users,
                        &keys::user(&dev, 4),
                        br#"{"name":"dee","backupnum":3,"admin":0,"record":"x"}"#,
                    )?;
                    let fp = r#"{"name":"chingzou","backupnum":0,"admin":0,"record":"kajg"}"#;
                    stage(st, &dev, 1, Some(0), fp, 1_000_000)?;
                    let pwd = r#"{"name":"chingzou","backupnum":10,"admin":1,"record":1234}"#;
                    stage(st, &dev, 1, Some(10), pwd, 2_000_000)?;
                    stage(st, &dev, 2, None, r#"{"name":"ann","admin":1}"#, 3_000_000)?;
                    stage(
                        st,
                        &dev,
                        3,
                        Some(20),
                        r#"{"backupnum":20,"record":"f"}"#,
                        4_000_000,
                    )?;
                    stage(st, &other, 5, Some(0), r#"{"name":"elsewhere"}"#, 5_000_000)
                })
                .await
                .expect("commit");
            let (items, next) = page(store, &dev, 0, 100);
            assert_eq!(
                items,
                [
                    r#"{"enrollid":1,"name":"chingzou","admin":1,"credentials":[{"backupnum":0,"type":"fingerprint","stored_at":"1970-01-01T00:00:01.000Z"},{"backupnum":10,"type":"password","stored_at":"1970-01-01T00:00:02.000Z"},{"backupnum":11,"type":"card","stored_at":null}]}"#,
                    r#"{"enrollid":2,"name":"ann","admin":1,"credentials":[]}"#,
                    r#"{"enrollid":3,"name":null,"admin":null,"credentials":[{"backupnum":20,"type":"face","stored_at":"1970-01-01T00:00:04.000Z"}]}"#,
                    r#"{"enrollid":4,"name":"dee","admin":0,"credentials":[{"backupnum":3,"type":"fingerprint","stored_at":null}]}"#,
                ]
            );
            assert_eq!(next, None);

            // Pages end between users.
            let (items, next) = page(store, &dev, 0, 2);
            assert_eq!(items.len(), 2);
            assert_eq!(next, Some(3));
            let (items, next) = page(store, &dev, 3, 2);
            assert!(items[0].starts_with(r#"{"enrollid":3,"#), "{items:?}");
            assert_eq!((items.len(), next), (2, None));

            // The card sent again: the new entry replaces the old layout's.
            let card = r#"{"name":"chingzou","backupnum":11,"admin":1,"record":99}"#;
            batcher
                .commit(|st| stage(st, &dev, 1, Some(11), card, 6_000_000))
                .await
                .expect("commit");
            assert!(page(store, &dev, 1, 1).0[0].contains(
                r#"{"backupnum":11,"type":"card","stored_at":"1970-01-01T00:00:06.000Z"}"#
            ));

            for (id, enrolled) in [(1, true), (2, true), (4, true), (5, false), (6, false)] {
                assert_eq!(
                    is_enrolled(store, &dev, id).expect("read"),
                    enrolled,
                    "{id}"
                );
            }
            assert!(is_enrolled(store, &other, 5).expect("read"));

            // Deleting the device takes its users, in both layouts, and nobody else's.
            batcher
                .commit(|st| stage_device_delete(st, &dev))
                .await
                .expect("commit");
            assert_eq!(page(store, &dev, 0, 100), (Vec::<String>::new(), None));
            assert_eq!(page(store, &other, 0, 100).0.len(), 1);
        });
    }

    #[test]
    fn the_last_possible_user_is_listed_and_deleted() {
        let dev = Uuid::from_u128(9);
        with_store("enrolled-edge", async |store, batcher| {
            batcher
                .commit(|st| {
                    stage(st, &dev, u64::MAX, None, r#"{"name":"z"}"#, 1)?;
                    stage(st, &dev, u64::MAX, Some(99), r#"{}"#, 1)
                })
                .await
                .expect("commit");
            let (items, next) = page(store, &dev, u64::MAX, 10);
            assert_eq!(items.len(), 1, "{items:?}");
            assert_eq!(next, None);
            batcher
                .commit(|st| stage_device_delete(st, &dev))
                .await
                .expect("commit");
            assert!(!is_enrolled(store, &dev, u64::MAX).expect("read"));
        });
    }
}
