//! Every limit of `[server]` against the real server: the refused client gets
//! the documented status and code, the refusal is counted in `/metrics`, and a
//! well-behaved client in the same room keeps working throughout.
//!
//! Metrics are process-wide and tests in this file run in parallel, so counts
//! are compared before and after (they only grow).

mod support;

use std::time::Duration;

use onair::config::BackendKind;
use onair::protocol::Role;
use serde_json::{Value, json};
use support::harness::{Client, RECV_TIMEOUT, Server, config, http, refused};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const ADMIN: &str = support::harness::ADMIN_KEY;

/// An upgrade request of a user for `room`, with extra headers.
fn upgrade(server: &Server, room: &str, name: &str, headers: &[(&str, &str)]) -> Request {
    upgrade_as(server, room, name, Role::User, headers)
}

/// An upgrade request for `room` with a role and extra headers.
fn upgrade_as(
    server: &Server,
    room: &str,
    name: &str,
    role: Role,
    headers: &[(&str, &str)],
) -> Request {
    let token = server.token(room, name, role);
    let mut request = format!("{}?token={token}", server.ws_url())
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    request
}

/// Connects with a role and extra headers, and joins.
async fn join_with(
    server: &Server,
    room: &str,
    name: &str,
    role: Role,
    headers: &[(&str, &str)],
) -> Client {
    let mut client = Client::connect_request(upgrade_as(server, room, name, role, headers)).await;
    client.join(None).await;
    client
}

/// Retries an upgrade that is refused until a slot is given back (a closed
/// socket's slot returns once the server has seen the close).
async fn connect_eventually(request: impl Fn() -> Request) -> Client {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        match tokio_tungstenite::connect_async(request()).await {
            Ok((ws, _)) => {
                return Client {
                    ws,
                    id: String::new(),
                    protocol: None,
                };
            }
            Err(tungstenite::Error::Http(response)) if tokio::time::Instant::now() < deadline => {
                assert!(
                    [409, 429, 503].contains(&response.status().as_u16()),
                    "{response:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the slot did not come back in time: {e}"),
        }
    }
}

/// The value of one metric line (`name{labels}`), 0 when absent.
async fn metric(server: &Server, series: &str) -> f64 {
    let text = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

fn upgrades_refused(reason: &str) -> String {
    format!("onair_upgrades_refused_total{{reason=\"{reason}\"}}")
}

fn http_refused(reason: &str, endpoint: &str) -> String {
    format!("onair_http_refused_total{{reason=\"{reason}\",endpoint=\"{endpoint}\"}}")
}

/// A counter's series and its value when the test began.
struct Counter {
    /// The metric line's name and labels.
    series: String,
    /// Its value at [`Counter::read`].
    before: f64,
}

impl Counter {
    async fn read(server: &Server, series: impl Into<String>) -> Self {
        let series = series.into();
        let before = metric(server, &series).await;
        Self { series, before }
    }

    /// Asserts that the counter grew by at least `by` since it was read.
    async fn grew(&self, server: &Server, by: f64) {
        let (series, before) = (&self.series, self.before);
        let after = metric(server, series).await;
        assert!(
            after >= before + by,
            "{series}: {before} before, {after} after"
        );
    }
}

/// Asserts an error answer's status and `code`.
fn assert_error((status, body): &(u16, Value), expected: u16, code: &str) {
    assert_eq!(
        (*status, body["code"].as_str()),
        (expected, Some(code)),
        "{body}"
    );
}

/// Asserts that the upgrade is refused with `status` and `code`; returns the
/// body.
async fn assert_refused(request: Request, status: u16, code: &str) -> Value {
    let answer = refused(request).await;
    assert_error(&answer, status, code);
    answer.1
}

/// A moderator ("Mod") and a user ("User") joined to `room`, each with its
/// own extra headers.
async fn moderator_and_user(
    server: &Server,
    room: &str,
    moderator_headers: &[(&str, &str)],
    user_headers: &[(&str, &str)],
) -> (Client, Client) {
    let moderator = join_with(server, room, "Mod", Role::Moderator, moderator_headers).await;
    let user = join_with(server, room, "User", Role::User, user_headers).await;
    (moderator, user)
}

/// Asserts that a response carries no CORS allow-origin header.
fn assert_no_cors(headers: &reqwest::header::HeaderMap) {
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
}

/// The moderator starts and stops a recording; everyone sees both.
async fn recording_still_works(moderator: &mut Client, others: &mut [&mut Client]) {
    moderator.recording(json!({"action": "start"})).await;
    let id = moderator.until("recording", "started").await["recording_id"].clone();
    for other in others.iter_mut() {
        assert_eq!(
            other.until("recording", "started").await["recording_id"],
            id
        );
    }
    moderator
        .recording(json!({"action": "stop", "recording_id": id}))
        .await;
    moderator.until("recording", "stopped").await;
    for other in others.iter_mut() {
        assert_eq!(
            other.until("recording", "stopped").await["recording_id"],
            id
        );
    }
}

/// Sockets that never join must not be closed by the join timeout mid-test.
fn patient() -> onair::Config {
    let mut config = config();
    config.server.join_timeout_s = 600;
    config
}

#[tokio::test]
async fn total_connections_are_capped_and_a_closed_socket_frees_its_slot() {
    let mut config = patient();
    config.server.max_connections = 3;
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, upgrades_refused("too_many_connections")).await;

    let (mut moderator, _) = server.join("busy", "Mod", Role::Moderator).await;
    let (mut user, _) = server.join("busy", "User", Role::User).await;
    let idle = Client::connect_request(upgrade(&server, "elsewhere", "Idle", &[])).await;

    let body = assert_refused(
        upgrade(&server, "busy", "Fourth", &[]),
        503,
        "too_many_connections",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_connections")
    );
    refusals.grew(&server, 1.0).await;
    recording_still_works(&mut moderator, &mut [&mut user]).await;

    // A socket dropped without a close frame gives its slot back.
    drop(idle);
    let mut late = connect_eventually(|| upgrade(&server, "busy", "Late", &[])).await;
    late.join(None).await;
    assert_eq!(
        moderator.until("control", "joined").await["control"]["display_name"],
        "Late"
    );
    recording_still_works(&mut moderator, &mut [&mut user, &mut late]).await;
}

