//! The people registry: the person behind a PIN (the `enrollid` terminals punch with), kept by
//! the operators, so that punches name a person and a person can be written to the terminals.
//! Terminals report whom they enrolled on their own (`enrolled`); this is the operators' side,
//! keyed by the same PIN.
//!
//! Every person is in memory (bounded by `MAX_PEOPLE`), ordered by PIN, because every attendance
//! item listed and every CSV row looks its person up; the store is the durable copy, written
//! before the memory changes.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fleet::enrolled;
use crate::fleet::registry::Registry;
use crate::json;
use crate::store::commit::{Batcher, Staging};
use crate::store::records::{self, Protocol};
use crate::store::{Cf, Store, StoreError, keys};
use crate::time::{now_ms, rfc3339_ms};

/// People the registry holds; past it a new one is refused (507).
pub const MAX_PEOPLE: usize = 100_000;
/// The largest PIN: terminals keep PINs up to 8 digits, and 99999999 is AiFace's unknown face.
pub const MAX_PIN: u64 = 99_999_998;
pub const MAX_NAME: usize = 64;
pub const MAX_CARD: usize = 20;
pub const MAX_DEPARTMENT: usize = 64;
pub const MAX_EXTERNAL_ID: usize = 128;

/// What a person may do on a terminal, in each dialect's terms when it is written there: AiFace
/// `admin` 0/1/2, SmackBio `User`/`Manager`/`Administrator`, ZKTeco `Pri` 0/2/14.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    #[default]
    User,
    Manager,
    Admin,
}

