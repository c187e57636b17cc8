//! The device registry: every device's identity and live state, shared by all shards.
//!
//! Reads (register, command routing) take a read lock on a hash map for a moment; per-message state
//! (`last_seen`) is an atomic on the device, so steady traffic never touches a lock. Each device has at
//! most one live session: `claim` makes the handover explicit, so two sessions of one device never
//! write at once (which is what keeps msg_id de-duplication exact across reconnects).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::fleet::auth::{self, TokenHash};
use crate::fleet::handed_out::HandedOut;
use crate::fleet::links::{Links, SessionRef};
use crate::fleet::msg_window::MsgWindow;
use crate::fleet::queue::CommandQueue;
use crate::fleet::sources::{self, AllowedSources};
use crate::store::commit::{Batcher, Staging, Ticket};
use crate::store::records::{self, CommandStatus, DeviceRecord};
use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// `Device::owned_epoch` while a session is taking the device over in the cluster: no owner
/// record closes that session until its own is written.
pub const TAKING: u64 = u64::MAX;

/// The device setting naming its time zone (IANA), in which terminals and HTTP devices speak.
pub const SETTING_TIMEZONE: &str = "timezone";

pub struct Device {
    pub id: Uuid,
    record: RwLock<DeviceRecord>,
    token: RwLock<TokenHash>,
    /// `settings.allowed_sources`, parsed when the setting changes rather than per registration.
    sources: RwLock<AllowedSources>,
    pub last_seen_ms: AtomicU64,
    session: Mutex<Option<Holder>>,
    /// Online by HTTP requests (legacy devices), until `--http-offline-after` of silence.
    pub http_online: AtomicBool,
    /// Signalled whenever the session slot is released.
    pub released: Notify,
    /// The durable command queue's in-memory state: sequence numbers, what is visible, what is
    /// delivered.
    pub commands: CommandQueue,
    /// Commands a polling terminal (ZKTeco ADMS) holds unanswered.
    pub handed_out: HandedOut,
    pub deleted: AtomicBool,
    /// Online on another node of the cluster (its owner record says so, and that node is alive).
    pub elsewhere: AtomicBool,
    /// The epoch of the owner record with which this node last took the device: an owner record
    /// of another node closes the session here only when it is newer than that (a late echo of
    /// the record this node replaced does not). `TAKING` while a session here is taking it.
    pub owned_epoch: AtomicU64,
}

impl Device {
    fn new(rec: DeviceRecord, token: TokenHash) -> Device {
        Device {
            id: rec.device_id,
            sources: RwLock::new(parse_sources(&rec)),
            last_seen_ms: AtomicU64::new(rec.last_seen.unwrap_or(0)),
            record: RwLock::new(rec),
            token: RwLock::new(token),
            session: Mutex::new(None),
            http_online: AtomicBool::new(false),
            released: Notify::new(),
            commands: CommandQueue::default(),
            handed_out: HandedOut::default(),
            deleted: AtomicBool::new(false),
            elsewhere: AtomicBool::new(false),
            owned_epoch: AtomicU64::new(0),
        }
    }

    /// A copy of the device's record, with `last_seen` as of now: for persisting it or answering
    /// with all of it.
    pub fn record(&self) -> DeviceRecord {
        let mut r = self.with_record(DeviceRecord::clone);
        let seen = self.last_seen_ms.load(Ordering::Relaxed);
        r.last_seen = (seen > 0).then_some(seen);
        r
    }

