//! Crash safety with the real binary: `kill -9` onair at awkward moments and
//! start it again on the same data directory (issue 4, "Crash safety").
//!
//! - a webhook accepted just before the crash still causes its outbound
//!   delivery, exactly once, with the same `webhook-id`;
//! - a LiveKit recording that was running comes back with its id, and
//!   LiveKit's `egress_ended` after the restart still catalogues the file and
//!   announces it to the room and to the application;
//! - a duplicate of every inbound webhook type, sent after a restart,
//!   changes nothing (LiveKit event ids, the manual recorder's REST report,
//!   8x8 JaaS `idempotencyKey`s);
//! - a Temasys-style notification POST owed when a recording became
//!   available is delivered once, across two crashes (receiver down, then
//!   failing), and never again.
//!
//! Only loopback; every wait is bounded; nothing asserts on speed. Needs
//! `python3` with `standardwebhooks` (the outbound receiver) and Node.js with
//! `tests/livekit/`'s packages (the fake LiveKit), like the tests they come from.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use onair::protocol::Role;
use serde_json::{Value, json};
use support::binary::Onair;
use support::fake_livekit::FakeLivekit;
use support::harness::{ADMIN_KEY, Client, http};
use tokio::sync::mpsc;

/// The outbound endpoint's Standard Webhooks secret.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const LK_KEY: &str = "APIonairCrash";
const LK_SECRET: &str = "onair-livekit-crash-secret-0123456789";
const JAAS_SECRET: &str = "whsec_0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const JAAS_APP_ID: &str = "vpaas-magic-cookie-0123456789abcdef0123456789abcdef";
const ROOM: &str = "standup";
/// How long to listen for something that must not come.
const QUIET: Duration = Duration::from_millis(1500);
/// The bound on any background effect (a delivery, a retry).
const EVENTUALLY: Duration = Duration::from_secs(20);

// --- onair, the real binary ---------------------------------------------------

