//! This node's copy of the cluster's registry: applying a device's record, or its deletion, as
//! the cluster's registry bucket tells of it (the app's `cluster::registry` follows the bucket).
//! Idempotent, since a node also hears back the changes it made itself.

use std::sync::Arc;

use uuid::Uuid;

use crate::fleet::auth::{self, TokenHash};
use crate::fleet::cluster::shared_fields;
use crate::fleet::registry::Device;
use crate::fleet::state::Fleet;
use crate::store::StoreError;
use crate::store::commit::write_now;
use crate::store::records::{self, DeviceRecord};

fn token_of(rec: &DeviceRecord) -> Result<TokenHash, StoreError> {
    auth::unhex(&rec.token_hash)
        .and_then(|v| <TokenHash>::try_from(v.as_slice()).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("token hash of {}", rec.device_id)))
}

/// Applies a device's record from the cluster's registry: adds the device, or updates what
/// operators set (a rotated token closes its session here). Idempotent: a record this node
/// already has changes nothing and writes nothing.
pub fn apply_device(fleet: &Fleet, shared: DeviceRecord) -> Result<Arc<Device>, StoreError> {
    let token = token_of(&shared)?;
    if let Some(dev) = fleet.registry.get(&shared.device_id) {
        let now = dev.record();
        if shared_fields(&now) == shared {
            return Ok(dev);
        }
        let rotated = now.token_hash != shared.token_hash;
        let rec = dev.update_record(|r| {
            r.name = shared.name.clone();
            r.settings = shared.settings.clone();
            r.token_hash = shared.token_hash.clone();
        });
        write_now(&fleet.store, |st| records::stage_device(st, &rec))?;
        if rotated {
            dev.set_token(token);
            if let Some(s) = dev.session() {
                fleet.links.close_session(s, 1008, "token rotated");
            }
        }
        return Ok(dev);
    }
    write_now(&fleet.store, |st| records::stage_device(st, &shared))?;
    let dev = fleet.registry.add_if_absent(shared, token);
    metrics::gauge!("fleetgate_devices").set(fleet.registry.len() as f64);
    Ok(dev)
}

