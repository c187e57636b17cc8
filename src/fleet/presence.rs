//! Online/offline transitions: a server event in the store and a `device_status` broadcast.
//! WebSocket sessions and HTTP-device liveness both go through here, so every transition is
//! recorded the same way.

use std::sync::atomic::Ordering;

use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::fleet::webhooks;
use crate::generic;
use crate::json;
use crate::store::commit::Batcher;
use crate::store::records::{self, Source};
use crate::time::{now_us, rfc3339_ms};

pub fn record(
    fleet: &Fleet,
    batch: &Batcher,
    dev: &Device,
    online: bool,
    reason: &str,
    remote: Option<&str>,
) {
    if let Some(port) = fleet.cluster.port() {
        port.presence(dev.id, online);
    }
    let kind = if online {
        "device_connected"
    } else {
        "device_disconnected"
    };
    let mut payload = String::from("{\"reason\":");
    json::push_str(&mut payload, reason);
    if let Some(r) = remote {
        payload.push_str(",\"remote\":");
        json::push_str(&mut payload, r);
    }
    payload.push('}');
    let id = fleet.store.ids.next(now_us());
    let staged = batch.stage(|st| {
        records::stage_event(st, id, Some(&dev.id), kind, Source::Server, &payload, None)?;
        if fleet.webhooks.wants(webhooks::Kind::DeviceStatus) {
            let data = records::event_json(id, Some(&dev.id), kind, Source::Server, &payload);
            let msg = if online {
                "device.online"
            } else {
                "device.offline"
            };
            let hooks = &fleet.webhooks;
            webhooks::stage(
                hooks,
                st,
                webhooks::Kind::DeviceStatus,
                &dev.id,
                msg,
                id / 1000,
                &data,
            )?;
        }
        // last_seen is kept in memory while online and persisted when the device goes offline.
        if !online && !dev.deleted.load(Ordering::Acquire) {
            records::stage_device(st, &dev.record())?;
        }
        Ok(())
    });
    if let Err(e) = staged {
        tracing::error!(error = %e, "recording a presence event failed");
    }
    if fleet.has_admins() {
        let ts = rfc3339_ms(id / 1000);
        let d = dev.id.to_string();
        fleet.broadcast(generic::device_status(&d, online, &ts));
        fleet.broadcast(generic::event_broadcast(&d, kind, &ts, &payload));
    }
}
