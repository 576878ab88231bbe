//! Churn limits against the real server (issue 16): joins per token `sub`
//! (`[server] joins_per_second_per_sub`, burst `join_burst_per_sub`), on one
//! node and across two nodes sharing a real `redis-server`; tickets capped per
//! `sub` (`[auth] max_tickets_per_sub`) and never outliving their token, and
//! shared by the nodes of a cluster (issued on one, redeemed once on any,
//! capped across both, 503 while Redis is away).
//!
//! No test asserts how fast anything is: a limit is checked by counting the
//! joins it let through against what it may let through in the time the
//! attempts took, and every wait has a timeout.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use onair::auth::claims_for;
use onair::protocol::Role;
use serde_json::Value;
use support::binary::{self, Onair};
use support::harness::{Client, Server, config, http, refused};
use support::redis::Redis;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The defaults: 2 joins a second per `sub`, 10 at once.
const RATE: f64 = 2.0;
const BURST: u32 = 10;
/// How long a test keeps trying before it gives up on seeing a refusal.
const PATIENCE: Duration = Duration::from_secs(30);

fn upgrade(server: &Server, token: &str) -> Request {
    format!("{}?token={token}", server.ws_url())
        .into_client_request()
        .unwrap()
}

fn with_protocols(server: &Server, protocols: &str) -> Request {
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    request
}

/// A token of `sub` for `room`, valid for `ttl`.
fn token_of(server: &Server, sub: &str, room: &str, ttl: Duration) -> String {
    server.mint(&claims_for(room, sub, Some(sub), Role::User, ttl))
}

