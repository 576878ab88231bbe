//! One WebSocket connection: read frames, dispatch them to the room, and write
//! the room's events from a bounded queue.
//!
//! A single task serves the socket in both directions. Everything this client
//! should receive (its own replies and the room's fan-out) goes through one
//! bounded queue, so ordering is simple and memory is capped: when the queue
//! overflows the room drops the participant (a flag on its queue, which wakes
//! this task), and this task closes the socket with 1008.

pub mod cork;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Frame as WsFrame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::app::AppState;
use crate::auth::Claims;
use crate::limits::{Slot, json_too_deep};
use crate::metrics::{METRICS, count};
use crate::protocol::{
    ClientMessage, ControlCommand, ControlError, ControlEvent, Namespace, Parsed, Participant,
    ParticipantControl, ParticipantRecording, RecordingCommand, RecordingError, RecordingEvent,
    ServerFrame, check_display_name, now_rfc3339, parse_client_frame, short_detail,
};
use crate::recording::{Actor, Input, StartOptions};
use crate::room::{Frame, Outlet, Queue, Room, encode};

/// Close codes onair uses (RFC 6455 §7.4.1).
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (an unmasked or reserved
    /// frame, a fragmented control frame, a continuation with nothing to
    /// continue…).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame (or a Close reason) that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation: the client stopped reading, or never joined.
    pub const POLICY: u16 = 1008;
    /// A frame was too large, or binary.
    pub const TOO_BIG: u16 = 1009;
}

pub use crate::protocol::MAX_DISPLAY_NAME;

/// Frames written to the socket before one flush, when several are queued.
const WRITE_BATCH: usize = 64;

/// Text frames longer than this are sent as fragments of this size. tungstenite
/// keeps its write buffer at the capacity of the largest frame it ever wrote, so
/// one `join_success` listing a big room would otherwise stay allocated for the
/// socket's whole life (~11 KiB per participant in rooms of 100), and a room of
/// ~600 would make it larger than `max_write_buffer_size`.
const FRAGMENT_BYTES: usize = 512;

/// The socket of one participant: its TCP stream, writes corked until each
/// batch's flush ([`cork`]).
pub type WebSocket = tokio_tungstenite::WebSocketStream<cork::Corked>;

/// Serves one upgraded socket until it closes: the future to spawn. Not an
/// `async fn`: a wrapper's own state would sit beside `drive`'s for the
/// socket's whole life.
pub fn serve(
    socket: WebSocket,
    claims: Claims,
    app: Arc<AppState>,
    slot: Slot,
) -> impl Future<Output = ()> + Send + 'static {
    let id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("session", room = %claims.room, participant = %id);
    let session = Session::new(id, claims, app, slot);
    drive(session, socket).instrument(span)
}

struct Session {
    id: String,
    claims: Claims,
    app: Arc<AppState>,
    outlet: Outlet,
    room: Option<Arc<Room>>,
    limiter: RateLimiter,
    /// The socket's share of the connection counts, given back when it ends.
    _slot: Slot,
}

