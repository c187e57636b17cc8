//! The node's link to NATS: one thread with a current-thread tokio runtime running the async-nats
//! client and the cluster's tasks. Connecting never blocks the node's start: the client keeps
//! trying in the background (`retry_on_initial_connect`), and what needs NATS waits for it there.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use crate::shard::local::Shared;

/// `--nats`, `--node-id` and the export's bound.
#[derive(Clone, Debug)]
pub struct Settings {
    pub urls: Vec<String>,
    pub node: String,
    pub export_max_lag: u64,
}

/// The longest node id: it is a subject token and part of every exported message's id.
pub const MAX_NODE_ID: usize = 64;

/// A node id is a NATS subject token and a header value: `A-Z a-z 0-9 - _`, 1 to 64 of them.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("required with --nats (this node's name in the cluster)".into());
    }
    if id.len() > MAX_NODE_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{id:?}: 1 to {MAX_NODE_ID} of A-Z a-z 0-9 - _ (it names subjects and message ids)"
        ));
    }
    Ok(())
}

/// Each `--nats` address as the client reads it (`nats://host:port`, or `host:port`).
pub fn check_urls(urls: &[String]) -> Result<(), String> {
    for u in urls {
        u.parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("{u:?}: {e}"))?;
    }
    Ok(())
}

/// The running link; dropping it stops the tasks and joins the thread.
pub struct Cluster {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// How long one connection attempt may take before the next server (or the same) is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Cluster {
    /// Turns the export on (before any shard stages a record, so none is missed) and starts the
    /// link's thread.
    pub fn start(
        shared: Arc<Shared>,
        settings: Settings,
    ) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
        let cursor = super::export::prepare(&shared.fleet, settings.export_max_lag)?;
        let stop = Arc::new(Notify::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fg-cluster".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = stopping.notified() => {}
                        () = run(shared, settings, cursor) => {}
                    }
                });
            })?;
        Ok(Cluster {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(shared: Arc<Shared>, settings: Settings, cursor: u64) {
    let node = settings.node.clone();
    let client = match async_nats::ConnectOptions::new()
        .name(format!("fleetgate-{node}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback(move |event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("cluster: connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("cluster: NATS connection lost; retrying")
                }
                other => tracing::debug!(event = %other, "cluster: NATS event"),
            }
        })
        .connect(settings.urls.clone())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, urls = ?settings.urls, "cluster: the NATS addresses are not usable; the node runs alone");
            return;
        }
    };
    tracing::info!(node = %node, urls = ?settings.urls, "cluster mode: joining through NATS JetStream");
    super::export::run(shared, client, &settings.node, cursor).await;
}
