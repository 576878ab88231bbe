//! The accept loop: what bounds an HTTP connection before it is a WebSocket.
//!
//! axum's own `serve` gives hyper no timer and counts nothing, so a client
//! could hold a connection open for as long as it liked by sending nothing,
//! a header line now and then, or nothing after one request. Here every
//! accepted connection:
//!
//! * takes an [`HttpSlot`] (`[server] max_http_connections` in all,
//!   `max_http_connections_per_ip` per peer); over a limit it gets a canned
//!   503 or 429 and is closed before anything is read;
//! * must send each request's headers within `header_timeout_s` (from the
//!   connection's start, or from the first byte of a later request) and may
//!   sit idle between requests for `idle_timeout_s`;
//! * leaves this loop when it upgrades: the signaling handler unwraps the
//!   plain `TcpStream` ([`into_tcp`]), so a WebSocket pays for none of this.
//!
//! Request bodies have their own deadline (`body_timeout_s`), applied where
//! bodies are read (see `limits::read_body`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::limits::{HttpSlot, Limits, Refusal, limit_reached};

/// The timeouts of one HTTP connection, from `[server]`.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// `header_timeout_s`.
    header: Duration,
    /// `idle_timeout_s`.
    idle: Duration,
}

/// Accepts connections until `shutdown`, then asks every HTTP connection to
/// finish its request and close, and returns once they all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<Limits>,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    let timeouts = Timeouts {
        header: Duration::from_secs(config.header_timeout_s),
        idle: Duration::from_secs(config.idle_timeout_s),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // Timeouts are ours (below); hyper's header timer would also cut idle
    // keep-alive at the header timeout.
    http.header_read_timeout(None)
        // The read buffer bounds a request's head: 16 KiB, like common proxies,
        // instead of hyper's ~400 KiB that a header flood could pin per connection.
        .max_buf_size(16 * 1024);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or another transient error):
                    // accepting again at once would spin.
                    limit_reached("open_files", &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match limits.admit_http(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(&tcp, refusal);
                continue;
            }
        };
        // Each recording command is two small frames written back to back: do
        // not let Nagle hold the second one until the first is acknowledged.
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            peer,
            slot,
            activity: Arc::new(Activity::new()),
        };
        connections.spawn(conn.run(
            tcp,
            http.clone(),
            router.clone(),
            timeouts,
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
}

/// Answers a connection over a limit without reading from it, and closes it.
fn refuse(tcp: &TcpStream, refusal: Refusal) {
    let code = refusal.code();
    limit_reached(code, &refusal);
    let status = refusal.status();
    let body = format!(r#"{{"code":"{code}","message":"{refusal}"}}"#);
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    // Best effort: a socket buffer that is full is the client's problem.
    let _ = tcp.try_write(answer.as_bytes());
}

/// One accepted HTTP connection.
struct Connection {
    /// The TCP peer.
    peer: SocketAddr,
    /// Its share of the HTTP connection counts, given back when it closes or
    /// upgrades.
    slot: Arc<HttpSlot>,
    /// What its timeouts are measured from.
    activity: Arc<Activity>,
}

impl Connection {
    /// Serves requests until the client closes, a timeout fires, the
    /// connection upgrades, or shutdown finishes the request in flight.
    async fn run(
        self,
        tcp: TcpStream,
        http: hyper::server::conn::http1::Builder,
        router: Router,
        timeouts: Timeouts,
        shutdown: CancellationToken,
    ) {
        let io = TokioIo::new(Watched {
            tcp,
            activity: self.activity.clone(),
        });
        let (peer, slot, activity) = (self.peer, self.slot.clone(), self.activity.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            let in_flight = InFlight::begin(&activity);
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, in_flight })))
            }
        });
        let conn = http.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, peer = %self.peer, "http connection ended");
                    }
                    return;
                }
                reason = self.activity.expired(timeouts) => {
                    if reason == "idle_timeout" {
                        // Browsers keep connections alive: counted, not logged.
                        crate::metrics::count(&crate::metrics::METRICS.limits_reached, reason);
                    } else {
                        limit_reached(reason, &self.peer);
                    }
                    return;
                }
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Gets the plain TCP stream (and a copy of whatever the client sent after
/// its request) back from an upgraded connection that this loop served.
///
/// The copy matters: hyper's read buffer (8 KiB, mostly empty) must not live
/// on for the whole session behind an empty `Bytes` (it cost ~4 KiB of RSS
/// per idle socket).
pub fn into_tcp(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<(TcpStream, Vec<u8>), hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<Watched>>()?;
    Ok((parts.io.into_inner().tcp, parts.read_buf.to_vec()))
}

/// Where a connection stands, for its timeouts.
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watcher when a request begins or ends: its deadline moves.
    changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Phase {
    /// Requests whose response has not been sent in full.
    in_flight: u32,
    /// When the connection last had nothing in flight (its start, at first).
    idle_since: Instant,
    /// When the first byte of the next request arrived, while idle.
    head_started: Option<Instant>,
    /// Whether a request was answered: before that, the header timeout runs
    /// from the connection's start.
    served: bool,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
                served: false,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // No code panics while holding it; recover the data if one ever did.
        self.phase
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes arrived: while idle they start a request's header clock.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if phase.in_flight == 0 && phase.head_started.is_none() {
            phase.head_started = Some(Instant::now());
        }
    }

    /// Resolves with the reason once a timeout has passed; never while a
    /// request is in flight (bodies have their own deadline).
    async fn expired(&self, timeouts: Timeouts) -> &'static str {
        loop {
            let now = Instant::now();
            let (reason, at) = {
                let phase = self.phase();
                if phase.in_flight > 0 {
                    (None, now + timeouts.idle)
                } else if let Some(started) = phase.head_started {
                    (Some("header_timeout"), started + timeouts.header)
                } else if !phase.served {
                    (Some("header_timeout"), phase.idle_since + timeouts.header)
                } else {
                    (Some("idle_timeout"), phase.idle_since + timeouts.idle)
                }
            };
            if let Some(reason) = reason
                && at <= now
            {
                return reason;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// One request in flight, until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut phase = activity.phase();
        phase.in_flight += 1;
        phase.head_started = None;
        drop(phase);
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.in_flight = phase.in_flight.saturating_sub(1);
        if phase.in_flight == 0 {
            phase.idle_since = Instant::now();
            phase.served = true;
        }
        drop(phase);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it is sent (or
/// dropped): a long download is not an idle connection.
struct Tracked {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The accepted stream, telling its [`Activity`] when bytes arrive.
pub struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