enum Flow {
    Continue,
    /// A room operation to finish before the next frame is read: on one node
    /// it is ready at once; with `[cluster]` it awaits Redis (no thread
    /// blocks meanwhile). Boxed, so an idle socket pays nothing for it; a
    /// join's answer is the room to keep.
    Wait(RoomOp),
    Close(u16, &'static str),
    Gone,
}

/// See [`Flow::Wait`].
type RoomOp = std::pin::Pin<Box<dyn Future<Output = Option<Arc<Room>>> + Send>>;

impl Session {
    fn new(id: String, claims: Claims, app: Arc<AppState>, slot: Slot) -> Self {
        let server = &app.config.server;
        let limiter = RateLimiter::new(server.messages_per_second, server.message_burst);
        Self {
            id,
            claims,
            outlet: Outlet {
                queue: Queue::new(server.send_queue),
            },
            room: None,
            limiter,
            app,
            _slot: slot,
        }
    }
}

/// The connection's loop: each round, the first of a kick, a queued frame
/// to write, the join timeout, a frame to read, or shutdown wins.
///
/// Not an `async fn`: that would keep `session` and `socket` twice in the
/// future for the socket's whole life, once as the call's arguments and once
/// as the body's own (~0.6 KiB per socket, `-Zprint-type-sizes`); the block
/// below owns them once.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn drive(mut session: Session, mut socket: WebSocket) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let shutdown_token = session.app.shutdown.clone();
        // Created once and polled by reference: a fresh `cancelled()` future
        // per round would register and unregister a waiter each time.
        let shutdown = shutdown_token.cancelled();
        tokio::pin!(shutdown);
        let queue = session.outlet.queue.clone();
        // Boxed and dropped once joined: a timer is memory (and a timer-wheel
        // entry) that a joined participant no longer needs.
        let mut join_deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs(
            session.app.config.server.join_timeout_s,
        ))));
        // Rounds in a row that found a frame to write or read.
        let mut busy: u8 = 0;
        // Whether the next look that finds no frame polls the socket's
        // reads, the join timer and the shutdown token even if the queue
        // was not stirred: they have not been polled yet, or a message was
        // just read (tungstenite may hold more).
        let mut look_around = true;
        tracing::debug!("connected");
        METRICS.connections.inc();

        let flow = loop {
            if session.room.is_some() {
                join_deadline = None;
            }
            // A kick is a flag on the queue and wakes the task through it;
            // queued frames come next, as a wake-up is nearly always for
            // them. The socket's reads, the join timer and the shutdown
            // token are polled with the queue as their waker, which marks
            // it stirred when one of them wakes the task, so they are
            // polled again only when that happened: a look at the socket
            // that finds nothing costs tungstenite's read buffer and
            // tokio's readiness (~600 instructions, callgrind), and the
            // shutdown token a lock shared by every socket. After
            // SHUTDOWN_EVERY busy rounds the shutdown token is polled
            // first, so that a flood of frames either way cannot hide it.
            let woke = std::future::poll_fn(|cx| {
                if queue.is_kicked() {
                    return Poll::Ready(Woke::Flow(kicked(&queue)));
                }
                let waker = queue.stir_waker();
                let mut stir = Context::from_waker(&waker);
                let due = busy >= SHUTDOWN_EVERY;
                if due {
                    busy = 0;
                    look_around = true;
                    if shutdown.as_mut().poll(&mut stir).is_ready() {
                        return Poll::Ready(Woke::Flow(going_away()));
                    }
                }
                // Pending, it leaves the task registered with the queue,
                // which the stirring waker then wakes.
                if let Poll::Ready(frames) = queue.poll_take(cx, WRITE_BATCH) {
                    busy += 1;
                    return Poll::Ready(Woke::Frames(frames));
                }
                if !(queue.take_stirred() || std::mem::take(&mut look_around)) {
                    busy = 0;
                    return Poll::Pending;
                }
                if let Some(deadline) = join_deadline.as_mut()
                    && deadline.as_mut().poll(&mut stir).is_ready()
                {
                    return Poll::Ready(Woke::Flow(Flow::Close(
                        close_code::POLICY,
                        "join timeout: send `join` first",
                    )));
                }
                if let Poll::Ready(incoming) = socket.poll_next_unpin(&mut stir) {
                    look_around = true;
                    busy += 1;
                    return Poll::Ready(Woke::Incoming(incoming));
                }
                busy = 0;
                if !due && shutdown.as_mut().poll(&mut stir).is_ready() {
                    return Poll::Ready(Woke::Flow(going_away()));
                }
                Poll::Pending
            })
            .await;
            let flow = match woke {
                Woke::Frames(frames) => tokio::select! {
                    biased;
                    written = write(&mut socket, frames) => match written {
                        Ok(()) => Flow::Continue,
                        Err(_) => Flow::Gone,
                    },
                    // A client that does not read blocks the write. The
                    // kick's poll registers the task with the queue, which
                    // the shutdown token wakes (as above).
                    () = std::future::poll_fn(|cx| queue.poll_kicked(cx)) => kicked(&queue),
                    () = std::future::poll_fn(|_| {
                        shutdown.as_mut().poll(&mut Context::from_waker(&queue.stir_waker()))
                    }) => going_away(),
                },
                Woke::Incoming(incoming) => session.on_incoming(incoming),
                Woke::Flow(flow) => flow,
            };
            match flow {
                Flow::Continue => continue,
                Flow::Wait(op) => {
                    if let Some(room) = op.await {
                        session.room = Some(room);
                    }
                }
                other => break other,
            }
        };

        if let Some(room) = session.room.take() {
            // Boxed: its state would otherwise widen every session's future.
            Box::pin(session.app.rooms.leave(&room, &session.id)).await;
        }
        METRICS.connections.dec();
        // Boxed: the closing handshake's state would otherwise widen every
        // session's future, which each idle participant pays for.
        Box::pin(close(socket, flow)).await;
        tracing::debug!("disconnected");
    }
}

