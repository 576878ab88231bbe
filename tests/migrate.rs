//! `onair migrate-to-redis`, from one node to a cluster: a real single node
//! (SQLite) with recordings (one with its owner and start noted), a legal
//! hold, notification settings and webhooks it could not deliver yet, stopped; the command run twice
//! against a real `redis-server` and a real S3 API (moto); then two cluster
//! nodes with empty disks serve what the single node had, and each webhook
//! arrives once at a real receiver that verifies Standard Webhooks
//! signatures. And its refusals.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use onair::protocol::Role;
use onair::store::{DeliveryKind, NewDelivery, Store};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::binary::{self, Onair};
use support::harness::{ADMIN_KEY, Server, http};
use support::moto::shared_storage_env;
use support::receiver::{Receiver, SECRET};
use support::redis::Redis;

/// How long a node may take to come up.
const EVENTUALLY: Duration = Duration::from_secs(30);
/// The notification settings' path (the admin key names the owner).
const SETTINGS: &str = "/rest/recording/notifications?username=bob";

/// A config file in `dir` whose webhooks of `recording.available` go to `endpoint`.
fn config_file(dir: &Path, endpoint: &str) -> std::path::PathBuf {
    let file = dir.join("onair.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[webhooks]
retry_base_ms = 200

[[webhooks.endpoints]]
url = "{endpoint}"
secret = "{SECRET}"
events = ["recording.available"]
"#
        ),
    )
    .unwrap();
    file
}

/// A node of the cluster on `redis` and the shared bucket, with an empty
/// data directory of its own.
async fn cluster_node(redis: &Redis, id: &str, endpoint: &str) -> Onair {
    let data = tempfile::tempdir().unwrap();
    let config = config_file(data.path(), endpoint);
    let mut command = binary::cluster_command(data.path(), &redis.url(), id, "migrated", 2).await;
    let onair = Onair::spawn(command.arg("--config").arg(config)).owning(data);
    onair.server.readyz(200, EVENTUALLY).await;
    onair
}

/// `onair migrate-to-redis` for the single node whose data is in `single`.
async fn migrate(single: &Path, redis: &Redis) -> Output {
    let mut command = binary::without_host_env();
    command
        .arg("migrate-to-redis")
        .env("ONAIR_STORE__PATH", single.join("onair.db"))
        .env("ONAIR_STORAGE__PATH", single.join("recordings"))
        .env("ONAIR_CLUSTER__REDIS_URL", redis.url())
        .envs(shared_storage_env("migrated").await);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The line of `stdout` about `kind`.
fn report<'a>(stdout: &'a str, kind: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{kind}: ")))
        .unwrap_or_else(|| panic!("no line about {kind} in:\n{stdout}"))
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 17 % 251) as u8).collect()
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
}

