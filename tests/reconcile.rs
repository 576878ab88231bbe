//! Reconciliation with LiveKit (`[recording] reconcile_interval_s`, SPEC §3):
//! the real server on port 0 with a 1-second interval, real WebSocket
//! clients, and the fake LiveKit (`tests/livekit/fake-livekit.mjs`, LiveKit's
//! own SDK and protocol classes) whose `Egress/ListEgress` answers what the
//! test lists and checks the call's token and grant like its other methods.
//!
//! Needs Node.js ≥ 19 and npm (see `tests/livekit/setup.sh`).

mod support;

use std::time::Duration;

use onair::Config;
use onair::config::BackendKind;
use onair::protocol::{RecordingStatus, Role};
use onair::recording::{Effect, Input, Policy, StartMode, State, step};
use serde_json::{Value, json};
use support::fake_livekit::FakeLivekit;
use support::harness::{ADMIN_KEY, Client, RECV_TIMEOUT, Server, config, http};

const KEY: &str = "APIonairReconcile";
const SECRET: &str = "onair-reconcile-test-secret-0123456789";
const ROOM: &str = "standup";
/// Long enough to notice a frame that should not come.
const QUIET: Duration = Duration::from_millis(300);

impl FakeLivekit {
    /// Every recorded call of `method`.
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

