//! The node's link to NATS: one thread with a current-thread tokio runtime running the async-nats
//! client and the cluster's tasks. Connecting never blocks the node's start: the client keeps
//! trying in the background (`retry_on_initial_connect`), and what needs NATS waits for it there.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::OnceLock;

use async_nats::jetstream::{self, kv};
use tokio::sync::{Notify, mpsc};

use super::commands::{self, Feed};
use super::export;
use super::live::{self, Relay};
use super::port::{self, Answer, NatsPort, Request};
use super::resources::{self, DEVICES_BUCKET, Resources};
use super::{history, operators, ownership, registry};
use crate::fleet::accounts::OperatorChange;
use crate::shard::local::Shared;

/// `--nats`, `--node-id` and the export's bound.
#[derive(Clone, Debug)]
pub struct Settings {
    pub urls: Vec<String>,
    pub node: String,
    pub export_max_lag: u64,
    /// Copies JetStream keeps of each stream and bucket a node creates (`--nats-replicas`).
    pub replicas: usize,
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
        relay: (Arc<Relay>, mpsc::Receiver<Arc<str>>),
    ) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
        let cursor = super::export::prepare(&shared.fleet, settings.export_max_lag)?;
        let (port, requests) = NatsPort::new(settings.node.clone());
        let presence = port.presence();
        let changes = operators::channel(&shared);
        shared.fleet.cluster.join(Arc::new(port));
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
                        () = run(shared, settings, cursor, requests, relay, changes, presence) => {}
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

async fn run(
    shared: Arc<Shared>,
    settings: Settings,
    cursor: u64,
    requests: mpsc::Receiver<(Request, Answer)>,
    (relay, frames): (Arc<Relay>, mpsc::Receiver<Arc<str>>),
    changes: mpsc::Receiver<OperatorChange>,
    presence: Arc<port::Presence>,
) {
    let ready = Arc::new(OnceLock::new());
    tokio::spawn(port::serve(requests, ready.clone()));
    tokio::spawn(port::write_presence(presence, ready.clone()));
    let node = settings.node.clone();
    let mut options = async_nats::ConnectOptions::new();
    // Credentials in a URL (`nats://user:password@host:4222`): the client does not take them from
    // the address itself.
    if let Some((user, password)) = credentials(&settings.urls) {
        options = options.user_and_password(user, password);
    }
    let client = match options
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
    let js = jetstream::new(client.clone());
    let [devices, owners, nodes, operators, sessions] = loop {
        match set_up(&js, settings.replicas).await {
            Ok(kv) => break kv,
            Err(e) => {
                tracing::debug!(error = %e, "cluster: setting up the buckets and streams; again shortly");
                tokio::time::sleep(SET_UP_RETRY).await;
            }
        }
    };
    let r = Resources {
        client: client.clone(),
        js,
        devices,
        owners,
        nodes,
        operators,
        sessions,
        node: node.as_str().into(),
        shared: shared.clone(),
    };
    let _ = ready.set(r.clone());
    shared.fleet.cluster.set_ready();
    tracing::info!(node = %node, "cluster: registry, commands and export running");
    tokio::spawn(ownership::keep_lease(r.clone()));
    tokio::spawn(ownership::serve_release(shared.clone(), r.clone()));
    tokio::spawn(ownership::follow(shared.clone(), r.clone()));
    tokio::spawn(registry::follow(shared.clone(), r.clone()));
    tokio::spawn(live::run(relay, frames, r.clone()));
    tokio::spawn(history::serve(shared.clone(), r.clone()));
    tokio::spawn(operators::publish(changes, r.clone()));
    tokio::spawn(operators::follow(shared.clone(), r.clone()));
    for feed in [Feed::Commands, Feed::Statuses] {
        tokio::spawn(commands::follow(
            shared.clone(),
            r.clone(),
            node.clone(),
            feed,
        ));
    }
    export::run(shared, client, &settings.node, cursor).await;
}

/// The user and password the first `--nats` URL that has them names.
fn credentials(urls: &[String]) -> Option<(String, String)> {
    urls.iter()
        .filter_map(|u| u.parse::<async_nats::ServerAddr>().ok())
        .find_map(|a| Some((a.username()?.to_string(), a.password()?.to_string())))
}

const SET_UP_RETRY: Duration = Duration::from_millis(500);

/// Creates what is missing of the cluster's buckets and streams (the first node to start does),
/// with `replicas` copies each, and opens the registry's bucket.
async fn set_up(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<[kv::Store; 5], async_nats::Error> {
    let [owners, nodes] = ownership::bucket_streams();
    let [operators, sessions] = operators::bucket_streams();
    for config in [
        export::stream_config(),
        commands::stream_config(),
        devices_stream(),
        owners,
        nodes,
        operators,
        sessions,
    ] {
        let name = config.name.clone();
        js.get_or_create_stream(jetstream::stream::Config {
            num_replicas: replicas,
            ..config
        })
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    }
    Ok([
        js.get_key_value(DEVICES_BUCKET).await?,
        js.get_key_value(ownership::OWNERS_BUCKET).await?,
        js.get_key_value(ownership::NODES_BUCKET).await?,
        js.get_key_value(operators::OPERATORS_BUCKET).await?,
        js.get_key_value(operators::SESSIONS_BUCKET).await?,
    ])
}

/// The registry bucket's stream.
fn devices_stream() -> jetstream::stream::Config {
    resources::kv_bucket_stream(
        DEVICES_BUCKET,
        "fleetgate: every device's record, and which device has each serial",
        MAX_RECORD,
        Duration::ZERO,
        Duration::from_secs(120),
    )
}

/// The largest device record the registry bucket takes (a record holds a name, settings and a
/// token hash; the API bounds each).
const MAX_RECORD: i32 = 64 * 1024;
