//! The real server on an ephemeral port, and real WebSocket clients for it.
//! Every receive has a timeout; every server frame is checked against the
//! schemas in `protocol/`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use onair::Config;
use onair::auth::{Claims, Verifier, claims_for};
use onair::protocol::Role;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::schemas::validate_server_frame;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// How long any single receive may take before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A configuration with a known secret and admin key.
pub fn config() -> Config {
    let mut config = Config::default();
    config.auth.jwt_secret = Some(SECRET.into());
    config.auth.admin_key = Some(ADMIN_KEY.into());
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), onair::ServerError>>>,
    verifier: Verifier,
    /// Holds the store and storage directories of a server whose config left them at the defaults.
    _data: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start() -> Self {
        Self::with(config()).await
    }

    pub async fn with(mut config: Config) -> Self {
        // Each test server gets its own data directory unless the test chose one.
        let defaults = Config::default();
        let data = tempfile::tempdir().unwrap();
        if config.store.path == defaults.store.path {
            config.store.path = data.path().join("onair.db");
        }
        if config.storage.path == defaults.storage.path {
            config.storage.path = data.path().join("recordings");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let verifier = Verifier::new(
            config
                .auth
                .jwt_secret
                .as_deref()
                .unwrap_or("unused-in-dev-mode-000"),
            &config.auth,
        );
        let task = tokio::spawn(onair::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            verifier,
            _data: Some(data),
        }
    }

    /// A handle on a server started elsewhere (e.g. the binary) with [`SECRET`].
    pub fn remote(addr: SocketAddr) -> Self {
        Self {
            addr,
            stop: None,
            task: None,
            verifier: Verifier::new(SECRET, &Default::default()),
            _data: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/signaling", self.addr)
    }

    /// A token for `room` signed with the test secret.
    pub fn token(&self, room: &str, name: &str, role: Role) -> String {
        self.verifier.mint(&self.claims(room, name, role))
    }

    pub fn claims(&self, room: &str, name: &str, role: Role) -> Claims {
        claims_for(room, name, None, role, Duration::from_secs(600))
    }

    pub fn mint(&self, claims: &Claims) -> String {
        self.verifier.mint(claims)
    }

    /// Connects with `?token=` and joins.
    pub async fn join(&self, room: &str, name: &str, role: Role) -> (Client, Value) {
        let mut client = Client::connect_query(self, &self.token(room, name, role)).await;
        let success = client.join(None).await;
        (client, success)
    }

    /// Waits until `GET /readyz` answers `status` (a `[cluster]` node: 200
    /// once connected to Redis, 503 while cut off); fails after `within`.
    pub async fn readyz(&self, status: u16, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = http()
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|r| r.status().as_u16());
            if got.as_ref().ok() == Some(&status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz never answered {status} (last: {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub struct Client {
    pub ws: Ws,
    /// The participant id from `join_success`.
    pub id: String,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

impl Client {
    pub async fn connect_query(server: &Server, token: &str) -> Self {
        let url = format!("{}?token={token}", server.ws_url());
        Self::connect_request(url.into_client_request().unwrap()).await
    }

    pub async fn connect_bearer(server: &Server, token: &str) -> Self {
        let mut request = server.ws_url().into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        Self::connect_request(request).await
    }

    pub async fn connect_request(request: tungstenite::handshake::client::Request) -> Self {
        let (ws, response) =
            tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("connect in time")
                .expect("upgrade accepted");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        Self {
            ws,
            id: String::new(),
            protocol,
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// Sends `join` and returns the `join_success` payload.
    pub async fn join(&mut self, display_name: Option<&str>) -> Value {
        let mut payload = json!({"action": "join"});
        if let Some(name) = display_name {
            payload["display_name"] = json!(name);
        }
        self.send(json!({"namespace": "control", "payload": payload}))
            .await;
        let frame = self.recv().await;
        assert_eq!(frame["payload"]["message"], "join_success", "{frame}");
        self.id = frame["payload"]["id"].as_str().unwrap().to_owned();
        frame["payload"].clone()
    }

    pub async fn recording(&mut self, payload: Value) {
        self.send(json!({"namespace": "recording", "payload": payload}))
            .await;
    }

    /// The next text frame, schema-checked; fails the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("the frame reads");
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if let Err(e) = validate_server_frame(&value) {
                        panic!("server sent a frame outside the schema: {e}\n{value}");
                    }
                    return value;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The payload of the next frame, asserting its namespace and message.
    pub async fn expect(&mut self, namespace: &str, message: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["namespace"], namespace, "{frame}");
        assert_eq!(frame["payload"]["message"], message, "{frame}");
        frame["payload"].clone()
    }

    /// Skips frames until one matches; fails after [`RECV_TIMEOUT`] in total.
    pub async fn until(&mut self, namespace: &str, message: &str) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.recv())
                .await
                .unwrap_or_else(|_| panic!("no {namespace}/{message} in time"));
            if frame["namespace"] == namespace && frame["payload"]["message"] == message {
                return frame["payload"].clone();
            }
        }
    }

    /// Asserts that nothing arrives for `wait` (the keepalive's pings and
    /// pongs aside: they carry nothing).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match message {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close frame (if one came).
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("the server did not close the socket in time"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The refusal of an upgrade: status and JSON body.
pub async fn refused(request: tungstenite::handshake::client::Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade should have been refused"),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).expect("a JSON error body"))
                .unwrap_or(Value::Null);
            (status, body)
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// An HTTP client for the REST API.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(RECV_TIMEOUT)
        .build()
        .unwrap()
}
