//! Creating a device: the one path the REST API, pending approvals and auto-approval share.
//! It reserves the serial before the commit's wait (so concurrent creations of one serial make one
//! device), issues a token that is shown once and kept only as a hash, and registers the device
//! after its record is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::auth;
use crate::registry::Device;
use crate::shard::Local;
use crate::store::StoreError;
use crate::store::commit::Staging;
use crate::store::records::{self, DeviceRecord, Protocol};
use crate::time::now_ms;

pub struct NewDevice {
    pub name: String,
    pub protocol: Protocol,
    pub serial: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub info: Option<String>,
}

#[derive(Debug)]
pub enum ProvisionError {
    /// Another device has this serial, or is being created with it.
    SerialTaken,
    Failed(String),
}

/// Creates the device; `also` stages more writes into the same commit. Returns the device and
/// its token (the only time the token exists outside the device).
pub async fn provision(
    local: &Local,
    new: NewDevice,
    also: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
) -> Result<(Arc<Device>, String), ProvisionError> {
    let registry = &local.shared.registry;
    let reservation = match &new.serial {
        Some(s) => Some(
            registry
                .reserve_serial(s)
                .ok_or(ProvisionError::SerialTaken)?,
        ),
        None => None,
    };
    let token = auth::generate_token().map_err(|e| ProvisionError::Failed(e.to_string()))?;
    let hash = auth::hash_token(&token);
    let rec = DeviceRecord {
        device_id: Uuid::new_v4(),
        name: new.name,
        protocol: new.protocol,
        serial: new.serial,
        token_hash: auth::hex(&hash),
        created_at: now_ms(),
        last_seen: None,
        settings: new.settings,
        info: new.info,
    };
    local
        .batcher
        .commit(|st| {
            records::stage_device(st, &rec)?;
            also(st)
        })
        .await
        .map_err(|e| ProvisionError::Failed(e.to_string()))?;
    let dev = registry.add(rec, hash);
    drop(reservation);
    metrics::gauge!("fleetgate_devices").set(registry.len() as f64);
    Ok((dev, token))
}
