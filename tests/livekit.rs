//! The `livekit` backend end to end: the real server on port 0, real
//! WebSocket clients, and a fake LiveKit (`tests/livekit/fake-livekit.mjs`)
//! built on LiveKit's own Node server SDK. The fake verifies onair's twirp
//! calls with the SDK's `TokenVerifier` and LiveKit's grant rules, parses
//! their bodies strictly with LiveKit's protocol classes, and signs the
//! webhooks it sends as LiveKit's server does.
//!
//! Needs Node.js ≥ 19 and npm; the fake's packages are installed with
//! `npm ci` in `tests/livekit/` the first time (see `tests/livekit/setup.sh`).

mod support;

use std::time::Duration;

use base64::Engine as _;
use onair::Config;
use onair::backends::livekit::Livekit;
use onair::config::{BackendKind, LivekitConfig};
use onair::protocol::{RecordingStatus, Role};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::fake_livekit::FakeLivekit;
use support::harness::{ADMIN_KEY, Client, RECV_TIMEOUT, Server, config, http};
use support::moto::Moto;

// The notification tests' HTTP receiver; the rest of that module is unused here.
#[allow(dead_code, unused_imports)]
#[path = "notifications/services.rs"]
mod services;

const KEY: &str = "APIonairTest";
const SECRET: &str = "onair-livekit-test-secret-0123456789";
const ROOM: &str = "standup";
const FILE_PATH: &str = "recordings/{room_name}-{time}.mp4";
/// Long enough to notice a frame that should not come.
const QUIET: Duration = Duration::from_millis(300);

/// LiveKit's published webhook vector (livekit-server-sdk's WebhookReceiver test).
const VECTOR_BODY: &str = r#"{"event":"room_started", "room":{"sid":"RM_TkVjUvAqgzKz", "name":"mytestroom", "emptyTimeout":300, "creationTime":"1628545903", "turnPassword":"ICkSr2rEeslkN6e9bXL4Ji5zzMD5Z7zzr6ulOaxMj6N", "enabledCodecs":[{"mime":"audio/opus"}, {"mime":"video/VP8"}]}}"#;
const VECTOR_SHA256: &str = "CoEQz1chqJ9bnZRcORddjplkvpjmPujmLTR42DbefYI=";
const VECTOR_KEY: &str = "abcdefg";
const VECTOR_SECRET: &str = "abababa";

impl FakeLivekit {
    async fn start() -> Self {
        Self::with_keys(KEY, SECRET).await
    }

    /// Points the fake's webhooks at onair and sets its behaviour.
    async fn configure(&self, server: &Server, auto: bool) {
        self.post(
            "config",
            json!({"webhookUrl": server.url("/webhooks/livekit"), "auto": auto}),
        )
        .await;
    }

    async fn create_room(&self, name: &str, metadata: &str) {
        self.post("rooms", json!({"name": name, "metadata": metadata}))
            .await;
    }

    /// Makes the next `times` calls of `method` answer with a twirp error.
    async fn fail(&self, method: &str, status: u16, code: &str, msg: &str, times: u32) {
        self.post(
            "fail",
            json!({"method": method, "status": status, "code": code, "msg": msg, "times": times}),
        )
        .await;
    }