#[tokio::test]
async fn loopback_is_exempt_from_the_per_ip_limit_by_default() {
    let mut config = patient();
    config.server.max_connections_per_ip = 2;
    let server = Server::with(config).await;
    let (mut moderator, _) = server.join("lo", "Mod", Role::Moderator).await;
    let (mut a, _) = server.join("lo", "A", Role::User).await;
    let (mut b, _) = server.join("lo", "B", Role::User).await;
    recording_still_works(&mut moderator, &mut [&mut a, &mut b]).await;
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let mut config = patient();
    config.server.max_connections_per_ip = 2;
    config.server.per_ip_exempt = Vec::new();
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, upgrades_refused("too_many_connections_from_ip")).await;

    let (mut moderator, _) = server.join("ip", "Mod", Role::Moderator).await;
    let (mut user, _) = server.join("ip", "User", Role::User).await;
    assert_refused(
        upgrade(&server, "ip", "Third", &[]),
        429,
        "too_many_connections_from_ip",
    )
    .await;
    refusals.grew(&server, 1.0).await;
    recording_still_works(&mut moderator, &mut [&mut user]).await;

    // A clean close gives the slot back, and the newcomer is seen by the room.
    user.ws.close(None).await.unwrap();
    user.closed().await;
    let mut late = connect_eventually(|| upgrade(&server, "ip", "Late", &[])).await;
    late.join(None).await;
    moderator.until("control", "joined").await;
    recording_still_works(&mut moderator, &mut [&mut late]).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_forwarded_hop() {
    let mut config = patient();
    config.server.max_connections_per_ip = 1;
    config.server.per_ip_exempt = Vec::new();
    config.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, upgrades_refused("too_many_connections_from_ip")).await;

    let forwarded = |ip| [("x-forwarded-for", ip)];
    let (mut moderator, mut user) = moderator_and_user(
        &server,
        "xff",
        &forwarded("198.51.100.1"),
        &forwarded("198.51.100.2"),
    )
    .await;
    // The proxy itself (no header) is a client of its own.
    let mut direct = join_with(&server, "xff", "Direct", Role::User, &[]).await;

    for forwarded in [
        "198.51.100.1",
        // Hops left of the rightmost untrusted one are the client's own word.
        "203.0.113.66, 198.51.100.1",
        // Trusted hops on the right are skipped.
        "198.51.100.1, 127.0.0.2",
    ] {
        let (status, body) = refused(upgrade(
            &server,
            "xff",
            "Again",
            &[("x-forwarded-for", forwarded)],
        ))
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("too_many_connections_from_ip")),
            "{forwarded}: {body}"
        );
    }
    // Two headers are one list: the last one names the client.
    let (status, _) = refused(upgrade(
        &server,
        "xff",
        "Again",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.2"),
        ],
    ))
    .await;
    assert_eq!(status, 429);
    refusals.grew(&server, 4.0).await;
    recording_still_works(&mut moderator, &mut [&mut user, &mut direct]).await;
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarded_for_is_ignored() {
    let mut config = patient();
    config.server.max_connections_per_ip = 2;
    config.server.per_ip_exempt = Vec::new();
    let server = Server::with(config).await;

    let (mut moderator, mut user) = moderator_and_user(
        &server,
        "spoof",
        &[("x-forwarded-for", "198.51.100.1")],
        &[("x-forwarded-for", "198.51.100.2")],
    )
    .await;
    // Both counted against 127.0.0.1, whatever the header claims.
    assert_refused(
        upgrade(
            &server,
            "spoof",
            "Third",
            &[("x-forwarded-for", "198.51.100.3")],
        ),
        429,
        "too_many_connections_from_ip",
    )
    .await;
    recording_still_works(&mut moderator, &mut [&mut user]).await;
}

