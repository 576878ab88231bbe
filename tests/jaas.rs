//! The `jaas` backend end to end: the real server on port 0, real WebSocket
//! clients, 8x8 JaaS webhooks signed as 8x8 documents it, and a file server on
//! loopback standing in for 8x8's recording storage.
//!
//! 8x8 publishes no SDK or sample verifier for `X-Jaas-Signature`, only the
//! algorithm and one worked example; the signer here is written from that
//! page independently of onair and is checked against the example first.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use onair::Config;
use onair::backends::jaas::recording_id;
use onair::config::BackendKind;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::binary::Onair;
use support::harness::{ADMIN_KEY, Client, Server, config, http};

const WEBHOOK_SECRET: &str = "whsec_0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const APP_ID: &str = "vpaas-magic-cookie-0123456789abcdef0123456789abcdef";
const CUSTOMER_ID: &str = "0123456789abcdef0123456789abcdef";
const ROOM: &str = "standup";
/// Long enough to notice a frame that should not come.
const QUIET: Duration = Duration::from_millis(300);
/// How long a background effect (a download, a retry) may take to show.
const EVENTUALLY: Duration = Duration::from_secs(20);

/// `X-Jaas-Signature` for `body` at `t`, as 8x8's "Check the webhook
/// signatures" page describes: base64 HMAC-SHA256 keyed with the endpoint
/// secret (as shown, `whsec_` included) over `t + "." + body`.
fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("t={t},v1={signature}")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A configuration for the jaas backend; `dir` holds the store and storage
/// when the test needs them to outlive one server.
fn jaas_config(dir: Option<&Path>) -> Config {
    let mut config = config();
    config.recording.backend = BackendKind::Jaas;
    config.jaas.webhook_secret = Some(WEBHOOK_SECRET.into());
    if let Some(dir) = dir {
        config.store.path = dir.join("onair.db");
        config.storage.path = dir.join("recordings");
    }
    config
}

/// A JaaS webhook event shaped like 8x8's examples.
fn event(kind: &str, room: &str, session: &str, timestamp: i64, data: Value) -> Value {
    json!({
        "idempotencyKey": key(),
        "customerId": CUSTOMER_ID,
        "appId": APP_ID,
        "eventType": kind,
        "sessionId": session,
        "timestamp": timestamp,
        "fqn": format!("{APP_ID}/{room}"),
        "data": data,
    })
}

fn conference(room: &str) -> Value {
    json!({"conference": format!("{room}@conference.{APP_ID}.8x8.vc")})
}

fn started(room: &str, session: &str, timestamp: i64) -> Value {
    event(
        "RECORDING_STARTED",
        room,
        session,
        timestamp,
        conference(room),
    )
}

fn ended(room: &str, session: &str, timestamp: i64) -> Value {
    event(
        "RECORDING_ENDED",
        room,
        session,
        timestamp,
        conference(room),
    )
}

fn uploaded(room: &str, session: &str, link: &str) -> Value {
    let end = now_ms();
    event(
        "RECORDING_UPLOADED",
        room,
        session,
        end + 30_000,
        json!({
            "participants": [
                {"name": "Ada Lovelace", "avatar": "https://link.to/ada.png", "id": "user-ada"},
                {"name": "Grace Hopper", "avatar": "https://link.to/grace.png", "id": "user-grace"}
            ],
            "preAuthenticatedLink": link,
            "share": true,
            "initiatorId": "user-ada",
            "durationSec": 15,
            "startTimestamp": end - 15_000,
            "endTimestamp": end,
            "recordingSessionId": "rs-1"
        }),
    )
}

