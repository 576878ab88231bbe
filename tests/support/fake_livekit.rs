//! The fake LiveKit server (`tests/livekit/fake-livekit.mjs`), a Node process
//! built on LiveKit's own server SDK, killed when dropped. Each test file adds
//! the `_fake/…` calls it needs in its own `impl FakeLivekit`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::harness::http;

/// `tests/livekit/`.
pub fn fake_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/livekit")
}

/// Installs the fake's npm packages once per test run (`npm ci`, from the lockfile).
fn npm_ci_once() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = fake_dir();
        if dir
            .join("node_modules/livekit-server-sdk/package.json")
            .is_file()
        {
            return;
        }
        let status = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .status()
            .expect("bash runs tests/livekit/setup.sh");
        assert!(status.success(), "tests/livekit/setup.sh failed: {status}");
    });
}

/// The fake LiveKit server, a Node process that lives as long as this value.
pub struct FakeLivekit {
    /// The Node process.
    child: Child,
    /// Held open: the fake exits when its stdin closes.
    _stdin: ChildStdin,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl FakeLivekit {
    /// Starts the fake with an API key and secret; returns once it listens.
    pub async fn with_keys(key: &str, secret: &str) -> Self {
        npm_ci_once();
        let mut child = Command::new("node")
            .arg(fake_dir().join("fake-livekit.mjs"))
            .args(["--api-key", key, "--api-secret", secret])
            .current_dir(fake_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("Node.js (`node`) is installed");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("the fake LiveKit starts in time")
        .unwrap()
        .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the fake LiveKit said {line:?}: {e}"));
        let port = ready["port"].as_u64().expect("a port");
        Self {
            child,
            _stdin: stdin,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn url(&self) -> String {
        self.base.clone()
    }

    /// `GET /_fake/<path>`, which must succeed.
    pub async fn get(&self, path: &str) -> Value {
        let response = http()
            .get(format!("{}/_fake/{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// `POST /_fake/<path>`, which must succeed.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::builder()
            // Deliveries may wait on onair's start call (see livekit.rs's
            // `webhooks_before_the_start_answer`).
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(format!("{}/_fake/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Sends a webhook signed (or forged) as `spec` says; returns the delivery.
    pub async fn webhook(&self, spec: Value) -> Value {
        self.post("webhook", spec).await
    }
}

impl Drop for FakeLivekit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
