//! `[storage] s3_*`: recording files move to an S3-compatible bucket — a real
//! S3 API on loopback (`python3 -m moto.server`, PyPI `moto[s3,server]`) —
//! and are served (with Range) and deleted from there. Every wait has a
//! timeout; the moto process is killed when the test ends.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use onair::Config;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::harness::{ADMIN_KEY, Server, config, http};
use support::moto::Moto;

/// How long a move to the bucket may take (retries included).
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration whose recordings go to `moto`'s `bucket` under `onair/`,
/// keeping its files in `data`.
fn s3_config(moto: &Moto, bucket: &str, data: &Path) -> Config {
    let mut config = config();
    config.store.path = data.join("onair.db");
    config.storage.path = data.join("recordings");
    config.storage.s3_bucket = Some(bucket.into());
    config.storage.s3_region = Some("us-east-1".into());
    config.storage.s3_endpoint = Some(moto.endpoint.clone());
    config.storage.s3_access_key_id = Some("testing".into());
    config.storage.s3_secret_access_key = Some("testing-secret".into());
    config.storage.s3_prefix = "onair/".into();
    config.storage.s3_allow_http = true;
    config
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn hand_in(server: &Server, room: &str, id: &str, bytes: Vec<u8>) -> Value {
    let form = Form::new().text("recording_id", id.to_owned()).part(
        "file",
        Part::bytes(bytes)
            .file_name("standup.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(server.url(&format!("/v1/rooms/{room}/recordings")))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The recording files (not the `.incoming` scratch directory) under `dir`.
fn local_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Polls `done` every 100 ms until it holds; fails after [`MOVE_TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + MOVE_TIMEOUT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn media(server: &Server, id: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = http()
        .get(server.url(&format!("/v1/recordings/{id}/media")))
        .bearer_auth(ADMIN_KEY);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_handed_in_file_moves_to_the_bucket_and_is_served_and_deleted_from_there() {
    let moto = Moto::start().await;
    moto.create_bucket("onair-recordings").await;
    let data = tempfile::tempdir().unwrap();
    let server = Server::with(s3_config(&moto, "onair-recordings", data.path())).await;
    let key = "onair/standup/rec-1/standup.mp4";
    // More than one 8 MiB part: a real multipart upload.
    let bytes = content(9 * 1024 * 1024 + 123);

    let created = hand_in(&server, "standup", "rec-1", bytes.clone()).await;
    assert_eq!(created["size_bytes"], bytes.len());
    assert_eq!(created["url"], "/v1/recordings/rec-1/media");

    // The object appears with the same bytes, and then the local copy goes.
    eventually("the object in the bucket", || async {
        moto.object("onair-recordings", key).await.is_some()
    })
    .await;
    assert!(moto.object("onair-recordings", key).await.unwrap() == bytes);
    let recordings = data.path().join("recordings");
    eventually("the local file removed", || async {
        local_files(&recordings).is_empty()
    })
    .await;

    // The API still shows it the same way, with no server details.
    let shown: Value = http()
        .get(server.url("/v1/recordings/rec-1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["size_bytes"], bytes.len());
    assert!(shown.get("external_location").is_none(), "{shown}");

    // Media comes from the bucket: whole, or a range of it.
    let response = media(&server, "rec-1", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("standup.mp4")
    );
    assert!(response.bytes().await.unwrap() == bytes);

    let response = media(&server, "rec-1", Some("bytes=1000-1999")).await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1000-1999/{}", bytes.len()).as_str()
    );
    assert_eq!(response.bytes().await.unwrap(), &bytes[1000..2000]);

    let response = media(&server, "rec-1", Some("bytes=-10")).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), &bytes[bytes.len() - 10..]);

    let response = media(&server, "rec-1", Some(&format!("bytes={}-", bytes.len()))).await;
    assert_eq!(response.status(), 416);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );

    // A signed URL, with no header, reaches the object too.
    let signed: Value = http()
        .get(server.url("/v1/recordings/rec-1/url"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http()
        .get(server.url(signed["url"].as_str().unwrap()))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), &bytes[..4]);

    // Deleting removes the object.
    let response = http()
        .delete(server.url("/v1/recordings/rec-1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(moto.keys("onair-recordings").await.is_empty());
    assert_eq!(media(&server, "rec-1", None).await.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_missing_bucket_keeps_the_file_served_locally_until_the_upload_succeeds() {
    let moto = Moto::start().await;
    let data = tempfile::tempdir().unwrap();
    // The bucket does not exist yet: the check at startup fails, uploads are retried.
    let server = Server::with(s3_config(&moto, "late-bucket", data.path())).await;
    let bytes = content(50_000);
    hand_in(&server, "room", "rec-2", bytes.clone()).await;

    let response = media(&server, "rec-2", Some("bytes=10-19")).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), &bytes[10..20]);
    let recordings = data.path().join("recordings");
    assert_eq!(local_files(&recordings).len(), 1);

    moto.create_bucket("late-bucket").await;
    eventually("the retried upload", || async {
        moto.object("late-bucket", "onair/room/rec-2/standup.mp4")
            .await
            .is_some()
    })
    .await;
    eventually("the local file removed", || async {
        local_files(&recordings).is_empty()
    })
    .await;
    let response = media(&server, "rec-2", None).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == bytes);
    server.stop().await;
}

#[tokio::test]
async fn files_kept_locally_move_to_the_bucket_at_the_next_start() {
    let moto = Moto::start().await;
    moto.create_bucket("later").await;
    let data = tempfile::tempdir().unwrap();
    let local_only = {
        let mut config = s3_config(&moto, "later", data.path());
        config.storage.s3_bucket = None;
        config.storage.s3_region = None;
        config.storage.s3_endpoint = None;
        config.storage.s3_access_key_id = None;
        config.storage.s3_secret_access_key = None;
        config.storage.s3_prefix = String::new();
        config.storage.s3_allow_http = false;
        config
    };
    let server = Server::with(local_only).await;
    let bytes = content(70_000);
    hand_in(&server, "room", "rec-3", bytes.clone()).await;
    server.stop().await;
    let recordings = data.path().join("recordings");
    assert_eq!(local_files(&recordings).len(), 1);
    assert!(moto.keys("later").await.is_empty());

    // Restarted with the bucket: the file moves there.
    let server = Server::with(s3_config(&moto, "later", data.path())).await;
    eventually("the object in the bucket", || async {
        moto.object("later", "onair/room/rec-3/standup.mp4")
            .await
            .as_deref()
            == Some(&bytes[..])
    })
    .await;
    eventually("the local file removed", || async {
        local_files(&recordings).is_empty()
    })
    .await;
    let response = media(&server, "rec-3", Some("bytes=0-99")).await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), &bytes[..100]);
    server.stop().await;
}

/// A name with characters that object keys percent-encode (`~`, `[`, `%`) is
/// served and deleted under the key it was uploaded with, not encoded twice.
#[tokio::test]
async fn names_that_keys_encode_are_served_and_deleted_from_the_bucket() {
    let moto = Moto::start().await;
    moto.create_bucket("encoded").await;
    let data = tempfile::tempdir().unwrap();
    let server = Server::with(s3_config(&moto, "encoded", data.path())).await;
    let bytes = content(5000);
    let form = Form::new().text("recording_id", "rec-9").part(
        "file",
        Part::bytes(bytes.clone())
            .file_name("stand~up [50%].mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let recordings = data.path().join("recordings");
    eventually("the file moved to the bucket", || async {
        !moto.keys("encoded").await.is_empty() && local_files(&recordings).is_empty()
    })
    .await;

    let served = media(&server, "rec-9", Some("bytes=10-19")).await;
    assert_eq!(served.status(), 206);
    assert!(served.bytes().await.unwrap() == bytes[10..20]);
    let deleted = http()
        .delete(server.url("/v1/recordings/rec-9"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(moto.keys("encoded").await, Vec::<String>::new());
}