    /// Waits until `method` has `count` calls that `keep` accepts; returns them.
    async fn wait_calls(
        &self,
        method: &str,
        count: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT * 2;
        loop {
            let calls: Vec<Value> = self
                .calls(method)
                .await
                .into_iter()
                .filter(|c| keep(c))
                .collect();
            if calls.len() >= count {
                return calls;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} such {method} calls, got {calls:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `rounds` more successful `ListEgress {active: true}` calls:
    /// once the last has come, the rounds before it are over.
    async fn wait_rounds(&self, rounds: usize) {
        let is_round = |c: &Value| c["status"] == 200 && c["request"]["active"] == true;
        let before = self
            .calls("Egress/ListEgress")
            .await
            .iter()
            .filter(|c| is_round(c))
            .count();
        self.wait_calls("Egress/ListEgress", before + rounds, is_round)
            .await;
    }

    /// Lists an egress for `ListEgress`; returns its `EgressInfo`.
    async fn list(&self, spec: Value) -> Value {
        self.post("list", spec).await
    }

    /// The one egress onair started.
    async fn only_egress_id(&self) -> String {
        let egresses = self.get("egresses").await;
        let egresses = egresses.as_array().unwrap();
        assert_eq!(egresses.len(), 1, "{egresses:#?}");
        egresses[0]["egress_id"].as_str().unwrap().to_owned()
    }
}

/// onair with the livekit backend, reconciling every second, and the fake
/// LiveKit (with the room, as seed 004 creates it) wired to it.
async fn setup(auto: bool, adjust: impl FnOnce(&mut Config)) -> (FakeLivekit, Server) {
    let fake = FakeLivekit::with_keys(KEY, SECRET).await;
    let mut config = config();
    config.recording.backend = BackendKind::Livekit;
    config.recording.reconcile_interval_s = 1;
    config.livekit.url = Some(fake.url());
    config.livekit.api_key = Some(KEY.into());
    config.livekit.api_secret = Some(SECRET.into());
    config.livekit.file_path = "recordings/{room_name}-{time}.mp4".into();
    config.livekit.request_timeout_s = 5;
    adjust(&mut config);
    let server = Server::with(config).await;
    fake.post(
        "config",
        json!({"webhookUrl": server.url("/webhooks/livekit"), "auto": auto}),
    )
    .await;
    fake.post("rooms", json!({"name": ROOM, "metadata": "{}"}))
        .await;
    (fake, server)
}

async fn expect_status(client: &mut Client, status: &str) -> Value {
    let payload = client.expect("recording", "status").await;
    assert_eq!(payload["status"], status, "{payload}");
    assert_eq!(payload["provider"], "livekit", "{payload}");
    payload
}

/// The moderator starts; everyone sees `initializing`, then `started`.
async fn start_recording(ada: &mut Client, bob: &mut Client) -> String {
    ada.recording(json!({"action": "start"})).await;
    let id = expect_status(ada, "initializing").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_status(bob, "initializing").await;
    for client in [ada, bob] {
        assert_eq!(
            client.expect("recording", "started").await["recording_id"],
            id
        );
        expect_status(client, "recording").await;
    }
    id
}

/// Whether `/metrics` counts a repair of this kind.
async fn metrics_count(server: &Server, reason: &str) -> bool {
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics.contains(&format!("onair_reconciled_total{{reason=\"{reason}\"}}"))
}

/// Waits until onair's room is no longer live (`GET /v1/rooms/{room}` is 404).
async fn room_is_gone(server: &Server) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let response = http()
            .get(server.url(&format!("/v1/rooms/{ROOM}")))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        if response.status() == 404 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room is still live: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `ListEgress` onair made carried the `roomRecord` grant and a body
/// LiveKit's protocol class reads; only a lookup of an egress the test had not
/// listed (yet) is `not_found`.
async fn every_list_was_accepted(fake: &FakeLivekit) {
    let lists = fake.calls("Egress/ListEgress").await;
    assert!(!lists.is_empty());
    for call in &lists {
        assert_eq!(call["claims"]["video"], json!({"roomRecord": true}));
        let looked_up = call["request"]["egress_id"].is_string();
        assert!(
            call["status"] == 200 || (looked_up && call["error"] == "not_found"),
            "{call:#}"
        );
    }
}

#[tokio::test]
async fn an_egress_livekit_completed_unheard_ends_the_recording_and_is_catalogued() {
    let (fake, server) = setup(true, |_| {}).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join(ROOM, "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    let id = start_recording(&mut ada, &mut bob).await;
    let egress_id = fake.only_egress_id().await;

    // LiveKit finished the egress and wrote its file, but its egress_ended
    // webhook never came.
    fake.list(json!({"egressId": egress_id, "status": "EGRESS_COMPLETE", "withFile": true}))
        .await;
    for client in [&mut ada, &mut bob] {
        assert_eq!(
            client.expect("recording", "stopped").await["recording_id"],
            id
        );
        let status = expect_status(client, "inactive").await;
        assert_eq!(status["recording_id"], id);
        assert_eq!(status["reason"], "reconciled");
        let available = client.expect("recording", "recording_available").await;
        assert_eq!(available["recording_id"], id);
        assert!(
            available["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{ROOM}-")),
            "{available}"
        );
    }
    // Catalogued, as the webhook would have.
    let response = http()
        .get(server.url(&format!("/v1/recordings/{id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recording: Value = response.json().await.unwrap();
    assert_eq!(recording["provider"], "livekit", "{recording}");
    assert_eq!(recording["room"], ROOM, "{recording}");
    assert!(metrics_count(&server, "ended").await);
    // A late joiner sees no recording; a new start works.
    let (_carol, success) = server.join(ROOM, "Carol", Role::Guest).await;
    assert_eq!(success["recording"], Value::Null);
    // Nothing is said twice, and nothing was stopped.
    fake.wait_rounds(2).await;
    ada.until("control", "joined").await;
    ada.expect_silence(QUIET).await;
    assert!(fake.calls("Egress/StopEgress").await.is_empty());
    every_list_was_accepted(&fake).await;
}

#[tokio::test]
async fn an_egress_that_came_up_after_its_start_timed_out_is_stopped() {
    came_up_after_its_start_timed_out(false).await;
}

/// The same with nobody left in onair's room: the room's state reads as
/// nothing, which a round believes once the next reads the same.
#[tokio::test]
async fn an_egress_that_came_up_after_everyone_left_is_stopped() {
    came_up_after_its_start_timed_out(true).await;
}

async fn came_up_after_its_start_timed_out(everyone_leaves: bool) {
    let (fake, server) = setup(false, |c| c.recording.start_timeout_s = 1).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    // The start timeout's own stop fails every attempt, so only
    // reconciliation can stop the egress.
    fake.post(
        "fail",
        json!({"method": "Egress/StopEgress", "status": 503, "code": "unavailable", "times": 3}),
    )
    .await;

    ada.recording(json!({"action": "start"})).await;
    let id = expect_status(&mut ada, "initializing").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let egress_id = fake.only_egress_id().await;
    // LiveKit never confirms: the room gives up.
    assert_eq!(
        ada.expect("recording", "error").await["error"],
        "recorder_timeout"
    );
    let status = expect_status(&mut ada, "inactive").await;
    assert_eq!(
        (&status["recording_id"], &status["reason"]),
        (&json!(id), &json!("recorder_timeout"))
    );
    let failed = |c: &Value| c["status"] == 503 && c["request"]["egress_id"] == egress_id.as_str();
    fake.wait_calls("Egress/StopEgress", 3, failed).await;
    if everyone_leaves {
        drop(ada);
        room_is_gone(&server).await;
        // Someone to notice a frame that should not come, elsewhere.
        ada = server.join("elsewhere", "Ada", Role::Moderator).await.0;
    }

    // Then the egress comes up anyway, recording people nobody accounts for.
    fake.list(json!({"egressId": egress_id, "status": "EGRESS_ACTIVE"}))
        .await;
    let stopped = |c: &Value| c["status"] == 200 && c["request"]["egress_id"] == egress_id.as_str();
    let calls = fake.wait_calls("Egress/StopEgress", 1, stopped).await;
    assert_eq!(calls[0]["claims"]["video"], json!({"roomRecord": true}));
    assert!(metrics_count(&server, "stopped").await);
    // The room is not disturbed.
    ada.expect_silence(QUIET).await;
    every_list_was_accepted(&fake).await;
}

#[tokio::test]
async fn an_egress_onair_did_not_start_is_never_touched() {
    let (fake, server) = setup(true, |_| {}).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join(ROOM, "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    let id = start_recording(&mut ada, &mut bob).await;
    let egress_id = fake.only_egress_id().await;

    // Another application records the same LiveKit room, and another room;
    // onair's own egress is listed as running, as it is.
    fake.list(json!({"roomName": ROOM, "status": "EGRESS_ACTIVE"}))
        .await;
    fake.list(json!({"roomName": "elsewhere", "status": "EGRESS_STARTING"}))
        .await;
    fake.list(json!({"egressId": egress_id, "status": "EGRESS_ACTIVE"}))
        .await;
    fake.wait_rounds(3).await;

    assert!(fake.calls("Egress/StopEgress").await.is_empty());
    for client in [&mut ada, &mut bob] {
        client.expect_silence(QUIET).await;
    }
    let (_carol, success) = server.join(ROOM, "Carol", Role::Guest).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    every_list_was_accepted(&fake).await;
}

#[test]
fn reconciled_is_a_stop_with_its_reason() {
    let policy = Policy {
        mode: StartMode::AwaitProvider,
        enabled: true,
        empty_room_grace: true,
    };
    let status = |reason: Option<&str>| Effect::AnnounceStatus {
        status: RecordingStatus::Inactive,
        recording_id: Some("r1".into()),
        reason: reason.map(Into::into),
    };
    let input = || Input::Reconciled {
        recording_id: "r1".into(),
    };
    let recording = State::Recording {
        recording_id: "r1".into(),
    };
    // Every `started` gets its `stopped`.
    assert_eq!(
        step(policy, &recording, input()),
        (
            State::Inactive,
            vec![
                Effect::AnnounceStopped {
                    recording_id: "r1".into()
                },
                status(Some("reconciled"))
            ]
        )
    );
    let initializing = State::Initializing {
        recording_id: "r1".into(),
        requested_by: None,
    };
    assert_eq!(
        step(policy, &initializing, input()),
        (State::Inactive, vec![status(Some("reconciled"))])
    );
    // Another recording, or none, is left alone.
    let other = State::Recording {
        recording_id: "r2".into(),
    };
    assert_eq!(step(policy, &other, input()), (other.clone(), vec![]));
    assert_eq!(
        step(policy, &State::Inactive, input()),
        (State::Inactive, vec![])
    );
}