/// What woke the session's loop ([`drive`]).
enum Woke {
    /// Queued frames to write.
    Frames(std::collections::VecDeque<Frame>),
    /// What the socket read.
    Incoming(Option<Result<Message, tungstenite::Error>>),
    /// The end: kicked, the join timeout, or shutdown.
    Flow(Flow),
}

/// Busy rounds of the session's loop between two polls of the shutdown
/// token ([`drive`]).
const SHUTDOWN_EVERY: u8 = 16;

/// The server is shutting down.
fn going_away() -> Flow {
    Flow::Close(close_code::GOING_AWAY, "server shutting down")
}

/// Why the room dropped this socket: it answered no ping, or it stopped reading.
fn kicked(queue: &crate::room::Queue) -> Flow {
    if queue.silenced() {
        Flow::Close(close_code::GOING_AWAY, PING_TIMEOUT)
    } else {
        Flow::Close(
            close_code::POLICY,
            "send queue overflow: client is not reading",
        )
    }
}

/// The reason a silent socket is closed with.
const PING_TIMEOUT: &str = "ping timeout: nothing received within [server] ping_timeout_s";

/// Ends the connection: a Close frame with the server's reason (and the
/// wait for the client's answer), or the reply to the client's Close.
async fn close(mut socket: WebSocket, flow: Flow) {
    match flow {
        Flow::Close(code, reason) => {
            tracing::debug!(code, reason, "closing");
            count(&METRICS.closed_by_server, close_reason(code, reason));
            let frame = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                socket.send(Message::Close(Some(frame))).await?;
                // Wait briefly for the client's answering Close.
                while let Some(read) = socket.next().await {
                    match read {
                        Ok(Message::Close(_)) => break,
                        Ok(_) => continue,
                        Err(_) => {
                            // E.g. the rest of an oversized frame: leaving it
                            // unread would make the kernel answer with a
                            // reset, which destroys our Close frame before
                            // the client reads it. Discard it instead.
                            drain(socket.get_mut().tcp_mut()).await;
                            break;
                        }
                    }
                }
                Ok::<_, tungstenite::Error>(())
            })
            .await;
        }
        Flow::Gone => {
            // Flush the automatic reply to a client's Close, if any.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
        }
        Flow::Continue | Flow::Wait(_) => unreachable!(),
    }
}

