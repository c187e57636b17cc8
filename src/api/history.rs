//! A device's history read through any node of a cluster: telemetry, events and punches that
//! other nodes stored for it are gathered from them (`fleet::cluster::Port::gather`, each node
//! reading its own store with `local`) and merged with this node's, by key, newest first. Record
//! keys are the device and a time-ordered id on every node, so pages of the merge continue with
//! the same opaque cursor a single node uses. A node alone reads only its own store, as always.
//! A node that does not answer in time is left out (its records return when it does); the
//! export (`FLEETGATE_RECORDS`) holds every node's records for consumers that need all of them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::query::MAX_LIMIT;
use crate::fleet::attendance;
use crate::fleet::retention::Kind;
use crate::fleet::state::Fleet;
use crate::store::{Cf, StoreError, keys};
use crate::time::now_us;

/// How many index entries one read of events may pass over while filtering by type.
const SCAN_BUDGET: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    Telemetry,
    Events,
    Attendance,
}

/// One page's question, the same on every node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Read {
    pub what: What,
    pub device: Uuid,
    /// Exclusive upper bound: the key the page starts below.
    pub before: Option<Vec<u8>>,
    /// Inclusive lower bound on the record time (µs), if any.
    pub from_us: Option<u64>,
    pub to_us: Option<u64>,
    /// Events: only this `type`.
    pub event_type: Option<String>,
    /// Attendance: only this PIN's punches.
    #[serde(default)]
    pub enrollid: Option<u64>,
    pub limit: usize,
}

/// One node's answer: its items with their keys, newest first, and where it would go on from
/// (None: it has nothing older).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Keyed {
    pub items: Vec<(Vec<u8>, String)>,
    pub next: Option<Vec<u8>>,
}

/// Reads a page of this node's store.
pub fn local(fleet: &Fleet, r: &Read) -> Result<Keyed, StoreError> {
    let store = &fleet.store;
    let device = fleet.registry.get(&r.device);
    let prefix = keys::device(&r.device);
    let kept = fleet.rules.retention.cutoff_us(
        match r.what {
            What::Telemetry => Kind::Telemetry,
            What::Events => Kind::Events,
            What::Attendance => Kind::Attendance,
        },
        device.as_deref(),
        now_us(),
    );
    let from = r.from_us.max(kept);
    let mut before = r.before.clone();
    // Another node's question is bounded as this node's API bounds its own.
    let limit = r.limit.clamp(1, MAX_LIMIT);
    let mut items = Vec::new();
    let next = match r.what {
        What::Telemetry => {
            if let Some(t) = r.to_us {
                let upper = keys::telemetry(&r.device, t.saturating_add(1)).to_vec();
                if before.as_ref().is_none_or(|b| *b > upper) {
                    before = Some(upper);
                }
            }
            let floor = from.map(|f| keys::telemetry(&r.device, f));
            store.scan_reverse_above(
                Cf::Telemetry,
                &prefix,
                before.as_deref(),
                floor.as_ref().map(|f| &f[..]),
                limit,
                usize::MAX,
                |k, v| {
                    items.push((k.to_vec(), String::from_utf8_lossy(v).into_owned()));
                    Ok(true)
                },
            )?
        }
        What::Attendance => {
            if let Some(t) = r.to_us {
                let upper = attendance::key(&r.device, t.saturating_add(1), &[0; 16]).to_vec();
                if before.as_ref().is_none_or(|b| *b > upper) {
                    before = Some(upper);
                }
            }
            let floor = from.map(|c| attendance::key(&r.device, c, &[0; 16]));
            store.scan_reverse_above(
                Cf::Attendance,
                r.device.as_bytes(),
                before.as_deref(),
                floor.as_ref().map(|f| &f[..]),
                limit,
                SCAN_BUDGET,
                |k, v| {
                    // The punch's own enrollid, compared exactly.
                    if r.enrollid.is_some() && attendance::item_enrollid(v) != r.enrollid {
                        return Ok(false);
                    }
                    items.push((k.to_vec(), String::from_utf8_lossy(v).into_owned()));
                    Ok(true)
                },
            )?
        }
        What::Events => {
            let floor = from.map(|c| keys::event_by_device(&r.device, c));
            store.scan_reverse_above(
                Cf::EventsByDevice,
                &prefix,
                before.as_deref(),
                floor.as_ref().map(|f| &f[..]),
                limit,
                SCAN_BUDGET,
                |k, _| {
                    let Some(id) = keys::suffix_u64(k) else {
                        return Ok(false);
                    };
                    match store.get(Cf::Events, &keys::event(id))? {
                        Some(v) if type_matches(&v, r.event_type.as_deref()) => {
                            items.push((k.to_vec(), String::from_utf8_lossy(&v).into_owned()));
                            Ok(true)
                        }
                        _ => Ok(false),
                    }
                },
            )?
        }
    };
    Ok(Keyed { items, next })
}