async fn json_of(server: &Server, path: &str) -> Value {
    let response = get(server, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// What a server lists: ids, sorted.
async fn listed(server: &Server) -> BTreeSet<String> {
    json_of(server, "/v1/recordings").await["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the single node's SQLite records the failed first attempt
/// of `count` webhooks (the receiver reports a request before it answers).
async fn attempts_recorded(db: &Path, count: i64) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let conn = rusqlite::Connection::open(db).unwrap();
        let recorded: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND attempts = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if recorded == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the single node never recorded {count} failed attempts (last: {recorded})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_becomes_a_cluster_with_nothing_lost_or_doubled() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(None);
    // 503 with Retry-After: 600 s to each webhook's first request, 204 after.
    let endpoint = receiver.url("/busy/1/600");

    // The single node: one recording handed in as a file, one as a URL, a
    // legal hold, an owner's notification settings.
    let single = tempfile::tempdir().unwrap();
    let config = config_file(single.path(), &endpoint);
    let mut node = Onair::spawn(binary::command(single.path()).arg("--config").arg(config));
    let bytes = content(200_000);
    let form = Form::new().text("recording_id", "rec-local").part(
        "file",
        Part::bytes(bytes.clone())
            .file_name("standup.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let handed = http()
        .post(node.url("/v1/rooms/standup/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 201);
    // The other one was started (with its owner named) while Ada was in
    // the room, so onair noted its start and owner, then stopped.
    let (mut ada, _) = node.server.join("standup", "Ada", Role::User).await;
    let started = http()
        .post(node.url("/v1/rooms/standup/recording"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"owner": "grace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let started: Value = started.json().await.unwrap();
    let external = started["recording_id"].as_str().unwrap().to_owned();
    ada.until("recording", "started").await;
    let stopped = http()
        .delete(node.url("/v1/rooms/standup/recording"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(stopped.status().is_success(), "{}", stopped.status());
    let handed = http()
        .post(node.url("/v1/rooms/standup/recordings"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({
            "recording_id": external,
            "url": "https://files.example/rec-external.mp4",
            "name": "rec-external.mp4",
            "duration_s": 12.5,
            "size_bytes": 4321
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 201);
    let held = http()
        .patch(node.url("/v1/recordings/rec-local"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"keep_until": "2099-01-31T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    let saved = http()
        .post(node.url(SETTINGS))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"notify": true, "url": "https://hooks.example/bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let shown = [
        json_of(&node.server, "/v1/recordings/rec-local").await,
        json_of(&node.server, &format!("/v1/recordings/{external}")).await,
    ];
    assert_eq!(shown[0]["keep_until"], "2099-01-31T00:00:00.000Z");
    assert_eq!(shown[1]["owner"], "grace");
    let settings = json_of(&node.server, SETTINGS).await;

    // Its two webhooks were tried once and not delivered.
    let mut webhook_ids = BTreeSet::new();
    for _ in 0..2 {
        let line = receiver.next().await;
        assert_eq!(line["verified"], true, "{line}");
        assert_eq!(line["status"], 503, "{line}");
        assert_eq!(line["event"]["type"], "recording.available", "{line}");
        webhook_ids.insert(line["webhook_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(webhook_ids.len(), 2);
    attempts_recorded(&single.path().join("onair.db"), 2).await;
    node.terminate_within(Duration::from_secs(15));

    // Copied once...
    let first = migrate(single.path(), &redis).await;
    let stdout = String::from_utf8(first.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        report(&stdout, "recordings"),
        "recordings: 2 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "recording facts"),
        "recording facts: 1 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "owners"),
        "owners: 1 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "notification settings"),
        "notification settings: 1 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "outbox rows"),
        "outbox rows: 2 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "total"),
        "total: 7 copied, 0 already there, 0 failed"
    );
    // ...and the second run finds everything there.
    let second = migrate(single.path(), &redis).await;
    let stdout = String::from_utf8(second.stdout).unwrap();
    assert!(second.status.success(), "{stdout}");
    for kind in [
        "recordings",
        "recording facts",
        "owners",
        "notification settings",
        "JaaS downloads",
        "outbox rows",
    ] {
        assert!(
            report(&stdout, kind).contains(": 0 copied, "),
            "{kind} again:\n{stdout}"
        );
    }
    assert_eq!(
        report(&stdout, "total"),
        "total: 0 copied, 7 already there, 0 failed"
    );
    // The migration took nothing from the node's disk.
    assert!(single.path().join("onair.db").is_file());

    // Two cluster nodes with empty disks carry on.
    let nodes = [
        cluster_node(&redis, "node-a", &endpoint).await,
        cluster_node(&redis, "node-b", &endpoint).await,
    ];
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for onair in &nodes {
        let server = &onair.server;
        assert_eq!(
            listed(server).await,
            BTreeSet::from([external.clone(), "rec-local".to_owned()])
        );
        // As the single node showed them: the hold included.
        assert_eq!(json_of(server, "/v1/recordings/rec-local").await, shown[0]);
        assert_eq!(
            json_of(server, &format!("/v1/recordings/{external}")).await,
            shown[1]
        );
        // The local file, now from the bucket.
        let media = get(server, "/v1/recordings/rec-local/media").await;
        assert_eq!(media.status(), 200);
        assert_eq!(media.bytes().await.unwrap().to_vec(), bytes);
        // The external one, where it always was.
        let media = no_redirects
            .get(server.url(&format!("/v1/recordings/{external}/media")))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(media.status(), 307);
        assert_eq!(
            media.headers()["location"],
            "https://files.example/rec-external.mp4"
        );
        assert_eq!(json_of(server, SETTINGS).await, settings);
    }

    // Each webhook arrives once more, now answered 2xx, and never again.
    let mut delivered = BTreeSet::new();
    for _ in 0..2 {
        let line = receiver.next().await;
        assert_eq!(line["verified"], true, "{line}");
        assert_eq!(line["status"], 204, "{line}");
        assert!(
            delivered.insert(line["webhook_id"].as_str().unwrap().to_owned()),
            "twice: {line}"
        );
    }
    assert_eq!(delivered, webhook_ids);
    receiver.silence(Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_copied_is_reported_and_the_rest_is_copied() {
    let redis = Redis::start();
    let single = tempfile::tempdir().unwrap();
    let mut node = Onair::spawn(&mut binary::command(single.path()));
    let form = Form::new().text("recording_id", "rec-gone").part(
        "file",
        Part::bytes(content(1_000))
            .file_name("gone.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let handed = http()
        .post(node.url("/v1/rooms/standup/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 201);
    let handed = http()
        .post(node.url("/v1/rooms/standup/recordings"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"recording_id": "rec-there", "url": "https://files.example/there.mp4", "name": "there.mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 201);
    node.terminate_within(Duration::from_secs(15));
    // The node's recordings directory is lost before the migration.
    std::fs::remove_dir_all(single.path().join("recordings")).unwrap();

    let output = migrate(single.path(), &redis).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        report(&stdout, "recordings"),
        "recordings: 1 copied, 0 already there, 1 failed"
    );
    assert!(stderr.contains("rec-gone"), "{stderr}");
    assert!(
        stderr.contains("1 of the node's items could not be copied"),
        "{stderr}"
    );
    // What could be copied was: a node of the cluster lists it.
    let onair = cluster_node(&redis, "node-a", "http://127.0.0.1:9/unused").await;
    assert_eq!(
        listed(&onair.server).await,
        BTreeSet::from(["rec-there".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owed_downloads_and_outbox_rows_are_copied_once_even_after_the_cluster_finished_them() {
    let redis = Redis::start();
    let single = tempfile::tempdir().unwrap();
    // A single node's store as it was left: a JaaS download owed, a
    // notification POST held for its upload, a webhook tried once.
    {
        let store = Store::open(&single.path().join("onair.db")).unwrap();
        let job = r#"{"url":"https://files.example/jaas.mp4"}"#;
        assert!(
            store
                .jaas_download_accepted("rec-jaas", job, Some("key-1"), 1_700_000_000_000)
                .unwrap()
        );
        let row = |message_id: &str, kind, held| NewDelivery {
            kind,
            held,
            message_id: message_id.to_owned(),
            endpoint: "https://hooks.example/in".to_owned(),
            event_type: "recording.available".to_owned(),
            payload: "{}".to_owned(),
        };
        store
            .enqueue(&[
                row("msg_held", DeliveryKind::Notification, true),
                row("msg_tried", DeliveryKind::Webhook, false),
            ])
            .unwrap();
        store.failed_attempt(2, "HTTP 503", Some(i64::MAX)).unwrap();
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let output = migrate(single.path(), &redis).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        report(&stdout, "JaaS downloads"),
        "JaaS downloads: 1 copied, 0 already there, 0 failed"
    );
    assert_eq!(
        report(&stdout, "outbox rows"),
        "outbox rows: 2 copied, 0 already there, 0 failed"
    );
    let job: Option<String> = redis::cmd("HGET")
        .arg("onair:jaas:download:jobs")
        .arg("rec-jaas")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        job.as_deref(),
        Some(r#"{"url":"https://files.example/jaas.mp4"}"#)
    );
    // Both rows pending and due (the held one let go), with their ids and attempts.
    let due: Vec<i64> = redis::cmd("ZRANGE")
        .arg("onair:outbox:due")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut rows = Vec::new();
    for seq in &due {
        let row: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("onair:outbox:row:{seq}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        rows.push((
            row["message_id"].clone(),
            row["kind"].clone(),
            row["state"].clone(),
            row["attempts"].clone(),
            row.contains_key("holder"),
        ));
    }
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "msg_held".into(),
                "notification".into(),
                "pending".into(),
                "0".into(),
                false
            ),
            (
                "msg_tried".into(),
                "webhook".into(),
                "pending".into(),
                "1".into(),
                false
            ),
        ]
    );

    // The cluster finishes both (the download done, the rows delivered and
    // expired); a late run brings neither back.
    let _: () = redis::pipe()
        .cmd("HDEL")
        .arg("onair:jaas:download:jobs")
        .arg("rec-jaas")
        .ignore()
        .cmd("ZREM")
        .arg("onair:jaas:download:order")
        .arg("rec-jaas")
        .ignore()
        .cmd("DEL")
        .arg("onair:outbox:due")
        .ignore()
        .cmd("DEL")
        .arg(format!("onair:outbox:row:{}", due[0]))
        .arg(format!("onair:outbox:row:{}", due[1]))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let output = migrate(single.path(), &redis).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        report(&stdout, "total"),
        "total: 0 copied, 3 already there, 0 failed"
    );
    let jobs: i64 = redis::cmd("HLEN")
        .arg("onair:jaas:download:jobs")
        .query_async(&mut conn)
        .await
        .unwrap();
    let due: i64 = redis::cmd("ZCARD")
        .arg("onair:outbox:due")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((jobs, due), (0, 0));
}

/// Runs `onair migrate-to-redis` with `env` only; returns its stderr after
/// asserting that it failed.
fn refused(env: &[(&str, String)]) -> String {
    let output = binary::without_host_env()
        .arg("migrate-to-redis")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn it_refuses_without_a_redis_a_bucket_or_the_node_s_database_and_stops_without_redis() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("onair.db");
    std::fs::write(&db, b"").unwrap();
    let store = ("ONAIR_STORE__PATH", db.display().to_string());
    let redis = (
        "ONAIR_CLUSTER__REDIS_URL",
        "redis://127.0.0.1:1/".to_owned(),
    );
    let bucket = [
        ("ONAIR_STORAGE__S3_BUCKET", "onair-cluster".to_owned()),
        ("ONAIR_STORAGE__S3_ACCESS_KEY_ID", "testing".to_owned()),
        (
            "ONAIR_STORAGE__S3_SECRET_ACCESS_KEY",
            "testing-secret".to_owned(),
        ),
    ];

    let stderr = refused(std::slice::from_ref(&store));
    assert!(stderr.contains("[cluster] redis_url"), "{stderr}");

    let stderr = refused(&[store.clone(), redis.clone()]);
    assert!(stderr.contains("s3_bucket"), "{stderr}");

    // Everything set, but nothing answers at the Redis URL.
    let mut env = vec![store.clone(), redis.clone()];
    env.extend(bucket.clone());
    let stderr = refused(&env);
    assert!(
        stderr.contains("the cluster's Redis failed")
            && stderr.contains("run onair migrate-to-redis again"),
        "{stderr}"
    );

    let missing = data.path().join("elsewhere").join("onair.db");
    let mut env = vec![("ONAIR_STORE__PATH", missing.display().to_string()), redis];
    env.extend(bucket);
    let stderr = refused(&env);
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("does not exist"),
        "{stderr}"
    );
    // Not created by the attempt.
    assert!(!missing.exists());
}