/// Applies a device's deletion from the cluster's registry (nothing when it is already gone).
pub fn apply_device_delete(fleet: &Fleet, id: &Uuid) -> Result<(), StoreError> {
    let Some(dev) = fleet.registry.remove(id) else {
        return Ok(());
    };
    if let Some(s) = dev.session() {
        fleet.links.close_session(s, 1008, "device deleted");
    }
    write_now(&fleet.store, |st| records::stage_device_delete(st, id))?;
    metrics::gauge!("fleetgate_devices").set(fleet.registry.len() as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::commands::{apply_from_cluster, from_api_json};
    use crate::fleet::test_fleet;
    use crate::store::records::{CommandRecord, CommandStatus, Protocol};
    use crate::store::temp::TempStore;

    fn record(id: u128, name: &str) -> DeviceRecord {
        DeviceRecord {
            device_id: Uuid::from_u128(id),
            name: name.into(),
            protocol: Protocol::Generic,
            serial: Some(format!("SN{id}")),
            token_hash: auth::hex(&auth::hash_token("a-device-token-for-tests")),
            created_at: 1,
            last_seen: None,
            settings: Default::default(),
            info: None,
            stamps: Default::default(),
        }
    }

    /// A change applied twice (it came back from NATS to the node that made it) is one change,
    /// and what a node alone knows of a device (its info) survives the cluster's record of it.
    #[test]
    fn applying_the_registry_is_idempotent_and_keeps_what_the_node_saw() {
        let tmp = TempStore::open("cluster-apply-device", false).expect("store");
        let fleet = test_fleet::fleet(tmp.store());
        let first = apply_device(&fleet, record(1, "a")).expect("apply");
        let again = apply_device(&fleet, record(1, "a")).expect("apply");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same device, not a new one"
        );
        first.update_record(|r| r.info = Some("{\"fw\":\"1\"}".into()));
        let renamed = apply_device(&fleet, record(1, "b")).expect("apply");
        assert_eq!(renamed.record().name, "b");
        assert_eq!(renamed.record().info.as_deref(), Some("{\"fw\":\"1\"}"));
        assert!(fleet.registry.by_serial("SN1").is_some());
        // A restart reads the applied record back.
        let reloaded = crate::fleet::registry::Registry::load(tmp.store()).expect("load");
        assert_eq!(
            reloaded
                .get(&Uuid::from_u128(1))
                .expect("kept")
                .record()
                .name,
            "b"
        );
        apply_device_delete(&fleet, &Uuid::from_u128(1)).expect("delete");
        apply_device_delete(&fleet, &Uuid::from_u128(1)).expect("deleting again changes nothing");
        assert!(fleet.registry.get(&Uuid::from_u128(1)).is_none());
        assert!(fleet.registry.by_serial("SN1").is_none());
    }

    fn command(dev: u128, n: u128, status: CommandStatus, at: u64) -> CommandRecord {
        CommandRecord {
            command_id: Uuid::from_u128(1000 + n),
            device_id: Uuid::from_u128(dev),
            seq: 0,
            command: format!("c{n}"),
            payload: "{\"n\":1}".into(),
            status,
            created_at: 1_000,
            updated_at: at,
            expires_at: u64::MAX / 2,
            result: None,
        }
    }

    /// Commands from the cluster queue in the order they are applied, once each however often
    /// they arrive, and a status only moves forward: a late `sent` never undoes an `acked`.
    #[test]
    fn commands_from_the_cluster_queue_once_in_order_and_never_go_back() {
        let tmp = TempStore::open("cluster-apply-commands", false).expect("store");
        let fleet = test_fleet::fleet(tmp.store());
        let dev = apply_device(&fleet, record(1, "a")).expect("device");
        for n in 0..3 {
            assert!(
                apply_from_cluster(&fleet, command(1, n, CommandStatus::Queued, 1)).expect("apply")
            );
            assert!(
                !apply_from_cluster(&fleet, command(1, n, CommandStatus::Queued, 1))
                    .expect("again")
            );
        }
        assert_eq!(dev.commands.queued(), 3);
        let stored = records::load_commands(&fleet.store, &dev.id).expect("load");
        let order: Vec<String> = stored.iter().map(|c| c.command.clone()).collect();
        assert_eq!(order, ["c0", "c1", "c2"]);
        let acked = CommandRecord {
            result: Some("{\"ok\":true}".into()),
            ..command(1, 0, CommandStatus::Acked, 5)
        };
        assert!(apply_from_cluster(&fleet, acked).expect("acked"));
        assert!(!apply_from_cluster(&fleet, command(1, 0, CommandStatus::Sent, 4)).expect("late"));
        let c0 = records::get_command(&fleet.store, &Uuid::from_u128(1000))
            .expect("get")
            .expect("c0");
        assert_eq!(c0.status, CommandStatus::Acked);
        assert_eq!(c0.result.as_deref(), Some("{\"ok\":true}"));
        assert_eq!(dev.commands.queued(), 2, "the acked one left the queue");
        // A command for a device this node does not have changes nothing.
        assert!(
            !apply_from_cluster(&fleet, command(9, 7, CommandStatus::Queued, 1)).expect("none")
        );
    }

    /// What the export carries of a command reads back as the command.
    #[test]
    fn a_command_reads_back_from_its_api_json() {
        let c = CommandRecord {
            result: Some("{\"ok\":true}".into()),
            ..command(1, 3, CommandStatus::Failed, 1_234)
        };
        let back = from_api_json(c.to_api_json(0).as_bytes()).expect("parsed");
        assert_eq!(back.command_id, c.command_id);
        assert_eq!(back.device_id, c.device_id);
        assert_eq!(
            (back.status, back.updated_at, back.created_at),
            (c.status, 1_234, 1_000)
        );
        assert_eq!(back.payload, c.payload);
        assert_eq!(back.result, c.result);
        assert!(from_api_json(b"{\"command_id\":\"x\"}").is_none());
    }
}
