//! The cluster's outbox in Redis, with three real onair processes, a real
//! `redis-server` and a real receiver verifying Standard Webhooks signatures
//! (`tests/webhooks/receiver.py`): each webhook arrives once whichever node
//! caused it, and the webhooks of a node killed with `kill -9` (waiting for
//! a retry, or in the middle of an attempt) are delivered by a survivor.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::binary::{self, Onair};
use support::harness::Client;
use support::receiver::{Receiver, SECRET};
use support::redis::Redis;

/// Starts a node of the cluster on `redis`, sending its webhooks to
/// `endpoint`; returns once it is ready. `timeout_s`: one attempt's bound
/// (the lease of a claim is twice that and 5 s).
async fn node(redis: &Redis, id: &str, endpoint: &str, timeout_s: u64) -> Onair {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("onair.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[recording]
# The rooms of a killed node empty; no stop webhook during the test.
empty_room_grace_s = 600

[webhooks]
retry_base_ms = 200
timeout_s = {timeout_s}

[[webhooks.endpoints]]
url = "{endpoint}"
secret = "{SECRET}"

[notifications]
timeout_s = 1
"#
        ),
    )
    .unwrap();
    let mut command =
        binary::cluster_command(data.path(), &redis.url(), id, "cluster-outbox", 2).await;
    let onair = Onair::spawn(command.arg("--config").arg(&file)).owning(data);
    onair.server.readyz(200, Duration::from_secs(15)).await;
    onair
}

/// Waits until every client saw `recording`/`message`; returns its payload.
async fn all_see(clients: &mut [Client], message: &str) -> Value {
    let mut payload = Value::Null;
    for client in clients.iter_mut() {
        payload = client.until("recording", message).await;
    }
    payload
}

