//! A room over its fan-out budget (`[server] room_fanout_per_second`, issue
//! 16) holds its `update`s back and merges them per participant, but what
//! people see stays exact (seed 002): every consent change reaches everyone
//! with its final value, and recording events (`started`, `status`,
//! `stopped`) reach everyone, none dropped or merged. How fast is measured in
//! `load-tests/` (`busy-room`), never here.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{Client, Server, config};

/// How long a client may take to see everything it should (a generous bound:
/// at a budget of 5 deliveries a second the room needs a few seconds).
const SETTLE: Duration = Duration::from_secs(60);

/// What one client has seen of the room.
#[derive(Default)]
struct Seen {
    /// The latest consent seen per participant id.
    consent: HashMap<String, bool>,
    /// Recording events in order (`message` and `recording_id`).
    recording: Vec<(String, String)>,
}

impl Seen {
    fn take(&mut self, frame: &Value) {
        let payload = &frame["payload"];
        match (frame["namespace"].as_str(), payload["message"].as_str()) {
            (Some("control"), Some("update")) => {
                let id = payload["id"].as_str().unwrap().to_owned();
                let consent = payload["recording"]["consents_recording"]
                    .as_bool()
                    .unwrap();
                self.consent.insert(id, consent);
            }
            (Some("recording"), Some(message @ ("started" | "stopped"))) => {
                let id = payload["recording_id"].as_str().unwrap().to_owned();
                self.recording.push((message.to_owned(), id));
            }
            _ => {}
        }
    }
}

/// Reads `client` until `done(seen)` holds; every read has the harness's timeout.
async fn read_until(client: &mut Client, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !done(seen) {
        let frame = tokio::time::timeout_at(deadline, client.recv())
            .await
            .expect("the room settles in time");
        seen.take(&frame);
    }
}

#[tokio::test]
async fn a_room_over_its_fanout_budget_still_delivers_every_final_consent_and_recording_event() {
    let mut config = config();
    // Tiny: every `update` fan-out of this room has to wait for the budget.
    config.server.room_fanout_per_second = 5;
    let server = Server::with(config).await;
    let room = "over-budget";
    let (mut moderator, _) = server.join(room, "Mod", Role::Moderator).await;
    let mut users = Vec::new();
    for i in 0..3 {
        let (client, _) = server.join(room, &format!("User {i}"), Role::User).await;
        users.push(client);
    }

    // Each user toggles its consent quickly, ending on a value of its own.
    let finals: Vec<bool> = vec![true, false, true];
    for (user, last) in users.iter_mut().zip(&finals) {
        for consent in [true, false, true, false, *last] {
            user.recording(json!({"action": "set_consent", "consent": consent}))
                .await;
        }
    }
    // A recording starts and stops while updates are held back.
    moderator.recording(json!({"action": "start"})).await;
    let started = moderator.until("recording", "started").await;
    let recording_id = started["recording_id"].as_str().unwrap().to_owned();
    moderator
        .recording(json!({"action": "stop", "recording_id": recording_id}))
        .await;

    let expected: HashMap<String, bool> = users
        .iter()
        .map(|u| u.id.clone())
        .zip(finals.iter().copied())
        .collect();
    let events = vec![
        ("started".to_owned(), recording_id.clone()),
        ("stopped".to_owned(), recording_id.clone()),
    ];
    // The moderator had seen `started` already.
    let mut moderator_seen = Seen {
        recording: vec![events[0].clone()],
        ..Seen::default()
    };
    let wanted = |own: Option<&str>| {
        let mut wanted = expected.clone();
        if let Some(own) = own {
            wanted.remove(own);
        }
        wanted
    };
    let all_there = |seen: &Seen, wanted: &HashMap<String, bool>| {
        seen.recording.len() >= events.len()
            && wanted.iter().all(|(id, c)| seen.consent.get(id) == Some(c))
    };
    let for_moderator = wanted(None);
    read_until(&mut moderator, &mut moderator_seen, |s| {
        all_there(s, &for_moderator)
    })
    .await;
    assert_eq!(moderator_seen.recording, events);
    for user in users.iter_mut() {
        let mut seen = Seen::default();
        let for_user = wanted(Some(&user.id));
        read_until(user, &mut seen, |s| all_there(s, &for_user)).await;
        assert_eq!(
            seen.recording, events,
            "every recording event, once, in order"
        );
    }
}
