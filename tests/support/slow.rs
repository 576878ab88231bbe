//! A client that joins and then never reads again, and how its end is told.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use onair::protocol::Role;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::harness::Server;
use super::schemas::validate_server_frame;

/// The kernel receive buffer of a never-reading client, kept small so that
/// the server's queue for it fills soon.
pub const RECV_BUFFER: u32 = 4096;

/// Joins `room` as a user over a socket with a [`RECV_BUFFER`] receive
/// buffer; returns the socket (to be left unread) and the participant id.
/// The upgrade and the `join_success` each wait at most `within`.
pub async fn never_reading(
    server: &Server,
    room: &str,
    name: &str,
    within: Duration,
) -> (WebSocketStream<TcpStream>, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(RECV_BUFFER).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = format!(
        "{}?token={}",
        server.ws_url(),
        server.token(room, name, Role::User)
    );
    let (mut ws, _) = tokio::time::timeout(within, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .unwrap();
    let join = json!({"namespace": "control", "payload": {"action": "join"}});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let message = tokio::time::timeout(within, ws.next())
        .await
        .expect("join_success in time")
        .expect("the socket is open")
        .unwrap();
    let Message::Text(text) = message else {
        panic!("no join_success: {message:?}");
    };
    let frame: Value = serde_json::from_str(&text).expect("server frames are JSON");
    validate_server_frame(&frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
    assert_eq!(frame["payload"]["message"], "join_success", "{frame}");
    let id = frame["payload"]["id"].as_str().unwrap().to_owned();
    (ws, id)
}

/// Reads what the server still had buffered for a never-reading client until
/// its socket ends (within `within`); a close frame, if one gets through,
/// must carry 1008 (slow reader).
pub async fn assert_closed_as_slow(mut ws: WebSocketStream<TcpStream>, within: Duration) {
    let ending = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("the never-reading client's socket ends in time");
    if let Some(frame) = ending {
        assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    }
}
