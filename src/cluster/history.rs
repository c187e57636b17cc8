//! History across nodes: a node asks every other live node (`fleetgate.node.<node>.read`) the
//! same question about a device's records and merges the answers (`api::history`); each node
//! answers from its own store.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::resources::Resources;
use crate::shard::local::Shared;

/// How long a node waits for the others' answers; one that is later is left out.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// The answers of every other live node to `question`, as they came within `ANSWER_WAIT`.
pub async fn gather(r: &Resources, question: Vec<u8>) -> Vec<Vec<u8>> {
    let mut nodes = Vec::new();
    if let Ok(mut keys) = r.nodes.keys().await {
        while let Some(Ok(k)) = keys.next().await {
            if k != *r.node {
                nodes.push(k);
            }
        }
    }
    let asks = nodes.into_iter().map(|n| {
        let client = r.client.clone();
        let q = question.clone();
        async move {
            let subject = format!("fleetgate.node.{n}.read");
            match tokio::time::timeout(ANSWER_WAIT, client.request(subject, q.into())).await {
                Ok(Ok(m)) => Some(m.payload.to_vec()),
                _ => {
                    metrics::counter!("fleetgate_cluster_reads_unanswered_total").increment(1);
                    None
                }
            }
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Answers other nodes' reads of this node's store, until the link stops.
pub async fn serve(shared: Arc<Shared>, r: Resources) {
    loop {
        let subject = format!("fleetgate.node.{}.read", r.node);
        match r.client.subscribe(subject).await {
            Ok(mut sub) => {
                while let Some(m) = sub.next().await {
                    let Some(reply) = m.reply.clone() else {
                        continue;
                    };
                    let body = crate::api::history::answer(&shared.fleet, &m.payload);
                    let _ = r.client.publish(reply, body.into()).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cluster: cannot answer reads yet"),
        }
        tokio::time::sleep(RETRY).await;
    }
}
