//! The catalog of a cluster (SPEC §7): real onair processes over a real
//! `redis-server`, their files in a real S3 API (moto). A recording handed
//! in on one node is listed, shown and served by another; a deletion or a
//! legal hold on one is seen on the other; a node replaced by a fresh one
//! with an empty disk serves the same catalog; and a cluster without the
//! shared bucket refuses to start.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::binary::{self, Onair};
use support::harness::{ADMIN_KEY, Server, http};
use support::moto::{SHARED_BUCKET, shared};
use support::redis::Redis;

/// How long a node may take to come up.
const EVENTUALLY: Duration = Duration::from_secs(30);

/// A node of the cluster on `redis`, with a data directory of its own
/// (fresh: nothing of another node's disk).
async fn node(redis: &Redis, id: &str) -> Onair {
    node_at(redis, id).await.0
}

/// [`node`], and where it keeps recording files on its disk.
async fn node_at(redis: &Redis, id: &str) -> (Onair, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let files = data.path().join("recordings");
    let mut command = binary::cluster_command(data.path(), &redis.url(), id, id, 2).await;
    let onair = Onair::spawn(&mut command).owning(data);
    onair.server.readyz(200, EVENTUALLY).await;
    (onair, files)
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

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

/// The recorder's REST hand-in (`POST /v1/rooms/{room}/recordings`).
async fn hand_in(server: &Server, room: &str, id: &str, bytes: Vec<u8>) -> Value {
    let form = Form::new().text("recording_id", id.to_owned()).part(
        "file",
        Part::bytes(bytes)
            .file_name("standup.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let response = http()
        .post(server.url(&format!("/v1/rooms/{room}/recordings")))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
}

async fn listed(server: &Server) -> Vec<String> {
    let list: Value = get(server, "/v1/recordings").await.json().await.unwrap();
    list["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The media as `server` serves it.
async fn media(server: &Server, id: &str) -> Vec<u8> {
    let response = get(server, &format!("/v1/recordings/{id}/media")).await;
    assert_eq!(response.status(), 200, "{id}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_handed_in_on_one_node_is_everyone_s() {
    let redis = Redis::start();
    let (a, b) = tokio::join!(node(&redis, "node-a"), node(&redis, "node-b"));
    let bytes = content(300_000);
    let handed = hand_in(&a.server, "standup", "rec-shared", bytes.clone()).await;

    // Listed and shown by the other node, as the first one answered.
    assert_eq!(listed(&b.server).await, ["rec-shared"]);
    let shown: Value = get(&b.server, "/v1/recordings/rec-shared")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown, handed);
    let room: Value = get(&b.server, "/v1/recordings?room=standup")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(room["recordings"][0]["id"], "rec-shared");
    // Its file, from the shared bucket: put there before it was catalogued.
    assert_eq!(media(&b.server, "rec-shared").await, bytes);
    let moto = shared().await;
    let in_bucket = || async {
        moto.keys(SHARED_BUCKET)
            .await
            .iter()
            .any(|k| k.starts_with("node-a/") && k.contains("rec-shared"))
    };
    assert!(in_bucket().await, "node A moved the file to the bucket");

    // A legal hold set on B holds on A.
    let held = http()
        .patch(b.server.url("/v1/recordings/rec-shared"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"keep_until": "2099-01-31T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let on_a: Value = get(&a.server, "/v1/recordings/rec-shared")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(on_a["keep_until"], "2099-01-31T00:00:00.000Z");

    // A DELETE on B removes it for A, object included.
    let deleted = http()
        .delete(b.server.url("/v1/recordings/rec-shared"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        get(&a.server, "/v1/recordings/rec-shared").await.status(),
        404
    );
    assert!(listed(&a.server).await.is_empty());
    assert!(!in_bucket().await, "the object went with the recording");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaced_by_a_fresh_one_serves_the_catalog() {
    let redis = Redis::start();
    let (old, files) = node_at(&redis, "node-old").await;
    let bytes = content(120_000);
    hand_in(&old.server, "standup", "rec-kept", bytes.clone()).await;
    // In the bucket before it was catalogued, and no longer on the node's
    // disk: the node can go at once.
    assert!(local_files(&files).is_empty(), "{:?}", local_files(&files));
    let shown: Value = get(&old.server, "/v1/recordings/rec-kept")
        .await
        .json()
        .await
        .unwrap();
    old.kill9();

    // A new node, empty data directory and store.
    let new = node(&redis, "node-new").await;
    assert_eq!(listed(&new.server).await, ["rec-kept"]);
    let again: Value = get(&new.server, "/v1/recordings/rec-kept")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again, shown);
    assert_eq!(media(&new.server, "rec-kept").await, bytes);
}

#[test]
fn a_cluster_without_the_shared_bucket_refuses_to_start() {
    let redis = Redis::start();
    let data = tempfile::tempdir().unwrap();
    let output = binary::hermetic_command(data.path())
        .env("ONAIR_CLUSTER__REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cluster.redis_url") && stderr.contains("storage.s3_bucket"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_catalog_answers_503_and_hands_nothing_in() {
    let mut redis = Redis::start();
    let (a, files) = node_at(&redis, "node-a").await;
    redis.kill();
    a.server.readyz(503, EVENTUALLY).await;
    for path in ["/v1/recordings", "/v1/recordings/rec-1"] {
        let response = get(&a.server, path).await;
        assert_eq!(response.status(), 503, "{path}");
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "cluster_unavailable", "{path}");
    }
    let form = Form::new().text("recording_id", "rec-1").part(
        "file",
        Part::bytes(content(1_000))
            .file_name("standup.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let handed = http()
        .post(a.server.url("/v1/rooms/standup/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 503);
    // Not catalogued, not kept: the recorder hands it in again.
    assert!(local_files(&files).is_empty(), "{:?}", local_files(&files));
}
