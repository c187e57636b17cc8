//! The cluster's registry, as this node follows it: a watch on the `fleetgate-devices` bucket,
//! which first replays every key's latest value (so a node that was away catches up: devices
//! created, changed or deleted meanwhile) and then delivers each change as it is made, applied
//! through `fleet::cluster::apply_device` / `apply_device_delete`. A device this node has and the
//! cluster never knew of (the node ran alone before it joined) is written to the bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use uuid::Uuid;

use super::resources::{Resources, device_key, serial_key};
use crate::fleet::cluster::shared_fields;
use crate::fleet::replica::{apply_device, apply_device_delete};
use crate::shard::local::Shared;
use crate::store::records::{self, DeviceRecord};

const RETRY: Duration = Duration::from_millis(500);

/// Follows the bucket until the link stops, watching again after any interruption (the replay
/// that starts each watch is idempotent).
pub async fn follow(shared: Arc<Shared>, r: Resources) {
    let mut seeded = false;
    loop {
        match r.devices.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(e) => apply(&shared, &e),
                        Err(e) => {
                            tracing::debug!(error = %e, "cluster registry: the watch broke");
                            break;
                        }
                    }
                    if !seeded {
                        seeded = seed(&shared, &r).await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster registry: cannot watch yet"),
        }
        if !seeded {
            seeded = seed(&shared, &r).await;
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn apply(shared: &Shared, e: &kv::Entry) {
    let Some(id) = e
        .key
        .strip_prefix("d.")
        .and_then(|k| k.parse::<Uuid>().ok())
    else {
        return; // a serial's key
    };
    let fleet = &shared.fleet;
    let applied = match e.operation {
        kv::Operation::Put => match records::decode::<DeviceRecord>(&e.value) {
            Ok(rec) if rec.device_id == id => apply_device(fleet, rec).map(|_| ()),
            Ok(_) | Err(_) => {
                tracing::warn!(key = %e.key, "cluster registry: a record that does not decode; skipped");
                Ok(())
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => apply_device_delete(fleet, &id),
    };
    if let Err(err) = applied {
        tracing::error!(error = %err, device = %id, "cluster registry: applying a change failed");
    }
}

/// Writes the devices this node has and the cluster has never had (neither a record nor a
/// deletion). Returns whether every device was looked at.
async fn seed(shared: &Shared, r: &Resources) -> bool {
    let mut mine = Vec::new();
    shared.fleet.registry.visit_from(None, |d| {
        mine.push(d.record());
        true
    });
    for rec in mine {
        match r.devices.entry(device_key(&rec.device_id)).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Some(s) = &rec.serial
                    && let Err(e) = r
                        .devices
                        .create(serial_key(s), rec.device_id.to_string().into())
                        .await
                {
                    tracing::warn!(error = %e, serial = %s, "cluster registry: this node's device has a serial another node's device has; not shared");
                    continue;
                }
                let Ok(body) = records::encode(&shared_fields(&rec)) else {
                    continue;
                };
                if r.devices
                    .create(device_key(&rec.device_id), body.into())
                    .await
                    .is_err()
                {
                    return false;
                }
                tracing::info!(device = %rec.device_id, "cluster registry: shared a device this node had alone");
            }
            Err(_) => return false,
        }
    }
    true
}
