//! What a client, a proxy or a header cannot talk onair into: `/metrics`
//! from behind a proxy, error texts that repeat the input, display names
//! that reorder the text around them, and socket protocol errors closed
//! without a status code.

mod support;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{ADMIN_KEY, Client, Server, config, http, refused};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn metrics_status(server: &Server, headers: &[(&str, &str)]) -> u16 {
    let mut request = http().get(server.url("/metrics"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn metrics_check_the_peer_never_a_forwarded_address() {
    // Behind a reverse proxy on the same host (a trusted one), every client's
    // peer address is loopback: a forwarded request is not the operator's.
    let mut behind_proxy = config();
    behind_proxy.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = Server::with(behind_proxy.clone()).await;
    assert_eq!(metrics_status(&server, &[]).await, 200);
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let value = if header == "forwarded" {
            "for=203.0.113.9"
        } else {
            "203.0.113.9"
        };
        assert_eq!(
            metrics_status(&server, &[(header, value)]).await,
            403,
            "{header}"
        );
    }
    // Even naming an allowed address.
    assert_eq!(
        metrics_status(&server, &[("x-forwarded-for", "127.0.0.1")]).await,
        403
    );
    server.stop().await;

    // A forwarded address from an allowed range does not pass when the peer
    // is not allowed.
    let mut config_10 = behind_proxy;
    config_10.metrics.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
    let server = Server::with(config_10).await;
    assert_eq!(
        metrics_status(&server, &[("x-forwarded-for", "10.1.2.3")]).await,
        403
    );
    assert_eq!(metrics_status(&server, &[]).await, 403);
    server.stop().await;

    // A CIDR block in allowed_ips admits its peers; a plain address still works.
    for allowed in ["127.0.0.0/8", "127.0.0.1"] {
        let mut cidr = config();
        cidr.metrics.allowed_ips = vec![allowed.parse().unwrap()];
        let server = Server::with(cidr).await;
        assert_eq!(metrics_status(&server, &[]).await, 200, "{allowed}");
        server.stop().await;
    }
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_bad_utf8_with_1007() {
    let server = Server::start().await;
    let (mut watcher, _) = server.join("room", "Watcher", Role::User).await;

    // A continuation frame with nothing to continue.
    let (mut client, _) = server.join("room", "Broken", Role::User).await;
    watcher.expect("control", "joined").await;
    client
        .send_raw(Message::Frame(Frame::message(
            b"x".to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    let close = client.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1002, "{close:?}");
    watcher.expect("control", "left").await;

    // A text frame that is not UTF-8, before and after joining.
    let mut early =
        Client::connect_query(&server, &server.token("room", "Early", Role::User)).await;
    early
        .send_raw(Message::Frame(Frame::message(
            vec![0x7b, 0xff, 0xfe, 0x7d],
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    let close = early.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");

    let (mut joined, _) = server.join("room", "Joined", Role::User).await;
    watcher.expect("control", "joined").await;
    // Split inside a multi-byte character, and never finished properly.
    joined
        .send_raw(Message::Frame(Frame::message(
            vec![b'"', 0xe2, 0x82],
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    joined
        .send_raw(Message::Frame(Frame::message(
            vec![b'"'],
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    let close = joined.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007, "{close:?}");
    watcher.expect("control", "left").await;

    // The room goes on.
    let (_next, _) = server.join("room", "Next", Role::User).await;
    watcher.expect("control", "joined").await;
}

/// The longest `detail` or `message` onair builds from an error text (200
/// characters and an ellipsis).
const MAX_DETAIL: usize = 201;

fn assert_short(text: &str, input: &str) {
    assert!(
        text.chars().count() <= MAX_DETAIL,
        "{} chars: {text}",
        text.len()
    );
    assert!(!text.contains(input), "the input is echoed: {text}");
}

#[tokio::test]
async fn errors_do_not_echo_a_large_frame_or_body() {
    let server = Server::start().await;
    let mut client = Client::connect_query(&server, &server.token("room", "Ada", Role::User)).await;

    // A frame just under the size limit that is a JSON string, not an envelope.
    let filler = "A".repeat(60_000);
    client.send(Value::String(filler.clone())).await;
    let error = client.expect("control", "error").await;
    assert_eq!(error["error"], "invalid_json");
    let detail = error["detail"].as_str().unwrap();
    assert_short(detail, &"A".repeat(17));
    assert!(detail.contains("invalid type: string"), "{detail}");

    // Garbage that is not JSON at all.
    client.send_raw(Message::text(format!("{filler}{{"))).await;
    let error = client.expect("control", "error").await;
    assert_eq!(error["error"], "invalid_json");
    assert_short(error["detail"].as_str().unwrap(), &"A".repeat(17));

    // An unknown namespace and an unknown action are named, briefly.
    client
        .send(json!({"namespace": filler, "payload": {"action": "join"}}))
        .await;
    let error = client.expect("control", "error").await;
    assert_eq!(error["error"], "invalid_namespace");
    assert_short(error["detail"].as_str().unwrap(), &"A".repeat(17));
    client.join(None).await;
    client.recording(json!({"action": filler})).await;
    let error = client.expect("recording", "error").await;
    assert_eq!(error["error"], "invalid_payload");
    let detail = error["detail"].as_str().unwrap();
    assert_short(detail, &"A".repeat(17));
    assert!(detail.contains("unknown variant `AAAA"), "{detail}");

    // The REST API's `invalid_body` alike.
    let long = "B".repeat(20_000);
    let response = http()
        .post(server.url("/v1/rooms/room/recording/status"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"status": long, "recording_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_body");
    let message = body["message"].as_str().unwrap();
    assert_short(message, &"B".repeat(17));
    assert!(message.contains("unknown variant"), "{message}");
}

#[tokio::test]
async fn display_names_with_control_or_bidi_characters_are_refused() {
    let server = Server::start().await;
    let (mut watcher, _) = server.join("room", "Watcher", Role::User).await;
    let mut client = Client::connect_query(&server, &server.token("room", "Ada", Role::User)).await;
    for bad in [
        "\u{202E}4pm.exe",
        "Ada\u{2066}",
        "Ada\u{200F}",
        "Ada\u{061C}",
        "Ada\u{0007}",
        "Ada\nLovelace",
        "Ada\u{009B}31m",
    ] {
        client
            .send(
                json!({"namespace": "control", "payload": {"action": "join", "display_name": bad}}),
            )
            .await;
        let error = client.expect("control", "error").await;
        assert_eq!(error["error"], "invalid_display_name", "{bad:?}: {error}");
        assert!(
            error["detail"].as_str().unwrap().contains("display_name"),
            "{error}"
        );
    }
    // Too long is the same error.
    client
        .send(json!({"namespace": "control", "payload": {"action": "join", "display_name": "x".repeat(101)}}))
        .await;
    let error = client.expect("control", "error").await;
    assert_eq!(error["error"], "invalid_display_name", "{error}");
    // Nobody saw any of it (the watcher's next frame is the good join); the
    // socket still joins with a good name.
    let success = client.join(Some("Ada Lovelace (قمر)")).await;
    assert_eq!(success["display_name"], "Ada Lovelace (قمر)");
    assert_eq!(
        watcher.expect("control", "joined").await["control"]["display_name"],
        "Ada Lovelace (قمر)"
    );

    // A token whose `name` claim carries one is refused before the upgrade.
    let token = server.token("room", "Eve\u{202E}", Role::User);
    let request = format!("{}?token={token}", server.ws_url())
        .into_client_request()
        .unwrap();
    let (status, body) = refused(request).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_token");
    assert!(
        body["message"].as_str().unwrap().contains("claim `name`"),
        "{body}"
    );
    server.stop().await;

    // The development token endpoint refuses to mint one.
    let mut dev = onair::Config::default();
    dev.server.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::with(dev).await;
    for name in ["Eve\u{2067}", "Eve\u{0000}"] {
        let response = http()
            .post(server.url("/v1/dev/token"))
            .json(&json!({"room": "demo", "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_name", "{body}");
    }
}
