//! The seed-002 protocol end to end: the real server on port 0, real
//! WebSocket clients, every server frame checked against `protocol/` schemas.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::json;
use support::harness::{Client, Server};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn full_recording_lifecycle_with_three_participants() {
    let server = Server::start().await;

    // A moderator joins an empty room.
    let (mut ada, success) = server.join("standup", "Ada", Role::Moderator).await;
    assert_eq!(success["participants"], json!([]));
    assert_eq!(success["recording"], json!(null));
    assert_eq!(success["role"], "moderator");
    assert_eq!(success["display_name"], "Ada");

    // A user joins: she sees Ada, Ada sees her with consent off.
    let (mut bob, success) = server.join("standup", "Bob", Role::User).await;
    let others = success["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["id"], ada.id);
    assert_eq!(others[0]["control"]["role"], "moderator");
    assert_eq!(others[0]["recording"]["consents_recording"], false);
    let joined = ada.expect("control", "joined").await;
    assert_eq!(joined["id"], bob.id);
    assert_eq!(joined["control"]["participation_kind"], "user");
    assert_eq!(joined["recording"]["consents_recording"], false);

    // Consent is seen by the others.
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = ada.expect("control", "update").await;
    assert_eq!(update["id"], bob.id);
    assert_eq!(update["recording"]["consents_recording"], true);

    // The moderator starts: everyone gets the status and `started`.
    ada.recording(json!({"action": "start"})).await;
    let mut recording_id = None;
    for client in [&mut ada, &mut bob] {
        let started = client.expect("recording", "started").await;
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "recording");
        assert_eq!(status["provider"], "manual");
        let id = started["recording_id"].as_str().unwrap().to_owned();
        assert_eq!(status["recording_id"], id);
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        recording_id.get_or_insert(id.clone());
        assert_eq!(recording_id.as_deref(), Some(id.as_str()));
    }
    let recording_id = recording_id.unwrap();

    // A late guest sees the recording and Bob's consent in join_success.
    let (mut cleo, success) = server.join("standup", "Cleo", Role::Guest).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": recording_id})
    );
    let bob_seen = success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == bob.id)
        .unwrap();
    assert_eq!(bob_seen["recording"]["consents_recording"], true);
    for client in [&mut ada, &mut bob] {
        let joined = client.expect("control", "joined").await;
        assert_eq!(joined["control"]["participation_kind"], "guest");
    }

    // Refusals go to the sender only.
    ada.recording(json!({"action": "start"})).await;
    assert_eq!(
        ada.expect("recording", "error").await["error"],
        "already_recording"
    );
    bob.recording(json!({"action": "start"})).await;
    assert_eq!(
        bob.expect("recording", "error").await["error"],
        "insufficient_permissions"
    );
    cleo.recording(json!({"action": "stop", "recording_id": recording_id}))
        .await;
    assert_eq!(
        cleo.expect("recording", "error").await["error"],
        "insufficient_permissions"
    );
    ada.recording(
        json!({"action": "stop", "recording_id": "00000000-0000-0000-0000-000000000000"}),
    )
    .await;
    assert_eq!(
        ada.expect("recording", "error").await["error"],
        "invalid_recording_id"
    );

    // A moderator whose token says `recording: false` may not start or stop.
    let mut claims = server.claims("standup", "Dora", Role::Moderator);
    claims.recording = Some(false);
    let mut dora = Client::connect_query(&server, &server.mint(&claims)).await;
    dora.join(None).await;
    dora.recording(json!({"action": "stop", "recording_id": recording_id}))
        .await;
    assert_eq!(
        dora.expect("recording", "error").await["error"],
        "insufficient_permissions"
    );
    for client in [&mut ada, &mut bob, &mut cleo] {
        client.expect("control", "joined").await;
    }
    for client in [&mut bob, &mut cleo] {
        client.expect_silence(QUIET).await;
    }

    // Another moderator may stop what Ada started.
    let (mut eve, _) = server.join("standup", "Eve", Role::Moderator).await;
    for client in [&mut ada, &mut bob, &mut cleo, &mut dora] {
        client.expect("control", "joined").await;
    }
    eve.recording(json!({"action": "stop", "recording_id": recording_id}))
        .await;
    for client in [&mut ada, &mut bob, &mut cleo, &mut dora, &mut eve] {
        let stopped = client.expect("recording", "stopped").await;
        assert_eq!(stopped["recording_id"], recording_id);
        let status = client.expect("recording", "status").await;
        assert_eq!(status["status"], "inactive");
    }

    // A new start works after a stop, and a dropped socket is `left` for the others.
    let cleo_id = cleo.id.clone();
    drop(cleo);
    for client in [&mut ada, &mut bob, &mut dora, &mut eve] {
        assert_eq!(client.expect("control", "left").await["id"], cleo_id);
    }
    ada.recording(json!({"action": "start"})).await;
    let started = ada.expect("recording", "started").await;
    assert_eq!(
        ada.expect("recording", "status").await["status"],
        "recording"
    );
    assert_ne!(started["recording_id"], recording_id);
    server.stop().await;
}