impl Privilege {
    pub fn parse(s: &str) -> Option<Privilege> {
        match s {
            "user" => Some(Privilege::User),
            "manager" => Some(Privilege::Manager),
            "admin" => Some(Privilege::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::User => "user",
            Privilege::Manager => "manager",
            Privilege::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub pin: u64,
    pub name: String,
    #[serde(default)]
    pub card: Option<String>,
    #[serde(default)]
    pub privilege: Privilege,
    #[serde(default)]
    pub department: Option<String>,
    /// The person's id in the site's HR or payroll system, carried on their punches.
    #[serde(default)]
    pub external_id: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl Person {
    /// The API's JSON, with the devices that report the person enrolled (`enrolled_on`).
    pub fn to_json(&self, enrolled_on: &[(Uuid, String)]) -> String {
        let opt = |s: &mut String, key: &str, v: &Option<String>| {
            s.push_str(&format!(",\"{key}\":"));
            match v {
                Some(v) => json::push_str(s, v),
                None => s.push_str("null"),
            }
        };
        let mut s = format!("{{\"pin\":{},\"name\":", self.pin);
        json::push_str(&mut s, &self.name);
        opt(&mut s, "card", &self.card);
        s.push_str(&format!(",\"privilege\":\"{}\"", self.privilege.as_str()));
        opt(&mut s, "department", &self.department);
        opt(&mut s, "external_id", &self.external_id);
        s.push_str(&format!(
            ",\"created_at\":\"{}\",\"updated_at\":\"{}\",\"enrolled_on\":[",
            rfc3339_ms(self.created_at),
            rfc3339_ms(self.updated_at)
        ));
        for (i, (id, name)) in enrolled_on.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("{{\"device_id\":\"{id}\",\"name\":"));
            json::push_str(&mut s, name);
            s.push('}');
        }
        s.push_str("]}");
        s
    }

    /// What a punch carries of its person: `{"name","external_id"}`.
    pub fn on_punch(&self) -> String {
        let mut s = String::from("{\"name\":");
        json::push_str(&mut s, &self.name);
        s.push_str(",\"external_id\":");
        match &self.external_id {
            Some(x) => json::push_str(&mut s, x),
            None => s.push_str("null"),
        }
        s.push('}');
        s
    }
}

#[derive(Debug)]
pub enum PeopleError {
    Exists,
    NotFound,
    Full,
    Store(StoreError),
}

impl From<StoreError> for PeopleError {
    fn from(e: StoreError) -> Self {
        PeopleError::Store(e)
    }
}

#[derive(Debug, Default)]
pub struct People(RwLock<BTreeMap<u64, Person>>);

impl People {
    pub fn load(store: &Store) -> Result<People, StoreError> {
        let mut all = BTreeMap::new();
        store.scan_forward(Cf::People, &[], None, usize::MAX, |_, v| {
            let p: Person = records::decode(v)?;
            all.insert(p.pin, p);
            Ok(true)
        })?;
        Ok(People(RwLock::new(all)))
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Person>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Person>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, pin: u64) -> Option<Person> {
        self.read().get(&pin).cloned()
    }

    /// What a punch of `pin` carries of its person, if there is one.
    pub fn on_punch(&self, pin: u64) -> Option<String> {
        self.read().get(&pin).map(Person::on_punch)
    }

    /// People from `from` on, in PIN order, at most `limit`, and the PIN the next page starts at.
    pub fn page(&self, from: u64, limit: usize) -> (Vec<Person>, Option<u64>) {
        let all = self.read();
        let mut it = all.range(from..);
        let items: Vec<Person> = it.by_ref().take(limit).map(|(_, p)| p.clone()).collect();
        (items, it.next().map(|(pin, _)| *pin))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// Adds a person; `Exists` when the PIN has one. Durable before it is visible.
pub async fn create(
    people: &People,
    batch: &Batcher,
    mut p: Person,
) -> Result<Person, PeopleError> {
    {
        let all = people.read();
        if all.contains_key(&p.pin) {
            return Err(PeopleError::Exists);
        }
        if all.len() >= MAX_PEOPLE {
            return Err(PeopleError::Full);
        }
    }
    let now = now_ms();
    p.created_at = now;
    p.updated_at = now;
    save(batch, &p).await?;
    // Another shard created the same PIN meanwhile: the first to take memory keeps it, and the
    // store is given the record memory holds, so the two agree.
    let existing = {
        let mut all = people.write();
        match all.get(&p.pin) {
            Some(e) => Some(e.clone()),
            None => {
                all.insert(p.pin, p.clone());
                None
            }
        }
    };
    match existing {
        Some(e) => {
            save(batch, &e).await?;
            Err(PeopleError::Exists)
        }
        None => Ok(p),
    }
}

/// Changes a person with `f`, durable before it is visible.
pub async fn update(
    people: &People,
    batch: &Batcher,
    pin: u64,
    f: impl FnOnce(&mut Person),
) -> Result<Person, PeopleError> {
    let mut p = people.get(pin).ok_or(PeopleError::NotFound)?;
    f(&mut p);
    p.updated_at = now_ms().max(p.updated_at);
    save(batch, &p).await?;
    let kept = match people.write().get_mut(&pin) {
        Some(slot) => {
            *slot = p.clone();
            true
        }
        None => false,
    };
    if kept {
        Ok(p)
    } else {
        // Deleted meanwhile: the deletion stands.
        delete_record(batch, pin).await?;
        Err(PeopleError::NotFound)
    }
}

pub async fn delete(people: &People, batch: &Batcher, pin: u64) -> Result<(), PeopleError> {
    if people.get(pin).is_none() {
        return Err(PeopleError::NotFound);
    }
    delete_record(batch, pin).await?;
    people.write().remove(&pin);
    Ok(())
}

/// A person a terminal reported (a ZKTeco `OPERLOG` `USER` line) for a PIN the registry has no
/// one for: staged into the caller's batch, so it commits with the terminal's own record of the
/// user. None when the PIN has a person already, or the registry is full.
pub fn stage_reported(
    people: &People,
    st: &mut Staging<'_>,
    p: &Person,
) -> Result<Option<Person>, StoreError> {
    {
        let all = people.read();
        if all.contains_key(&p.pin) || all.len() >= MAX_PEOPLE {
            return Ok(None);
        }
    }
    st.put(Cf::People, &keys::person(p.pin), &records::encode(p)?)?;
    Ok(Some(p.clone()))
}

/// Takes reported people into memory once their batch has committed. One the operators created
/// meanwhile stays, and is written again (without waiting) so the store holds it too.
pub fn reported(people: &People, batch: &Batcher, list: Vec<Person>) {
    for p in list {
        let kept = {
            let mut all = people.write();
            match all.get(&p.pin) {
                Some(existing) => Some(existing.clone()),
                None => {
                    all.insert(p.pin, p);
                    None
                }
            }
        };
        if let Some(existing) = kept {
            let staged = records::encode(&existing).and_then(|v| {
                batch.stage(|st| st.put(Cf::People, &keys::person(existing.pin), &v))
            });
            if let Err(e) = staged {
                tracing::error!(error = %e, "rewriting a person failed");
            }
        }
    }
}

async fn save(batch: &Batcher, p: &Person) -> Result<(), StoreError> {
    let v = records::encode(p)?;
    batch
        .commit(|st| st.put(Cf::People, &keys::person(p.pin), &v))
        .await
}

async fn delete_record(batch: &Batcher, pin: u64) -> Result<(), StoreError> {
    batch
        .commit(|st| st.delete(Cf::People, &keys::person(pin)))
        .await
}

/// The devices that report `pin` enrolled (AiFace `senduser`, ZKTeco `OPERLOG`, …), by name:
/// one point lookup per device.
pub fn enrolled_on(
    store: &Store,
    registry: &Registry,
    pin: u64,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let mut out = Vec::new();
    let mut failed = None;
    registry.visit_from(None, |d| {
        match enrolled::is_enrolled(store, &d.id, pin) {
            Ok(true) => out.push((d.id, d.with_record(|r| r.name.clone()))),
            Ok(false) => {}
            Err(e) => failed = Some(e),
        }
        failed.is_none()
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The commands that write a person to a terminal of `protocol`, or remove them from it, as
/// `(command, payload)` in the neutral names each dialect's conversation takes. Generic devices
/// and HTTP terminals have no user commands.
pub fn sync_commands(
    protocol: Protocol,
    p: &Person,
    remove: bool,
) -> Result<Vec<(&'static str, String)>, String> {
    let pin = p.pin;
    if remove {
        return match protocol {
            Protocol::Aiface | Protocol::Smackbio | Protocol::Zkteco => {
                Ok(vec![("delete_user", format!("{{\"enrollid\":{pin}}}"))])
            }
            other => Err(no_user_commands(other)),
        };
    }
    let mut name = String::new();
    json::push_str(&mut name, &p.name);
    match protocol {
        // `setusername` writes the name alone; a card is a credential of its own (`backupnum`
        // 11), which also carries the admin level.
        Protocol::Aiface => {
            let mut out = vec![(
                "setusername",
                format!("{{\"count\":1,\"record\":[{{\"enrollid\":{pin},\"name\":{name}}}]}}"),
            )];
            if let Some(card) = &p.card {
                let admin = match p.privilege {
                    Privilege::User => 0,
                    Privilege::Manager => 1,
                    Privilege::Admin => 2,
                };
                let mut c = String::new();
                json::push_str(&mut c, card);
                out.push((
                    "set_user",
                    format!(
                        "{{\"enrollid\":{pin},\"name\":{name},\"backupnum\":11,\"admin\":{admin},\"record\":{c}}}"
                    ),
                ));
            }
            Ok(out)
        }
        Protocol::Smackbio => {
            let privilege = match p.privilege {
                Privilege::User => "User",
                Privilege::Manager => "Manager",
                Privilege::Admin => "Administrator",
            };
            let mut s =
                format!("{{\"enrollid\":{pin},\"name\":{name},\"privilege\":\"{privilege}\"");
            if let Some(card) = &p.card {
                // SmackBio keeps a card as a 32-bit number.
                let n = card
                    .parse::<u32>()
                    .map_err(|_| "a SmackBio terminal keeps a card as a number up to 4294967295")?;
                s.push_str(&format!(",\"card\":{n}"));
            }
            s.push('}');
            Ok(vec![("set_user", s)])
        }
        Protocol::Zkteco => {
            let admin = match p.privilege {
                Privilege::User => 0,
                Privilege::Manager => 2,
                Privilege::Admin => 14,
            };
            let mut s = format!("{{\"enrollid\":{pin},\"name\":{name},\"admin\":{admin}");
            if let Some(card) = &p.card {
                s.push_str(",\"card\":");
                json::push_str(&mut s, card);
            }
            s.push('}');
            Ok(vec![("set_user", s)])
        }
        other => Err(no_user_commands(other)),
    }
}

fn no_user_commands(p: Protocol) -> String {
    format!(
        "a {} device has no user commands: people are written to AiFace, SmackBio and ZKTeco terminals",
        p.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::shard_stub::with_batcher;
    use crate::store::temp::TempStore;

    fn ann() -> Person {
        Person {
            pin: 7,
            name: "Ann \"A\" Lee".into(),
            card: Some("99887766".into()),
            privilege: Privilege::Admin,
            department: Some("Ops".into()),
            external_id: Some("EMP-7".into()),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn people_are_durable_before_they_are_visible_and_survive_a_reload() {
        let tmp = TempStore::open("people", false).expect("store");
        let store = tmp.store().clone();
        let people = People::load(&store).expect("load");
        with_batcher(&store, async |batcher| {
            create(&people, batcher, ann()).await.expect("create");
            assert!(matches!(
                create(&people, batcher, ann()).await,
                Err(PeopleError::Exists)
            ));
            update(&people, batcher, 7, |p| p.department = None)
                .await
                .expect("update");
            let mut bo = ann();
            bo.pin = 3;
            bo.name = "Bo".into();
            create(&people, batcher, bo).await.expect("create");
            delete(&people, batcher, 3).await.expect("delete");
            assert!(matches!(
                delete(&people, batcher, 3).await,
                Err(PeopleError::NotFound)
            ));
        });
        let again = People::load(&store).expect("reload");
        assert_eq!(again.len(), 1);
        let p = again.get(7).expect("Ann");
        assert_eq!(p.department, None);
        assert_eq!(p.external_id.as_deref(), Some("EMP-7"));
        assert_eq!(
            again.on_punch(7).as_deref(),
            Some(r#"{"name":"Ann \"A\" Lee","external_id":"EMP-7"}"#)
        );
        assert_eq!(again.on_punch(8), None);
    }

    #[test]
    fn pages_run_in_pin_order() {
        let mut all = BTreeMap::new();
        for pin in [5, 1, 9, 3] {
            let mut p = ann();
            p.pin = pin;
            all.insert(pin, p);
        }
        let people = People(RwLock::new(all));
        let (page, next) = people.page(0, 2);
        assert_eq!(page.iter().map(|p| p.pin).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(next, Some(5));
        let (page, next) = people.page(5, 2);
        assert_eq!(page.iter().map(|p| p.pin).collect::<Vec<_>>(), [5, 9]);
        assert_eq!(next, None);
    }

    #[test]
    fn each_dialect_gets_its_own_user_commands() {
        let p = ann();
        let names = |proto| {
            sync_commands(proto, &p, false)
                .expect("commands")
                .into_iter()
                .map(|(c, payload)| {
                    let mut b = payload.clone().into_bytes();
                    assert!(simd_json::to_owned_value(&mut b).is_ok(), "{payload}");
                    (c, payload)
                })
                .collect::<Vec<_>>()
        };
        let af = names(Protocol::Aiface);
        assert_eq!(af[0].0, "setusername");
        assert_eq!(af[1].0, "set_user");
        assert!(
            af[1]
                .1
                .contains(r#""backupnum":11,"admin":2,"record":"99887766""#)
        );
        let sb = names(Protocol::Smackbio);
        assert_eq!(
            sb,
            [("set_user", r#"{"enrollid":7,"name":"Ann \"A\" Lee","privilege":"Administrator","card":99887766}"#.to_string())]
        );
        let zk = names(Protocol::Zkteco);
        assert_eq!(
            zk,
            [(
                "set_user",
                r#"{"enrollid":7,"name":"Ann \"A\" Lee","admin":14,"card":"99887766"}"#.to_string()
            )]
        );
        for proto in [Protocol::Aiface, Protocol::Smackbio, Protocol::Zkteco] {
            assert_eq!(
                sync_commands(proto, &p, true).expect("remove"),
                [("delete_user", r#"{"enrollid":7}"#.to_string())]
            );
        }
        for proto in [Protocol::Generic, Protocol::Http] {
            assert!(sync_commands(proto, &p, false).is_err());
            assert!(sync_commands(proto, &p, true).is_err());
        }
        let mut letters = ann();
        letters.card = Some("A1".into());
        assert!(sync_commands(Protocol::Smackbio, &letters, false).is_err());
    }
}
