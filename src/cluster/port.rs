//! `fleet::cluster::Port` over NATS: the rules' requests (claim a serial, write or delete a
//! device's record, append a command) go over a bounded channel to the link's runtime, which
//! carries each out against JetStream within a bounded wait and answers through a oneshot. A
//! request while NATS is away is answered `Unavailable` at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::resources::{Resources, device_key, serial_key};
use crate::fleet::cluster::{ClusterError, Port, Reply};
use crate::store::records::{self, CommandRecord, DeviceRecord};

/// Requests waiting for the link: past this a request waits for room, up to `QUEUE_WAIT`.
pub const MAX_WAITING: usize = 1024;
/// How long one request may take (NATS slow or a leader election under way).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request may wait for room in a full queue.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Requests carried out at once; the rest wait in the queue.
pub const MAX_IN_FLIGHT: usize = 256;

pub enum Request {
    ClaimSerial(String, Uuid),
    ReleaseSerial(String),
    PutDevice(Box<DeviceRecord>),
    DeleteDevice(Uuid, Option<String>),
    Command(Box<CommandRecord>),
    TakeOwnership(Uuid),
    Gather(Vec<u8>),
}

/// What a request comes back with: msg_ids handed over (`TakeOwnership`), other nodes' answers
/// (`Gather`), else nothing.
pub type Answer = oneshot::Sender<Result<Vec<Vec<u8>>, ClusterError>>;

pub struct NatsPort {
    node: String,
    tx: mpsc::Sender<(Request, Answer)>,
    presence: Arc<Presence>,
}

/// Devices whose presence changed here and is not yet written to their owner records: state, not
/// events, so only each device's latest counts and nothing is dropped when NATS is slow (bounded
/// by the number of devices).
#[derive(Default)]
pub struct Presence {
    changed: std::sync::Mutex<std::collections::HashMap<Uuid, bool>>,
    wake: tokio::sync::Notify,
}

impl Presence {
    fn set(&self, device: Uuid, online: bool) {
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device, online);
        self.wake.notify_one();
    }

    /// Waits for changes, and takes them all.
    async fn take(&self) -> std::collections::HashMap<Uuid, bool> {
        loop {
            let taken =
                std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()));
            if !taken.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }
}