#[tokio::test]
async fn display_name_from_join_overrides_the_token() {
    let server = Server::start().await;
    let mut client =
        Client::connect_query(&server, &server.token("r", "Token Name", Role::User)).await;
    let success = client.join(Some("  Chosen  ")).await;
    assert_eq!(success["display_name"], "Chosen");
    let mut long = Client::connect_query(&server, &server.token("r", "X", Role::User)).await;
    long.send(json!({"namespace": "control", "payload": {"action": "join", "display_name": "x".repeat(101)}}))
        .await;
    let error = long.expect("control", "error").await;
    // Every refused display name is one error value, whatever is wrong with it.
    assert_eq!(error["error"], "invalid_display_name");
}

#[tokio::test]
async fn bad_input_gets_errors_and_leaves_the_room_alone() {
    let mut config = support::harness::config();
    config.server.max_frame_bytes = 1024;
    let server = Server::with(config).await;
    let (mut good, _) = server.join("room", "Good", Role::Moderator).await;

    // Before join: commands are refused, the socket stays open.
    let mut bad = Client::connect_query(&server, &server.token("room", "Bad", Role::User)).await;
    bad.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    assert_eq!(
        bad.expect("control", "error").await["error"],
        "not_yet_joined"
    );
    bad.send_raw(tokio_tungstenite::tungstenite::Message::text("{not json"))
        .await;
    assert_eq!(
        bad.expect("control", "error").await["error"],
        "invalid_json"
    );
    bad.send(json!({"namespace": "chat", "payload": {"action": "say"}}))
        .await;
    let error = bad.expect("control", "error").await;
    assert_eq!(error["error"], "invalid_namespace");
    assert!(error["detail"].as_str().unwrap().contains("chat"));

    bad.join(None).await;
    good.expect("control", "joined").await;
    bad.send(json!({"namespace": "control", "payload": {"action": "join"}}))
        .await;
    assert_eq!(
        bad.expect("control", "error").await["error"],
        "already_joined"
    );

    // A payload that does not fit its action is named.
    bad.recording(json!({"action": "stop"})).await;
    let error = bad.expect("recording", "error").await;
    assert_eq!(error["error"], "invalid_payload");
    assert!(
        error["detail"].as_str().unwrap().contains("recording_id"),
        "{error}"
    );
    bad.recording(json!({"action": "set_consent", "consent": "yes"}))
        .await;
    assert_eq!(
        bad.expect("recording", "error").await["error"],
        "invalid_payload"
    );
    bad.recording(json!({"action": "dance"})).await;
    let error = bad.expect("recording", "error").await;
    assert!(
        error["detail"].as_str().unwrap().contains("dance"),
        "{error}"
    );
    bad.send(json!([1, 2, 3])).await;
    assert_eq!(
        bad.expect("control", "error").await["error"],
        "invalid_json"
    );

    // None of it reached the well-behaved client.
    good.expect_silence(QUIET).await;

    // A frame over the limit closes with 1009.
    let bad_id = bad.id.clone();
    bad.send_raw(tokio_tungstenite::tungstenite::Message::text(
        "x".repeat(2048),
    ))
    .await;
    let close = bad.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(good.expect("control", "left").await["id"], bad_id);

    // A binary frame closes with 1009 as well.
    let (mut binary, _) = server.join("room", "Binary", Role::User).await;
    good.expect("control", "joined").await;
    binary
        .send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await;
    let close = binary.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);
    good.expect("control", "left").await;

    // The good client still works.
    good.recording(json!({"action": "start"})).await;
    good.expect("recording", "started").await;
    good.expect("recording", "status").await;
}

