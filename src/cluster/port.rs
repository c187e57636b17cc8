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

/// Requests waiting for the link: past this the rules are told the cluster is busy.
pub const MAX_WAITING: usize = 1024;
/// How long one request may take (NATS slow or a leader election under way).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub enum Request {
    ClaimSerial(String, Uuid),
    ReleaseSerial(String),
    PutDevice(Box<DeviceRecord>),
    DeleteDevice(Uuid, Option<String>),
    Command(Box<CommandRecord>),
    TakeOwnership(Uuid),
    Presence(Uuid, bool),
    Gather(Vec<u8>),
}

/// What a request comes back with: msg_ids handed over (`TakeOwnership`), other nodes' answers
/// (`Gather`), else nothing.
pub type Answer = oneshot::Sender<Result<Vec<Vec<u8>>, ClusterError>>;

pub struct NatsPort {
    node: String,
    tx: mpsc::Sender<(Request, Answer)>,
}

impl NatsPort {
    pub fn new(node: String) -> (NatsPort, mpsc::Receiver<(Request, Answer)>) {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        (NatsPort { node, tx }, rx)
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

    fn ask_bytes(&self, req: Request) -> Reply<Vec<Vec<u8>>> {
        let (answer, wait) = oneshot::channel();
        let sent = self.tx.try_send((req, answer));
        Box::pin(async move {
            match sent {
                Ok(()) => wait.await.unwrap_or_else(|_| {
                    Err(ClusterError::Unavailable("the cluster link stopped".into()))
                }),
                Err(mpsc::error::TrySendError::Full(_)) => Err(ClusterError::Unavailable(format!(
                    "{MAX_WAITING} cluster requests already waiting"
                ))),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    Err(ClusterError::Unavailable("the cluster link stopped".into()))
                }
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
        let (answer, _) = oneshot::channel();
        if self
            .tx
            .try_send((Request::Presence(device, online), answer))
            .is_err()
        {
            metrics::counter!("fleetgate_cluster_presence_dropped_total").increment(1);
        }
    }
}

/// Answers requests until the port is dropped. Each runs as its own task, so a slow one does not
/// hold up the others; `ready` is empty until the link has its resources.
pub async fn serve(mut rx: mpsc::Receiver<(Request, Answer)>, ready: Arc<OnceLock<Resources>>) {
    while let Some((req, answer)) = rx.recv().await {
        let res = ready.get().cloned();
        tokio::spawn(async move {
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
        Request::Presence(dev, online) => super::ownership::presence(r, dev, online)
            .await
            .map(|()| Vec::new()),
        other => carry_out_unit(r, other).await.map(|()| Vec::new()),
    }
}

async fn carry_out_unit(r: &Resources, req: Request) -> Result<(), ClusterError> {
    match req {
        Request::TakeOwnership(_) | Request::Presence(..) | Request::Gather(_) => Ok(()),
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