    /// Reads the record in place, for callers that need a field or two and must not clone the
    /// whole record. Its `last_seen` is as of the last persist; `last_seen_ms` is the live one.
    pub fn with_record<R>(&self, f: impl FnOnce(&DeviceRecord) -> R) -> R {
        f(&self.record.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn update_record(&self, f: impl FnOnce(&mut DeviceRecord)) -> DeviceRecord {
        let mut g = self.record.write().unwrap_or_else(|p| p.into_inner());
        let sources_before = g.settings.get(sources::SETTING).cloned();
        f(&mut g);
        // Every settings change passes here, so the parsed binding cannot go stale.
        if g.settings.get(sources::SETTING) != sources_before.as_ref() {
            *self.sources.write().unwrap_or_else(|p| p.into_inner()) = parse_sources(&g);
        }
        g.clone()
    }

    /// The device's configured zone (setting `timezone`), if any: terminals and HTTP devices read
    /// and write their wall-clock time in it. Without one the clock rule (`crate::clock`) decides;
    /// never the server's own zone.
    pub fn zone(&self) -> Option<jiff::tz::TimeZone> {
        self.with_record(|r| {
            r.settings
                .get(SETTING_TIMEZONE)
                .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        })
    }

    /// Whether `ip` is within the device's `allowed_sources` (any address when it has none).
    pub fn source_allowed(&self, ip: IpAddr) -> bool {
        self.sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .allows(ip)
    }

    pub fn verify_token(&self, presented: &str) -> bool {
        let h = *self.token.read().unwrap_or_else(|p| p.into_inner());
        auth::verify_token(presented, &h)
    }

    pub fn set_token(&self, hash: TokenHash) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = hash;
    }

    pub fn session(&self) -> Option<SessionRef> {
        self.holder().map(|h| h.session)
    }

    /// The live session and the peer it talks to.
    pub fn holder(&self) -> Option<Holder> {
        *self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_online(&self) -> bool {
        self.session().is_some()
            || self.http_online.load(Ordering::Acquire)
            || self.elsewhere.load(Ordering::Acquire)
    }

    /// Takes the session slot for `me`, talking to `peer`, if it is free; otherwise returns its
    /// holder, which the caller asks to close before waiting on `released` and trying again. The
    /// slot is freed when the `Claim` is dropped, and not before every record staged through it
    /// has been answered.
    pub fn claim(self: &Arc<Self>, me: SessionRef, peer: SocketAddr) -> Result<Claim, Holder> {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match *s {
            Some(holder) if holder.session != me => Err(holder),
            _ => {
                *s = Some(Holder::new(me, peer));
                Ok(Claim {
                    dev: self.clone(),
                    me,
                    last: None,
                    msg_window: None,
                })
            }
        }
    }

    /// Frees the slot if `me` holds it. Returns whether it did. Only `Claim`'s drop calls it.
    fn release(&self, me: SessionRef) -> bool {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_some_and(|h| h.session == me) {
            *s = None;
            drop(s);
            self.released.notify_waiters();
            true
        } else {
            false
        }
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// The session in a device's slot: where it runs, and the address of the peer it talks to (so a
/// newer session from elsewhere can tell that it is taking over from someone else). The address is
/// kept as IP and port rather than a `SocketAddr`, whose IPv6 form carries flow and scope fields:
/// every device has this slot, and 16 bytes keep `Device` in a smaller allocation class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub session: SessionRef,
    ip: IpAddr,
    port: u16,
}

impl Holder {
    fn new(session: SessionRef, peer: SocketAddr) -> Holder {
        Holder {
            session,
            ip: peer.ip(),
            port: peer.port(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// The device's allowed sources from its record. A stored list that does not parse (written
/// before the setting was checked) lets nothing in: its owner meant to restrict the device.
fn parse_sources(rec: &DeviceRecord) -> AllowedSources {
    let Some(text) = rec.settings.get(sources::SETTING) else {
        return AllowedSources::default();
    };
    AllowedSources::parse(text).unwrap_or_else(|e| {
        tracing::error!(device = %rec.device_id, error = %e, "allowed_sources does not parse: the device may not connect until it is fixed");
        AllowedSources::nothing()
    })
}

/// A session's hold on its device's one session slot.
///
/// Records a session stages go through its claim (`stage`), which remembers the newest batch
/// ticket; batches of one shard resolve in order, so when that ticket resolves, every record the
/// session staged has been committed or has failed. Dropping the claim — at the end of the
/// session, or because its task panicked or was cancelled — frees the slot only then: a newer
/// session of the device, whose msg_id and punch de-duplication reads the store, can never look
/// before the old session's records are there.
pub struct Claim {
    dev: Arc<Device>,
    me: SessionRef,
    last: Option<Rc<Ticket>>,
    /// The device's recent msg_ids, filled on the session's first one (`ingest::message`).
    /// Boxed: a claim is part of every held device session's task, and a session that has sent
    /// no msg_id must not carry the window's room (ARCHITECTURE.md: "A held session costs its
    /// state").
    msg_window: Option<Box<MsgWindow>>,
}

impl Claim {
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// Stages records for this session's device into `batch`; the slot outlives their commit.
    pub fn stage(
        &mut self,
        batch: &Batcher,
        f: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
    ) -> Result<Rc<Ticket>, StoreError> {
        let ticket = batch.stage(f)?;
        self.staged(&ticket);
        Ok(ticket)
    }

    /// The session's msg_id window, if its first msg_id filled it.
    pub fn msg_window(&mut self) -> &mut Option<Box<MsgWindow>> {
        &mut self.msg_window
    }

    /// Notes a ticket of records staged for this device by other means (a `sendlog`'s punches).
    pub fn staged(&mut self, ticket: &Rc<Ticket>) {
        self.last = Some(ticket.clone());
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let (dev, me) = (self.dev.clone(), self.me);
        match self.last.take() {
            Some(t) => t.on_resolve(move || {
                dev.release(me);
            }),
            None => {
                dev.release(me);
            }
        }
    }
}

/// A claim won by `take_over`, and the peer of the live session it took the slot from, if any.
/// Kept apart from the claim: a session holds its claim as long as it lives, and needs whom it
/// replaced only once.
pub struct TakenOver {
    pub claim: Claim,
    pub replaced: Option<SocketAddr>,
}

/// Takes `dev`'s session slot for `me`, talking to `peer`. A live holder is asked (through
/// `links`) to close, and the slot passes once it has let go — which its `Claim` does only after
/// its records resolved. None if that takes longer than `wait`.
pub async fn take_over(
    links: &dyn Links,
    dev: &Arc<Device>,
    me: SessionRef,
    peer: SocketAddr,
    wait: Duration,
) -> Option<TakenOver> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut replaced = None;
    loop {
        // Created before the attempt: a release in between still wakes it.
        let released = dev.released.notified();
        match dev.claim(me, peer) {
            Ok(claim) => return Some(TakenOver { claim, replaced }),
            Err(holder) => {
                replaced.get_or_insert(holder.peer());
                links.close_session(holder.session, 4000, "replaced by a newer session");
                if tokio::time::timeout_at(deadline, released).await.is_err() {
                    return None;
                }
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    /// Ordered by id, the API's cursor order: a page of the device list is a range walk.
    devices: RwLock<BTreeMap<Uuid, Arc<Device>>>,
    serials: RwLock<HashMap<String, Uuid>>,
    /// Serials whose device is being created (its commit is in flight).
    reserved: Mutex<std::collections::HashSet<String>>,
    /// Signalled when a reservation ends (the device exists, or its creation failed).
    settled: Notify,
}

/// Holds a serial while its device is created; released on drop. Taking it before the commit's
/// wait is what keeps two concurrent creations from both passing the "serial free" check.
pub struct SerialReservation<'a> {
    registry: &'a Registry,
    serial: String,
}

impl Drop for SerialReservation<'_> {
    fn drop(&mut self) {
        self.registry
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.serial);
        self.registry.settled.notify_waiters();
    }
}

impl Registry {
    /// Loads every device, with its command queue position, from the store.
    pub fn load(store: &Store) -> Result<Registry, StoreError> {
        let reg = Registry::default();
        let now = now_ms();
        for rec in records::load_devices(store)? {
            let hash = auth::unhex(&rec.token_hash)
                .and_then(|v| <TokenHash>::try_from(v.as_slice()).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("token hash of {}", rec.device_id)))?;
            let mut dev = Device::new(rec, hash);
            let cmds = records::load_commands(store, &dev.id)?;
            let queued = cmds
                .iter()
                .filter(|c| c.effective_status(now) == CommandStatus::Queued)
                .count();
            let last = cmds.last().map_or(0, |c| c.seq);
            let through = cmds
                .iter()
                .find(|c| c.effective_status(now) == CommandStatus::Queued)
                .map_or(last, |c| c.seq - 1);
            dev.commands = CommandQueue::loaded(last, through, queued as u32);
            // A polling terminal's commands that were handed out and not answered are handed out
            // again (`handed_out`); a session's are not, as it delivers each once per session.
            if dev.with_record(|r| r.protocol) == records::Protocol::Zkteco {
                dev.handed_out = HandedOut::loaded(
                    cmds.iter()
                        .filter(|c| c.status == CommandStatus::Sent)
                        .map(|c| c.seq),
                );
            }
            reg.insert(Arc::new(dev));
        }
        Ok(reg)
    }

    fn insert(&self, dev: Arc<Device>) {
        let serial = dev.with_record(|r| r.serial.clone());
        if let Some(s) = serial {
            self.serials
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s, dev.id);
        }
        self.devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dev.id, dev);
    }

    /// Adds a device that the caller has just committed to the store.
    pub fn add(&self, rec: DeviceRecord, token: TokenHash) -> Arc<Device> {
        let dev = Arc::new(Device::new(rec, token));
        self.insert(dev.clone());
        dev
    }

    /// Adds a device from the cluster's registry unless this node has it already (a change that
    /// came back from NATS while the node that made it was adding it): the device there stays.
    pub fn add_if_absent(&self, rec: DeviceRecord, token: TokenHash) -> Arc<Device> {
        let mut devices = self.devices.write().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = devices.get(&rec.device_id) {
            return d.clone();
        }
        let dev = Arc::new(Device::new(rec, token));
        if let Some(s) = dev.with_record(|r| r.serial.clone()) {
            self.serials
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s, dev.id);
        }
        devices.insert(dev.id, dev.clone());
        dev
    }

    pub fn remove(&self, id: &Uuid) -> Option<Arc<Device>> {
        let dev = self
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        dev.deleted.store(true, Ordering::Release);
        if let Some(s) = dev.with_record(|r| r.serial.clone()) {
            self.serials
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&s);
        }
        Some(dev)
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<Device>> {
        self.devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn by_serial(&self, serial: &str) -> Option<Arc<Device>> {
        let id = *self
            .serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)?;
        self.get(&id)
    }

    /// Reserves a serial no device has and nobody is creating; None otherwise.
    pub fn reserve_serial(&self, serial: &str) -> Option<SerialReservation<'_>> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        if self.serial_taken(serial) || !reserved.insert(serial.to_string()) {
            return None;
        }
        Some(SerialReservation {
            registry: self,
            serial: serial.to_string(),
        })
    }

