//! A client that stops reading is dropped from its room; the others keep
//! receiving every event.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::json;
use support::harness::{Server, config};
use support::slow;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_the_room_goes_on() {
    let mut config = config();
    config.server.send_queue = 64;
    config.server.messages_per_second = 1_000_000;
    config.server.message_burst = 1_000_000;
    // Every update is counted below: no fan-out budget merging them.
    config.server.room_fanout_per_second = 0;
    let server = Server::with(config).await;

    let (mut producer, _) = server.join("busy", "Producer", Role::User).await;
    let (mut watcher, _) = server.join("busy", "Watcher", Role::User).await;
    producer.expect("control", "joined").await;

    // The slow client: a tiny receive buffer, joins, then never reads again.
    let (slow, slow_id) =
        slow::never_reading(&server, "busy", "Slow", Duration::from_secs(10)).await;
    producer.expect("control", "joined").await;
    watcher.expect("control", "joined").await;

    // The producer toggles consent until the slow client's buffers and queue
    // overflow. The watcher must see every update, in order, and the slow
    // client leave. The producer stays at most a window ahead of the watcher,
    // as a room's real pace would.
    const MAX_UPDATES: u32 = 100_000;
    const WINDOW: u32 = 32;
    let (seen_tx, mut seen) = tokio::sync::watch::channel((0u32, false));
    let slow = (slow, slow_id.clone());
    let watching = tokio::spawn(async move {
        let (mut updates, mut slow_left, mut expected) = (0u32, false, true);
        loop {
            let frame = watcher.recv().await;
            match frame["payload"]["message"].as_str() {
                Some("update") => {
                    assert_eq!(
                        frame["payload"]["recording"]["consents_recording"],
                        expected
                    );
                    expected = !expected;
                    updates += 1;
                }
                Some("left") => {
                    assert_eq!(frame["payload"]["id"], slow_id);
                    slow_left = true;
                }
                other => panic!("unexpected {other:?}"),
            }
            let _ = seen_tx.send((updates, slow_left));
        }
    });
    let mut sent = 0u32;
    loop {
        let (updates, slow_left) = *tokio::time::timeout(
            Duration::from_secs(10),
            seen.wait_for(|&(n, left)| left || n + WINDOW > sent),
        )
        .await
        .expect("the watcher keeps up")
        .unwrap();
        if slow_left {
            // Everything sent before the kick was delivered to the watcher too.
            let final_count =
                *tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|&(n, _)| n == sent))
                    .await
                    .expect("the watcher gets every update")
                    .unwrap();
            assert_eq!(final_count.0, sent);
            break;
        }
        assert!(
            sent < MAX_UPDATES,
            "the slow client was never dropped ({updates} updates)"
        );
        producer
            .recording(json!({"action": "set_consent", "consent": sent.is_multiple_of(2)}))
            .await;
        sent += 1;
    }
    watching.abort();

    // The slow client's connection ends once it reads what was buffered.
    let (slow, slow_id) = slow;
    slow::assert_closed_as_slow(slow, Duration::from_secs(10)).await;

    // The room still works for those who read.
    let (_late, success) = server.join("busy", "Late", Role::User).await;
    let ids: Vec<&str> = success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&producer.id.as_str()));
    assert!(!ids.contains(&slow_id.as_str()));
}