/// Writes presence changes to the owner records, `PRESENCE_AT_ONCE` at a time, until the link
/// stops; a change that fails (NATS away) is kept for the next round unless a newer one came.
pub async fn write_presence(presence: Arc<Presence>, ready: Arc<OnceLock<Resources>>) {
    loop {
        let changes = presence.take().await;
        let Some(r) = ready.get().cloned() else {
            requeue(&presence, changes);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let changes: Vec<(Uuid, bool)> = changes.into_iter().collect();
        for chunk in changes.chunks(PRESENCE_AT_ONCE) {
            let writes = chunk.iter().map(|&(dev, online)| {
                let r = r.clone();
                async move {
                    let done = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        super::ownership::presence(&r, dev, online),
                    )
                    .await;
                    (dev, online, matches!(done, Ok(Ok(()))))
                }
            });
            let failed: std::collections::HashMap<Uuid, bool> =
                futures_util::future::join_all(writes)
                    .await
                    .into_iter()
                    .filter(|(_, _, ok)| !ok)
                    .map(|(d, o, _)| (d, o))
                    .collect();
            if !failed.is_empty() {
                requeue(&presence, failed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Puts back changes not written, unless the device changed again meanwhile.
fn requeue(presence: &Presence, changes: std::collections::HashMap<Uuid, bool>) {
    let mut now = presence.changed.lock().unwrap_or_else(|p| p.into_inner());
    for (d, o) in changes {
        now.entry(d).or_insert(o);
    }
}

/// Presence writes carried out at once.
const PRESENCE_AT_ONCE: usize = 64;

impl NatsPort {
    pub fn new(node: String) -> (NatsPort, mpsc::Receiver<(Request, Answer)>) {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let presence = Arc::default();
        (NatsPort { node, tx, presence }, rx)
    }

    /// The presence changes this port collects, for the link's writer.
    pub fn presence(&self) -> Arc<Presence> {
        self.presence.clone()
    }

    fn ask(&self, req: Request) -> Reply<()> {
        let ids = self.ask_bytes(req);
        Box::pin(async move { ids.await.map(|_| ()) })
    }

    fn ask_ids(&self, req: Request) -> Reply<Vec<String>> {
        let answer = self.ask_bytes(req);
        Box::pin(async move {
            Ok(answer
                .await?
                .into_iter()
                .filter_map(|b| String::from_utf8(b).ok())
                .collect())
        })
    }

    /// Queues a request and waits for its answer. A full queue is waited on (a reconnect storm's
    /// registrations queue behind each other rather than fail), for at most `QUEUE_WAIT`.
    fn ask_bytes(&self, req: Request) -> Reply<Vec<Vec<u8>>> {
        let (answer, wait) = oneshot::channel();
        let tx = self.tx.clone();
        Box::pin(async move {
            match tokio::time::timeout(QUEUE_WAIT, tx.send((req, answer))).await {
                Ok(Ok(())) => wait.await.unwrap_or_else(|_| {
                    Err(ClusterError::Unavailable("the cluster link stopped".into()))
                }),
                Ok(Err(_)) => Err(ClusterError::Unavailable("the cluster link stopped".into())),
                Err(_) => Err(ClusterError::Unavailable(format!(
                    "{MAX_WAITING} cluster requests waited longer than {QUEUE_WAIT:?}"
                ))),
            }
        })
    }
}

impl Port for NatsPort {
    fn node(&self) -> &str {
        &self.node
    }

    fn claim_serial(&self, serial: &str, id: Uuid) -> Reply<()> {
        self.ask(Request::ClaimSerial(serial.to_string(), id))
    }

    fn release_serial(&self, serial: &str) -> Reply<()> {
        self.ask(Request::ReleaseSerial(serial.to_string()))
    }

    fn put_device(&self, rec: &DeviceRecord) -> Reply<()> {
        self.ask(Request::PutDevice(Box::new(rec.clone())))
    }

    fn delete_device(&self, id: Uuid, serial: Option<String>) -> Reply<()> {
        self.ask(Request::DeleteDevice(id, serial))
    }

    fn enqueue_command(&self, cmd: &CommandRecord) -> Reply<()> {
        self.ask(Request::Command(Box::new(cmd.clone())))
    }

    fn take_ownership(&self, device: Uuid) -> Reply<Vec<String>> {
        self.ask_ids(Request::TakeOwnership(device))
    }

    fn gather(&self, question: Vec<u8>) -> Reply<Vec<Vec<u8>>> {
        self.ask_bytes(Request::Gather(question))
    }

    fn presence(&self, device: Uuid, online: bool) {
        self.presence.set(device, online);
    }
}

/// Answers requests until the port is dropped. Each runs as its own task, at most
/// `MAX_IN_FLIGHT` at once (the rest wait in the queue), so a slow one does not hold up the
/// others; `ready` is empty until the link has its resources.
pub async fn serve(mut rx: mpsc::Receiver<(Request, Answer)>, ready: Arc<OnceLock<Resources>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some((req, answer)) = rx.recv().await {
        let res = ready.get().cloned();
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let out = match res {
                None => Err(ClusterError::Unavailable(
                    "not connected to NATS yet".into(),
                )),
                Some(r)
                    if r.client.connection_state() != async_nats::connection::State::Connected =>
                {
                    Err(ClusterError::Unavailable("NATS is not connected".into()))
                }
                Some(r) => match tokio::time::timeout(REQUEST_TIMEOUT, carry_out(&r, req)).await {
                    Ok(out) => out,
                    Err(_) => Err(ClusterError::Unavailable(format!(
                        "NATS did not answer within {REQUEST_TIMEOUT:?}"
                    ))),
                },
            };
            let _ = answer.send(out);
        });
    }
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

async fn carry_out(r: &Resources, req: Request) -> Result<Vec<Vec<u8>>, ClusterError> {
    match req {
        Request::TakeOwnership(dev) => Ok(super::ownership::take(r, dev)
            .await?
            .into_iter()
            .map(String::into_bytes)
            .collect()),
        Request::Gather(question) => Ok(super::history::gather(r, question).await),
        other => carry_out_unit(r, other).await.map(|()| Vec::new()),
    }
}

async fn carry_out_unit(r: &Resources, req: Request) -> Result<(), ClusterError> {
    match req {
        Request::TakeOwnership(_) | Request::Gather(_) => Ok(()),
        Request::ClaimSerial(serial, id) => {
            let key = serial_key(&serial);
            match r.devices.create(&key, id.to_string().into()).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // Ours already (a retried creation), or another device's.
                    match r.devices.get(&key).await.map_err(unavailable)? {
                        Some(v) if v.as_ref() == id.to_string().as_bytes() => Ok(()),
                        _ => Err(ClusterError::SerialTaken),
                    }
                }
                Err(e) => Err(unavailable(e)),
            }
        }
        Request::ReleaseSerial(serial) => r
            .devices
            .delete(serial_key(&serial))
            .await
            .map_err(unavailable),
        Request::PutDevice(rec) => {
            let body = records::encode(&*rec).map_err(unavailable)?;
            r.devices
                .put(device_key(&rec.device_id), body.into())
                .await
                .map(|_| ())
                .map_err(unavailable)
        }
        Request::DeleteDevice(id, serial) => {
            r.devices
                .delete(device_key(&id))
                .await
                .map_err(unavailable)?;
            if let Some(s) = serial {
                r.devices
                    .delete(serial_key(&s))
                    .await
                    .map_err(unavailable)?;
            }
            Ok(())
        }
        Request::Command(cmd) => {
            let body = records::encode(&*cmd).map_err(unavailable)?;
            let publish = PublishMessage::build()
                .payload(body.into())
                .message_id(cmd.command_id.to_string());
            let subject = format!("fleetgate.commands.{}", cmd.device_id);
            let ack =
                r.js.send_publish(subject, publish)
                    .await
                    .map_err(unavailable)?;
            ack.await.map(|_| ()).map_err(unavailable)
        }
    }
}
