//! Creating a device: the one path the REST API, pending approvals and auto-approval share.
//! It reserves the serial before the commit's wait (so concurrent creations of one serial make one
//! device), issues a token that is shown once and kept only as a hash, and registers the device
//! after its record is durable. And what happens to a serial no device has when it presents
//! itself (`first_contact`): auto-approval or the pending list, rate-limited per address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::fleet::auth;
use crate::fleet::cluster::{ClusterError, shared_fields};
use crate::fleet::guard::{self, Limit};
use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::store::StoreError;
use crate::store::commit::{Batcher, Staging};
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
    /// In a cluster whose registry cannot be reached: nothing was created.
    Cluster(String),
    Failed(String),
}

/// Creates the device; `also` stages more writes into the same commit. Returns the device and
/// its token (the only time the token exists outside the device).
pub async fn provision(
    fleet: &Fleet,
    batch: &Batcher,
    new: NewDevice,
    also: impl FnOnce(&mut Staging<'_>) -> Result<(), StoreError>,
) -> Result<(Arc<Device>, String), ProvisionError> {
    let registry = &fleet.registry;
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
        stamps: Default::default(),
    };
    // In a cluster the device exists once the cluster's registry has it; the serial is taken
    // there first, so two nodes cannot create one serial twice.
    if let Some(port) = fleet.cluster.port() {
        let to_cluster = |e: ClusterError| match e {
            ClusterError::SerialTaken => ProvisionError::SerialTaken,
            ClusterError::Unavailable(why) => ProvisionError::Cluster(why),
        };
        if let Some(s) = &rec.serial {
            port.claim_serial(s, rec.device_id)
                .await
                .map_err(to_cluster)?;
        }
        if let Err(e) = port.put_device(&shared_fields(&rec)).await {
            if let Some(s) = &rec.serial {
                let _ = port.release_serial(s).await;
            }
            return Err(to_cluster(e));
        }
    }
    batch
        .commit(|st| {
            records::stage_device(st, &rec)?;
            also(st)
        })
        .await
        .map_err(|e| ProvisionError::Failed(e.to_string()))?;
    let dev = registry.add_if_absent(rec, hash);
    drop(reservation);
    metrics::gauge!("fleetgate_devices").set(registry.len() as f64);
    Ok((dev, token))
}

/// A serial no device has, as it presented itself.
pub struct Newcomer<'a> {
    pub serial: &'a str,
    pub protocol: Protocol,
    pub model: Option<&'a str>,
    pub firmware: Option<&'a str>,
    /// Device info to keep should the device be created (an HTTP `reg`'s `devinfo`).
    pub info: Option<String>,
    /// The peer as the pending list shows it, and its address.
    pub remote: &'a str,
    pub ip: IpAddr,
}

/// Why a newcomer is not a device (yet).
pub enum NotYet {
    /// It waits in the pending list for an admin, or is refused as if it did: its address
    /// presented too many new serials.
    Pending,
    /// Auto-approval failed; the message is for the device.
    Failed(String),
}

/// A serial no device has presented itself: with `--auto-approve` it becomes a device, else it
/// is listed as pending. Either takes one of the address's new serials
/// (`--new-serials-per-minute`); a serial already listed takes none. Past the limit it is refused
/// as unknown, and neither listed nor created.
pub async fn first_contact(
    fleet: &Fleet,
    batch: &Batcher,
    n: Newcomer<'_>,
) -> Result<Arc<Device>, NotYet> {
    let now = now_ms();
    if fleet.pending.get(n.serial).is_none() && !fleet.new_serials.admit(n.ip, now) {
        guard::hit(Limit::PendingRate);
        // Debug only: a flood would otherwise write a log line per request.
        tracing::debug!(ip = %n.ip, serial = n.serial, "new serials from this address are over the limit: not listed");
        return Err(NotYet::Pending);
    }
    if fleet.rules.auto_approve {
        return create_for_serial(fleet, batch, n.serial, n.protocol, n.model, n.info)
            .await
            .map_err(NotYet::Failed);
    }
    if let Some(staged) = fleet.pending.seen(
        batch, n.serial, n.protocol, n.model, n.firmware, n.remote, now,
    ) {
        // Refused only once listed: an admin acting on the list acts after this entry committed.
        staged.wait().await;
    }
    Err(NotYet::Pending)
}

/// Creates a device for a serial that presented itself (`--auto-approve`), for any protocol. A
/// concurrent creation of the same serial (the device retried on another connection) is waited
/// for, bounded, and its device returned.
async fn create_for_serial(
    fleet: &Fleet,
    batch: &Batcher,
    sn: &str,
    protocol: Protocol,
    model: Option<&str>,
    info: Option<String>,
) -> Result<Arc<Device>, String> {
    let new = NewDevice {
        name: format!("{} {sn}", model.unwrap_or("device")),
        protocol,
        serial: Some(sn.to_string()),
        settings: Default::default(),
        info,
    };
    match provision(fleet, batch, new, |_| Ok(())).await {
        Ok((dev, _token)) => {
            tracing::info!(
                serial = sn,
                protocol = protocol.as_str(),
                "auto-approved a new device"
            );
            Ok(dev)
        }
        Err(ProvisionError::SerialTaken) => {
            let wait = fleet.registry.serial_settled(sn);
            match tokio::time::timeout(CREATION_WAIT, wait).await {
                Ok(Some(d)) => Ok(d),
                _ => Err(format!("device {sn} is being registered; retry")),
            }
        }
        Err(ProvisionError::Failed(e)) => Err(e),
        Err(ProvisionError::Cluster(why)) => Err(format!(
            "the cluster cannot register new devices now ({why}); retry"
        )),
    }
}

/// How long a request waits for a concurrent creation of the same serial.
const CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
