//! The real `onair` binary in its own process: started on a free loopback
//! port, its address read from its "onair listening" log line, its logs
//! drained so it never blocks on a full pipe, and killed (`SIGKILL`) when
//! dropped — only the process the test started, by its handle.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::harness::{ADMIN_KEY, SECRET, Server};

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_onair");
/// How long onair may take to start listening.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary, with none of the developer's own `ONAIR_*` variables.
pub fn without_host_env() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("ONAIR_") {
            command.env_remove(key);
        }
    }
    command
}

/// `onair --listen 127.0.0.1:0 --log-format json` with the test secret and
/// admin key, its store and recordings under `data`.
pub fn command(data: &Path) -> Command {
    with_defaults(Command::new(BIN), data)
}

/// [`command`] for node `id` of the cluster on `redis_url` (heartbeat 1 s,
/// a node silent `node_ttl_s` is dead), its recording files in the shared
/// bucket under `prefix`: a cluster keeps none on a node's disk.
pub async fn cluster_command(
    data: &Path,
    redis_url: &str,
    id: &str,
    prefix: &str,
    node_ttl_s: u64,
) -> Command {
    let mut command = command(data);
    command
        .envs(super::moto::shared_storage_env(prefix).await)
        .env("ONAIR_CLUSTER__REDIS_URL", redis_url)
        .env("ONAIR_CLUSTER__NODE_ID", id)
        .env("ONAIR_CLUSTER__HEARTBEAT_S", "1")
        .env("ONAIR_CLUSTER__NODE_TTL_S", node_ttl_s.to_string());
    command
}

/// [`command`], without the developer's own `ONAIR_*` variables.
pub fn hermetic_command(data: &Path) -> Command {
    with_defaults(without_host_env(), data)
}

fn with_defaults(mut command: Command, data: &Path) -> Command {
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env("ONAIR_AUTH__JWT_SECRET", SECRET)
        .env("ONAIR_AUTH__ADMIN_KEY", ADMIN_KEY)
        .env("ONAIR_STORE__PATH", data.join("onair.db"))
        .env("ONAIR_STORAGE__PATH", data.join("recordings"));
    command
}

/// A running onair process, killed (`SIGKILL`) when dropped.
pub struct Onair {
    /// The process, for its pid, signals and exit status.
    pub child: Child,
    /// Tokens and URLs for it.
    pub server: Server,
    /// A data directory that lives as long as the process, if it owns one.
    data: Option<tempfile::TempDir>,
    /// The thread draining the logs; it returns them all when they are kept
    /// ([`Onair::spawn_keeping_logs`]).
    drain: Option<std::thread::JoinHandle<String>>,
}

impl Onair {
    /// Runs `command` (which must log JSON and listen on a free port) and
    /// returns once it listens.
    pub fn spawn(command: &mut Command) -> Self {
        Self::start(command, false)
    }

    /// [`Onair::spawn`], keeping the logs for [`Onair::logs`].
    pub fn spawn_keeping_logs(command: &mut Command) -> Self {
        Self::start(command, true)
    }

    fn start(command: &mut Command, keep_logs: bool) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the onair binary runs");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel::<Option<SocketAddr>>();
        let drain = std::thread::spawn(move || {
            let mut told = false;
            let mut kept = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if keep_logs {
                    kept.push_str(&line);
                    kept.push('\n');
                }
                if told {
                    continue;
                }
                let log: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if log["fields"]["message"] == "onair listening" {
                    let addr = log["fields"]["local"].as_str().and_then(|a| a.parse().ok());
                    let _ = tx.send(addr);
                    told = true;
                }
            }
            // Keeps draining the logs so onair never blocks on a full pipe;
            // tells the waiter if onair exited before listening.
            let _ = tx.send(None);
            kept
        });
        let addr = rx
            .recv_timeout(LISTEN_TIMEOUT)
            .expect("onair starts listening in time")
            .expect("onair exited before listening");
        Self {
            child,
            server: Server::remote(addr),
            data: None,
            drain: Some(drain),
        }
    }

    /// Keeps `data` (its store and recordings) as long as the process.
    pub fn owning(mut self, data: tempfile::TempDir) -> Self {
        self.data = Some(data);
        self
    }

    /// [`command`] with the TOML `config` written to `data/onair.toml` and
    /// passed with `--config`.
    pub fn spawn_with_config(data: &Path, config: &str) -> Self {
        let file = data.join("onair.toml");
        std::fs::write(&file, config).expect("the config file is written");
        Self::spawn(command(data).arg("--config").arg(&file))
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// `kill -9`: no shutdown, no flushing, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().expect("onair is still running");
        self.child.wait().expect("onair is reaped");
    }

    /// `kill -9` if it still runs; never fails.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `SIGTERM` (a graceful shutdown).
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit (blocking).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("onair is reaped")
    }

    /// The logs, once onair has exited (empty unless started with
    /// [`Onair::spawn_keeping_logs`]).
    pub fn logs(&mut self) -> String {
        self.drain
            .take()
            .expect("the logs are read once")
            .join()
            .expect("the log drain does not panic")
    }

    /// `SIGTERM`, then asserts the process exits within `limit`.
    pub fn terminate_within(&mut self, limit: Duration) {
        self.sigterm();
        let deadline = std::time::Instant::now() + limit;
        while self.child.try_wait().expect("onair's status").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "onair did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Onair {
    fn drop(&mut self) {
        self.kill();
    }
}