/// Waits until the outbox row at `key` records `attempts` attempts.
async fn attempts_recorded(redis: &Redis, key: &str, attempts: u32) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let recorded: Option<u32> = redis::cmd("HGET")
            .arg(key)
            .arg("attempts")
            .query_async(&mut conn)
            .await
            .unwrap();
        if recorded == Some(attempts) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never recorded {attempts} attempts (last: {recorded:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_arrives_once_whichever_node_caused_it() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(None);
    let url = receiver.url("/ok");
    let nodes = [
        node(&redis, "node-a", &url, 10).await,
        node(&redis, "node-b", &url, 10).await,
        node(&redis, "node-c", &url, 10).await,
    ];
    let mut clients = Vec::new();
    for (node, name) in nodes.iter().zip(["Ada", "Bob", "Cid"]) {
        clients.push(node.server.join("standup", name, Role::Moderator).await.0);
    }

    // A node that writes rows tells the others on `onair:outbox:wake`.
    let mut wakes = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    wakes.subscribe("onair:outbox:wake").await.unwrap();

    // Started through one node and stopped through another, twice.
    let mut expected = Vec::new();
    for (starter, stopper) in [(0, 1), (2, 0)] {
        clients[starter].recording(json!({"action": "start"})).await;
        let id = all_see(&mut clients, "started").await["recording_id"]
            .as_str()
            .unwrap()
            .to_owned();
        clients[stopper]
            .recording(json!({"action": "stop", "recording_id": id}))
            .await;
        all_see(&mut clients, "stopped").await;
        expected.push(("recording.started".to_owned(), id.clone()));
        expected.push(("recording.stopped".to_owned(), id));
    }

    // Each at the receiver once: no webhook-id twice, none missing.
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for _ in 0..expected.len() {
        let line = receiver.next().await;
        assert_eq!(line["verified"], true, "{line}");
        assert_eq!(line["status"], 204, "{line}");
        let event = (
            line["event"]["type"].as_str().unwrap().to_owned(),
            line["event"]["data"]["recording_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let id = line["webhook_id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id, event).is_none(), "delivered twice: {line}");
    }
    receiver.silence(Duration::from_secs(2)).await;
    // Four transitions wrote rows: A's start, B's stop, C's start, A's stop.
    let mut notices = wakes.on_message();
    let mut writers = Vec::new();
    for _ in 0..4 {
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("a wake notice was published")
            .unwrap();
        writers.push(notice.get_payload::<String>().unwrap());
    }
    assert_eq!(writers, ["node-a", "node-b", "node-c", "node-a"]);
    let mut got: Vec<(String, String)> = seen.into_values().collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);

    // A consent change through node B: its webhook is written in the same
    // step as the change, by node B, and arrives once.
    clients[1]
        .recording(json!({"action": "set_consent", "consent": true}))
        .await;
    for other in [0, 2] {
        let update = clients[other].until("control", "update").await;
        assert_eq!(update["recording"]["consents_recording"], true, "{update}");
    }
    let line = receiver.next().await;
    assert_eq!(line["verified"], true, "{line}");
    assert_eq!(
        line["event"]["type"], "participant.consent_changed",
        "{line}"
    );
    assert_eq!(line["event"]["data"]["consent"], true, "{line}");
    assert_eq!(line["event"]["data"]["room"], "standup", "{line}");
    let notice = tokio::time::timeout(Duration::from_secs(5), notices.next())
        .await
        .expect("a wake notice was published")
        .unwrap();
    assert_eq!(notice.get_payload::<String>().unwrap(), "node-b");
    receiver.silence(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_webhook_waiting_for_its_retry_is_delivered_by_a_survivor() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(None);
    // The first attempt is answered 503 with `Retry-After: 3`.
    let url = receiver.url("/busy/1/3");
    let a = node(&redis, "node-a", &url, 10).await;
    let (mut ada, _) = a.server.join("standup", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.until("recording", "started").await["recording_id"].clone();

    // Node A, the only node, wrote the row and made the first attempt.
    let first = receiver.next().await;
    assert_eq!(first["status"], 503, "{first}");
    assert_eq!(first["event"]["type"], "recording.started");
    assert_eq!(first["event"]["data"]["recording_id"], id);
    // Killed once it has recorded the failed attempt (the row waits for its retry).
    attempts_recorded(&redis, "onair:outbox:row:1", 1).await;
    a.kill9();

    // A node that never saw the recording delivers it, once.
    let _b = node(&redis, "node-b", &url, 10).await;
    let second = receiver.next().await;
    assert_eq!(second["verified"], true, "{second}");
    assert_eq!(second["status"], 204, "{second}");
    assert_eq!(second["webhook_id"], first["webhook_id"]);
    receiver.silence(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_claimed_by_a_node_killed_mid_attempt_is_delivered_when_the_claim_ends() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(None);
    // The first attempt is reported at once and answered only after 60 s;
    // an attempt may take 3 s, so a claim lasts 2 × 3 + 5 = 11 s.
    let url = receiver.url("/slow/1/60");
    let a = node(&redis, "node-a", &url, 3).await;
    let (mut ada, _) = a.server.join("standup", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    ada.until("recording", "started").await;

    // Node A, the only node, claimed the row and is in the middle of the attempt.
    let first = receiver.next().await;
    assert_eq!(first["event"]["type"], "recording.started");
    a.kill9();

    // Node B takes the row over once A's claim ends, and delivers it once.
    let _b = node(&redis, "node-b", &url, 3).await;
    let second = receiver.next_within(Duration::from_secs(30)).await;
    assert_eq!(second["verified"], true, "{second}");
    assert_eq!(second["status"], 204, "{second}");
    assert_eq!(second["webhook_id"], first["webhook_id"]);
    receiver.silence(Duration::from_secs(2)).await;
}

/// Writes a held row with the shared layout, as a node's catalog does; its
/// `holder` is `holder`.
async fn write_held_row(redis: &Redis, holder: &str, message_id: &str, endpoint: &str) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let seq: i64 = redis::cmd("INCR")
        .arg("onair:outbox:seq")
        .query_async(&mut conn)
        .await
        .unwrap();
    let payload = json!({
        "type": "recording.available",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "data": {"room": "standup", "recording_id": message_id},
    })
    .to_string();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("onair:outbox:row:{seq}"))
        .arg(&[
            ("kind", "webhook"),
            ("message_id", message_id),
            ("endpoint", endpoint),
            ("event_type", "recording.available"),
            ("payload", &payload),
            ("attempts", "0"),
            ("state", "held"),
            ("created_ms", &now_ms.to_string()),
            ("holder", holder),
        ])
        .ignore()
        .cmd("SADD")
        .arg("onair:outbox:held")
        .arg(seq)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_rows_of_a_node_whose_heartbeat_is_gone_are_let_go() {
    let redis = Redis::start();
    let mut receiver = Receiver::start(None);
    let url = receiver.url("/ok");
    // Node X has no heartbeat (it died); node Y's is there (alive, still holding).
    write_held_row(&redis, "node-x", "msg_of_a_dead_node", &url).await;
    write_held_row(&redis, "node-y", "msg_of_a_live_node", &url).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("onair:node:node-y")
        .arg(1)
        .arg("EX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();

    let _a = node(&redis, "node-a", &url, 10).await;
    let line = receiver.next().await;
    assert_eq!(line["verified"], true, "{line}");
    assert_eq!(line["webhook_id"], "msg_of_a_dead_node");
    assert_eq!(line["event"]["type"], "recording.available");
    // The live node's row stays held until it lets it go.
    receiver.silence(Duration::from_secs(2)).await;
}
