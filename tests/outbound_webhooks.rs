//! Outbound webhooks verified by the official Standard Webhooks library
//! (`standardwebhooks` from PyPI, in `tests/webhooks/receiver.py`).
//!
//! Every test runs against both outboxes: a single node's SQLite store, and
//! a cluster node's Redis (a real `redis-server`).

mod support;

use std::time::Duration;

use onair::config::WebhookEndpoint;
use onair::protocol::Role;
use serde_json::json;
use support::harness::{ADMIN_KEY, Server, config, http};
use support::receiver::{Receiver, SECRET};
use support::redis::Redis;

/// Where the outbox rows live.
enum Rows {
    /// The node's SQLite store.
    Sqlite,
    /// A real `redis-server`: the node runs in cluster mode.
    Redis(Redis),
}

impl Rows {
    fn redis() -> Self {
        Self::Redis(Redis::start())
    }

    /// A server on `config`, in cluster mode on this Redis if there is
    /// one; returns once it is ready.
    async fn server(&self, mut config: onair::Config) -> Server {
        if let Self::Redis(redis) = self {
            config.cluster.redis_url = Some(redis.url());
            config.cluster.heartbeat_s = 1;
            config.cluster.node_ttl_s = 3;
        }
        let server = Server::with(config).await;
        server.readyz(200, Duration::from_secs(15)).await;
        server
    }
}

/// Each test, once per outbox (cluster mode needs the multi-threaded runtime).
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::Rows::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$test(super::Rows::redis()).await;
            }
        }
    )*};
}

on_both!(
    every_event_is_delivered_signed,
    failures_are_retried_with_the_same_id,
    the_last_attempt_gives_up,
    gone_disables_the_endpoint,
    a_restart_loses_nothing,
);

fn with_endpoint(url: String) -> onair::Config {
    let mut config = config();
    config.webhooks.endpoints = vec![WebhookEndpoint {
        url,
        secret: SECRET.into(),
        events: vec![],
    }];
    config.webhooks.retry_base_ms = 100;
    config
}

async fn every_event_is_delivered_signed(rows: Rows) {
    let mut receiver = Receiver::start(None);
    let server = rows.server(with_endpoint(receiver.url("/ok"))).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    ada.expect("control", "joined").await;

    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    ada.expect("control", "update").await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    ada.until("recording", "stopped").await;
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"recording_id": "rec-1", "url": "https://cdn.example/rec-1.mp4", "name": "rec-1.mp4", "duration_s": 12.5, "size_bytes": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = http()
        .delete(server.url("/v1/recordings/rec-1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let mut seen = Vec::new();
    for _ in 0..5 {
        let line = receiver.next().await;
        assert_eq!(line["verified"], true, "{line}");
        assert!(line["webhook_id"].as_str().unwrap().starts_with("msg_"));
        seen.push(line["event"].clone());
    }
    let by_type = |t: &str| {
        seen.iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {seen:?}"))
            .clone()
    };
    let consent = by_type("participant.consent_changed");
    assert_eq!(consent["data"]["participant_id"], bob.id);
    assert_eq!(consent["data"]["consent"], true);
    assert_eq!(by_type("recording.started")["data"]["recording_id"], id);
    assert_eq!(by_type("recording.stopped")["data"]["room"], "room");
    let available = by_type("recording.available");
    assert_eq!(available["data"]["recording_id"], "rec-1");
    assert_eq!(available["data"]["size_bytes"], 1000);
    // Without [server] public_url the link is the signed path (see tests/recordings.rs).
    let url = available["data"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("/v1/recordings/rec-1/media?expires="),
        "{url}"
    );
    assert_eq!(
        by_type("recording.deleted")["data"]["recording_id"],
        "rec-1"
    );
    receiver.silence(Duration::from_millis(500)).await;
}

async fn failures_are_retried_with_the_same_id(rows: Rows) {
    let mut receiver = Receiver::start(None);
    let server = rows.server(with_endpoint(receiver.url("/flaky/2"))).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(
        (
            first["status"].as_i64(),
            second["status"].as_i64(),
            third["status"].as_i64()
        ),
        (Some(503), Some(503), Some(204))
    );
    assert_eq!(first["webhook_id"], second["webhook_id"]);
    assert_eq!(second["webhook_id"], third["webhook_id"]);
    assert_eq!(third["event"]["type"], "recording.started");
    receiver.silence(Duration::from_millis(500)).await;
}

async fn the_last_attempt_gives_up(rows: Rows) {
    let mut receiver = Receiver::start(None);
    let mut config = with_endpoint(receiver.url("/flaky/1000"));
    config.webhooks.max_attempts = 3;
    let server = rows.server(config).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    for _ in 0..3 {
        assert_eq!(receiver.next().await["status"], 503);
    }
    receiver.silence(Duration::from_millis(1500)).await;
}

async fn gone_disables_the_endpoint(rows: Rows) {
    let mut receiver = Receiver::start(None);
    let server = rows.server(with_endpoint(receiver.url("/gone"))).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();
    assert_eq!(receiver.next().await["status"], 410);
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    ada.until("recording", "stopped").await;
    receiver.silence(Duration::from_millis(800)).await;
}

async fn a_restart_loses_nothing(rows: Rows) {
    // A port nobody listens on yet: deliveries fail until the receiver starts.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = with_endpoint(format!("http://127.0.0.1:{port}/ok"));
    config.store.path = data.path().join("onair.db");
    config.webhooks.retry_base_ms = 200;
    // No grace period: the room's emptying stops the recording at once.
    config.recording.empty_room_grace_s = 0;

    let server = rows.server(config.clone()).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();
    drop(ada);
    server.stop().await;

    let mut receiver = Receiver::start(Some(port));
    let _server = rows.server(config).await;
    let mut types = Vec::new();
    for _ in 0..2 {
        let line = receiver.next().await;
        assert_eq!(line["verified"], true);
        types.push(line["event"]["type"].as_str().unwrap().to_owned());
        assert_eq!(line["event"]["data"]["recording_id"], id);
    }
    types.sort();
    // The start, and the stop when the room emptied: neither was lost.
    assert_eq!(types, ["recording.started", "recording.stopped"]);
}
