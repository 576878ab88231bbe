//! The HTTP edge against the real binary: what a client without a token can
//! hold, and for how long (SPEC §2, `[server] header_timeout_s`,
//! `idle_timeout_s`, `body_timeout_s`, `max_http_connections[_per_ip]`), and
//! the refusals that come before a body is read.
//!
//! Timeouts are shortened by configuration; each test waits for the server
//! to close, with a bound far above the configured timeout, and never
//! asserts how fast anything was.

mod support;

use std::time::Duration;

use onair::protocol::Role;
use serde_json::{Value, json};
use support::binary::Onair;
use support::harness::{ADMIN_KEY, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above every timeout these tests configure.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

/// onair with `[server]` settings added to the test defaults.
fn onair(server: &str, more: &str) -> (Onair, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = format!("[server]\n{server}\n{more}");
    (Onair::spawn_with_config(data.path(), &config), data)
}

/// Reads until the server closes the connection; returns what it sent.
/// Fails the test if it is still open after `within`.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    got
}

/// Sends `request` (a raw HTTP/1.1 request head, maybe with a partial body)
/// and returns the status and JSON body of the answer, read until the
/// server closes the connection or sends a whole answer.
async fn ask(addr: std::net::SocketAddr, request: &str, within: Duration) -> (u16, Value) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = tokio::time::timeout(within, async {
        loop {
            if let Some(answer) = parse_answer(&got) {
                return answer;
            }
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return parse_answer(&got).expect("a whole answer"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    answer.unwrap_or_else(|_| {
        panic!(
            "no answer within {within:?} to {}",
            request.lines().next().unwrap()
        )
    })
}

/// `GET /healthz` with `Connection: close`, read until the server closed the
/// connection: by then it no longer counts against the HTTP limits, so the
/// next connection of a test meets the counts the test expects.
async fn healthz_closed(addr: std::net::SocketAddr) -> (u16, Value) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut tcp, CLOSE_WITHIN).await;
    parse_answer(&got).expect("a whole answer")
}

/// A whole `HTTP/1.1` answer with a `content-length` body: status and JSON body.
fn parse_answer(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| {
        (
            status,
            serde_json::from_str(&body[..length]).unwrap_or(Value::Null),
        )
    })
}

