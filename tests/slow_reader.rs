//! A client that stops reading is dropped from its room; the others keep
//! receiving every event.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use onair::protocol::Role;
use serde_json::json;
use support::harness::{Server, config};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_the_room_goes_on() {
    let mut config = config();
    config.server.send_queue = 64;
    config.server.messages_per_second = 1_000_000;
    config.server.message_burst = 1_000_000;
    let server = Server::with(config).await;

    let (mut producer, _) = server.join("busy", "Producer", Role::User).await;
    let (mut watcher, _) = server.join("busy", "Watcher", Role::User).await;
    producer.expect("control", "joined").await;

    // The slow client: a tiny receive buffer, joins, then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = format!(
        "{}?token={}",
        server.ws_url(),
        server.token("busy", "Slow", Role::User)
    );
    let (mut slow, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    futures_util::SinkExt::send(
        &mut slow,
        Message::text(json!({"namespace":"control","payload":{"action":"join"}}).to_string()),
    )
    .await
    .unwrap();
    let Some(Ok(Message::Text(success))) = slow.next().await else {
        panic!("no join_success");
    };
    let slow_id = serde_json::from_str::<serde_json::Value>(&success).unwrap()["payload"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let (mut slow, slow_id) = slow;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the slow client is disconnected");
    if let Some(frame) = ended {
        assert_eq!(u16::from(frame.code), 1008);
    }

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
