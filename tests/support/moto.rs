//! `python3 -m moto.server` (PyPI `moto[s3,server]`, installed by `.ci/run`):
//! a real S3 API on a free loopback port, killed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::http;
use super::redis::free_port;

/// How long moto may take to come up (it imports a lot).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A moto S3 server.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    child: Child,
}

impl Moto {
    /// Starts moto and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs moto.server (pip install 'moto[s3,server]', see .ci/run)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let probe = format!("{endpoint}/moto-api/");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto.server exited with {status}; is moto[s3,server] installed?");
            }
            if http().get(&probe).send().await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto.server did not come up in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { endpoint, child }
    }

    /// Creates a bucket (moto takes unsigned requests).
    pub async fn create_bucket(&self, bucket: &str) {
        let response = http()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Puts an object (unsigned), as another writer of the bucket would.
    /// moto lists such an object to anyone but serves it only to signed
    /// requests (onair's), so [`Moto::object`] does not find it: check it
    /// with [`Moto::keys`].
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// An object's bytes, or `None` while there is none.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let response = http()
            .get(format!("{}/{bucket}/{key}", self.endpoint))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(response.bytes().await.ok()?.to_vec())
    }

    /// The keys in a bucket (ListObjectsV2, unsigned).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = http()
            .get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
