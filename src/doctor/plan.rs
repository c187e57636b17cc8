//! The `serve` configuration the machine is judged for.

use crate::config::{IoMode, MachineConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub shards: usize,
    /// Whether `shards` came from `--shards` (else: the default, one per usable core).
    pub shards_given: bool,
    pub max_connections: usize,
    pub io: IoMode,
    pub listen_port: u16,
}

impl Plan {
    /// What `serve` would run with these flags on this machine.
    pub fn of(m: &MachineConfig) -> Plan {
        Plan {
            shards: m.shard_count(),
            shards_given: m.shards.is_some(),
            max_connections: m.max_connections,
            io: m.io,
            listen_port: m.listen.port(),
        }
    }
}
