//! Serials that tried to connect but match no device, kept until an admin approves (creating the
//! device) or dismisses them. HTTP devices and the biometric WebSocket protocols share this list.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::shard::Local;
use crate::store::records::{self, Protocol};
use crate::store::{Cf, Store, StoreError};

/// Serials remembered at once. Past this the longest-silent one is forgotten (a scanner sending
/// random serials must not grow memory or the store without bound).
pub const MAX_PENDING: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingDevice {
    pub serial: String,
    pub protocol: Protocol,
    pub first_seen: u64,
    pub last_seen: u64,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub remote: String,
    pub requests: u64,
}

#[derive(Default)]
pub struct Pending {
    map: Mutex<HashMap<String, PendingDevice>>,
}

impl Pending {
    pub fn load(store: &Store) -> Result<Pending, StoreError> {
        let mut map = HashMap::new();
        store.scan_forward(Cf::Pending, &[], None, MAX_PENDING, |_, v| {
            let p: PendingDevice = records::decode(v)?;
            map.insert(p.serial.clone(), p);
            Ok(true)
        })?;
        Ok(Pending {
            map: Mutex::new(map),
        })
    }

    /// Notes a request from an unknown serial and persists the entry (without waiting: the list is
    /// advisory, the device will ask again).
    pub fn seen(
        &self,
        local: &Local,
        serial: &str,
        protocol: Protocol,
        model: Option<&str>,
        firmware: Option<&str>,
        remote: &str,
        now: u64,
    ) {
        let (entry, evicted) = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let mut evicted = None;
            if !map.contains_key(serial) && map.len() >= MAX_PENDING {
                if let Some(oldest) = map
                    .values()
                    .min_by_key(|p| p.last_seen)
                    .map(|p| p.serial.clone())
                {
                    map.remove(&oldest);
                    evicted = Some(oldest);
                }
            }
            let e = map
                .entry(serial.to_string())
                .or_insert_with(|| PendingDevice {
                    serial: serial.to_string(),
                    protocol,
                    first_seen: now,
                    last_seen: now,
                    model: None,
                    firmware: None,
                    remote: remote.to_string(),
                    requests: 0,
                });
            e.last_seen = now;
            e.requests += 1;
            e.remote = remote.to_string();
            if let Some(m) = model {
                e.model = Some(m.chars().take(128).collect());
            }
            if let Some(f) = firmware {
                e.firmware = Some(f.chars().take(128).collect());
            }
            (e.clone(), evicted)
        };
        let staged = local.batcher.stage(|st| {
            if let Some(old) = &evicted {
                st.delete(Cf::Pending, old.as_bytes())?;
            }
            st.put(
                Cf::Pending,
                entry.serial.as_bytes(),
                &records::encode(&entry)?,
            )
        });
        if let Err(e) = staged {
            tracing::warn!(error = %e, "recording a pending device failed");
        }
        metrics::gauge!("fleetgate_pending_devices").set(self.len() as f64);
    }

    pub fn get(&self, serial: &str) -> Option<PendingDevice> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
            .cloned()
    }

    /// Puts back an entry taken for an approval whose commit failed.
    pub fn restore(&self, p: PendingDevice) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.serial.clone(), p);
    }

    pub fn remove(&self, serial: &str) -> Option<PendingDevice> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(serial)
    }

    /// Newest activity first.
    pub fn list(&self) -> Vec<PendingDevice> {
        let mut v: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.serial.cmp(&b.serial))
        });
        v
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