/// Posts raw bytes with the given signature header; returns status and JSON body.
async fn post_raw(server: &Server, body: Vec<u8>, signature: Option<String>) -> (u16, Value) {
    let mut request = http()
        .post(server.url("/webhooks/jaas"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-Jaas-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Posts an event signed now with the test secret.
async fn post(server: &Server, event: &Value) -> (u16, Value) {
    let body = event.to_string().into_bytes();
    let signature = sign(WEBHOOK_SECRET, now_s(), &body);
    post_raw(server, body, Some(signature)).await
}

/// Posts an event and asserts the result onair reports.
async fn expect_result(server: &Server, event: &Value, result: &str) {
    let (status, body) = post(server, event).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some(result)),
        "{body}"
    );
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_get(server: &Server, path: &str) -> reqwest::Response {
    http()
        .get(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
}

/// Files under `dir`, recursively (empty directories do not count).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Stands in for 8x8's recording storage: serves one file under any
/// `/o/…` path, optionally failing with 503 first.
struct FileServer {
    base: String,
    state: Arc<Files>,
}

struct Files {
    body: Vec<u8>,
    /// Requests to fail with 503 before serving.
    failures_left: AtomicUsize,
    /// Fail every request with 503 while set.
    always_fail: AtomicBool,
    /// Requests seen.
    requests: AtomicUsize,
}

impl FileServer {
    async fn start(body: Vec<u8>, failures: usize) -> Self {
        let state = Arc::new(Files {
            body,
            failures_left: AtomicUsize::new(failures),
            always_fail: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route("/o/{*path}", axum::routing::get(serve_file))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base, state }
    }

    /// A pre-authenticated-looking link to the file.
    fn link(&self, name: &str) -> String {
        format!("{}/o/{APP_ID}/{name}?sig=pre-authenticated", self.base)
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn fail_always(&self, fail: bool) {
        self.state.always_fail.store(fail, Ordering::SeqCst);
    }
}

async fn serve_file(State(files): State<Arc<Files>>) -> Response {
    files.requests.fetch_add(1, Ordering::SeqCst);
    let fail = files.always_fail.load(Ordering::SeqCst)
        || files
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if fail {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
    }
    ([(header::CONTENT_TYPE, "video/mp4")], files.body.clone()).into_response()
}

/// Bytes that are not all alike, large enough to arrive in several chunks.
fn recording_bytes() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn the_signer_reproduces_8x8s_published_example() {
    let body = r#"{"eventType":"PARTICIPANT_JOINED","sessionId":"9a441d60-ceaf-4eba-b0a8-a7d940a76e1b","timestamp":1632490058278,"fqn":"vpaas-magic-cookie-96f0941768964ab380ed0fbada7a502f/sampleappromanticshiftsstripas","idempotencyKey":"9e9e7420-562d-4659-8e22-44b9b22aaa49","customerId":"96f0941768964ab380ed0fbada7a502f","appId":"vpaas-magic-cookie-96f0941768964ab380ed0fbada7a502f","data":{"avatar":"","name":"Test User","id":"auth0|5f903d7a77f3b4006eb8e67d","participantJid":"fc1ea14a-9bca-4218-a563-8c627e803d56@8x8.vc","moderator":true,"email":"test.user@company.com"}}"#;
    assert_eq!(
        sign(
            "whsec_9635df66714a4cf088ee9d0979dd3bf6",
            1632490060,
            body.as_bytes()
        ),
        "t=1632490060,v1=xlzqEojlh4qb21sQpXYsWgyK8x9HVpz+RQldsv18rV0="
    );
}

#[tokio::test]
async fn socket_commands_are_not_supported() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let error = ada.expect("recording", "error").await;
    assert_eq!(error["error"], "not_supported", "{error}");
    ada.recording(
        json!({"action": "stop", "recording_id": "c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57"}),
    )
    .await;
    let error = ada.expect("recording", "error").await;
    assert_eq!(error["error"], "not_supported", "{error}");
    ada.expect_silence(QUIET).await;
}

#[tokio::test]
async fn started_and_ended_fan_out_to_the_room() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let (mut grace, _) = server.join(ROOM, "Grace", Role::User).await;
    ada.expect("control", "joined").await;
    let session = key();
    let id = recording_id(&session);
    let t0 = now_ms();

    expect_result(&server, &started(ROOM, &session, t0), "applied").await;
    for client in [&mut ada, &mut grace] {
        let started = client.expect("recording", "started").await;
        assert_eq!(started["recording_id"], id.as_str());
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "recording");
        assert_eq!(status["recording_id"], id.as_str());
        assert_eq!(status["provider"], "jaas");
    }

    let (mut linus, success) = server.join(ROOM, "Linus", Role::Guest).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );

    expect_result(&server, &ended(ROOM, &session, t0 + 14_000), "applied").await;
    for client in [&mut ada, &mut grace, &mut linus] {
        let stopped = client.until("recording", "stopped").await;
        assert_eq!(stopped["recording_id"], id.as_str());
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "inactive");
    }
    let room = admin_get(&server, &format!("/v1/rooms/{ROOM}"))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(room["recording"]["status"], "inactive", "{room}");
}

