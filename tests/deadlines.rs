//! "The state never lies" (SPEC §3): every waiting state ends at its
//! deadline, also after `kill -9` (deadlines are saved with the transition
//! that armed them, not kept in a timer), and an emptied room keeps its
//! recording for `[recording] empty_room_grace_s`, so a reload does not end it.
//!
//! The real binary for the crashes, the in-process server otherwise; the
//! deadlines are shortened by configuration, and every wait is bounded by
//! the harness's receive timeout, far above them. Nothing asserts on speed.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::binary::Onair;
use support::harness::{ADMIN_KEY, Client, Server, config, http};

const ROOM: &str = "standup";

/// The manual backend waiting for its recorder's reports: starts stay
/// `initializing` and stops `stopping` until the recorder says otherwise.
const CONFIRMING: &str =
    "[recording]\nmanual_confirm = true\nstart_timeout_s = 3\nstop_timeout_s = 3\n";

/// The next `status` event with this status (earlier ones are skipped).
async fn status(client: &mut Client, status: &str) -> Value {
    loop {
        let payload = client.until("recording", "status").await;
        if payload["status"] == status {
            return payload;
        }
    }
}

async fn report(server: &Server, body: Value) {
    let response = http()
        .post(server.url(&format!("/v1/rooms/{ROOM}/recording/status")))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_start_cut_off_by_kill_9_still_ends_at_its_deadline() {
    let data = tempfile::tempdir().unwrap();
    let onair = Onair::spawn_with_config(data.path(), CONFIRMING);
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = status(&mut ada, "initializing").await["recording_id"].clone();
    // The process dies with its timers; the recorder never answers.
    drop(ada);
    onair.kill9();

    let onair = Onair::spawn_with_config(data.path(), CONFIRMING);
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(success["recording"]["status"], "initializing", "{success}");
    // The deadline saved with the start fires in the new process.
    let ended = status(&mut ada, "inactive").await;
    assert_eq!(ended["recording_id"], id);
    assert_eq!(ended["reason"], "recorder_timeout");
    // The room is free: a new start works.
    ada.recording(json!({"action": "start"})).await;
    assert_ne!(status(&mut ada, "initializing").await["recording_id"], id);
}

#[tokio::test]
async fn a_stop_cut_off_by_kill_9_still_ends_and_stopped_still_comes() {
    let data = tempfile::tempdir().unwrap();
    let onair = Onair::spawn_with_config(data.path(), CONFIRMING);
    let (mut ada, _) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = status(&mut ada, "initializing").await["recording_id"]
        .as_str()
        .unwrap()
        .to_owned();
    report(
        &onair.server,
        json!({"status": "recording", "recording_id": id}),
    )
    .await;
    assert_eq!(ada.until("recording", "started").await["recording_id"], id);
    ada.recording(json!({"action": "stop", "recording_id": id}))
        .await;
    status(&mut ada, "stopping").await;
    drop(ada);
    onair.kill9();

    let onair = Onair::spawn_with_config(data.path(), CONFIRMING);
    let (mut ada, success) = onair.server.join(ROOM, "Ada", Role::Moderator).await;
    // Still being written, so still "recording" to a seed-002 client…
    assert_eq!(success["recording"]["status"], "recording", "{success}");
    // …until the stop deadline: `stopped` (it was started), then why.
    assert_eq!(ada.expect("recording", "stopped").await["recording_id"], id);
    let ended = status(&mut ada, "inactive").await;
    assert_eq!(ended["reason"], "stop_timeout");
}

fn with_grace(seconds: u64) -> onair::Config {
    let mut config = config();
    config.recording.empty_room_grace_s = seconds;
    config
}

#[tokio::test]
async fn a_reload_within_the_grace_period_keeps_the_recording() {
    let server = Server::with(with_grace(30)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();
    // The only participant reloads the page: the socket goes, a new one comes.
    drop(ada);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut ada, success) = server.join(ROOM, "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    ada.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn an_emptied_room_stops_its_recording_after_the_grace_period() {
    let server = Server::with(with_grace(1)).await;
    let (mut ada, _) = server.join(ROOM, "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();
    drop(ada);
    // Nobody comes back (looking sooner would be coming back: it would keep
    // the recording). Well past the 1 s grace, the next one in finds it ended.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_bob, success) = server.join(ROOM, "Bob", Role::User).await;
    assert_eq!(success["recording"], Value::Null, "{success} ({id})");
}

/// A WebSocket client written by hand on a raw TCP stream: it joins, then
/// never reads again, so it answers no ping (a closed laptop, a dropped
/// network: the kernel still acknowledges, nobody answers).
async fn vanishing_client(server: &Server, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /signaling?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // One masked text frame (RFC 6455 §5.3): `join`.
    let payload = br#"{"namespace":"control","payload":{"action":"join"}}"#;
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    tcp
}

#[tokio::test]
async fn a_socket_that_answers_no_ping_is_closed_and_the_others_are_told() {
    let mut config = config();
    config.server.ping_interval_s = 1;
    config.server.ping_timeout_s = 2;
    let server = Server::with(config).await;
    let (mut bob, _) = server.join(ROOM, "Bob", Role::User).await;
    let token = server.token(ROOM, "Ghost", Role::User);
    let _ghost = vanishing_client(&server, &token).await;
    let joined = bob.expect("control", "joined").await;
    // Bob reads (and so answers pings) all along; the ghost never does.
    let left = bob.until("control", "left").await;
    assert_eq!(left["id"], joined["id"]);
    // Bob, who answers, is still there.
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let (mut carol, success) = server.join(ROOM, "Carol", Role::User).await;
    let people: Vec<&str> = success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["control"]["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["Bob"]);
    carol.expect_silence(Duration::from_millis(100)).await;
}
