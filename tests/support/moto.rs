//! `python3 -m moto.server` (PyPI `moto[s3,server]`, installed by `.ci/run`):
//! a real S3 API on a free loopback port, killed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::http;
use super::redis::free_port;

/// How long moto may take to come up (it imports a lot).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The bucket of [`shared`].
pub const SHARED_BUCKET: &str = "onair-cluster";

/// moto in-process, on `argv[1]`, for as long as the process that started
/// it lives: a moto shared by a test binary's tests is never dropped, so
/// it watches its parent and exits with it.
const WATCHED: &str = r"
import os, sys, time
from moto.server import ThreadedMotoServer
parent = os.getppid()
server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]))
server.start()
while os.getppid() == parent:
    time.sleep(0.5)
os._exit(0)
";

/// One moto for all the tests of a test binary (each moto takes seconds to
/// start), with [`SHARED_BUCKET`] created; it exits with the test process.
pub async fn shared() -> &'static Moto {
    static SHARED: tokio::sync::OnceCell<Moto> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let port = free_port();
            let child = Command::new("python3")
                .args(["-c", WATCHED])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 runs moto (pip install 'moto[s3,server]', see .ci/run)");
            let moto = Moto::ready(port, child).await;
            moto.create_bucket(SHARED_BUCKET).await;
            moto
        })
        .await
}

/// The `ONAIR_STORAGE__S3_*` variables of a node (of a cluster) that keeps
/// its recording files in the [`shared`] moto's bucket, under `prefix`.
pub async fn shared_storage_env(prefix: &str) -> Vec<(&'static str, String)> {
    let moto = shared().await;
    vec![
        ("ONAIR_STORAGE__S3_BUCKET", SHARED_BUCKET.to_owned()),
        ("ONAIR_STORAGE__S3_REGION", "us-east-1".to_owned()),
        ("ONAIR_STORAGE__S3_ENDPOINT", moto.endpoint.clone()),
        ("ONAIR_STORAGE__S3_ACCESS_KEY_ID", "testing".to_owned()),
        (
            "ONAIR_STORAGE__S3_SECRET_ACCESS_KEY",
            "testing-secret".to_owned(),
        ),
        ("ONAIR_STORAGE__S3_PREFIX", prefix.to_owned()),
        ("ONAIR_STORAGE__S3_ALLOW_HTTP", "true".to_owned()),
    ]
}

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
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs moto.server (pip install 'moto[s3,server]', see .ci/run)");
        Self::ready(port, child).await
    }

    /// Waits until the moto `child` answers on `port`.
    async fn ready(port: u16, mut child: Child) -> Self {
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