/// Reads and discards what the client still sends, until it closes (the
/// caller bounds the time; this bounds the bytes).
async fn drain(raw: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    const MAX_DRAINED: usize = 1 << 20;
    let mut buf = vec![0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAINED {
        match raw.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

impl Session {
    fn on_incoming(&mut self, incoming: Option<Result<Message, tungstenite::Error>>) -> Flow {
        if let Some(Ok(_)) = &incoming {
            self.outlet.queue.heard();
        }
        match incoming {
            None => Flow::Gone,
            Some(Err(e)) => close_for_read_error(e),
            Some(Ok(Message::Text(text))) => {
                METRICS.frames_received.inc();
                if !self.limiter.allow(Instant::now()) {
                    count(&METRICS.client_errors, ControlError::RateLimited.as_str());
                    if self.limiter.should_warn(Instant::now()) {
                        self.reply(control_error(
                            ControlError::RateLimited,
                            Some(format!(
                                "more than {} messages per second; messages are being dropped",
                                self.app.config.server.messages_per_second
                            )),
                        ));
                    }
                    return Flow::Continue;
                }
                self.on_text(&text)
            }
            Some(Ok(Message::Binary(_))) => {
                Flow::Close(close_code::TOO_BIG, "binary frames are not supported")
            }
            Some(Ok(Message::Close(_))) => Flow::Gone,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Flow::Continue,
        }
    }

    fn on_text(&mut self, text: &str) -> Flow {
        // Refused before serde recurses into it; answered like any unreadable frame.
        let max_depth = self.app.config.server.max_json_depth;
        if json_too_deep(text.as_bytes(), max_depth) {
            count(&METRICS.client_errors, "json_too_deep");
            return self.reply(encode(&ServerFrame::control(ControlEvent::Error {
                error: ControlError::InvalidJson,
                detail: Some(format!(
                    "the frame nests deeper than {max_depth} levels ([server] max_json_depth)"
                )),
            })));
        }
        match parse_client_frame(text) {
            Parsed::InvalidJson(detail) => {
                self.reply(control_error(ControlError::InvalidJson, Some(detail)))
            }
            Parsed::InvalidNamespace(namespace) => self.reply(control_error(
                ControlError::InvalidNamespace,
                Some(short_detail(&format!("unknown namespace `{namespace}`"))),
            )),
            Parsed::InvalidPayload { namespace, detail } => {
                self.reply(invalid_payload(namespace, detail))
            }
            Parsed::Command(ClientMessage::Control(ControlCommand::Join { display_name })) => {
                self.join(display_name)
            }
            Parsed::Command(ClientMessage::Recording(command)) => self.recording(command),
        }
    }

    fn join(&mut self, display_name: Option<String>) -> Flow {
        if self.room.is_some() {
            return self.reply(control_error(ControlError::AlreadyJoined, None));
        }
        let requested = display_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let name = requested
            .or(self
                .claims
                .name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty()))
            .unwrap_or(&self.claims.sub);
        if let Err(e) = check_display_name(name) {
            // Whichever stood in for it: the token's `name`, or its `sub`.
            let field = if requested.is_some() {
                "display_name"
            } else {
                "the name from the token"
            };
            return self.reply(control_error(
                ControlError::InvalidDisplayName,
                Some(format!("join: {field} {e}")),
            ));
        }
        let participant = Participant {
            id: self.id.clone(),
            control: ParticipantControl {
                display_name: name.to_owned(),
                role: self.claims.role,
                joined_at: now_rfc3339(),
                participation_kind: self.claims.role.into(),
            },
            recording: ParticipantRecording {
                consents_recording: false,
            },
        };
        let app = self.app.clone();
        let (room, sub) = (self.claims.room.clone(), self.claims.sub.clone());
        let (may_record, outlet) = (self.claims.may_record(), self.outlet.clone());
        let role = self.claims.role;
        Flow::Wait(Box::pin(async move {
            let room = app
                .rooms
                .join(&room, participant, &sub, may_record, outlet)
                .await;
            tracing::info!(?role, "joined");
            Some(room)
        }))
    }

    fn recording(&mut self, command: RecordingCommand) -> Flow {
        let Some(room) = self.room.clone() else {
            return self.reply(control_error(ControlError::NotYetJoined, None));
        };
        let (app, id, outlet) = (self.app.clone(), self.id.clone(), self.outlet.clone());
        let actor = Actor {
            participant: Some(self.id.clone()),
            may_record: self.claims.may_record(),
        };
        let op: RoomOp = match command {
            RecordingCommand::SetConsent { consent } => Box::pin(async move {
                app.rooms.set_consent(&room, &id, consent).await;
                None
            }),
            RecordingCommand::Start { audio_only } => {
                let sub = self.claims.sub.clone();
                Box::pin(async move {
                    let recording_id = uuid::Uuid::new_v4().to_string();
                    let start = Input::Start {
                        actor,
                        new_recording_id: recording_id.clone(),
                        options: StartOptions {
                            audio_only,
                            requested_by_user: Some(sub.clone()),
                        },
                    };
                    let applied = app.rooms.apply(&room, Some(&outlet), start).await;
                    // The owner gets the notifications when the file is ready.
                    // One node saves it with the start's own transition.
                    if applied.refused.is_none()
                        && app.rooms.cluster().is_some()
                        && let Err(e) = app.catalog.store().set_owner(&recording_id, &sub).await
                    {
                        tracing::error!(error = %e, "cannot record the recording's owner");
                    }
                    None
                })
            }
            RecordingCommand::Stop { recording_id } => Box::pin(async move {
                let stop = Input::Stop {
                    actor,
                    recording_id,
                };
                app.rooms.apply(&room, Some(&outlet), stop).await;
                None
            }),
        };
        Flow::Wait(op)
    }

    /// Queues a frame for this client only; a full queue means it does not read.
    fn reply(&self, frame: Frame) -> Flow {
        if !self.outlet.offer(frame) {
            self.outlet.kick_out();
        }
        Flow::Continue
    }
}

/// Writes a batch of queued frames, then flushes once.
///
/// A frame that fits in one WebSocket frame goes straight into the cork
/// ([`cork::Corked::put_text`]) while tungstenite holds nothing: the batch
/// before ended with a completed flush, and reads only make it write a
/// whole pong or close reply, whose order beside data frames does not
/// matter. Once a frame has gone through tungstenite (a ping, or a long
/// message in fragments) the rest of the batch follows it there, so no
/// frame can pass one that tungstenite still holds.
async fn write(
    socket: &mut WebSocket,
    frames: std::collections::VecDeque<Frame>,
) -> Result<(), tungstenite::Error> {
    // The usual batch (a transition's `started` and `status`): sent at once,
    // not copied.
    if frames.len() <= cork::VECTORED && frames.iter().all(one_frame) {
        let mut texts: [&[u8]; cork::VECTORED] = [&[]; cork::VECTORED];
        for (text, frame) in texts.iter_mut().zip(&frames) {
            *text = frame.as_bytes();
        }
        socket.get_mut().send_texts(&texts[..frames.len()])?;
        // A pong tungstenite owes, and what the kernel did not take.
        return socket.flush().await;
    }
    let mut frames = frames.into_iter();
    for frame in frames.by_ref() {
        if !one_frame(&frame) {
            feed_text(socket, frame).await?;
            break;
        }
        socket.get_mut().put_text(frame.as_bytes());
    }
    for frame in frames {
        feed_text(socket, frame).await?;
    }
    socket.flush().await
}

/// Whether a queued frame goes out as one WebSocket text frame: not the
/// keepalive's ping (empty), nor a message long enough to be fragmented.
fn one_frame(frame: &Frame) -> bool {
    !frame.is_empty() && frame.len() <= FRAGMENT_BYTES
}

/// Queues one text message, in fragments of `FRAGMENT_BYTES` when it is longer.
async fn feed_text(socket: &mut WebSocket, text: Frame) -> Result<(), tungstenite::Error> {
    if text.is_empty() {
        // The keepalive sweep's ping (no message onair sends is empty).
        return socket.feed(Message::Ping(bytes::Bytes::new())).await;
    }
    if text.len() <= FRAGMENT_BYTES {
        return socket.feed(Message::Text(text)).await;
    }
    let bytes = bytes::Bytes::from(text);
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT_BYTES).min(bytes.len());
        let opcode = if start == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let fragment = WsFrame::message(bytes.slice(start..end), opcode, end == bytes.len());
        socket.feed(Message::Frame(fragment)).await?;
        start = end;
    }
    Ok(())
}

