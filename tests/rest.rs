//! The server-to-server REST API, the manual recorder's reports, the start
//! timeout, and the operations endpoints.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{ADMIN_KEY, Server, config, http};

async fn admin(
    method: reqwest::Method,
    server: &Server,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http()
        .request(method, server.url(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rooms_are_listed_with_participants_consent_and_state() {
    let server = Server::start().await;
    let (status, body) = admin(reqwest::Method::GET, &server, "/v1/rooms", None).await;
    assert_eq!((status, body), (200, json!({"rooms": []})));

    let (mut ada, _) = server.join("standup", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("standup", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    ada.expect("control", "update").await;

    let (status, body) = admin(reqwest::Method::GET, &server, "/v1/rooms", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["rooms"][0]["id"], "standup");
    let (status, room) = admin(reqwest::Method::GET, &server, "/v1/rooms/standup", None).await;
    assert_eq!(status, 200);
    assert_eq!(room["recording"], json!({"status": "inactive"}));
    let participants = room["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 2);
    assert_eq!(participants[1]["id"], bob.id);
    assert_eq!(participants[1]["recording"]["consents_recording"], true);

    let (status, body) = admin(reqwest::Method::GET, &server, "/v1/rooms/nobody-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "room_not_found");
}

#[tokio::test]
async fn the_admin_key_is_required() {
    let server = Server::start().await;
    let response = http().get(server.url("/v1/rooms")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_admin_key");
    let response = http()
        .post(server.url("/v1/rooms/r/recording"))
        .bearer_auth("wrong-key-wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let mut no_key = config();
    no_key.auth.admin_key = None;
    let server = Server::with(no_key).await;
    let response = http()
        .get(server.url("/v1/rooms"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "admin_api_disabled"
    );
}

#[tokio::test]
async fn start_and_stop_through_the_api_fan_out() {
    let server = Server::start().await;
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/empty/recording",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("room_not_found"))
    );

    let (mut ada, _) = server.join("room", "Ada", Role::User).await;
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["status"], "recording");
    let id = body["recording_id"].as_str().unwrap().to_owned();
    assert_eq!(ada.expect("recording", "started").await["recording_id"], id);
    ada.expect("recording", "status").await;

    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("already_recording"))
    );

    let (status, body) = admin(
        reqwest::Method::DELETE,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "inactive");
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    ada.expect("recording", "status").await;

    let (status, body) = admin(
        reqwest::Method::DELETE,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("not_recording"))
    );
}

fn confirming(start_timeout_s: u64) -> onair::Config {
    let mut config = config();
    config.recording.manual_confirm = true;
    config.recording.start_timeout_s = start_timeout_s;
    config
}

#[tokio::test]
async fn the_recorder_confirms_and_stops_through_status_reports() {
    let server = Server::with(confirming(30)).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let status = ada.expect("recording", "status").await;
    assert_eq!(status["status"], "initializing");
    let id = status["recording_id"].as_str().unwrap().to_owned();

    // A late joiner sees `initializing`.
    let (mut bob, success) = server.join("room", "Bob", Role::User).await;
    assert_eq!(success["recording"]["status"], "initializing");
    ada.expect("control", "joined").await;

    let path = "/v1/rooms/room/recording/status";
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "recording", "recording_id": "other"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_recording_id"))
    );
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "recording", "recording_id": id})),
    )
    .await;
    assert_eq!((status, body["status"].clone()), (200, json!("recording")));
    for client in [&mut ada, &mut bob] {
        assert_eq!(
            client.expect("recording", "started").await["recording_id"],
            id
        );
        assert_eq!(
            client.expect("recording", "status").await["status"],
            "recording"
        );
    }
    // A duplicate report changes nothing and sends nothing.
    let (status, _) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "recording", "recording_id": id})),
    )
    .await;
    assert_eq!(status, 200);

    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    for client in [&mut ada, &mut bob] {
        assert_eq!(
            client.expect("recording", "status").await["status"],
            "stopping"
        );
    }
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "stopped", "recording_id": id})),
    )
    .await;
    assert_eq!((status, body["status"].clone()), (200, json!("inactive")));
    for client in [&mut ada, &mut bob] {
        assert_eq!(
            client.expect("recording", "stopped").await["recording_id"],
            id
        );
        assert_eq!(
            client.expect("recording", "status").await["status"],
            "inactive"
        );
    }
    // A late `stopped` is acknowledged.
    let (status, _) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "stopped", "recording_id": id})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        path,
        Some(json!({"status": "paused", "recording_id": id})),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (422, json!("invalid_body")));
}