/// One upgrade attempt: `Ok` with the open socket, or the refusal's status,
/// body and `Retry-After`.
async fn attempt(request: Request) -> Result<Client, (u16, Value, Option<String>)> {
    match tokio::time::timeout(
        support::harness::RECV_TIMEOUT,
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("the upgrade is answered in time")
    {
        Ok((ws, _)) => Ok(Client {
            ws,
            id: String::new(),
            protocol: None,
        }),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).expect("a JSON error body"))
                .unwrap_or(Value::Null);
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Err((response.status().as_u16(), body, retry_after))
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Upgrades of one `sub` as fast as they go (round robin over `servers`)
/// until one is refused; returns the sockets that opened and the refusal.
async fn join_until_refused(
    servers: &[&Server],
    token: &str,
) -> (Vec<Client>, (u16, Value, Option<String>), Duration) {
    let started = tokio::time::Instant::now();
    let mut open = Vec::new();
    for i in 0.. {
        assert!(
            started.elapsed() < PATIENCE,
            "{} joins of one sub in {PATIENCE:?} and none refused",
            open.len()
        );
        let server = servers[i % servers.len()];
        match attempt(upgrade(server, token)).await {
            Ok(client) => open.push(client),
            Err(refusal) => return (open, refusal, started.elapsed()),
        }
    }
    unreachable!()
}

/// Most joins the limit may let through in `elapsed`: the burst plus the refill.
fn allowed_in(elapsed: Duration) -> usize {
    BURST as usize + (RATE * elapsed.as_secs_f64()).ceil() as usize
}

fn assert_too_many_joins(refusal: &(u16, Value, Option<String>)) {
    let (status, body, retry_after) = refusal;
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["code"], "too_many_joins", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let seconds: u64 = retry_after
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(seconds >= 1, "Retry-After: {seconds}");
}

/// `onair_upgrades_refused_total{reason="too_many_joins"}`, 0 when absent.
async fn refused_joins(server: &Server) -> f64 {
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
            line.strip_prefix("onair_upgrades_refused_total{reason=\"too_many_joins\"} ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_eleventh_rapid_join_of_one_sub_is_refused_with_429_and_other_subs_are_unaffected() {
    let server = Server::with(config()).await;
    let before = refused_joins(&server).await;
    let token = token_of(&server, "churner", "churn", Duration::from_secs(600));

    let (open, refusal, elapsed) = join_until_refused(&[&server], &token).await;
    assert!(
        open.len() >= BURST as usize,
        "the burst of {BURST} goes through, got {}",
        open.len()
    );
    assert!(
        open.len() <= allowed_in(elapsed),
        "{} joins in {elapsed:?}: more than the limit allows",
        open.len()
    );
    assert_too_many_joins(&refusal);
    assert!(refused_joins(&server).await > before, "counted in /metrics");

    // Another sub in the same room joins at once, and the churner's sockets still work.
    let other = token_of(&server, "bystander", "churn", Duration::from_secs(600));
    let mut bystander = Client::connect_query(&server, &other).await;
    bystander.join(None).await;
    let mut first = open.into_iter().next().unwrap();
    first.join(None).await;
    bystander.expect("control", "joined").await;
}

#[tokio::test]
async fn the_join_limit_is_off_at_zero() {
    let mut config = config();
    config.server.joins_per_second_per_sub = 0;
    let server = Server::with(config).await;
    let token = token_of(&server, "reconnector", "r", Duration::from_secs(600));
    for _ in 0..(BURST * 2) {
        let client = attempt(upgrade(&server, &token)).await;
        assert!(client.is_ok(), "{:?}", client.err());
    }
}

/// An onair process of a two-node cluster.
async fn node(redis: &Redis, id: &str) -> Onair {
    let data = tempfile::tempdir().unwrap();
    let mut command = binary::cluster_command(data.path(), &redis.url(), id, id, 2).await;
    let onair = Onair::spawn(&mut command).owning(data);
    onair.server.readyz(200, Duration::from_secs(15)).await;
    onair
}

#[tokio::test]
async fn the_join_limit_holds_across_two_nodes_sharing_redis() {
    let redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let token = token_of(&a.server, "roamer", "roam", Duration::from_secs(600));

    // Alternating nodes: were the limit per node, each would let 10 through
    // (20 in all) before refusing; shared, the burst is 10 for both together.
    let (open, refusal, elapsed) = join_until_refused(&[&a.server, &b.server], &token).await;
    assert!(
        open.len() >= BURST as usize,
        "the burst of {BURST} goes through, got {}",
        open.len()
    );
    assert!(
        open.len() <= allowed_in(elapsed),
        "{} joins over two nodes in {elapsed:?}: more than one shared limit allows",
        open.len()
    );
    assert_too_many_joins(&refusal);
    // Both nodes refuse now (the next attempt on each, right away).
    for server in [&a.server, &b.server] {
        if let Err(refusal) = attempt(upgrade(server, &token)).await {
            assert_too_many_joins(&refusal);
        }
    }
    // Another sub is not affected on either node.
    for (i, server) in [&a.server, &b.server].into_iter().enumerate() {
        let other = token_of(
            server,
            &format!("bystander-{i}"),
            "roam",
            Duration::from_secs(600),
        );
        let mut bystander = Client::connect_query(server, &other).await;
        bystander.join(None).await;
    }
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
async fn a_ticket_is_refused_once_its_token_has_expired() {
    // The default leeway (30 s) lets the token itself through a while longer;
    // the ticket must not.
    let server = Server::with(config()).await;
    let token = token_of(&server, "brief", "r", Duration::from_secs(2));
    let response = ticket(&server, "r", &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let offer = format!(
        "opentalk-signaling-json-v1.0, ticket#{}",
        body["ticket"].as_str().unwrap()
    );
    // Wait until the token's `exp` has passed (wall clock, as `exp` is).
    let exp = support_exp(&token);
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        if now.as_secs() > exp {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = refused(with_protocols(&server, &offer)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_token"))
    );

    // A token already past its `exp` (accepted within the leeway) gets no ticket.
    let mut claims = claims_for("r", "late", Some("late"), Role::User, Duration::ZERO);
    claims.exp -= 5;
    let late = server.mint(&claims);
    let response = ticket(&server, "r", &late).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_token");
}

/// The `exp` of a token minted here (its claims are plain JSON).
fn support_exp(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&json).unwrap()["exp"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_eleventh_outstanding_ticket_of_one_sub_is_refused_with_429() {
    let server = Server::with(config()).await;
    let token = token_of(&server, "hoarder", "r", Duration::from_secs(600));
    let mut tickets = Vec::new();
    for _ in 0..10 {
        let response = ticket(&server, "r", &token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        tickets.push(body["ticket"].as_str().unwrap().to_owned());
    }
    let response = ticket(&server, "r", &token).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_tickets", "{body}");

    // Another sub is not affected.
    let other = token_of(&server, "modest", "r", Duration::from_secs(600));
    assert_eq!(ticket(&server, "r", &other).await.status(), 200);

    // A redeemed ticket gives its place back.
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{}", tickets[0]);
    let mut client = Client::connect_request(with_protocols(&server, &offer)).await;
    client.join(None).await;
    assert_eq!(ticket(&server, "r", &token).await.status(), 200);
}

#[tokio::test]
async fn tickets_are_shared_by_two_nodes_sharing_redis() {
    let mut redis = Redis::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    let token = token_of(&a.server, "traveller", "t", Duration::from_secs(600));

    // Issued by one node, redeemed on the other, once.
    let response = ticket(&a.server, "t", &token).await;
    assert_eq!(response.status(), 200);
    let first = response.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{first}");
    let mut client = Client::connect_request(with_protocols(&b.server, &offer)).await;
    client.join(None).await;
    for server in [&a.server, &b.server] {
        let (status, body) = refused(with_protocols(server, &offer)).await;
        assert_eq!(status, 401, "a redeemed ticket works once: {body}");
    }

    // The cap counts both nodes' tickets: 5 from each, then both refuse.
    let mut held = Vec::new();
    for k in 0..10 {
        let server = if k % 2 == 0 { &a.server } else { &b.server };
        let response = ticket(server, "t", &token).await;
        assert_eq!(response.status(), 200, "ticket {k}");
        held.push(
            response.json::<Value>().await.unwrap()["ticket"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for server in [&a.server, &b.server] {
        let response = ticket(server, "t", &token).await;
        assert_eq!(response.status(), 429);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "too_many_tickets", "{body}");
    }
    // Redeemed on B, one of A's gives its place back on A.
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{}", held[0]);
    let mut client = Client::connect_request(with_protocols(&b.server, &offer)).await;
    client.join(None).await;
    assert_eq!(ticket(&a.server, "t", &token).await.status(), 200);

    // Without Redis, no node can vouch for a ticket: 503, not a wrong answer.
    redis.kill();
    let response = ticket(&a.server, "t", &token).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "cluster_unavailable", "{body}");
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{}", held[1]);
    let (status, body) = refused(with_protocols(&b.server, &offer)).await;
    assert_eq!(status, 503, "{body}");
    // Redis back (empty: this test's Redis keeps nothing): tickets work again.
    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        let response = ticket(&a.server, "t", &token).await;
        if response.status() == 200 {
            break response.json::<Value>().await.unwrap()["ticket"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert_eq!(response.status(), 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ticket after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let offer = format!("opentalk-signaling-json-v1.0, ticket#{fresh}");
    let mut client = Client::connect_request(with_protocols(&b.server, &offer)).await;
    client.join(None).await;
}
