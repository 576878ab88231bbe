//! Large rooms (SPEC §3 "Large rooms", issue 14) against the real server, with
//! `[server] large_room_threshold` lowered to 3 so that a room of four is
//! large: moderators keep every per-participant event, the others see the
//! moderators and a paced `participant_count`, recording events reach
//! everyone, and a room that shrinks back catches its non-moderators up with
//! `joined`. Every frame is checked against `protocol/schemas` by the harness.
//! How fast a room of thousands joins is measured in `load-tests/`, never here.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{Client, Server, config};

const THRESHOLD: u32 = 3;

async fn server() -> Server {
    let mut config = config();
    config.server.large_room_threshold = THRESHOLD;
    Server::with(config).await
}

fn ids(participants: &Value) -> Vec<String> {
    let mut ids: Vec<String> = participants
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Reads until a `participant_count` with `count` and `consenting` arrives,
/// and returns every other frame read on the way. Fails if none comes in
/// 10 s; one is sent at most a second after the last change.
async fn until_count(client: &mut Client, count: u64, consenting: u64) -> Vec<Value> {
    let mut others = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, client.recv())
            .await
            .unwrap_or_else(|_| panic!("no participant_count {count}/{consenting} in time"));
        let payload = &frame["payload"];
        if payload["message"] == "participant_count" {
            if payload["count"] == count && payload["consenting"] == consenting {
                return others;
            }
        } else {
            others.push(frame);
        }
    }
}

/// `(message, subject id)` of a presence frame, `None` for anything else.
fn presence(frame: &Value) -> Option<(String, String)> {
    let payload = &frame["payload"];
    let message = payload["message"].as_str()?;
    matches!(message, "joined" | "left" | "update").then(|| {
        (
            message.to_owned(),
            payload["id"].as_str().unwrap().to_owned(),
        )
    })
}

#[tokio::test]
async fn a_large_room_shows_non_moderators_the_moderators_and_a_headcount() {
    let server = server().await;
    let room = "town-hall";
    let (mut host, _) = server.join(room, "host", Role::Moderator).await;
    let (mut ann, _) = server.join(room, "ann", Role::User).await;
    let (mut bob, success) = server.join(room, "bob", Role::Guest).await;
    // Three: still small, seed 002 exactly.
    assert!(success.get("participant_count").is_none(), "{success}");
    assert_eq!(ids(&success["participants"]), {
        let mut both = vec![host.id.clone(), ann.id.clone()];
        both.sort();
        both
    });
    host.expect("control", "joined").await;
    host.expect("control", "joined").await;
    ann.expect("control", "joined").await;

    // The fourth makes the room large.
    let (mut cid, success) = server.join(room, "cid", Role::User).await;
    assert_eq!(success["participant_count"], 4, "{success}");
    assert_eq!(ids(&success["participants"]), vec![host.id.clone()]);
    // A moderator joining a large room still sees everyone.
    let (mut dee, success) = server.join(room, "dee", Role::Moderator).await;
    assert_eq!(success["participant_count"], 5);
    assert_eq!(success["participants"].as_array().unwrap().len(), 4);

    // The first moderator hears of both, one by one; the others only of the
    // moderator, and of the count.
    let joined = host.until("control", "joined").await;
    assert_eq!(joined["id"], cid.id);
    let joined = host.until("control", "joined").await;
    assert_eq!(joined["id"], dee.id);
    for client in [&mut ann, &mut bob] {
        let seen = until_count(client, 5, 0).await;
        let presence: Vec<_> = seen.iter().filter_map(presence).collect();
        assert!(
            presence.iter().all(|(_, id)| *id == dee.id),
            "a non-moderator heard of a non-moderator in a large room: {presence:?}"
        );
    }

    // A non-moderator's consent reaches the moderators as `update`, the
    // others as the count.
    ann.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    for moderator in [&mut host, &mut dee] {
        let update = moderator.until("control", "update").await;
        assert_eq!(update["id"], ann.id);
        assert_eq!(update["recording"]["consents_recording"], true);
    }
    for client in [&mut bob, &mut cid] {
        let seen = until_count(client, 5, 1).await;
        let presence: Vec<_> = seen.iter().filter_map(presence).collect();
        assert!(
            presence
                .iter()
                .all(|(_, id)| *id == dee.id || *id == host.id),
            "a non-moderator heard of a non-moderator in a large room: {presence:?}"
        );
    }
    // A moderator's consent reaches everyone as `update`.
    host.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    for client in [&mut ann, &mut bob, &mut cid, &mut dee] {
        let update = client.until("control", "update").await;
        assert_eq!(update["id"], host.id);
    }

    // Recording events reach everyone, as in any room.
    host.recording(json!({"action": "start"})).await;
    let started = host.until("recording", "started").await;
    for client in [&mut ann, &mut bob, &mut cid, &mut dee] {
        assert_eq!(
            client.until("recording", "started").await["recording_id"],
            started["recording_id"]
        );
    }

    // Back to three non-moderators plus... four in all: still large. Then
    // three: small again, and the non-moderators are caught up.
    drop(dee);
    let left = host.until("control", "left").await;
    assert!(left["id"].is_string());
    until_count(&mut ann, 4, 2).await;
    drop(cid);
    host.until("control", "left").await;
    let mut caught_up = HashMap::new();
    for (name, client) in [("ann", &mut ann), ("bob", &mut bob)] {
        let joined = client.until("control", "joined").await;
        caught_up.insert(name, joined["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(caught_up["ann"], bob.id, "ann is told of bob again");
    assert_eq!(caught_up["bob"], ann.id, "bob is told of ann again");
    // Small again: per-participant presence for everyone.
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = ann.until("control", "update").await;
    assert_eq!(update["id"], bob.id);
    server.stop().await;
}

#[tokio::test]
async fn the_headcount_settles_on_the_truth_after_a_burst() {
    let server = server().await;
    let room = "webinar";
    let (mut host, _) = server.join(room, "host", Role::Moderator).await;
    let mut people = Vec::new();
    for k in 0..6 {
        people.push(server.join(room, &format!("p{k}"), Role::User).await.0);
    }
    // Everyone toggles consent a few times; the last value is `true` for the
    // even ones. However the counts were paced, the last one tells the truth.
    for round in 0..3 {
        for (k, person) in people.iter_mut().enumerate() {
            let consent = round < 2 || k % 2 == 0;
            person
                .recording(json!({"action": "set_consent", "consent": consent}))
                .await;
        }
    }
    // The moderator saw every change of every participant's final value.
    let mut consent = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consent.values().filter(|c: &&bool| **c).count() != 3 || consent.len() != 6 {
        let frame = tokio::time::timeout_at(deadline, host.recv())
            .await
            .expect("the moderator sees every update");
        if frame["payload"]["message"] == "update" {
            let payload = &frame["payload"];
            consent.insert(
                payload["id"].as_str().unwrap().to_owned(),
                payload["recording"]["consents_recording"]
                    .as_bool()
                    .unwrap(),
            );
        }
    }
    // A non-moderator's last count, once the room is quiet (one goes out at
    // most a second after a change), is the truth: 7 in the room, 3 consenting.
    let watcher = &mut people[1];
    let mut last = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::StreamExt::next(&mut watcher.ws),
    )
    .await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            let payload = &frame["payload"];
            assert_ne!(
                payload["message"], "update",
                "a non-moderator got an update: {frame}"
            );
            if payload["message"] == "participant_count" {
                last = Some((payload["count"].clone(), payload["consenting"].clone()));
            }
        }
    }
    assert_eq!(last, Some((json!(7), json!(3))));
    server.stop().await;
}