#[tokio::test]
async fn a_recorder_failure_is_announced_and_a_new_start_works() {
    let server = Server::with(confirming(30)).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"].clone();
    let (status, _) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording/status",
        Some(json!({"status": "failed", "recording_id": id, "reason": "disk full"})),
    )
    .await;
    assert_eq!(status, 200);
    let failed = ada.expect("recording", "status").await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "disk full");
    let (_, room) = admin(reqwest::Method::GET, &server, "/v1/rooms/room", None).await;
    assert_eq!(room["recording"]["status"], "failed");
    assert_eq!(room["recording"]["reason"], "disk full");

    ada.recording(json!({"action": "start"})).await;
    let again = ada.expect("recording", "status").await;
    assert_eq!(again["status"], "initializing");
    assert_ne!(again["recording_id"], id);
}

#[tokio::test]
async fn a_recorder_that_never_confirms_times_out() {
    let server = Server::with(confirming(1)).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"].clone();
    bob.expect("recording", "status").await;

    let error = ada.expect("recording", "error").await;
    assert_eq!(error["error"], "recorder_timeout");
    for client in [&mut ada, &mut bob] {
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "inactive");
        assert_eq!(status["reason"], "recorder_timeout");
        assert_eq!(status["recording_id"], id);
    }
    // Only the requester hears of the timeout as an error.
    bob.expect_silence(Duration::from_millis(300)).await;

    ada.recording(json!({"action": "start"})).await;
    assert_eq!(
        ada.expect("recording", "status").await["status"],
        "initializing"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start().await;
    let response = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = http().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = http().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "not_found");
}

#[tokio::test]
async fn recording_can_be_disabled() {
    let mut config = config();
    config.recording.enabled = false;
    let server = Server::with(config).await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    assert_eq!(
        ada.expect("recording", "error").await["error"],
        "recording_disabled"
    );
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("recording_disabled"))
    );
}

#[tokio::test]
async fn metrics_are_served_to_allowed_addresses_only() {
    let server = Server::start().await;
    let (_ada, _) = server.join("room", "Ada", Role::User).await;
    let response = http().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for name in [
        "onair_connections",
        "onair_participants",
        "onair_frames_sent_total",
        "onair_outbox_deliveries{state=\"pending\"}",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }

    let mut config = config();
    config.metrics.allowed_ips = vec!["192.0.2.1".parse().unwrap()];
    let server = Server::with(config).await;
    let response = http().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn the_server_says_what_it_offers_without_credentials() {
    let server = Server::start().await;
    let response = http().get(server.url("/v1/server")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], "onair");
    assert_eq!(body["dev_mode"], false);
    assert_eq!(body["backend"], "manual");
    assert_eq!(body["recording_enabled"], true);
    assert!(body["version"].is_string());
    // Development mode says so, and the page uses this instead of probing.
    let mut dev = config();
    dev.auth.jwt_secret = None;
    dev.auth.admin_key = None;
    let server = Server::with(dev).await;
    let body: Value = http()
        .get(server.url("/v1/server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["dev_mode"], true);
}

#[tokio::test]
async fn a_rest_start_may_name_the_owner_of_the_recording() {
    let server = Server::start().await;
    let (mut ada, _) = server.join("room", "Ada", Role::User).await;
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording",
        Some(json!({"owner": "\u{7}"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_owner"))
    );
    let (status, body) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording",
        Some(json!({"owner": "grace"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["recording_id"].as_str().unwrap().to_owned();
    ada.expect("recording", "started").await;
    admin(
        reqwest::Method::DELETE,
        &server,
        "/v1/rooms/room/recording",
        None,
    )
    .await;
    // The recorder hands the file in; the catalog names grace as its owner.
    let (status, _) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recordings",
        Some(json!({"recording_id": id, "url": "https://cdn.example/r.mp4", "name": "r.mp4", "duration_s": 1.0, "size_bytes": 10})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, shown) = admin(
        reqwest::Method::GET,
        &server,
        &format!("/v1/recordings/{id}"),
        None,
    )
    .await;
    assert_eq!((status, shown["owner"].clone()), (200, json!("grace")));
    support::schemas::validate_rest_recording(&shown).unwrap();
}

#[tokio::test]
async fn a_failure_reported_by_the_manual_recorder_stops_what_was_started() {
    let server = Server::start().await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.until("recording", "started").await;
    let (status, _) = admin(
        reqwest::Method::POST,
        &server,
        "/v1/rooms/room/recording/status",
        Some(json!({"status": "failed", "recording_id": id, "reason": "disk full"})),
    )
    .await;
    assert_eq!(status, 200);
    // Everyone who saw `started` sees its `stopped`, then why.
    for client in [&mut ada, &mut bob] {
        client.until("recording", "status").await;
        assert_eq!(
            client.expect("recording", "stopped").await["recording_id"],
            id
        );
        let failed = client.expect("recording", "status").await;
        assert_eq!(
            (failed["status"].as_str(), failed["reason"].as_str()),
            (Some("failed"), Some("disk full"))
        );
    }
    // A new start works.
    ada.recording(json!({"action": "start"})).await;
    assert_ne!(ada.expect("recording", "started").await["recording_id"], id);
}