#[tokio::test]
async fn second_join_is_refused() {
    let server = Server::start().await;
    let (mut client, _) = server.join("room", "Ada", Role::User).await;
    client
        .send(json!({"namespace": "control", "payload": {"action": "join"}}))
        .await;
    assert_eq!(
        client.expect("control", "error").await["error"],
        "already_joined"
    );
}

#[tokio::test]
async fn rate_limit_refuses_excess_messages_but_keeps_the_socket() {
    let mut config = support::harness::config();
    config.server.messages_per_second = 2;
    config.server.message_burst = 3;
    let server = Server::with(config).await;
    let (mut watcher, _) = server.join("room", "Watcher", Role::User).await;
    let (mut flooder, _) = server.join("room", "Flooder", Role::User).await;
    watcher.expect("control", "joined").await;
    for i in 0..30 {
        flooder
            .recording(json!({"action": "set_consent", "consent": i % 2 == 0}))
            .await;
    }
    let error = flooder.until("control", "error").await;
    assert_eq!(error["error"], "rate_limited");
    // Some updates got through, and the socket is still open for more later.
    watcher.expect("control", "update").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    while tokio::time::timeout(QUIET, watcher.recv()).await.is_ok() {}
    flooder
        .recording(json!({"action": "set_consent", "consent": false}))
        .await;
    flooder
        .recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = watcher.until("control", "update").await;
    assert_eq!(update["id"], flooder.id);
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = Server::start().await;
    let (mut a1, _) = server.join("alpha", "A1", Role::Moderator).await;
    let (mut b1, _) = server.join("beta", "B1", Role::Moderator).await;
    let (mut a2, _) = server.join("alpha", "A2", Role::User).await;
    a1.expect("control", "joined").await;
    a2.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    a1.recording(json!({"action": "start"})).await;
    a1.expect("control", "update").await;
    a1.expect("recording", "started").await;
    a1.expect("recording", "status").await;
    b1.expect_silence(QUIET).await;
    // Beta's own recording is independent of alpha's.
    b1.recording(json!({"action": "start"})).await;
    b1.expect("recording", "started").await;
    b1.expect("recording", "status").await;
    let (_b2, success) = server.join("beta", "B2", Role::User).await;
    assert_eq!(success["participants"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn join_timeout_closes_idle_sockets() {
    let mut config = support::harness::config();
    config.server.join_timeout_s = 1;
    let server = Server::with(config).await;
    let mut idle = Client::connect_query(&server, &server.token("r", "Idle", Role::User)).await;
    let close = idle.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test]
async fn rooms_disappear_when_the_last_participant_leaves() {
    // No grace period: the room's emptying stops the recording at once
    // (tests/deadlines.rs covers the grace period).
    let mut config = support::harness::config();
    config.recording.empty_room_grace_s = 0;
    let server = Server::with(config).await;
    let (mut ada, _) = server.join("ephemeral", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let started = ada.expect("recording", "started").await;
    ada.expect("recording", "status").await;
    drop(ada);
    // The room is gone: a new joiner finds an empty room with no recording.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_client, success) = server.join("ephemeral", "Bob", Role::User).await;
        if success["participants"] == json!([]) {
            assert_eq!(success["recording"], json!(null));
            assert!(started["recording_id"].is_string());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "room never emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let server = Server::start().await;
    let (mut ada, _) = server.join("r", "Ada", Role::User).await;
    let stopping = tokio::spawn(server.stop());
    let close = ada.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    stopping.await.unwrap();
}