#[tokio::test]
async fn an_uploaded_recording_is_downloaded_with_retries_and_served() {
    let bytes = recording_bytes();
    // The storage fails the first request, as it may right after an upload.
    let files = FileServer::start(bytes.clone(), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(jaas_config(Some(dir.path()))).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let id = recording_id(&session);
    let t0 = now_ms();
    expect_result(&server, &started(ROOM, &session, t0), "applied").await;
    ada.expect("recording", "started").await;
    ada.expect("recording", "status").await;
    expect_result(&server, &ended(ROOM, &session, t0 + 15_000), "applied").await;
    ada.expect("recording", "stopped").await;
    ada.expect("recording", "status").await;

    let name = "standup_2025-06-03-14-05-02.mp4";
    // Answered before the download, which runs in the background.
    expect_result(
        &server,
        &uploaded(ROOM, &session, &files.link(name)),
        "accepted",
    )
    .await;

    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    let available =
        tokio::time::timeout_at(deadline, ada.until("recording", "recording_available"))
            .await
            .expect("recording_available in time");
    assert_eq!(
        available["recording_id"],
        id.as_str(),
        "the id `started` announced"
    );
    assert_eq!(available["name"], name);
    assert_eq!(available["size_bytes"], bytes.len() as u64);
    assert_eq!(available["duration_s"], 15.0);
    // The announced link is signed: it opens without the admin key.
    let url = available["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("/v1/recordings/{id}/media?expires=")),
        "{url}"
    );
    assert_eq!(files.requests(), 2, "one failure, one retry");

    // The file is in onair's storage, under the room.
    let stored = files_under(&dir.path().join("recordings").join(ROOM));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), bytes);

    let media = http().get(server.url(&url)).send().await.unwrap();
    assert_eq!(media.status(), 200);
    assert_eq!(media.bytes().await.unwrap().to_vec(), bytes);
    let shown: Value = admin_get(&server, &format!("/v1/recordings/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["provider"], "jaas", "{shown}");
    assert_eq!(shown["room"], ROOM, "{shown}");
    ada.expect_silence(QUIET).await;
}

#[tokio::test]
async fn duplicates_are_not_applied_twice_even_after_a_restart() {
    let files = FileServer::start(recording_bytes(), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(jaas_config(Some(dir.path()))).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let t0 = now_ms();

    let start = started(ROOM, &session, t0);
    expect_result(&server, &start, "applied").await;
    ada.expect("recording", "started").await;
    ada.expect("recording", "status").await;
    // 8x8 redelivers with the same idempotencyKey (and a fresh signature).
    expect_result(&server, &start, "duplicate").await;
    ada.expect_silence(QUIET).await;

    let upload = uploaded(ROOM, &session, &files.link("standup.mp4"));
    expect_result(&server, &upload, "accepted").await;
    expect_result(&server, &upload, "duplicate").await;
    ada.until("recording", "recording_available").await;
    ada.expect_silence(QUIET).await;
    assert_eq!(files.requests(), 1);

    drop(ada);
    server.stop().await;
    let server = Server::with(jaas_config(Some(dir.path()))).await;
    expect_result(&server, &start, "duplicate").await;
    expect_result(&server, &upload, "duplicate").await;
    let list: Value = admin_get(&server, &format!("/v1/recordings?room={ROOM}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["recordings"].as_array().unwrap().len(), 1, "{list}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(files.requests(), 1);
}

#[tokio::test]
async fn forged_stale_and_unsigned_webhooks_are_refused() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let start = started(ROOM, &session, now_ms());
    let body = start.to_string().into_bytes();
    let now = now_s();
    let tampered = start.to_string().replace(ROOM, "other").into_bytes();
    let attempts: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        (
            "forged",
            body.clone(),
            Some(sign("whsec_not-the-secret", now, &body)),
        ),
        ("tampered", tampered, Some(sign(WEBHOOK_SECRET, now, &body))),
        (
            "stale",
            body.clone(),
            Some(sign(WEBHOOK_SECRET, now - 301, &body)),
        ),
        (
            "from the future",
            body.clone(),
            Some(sign(WEBHOOK_SECRET, now + 400, &body)),
        ),
        ("missing header", body.clone(), None),
        ("empty header", body.clone(), Some(String::new())),
        (
            "another scheme only",
            body.clone(),
            Some(sign(WEBHOOK_SECRET, now, &body).replace("v1=", "v0=")),
        ),
        (
            "no timestamp",
            body.clone(),
            Some(format!(
                "v1={}",
                sign(WEBHOOK_SECRET, now, &body)
                    .split_once("v1=")
                    .unwrap()
                    .1
            )),
        ),
    ];
    for (what, body, signature) in attempts {
        let (status, answer) = post_raw(&server, body, signature).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(answer["code"], "invalid_signature", "{what}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {answer}"
        );
    }
    ada.expect_silence(QUIET).await;
    let room: Value = admin_get(&server, &format!("/v1/rooms/{ROOM}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(room["recording"]["status"], "inactive", "{room}");

    // Refusals consumed nothing: the same event, signed (among a stale
    // signature, as during a secret rotation), is applied once.
    let good = sign(WEBHOOK_SECRET, now, &body);
    let header = format!("{good},v1=c3RhbGUtc2lnbmF0dXJlLW9mLWFuLW9sZC1zZWNyZXQ=");
    let (status, answer) = post_raw(&server, body, Some(header)).await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    ada.expect("recording", "started").await;
}

#[tokio::test]
async fn unknown_rooms_and_other_events_are_acknowledged_and_ignored() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let t0 = now_ms();

    // Nobody is in this room and it has no recording.
    expect_result(&server, &started("nobody-here", &key(), t0), "ignored").await;
    assert_eq!(
        admin_get(&server, "/v1/rooms/nobody-here").await.status(),
        404
    );
    // An fqn without a room, or with one onair cannot name.
    let mut no_room = started(ROOM, &key(), t0);
    no_room["fqn"] = json!(APP_ID);
    expect_result(&server, &no_room, "ignored").await;
    let mut bad_room = started(ROOM, &key(), t0);
    bad_room["fqn"] = json!(format!("{APP_ID}/not a room"));
    expect_result(&server, &bad_room, "ignored").await;
    // Events onair does not follow.
    let joined = event(
        "PARTICIPANT_JOINED",
        ROOM,
        &key(),
        t0,
        json!({"name": "Test User", "id": "auth0|5f903d7a77f3b4006eb8e67d", "moderator": true}),
    );
    expect_result(&server, &joined, "ignored").await;
    expect_result(
        &server,
        &event("ROOM_CREATED", ROOM, &key(), t0, conference(ROOM)),
        "ignored",
    )
    .await;
    ada.expect_silence(QUIET).await;

    // Signed but not an event; and too large to read.
    let body = b"not json".to_vec();
    let signature = sign(WEBHOOK_SECRET, now_s(), &body);
    let (status, answer) = post_raw(&server, body, Some(signature)).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_body")),
        "{answer}"
    );
    let body = vec![b' '; 300 * 1024];
    let signature = sign(WEBHOOK_SECRET, now_s(), &body);
    let (status, answer) = post_raw(&server, body, Some(signature)).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("body_too_large")),
        "{answer}"
    );
}