    /// Every recorded call of `method` (e.g. `RoomService/ListRooms`).
    async fn calls(&self, method: &str) -> Vec<Value> {
        self.get("calls")
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["method"] == method)
            .cloned()
            .collect()
    }

    /// Waits until `method` was called successfully `count` times; returns those calls.
    async fn wait_calls(&self, method: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT * 2;
        loop {
            let ok: Vec<Value> = self
                .calls(method)
                .await
                .into_iter()
                .filter(|c| c["status"] == 200)
                .collect();
            if ok.len() >= count {
                return ok;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} successful {method} calls, got {ok:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The one egress onair started.
    async fn only_egress(&self) -> Value {
        let egresses = self.get("egresses").await;
        let egresses = egresses.as_array().unwrap();
        assert_eq!(egresses.len(), 1, "{egresses:#?}");
        egresses[0].clone()
    }

    /// The `recordingStatus` values onair wrote into a room's metadata, in order.
    async fn metadata_statuses(&self, count: usize) -> Vec<String> {
        self.wait_calls("RoomService/UpdateRoomMetadata", count)
            .await
            .iter()
            .map(|c| {
                let metadata: Value =
                    serde_json::from_str(c["request"]["metadata"].as_str().unwrap()).unwrap();
                assert_eq!(metadata["createdBy"], "onair-test", "merged, not replaced");
                metadata["recordingStatus"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

fn livekit_config(fake: &FakeLivekit, key: &str, secret: &str) -> Config {
    let mut config = config();
    config.recording.backend = BackendKind::Livekit;
    config.livekit.url = Some(fake.url());
    config.livekit.api_key = Some(key.into());
    config.livekit.api_secret = Some(secret.into());
    config.livekit.file_path = FILE_PATH.into();
    config.livekit.request_timeout_s = 5;
    config
}

/// onair with the livekit backend, a fake LiveKit wired to it, and the
/// LiveKit room with application metadata (as seed 004 creates it).
async fn setup(auto: bool) -> (FakeLivekit, Server) {
    let fake = FakeLivekit::start().await;
    let server = Server::with(livekit_config(&fake, KEY, SECRET)).await;
    fake.configure(&server, auto).await;
    fake.create_room(
        ROOM,
        r#"{"createdBy":"onair-test","recordingStatus":"STOPPED"}"#,
    )
    .await;
    (fake, server)
}

async fn expect_status(client: &mut Client, status: &str) -> Value {
    let payload = client.expect("recording", "status").await;
    assert_eq!(payload["status"], status, "{payload}");
    assert_eq!(payload["provider"], "livekit", "{payload}");
    payload
}

/// The moderator starts; returns the recording id from `status initializing`.
async fn start(moderator: &mut Client, others: &mut [&mut Client]) -> String {
    moderator.recording(json!({"action": "start"})).await;
    let status = expect_status(moderator, "initializing").await;
    let id = status["recording_id"].as_str().unwrap().to_owned();
    for other in others.iter_mut() {
        assert_eq!(
            expect_status(other, "initializing").await["recording_id"],
            id
        );
    }
    id
}

async fn expect_started(client: &mut Client, id: &str) {
    assert_eq!(
        client.expect("recording", "started").await["recording_id"],
        id
    );
    assert_eq!(expect_status(client, "recording").await["recording_id"], id);
}

async fn expect_stopped(client: &mut Client, id: &str) {
    assert_eq!(
        client.expect("recording", "stopped").await["recording_id"],
        id
    );
    assert_eq!(expect_status(client, "inactive").await["recording_id"], id);
}

async fn expect_available(client: &mut Client, id: &str) -> Value {
    let available = client.expect("recording", "recording_available").await;
    assert_eq!(available["recording_id"], id);
    // A signed link, opened without credentials (tests/recordings.rs fetches one).
    let url = available["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("/v1/recordings/{id}/media?expires="))
            && url.contains("&signature="),
        "{url}"
    );
    available
}

#[test]
fn published_vector_hashes_as_livekit_says() {
    let digest = Sha256::digest(VECTOR_BODY.as_bytes());
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(digest),
        VECTOR_SHA256
    );
}

#[tokio::test]
async fn livekits_published_webhook_vector_is_accepted() {
    let fake = FakeLivekit::with_keys(VECTOR_KEY, VECTOR_SECRET).await;
    let server = Server::with(livekit_config(&fake, VECTOR_KEY, VECTOR_SECRET)).await;
    fake.configure(&server, false).await;

    // Signed exactly as LiveKit's WebhookReceiver test signs it: the SDK's
    // AccessToken (default lifetime) carrying the published sha256.
    let delivery = fake
        .webhook(json!({"rawBody": VECTOR_BODY, "sha256": VECTOR_SHA256, "sign": "sdk_default"}))
        .await;
    assert_eq!(delivery["status"], 200, "{delivery}");
    assert_eq!(
        delivery["body"],
        json!({"result": "ignored"}),
        "a room event"
    );
    assert_eq!(delivery["sdkVerdict"], "accepted");

    // The same token over a body that differs by one space is refused.
    let altered = VECTOR_BODY.replacen("\"room_started\",", "\"room_started\" ,", 1);
    let delivery = fake
        .webhook(json!({"rawBody": altered, "sha256": VECTOR_SHA256, "sign": "sdk_default"}))
        .await;
    assert_eq!(delivery["status"], 401, "{delivery}");
    assert_eq!(delivery["body"]["code"], "invalid_signature");
    assert_eq!(
        delivery["sdkVerdict"],
        "rejected: sha256 checksum of body does not match"
    );
}

#[tokio::test]
async fn a_client_sees_the_whole_lifecycle() {
    let (fake, server) = setup(true).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join(ROOM, "Bob", Role::User).await;
    ada.expect("control", "joined").await;

    let id = start(&mut ada, &mut [&mut bob]).await;
    for client in [&mut ada, &mut bob] {
        expect_started(client, &id).await;
    }
    // A late joiner learns of the running recording.
    let (carol, success) = server.join(ROOM, "Carol", Role::Guest).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    drop(carol);
    for client in [&mut ada, &mut bob] {
        client.expect("control", "joined").await;
        client.expect("control", "left").await;
    }

    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    let mut file_name = String::new();
    for client in [&mut ada, &mut bob] {
        assert_eq!(expect_status(client, "stopping").await["recording_id"], id);
        expect_stopped(client, &id).await;
        let available = expect_available(client, &id).await;
        let name = available["name"].as_str().unwrap();
        file_name = name.to_owned();
        assert!(
            name.starts_with("standup-") && name.ends_with(".mp4") && !name.contains('/'),
            "{name}"
        );
        assert_eq!(available["duration_s"], 61.5);
        assert_eq!(available["size_bytes"], 1_048_576);
    }

    // What LiveKit was asked, with which token.
    let starts = fake.calls("Egress/StartRoomCompositeEgress").await;
    assert_eq!(starts.len(), 1);
    let start = &starts[0];
    assert_eq!(
        start["raw"],
        json!({
            "room_name": ROOM,
            "audio_only": false,
            "file_outputs": [{"file_type": "MP4", "filepath": FILE_PATH, "disable_manifest": true}],
        })
    );
    assert_eq!(start["claims"]["iss"], KEY);
    assert_eq!(start["claims"]["video"], json!({"roomRecord": true}));
    let lifetime =
        start["claims"]["exp"].as_i64().unwrap() - start["claims"]["nbf"].as_i64().unwrap();
    assert!(
        (1..=600).contains(&lifetime),
        "short-lived token: {lifetime} s"
    );
    let egress = fake.only_egress().await;
    let stops = fake.wait_calls("Egress/StopEgress", 1).await;
    assert_eq!(
        stops[0]["request"],
        json!({"egress_id": egress["egress_id"]})
    );
    assert_eq!(stops[0]["claims"]["video"], json!({"roomRecord": true}));

    // The room metadata followed every transition, merged into the app's JSON.
    assert_eq!(
        fake.metadata_statuses(4).await,
        ["STARTING", "STARTED", "STOPPING", "STOPPED"]
    );
    let lists = fake.calls("RoomService/ListRooms").await;
    assert!(
        lists
            .iter()
            .all(|c| c["claims"]["video"] == json!({"roomList": true}))
    );
    assert!(
        lists
            .iter()
            .all(|c| c["request"] == json!({"names": [ROOM]}))
    );
    let updates = fake.calls("RoomService/UpdateRoomMetadata").await;
    assert!(
        updates
            .iter()
            .all(|c| c["claims"]["video"] == json!({"roomAdmin": true, "room": ROOM}))
    );
    // No call was refused.
    let calls = fake.get("calls").await;
    assert!(
        calls.as_array().unwrap().iter().all(|c| c["status"] == 200),
        "{calls:#}"
    );

    // Deleting the recording tells the room, and the LiveKit room by data message.
    let response = http()
        .delete(server.url(&format!("/v1/recordings/{id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        ada.expect("recording", "recording_deleted").await["recording_id"],
        id
    );
    let sent = fake.wait_calls("RoomService/SendData", 1).await;
    assert_eq!(sent[0]["request"]["topic"], "RECORDING_DELETED");
    assert_eq!(
        serde_json::from_str::<Value>(sent[0]["dataText"].as_str().unwrap()).unwrap(),
        json!({"recording_id": id, "recordingName": file_name})
    );
}

#[tokio::test]
async fn audio_only_is_asked_of_livekit() {
    let (fake, server) = setup(true).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start", "audio_only": true}))
        .await;
    let id = expect_status(&mut ada, "initializing").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_started(&mut ada, &id).await;
    let start = &fake.calls("Egress/StartRoomCompositeEgress").await[0];
    assert_eq!(start["request"]["audio_only"], true);
}

#[tokio::test]
async fn a_refused_start_fails_the_room_and_a_new_start_works() {
    let (fake, server) = setup(true).await;
    fake.fail(
        "Egress/StartRoomCompositeEgress",
        503,
        "unavailable",
        "egress not connected (redis required)",
        1,
    )
    .await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;

    let first = start(&mut ada, &mut []).await;
    // Never announced with `started`: no `stopped`, just the failure.
    let failed = expect_status(&mut ada, "failed").await;
    assert_eq!(failed["recording_id"], first);
    assert_eq!(
        failed["reason"],
        "livekit: unavailable: egress not connected (redis required)"
    );
    // A late joiner sees nothing running.
    let (_carol, success) = server.join(ROOM, "Carol", Role::Guest).await;
    assert_eq!(success["recording"], Value::Null);
    ada.expect("control", "joined").await;

    // The start was not retried behind the room's back; a new one works.
    let second = start(&mut ada, &mut []).await;
    assert_ne!(first, second);
    expect_started(&mut ada, &second).await;
    assert_eq!(fake.calls("Egress/StartRoomCompositeEgress").await.len(), 2);
    assert_eq!(
        fake.metadata_statuses(4).await,
        ["STARTING", "FAILED", "STARTING", "STARTED"]
    );
}

#[tokio::test]
async fn an_egress_that_fails_fails_the_room() {
    let (fake, server) = setup(true).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &id).await;
    let egress = fake.only_egress().await;

    let delivery = fake
        .webhook(json!({
            "event": "egress_ended",
            "egressId": egress["egress_id"],
            "status": "EGRESS_FAILED",
            "error": "pipeline failed: out of disk space",
        }))
        .await;
    assert_eq!(delivery["body"], json!({"result": "applied"}));
    // Announced with `started`, so `stopped` comes first (seed 002).
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    let failed = expect_status(&mut ada, "failed").await;
    assert_eq!(failed["recording_id"], id);
    assert_eq!(failed["reason"], "pipeline failed: out of disk space");

    // After `failed`, a new start behaves as from inactive.
    let again = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &again).await;
}

#[tokio::test]
async fn a_limit_reached_egress_fails_but_its_file_is_catalogued() {
    let (fake, server) = setup(true).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &id).await;
    let egress = fake.only_egress().await;

    fake.webhook(json!({
        "event": "egress_ended",
        "egressId": egress["egress_id"],
        "status": "EGRESS_LIMIT_REACHED",
        "withFile": true,
        "location": "https://storage.invalid/bucket/recordings/standup-limit.mp4?sig=1",
    }))
    .await;
    // Announced with `started`, so `stopped` comes first (seed 002).
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    let failed = expect_status(&mut ada, "failed").await;
    assert_eq!(failed["reason"], "EGRESS_LIMIT_REACHED");
    let available = expect_available(&mut ada, &id).await;
    assert!(available["name"].as_str().unwrap().starts_with("standup-"));
}

#[tokio::test]
async fn an_egress_ended_by_livekit_passes_through_stopping() {
    let (fake, server) = setup(true).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &id).await;
    let egress_id = fake.only_egress().await["egress_id"].clone();

    // LiveKit ends the egress on its own (e.g. its room closed).
    fake.webhook(
        json!({"event": "egress_updated", "egressId": egress_id, "status": "EGRESS_ENDING"}),
    )
    .await;
    expect_status(&mut ada, "stopping").await;
    fake.webhook(json!({
        "event": "egress_ended", "egressId": egress_id, "status": "EGRESS_COMPLETE", "withFile": true,
    }))
    .await;
    expect_stopped(&mut ada, &id).await;
    expect_available(&mut ada, &id).await;
    // onair did not ask LiveKit to stop an egress that was already ending.
    assert!(fake.calls("Egress/StopEgress").await.is_empty());
}

#[tokio::test]
async fn forged_and_stale_webhooks_change_nothing() {
    let (fake, server) = setup(false).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    let egress_id = fake.only_egress().await["egress_id"].clone();

    for sign in [
        "no_auth",
        "bearer",
        "wrong_secret",
        "wrong_key",
        "no_sha",
        "tampered_body",
        "expired",
        "old",
        "no_exp",
        "alg_none",
    ] {
        let delivery = fake
            .webhook(json!({
                "event": "egress_updated", "egressId": egress_id, "status": "EGRESS_ACTIVE", "sign": sign,
            }))
            .await;
        assert_eq!(delivery["status"], 401, "{sign}: {delivery}");
        assert_eq!(delivery["body"]["code"], "invalid_signature", "{sign}");
        assert!(delivery["body"]["message"].is_string(), "{sign}");
        // LiveKit's own WebhookReceiver refuses the same request, except the
        // token made 10 minutes ago: onair's replay window is stricter than
        // the SDK, which only checks `exp`.
        let sdk = delivery["sdkVerdict"].as_str().unwrap();
        if sign == "old" {
            assert_eq!(sdk, "accepted");
        } else {
            assert!(sdk.starts_with("rejected"), "{sign}: the SDK says {sdk}");
        }
    }
    ada.expect_silence(QUIET).await;

    // A body over the limit is refused before its signature is checked (a
    // request without the signature header at all is a 401 before that).
    let response = http()
        .post(server.url("/webhooks/livekit"))
        .header("content-type", "application/webhook+json")
        .header("authorization", "not-checked-yet")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
    // A large but allowed one (bigger than the REST API's limit) is read.
    let big =
        json!({"event": "room_started", "room": {"name": ROOM, "metadata": "x".repeat(200_000)}});
    let delivery = fake.webhook(json!({"rawBody": big.to_string()})).await;
    assert_eq!(delivery["body"], json!({"result": "ignored"}));

    // Refusals show in the metrics.
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("onair_inbound_webhooks_total{reason=\"rejected\"}"),
        "{metrics}"
    );

    // The genuine one is applied.
    let delivery = fake
        .webhook(
            json!({"event": "egress_updated", "egressId": egress_id, "status": "EGRESS_ACTIVE"}),
        )
        .await;
    assert_eq!(delivery["status"], 200);
    assert_eq!(delivery["body"], json!({"result": "applied"}));
    assert_eq!(delivery["sdkVerdict"], "accepted");
    expect_started(&mut ada, &id).await;
}

#[tokio::test]
async fn replayed_duplicated_reordered_and_late_webhooks_apply_once() {
    let (fake, server) = setup(false).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    let egress_id = fake.only_egress().await["egress_id"].clone();
    let at = |t: i64| (1_750_000_000_000_000_000i64 + t).to_string();
    let send = |status: &str, t: i64| json!({"event": "egress_updated", "egressId": egress_id, "status": status, "updatedAt": at(t)});

    let started = fake.webhook(send("EGRESS_STARTING", 1)).await;
    assert_eq!(started["body"], json!({"result": "applied"}));
    let active = fake.webhook(send("EGRESS_ACTIVE", 3)).await;
    assert_eq!(active["body"], json!({"result": "applied"}));
    expect_started(&mut ada, &id).await;

    // The same delivery again (same token, same body: a replay within the window).
    let replay = |delivery: &Value| {
        let request = http()
            .post(server.url("/webhooks/livekit"))
            .header("content-type", "application/webhook+json")
            .header("authorization", delivery["token"].as_str().unwrap())
            .body(delivery["requestBody"].as_str().unwrap().to_owned());
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(replay(&active).await, (200, json!({"result": "duplicate"})));
    // An older event arriving late (a new event id, but older updatedAt).
    let late = fake.webhook(send("EGRESS_STARTING", 2)).await;
    assert_eq!(late["body"], json!({"result": "stale"}));
    ada.expect_silence(QUIET).await;

    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    expect_status(&mut ada, "stopping").await;
    fake.wait_calls("Egress/StopEgress", 1).await;
    let mut complete = send("EGRESS_COMPLETE", 5);
    complete["event"] = json!("egress_ended");
    complete["withFile"] = json!(true);
    let ended = fake.webhook(complete.clone()).await;
    assert_eq!(ended["body"], json!({"result": "applied"}));
    expect_stopped(&mut ada, &id).await;
    expect_available(&mut ada, &id).await;

    // After the end: a late update, the end again under a new id, a replay.
    let mut ending = send("EGRESS_ENDING", 4);
    ending["event"] = json!("egress_updated");
    assert_eq!(
        fake.webhook(ending).await["body"],
        json!({"result": "stale"})
    );
    complete["updatedAt"] = json!(at(6));
    assert_eq!(
        fake.webhook(complete).await["body"],
        json!({"result": "stale"})
    );
    assert_eq!(replay(&ended).await, (200, json!({"result": "duplicate"})));
    ada.expect_silence(QUIET).await;
}

#[tokio::test]
async fn webhooks_about_other_egresses_are_acknowledged_and_ignored() {
    let (fake, server) = setup(false).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    for spec in [
        json!({"event": "egress_started", "egressId": "EG_notours", "roomName": ROOM}),
        json!({"event": "egress_ended", "egressId": "EG_elsewhere", "roomName": "other", "status": "EGRESS_COMPLETE", "withFile": true}),
        json!({"event": "room_finished", "rawBody": r#"{"event":"room_finished","room":{"name":"standup"},"id":"EV_room"}"#}),
    ] {
        let delivery = fake.webhook(spec).await;
        assert_eq!(delivery["status"], 200, "{delivery}");
        assert_eq!(delivery["body"], json!({"result": "ignored"}));
    }
    ada.expect_silence(QUIET).await;
}

#[tokio::test]
async fn webhooks_before_the_start_answer_are_not_lost() {
    let (fake, server) = setup(false).await;
    fake.post("config", json!({"webhooksBeforeStartReply": true}))
        .await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &id).await;
    // Both early webhooks were applied, none dropped as unknown.
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let deliveries = fake.get("deliveries").await;
        let results: Vec<Value> = deliveries
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["body"]["result"].clone())
            .collect();
        if results.len() == 2 {
            assert_eq!(results, [json!("applied"), json!("applied")]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{results:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn mirroring_retries_and_keeps_the_order() {
    let (fake, server) = setup(true).await;
    fake.fail(
        "RoomService/UpdateRoomMetadata",
        503,
        "unavailable",
        "try again",
        2,
    )
    .await;
    fake.fail("RoomService/ListRooms", 500, "internal", "oops", 1)
        .await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    // The signaling did not wait for LiveKit's metadata.
    expect_started(&mut ada, &id).await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    expect_status(&mut ada, "stopping").await;
    expect_stopped(&mut ada, &id).await;
    assert_eq!(
        fake.metadata_statuses(4).await,
        ["STARTING", "STARTED", "STOPPING", "STOPPED"]
    );
    let refused = fake
        .calls("RoomService/UpdateRoomMetadata")
        .await
        .into_iter()
        .filter(|c| c["status"] != 200)
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn deletions_and_statuses_reach_the_livekit_room_in_order() {
    let fake = FakeLivekit::start().await;
    fake.create_room(ROOM, r#"{"createdBy":"onair-test"}"#)
        .await;
    let config = LivekitConfig {
        url: Some(fake.url()),
        api_key: Some(KEY.into()),
        api_secret: Some(SECRET.into()),
        ..LivekitConfig::default()
    };
    let livekit = Livekit::new(&config, reqwest::Client::new());
    livekit
        .status_changed(ROOM, RecordingStatus::Inactive)
        .await;
    livekit
        .recording_deleted(ROOM, "rec-42", "rec-42.mp4")
        .await;

    let sent = fake.wait_calls("RoomService/SendData", 1).await;
    let sent = &sent[0];
    assert_eq!(sent["request"]["topic"], "RECORDING_DELETED");
    assert_eq!(sent["request"]["room"], ROOM);
    assert_eq!(sent["request"].get("destination_sids"), None, "to everyone");
    assert_eq!(
        serde_json::from_str::<Value>(sent["dataText"].as_str().unwrap()).unwrap(),
        json!({"recording_id": "rec-42", "recordingName": "rec-42.mp4"})
    );
    assert_eq!(
        sent["claims"]["video"],
        json!({"roomAdmin": true, "room": ROOM})
    );
    // The metadata update queued first went first.
    let calls = fake.get("calls").await;
    let order: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "RoomService/ListRooms",
            "RoomService/UpdateRoomMetadata",
            "RoomService/SendData"
        ]
    );

    // A room LiveKit does not have: logged, not retried forever, nothing sent.
    livekit
        .recording_deleted("gone", "rec-43", "rec-43.mp4")
        .await;
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let attempts = fake
            .calls("RoomService/SendData")
            .await
            .into_iter()
            .filter(|c| c["request"]["room"] == "gone")
            .count();
        if attempts == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{attempts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The given-up call is counted for operators.
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while !onair::metrics::METRICS
        .encode()
        .contains("onair_backend_errors_total{reason=\"send_data\"}")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no send_data error counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_start_stopped_before_livekit_confirms_ends_quietly() {
    let (fake, server) = setup(false).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    expect_status(&mut ada, "stopping").await;
    let egress_id = fake.only_egress().await["egress_id"].clone();
    let stops = fake.wait_calls("Egress/StopEgress", 1).await;
    assert_eq!(stops[0]["request"]["egress_id"], egress_id);

    // LiveKit aborts an egress stopped before it started: that is the stop
    // onair asked for, not a failure, and nothing was ever `started`.
    let delivery = fake
        .webhook(
            json!({"event": "egress_ended", "egressId": egress_id, "status": "EGRESS_ABORTED"}),
        )
        .await;
    assert_eq!(delivery["body"], json!({"result": "applied"}));
    let inactive = expect_status(&mut ada, "inactive").await;
    assert_eq!(inactive["recording_id"], id);
    assert_eq!(inactive.get("reason"), None);
    ada.expect_silence(QUIET).await;
}

/// Two nodes over Redis: node A starts the egress, LiveKit's webhooks all
/// reach node B, and node B stops it — B learns the egress from the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_any_node_handles_the_egress_another_started() {
    let redis = support::redis::Redis::start();
    let fake = FakeLivekit::start().await;
    let node = |id: &str| {
        let mut config = livekit_config(&fake, KEY, SECRET);
        config.cluster.redis_url = Some(redis.url());
        config.cluster.node_id = id.into();
        config.cluster.heartbeat_s = 1;
        config.cluster.node_ttl_s = 2;
        config
    };
    let a = Server::with(node("node-a")).await;
    let b = Server::with(node("node-b")).await;
    a.readyz(200, RECV_TIMEOUT * 2).await;
    b.readyz(200, RECV_TIMEOUT * 2).await;
    fake.configure(&b, true).await;
    fake.create_room(
        ROOM,
        r#"{"createdBy":"onair-test","recordingStatus":"STOPPED"}"#,
    )
    .await;

    let (mut ada, _) = a.join(ROOM, "Ada", Role::Moderator).await;
    let (mut bob, _) = b.join(ROOM, "Bob", Role::Moderator).await;
    ada.expect("control", "joined").await;
    let id = start(&mut ada, &mut [&mut bob]).await;
    for client in [&mut ada, &mut bob] {
        expect_started(client, &id).await;
    }
    assert_eq!(fake.calls("Egress/StartRoomCompositeEgress").await.len(), 1);

    // Bob stops from node B, which did not start the egress.
    bob.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    for client in [&mut ada, &mut bob] {
        assert_eq!(expect_status(client, "stopping").await["recording_id"], id);
        expect_stopped(client, &id).await;
        expect_available(client, &id).await;
    }
    let egress = fake.only_egress().await;
    let stops = fake.wait_calls("Egress/StopEgress", 1).await;
    assert_eq!(
        stops[0]["request"],
        json!({"egress_id": egress["egress_id"]})
    );
    assert_eq!(fake.calls("Egress/StopEgress").await.len(), 1);

    // A late event reaches node B (stale there), and LiveKit's redelivery of
    // it (the same id) reaches node A, which started the egress but heard
    // none of its webhooks: a duplicate there too, not applied.
    let late = json!({
        "event": "egress_updated", "egressId": egress["egress_id"], "status": "EGRESS_ACTIVE",
        "id": "EV_redelivered", "updatedAt": 1, "noStore": true,
    });
    let first = fake.webhook(late.clone()).await;
    assert_eq!(first["body"], json!({"result": "stale"}), "{first}");
    let mut again = late;
    again["url"] = json!(a.url("/webhooks/livekit"));
    let second = fake.webhook(again).await;
    assert_eq!(second["body"], json!({"result": "duplicate"}), "{second}");
    // Another old event, never delivered before, reaches node A: the
    // egress's ordering mark is shared, so it is stale there as well.
    let older = json!({
        "event": "egress_updated", "egressId": egress["egress_id"], "status": "EGRESS_ACTIVE",
        "id": "EV_older", "updatedAt": 2, "noStore": true, "url": a.url("/webhooks/livekit"),
    });
    let third = fake.webhook(older).await;
    assert_eq!(third["body"], json!({"result": "stale"}), "{third}");
    for client in [&mut ada, &mut bob] {
        client.expect_silence(QUIET).await;
    }
}

// The egress bucket (`[livekit] s3_*`): LiveKit's egress uploads its file to
// a bucket — here a real S3 API, moto — and reports where; onair serves the
// file from there by its own signed link (with Range), copies it to the
// owner's S3 and deletes it.

const EGRESS_BUCKET: &str = "egress";
const OWNER_BUCKET: &str = "owner-copies";

/// onair with the livekit backend whose egress writes to `moto`'s
/// [`EGRESS_BUCKET`], and whose owners' S3 copies go to `moto` too.
async fn setup_with_bucket(moto: &Moto) -> (FakeLivekit, Server) {
    let fake = FakeLivekit::start().await;
    let mut config = livekit_config(&fake, KEY, SECRET);
    config.livekit.s3_bucket = Some(EGRESS_BUCKET.into());
    config.livekit.s3_region = Some("us-east-1".into());
    config.livekit.s3_endpoint = Some(moto.endpoint.clone());
    config.livekit.s3_access_key_id = Some("egress-key-id".into());
    config.livekit.s3_secret_access_key = Some("egress-secret".into());
    config.livekit.s3_allow_http = true;
    config.notifications.s3_endpoint = Some(moto.endpoint.clone());
    // The owners' notification receivers are on loopback.
    config.notifications.allow_private_addresses = true;
    let server = Server::with(config).await;
    fake.configure(&server, true).await;
    fake.create_room(ROOM, r#"{"createdBy":"onair-test"}"#)
        .await;
    (fake, server)
}

/// Records in [`ROOM`] until LiveKit reports the file at `location`; returns
/// `recording_available`.
async fn record_to(fake: &FakeLivekit, moderator: &mut Client, location: &str) -> Value {
    let id = start(moderator, &mut []).await;
    expect_started(moderator, &id).await;
    let egresses = fake.get("egresses").await;
    let egress_id = egresses.as_array().unwrap().last().unwrap()["egress_id"].clone();
    fake.webhook(
        json!({"event": "egress_updated", "egressId": egress_id, "status": "EGRESS_ENDING"}),
    )
    .await;
    expect_status(moderator, "stopping").await;
    let delivery = fake
        .webhook(json!({
            "event": "egress_ended", "egressId": egress_id, "status": "EGRESS_COMPLETE",
            "withFile": true, "location": location,
        }))
        .await;
    assert_eq!(delivery["body"], json!({"result": "applied"}));
    expect_stopped(moderator, &id).await;
    expect_available(moderator, &id).await
}

/// A plain HTTP client: no credentials, no redirects followed.
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Fetches the whole file and a range of it by `available`'s signed link,
/// without credentials, and checks both against `bytes`.
async fn fetch_by_link(server: &Server, available: &Value, bytes: &[u8]) {
    let link = server.url(available["url"].as_str().unwrap());
    let whole = plain().get(&link).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "video/mp4");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert!(
        whole.bytes().await.unwrap() == bytes,
        "the served bytes differ"
    );
    let (first, last) = (bytes.len() / 2, bytes.len() / 2 + 999);
    let part = plain()
        .get(&link)
        .header("range", format!("bytes={first}-{last}"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes {first}-{last}/{}", bytes.len()).as_str()
    );
    assert!(part.bytes().await.unwrap() == bytes[first..=last]);
}

/// The owner's copy of recording `id` named `name`, once it has arrived.
async fn owner_copy(moto: &Moto, id: &str, name: &str) -> Vec<u8> {
    let key = format!("onair/{id}/{name}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(bytes) = moto.object(OWNER_BUCKET, &key).await {
            return bytes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no copy at {OWNER_BUCKET}/{key}: {:?}",
            moto.keys(OWNER_BUCKET).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete_recording(server: &Server, id: &str) {
    let response = http()
        .delete(server.url(&format!("/v1/recordings/{id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

/// Ada, a moderator, saves her notification `settings` (seed 001) and joins
/// [`ROOM`]; the recordings she starts are hers.
async fn owner_joins(server: &Server, settings: Value) -> Client {
    let mut claims = server.claims(ROOM, "Ada", Role::Moderator);
    claims.sub = "ada".into();
    let token = server.mint(&claims);
    let saved = http()
        .post(server.url("/rest/recording/notifications"))
        .bearer_auth(&token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200, "{}", saved.text().await.unwrap());
    let mut ada = Client::connect_query(server, &token).await;
    ada.join(None).await;
    ada
}

fn content(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

#[tokio::test]
async fn egress_files_in_the_bucket_are_served_copied_and_deleted() {
    let moto = Moto::start().await;
    for bucket in [EGRESS_BUCKET, OWNER_BUCKET, "other"] {
        moto.create_bucket(bucket).await;
    }
    let (fake, server) = setup_with_bucket(&moto).await;
    // Ada keeps an S3 location for copies of her recordings (seed 001).
    let mut ada = owner_joins(
        &server,
        json!({
            "notify": false,
            "s3Arn": format!("arn:aws:s3:us-east-1::{OWNER_BUCKET}/onair"),
            "s3AccessKeyId": "AKIAOWNER",
            "s3SecretAccessKey": "owner-secret",
        }),
    )
    .await;

    // The three forms of location LiveKit reports, each for a file that the
    // egress put in the bucket. The first is over one S3 part (8 MiB), and
    // its key needs percent-encoding in a URL.
    let virtual_hosted = "recordings/standup 1~a.mp4";
    let endpoint = &moto.endpoint;
    let files = [
        (
            virtual_hosted,
            format!(
                "https://{EGRESS_BUCKET}.s3.us-east-1.amazonaws.com/recordings/standup%201~a.mp4"
            ),
            content(9 * 1024 * 1024 + 77, 1),
        ),
        (
            "recordings/standup-2.mp4",
            format!("{endpoint}/{EGRESS_BUCKET}/recordings/standup-2.mp4"),
            content(100_000, 2),
        ),
        (
            "recordings/standup-3.mp4",
            format!("s3://{EGRESS_BUCKET}/recordings/standup-3.mp4"),
            content(4321, 3),
        ),
    ];
    for (key, location, bytes) in &files {
        moto.put(EGRESS_BUCKET, key, bytes.clone()).await;
        assert!(moto.keys(EGRESS_BUCKET).await.iter().any(|k| k == key));
        let available = record_to(&fake, &mut ada, location).await;
        let id = available["recording_id"].as_str().unwrap();
        let name = available["name"].as_str().unwrap();

        fetch_by_link(&server, &available, bytes).await;
        assert!(
            owner_copy(&moto, id, name).await == *bytes,
            "the owner's copy differs"
        );

        delete_recording(&server, id).await;
        assert_eq!(
            ada.expect("recording", "recording_deleted").await["recording_id"],
            id
        );
        assert!(
            !moto.keys(EGRESS_BUCKET).await.iter().any(|k| k == key),
            "{location}"
        );
        let gone = plain()
            .get(server.url(available["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404);
    }
    assert_eq!(moto.keys(EGRESS_BUCKET).await, Vec::<String>::new());

    // A file in another bucket stays where it is: its link redirects there
    // (unchanged), and deleting the recording leaves the object alone.
    let elsewhere = format!("{endpoint}/other/recordings/standup-4.mp4");
    moto.put("other", "recordings/standup-4.mp4", content(10, 4))
        .await;
    assert_eq!(moto.keys("other").await, ["recordings/standup-4.mp4"]);
    let available = record_to(&fake, &mut ada, &elsewhere).await;
    let redirect = plain()
        .get(server.url(available["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 307);
    assert_eq!(redirect.headers()["location"], elsewhere.as_str());
    delete_recording(&server, available["recording_id"].as_str().unwrap()).await;
    assert_eq!(moto.keys("other").await, ["recordings/standup-4.mp4"]);
}

/// Without an S3 copy, the owner's notification links to an egress file by
/// onair's signed link, which opens; the bucket's own URL would not.
#[tokio::test]
async fn the_owners_notification_links_an_egress_file_through_onair() {
    let moto = Moto::start().await;
    moto.create_bucket(EGRESS_BUCKET).await;
    let mut receiver = services::Receiver::start(&[]).await;
    let (fake, server) = setup_with_bucket(&moto).await;
    let mut ada = owner_joins(&server, json!({"notify": true, "url": receiver.url})).await;
    let bytes = content(2048, 5);
    moto.put(EGRESS_BUCKET, "recordings/standup-5.mp4", bytes.clone())
        .await;

    let available = record_to(
        &fake,
        &mut ada,
        &format!("https://{EGRESS_BUCKET}.s3.us-east-1.amazonaws.com/recordings/standup-5.mp4"),
    )
    .await;
    let id = available["recording_id"].as_str().unwrap();
    let posted = receiver.next().await.body;
    assert_eq!(posted["meetingId"], id);
    let link = posted["retrievalUrl"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("/v1/recordings/{id}/media?expires=")),
        "{link}"
    );
    let opened = plain().get(server.url(link)).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    assert!(opened.bytes().await.unwrap() == bytes);
}

#[tokio::test]
async fn a_stop_livekit_never_confirms_ends_at_the_stop_timeout() {
    let fake = FakeLivekit::start().await;
    let mut config = livekit_config(&fake, KEY, SECRET);
    config.recording.stop_timeout_s = 2;
    let server = Server::with(config).await;
    fake.configure(&server, true).await;
    fake.create_room(ROOM, r#"{"createdBy":"onair-test"}"#)
        .await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let id = start(&mut ada, &mut []).await;
    expect_started(&mut ada, &id).await;

    // LiveKit answers StopEgress, then goes silent: no egress_ended ever comes.
    fake.configure(&server, false).await;
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    expect_status(&mut ada, "stopping").await;
    // At the stop timeout the room is free again, and says why.
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    let inactive = expect_status(&mut ada, "inactive").await;
    assert_eq!(inactive["reason"], "stop_timeout");
    // The stop was sent once more, best effort (LiveKit may answer that the
    // egress is already ending: that is fine).
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    while fake.calls("Egress/StopEgress").await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second StopEgress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the room takes a new start instead of `already_recording`.
    fake.configure(&server, true).await;
    let again = start(&mut ada, &mut []).await;
    assert_ne!(again, id);
}