/// A frame over the size limit is a capacity error: close with 1009; text
/// that is not UTF-8 with 1007; a broken WebSocket protocol with 1002
/// (RFC 6455 §7.4.1). Any other read error means the connection is already
/// gone, and nothing can be sent on it.
fn close_for_read_error(error: tungstenite::Error) -> Flow {
    use tungstenite::error::ProtocolError;
    match error {
        tungstenite::Error::Capacity(_) => {
            Flow::Close(close_code::TOO_BIG, "frame larger than the server accepts")
        }
        tungstenite::Error::Utf8(_) => {
            Flow::Close(close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8")
        }
        // The peer closed the TCP connection (with or without its Close).
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::ReceivedAfterClosing,
        ) => Flow::Gone,
        tungstenite::Error::Protocol(e) => {
            tracing::debug!(error = %e, "protocol error");
            Flow::Close(close_code::PROTOCOL_ERROR, "WebSocket protocol error")
        }
        other => {
            tracing::debug!(error = %other, "read error");
            Flow::Gone
        }
    }
}

/// The metric label of a server-side close.
fn close_reason(code: u16, reason: &str) -> &'static str {
    match code {
        close_code::GOING_AWAY if reason == PING_TIMEOUT => "ping_timeout",
        close_code::GOING_AWAY => "shutdown",
        close_code::TOO_BIG if reason.starts_with("binary") => "binary_frame",
        close_code::TOO_BIG => "frame_too_large",
        close_code::PROTOCOL_ERROR => "protocol_error",
        close_code::INVALID_PAYLOAD => "invalid_utf8",
        _ if reason.starts_with("join timeout") => "join_timeout",
        _ => "slow_reader",
    }
}