#[tokio::test]
async fn the_payload_timestamp_orders_events_not_their_arrival() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let t0 = now_ms();
    // The end overtook the start on its way here.
    expect_result(&server, &ended(ROOM, &session, t0 + 60_000), "applied").await;
    expect_result(&server, &started(ROOM, &session, t0), "stale").await;
    ada.expect_silence(QUIET).await;
    // A later recording in the same meeting session is a new start.
    expect_result(&server, &started(ROOM, &session, t0 + 120_000), "applied").await;
    let started = ada.expect("recording", "started").await;
    assert_eq!(started["recording_id"], recording_id(&session).as_str());
}

#[tokio::test]
async fn a_download_that_fails_every_attempt_is_not_catalogued() {
    let files = FileServer::start(recording_bytes(), 0).await;
    files.fail_always(true);
    let dir = tempfile::tempdir().unwrap();
    let mut config = jaas_config(Some(dir.path()));
    config.jaas.download_attempts = 2;
    let server = Server::with(config).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    expect_result(
        &server,
        &uploaded(ROOM, &session, &files.link("lost.mp4")),
        "accepted",
    )
    .await;

    eventually("both attempts", || async { files.requests() >= 2 }).await;
    // Given up: the journal entry goes, and nothing is left in storage.
    let storage = dir.path().join("recordings");
    eventually("the download is given up", || {
        let storage = storage.clone();
        async move { files_under(&storage).is_empty() }
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(files.requests(), 2, "no attempt beyond download_attempts");
    let id = recording_id(&session);
    assert_eq!(
        admin_get(&server, &format!("/v1/recordings/{id}"))
            .await
            .status(),
        404
    );
    ada.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_pending_download_survives_a_restart() {
    let bytes = recording_bytes();
    let files = FileServer::start(bytes.clone(), 0).await;
    files.fail_always(true);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with(jaas_config(Some(dir.path()))).await;
    let session = key();
    let id = recording_id(&session);
    expect_result(
        &server,
        &uploaded(ROOM, &session, &files.link("standup.mp4")),
        "accepted",
    )
    .await;
    eventually("a first attempt", || async { files.requests() >= 1 }).await;
    server.stop().await;

    files.fail_always(false);
    let server = Server::with(jaas_config(Some(dir.path()))).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    // Pending downloads are picked up when the bridge first runs (until
    // `server::run` calls `webhooks::jaas::resume` at start-up, the first
    // webhook does).
    let ping = event("ROOM_CREATED", ROOM, &key(), now_ms(), conference(ROOM));
    expect_result(&server, &ping, "ignored").await;

    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    let available =
        tokio::time::timeout_at(deadline, ada.until("recording", "recording_available"))
            .await
            .expect("recording_available in time");
    assert_eq!(available["recording_id"], id.as_str());
    let media = admin_get(&server, &format!("/v1/recordings/{id}/media")).await;
    assert_eq!(media.status(), 200);
    assert_eq!(media.bytes().await.unwrap().to_vec(), bytes);
}

/// JaaS keeps recording when everyone leaves onair's room (the Jitsi meeting
/// goes on without onair's sockets); the recording ends with 8x8's
/// `RECORDING_ENDED`, not with a failed stop command.
#[tokio::test]

async fn a_recording_outlives_an_empty_room() {
    let server = Server::with(jaas_config(None)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let id = recording_id(&session);
    let t0 = now_ms();
    expect_result(&server, &started(ROOM, &session, t0), "applied").await;
    ada.expect("recording", "started").await;
    ada.expect("recording", "status").await;
    ada.ws.close(None).await.unwrap();
    eventually("the room closes", || async {
        admin_get(&server, &format!("/v1/rooms/{ROOM}"))
            .await
            .status()
            == 404
    })
    .await;

    let (mut linus, success): (Client, Value) = server.join(ROOM, "Linus", Role::Guest).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    expect_result(&server, &ended(ROOM, &session, t0 + 60_000), "applied").await;
    let stopped = linus.expect("recording", "stopped").await;
    assert_eq!(stopped["recording_id"], id.as_str());
}

/// The binary with the jaas backend on `data`, killed (`SIGKILL`) when
/// dropped; returns once it listens.
fn spawn_binary(data: &Path) -> Onair {
    Onair::spawn_with_config(
        data,
        &format!(
            "[recording]\nbackend = \"jaas\"\n\n[jaas]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n"
        ),
    )
}

/// What the application reads of a recording, asserted on its JaaS fields.
async fn assert_catalogued_with_people(server: &Server, id: &str) {
    let response = admin_get(server, &format!("/v1/recordings/{id}")).await;
    assert_eq!(response.status(), 200);
    let recording: Value = response.json().await.unwrap();
    assert_eq!(recording["provider"], "jaas", "{recording}");
    assert_eq!(recording["duration_s"], 15.0, "{recording}");
    assert_eq!(
        recording["participants"],
        json!(["user-ada", "user-grace"]),
        "{recording}"
    );
    assert_eq!(recording["initiator"], "user-ada", "{recording}");
    // The initiator owns it: the `sub` of that user's onair tokens.
    assert_eq!(recording["owner"], "user-ada", "{recording}");
}

#[tokio::test]
async fn the_order_and_the_catalogue_survive_a_kill_9() {
    let files = FileServer::start(recording_bytes(), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let onair = spawn_binary(dir.path());
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    let session = key();
    let id = recording_id(&session);
    let t0 = now_ms();
    let start = started(ROOM, &session, t0);
    expect_result(&onair.server, &start, "applied").await;
    assert_eq!(
        ada.until("recording", "started").await["recording_id"],
        id.as_str()
    );
    expect_result(
        &onair.server,
        &ended(ROOM, &session, t0 + 60_000),
        "applied",
    )
    .await;
    ada.until("recording", "stopped").await;
    expect_result(
        &onair.server,
        &uploaded(ROOM, &session, &files.link("standup.mp4")),
        "accepted",
    )
    .await;
    let available = tokio::time::timeout(EVENTUALLY, ada.until("recording", "recording_available"))
        .await
        .expect("recording_available in time");
    assert_eq!(available["recording_id"], id.as_str());
    assert_catalogued_with_people(&onair.server, &id).await;
    drop(ada);
    onair.kill9();

    let onair = spawn_binary(dir.path());
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(success["recording"], Value::Null, "{success}");
    // A start made before the applied end, arriving (under its own key)
    // after the restart, is stale: the order survived the crash.
    expect_result(
        &onair.server,
        &started(ROOM, &session, t0 + 30_000),
        "stale",
    )
    .await;
    // The first start, redelivered, is a duplicate.
    expect_result(&onair.server, &start, "duplicate").await;
    ada.expect_silence(QUIET).await;
    let (_, again) = onair.server.join(ROOM, "Grace", Role::User).await;
    assert_eq!(again["recording"], Value::Null, "{again}");
    // The catalogue kept who was there and who started it.
    assert_catalogued_with_people(&onair.server, &id).await;
}

/// A node of a two-node `jaas` cluster on `redis`.
async fn cluster_node(redis: &support::redis::Redis, id: &str) -> Onair {
    let data = tempfile::tempdir().unwrap();
    let mut command =
        support::binary::cluster_command(data.path(), &redis.url(), id, "jaas", 5).await;
    let onair = Onair::spawn(
        command
            .env("ONAIR_RECORDING__BACKEND", "jaas")
            .env("ONAIR_JAAS__WEBHOOK_SECRET", WEBHOOK_SECRET),
    )
    .owning(data);
    onair.server.readyz(200, EVENTUALLY).await;
    onair
}

/// `[cluster]`: a webhook that arrives while Redis is unreachable is answered
/// 503 with `Retry-After`, never 200 with its effect lost; once Redis is back
/// (with its append-only file), 8x8's retry of the same event is applied and
/// reaches a participant on the other node.
#[tokio::test]
async fn a_webhook_without_redis_is_refused_and_its_retry_applied() {
    let mut redis = support::redis::Redis::start_persisting();
    let a = cluster_node(&redis, "node-a").await;
    let b = cluster_node(&redis, "node-b").await;
    let (mut ada, _) = a.server.join(ROOM, "Ada", Role::User).await;
    let session = key();
    let event = started(ROOM, &session, now_ms());

    redis.kill();
    b.server.readyz(503, EVENTUALLY).await;
    let body = event.to_string().into_bytes();
    let response = http()
        .post(b.server.url("/webhooks/jaas"))
        .header("content-type", "application/json")
        .header("X-Jaas-Signature", sign(WEBHOOK_SECRET, now_s(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let refusal: Value = response.json().await.unwrap();
    assert_eq!(refusal["code"], "cluster_unavailable", "{refusal}");

    // Redis comes back with what it had; both nodes reconnect.
    redis.restart();
    a.server.readyz(200, EVENTUALLY).await;
    b.server.readyz(200, EVENTUALLY).await;
    expect_result(&b.server, &event, "applied").await;
    let started = ada.until("recording", "started").await;
    assert_eq!(started["recording_id"], recording_id(&session));
}

/// `[cluster]`: keys and session marks live in Redis, so a redelivery sent to
/// the other node is a duplicate, and an event older than one another node
/// applied is stale there.
#[tokio::test]
async fn duplicates_and_stale_events_sent_to_different_nodes_are_applied_once() {
    let redis = support::redis::Redis::start();
    let a = cluster_node(&redis, "node-a").await;
    let b = cluster_node(&redis, "node-b").await;
    let (mut ada, _) = a.server.join(ROOM, "Ada", Role::User).await;
    let session = key();
    let t0 = now_ms();

    let start = started(ROOM, &session, t0);
    expect_result(&a.server, &start, "applied").await;
    ada.until("recording", "started").await;
    expect_result(&b.server, &start, "duplicate").await;

    expect_result(&b.server, &ended(ROOM, &session, t0 + 10_000), "applied").await;
    ada.until("recording", "stopped").await;
    // An older start, delivered late to the node that did not apply the end.
    expect_result(&a.server, &started(ROOM, &session, t0 + 5_000), "stale").await;

    // One upload, delivered to both: only one node takes the download on.
    let upload = uploaded(ROOM, &session, "http://127.0.0.1:9/never.mp4");
    expect_result(&a.server, &upload, "accepted").await;
    expect_result(&b.server, &upload, "duplicate").await;

    // Nobody was told of a second start.
    let quiet_until = tokio::time::Instant::now() + QUIET;
    while let Ok(frame) = tokio::time::timeout_at(quiet_until, ada.recv()).await {
        assert_ne!(frame["payload"]["message"], "started", "{frame}");
    }
}
