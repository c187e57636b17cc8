//! Storing what a registered generic device sends (telemetry, events), exactly once per msg_id.
//!
//! A msg_id's entry commits in the same batch as its record, and the device hears `ack` only once
//! that batch is durable. A re-sent msg_id is recognised in two places: while its first copy is
//! still committing, by the session's in-flight window (`generic::AckWindow`); after, by the store.
//! The store check is exact across reconnects because a session's records are staged through its
//! device `Claim`, which does not hand the device to a newer session before they resolve.

use std::rc::Rc;

use crate::fleet::registry::Claim;
use crate::fleet::state::Fleet;
use crate::store::commit::{Batcher, Staging, Ticket};
use crate::store::{Cf, StoreError, keys};
use crate::time::now_us;

/// What became of a message.
pub enum Ingested {
    /// Stored before (a re-send after its ack was lost): ack it now, store nothing.
    Duplicate,
    /// Staged; answer once the ticket resolves.
    Staged(Rc<Ticket>),
}

/// Stages one record of the claim's device. `stage` writes the record with the id it is given and
/// the msg_id (JSON text) when there is one.
pub fn message(
    fleet: &Fleet,
    batch: &Batcher,
    claim: &mut Claim,
    msg_id: Option<&str>,
    stage: impl FnOnce(&mut Staging<'_>, u64, Option<&str>) -> Result<(), StoreError>,
) -> Result<Ingested, StoreError> {
    if let Some(m) = msg_id
        && fleet
            .store
            .exists(Cf::MsgIds, &keys::msg_id(&claim.device().id, m))?
    {
        metrics::counter!("fleetgate_duplicates_total").increment(1);
        return Ok(Ingested::Duplicate);
    }
    let id = fleet.store.ids.next(now_us());
    claim
        .stage(batch, |st| stage(st, id, msg_id))
        .map(Ingested::Staged)
}