/// The catalog of a room, as the application reads it.
async fn recordings(onair: &Onair, room: &str) -> Vec<Value> {
    let list: Value = http()
        .get(onair.url(&format!("/v1/recordings?room={room}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["recordings"].as_array().unwrap().clone()
}

/// A loopback port nobody listens on (yet).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The `[webhooks]` section with one endpoint; retries come quickly.
fn webhooks_toml(url: &str) -> String {
    format!(
        "[webhooks]\nretry_base_ms = 200\n\n[[webhooks.endpoints]]\nurl = \"{url}\"\nsecret = \"{WHSEC}\"\n"
    )
}

// --- the application's webhook receiver (official `standardwebhooks`) --------

/// `tests/webhooks/receiver.py`: verifies with the official library, one JSON
/// line per request.
struct Receiver {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
}

impl Receiver {
    fn start(port: u16) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(WHSEC)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(
            first.trim().parse::<u16>().ok(),
            Some(port),
            "the receiver did not start (is `standardwebhooks` installed?): {first:?}"
        );
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, lines }
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(EVENTUALLY, self.lines.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("the receiver runs")
    }

    /// The next delivery of `event_type`, skipping others; all must verify.
    async fn next_of(&mut self, event_type: &str) -> Value {
        loop {
            let line = self.next().await;
            assert_eq!(line["verified"], true, "{line}");
            if line["event"]["type"] == event_type {
                return line;
            }
        }
    }

    /// Nothing more arrives within `wait`.
    async fn silence(&mut self, wait: Duration) {
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

/// An endpoint that is up but failing: answers 503 to everything and reports
/// each request's `webhook-id` and event type.
async fn failing_endpoint(port: u16) -> (mpsc::UnboundedReceiver<(String, String)>, FailingStop) {
    use axum::http::{HeaderMap, StatusCode};
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
        let tx = tx.clone();
        async move {
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let kind = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let _ = tx.send((id, kind));
            StatusCode::SERVICE_UNAVAILABLE
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (rx, FailingStop { stop, task })
}

/// Stops [`failing_endpoint`] and frees its port.
struct FailingStop {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FailingStop {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(EVENTUALLY, self.task)
            .await
            .expect("the failing endpoint stops in time")
            .unwrap();
    }
}

/// An owner's notification `url`: answers every POST with `status` and
/// reports its JSON body.
async fn notification_endpoint(
    port: u16,
    status: u16,
) -> (mpsc::UnboundedReceiver<Value>, FailingStop) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |body: String| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(serde_json::from_str::<Value>(&body).unwrap_or(Value::Null));
            axum::http::StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (rx, FailingStop { stop, task })
}

// --- the fake LiveKit (tests/livekit/fake-livekit.mjs) ------------------------

impl FakeLivekit {
    async fn start() -> Self {
        Self::with_keys(LK_KEY, LK_SECRET).await
    }

    /// Points the fake's webhooks at (this incarnation of) onair.
    async fn send_webhooks_to(&self, onair: &Onair) {
        self.post(
            "config",
            json!({"webhookUrl": onair.url("/webhooks/livekit"), "auto": true}),
        )
        .await;
    }

    /// Waits until the fake has delivered `count` webhooks; returns them.
    async fn deliveries(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        loop {
            let all = self.get("deliveries").await.as_array().unwrap().clone();
            if all.len() >= count {
                return all;
            }
            assert!(tokio::time::Instant::now() < deadline, "{all:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Replays a delivery the fake made: the same token and the same body.
async fn replay(onair: &Onair, delivery: &Value) -> (u16, Value) {
    let response = http()
        .post(onair.url("/webhooks/livekit"))
        .header("content-type", "application/webhook+json")
        .header("authorization", delivery["token"].as_str().unwrap())
        .body(delivery["requestBody"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    )
}

// --- small helpers ----------------------------------------------------------

async fn expect_status(client: &mut Client, status: &str, id: &str) -> Value {
    let payload = client.expect("recording", "status").await;
    assert_eq!(payload["status"], status, "{payload}");
    assert_eq!(payload["recording_id"], id, "{payload}");
    payload
}

/// Posts the manual recorder's report.
async fn report(onair: &Onair, room: &str, body: &Value) -> (u16, Value) {
    let response = http()
        .post(onair.url(&format!("/v1/rooms/{room}/recording/status")))
        .bearer_auth(ADMIN_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

// --- the tests ----------------------------------------------------------------

#[tokio::test]
async fn a_delivery_accepted_before_a_crash_is_made_once_with_the_same_id() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[recording]\nmanual_confirm = true\n\n{}",
        webhooks_toml(&format!("http://127.0.0.1:{port}/ok"))
    );

    // The endpoint is down. The recorder confirms a start: the webhook is
    // accepted, and onair is killed right after answering it.
    let onair = Onair::spawn_with_config(data.path(), &config);
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = report(
        &onair,
        ROOM,
        &json!({"status": "recording", "recording_id": id}),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("recording")));
    onair.kill9();

    // Back up, the endpoint is up but failing: the delivery is attempted,
    // and onair is killed again.
    let (mut attempts, failing) = failing_endpoint(port).await;
    let onair = Onair::spawn_with_config(data.path(), &config);
    let (message_id, kind) = tokio::time::timeout(EVENTUALLY, attempts.recv())
        .await
        .expect("the delivery is attempted after the restart")
        .unwrap();
    assert_eq!(kind, "recording.started");
    assert!(message_id.starts_with("msg_"), "{message_id}");
    onair.kill9();
    failing.stop().await;

    // Back up with the endpoint working: delivered once, with the same id.
    let mut receiver = Receiver::start(port);
    let onair = Onair::spawn_with_config(data.path(), &config);
    let line = receiver.next().await;
    assert_eq!(line["verified"], true, "{line}");
    assert_eq!(line["status"], 204, "{line}");
    assert_eq!(line["webhook_id"], message_id.as_str());
    assert_eq!(line["event"]["type"], "recording.started");
    assert_eq!(line["event"]["data"]["recording_id"], id.as_str());
    receiver.silence(QUIET).await;

    // The room's state came back too.
    let (_ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
}

#[tokio::test]
async fn a_livekit_recording_survives_a_crash_and_its_end_still_lands() {
    let data = tempfile::tempdir().unwrap();
    let fake = FakeLivekit::start().await;
    let port = free_port();
    let mut receiver = Receiver::start(port);
    let config = format!(
        "[recording]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"{LK_KEY}\"\napi_secret = \"{LK_SECRET}\"\nfile_path = \"recordings/{{room_name}}-{{time}}.mp4\"\nrequest_timeout_s = 5\n\n{}",
        fake.base,
        webhooks_toml(&format!("http://127.0.0.1:{port}/ok"))
    );
    fake.post(
        "rooms",
        json!({"name": ROOM, "metadata": r#"{"createdBy":"onair-test"}"#}),
    )
    .await;

    // A recording runs: LiveKit's egress is ACTIVE.
    let onair = Onair::spawn_with_config(data.path(), &config);
    fake.send_webhooks_to(&onair).await;
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ada.expect("recording", "started").await["recording_id"], id);
    expect_status(&mut ada, "recording", &id).await;
    let started = fake.deliveries(2).await;
    assert_eq!(
        started.iter().map(|d| &d["body"]).collect::<Vec<_>>(),
        [&json!({"result": "applied"}), &json!({"result": "applied"})]
    );
    let egress_id = fake.get("egresses").await[0]["egress_id"].clone();
    assert_eq!(
        receiver.next_of("recording.started").await["event"]["data"]["recording_id"],
        id.as_str()
    );
    onair.kill9();

    // After the restart a rejoining client sees the recording, same id.
    let onair = Onair::spawn_with_config(data.path(), &config);
    fake.send_webhooks_to(&onair).await;
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    // A replay of an event from before the crash is known as such.
    let (status, body) = replay(&onair, &started[1]).await;
    assert_eq!((status, body), (200, json!({"result": "duplicate"})));
    // An older event under a new id is stale: the order survived too.
    let old_at = started[1]["requestBody"].as_str().unwrap();
    let old_at: Value = serde_json::from_str(old_at).unwrap();
    let old_at = old_at["egressInfo"]["updatedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale = fake
        .webhook(json!({
            "event": "egress_updated", "egressId": egress_id, "status": "EGRESS_STARTING",
            "updatedAt": (old_at.parse::<i64>().unwrap() - 1).to_string(), "noStore": true,
        }))
        .await;
    assert_eq!(stale["body"], json!({"result": "stale"}));
    ada.expect_silence(Duration::from_millis(300)).await;

    // LiveKit ends the egress (its room closed): the end lands.
    let ended = fake
        .webhook(json!({
            "event": "egress_ended", "egressId": egress_id, "status": "EGRESS_COMPLETE", "withFile": true,
        }))
        .await;
    assert_eq!(ended["body"], json!({"result": "applied"}), "{ended}");
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    expect_status(&mut ada, "inactive", &id).await;
    let available = ada.expect("recording", "recording_available").await;
    assert_eq!(available["recording_id"], id.as_str());
    assert_eq!(available["size_bytes"], 1_048_576);
    let catalog = recordings(&onair, ROOM).await;
    assert_eq!(catalog.len(), 1, "{catalog:#?}");
    assert_eq!(catalog[0]["id"], id.as_str());
    let webhook = receiver.next_of("recording.available").await;
    assert_eq!(webhook["event"]["data"]["recording_id"], id.as_str());

    // Crash again; the same end (replayed, or resent under a new id) changes nothing.
    drop(ada);
    onair.kill9();
    let onair = Onair::spawn_with_config(data.path(), &config);
    fake.send_webhooks_to(&onair).await;
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(success["recording"], Value::Null, "inactive: {success}");
    let (status, body) = replay(&onair, &ended).await;
    assert_eq!((status, body), (200, json!({"result": "duplicate"})));
    let again = fake
        .webhook(json!({
            "event": "egress_ended", "egressId": egress_id, "status": "EGRESS_COMPLETE", "withFile": true,
        }))
        .await;
    assert_eq!(again["body"], json!({"result": "stale"}), "{again}");
    ada.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(recordings(&onair, ROOM).await.len(), 1);
    // No second `recording.available` reaches the application. (The first
    // may be redelivered if the crash came between the receiver's answer and
    // onair noting it: Standard Webhooks is at-least-once, and the
    // redelivery carries the same `webhook-id`, by which receivers dedupe.)
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, receiver.lines.recv()).await {
        if line["event"]["type"] == "recording.available" {
            assert_eq!(line["webhook_id"], webhook["webhook_id"], "{line}");
        }
    }
}

#[tokio::test]
async fn a_manual_report_sent_again_after_a_crash_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut receiver = Receiver::start(port);
    let config = format!(
        "[recording]\nmanual_confirm = true\n\n{}",
        webhooks_toml(&format!("http://127.0.0.1:{port}/ok"))
    );
    let onair = Onair::spawn_with_config(data.path(), &config);
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = json!({"status": "recording", "recording_id": id});
    assert_eq!(report(&onair, ROOM, &confirm).await.0, 200);
    assert_eq!(ada.expect("recording", "started").await["recording_id"], id);
    expect_status(&mut ada, "recording", &id).await;
    // Sent twice before the crash: nothing new.
    assert_eq!(report(&onair, ROOM, &confirm).await.0, 200);
    ada.expect_silence(Duration::from_millis(300)).await;
    let first = receiver.next_of("recording.started").await;
    onair.kill9();

    let onair = Onair::spawn_with_config(data.path(), &config);
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    // And again after it.
    let (status, body) = report(&onair, ROOM, &confirm).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("recording")));
    ada.expect_silence(Duration::from_millis(300)).await;
    // The application heard of the start once.
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, receiver.lines.recv()).await {
        assert!(
            line["event"]["type"] != "recording.started"
                || line["webhook_id"] == first["webhook_id"],
            "a second recording.started: {line}"
        );
    }
}

/// `X-Jaas-Signature` as 8x8 documents it (see `tests/jaas.rs`).
fn jaas_sign(t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(JAAS_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("t={t},v1={signature}")
}

/// Posts a JaaS event signed now; returns (status, `result`).
async fn jaas_post(onair: &Onair, event: &Value) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let response = http()
        .post(onair.url("/webhooks/jaas"))
        .header("content-type", "application/json")
        .header("X-Jaas-Signature", jaas_sign(now.as_secs(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["result"].clone())
}

#[tokio::test]
async fn a_jaas_event_redelivered_after_a_crash_is_a_duplicate() {
    let data = tempfile::tempdir().unwrap();
    let config =
        format!("[recording]\nbackend = \"jaas\"\n\n[jaas]\nwebhook_secret = \"{JAAS_SECRET}\"\n");
    let session = uuid::Uuid::new_v4().to_string();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let started = json!({
        "idempotencyKey": uuid::Uuid::new_v4().to_string(),
        "customerId": "0123456789abcdef0123456789abcdef",
        "appId": JAAS_APP_ID,
        "eventType": "RECORDING_STARTED",
        "sessionId": session,
        "timestamp": now_ms,
        "fqn": format!("{JAAS_APP_ID}/{ROOM}"),
        "data": {"conference": format!("{ROOM}@conference.{JAAS_APP_ID}.8x8.vc")},
    });

    let onair = Onair::spawn_with_config(data.path(), &config);
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(jaas_post(&onair, &started).await, (200, json!("applied")));
    let id = ada.expect("recording", "started").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id, onair::backends::jaas::recording_id(&session));
    expect_status(&mut ada, "recording", &id).await;
    onair.kill9();

    let onair = Onair::spawn_with_config(data.path(), &config);
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    // 8x8 redelivers with the same idempotencyKey and a fresh signature.
    assert_eq!(jaas_post(&onair, &started).await, (200, json!("duplicate")));
    ada.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_notification_owed_before_a_crash_is_posted_once() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/events");
    // The receiver is on loopback, which owners' URLs may not name by default.
    let config =
        "[notifications]\nretry_base_ms = 200\nattempts = 50\nallow_private_addresses = true\n";

    // Ada (sub `ada`) wants her recordings announced at `url`, which is down.
    let onair = Onair::spawn_with_config(data.path(), config);
    let mut claims = onair.server.claims(ROOM, "Ada", Role::Moderator);
    claims.sub = "ada".into();
    let token = onair.server.mint(&claims);
    let saved = http()
        .post(onair.url("/rest/recording/notifications"))
        .bearer_auth(&token)
        .json(&json!({"notify": true, "url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    // She records; the recorder hands the file in; onair is killed right
    // after answering (the POST was not made: nobody listens).
    let mut ada = Client::connect_query(&onair.server, &token).await;
    ada.join(None).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.until("recording", "started").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    ada.until("recording", "stopped").await;
    let handed = http()
        .post(onair.url(&format!("/v1/rooms/{ROOM}/recordings")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({
            "recording_id": id, "url": "https://cdn.example.org/standup.mp4",
            "name": "standup.mp4", "duration_s": 61.0, "size_bytes": 4096
        }))
        .send()
        .await
        .unwrap();
    assert!(handed.status().is_success(), "{}", handed.status());
    drop(ada);
    onair.kill9();

    // Back up; the receiver is up but failing: the POST is attempted, and
    // onair is killed again.
    let (mut attempts, failing) = notification_endpoint(port, 500).await;
    let onair = Onair::spawn_with_config(data.path(), config);
    let attempt = tokio::time::timeout(EVENTUALLY, attempts.recv())
        .await
        .expect("the POST is attempted after the restart")
        .unwrap();
    assert_eq!(attempt["meetingId"], id.as_str(), "{attempt}");
    onair.kill9();
    failing.stop().await;

    // Back up with the receiver working: the POST arrives once, with the
    // seed's metadata.
    let (mut posts, working) = notification_endpoint(port, 200).await;
    let onair = Onair::spawn_with_config(data.path(), config);
    let post = tokio::time::timeout(EVENTUALLY, posts.recv())
        .await
        .expect("the POST is delivered after the restart")
        .unwrap();
    assert_eq!(post, attempt, "the same metadata");
    assert_eq!(post["apiKey"], "ada");
    assert_eq!(post["roomId"], ROOM);
    assert_eq!(post["retrievalUrl"], "https://cdn.example.org/standup.mp4");
    if let Ok(Some(again)) = tokio::time::timeout(QUIET, posts.recv()).await {
        panic!("a second POST: {again}");
    }
    // And once delivered, a restart does not send it again.
    onair.kill9();
    let _onair = Onair::spawn_with_config(data.path(), config);
    if let Ok(Some(again)) = tokio::time::timeout(QUIET, posts.recv()).await {
        panic!("a POST after the restart: {again}");
    }
    working.stop().await;
}