/// A metric's value in `/metrics` (0 when absent).
async fn metric(onair: &Onair, line_start: &str) -> f64 {
    let text = reqwest::get(onair.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_at_the_header_timeout() {
    let (onair, _data) = onair("header_timeout_s = 1\nidle_timeout_s = 60", "");
    // One sends nothing at all.
    let mut silent = TcpStream::connect(onair.addr()).await.unwrap();
    // One sends a header line now and then, never finishing its headers.
    let mut slow = TcpStream::connect(onair.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dribble = async {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let closed_silent = read_until_closed(&mut silent, CLOSE_WITHIN);
    let ((), silent_got) = tokio::join!(dribble, closed_silent);
    assert!(silent_got.is_empty(), "a silent client gets no answer");
    let slow_got = read_until_closed(&mut slow, CLOSE_WITHIN).await;
    assert!(slow_got.is_empty(), "a slow client gets no answer");
    assert!(
        metric(
            &onair,
            "onair_limits_reached_total{reason=\"header_timeout\"}"
        )
        .await
            >= 2.0
    );
    // Meanwhile a normal request is answered.
    let (status, body) = ask(
        onair.addr(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        CLOSE_WITHIN,
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let (onair, _data) = onair("header_timeout_s = 60\nidle_timeout_s = 2", "");
    let mut tcp = TcpStream::connect(onair.addr()).await.unwrap();
    // Requests within the idle timeout keep the connection: the same one
    // answers three times.
    for _ in 0..3 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while parse_answer(&got).is_none() {
            let n = tokio::time::timeout(CLOSE_WITHIN, tcp.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "the connection stays open between requests");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(parse_answer(&got).unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then it goes idle and is closed.
    assert!(read_until_closed(&mut tcp, CLOSE_WITHIN).await.is_empty());
    assert!(
        metric(
            &onair,
            "onair_limits_reached_total{reason=\"idle_timeout\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_at_the_body_timeout() {
    let (onair, _data) = onair("body_timeout_s = 1\nheader_timeout_s = 60", "");
    // A REST body that stops halfway (the admin key is right, so it is read).
    let request = format!(
        "POST /v1/rooms/r/recording/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"status\":"
    );
    let (status, body) = ask(onair.addr(), &request, CLOSE_WITHIN).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["code"], "body_timeout");
}

#[tokio::test]
async fn the_admin_route_refuses_an_unauthenticated_body_before_reading_it() {
    let (onair, _data) = onair("body_timeout_s = 60\nheader_timeout_s = 60", "");
    let deep = "[".repeat(10_000);
    let request = format!(
        "POST /v1/rooms/r/recording/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{deep}",
        deep.len()
    );
    let (status, body) = ask(onair.addr(), &request, CLOSE_WITHIN).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_admin_key"))
    );
    // A huge declared body that never comes: still 401, not a wait.
    let request = "POST /v1/rooms/r/recording/status HTTP/1.1\r\nHost: x\r\n\
                   Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n";
    let (status, _) = ask(onair.addr(), request, Duration::from_secs(5)).await;
    assert_eq!(status, 401);
    // With the key, the declared size is refused before reading.
    let request = format!(
        "POST /v1/rooms/r/recording/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    let (status, body) = ask(onair.addr(), &request, Duration::from_secs(5)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // The notification settings read their body only after the caller is known.
    let request = "POST /rest/recording/notifications HTTP/1.1\r\nHost: x\r\n\
                   Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n";
    let (status, _) = ask(onair.addr(), request, Duration::from_secs(5)).await;
    assert_eq!(status, 401);
}

/// Each provider's webhook route, configured as that provider's backend.
const PROVIDERS: [(&str, &str, &str, &str); 4] = [
    (
        "[recording]\nbackend = \"livekit\"\n[livekit]\nurl = \"http://127.0.0.1:9\"\napi_key = \"k\"\napi_secret = \"livekit-secret-0123456789\"",
        "/webhooks/livekit",
        "Authorization: x",
        "Content-Type: application/webhook+json",
    ),
    (
        "[recording]\nbackend = \"jaas\"\n[jaas]\nwebhook_secret = \"jaas-secret-0123456789\"",
        "/webhooks/jaas",
        "X-Jaas-Signature: t=1,v1=x",
        "Content-Type: application/json",
    ),
    (
        "[recording]\nbackend = \"nextcloud\"\n[nextcloud]\nrecording_server = \"http://127.0.0.1:9\"\nsecret = \"nc-secret-0123456789\"\nbackend_url = \"https://cloud.example\"",
        "/ocs/v2.php/apps/spreed/api/v1/recording/backend",
        "Talk-Recording-Random: r\r\nTalk-Recording-Checksum: c",
        "Content-Type: application/json\r\nOCS-APIRequest: true",
    ),
    (
        "[recording]\nbackend = \"nextcloud\"\n[nextcloud]\nrecording_server = \"http://127.0.0.1:9\"\nsecret = \"nc-secret-0123456789\"\nbackend_url = \"https://cloud.example\"",
        "/ocs/v2.php/apps/spreed/api/v1/recording/r/store",
        "",
        "Content-Type: multipart/form-data; boundary=b\r\nOCS-APIRequest: true",
    ),
];

#[tokio::test]
async fn a_ten_gigabyte_webhook_is_refused_before_its_body_on_every_route() {
    for (backend, path, signature, content_type) in PROVIDERS {
        // Timeouts far above the wait allowed below: only a refusal before
        // reading can answer in time.
        let (onair, _data) = onair("body_timeout_s = 120\nheader_timeout_s = 120", backend);
        let head = |signature: &str| {
            let signature = if signature.is_empty() {
                String::new()
            } else {
                format!("{signature}\r\n")
            };
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{content_type}\r\n{signature}Content-Length: 10000000000\r\n\r\n"
            )
        };
        // Without its signature header: refused as unauthenticated.
        let (status, _) = ask(onair.addr(), &head(""), Duration::from_secs(5)).await;
        assert!(
            [401, 403].contains(&status),
            "{path} without a signature: {status}"
        );
        // With one (not checked yet): refused for its declared size. The
        // store route's checksum covers the room token, so a wrong one is
        // refused before the size.
        if !signature.is_empty() {
            let (status, _) = ask(onair.addr(), &head(signature), Duration::from_secs(5)).await;
            assert_eq!(status, 413, "{path} with 10 GB declared");
        }
    }
}

#[tokio::test]
async fn http_connections_are_capped_per_address_and_an_upgrade_moves_out_of_the_count() {
    let (onair, _data) = onair(
        "per_ip_exempt = []\nmax_http_connections_per_ip = 3\nmax_connections_per_ip = 10\nheader_timeout_s = 60",
        "",
    );
    // Three half-open requests fill this address's share.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(onair.addr()).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    // Let the server accept them before the fourth comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = healthz_closed(onair.addr()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_http_connections_from_ip");
    // One closes: the address may connect again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // WebSockets leave the HTTP count once upgraded: four sockets, with two
    // half-open requests still held.
    let mut sockets = Vec::new();
    for i in 0..4 {
        let token = onair.server.token("edge", &format!("p{i}"), Role::User);
        let mut client = Client::connect_query(&onair.server, &token).await;
        client.join(None).await;
        sockets.push(client);
    }
    let (status, _) = healthz_closed(onair.addr()).await;
    assert_eq!(status, 200);
    assert!(
        metric(
            &onair,
            "onair_limits_reached_total{reason=\"too_many_http_connections_from_ip\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn half_open_requests_and_websockets_do_not_starve_each_other() {
    let (onair, _data) = onair(
        "max_http_connections = 4\nmax_connections = 2\nheader_timeout_s = 60",
        "",
    );
    // Two WebSockets fill their share.
    let token = onair.server.token("edge", "a", Role::Moderator);
    let mut a = Client::connect_query(&onair.server, &token).await;
    a.join(None).await;
    let token = onair.server.token("edge", "b", Role::User);
    let mut b = Client::connect_query(&onair.server, &token).await;
    b.join(None).await;
    // Health checks still get through: HTTP connections have their own share.
    let (status, _) = healthz_closed(onair.addr()).await;
    assert_eq!(status, 200);
    // Half-open requests fill the HTTP share; the next connection gets 503.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(onair.addr()).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = healthz_closed(onair.addr()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("too_many_http_connections"))
    );
    // The open sockets do not notice.
    b.recording(json!({"action": "set_consent", "consent": true}))
        .await;
    let update = a.until("control", "update").await;
    assert_eq!(update["recording"]["consents_recording"], true);
}