/// Whether an event's stored JSON has `type` `kind` (always, without one).
pub fn type_matches(v: &[u8], kind: Option<&str>) -> bool {
    let Some(kind) = kind else { return true };
    // Cheap pre-check on the stored text, then an exact check on the parsed field.
    let needle = crate::json::quote(kind);
    if !v.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return false;
    }
    let mut b = v.to_vec();
    simd_json::to_borrowed_value(&mut b)
        .ok()
        .and_then(|x| crate::json::get_str(&x, "type").map(|t| t == kind))
        .unwrap_or(false)
}

/// Merges the nodes' pages into one of at most `limit` items, newest first, and the cursor the
/// next page starts below. A node that has more is only known down to where it stopped, so the
/// page holds nothing older than that: the next page asks every node again from there.
pub fn merge(pages: Vec<Keyed>, limit: usize) -> (Vec<String>, Option<Vec<u8>>) {
    let limit = limit.max(1);
    let cut = pages.iter().filter_map(|p| p.next.clone()).max();
    let mut all: Vec<(Vec<u8>, String)> = pages.into_iter().flat_map(|p| p.items).collect();
    all.sort_by(|a, b| b.0.cmp(&a.0));
    all.dedup_by(|a, b| a.0 == b.0);
    let known: Vec<(Vec<u8>, String)> = all
        .into_iter()
        .filter(|(k, _)| cut.as_ref().is_none_or(|c| k >= c))
        .collect();
    if known.len() > limit {
        let next = known.get(limit - 1).map(|(k, _)| k.clone());
        let items = known.into_iter().take(limit).map(|(_, v)| v).collect();
        return (items, next);
    }
    (known.into_iter().map(|(_, v)| v).collect(), cut)
}

/// A page for the API: this node's, merged with every other node's in a cluster.
pub(super) async fn page(
    fleet: &Fleet,
    r: Read,
) -> Result<(Vec<String>, Option<Vec<u8>>), ApiError> {
    let mine = local(fleet, &r)?;
    let Some(port) = fleet.cluster.port() else {
        return Ok((mine.items.into_iter().map(|(_, v)| v).collect(), mine.next));
    };
    let mut pages = vec![mine];
    let asked = crate::store::records::encode(&r)?;
    // Nodes that do not answer are left out: their records come back when they do.
    if let Ok(answers) = port.gather(asked).await {
        for a in answers {
            if let Ok(p) = crate::store::records::decode::<Keyed>(&a) {
                pages.push(p);
            }
        }
    }
    Ok(merge(pages, r.limit))
}

/// Answers another node's `Read` from this node's store (the cluster link calls it).
pub fn answer(fleet: &Fleet, asked: &[u8]) -> Vec<u8> {
    let keyed = crate::store::records::decode::<Read>(asked)
        .and_then(|r| local(fleet, &r))
        .unwrap_or_default();
    crate::store::records::encode(&keyed).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[u8], next: Option<u8>) -> Keyed {
        Keyed {
            items: items.iter().map(|&k| (vec![k], format!("i{k}"))).collect(),
            next: next.map(|n| vec![n]),
        }
    }

    /// Pages of a merge never skip a record: a node that has more is only known down to where
    /// it stopped, and a page cut by its limit goes on below its last item.
    #[test]
    fn merged_pages_skip_nothing_and_repeat_nothing() {
        // Node A has 100, 90, 85, 60; node C has 80, 70.
        let a_all = [100u8, 90, 85, 60];
        let c_all = [80u8, 70];
        let read = |all: &[u8], before: Option<&Vec<u8>>, limit: usize| {
            let below: Vec<u8> = all
                .iter()
                .copied()
                .filter(|&k| before.is_none_or(|b| vec![k] < *b))
                .collect();
            let more = below.len() > limit;
            let items: Vec<u8> = below.iter().copied().take(limit).collect();
            page(&items, more.then(|| below[limit] + 1))
        };
        let mut seen = Vec::new();
        let mut before: Option<Vec<u8>> = None;
        for _ in 0..10 {
            let pages = vec![
                read(&a_all, before.as_ref(), 2),
                read(&c_all, before.as_ref(), 2),
            ];
            let (items, next) = merge(pages, 3);
            seen.extend(items);
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ["i100", "i90", "i85", "i80", "i70", "i60"]);
    }

    #[test]
    fn one_node_alone_is_its_own_page() {
        let (items, next) = merge(vec![page(&[9, 8], Some(8))], 2);
        assert_eq!(
            (items, next),
            (vec!["i9".to_string(), "i8".to_string()], Some(vec![8]))
        );
    }
}
