//! One set of operators across the cluster: dashboard users, API tokens and login sessions made
//! or ended on any node hold on every node. `Accounts` hands each change made here
//! (`OperatorChange`) to a bounded channel; the link writes it to the `fleetgate-operators`
//! bucket (users `u.<hex name>`, tokens `t.<hash>`) or `fleetgate-sessions` (`s.<hash>`, values
//! kept `SESSION_IDLE`), in order, retrying while NATS is away. Every node watches both buckets
//! (each key's latest value first, so a node that was away catches up) and applies what it sees
//! through `Accounts::apply`, idempotently (its own changes come back too).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::resources::{self, Resources};
use crate::fleet::accounts::{OperatorChange, SESSION_IDLE_MS};
use crate::shard::local::Shared;
use crate::store::records;

pub const OPERATORS_BUCKET: &str = "fleetgate-operators";
pub const SESSIONS_BUCKET: &str = "fleetgate-sessions";
/// Changes waiting for the link: past this a change is dropped (and counted).
pub const MAX_WAITING: usize = 1024;
const RETRY: Duration = Duration::from_millis(500);

/// The channel `Accounts` hands this node's changes to.
pub fn channel(shared: &Shared) -> mpsc::Receiver<OperatorChange> {
    let (tx, rx) = mpsc::channel(MAX_WAITING);
    shared.fleet.accounts.replicate_to(move |c| {
        if tx.try_send(c).is_err() {
            metrics::counter!("fleetgate_cluster_operator_changes_dropped_total").increment(1);
        }
    });
    rx
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes = crate::fleet::auth::unhex(s)?;
    String::from_utf8(bytes).ok()
}

/// Where a change lives: its bucket, its key, and whether it removes the key.
fn place(c: &OperatorChange) -> (bool, String, bool) {
    match c {
        OperatorChange::User(u) => (false, format!("u.{}", hex(&u.username)), false),
        OperatorChange::UserGone { username } => (false, format!("u.{}", hex(username)), true),
        OperatorChange::Token(t) => (false, format!("t.{}", t.token_hash), false),
        OperatorChange::TokenGone { token_hash } => (false, format!("t.{token_hash}"), true),
        OperatorChange::Session { id_hash, .. } => (true, format!("s.{id_hash}"), false),
        OperatorChange::SessionGone { id_hash } => (true, format!("s.{id_hash}"), true),
    }
}

/// Writes this node's changes, in order, until the link stops.
pub async fn publish(mut changes: mpsc::Receiver<OperatorChange>, r: Resources) {
    while let Some(c) = changes.recv().await {
        let (session, key, gone) = place(&c);
        let bucket = if session { &r.sessions } else { &r.operators };
        loop {
            let done = if gone {
                bucket.delete(&key).await.is_ok()
            } else {
                match records::encode(&c) {
                    Ok(v) => bucket.put(&key, v.into()).await.is_ok(),
                    Err(_) => true,
                }
            };
            if done {
                break;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Applies what the buckets hold and every change to them, until the link stops.
pub async fn follow(shared: Arc<Shared>, r: Resources) {
    loop {
        let watches = (
            r.operators.watch_with_history(">").await,
            r.sessions.watch_with_history(">").await,
        );
        let (Ok(mut ops), Ok(mut sessions)) = watches else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        loop {
            let entry = tokio::select! {
                e = ops.next() => e,
                e = sessions.next() => e,
            };
            let Some(Ok(e)) = entry else { break };
            if let Some(c) = change_of(&e)
                && let Err(err) = shared.fleet.accounts.apply(&shared.fleet.store, c)
            {
                tracing::error!(error = %err, key = %e.key, "cluster: applying an operator change failed");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn change_of(e: &kv::Entry) -> Option<OperatorChange> {
    if e.operation == kv::Operation::Put {
        return records::decode(&e.value).ok();
    }
    let (kind, rest) = e.key.split_once('.')?;
    Some(match kind {
        "u" => OperatorChange::UserGone {
            username: unhex(rest)?,
        },
        "t" => OperatorChange::TokenGone {
            token_hash: rest.to_string(),
        },
        "s" => OperatorChange::SessionGone {
            id_hash: rest.to_string(),
        },
        _ => return None,
    })
}

/// The two buckets' streams (`resources::kv_bucket_stream`).
pub fn bucket_streams() -> [jetstream::stream::Config; 2] {
    let bucket = |name: &str, description: &str, max_age: Duration| {
        resources::kv_bucket_stream(
            name,
            description,
            16 * 1024,
            max_age,
            Duration::from_secs(10),
        )
    };
    [
        bucket(
            OPERATORS_BUCKET,
            "fleetgate: dashboard users and API tokens",
            Duration::ZERO,
        ),
        bucket(
            SESSIONS_BUCKET,
            "fleetgate: dashboard login sessions",
            Duration::from_millis(SESSION_IDLE_MS),
        ),
    ]
}
