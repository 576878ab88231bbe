//! The recordings API over a real SQLite file: hand-in, listing, media with
//! Range, signed URLs, deletion, and what survives a restart or a crash.

mod support;

use onair::protocol::Role;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::binary::{self, Onair};
use support::harness::{ADMIN_KEY, Client, Server, config, http};

async fn hand_in_file(server: &Server, room: &str, id: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = Form::new()
        .text("recording_id", id.to_owned())
        .text("duration_s", "2.5")
        .part(
            "file",
            Part::bytes(bytes)
                .file_name("standup.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        );
    http()
        .post(server.url(&format!("/v1/rooms/{room}/recordings")))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_handed_in_file_is_announced_listed_served_and_deleted() {
    let server = Server::start().await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    ada.expect("control", "joined").await;
    let bytes = content(100_000);

    let response = hand_in_file(&server, "room", "rec-1", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["size_bytes"], 100_000);
    assert_eq!(created["name"], "standup.mp4");
    assert_eq!(created["url"], "/v1/recordings/rec-1/media");
    for client in [&mut ada, &mut bob] {
        let available = client.expect("recording", "recording_available").await;
        assert_eq!(available["recording_id"], "rec-1");
        assert_eq!(available["size_bytes"], 100_000);
        assert_eq!(available["duration_s"], 2.5);
    }

    // The same id twice is refused; the first stays.
    let again = hand_in_file(&server, "room", "rec-1", content(10)).await;
    assert_eq!(again.status(), 409);

    // Participants of the room may list and fetch; other rooms may not.
    let bob_token = server.token("room", "Bob", Role::User);
    let list: Value = http()
        .get(server.url("/v1/recordings"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["recordings"][0]["id"], "rec-1");
    let outsider = server.token("elsewhere", "Eve", Role::Moderator);
    let response = http()
        .get(server.url("/v1/recordings/rec-1"))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http()
        .get(server.url("/v1/recordings?room=room"))
        .bearer_auth(&outsider)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http()
        .get(server.url("/v1/recordings"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // The whole file, and a range of it.
    let media = server.url("/v1/recordings/rec-1/media");
    let response = http()
        .get(&media)
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);
    let response = http()
        .get(&media)
        .bearer_auth(ADMIN_KEY)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        "bytes 1000-1999/100000"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes[1000..2000]);

    // A signed URL needs no header; a tampered one is refused.
    let signed: Value = http()
        .get(server.url("/v1/recordings/rec-1/url"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = signed["url"].as_str().unwrap();
    let response = http().get(server.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 100_000);
    let tampered = url.replace("signature=", "signature=00");
    assert_eq!(
        http()
            .get(server.url(&tampered))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let expired = format!("{media}?expires=1&signature=00");
    assert_eq!(http().get(&expired).send().await.unwrap().status(), 403);

    // Only moderators (and the admin key) delete.
    let response = http()
        .delete(server.url("/v1/recordings/rec-1"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let ada_token = server.token("room", "Ada", Role::Moderator);
    let response = http()
        .delete(server.url("/v1/recordings/rec-1"))
        .bearer_auth(&ada_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    for client in [&mut ada, &mut bob] {
        let deleted = client.expect("recording", "recording_deleted").await;
        assert_eq!(deleted["recording_id"], "rec-1");
    }
    let response = http()
        .get(&media)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "recording_not_found"
    );
}

#[tokio::test]
async fn external_recordings_redirect_and_bad_hand_ins_are_refused() {
    let server = Server::start().await;
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_KEY);
    let response = admin(http().post(server.url("/v1/rooms/room/recordings")))
        .json(&json!({"url": "https://cdn.example/a.mp4", "name": "a.mp4", "duration_s": 60.0, "size_bytes": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["external_location"], "https://cdn.example/a.mp4");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(server.url(&format!(
            "/v1/recordings/{}/media",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "https://cdn.example/a.mp4");

    let response = admin(http().post(server.url("/v1/rooms/room/recordings")))
        .json(&json!({"url": "file:///etc/passwd", "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let empty = hand_in_file(&server, "room", "rec-empty", Vec::new()).await;
    assert_eq!(empty.status(), 400);
    assert_eq!(empty.json::<Value>().await.unwrap()["code"], "empty_file");
    let form = Form::new().text("recording_id", "rec-x");
    let response = admin(http().post(server.url("/v1/rooms/room/recordings")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "missing_file"
    );
    let participant = server.token("room", "Ada", Role::Moderator);
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(participant)
        .json(&json!({"url": "https://cdn.example/a.mp4", "name": "a.mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn the_catalog_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config();
    config.store.path = data.path().join("onair.db");
    config.storage.path = data.path().join("recordings");
    let server = Server::with(config.clone()).await;
    assert_eq!(
        hand_in_file(&server, "room", "kept", content(1000))
            .await
            .status(),
        201
    );
    server.stop().await;

    let server = Server::with(config).await;
    let response = http()
        .get(server.url("/v1/recordings/kept/media"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().to_vec(), content(1000));
}

/// The real binary on a free port with the data directory `data` and the
/// extra environment `env`; returns once it listens.
fn spawn_onair(data: &std::path::Path, env: &[(&str, &str)]) -> Onair {
    Onair::spawn(binary::command(data).envs(env.iter().copied()))
}

#[tokio::test]
async fn a_recording_survives_a_crash_and_late_reports_still_land() {
    let data = tempfile::tempdir().unwrap();
    let first = spawn_onair(data.path(), &[]);
    let server = &first.server;
    let (mut ada, _) = server.join("standup", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "started").await["recording_id"].clone();

    // kill -9: no shutdown, no goodbye.
    first.kill9();

    let second = spawn_onair(data.path(), &[]);
    let server = &second.server;
    // Nobody is in the room, but its recording is known...
    let room: Value = http()
        .get(server.url("/v1/rooms/standup"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(room["code"], "room_not_found");
    // ...and a rejoining client sees it with the same id.
    let mut rejoined =
        Client::connect_query(server, &server.token("standup", "Ada", Role::Moderator)).await;
    let success = rejoined.join(None).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    drop(rejoined);

    // With everyone gone, the manual backend stopped the recording; a late
    // report from the recorder is acknowledged.
    let response = http()
        .post(server.url("/v1/rooms/standup/recording/status"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"status": "stopped", "recording_id": id}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status() == 200 || response.status() == 404,
        "{}",
        response.status()
    );
    second.kill9();
}

#[tokio::test]
async fn a_provider_report_reaches_a_room_nobody_is_in() {
    let data = tempfile::tempdir().unwrap();
    let env = [("ONAIR_RECORDING__MANUAL_CONFIRM", "true")];
    let first = spawn_onair(data.path(), &env);
    let server = &first.server;
    let (mut ada, _) = server.join("standup", "Ada", Role::Moderator).await;
    ada.recording(json!({"action": "start"})).await;
    let id = ada.expect("recording", "status").await["recording_id"].clone();
    first.kill9();

    // After the crash, before anyone rejoins, the recorder confirms.
    let second = spawn_onair(data.path(), &env);
    let server = &second.server;
    let response = http()
        .post(server.url("/v1/rooms/standup/recording/status"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"status": "recording", "recording_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "recording"
    );
    let (_ada, success) = server.join("standup", "Ada", Role::Moderator).await;
    assert_eq!(
        success["recording"],
        json!({"status": "recording", "recording_id": id})
    );
    second.kill9();
}

#[tokio::test]
async fn handed_out_links_are_absolute_signed_and_open_without_credentials() {
    const PUBLIC: &str = "https://onair.example.com";
    let mut config = config();
    config.server.public_url = Some(format!("{PUBLIC}/"));
    let server = Server::with(config).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    let bytes = content(50_000);
    assert_eq!(
        hand_in_file(&server, "room", "rec-1", bytes.clone())
            .await
            .status(),
        201
    );
    let available = bob.expect("recording", "recording_available").await;
    let link = available["url"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{PUBLIC}/v1/recordings/rec-1/media?expires=")),
        "{link}"
    );
    // This test reaches onair at its own address: the path of the link.
    let path = link.strip_prefix(PUBLIC).unwrap();
    let fetched = http().get(server.url(path)).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().await.unwrap() == bytes);
    // So is the one the REST API signs on request.
    let signed: Value = http()
        .get(server.url("/v1/recordings/rec-1/url"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        signed["url"].as_str().unwrap().starts_with(PUBLIC),
        "{signed}"
    );
    // A tampered link, or one for another recording, is refused with a JSON error.
    let tampered = format!(
        "{}0",
        path.trim_end_matches(|c: char| c.is_ascii_hexdigit())
    );
    let other = path.replace("/rec-1/", "/rec-2/");
    for bad in [tampered, other] {
        let response = http().get(server.url(&bad)).send().await.unwrap();
        assert_eq!(response.status(), 403, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_signature");
    }
}

async fn patch(server: &Server, id: &str, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = http().patch(server.url(&format!("/v1/recordings/{id}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn recordings_older_than_the_retention_are_deleted_unless_on_legal_hold() {
    let mut config = config();
    // Long enough for the hold to be set first, even on a slow machine.
    config.storage.retention = "3s".into();
    let server = Server::with(config).await;
    let (mut bob, _) = server.join("room", "Bob", Role::User).await;
    for id in ["held", "expiring"] {
        assert_eq!(
            hand_in_file(&server, "room", id, content(1000))
                .await
                .status(),
            201
        );
        bob.expect("recording", "recording_available").await;
    }
    // Legal hold: only with the admin key, only a real time, only a real recording.
    let far = "2099-01-01T00:00:00Z";
    let (status, _) = patch(&server, "held", json!({"keep_until": far}), None).await;
    assert_eq!(status, 401);
    let (status, body) = patch(
        &server,
        "held",
        json!({"keep_until": "next week"}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_keep_until"))
    );
    let (status, _) = patch(
        &server,
        "nothing",
        json!({"keep_until": far}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(status, 404);
    let (status, held) = patch(&server, "held", json!({"keep_until": far}), Some(ADMIN_KEY)).await;
    assert_eq!(
        (status, held["keep_until"].as_str()),
        (200, Some("2099-01-01T00:00:00.000Z"))
    );
    support::schemas::validate_rest_recording(&held).unwrap();

    // The other one goes as a DELETE would: the room is told, the file and the entry are gone.
    let deleted = bob.expect("recording", "recording_deleted").await;
    assert_eq!(deleted["recording_id"], "expiring");
    let gone = http()
        .get(server.url("/v1/recordings/expiring"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    // The held one stays through further sweeps…
    bob.expect_silence(std::time::Duration::from_millis(2500))
        .await;
    let kept = http()
        .get(server.url("/v1/recordings/held/media"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    // …until the hold is lifted.
    let (status, lifted) = patch(
        &server,
        "held",
        json!({"keep_until": null}),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!((status, lifted["keep_until"].clone()), (200, Value::Null));
    let deleted = bob.expect("recording", "recording_deleted").await;
    assert_eq!(deleted["recording_id"], "held");
}