    /// Waits while `serial` is reserved by a creation in flight; then its device, or None if the
    /// creation failed.
    pub async fn serial_settled(&self, serial: &str) -> Option<Arc<Device>> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the checks, so a reservation ending in between still wakes us.
            settled.as_mut().enable();
            if let Some(d) = self.by_serial(serial) {
                return Some(d);
            }
            if !self
                .reserved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(serial)
            {
                return None;
            }
            settled.await;
        }
    }

    pub fn serial_taken(&self, serial: &str) -> bool {
        self.serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(serial)
    }

    /// Visits devices in id order, starting after `after`, until `visit` returns false. The
    /// registry's read lock is held meanwhile: visitors read devices, they do not change the
    /// registry.
    pub fn visit_from(&self, after: Option<Uuid>, mut visit: impl FnMut(&Arc<Device>) -> bool) {
        use std::ops::Bound;
        let devices = self.devices.read().unwrap_or_else(|p| p.into_inner());
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for dev in devices.range((from, Bound::Unbounded)).map(|(_, d)| d) {
            if !visit(dev) {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A device that exists only in memory, for the unit tests of the rules around it.
#[cfg(test)]
pub(crate) fn test_device() -> Arc<Device> {
    let token = auth::hash_token("test-token-0123456789");
    let rec = DeviceRecord {
        device_id: Uuid::new_v4(),
        name: "test".into(),
        protocol: records::Protocol::Generic,
        serial: None,
        token_hash: auth::hex(&token),
        created_at: 0,
        last_seen: None,
        settings: Default::default(),
        info: None,
        stamps: Default::default(),
    };
    Arc::new(Device::new(rec, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cf;
    use crate::store::commit::spawn_committer;
    use crate::store::temp::{TempStore, run_local};

    const A: SessionRef = SessionRef { shard: 0, conn: 1 };
    const B: SessionRef = SessionRef { shard: 1, conn: 2 };
    /// The peers of A and B.
    const PA: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(10, 0, 0, 1),
        4001,
    ));
    const PB: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(10, 0, 0, 2),
        4002,
    ));

    #[test]
    fn one_session_holds_the_slot_and_dropping_the_claim_frees_it() {
        let dev = test_device();
        let claim = dev.claim(A, PA).expect("free slot");
        assert_eq!(
            dev.claim(B, PB).err().map(|h| h.session),
            Some(A),
            "the holder is named to the newcomer"
        );
        assert!(dev.is_online());
        drop(claim);
        assert_eq!(dev.session(), None);
        let b = dev.claim(B, PB).expect("free again");
        assert_eq!(b.device().id, dev.id);
    }

    #[test]
    fn a_panicking_session_cannot_leave_its_device_busy() {
        let dev = test_device();
        let d = dev.clone();
        let crashed = std::thread::spawn(move || {
            let _claim = d.claim(A, PA).expect("free slot");
            panic!("session task panicked");
        })
        .join();
        assert!(crashed.is_err());
        assert_eq!(dev.session(), None, "the claim was released by unwinding");
    }

    /// The fast reconnect: the old session ends (EOF) with records still in the open batch. Its
    /// slot must not pass to the new session before those records are committed, since the new
    /// session's de-duplication reads the store.
    #[test]
    fn the_slot_passes_only_after_the_old_sessions_records_resolve() {
        let tmp = TempStore::open("claim-handover", false).expect("store");
        let (committer, thread) = spawn_committer(tmp.store().clone(), "t".into()).expect("thread");
        let batcher = Rc::new(Batcher::new(tmp.store().clone(), committer, 1 << 20));
        let dev = test_device();
        run_local(async {
            let mut old = dev.claim(A, PA).expect("free slot");
            old.stage(&batcher, |st| st.put(Cf::MsgIds, b"m1", b"1"))
                .expect("stage");
            let last = old
                .stage(&batcher, |st| st.put(Cf::MsgIds, b"m2", b"1"))
                .expect("stage");
            // The connection drops: the session ends before its batch went out.
            drop(old);
            assert_eq!(
                dev.session(),
                Some(A),
                "released before its records resolved"
            );
            assert_eq!(dev.claim(B, PB).err().map(|h| h.session), Some(A));
            let run = tokio::task::spawn_local({
                let b = batcher.clone();
                async move { b.run().await }
            });
            assert!(last.wait().await);
            let new = dev.claim(B, PB).expect("released once committed");
            for k in [&b"m1"[..], b"m2"] {
                assert!(
                    tmp.store().exists(Cf::MsgIds, k).expect("read"),
                    "the new session sees what the old one staged"
                );
            }
            drop(new);
            batcher.close();
            run.await.expect("batcher loop");
        });
        thread.join().expect("committer");
    }

    /// Records what the rules asked of the runtime.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(SessionRef, u16)>>);

    impl Links for Recorder {
        fn has_admins(&self) -> bool {
            false
        }
        fn broadcast(&self, _: Arc<str>) {}
        fn commands_pending(&self, _: SessionRef) {}
        fn close_session(&self, s: SessionRef, code: u16, _: &'static str) {
            self.0.lock().unwrap().push((s, code));
        }
    }

    #[test]
    fn take_over_asks_the_holder_to_close_and_waits_for_it() {
        let dev = test_device();
        let links = Recorder::default();
        run_local(async {
            let old = dev.claim(A, PA).expect("free slot");
            // The old session closes a little later, as a session on another shard would.
            let closer = tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(old);
            });
            let new = take_over(&links, &dev, B, PB, Duration::from_secs(5)).await;
            assert_eq!(
                new.as_ref().and_then(|t| t.replaced),
                Some(PA),
                "the claim names whom it took the slot from"
            );
            assert_eq!(dev.session(), Some(B));
            assert_eq!(links.0.lock().unwrap().first(), Some(&(A, 4000)));
            closer.await.expect("closer");
        });
    }

    #[test]
    fn take_over_gives_up_on_a_holder_that_never_lets_go() {
        let dev = test_device();
        let links = Recorder::default();
        let _old = dev.claim(A, PA).expect("free slot");
        let got = run_local(take_over(&links, &dev, B, PB, Duration::from_millis(100)));
        assert!(got.is_none());
        assert_eq!(dev.session(), Some(A), "the holder keeps its slot");
    }

    #[test]
    fn a_failed_batch_also_hands_the_slot_over() {
        let dev = test_device();
        let mut old = dev.claim(A, PA).expect("free slot");
        let t = Rc::new(Ticket::default());
        old.staged(&t);
        drop(old);
        assert_eq!(dev.session(), Some(A));
        // The batch will never be answered (its shard went away): the ticket's end frees the slot.
        drop(t);
        assert_eq!(dev.session(), None);
    }

    #[test]
    fn a_claim_of_a_free_slot_replaced_nobody() {
        let dev = test_device();
        let links = Recorder::default();
        let claim = run_local(take_over(&links, &dev, A, PA, Duration::from_secs(1)));
        assert_eq!(claim.as_ref().map(|t| t.replaced), Some(None));
        assert!(links.0.lock().unwrap().is_empty());
    }

    #[test]
    fn allowed_sources_follow_the_settings() {
        let dev = test_device();
        let outside: IpAddr = "192.0.2.9".parse().unwrap();
        let inside: IpAddr = "10.9.0.4".parse().unwrap();
        assert!(dev.source_allowed(outside), "no binding: any address");
        dev.update_record(|r| {
            r.settings
                .insert(sources::SETTING.into(), "10.9.0.0/16".into());
        });
        assert!(dev.source_allowed(inside));
        assert!(!dev.source_allowed(outside));
        // Other settings changing leave the binding alone.
        dev.update_record(|r| {
            r.settings.insert("log_position".into(), "7".into());
        });
        assert!(!dev.source_allowed(outside));
        dev.update_record(|r| {
            r.settings.insert(sources::SETTING.into(), String::new());
        });
        assert!(dev.source_allowed(outside), "an empty list unbinds");
    }

    #[test]
    fn the_device_list_walks_in_id_order_from_a_cursor() {
        let reg = Registry::default();
        let mut ids: Vec<Uuid> = (0..20)
            .map(|_| {
                let d = test_device();
                let id = d.id;
                reg.insert(d);
                id
            })
            .collect();
        ids.sort();
        let mut seen = Vec::new();
        reg.visit_from(Some(ids[4]), |d| {
            seen.push(d.id);
            seen.len() < 5
        });
        assert_eq!(seen, ids[5..10]);
    }
}