#[tokio::test]
async fn a_full_room_refuses_the_next_participant_and_other_rooms_still_open() {
    let mut config = patient();
    config.server.max_participants_per_room = 2;
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, upgrades_refused("room_full")).await;

    let (mut moderator, _) = server.join("full", "Mod", Role::Moderator).await;
    let (mut user, _) = server.join("full", "User", Role::User).await;
    assert_refused(upgrade(&server, "full", "Third", &[]), 409, "room_full").await;
    refusals.grew(&server, 1.0).await;
    let (_other, success) = server.join("not-full", "Elsewhere", Role::User).await;
    assert_eq!(success["participants"], json!([]));
    recording_still_works(&mut moderator, &mut [&mut user]).await;

    // When someone leaves, the seat is free again.
    drop(user);
    moderator.until("control", "left").await;
    let mut late = connect_eventually(|| upgrade(&server, "full", "Late", &[])).await;
    let success = late.join(None).await;
    assert_eq!(success["participants"].as_array().unwrap().len(), 1);
    recording_still_works(&mut moderator, &mut [&mut late]).await;
}

#[tokio::test]
async fn a_frame_nested_too_deeply_is_invalid_json_and_the_socket_keeps_working() {
    let server = Server::start().await;
    let errors = Counter::read(
        &server,
        "onair_client_errors_total{reason=\"json_too_deep\"}",
    )
    .await;
    let (mut moderator, _) = server.join("deep", "Mod", Role::Moderator).await;
    let (mut user, _) = server.join("deep", "User", Role::User).await;
    moderator.until("control", "joined").await;

    // 33 levels (the default allows 32), and far beyond serde's own limit.
    for depth in [31, 10_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let frame = format!(
            r#"{{"namespace":"recording","payload":{{"action":"set_consent","consent":true,"x":{nested}}}}}"#
        );
        user.send_raw(tungstenite::Message::text(frame)).await;
        let error = user.expect("control", "error").await;
        assert_eq!(error["error"], "invalid_json", "{error}");
        assert!(
            error["detail"].as_str().unwrap().contains("max_json_depth"),
            "{error}"
        );
    }
    errors.grew(&server, 2.0).await;

    // Brackets inside strings are text, not nesting.
    let mut brackets = Client::connect_request(upgrade(&server, "deep", "B", &[])).await;
    let success = brackets.join(Some(&"[{".repeat(40))).await;
    assert_eq!(success["display_name"], "[{".repeat(40));

    // The refused client's socket still works: its consent reaches the room.
    user.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = moderator.until("control", "update").await;
    assert_eq!(update["id"], user.id.as_str());
    assert_eq!(update["recording"]["consents_recording"], true);
    recording_still_works(&mut moderator, &mut [&mut user, &mut brackets]).await;
}

