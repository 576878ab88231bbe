//! A real webhook receiver (`tests/webhooks/receiver.py`) that verifies each
//! request with the official Standard Webhooks library (`standardwebhooks`
//! from PyPI) and reports it as one JSON line; killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// The secret the receiver verifies with (an endpoint's `secret`).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver's process and the requests it reported.
pub struct Receiver {
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Receiver {
    /// Starts it on `port`, or on a free one.
    pub fn start(port: Option<u16>) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(SECRET);
        if let Some(port) = port {
            command.arg(port.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| {
            panic!("the receiver did not start (is `standardwebhooks` installed?): {first:?}")
        });
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, port, lines }
    }

    /// The URL of `path` on it (the path chooses its answers).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next request it received: `{path, verified, webhook_id, event, status}`.
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(15)).await
    }

    /// [`Receiver::next`], waiting at most `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Value {
        tokio::time::timeout(wait, self.lines.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("the receiver runs")
    }

    /// Fails if a request arrives within `wait`.
    pub async fn silence(&mut self, wait: Duration) {
        if let Ok(Some(line)) = tokio::time::timeout(wait, self.lines.recv()).await {
            panic!("expected no more webhooks, got {line}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
