//! The three ways to authenticate, tickets, and every refusal before the upgrade.

mod support;

use std::time::Duration;

use onair::auth::claims_for;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{Client, Server, http, refused};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn with_protocols(
    server: &Server,
    protocols: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    request
}

async fn ticket(server: &Server, room: &str, token: &str) -> reqwest::Response {
    http()
        .post(server.url(&format!("/v1/rooms/{room}/start")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bearer_header_and_query_token_both_work() {
    let server = Server::start().await;
    let mut by_header =
        Client::connect_bearer(&server, &server.token("r", "Header", Role::User)).await;
    by_header.join(None).await;
    let mut by_query =
        Client::connect_query(&server, &server.token("r", "Query", Role::User)).await;
    let success = by_query.join(None).await;
    assert_eq!(
        success["participants"][0]["control"]["display_name"],
        "Header"
    );
    assert_eq!(by_header.protocol, None);
}

#[tokio::test]
async fn ticket_flow_selects_the_opentalk_subprotocol_and_is_single_use() {
    let server = Server::start().await;
    let token = server.token("room-1", "Ada", Role::Moderator);
    let response = ticket(&server, "room-1", &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resumption"], Value::Null);
    let ticket = body["ticket"].as_str().unwrap().to_owned();

    let offer = format!("opentalk-signaling-json-v1.0, ticket#{ticket}");
    let mut client = Client::connect_request(with_protocols(&server, &offer)).await;
    assert_eq!(
        client.protocol.as_deref(),
        Some("opentalk-signaling-json-v1.0")
    );
    let success = client.join(None).await;
    assert_eq!(success["role"], "moderator");

    // The same ticket again is refused before the upgrade.
    let (status, body) = refused(with_protocols(&server, &offer)).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_token");

    // A JWT behind `ticket#` is accepted too.
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{token}");
    let mut direct = Client::connect_request(with_protocols(&server, &offer)).await;
    direct.join(None).await;

    // A made-up ticket is refused.
    let (status, _) = refused(with_protocols(
        &server,
        "opentalk-signaling-json-v1.0, ticket#nonsense",
    ))
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn tickets_expire() {
    let mut config = support::harness::config();
    config.auth.ticket_ttl_s = 1;
    let server = Server::with(config).await;
    let token = server.token("r", "Ada", Role::User);
    let body: Value = ticket(&server, "r", &token).await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let offer = format!(
        "opentalk-signaling-json-v1.0, ticket#{}",
        body["ticket"].as_str().unwrap()
    );
    let (status, _) = refused(with_protocols(&server, &offer)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn ticket_endpoint_checks_token_and_room() {
    let server = Server::start().await;
    let token = server.token("room-1", "Ada", Role::User);
    let response = ticket(&server, "room-2", &token).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "room_mismatch"
    );
    let response = ticket(&server, "room-1", "garbage").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_token"
    );
    let response = ticket(&server, "bad%20room", &token).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn bad_credentials_are_refused_with_401_json() {
    let server = Server::start().await;
    // Missing.
    let (status, body) = refused(server.ws_url().into_client_request().unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_token");
    assert!(body["message"].as_str().unwrap().contains("no credential"));

    // Expired.
    let mut claims = server.claims("r", "Old", Role::User);
    claims.exp = 1_000_000;
    let url = format!("{}?token={}", server.ws_url(), server.mint(&claims));
    let (status, body) = refused(url.into_client_request().unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Forged: signed with another secret.
    let forger = onair::auth::Verifier::new("not-the-server-secret", &Default::default());
    let forged = forger.mint(&claims_for(
        "r",
        "Mallory",
        None,
        Role::Moderator,
        Duration::from_secs(60),
    ));
    let url = format!("{}?token={forged}", server.ws_url());
    let (status, body) = refused(url.into_client_request().unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    // The refusal never echoes the token.
    assert!(!body.to_string().contains(&forged));

    // alg: none.
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64_url(
        json!({"sub":"m","room":"r","role":"moderator","exp": 4_000_000_000u64})
            .to_string()
            .as_bytes(),
    );
    let url = format!("{}?token={header}.{payload}.", server.ws_url());
    let (status, _) = refused(url.into_client_request().unwrap()).await;
    assert_eq!(status, 401);

    // Garbage bearer header.
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer x.y.z"));
    let (status, _) = refused(request).await;
    assert_eq!(status, 401);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn bad_room_id_is_refused_with_400() {
    let server = Server::start().await;
    let token = server.mint(&claims_for(
        "no/slashes",
        "Ada",
        None,
        Role::User,
        Duration::from_secs(60),
    ));
    let url = format!("{}?token={token}", server.ws_url());
    let (status, body) = refused(url.into_client_request().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_room");
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused_with_403() {
    let mut config = support::harness::config();
    config.server.allowed_origins = vec!["https://app.example".into()];
    let server = Server::with(config).await;
    let token = server.token("r", "Ada", Role::User);
    let url = format!("{}?token={token}", server.ws_url());

    let mut request = url.clone().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static("https://evil.example"));
    let (status, body) = refused(request).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "origin_not_allowed");

    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", HeaderValue::from_static("https://app.example"));
    let mut client = Client::connect_request(request).await;
    client.join(None).await;
}

#[tokio::test]
async fn development_mode_hands_out_tokens() {
    let mut config = onair::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::with(config).await;
    let response = http()
        .post(server.url("/v1/dev/token"))
        .json(&json!({"room": "demo", "name": "Ada", "role": "moderator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut client = Client::connect_query(&server, body["token"].as_str().unwrap()).await;
    let success = client.join(None).await;
    assert_eq!(success["role"], "moderator");
    assert_eq!(success["display_name"], "Ada");

    let response = http()
        .post(server.url("/v1/dev/token"))
        .json(&json!({"room": "bad room", "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http()
        .post(server.url("/v1/dev/token"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_body"
    );
}

#[tokio::test]
async fn development_mode_refuses_non_loopback_and_production_has_no_dev_tokens() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let result = onair::run(listener, onair::Config::default(), async {}).await;
    assert!(matches!(
        result,
        Err(onair::ServerError::DevModeNotLoopback(_))
    ));

    let server = Server::start().await;
    let response = http()
        .post(server.url("/v1/dev/token"))
        .json(&json!({"room": "demo", "name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