fn control_error(error: ControlError, detail: Option<String>) -> Frame {
    // Dropped messages are counted where they are dropped, not per warning.
    if error != ControlError::RateLimited {
        count(&METRICS.client_errors, error.as_str());
    }
    encode(&ServerFrame::control(ControlEvent::Error { error, detail }))
}

fn invalid_payload(namespace: Namespace, detail: String) -> Frame {
    match namespace {
        Namespace::Control => control_error(ControlError::InvalidPayload, Some(detail)),
        Namespace::Recording => {
            count(&METRICS.client_errors, "invalid_payload");
            encode(&ServerFrame::recording(RecordingEvent::Error {
                error: RecordingError::InvalidPayload,
                detail: Some(detail),
            }))
        }
    }
}

/// A token bucket: `rate` messages per second on average, bursts up to `burst`.
struct RateLimiter {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Option<Instant>,
    warned: Option<Instant>,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: None,
            warned: None,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// At most one `rate_limited` error per second, so the warning itself cannot flood.
    fn should_warn(&mut self, now: Instant) -> bool {
        let due = self
            .warned
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if due {
            self.warned = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3);
        assert!(limiter.allow(start));
        assert!(limiter.allow(start));
        assert!(limiter.allow(start));
        assert!(!limiter.allow(start));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(100)));
        // Idle time refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| limiter.allow(later)));
        assert!(!limiter.allow(later));
    }

    #[test]
    fn rate_limit_warnings_are_spaced() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(1, 1);
        assert!(limiter.should_warn(start));
        assert!(!limiter.should_warn(start + Duration::from_millis(500)));
        assert!(limiter.should_warn(start + Duration::from_secs(1)));
    }
}
