//! A `nats-server` with JetStream (Debian's package) on a loopback address, for the cluster tests,
//! and a reader of what the cluster published to it.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{READY_TIMEOUT, Value, parse, unique_dir};

pub struct Nats {
    child: Option<Child>,
    dir: PathBuf,
    addr: String,
    starts: u32,
    /// `--user`/`--pass` the server requires, if any.
    user: Option<(String, String)>,
}

impl Nats {
    /// Starts `nats-server -js` on `host`, with its JetStream files in a directory of its own.
    /// The server picks its port (`-p -1`, read back from its log: tests running side by side
    /// never race for one) and keeps it across restarts.
    pub fn start(host: &str) -> Nats {
        Self::start_as(host, None)
    }

    /// `start`, with a server that lets in only `user` with its password.
    pub fn start_as(host: &str, user: Option<(&str, &str)>) -> Nats {
        let dir = unique_dir("nats");
        fs::create_dir_all(&dir).expect("create nats dir");
        let mut n = Nats {
            child: None,
            dir,
            addr: format!("{host}:-1"),
            starts: 0,
            user: user.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        self.starts += 1;
        let log =
            fs::File::create(self.dir.join(format!("nats-{}.log", self.starts))).expect("nats log");
        let (host, port) = self.addr.rsplit_once(':').expect("host:port");
        let mut cmd = Command::new("nats-server");
        if let Some((u, p)) = &self.user {
            cmd.args(["--user", u, "--pass", p]);
        }
        let child = cmd
            .args(["-js", "-sd"])
            .arg(self.dir.join("js"))
            .args(["-a", host, "-p", port, "-n", "fleetgate-test"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server (apt-get install nats-server; .ci/run does): {e}")
            });
        self.child = Some(child);
        let log = self.dir.join(format!("nats-{}.log", self.starts));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let listening = text
                .lines()
                .find_map(|l| l.split("Listening for client connections on ").nth(1))
                .map(|a| a.trim().to_string());
            if let Some(a) = listening
                && text.contains("Server is ready")
                && TcpStream::connect(&a).is_ok()
            {
                self.addr = a;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not get ready on {}:\n{}",
                self.addr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's URL, with the user and password it requires.
    pub fn url(&self) -> String {
        match &self.user {
            Some((u, p)) => format!("nats://{u}:{p}@{}", self.addr),
            None => format!("nats://{}", self.addr),
        }
    }

    pub fn logs(&self) -> String {
        (1..=self.starts)
            .filter_map(|n| fs::read_to_string(self.dir.join(format!("nats-{n}.log"))).ok())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Stops the server at once (SIGKILL): what it acknowledged is in its files.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Every message in `stream`, in stream order: its subject, `Nats-Msg-Id` and JSON body.
    pub fn stream_messages(&self, stream: &str) -> Vec<Published> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            // The client does not take a user from the URL: it is given apart.
            let mut options = async_nats::ConnectOptions::new();
            if let Some((u, p)) = &self.user {
                options = options.user_and_password(u.clone(), p.clone());
            }
            let client = options
                .connect(format!("nats://{}", self.addr))
                .await
                .expect("connect to NATS");
            let js = async_nats::jetstream::new(client);
            let mut st = js.get_stream(stream).await.expect("the stream exists");
            let info = st.info().await.expect("stream info");
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            let mut out = Vec::new();
            for seq in first..=last {
                let Ok(m) = st.get_raw_message(seq).await else {
                    continue; // deleted
                };
                let msg_id = m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                out.push(Published {
                    subject: m.subject.to_string(),
                    msg_id,
                    body: parse(&m.payload),
                });
            }
            out
        })
    }
}

/// One message of a stream.
#[derive(Debug, Clone)]
pub struct Published {
    pub subject: String,
    pub msg_id: String,
    pub body: Value,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("nats-server files kept in {}", self.dir.display());
            eprintln!("{}", self.logs());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