async fn post_json(server: &Server, path: &str, body: String) -> (u16, Value) {
    let response = http()
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rest_bodies_are_held_to_their_size_and_depth() {
    let mut config = config();
    config.server.max_body_bytes = 1024;
    let server = Server::with(config).await;
    let too_deep = Counter::read(&server, http_refused("json_too_deep", "api")).await;
    let too_large = Counter::read(&server, http_refused("body_too_large", "api")).await;
    let (mut moderator, _) = server.join("rest", "Mod", Role::Moderator).await;
    let (mut user, _) = server.join("rest", "User", Role::User).await;
    let status_path = "/v1/rooms/rest/recording/status";

    let nested = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let answer = post_json(
        &server,
        status_path,
        format!(r#"{{"status":"recording","recording_id":"x","reason":{nested}}}"#),
    )
    .await;
    assert_error(&answer, 400, "json_too_deep");

    let long = json!({"status": "failed", "recording_id": "x", "reason": "x".repeat(2000)});
    let answer = post_json(&server, status_path, long.to_string()).await;
    assert_error(&answer, 413, "body_too_large");
    // The hand-in route lifts the default limit for multipart uploads; its
    // JSON form is still held to max_body_bytes.
    let external = json!({"url": "https://files.example/x.mp4", "name": "x".repeat(2000)});
    let answer = post_json(&server, "/v1/rooms/rest/recordings", external.to_string()).await;
    assert_error(&answer, 413, "body_too_large");
    // Under the limits, the same endpoint answers as always.
    let answer = post_json(
        &server,
        status_path,
        json!({"status": "paused", "recording_id": "x"}).to_string(),
    )
    .await;
    assert_error(&answer, 422, "invalid_body");

    too_deep.grew(&server, 1.0).await;
    too_large.grew(&server, 2.0).await;
    recording_still_works(&mut moderator, &mut [&mut user]).await;
}

#[tokio::test]
async fn webhook_bodies_are_held_to_their_own_limit() {
    let mut config = config();
    config.recording.backend = BackendKind::Jaas;
    config.jaas.webhook_secret = Some("jaas-webhook-secret-0123456789".into());
    config.server.max_webhook_body_bytes = 2048;
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, http_refused("body_too_large", "webhook")).await;
    let (mut ada, _) = server.join("hook", "Ada", Role::Moderator).await;
    let (mut bob, _) = server.join("hook", "Bob", Role::User).await;
    ada.until("control", "joined").await;

    let post = |body: Vec<u8>| {
        http()
            .post(server.url("/webhooks/jaas"))
            .header("content-type", "application/json")
            .header("x-jaas-signature", "t=1,v1=AAAA")
            .body(body)
            .send()
    };
    let response = post(vec![b' '; 4096]).await.unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large", "{body}");
    assert!(body["message"].as_str().unwrap().contains("2048"), "{body}");
    // Under the limit the body is read (and this one's signature refused).
    let response = post(b"{}".to_vec()).await.unwrap();
    assert_eq!(response.status(), 401);
    refusals.grew(&server, 1.0).await;

    // JaaS takes no start/stop from onair: a consent update shows the room works.
    bob.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = ada.until("control", "update").await;
    assert_eq!(update["recording"]["consents_recording"], true);
}

#[tokio::test]
async fn cors_answers_listed_origins_and_refuses_the_others() {
    let mut config = config();
    config.server.allowed_origins = vec!["https://app.example".into()];
    let server = Server::with(config).await;
    let refusals = Counter::read(&server, http_refused("origin_not_allowed", "api")).await;
    let socket_refusals = Counter::read(&server, upgrades_refused("origin_not_allowed")).await;
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, server.url("/v1/rooms"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };

    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success(), "{allowed:?}");
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization"),
        "{h:?}"
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );

    let refused_preflight = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused_preflight.status(), 403);
    assert_no_cors(refused_preflight.headers());
    let body: Value = refused_preflight.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed");

    let get = |origin: Option<&'static str>| {
        let mut request = http().get(server.url("/v1/rooms")).bearer_auth(ADMIN);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let response = get(Some("https://app.example")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let response = get(Some("https://evil.example")).await.unwrap();
    assert_eq!(response.status(), 403);
    // Server-to-server calls carry no Origin and are not CORS requests.
    let response = get(None).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_no_cors(response.headers());
    refusals.grew(&server, 2.0).await;

    // The socket follows the same list.
    assert_refused(
        upgrade(
            &server,
            "cors",
            "Evil",
            &[("origin", "https://evil.example")],
        ),
        403,
        "origin_not_allowed",
    )
    .await;
    socket_refusals.grew(&server, 1.0).await;
    // Case and a trailing slash do not matter (the user's origin).
    let (mut moderator, mut user) = moderator_and_user(
        &server,
        "cors",
        &[("origin", "https://app.example")],
        &[("origin", "HTTPS://App.Example/")],
    )
    .await;
    recording_still_works(&mut moderator, &mut [&mut user]).await;
}

#[tokio::test]
async fn without_allowed_origins_the_api_sends_no_cors_headers() {
    let server = Server::start().await;
    let preflight = http()
        .request(reqwest::Method::OPTIONS, server.url("/v1/rooms"))
        .header("origin", "https://anywhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!preflight.status().is_success(), "{preflight:?}");
    assert_no_cors(preflight.headers());
    let response = http()
        .get(server.url("/v1/rooms"))
        .bearer_auth(ADMIN)
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_no_cors(response.headers());
}
