//! The device registry: every device's identity and live state, shared by all shards.
//!
//! Reads (register, command routing) take a read lock on a hash map for a moment; per-message state
//! (`last_seen`) is an atomic on the device, so steady traffic never touches a lock. Each device has at
//! most one live session: `claim` makes the handover explicit, so two sessions of one device never
//! write at once (which is what keeps msg_id de-duplication exact across reconnects).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::auth::{self, TokenHash};
use crate::store::records::{self, CommandStatus, DeviceRecord};
use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// Where a live session runs: its shard and its connection id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRef {
    pub shard: usize,
    pub conn: u64,
}

pub struct Device {
    pub id: Uuid,
    record: RwLock<DeviceRecord>,
    token: RwLock<TokenHash>,
    pub last_seen_ms: AtomicU64,
    session: Mutex<Option<SessionRef>>,
    /// Online by HTTP requests (legacy devices), until `--http-offline-after` of silence.
    pub http_online: AtomicBool,
    /// Signalled whenever the session slot is released.
    pub released: Notify,
    next_command_seq: AtomicU64,
    /// Commands not yet delivered; bounded by `--command-queue-limit`.
    pub queued_commands: AtomicU32,
    /// Every command with a sequence number at or below this has left the queue, so delivery scans
    /// start after it instead of at the device's first command ever.
    pub delivered_through: AtomicU64,
    pub deleted: AtomicBool,
}

impl Device {
    fn new(rec: DeviceRecord, token: TokenHash) -> Device {
        Device {
            id: rec.device_id,
            last_seen_ms: AtomicU64::new(rec.last_seen.unwrap_or(0)),
            record: RwLock::new(rec),
            token: RwLock::new(token),
            session: Mutex::new(None),
            http_online: AtomicBool::new(false),
            released: Notify::new(),
            next_command_seq: AtomicU64::new(1),
            queued_commands: AtomicU32::new(0),
            delivered_through: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        }
    }

    pub fn record(&self) -> DeviceRecord {
        let mut r = self
            .record
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let seen = self.last_seen_ms.load(Ordering::Relaxed);
        r.last_seen = (seen > 0).then_some(seen);
        r
    }

    pub fn update_record(&self, f: impl FnOnce(&mut DeviceRecord)) -> DeviceRecord {
        let mut g = self.record.write().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
        g.clone()
    }

    pub fn verify_token(&self, presented: &str) -> bool {
        let h = *self.token.read().unwrap_or_else(|p| p.into_inner());
        auth::verify_token(presented, &h)
    }

    pub fn set_token(&self, hash: TokenHash) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = hash;
    }

    pub fn session(&self) -> Option<SessionRef> {
        *self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_online(&self) -> bool {
        self.session().is_some() || self.http_online.load(Ordering::Acquire)
    }

    /// Takes the session slot if it is free; otherwise returns its holder, which the caller asks to
    /// close before waiting on `released` and trying again.
    pub fn claim(&self, me: SessionRef) -> Result<(), SessionRef> {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match *s {
            Some(holder) if holder != me => Err(holder),
            _ => {
                *s = Some(me);
                Ok(())
            }
        }
    }

    /// Frees the slot if `me` holds it. Returns whether it did.
    pub fn release(&self, me: SessionRef) -> bool {
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if *s == Some(me) {
            *s = None;
            drop(s);
            self.released.notify_waiters();
            true
        } else {
            false
        }
    }

    pub fn next_command_seq(&self) -> u64 {
        self.next_command_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Registry {
    devices: RwLock<HashMap<Uuid, Arc<Device>>>,
    serials: RwLock<HashMap<String, Uuid>>,
    /// Serials whose device is being created (its commit is in flight).
    reserved: Mutex<std::collections::HashSet<String>>,
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
            let dev = Device::new(rec, hash);
            let cmds = records::load_commands(store, &dev.id)?;
            let queued = cmds
                .iter()
                .filter(|c| c.effective_status(now) == CommandStatus::Queued)
                .count();
            dev.queued_commands.store(queued as u32, Ordering::Relaxed);
            let next = cmds.last().map_or(1, |c| c.seq + 1);
            dev.next_command_seq.store(next, Ordering::Relaxed);
            let through = cmds
                .iter()
                .find(|c| c.effective_status(now) == CommandStatus::Queued)
                .map_or(next - 1, |c| c.seq - 1);
            dev.delivered_through.store(through, Ordering::Relaxed);
            reg.insert(Arc::new(dev));
        }
        Ok(reg)
    }

    fn insert(&self, dev: Arc<Device>) {
        let serial = dev.record().serial;
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

    pub fn remove(&self, id: &Uuid) -> Option<Arc<Device>> {
        let dev = self
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        dev.deleted.store(true, Ordering::Release);
        if let Some(s) = dev.record().serial {
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

    pub fn serial_taken(&self, serial: &str) -> bool {
        self.serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(serial)
    }

    /// All devices, ordered by id (the API's cursor order).
    pub fn snapshot(&self) -> Vec<Arc<Device>> {
        let mut v: Vec<_> = self
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|d| d.id);
        v
    }

    pub fn len(&self) -> usize {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
