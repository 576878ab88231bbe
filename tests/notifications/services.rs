//! Real services on loopback for the notification tests: an HTTP receiver
//! (axum, in process), an SMTP sink (`aiosmtpd` from PyPI, writing a
//! Maildir) and an S3 API (`moto` server from PyPI). Every wait has a
//! timeout; every child process is killed when its handle is dropped.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::Value;
use tokio::sync::mpsc;

/// How long a service may take to come up (moto imports a lot).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an expected request, message or object may take to arrive.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago, for a child that wants `-p PORT`.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ready` until it says yes; fails the test (with the child's exit
/// status, if it died) after [`START_TIMEOUT`].
async fn wait_until<F, Fut>(what: &str, child: &mut Child, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited with {status} before it was ready; is it installed? (see .ci/run)"
            );
        }
        if ready().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not come up in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub content_type: Option<String>,
    pub body: Value,
}

/// An HTTP endpoint that records POSTs and answers them with scripted
/// statuses (then 200).
pub struct Receiver {
    pub url: String,
    requests: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

type ReceiverState = (Arc<Mutex<VecDeque<u16>>>, mpsc::UnboundedSender<Received>);

impl Receiver {
    pub async fn start(statuses: &[u16]) -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let state: ReceiverState = (Arc::new(Mutex::new(statuses.iter().copied().collect())), tx);
        let app = axum::Router::new()
            .route("/events", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/events"),
            requests,
            task,
        }
    }

    /// The next request; fails the test after [`ARRIVAL_TIMEOUT`].
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(ARRIVAL_TIMEOUT, self.requests.recv())
            .await
            .expect("a POST arrives in time")
            .expect("the receiver runs")
    }

    /// Requests that arrived and were not taken yet.
    pub fn pending(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State((statuses, tx)): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = tx.send(Received { content_type, body });
    let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// One e-mail as the sink stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Header lines, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, transfer encoding undone.
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let encoding = headers
            .iter()
            .find(|(n, _)| n == "content-transfer-encoding")
            .map(|(_, v)| v.to_ascii_lowercase());
        let body = match encoding.as_deref() {
            Some("quoted-printable") => quoted_printable(body),
            Some("base64") => String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(body.split_whitespace().collect::<String>())
                    .unwrap(),
            )
            .unwrap(),
            _ => body.to_owned(),
        };
        Self { headers, body }
    }
}

fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `python3 -m aiosmtpd` with the Maildir handler.
pub struct SmtpSink {
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs aiosmtpd");
        wait_until("aiosmtpd", &mut child, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Self {
            port,
            maildir,
            _dir: dir,
            _process: Process(child),
        }
    }

    fn stored(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map_while(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|raw| Mail::parse(&raw))
            .collect()
    }

    /// Waits until `n` messages were stored; fails after [`ARRIVAL_TIMEOUT`].
    pub async fn messages(&self, n: usize) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let mails = self.stored();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} e-mails did not arrive in time (got {})",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What was stored so far.
    pub fn so_far(&self) -> Vec<Mail> {
        self.stored()
    }
}

/// `python3 -m moto.server`: a real S3 API.
pub use crate::support::moto::Moto as S3;

/// An HTTP client with a timeout for talking to the services.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(ARRIVAL_TIMEOUT)
        .build()
        .unwrap()
}

/// Writes `bytes` to a new file in `dir`.
pub fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
