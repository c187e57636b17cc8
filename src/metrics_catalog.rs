//! Every metric this server exports, with its type, unit and help text. `describe` registers them
//! once at start-up, so each has its `# HELP` and `# TYPE` lines and a scraper or `promtool check
//! metrics` gets a documented exposition; the unit test below keeps the list and the code in step.
//!
//! Labels are bounded by construction: shard numbers, protocols, message types, command stages,
//! limits, queues and column families, never a device id or an address.

use metrics::Unit;

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// (name, kind, unit, help).
pub const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (
        "fleetgate_accept_errors_total",
        Counter,
        Unit::Count,
        "accept() calls that failed (EMFILE and the like); the shard backs off briefly",
    ),
    (
        "fleetgate_attendance_duplicates_total",
        Counter,
        Unit::Count,
        "attendance records dropped as already stored (a re-send)",
    ),
    (
        "fleetgate_attendance_records_total",
        Counter,
        Unit::Count,
        "attendance records stored",
    ),
    (
        "fleetgate_auth_failures_total",
        Counter,
        Unit::Count,
        "device registrations and admin requests refused for bad credentials",
    ),
    (
        "fleetgate_batch_commit_failures_total",
        Counter,
        Unit::Count,
        "group commits that failed; their devices heard \"not stored\"",
    ),
    (
        "fleetgate_batch_commit_seconds",
        Histogram,
        Unit::Seconds,
        "time to write one group commit (WAL synced unless --sync-writes false)",
    ),
    (
        "fleetgate_batch_records",
        Histogram,
        Unit::Count,
        "records in one group commit",
    ),
    (
        "fleetgate_bytes_received_total",
        Counter,
        Unit::Bytes,
        "bytes read from device and admin connections",
    ),
    (
        "fleetgate_bytes_sent_total",
        Counter,
        Unit::Bytes,
        "bytes written to device and admin connections",
    ),
    (
        "fleetgate_commands_total",
        Counter,
        Unit::Count,
        "commands by stage: queued, then their outcome",
    ),
    (
        "fleetgate_connections",
        Gauge,
        Unit::Count,
        "open connections, by shard",
    ),
    (
        "fleetgate_connections_refused_total",
        Counter,
        Unit::Count,
        "connections closed at accept because --max-connections was reached",
    ),
    (
        "fleetgate_device_takeovers_total",
        Counter,
        Unit::Count,
        "terminals that displaced a live session from another address, by protocol",
    ),
    (
        "fleetgate_devices",
        Gauge,
        Unit::Count,
        "devices registered",
    ),
    (
        "fleetgate_disk_free_bytes",
        Gauge,
        Unit::Bytes,
        "free space of the data directory's file system",
    ),
    (
        "fleetgate_disk_guard_low",
        Gauge,
        Unit::Count,
        "1 while free space is below --min-free-disk and new data is refused",
    ),
    (
        "fleetgate_disk_guard_refused_batches_total",
        Counter,
        Unit::Count,
        "group commits refused by the disk guard",
    ),
    (
        "fleetgate_disk_total_bytes",
        Gauge,
        Unit::Bytes,
        "size of the data directory's file system",
    ),
    (
        "fleetgate_duplicates_total",
        Counter,
        Unit::Count,
        "messages dropped as already stored (msg_id seen before)",
    ),
    (
        "fleetgate_http_requests_total",
        Counter,
        Unit::Count,
        "HTTP requests served",
    ),
    (
        "fleetgate_inbox_full_total",
        Counter,
        Unit::Count,
        "cross-shard deliveries refused because the target shard's inbox was full",
    ),
    (
        "fleetgate_large_message_bytes",
        Gauge,
        Unit::Bytes,
        "read-buffer bytes held beyond the normal message bound, all shards (--large-message-budget-mb)",
    ),
    (
        "fleetgate_limit_hits_total",
        Counter,
        Unit::Count,
        "requests refused by a limit, by limit",
    ),
    (
        "fleetgate_messages_total",
        Counter,
        Unit::Count,
        "device messages handled, by type",
    ),
    (
        "fleetgate_pending_devices",
        Gauge,
        Unit::Count,
        "unknown terminals waiting for an operator to accept them",
    ),
    (
        "fleetgate_process_resident_bytes",
        Gauge,
        Unit::Bytes,
        "the process's resident set",
    ),
    (
        "fleetgate_protocol_errors_total",
        Counter,
        Unit::Count,
        "frames refused as malformed",
    ),
    (
        "fleetgate_queue_depth",
        Gauge,
        Unit::Count,
        "items waiting, by queue and shard",
    ),
    (
        "fleetgate_retention_deleted_keys_total",
        Counter,
        Unit::Count,
        "store keys deleted for being past their retention",
    ),
    (
        "fleetgate_retention_sweeps_total",
        Counter,
        Unit::Count,
        "retention sweeps completed",
    ),
    (
        "fleetgate_sessions",
        Gauge,
        Unit::Count,
        "live device and admin sessions, by protocol",
    ),
    (
        "fleetgate_slow_subscribers_total",
        Counter,
        Unit::Count,
        "live-stream subscribers dropped for not keeping up",
    ),
    (
        "fleetgate_store_block_cache_bytes",
        Gauge,
        Unit::Bytes,
        "use of RocksDB's shared block cache, memtables' charge included (--store-memory-mb)",
    ),
    (
        "fleetgate_store_block_cache_pinned_bytes",
        Gauge,
        Unit::Bytes,
        "pinned part of the block cache (top-level index and filter blocks, open iterators)",
    ),
    (
        "fleetgate_store_delayed_write_rate",
        Gauge,
        Unit::Count,
        "bytes per second RocksDB slows writes to while stalled; 0 when not",
    ),
    (
        "fleetgate_store_family_keys_estimate",
        Gauge,
        Unit::Count,
        "RocksDB's estimate of the keys in one column family",
    ),
    (
        "fleetgate_store_family_sst_bytes",
        Gauge,
        Unit::Bytes,
        "table file bytes of one column family",
    ),
    (
        "fleetgate_store_keys_estimate",
        Gauge,
        Unit::Count,
        "RocksDB's estimate of the keys, all column families",
    ),
    (
        "fleetgate_store_memtable_bytes",
        Gauge,
        Unit::Bytes,
        "memtables, all column families",
    ),
    (
        "fleetgate_store_pending_compaction_bytes",
        Gauge,
        Unit::Bytes,
        "compaction debt; rising for long means the disk cannot keep up",
    ),
    (
        "fleetgate_store_sst_bytes",
        Gauge,
        Unit::Bytes,
        "table file bytes, all column families",
    ),
    (
        "fleetgate_store_table_readers_bytes",
        Gauge,
        Unit::Bytes,
        "table readers' memory outside the block cache",
    ),
    (
        "fleetgate_store_write_errors_total",
        Counter,
        Unit::Count,
        "store writes that failed",
    ),
    (
        "fleetgate_store_write_failing",
        Gauge,
        Unit::Count,
        "1 while store writes fail",
    ),
    (
        "fleetgate_store_write_stopped",
        Gauge,
        Unit::Count,
        "1 while RocksDB stops writes (a write stall)",
    ),
    (
        "fleetgate_terminal_sessions_total",
        Counter,
        Unit::Count,
        "attendance terminal sessions opened, by protocol",
    ),
    (
        "fleetgate_terminal_unrecognised_total",
        Counter,
        Unit::Count,
        "terminal messages this server does not know, answered with a generic success, by protocol",
    ),
    (
        "fleetgate_webhook_attempts_total",
        Counter,
        Unit::Count,
        "webhook delivery attempts by result: delivered, failed (retried later), skipped",
    ),
    (
        "fleetgate_webhook_latency_seconds",
        Histogram,
        Unit::Seconds,
        "time from a webhook request's start to its answer (or failure)",
    ),
    (
        "fleetgate_webhook_messages_total",
        Counter,
        Unit::Count,
        "messages written to the webhook outbox with the records they tell of",
    ),
    (
        "fleetgate_cluster_takeovers_total",
        Counter,
        Unit::Count,
        "devices this node took over in the cluster (a compare-and-set on the owner record)",
    ),
    (
        "fleetgate_cluster_live_dropped_total",
        Counter,
        Unit::Count,
        "live-view frames not sent to other nodes: the link's queue was full",
    ),
    (
        "fleetgate_cluster_operator_changes_dropped_total",
        Counter,
        Unit::Count,
        "user, token or session changes not handed to the cluster: the link's queue was full",
    ),
    (
        "fleetgate_cluster_reads_unanswered_total",
        Counter,
        Unit::Count,
        "other nodes that did not answer a read of a device's history in time (left out of it)",
    ),
    (
        "fleetgate_export_published_total",
        Counter,
        Unit::Count,
        "records the cluster's export published to FLEETGATE_RECORDS and JetStream acknowledged",
    ),
    (
        "fleetgate_export_lag_records",
        Gauge,
        Unit::Count,
        "records committed on this node and not yet acknowledged by JetStream (cluster mode)",
    ),
    (
        "fleetgate_export_connected",
        Gauge,
        Unit::Count,
        "1 while this node's NATS connection is up (cluster mode)",
    ),
    (
        "fleetgate_export_dropped_total",
        Counter,
        Unit::Count,
        "records stored and acknowledged but not exported: the export was over --export-max-lag",
    ),
    (
        "fleetgate_export_failures_total",
        Counter,
        Unit::Count,
        "export rounds that failed (NATS away, the stream missing) and were retried from the cursor",
    ),
    (
        "fleetgate_webhook_telemetry_dropped_total",
        Counter,
        Unit::Count,
        "telemetry stored but not sent to webhooks: over --webhooks-telemetry-per-second",
    ),
];

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    for &(name, kind, unit, help) in METRICS {
        match kind {
            Counter => metrics::describe_counter!(name, unit, help),
            Gauge => metrics::describe_gauge!(name, unit, help),
            Histogram => metrics::describe_histogram!(name, unit, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read source dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `"fleetgate_…"` literal in the server's and the core's source: the metric names,
    /// which are all literals (a computed name would escape this list, and is not used).
    fn names_in_source() -> BTreeSet<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        rust_files(&root.join("core/src"), &mut files);
        let mut names = BTreeSet::new();
        for f in files.iter().filter(|f| !f.ends_with("metrics_catalog.rs")) {
            let text = std::fs::read_to_string(f).expect("read source");
            for piece in text.split("\"fleetgate_").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if piece[name.len()..].starts_with('"') {
                    names.insert(format!("fleetgate_{name}"));
                }
            }
        }
        names
    }

    #[test]
    fn the_catalog_describes_exactly_the_metrics_the_code_exports() {
        let listed: BTreeSet<String> = METRICS.iter().map(|m| m.0.to_string()).collect();
        assert_eq!(listed.len(), METRICS.len(), "a metric is listed twice");
        let used = names_in_source();
        let undescribed: Vec<_> = used.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&used).collect();
        assert!(
            undescribed.is_empty(),
            "exported but not in METRICS: {undescribed:?}"
        );
        assert!(
            stale.is_empty(),
            "in METRICS but exported nowhere: {stale:?}"
        );
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for &(name, kind, unit, help) in METRICS {
            assert!(!help.is_empty(), "{name}");
            match kind {
                Counter => assert!(name.ends_with("_total"), "a counter ends in _total: {name}"),
                Gauge | Histogram => {
                    assert!(
                        !name.ends_with("_total"),
                        "only counters end in _total: {name}"
                    )
                }
            }
            if matches!(unit, Unit::Bytes) {
                assert!(name.contains("bytes"), "a byte figure says so: {name}");
            }
            if matches!(unit, Unit::Seconds) {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }
}
