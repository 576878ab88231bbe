//! Opening one bot's WebSocket: TCP from a chosen loopback source address,
//! the token in `Authorization: Bearer`, small buffers, no Nagle delay.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A bot's socket.
pub type Ws = WebSocketStream<TcpStream>;

/// One server the bots connect to.
#[derive(Debug, Clone)]
pub struct Server {
    /// The server's address (loopback).
    pub addr: SocketAddr,
    /// `host:port` for the request line.
    pub authority: String,
    /// Path and query, e.g. `/signaling`.
    pub path: String,
}

/// Where and how bots connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The servers; bot `i` connects to server `i mod n`, so the members of one
    /// room are spread over the nodes of a cluster.
    pub servers: Vec<Server>,
    /// Loopback source addresses to spread sockets over; empty: the kernel picks.
    pub source_ips: Vec<IpAddr>,
}

/// Why a connection attempt failed, as a short error kind.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl Target {
    /// Connects bot number `index` with `token`; `room` goes into the query for the floor.
    pub async fn connect(
        &self,
        index: u64,
        token: Option<&str>,
        room: Option<&str>,
    ) -> Result<Ws, ConnectError> {
        let server = &self.servers[(index % self.servers.len() as u64) as usize];
        let socket = match server.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| ConnectError(format!("socket_{:?}", e.kind())))?;
        if !self.source_ips.is_empty() {
            let ip = self.source_ips[(index % self.source_ips.len() as u64) as usize];
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| ConnectError(format!("bind_{:?}", e.kind())))?;
        }
        let stream = socket
            .connect(server.addr)
            .await
            .map_err(|e| ConnectError(format!("connect_{:?}", e.kind())))?;
        let _ = stream.set_nodelay(true);
        let mut uri = format!("ws://{}{}", server.authority, server.path);
        if let Some(room) = room {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str("room=");
            uri.push_str(room);
        }
        let mut request = uri
            .into_client_request()
            .map_err(|_| ConnectError("bad_url".into()))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ConnectError("bad_token".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(256 * 1024);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(ConnectError(format!("http_{}", response.status().as_u16())))
            }
            Err(e) => Err(ConnectError(format!("handshake_{}", short(&e.to_string())))),
        }
    }
}

fn short(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("_")
        .to_lowercase()
}

/// The claims onair reads (SPEC §2).
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    room: &'a str,
    name: &'a str,
    role: &'a str,
    exp: u64,
}

/// Mints HS256 participant tokens.
pub struct Minter {
    key: EncodingKey,
    exp: u64,
}

impl Minter {
    /// Tokens valid for `ttl` from now.
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp: (now + ttl).as_secs(),
        }
    }

    /// A token for `sub` in `room`.
    pub fn mint(&self, sub: &str, room: &str, moderator: bool) -> String {
        let claims = Claims {
            sub,
            room,
            name: sub,
            role: if moderator { "moderator" } else { "user" },
            exp: self.exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing of plain claims cannot fail")
    }
}
