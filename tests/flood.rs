//! Issue 8's flood: hostile clients in one room cannot make the 100 clients
//! that behave miss a recording event, cannot make the server's memory grow
//! without bound, and cannot disturb another room.
//!
//! The real `onair` binary runs in its own process, so its resident memory is
//! its own (read from `/proc/<pid>/status`). One room holds 100 well-behaved
//! readers and a moderator. Into it come:
//!
//! * a client that sends as fast as its socket takes it (and reads its
//!   replies): it is rate-limited and reconnects now and then;
//! * a client that joins, sends one frame (or one fragmented message) over
//!   `max_frame_bytes`, is closed with 1009, and does it again;
//! * a client that joins and never reads again: it must be closed with 1008.
//!
//! The room is kept busy by consent toggles, sent in turn by the readers
//! themselves (so no one connection nears the rate limit), while the
//! moderator runs [`CYCLES`] start/stop cycles. Every reader must see every
//! `started` and `stopped`, with the moderator's ids, in order.
//!
//! Nothing here waits on the clock for correctness: the toggles stay at most
//! [`WINDOW`] ahead of the slowest reader (so a slow machine only makes the
//! test slower, never makes a reader lag into its send queue limit), the
//! flood ends on events (the slow reader has left, the flooders have been
//! refused as documented, the cycles are done), and every receive has a
//! timeout.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use onair::protocol::Role;
use onair::session::MAX_DISPLAY_NAME;
use serde_json::{Value, json};
use support::binary::{self, Onair};
use support::harness::{Client, Server, Ws};
use support::schemas::validate_server_frame;
use support::slow;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The flooded room.
const ROOM: &str = "flooded";
/// Well-behaved clients in it, besides the moderator.
const READERS: usize = 100;
/// Start/stop cycles the moderator runs during the flood.
const CYCLES: usize = 20;
/// Consent toggles between the starts of two cycles, so the cycles are spread
/// over the flood (before and after the slow reader is dropped).
const STEPS_PER_CYCLE: u64 = 50;
/// How many consent toggles may be sent before the slowest reader has seen
/// them. Far below the server's `send_queue` (1024), so a reader that reads
/// can never be mistaken for a slow one, however slow this machine is.
const WINDOW: u64 = 32;
/// The longest any single receive may take. Generous: two cores serve the
/// server, 100 readers and the flooders at once.
const RECV: Duration = Duration::from_secs(30);
/// A bound on the flood's length in toggles. The never-reading client is
/// dropped once its 1 024-frame queue is full, which takes ~6 000 toggles
/// here: first the kernel's send buffer for its socket grows to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB) and fills.
const MAX_STEPS: u64 = 50_000;
/// Messages the max-rate flooder sends on one connection before it
/// reconnects (a fresh connection also brings a fresh burst allowance).
const FLOOD_PER_CONNECTION: u64 = 20_000;
/// The server's `max_frame_bytes` (the default, set explicitly here).
const MAX_FRAME_BYTES: usize = 65_536;
/// How far the server's resident memory may rise above its level with the
/// 100 readers joined. Measured on a 2-core machine (debug build): a baseline
/// of ~21 MiB rose by 1.1–1.5 MiB at the peak, i.e. the never-reading
/// client's full queue (1 024 frames of ~0.5 KiB), the flooders' read buffers
/// (at most one 64 KiB frame each) and allocator slack. 32 MiB is twenty
/// times that, a wide margin for other allocators and machines, while still
/// catching a leak or an unbounded queue: the flood pushes ~700 000 messages
/// and ~10 MB of oversized frames through the server, and keeping as little
/// as 50 bytes of each message would exceed it.
const RSS_BOUND_KIB: u64 = 32 * 1024;

// --- the onair binary ----------------------------------------------------------

/// The onair binary in its own process, killed when dropped, on its own data
/// directory, with none of the developer's `ONAIR_*` variables and the given
/// extra environment; returns once it listens.
fn spawn_onair(extra_env: &[(&str, &str)]) -> Onair {
    let data = tempfile::tempdir().unwrap();
    Onair::spawn(
        binary::hermetic_command(data.path())
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().copied()),
    )
    .owning(data)
}

/// The process's resident set size in KiB (`VmRSS`).
fn onair_rss_kib(onair: &Onair) -> u64 {
    rss_kib(onair.child.id()).expect("onair's /proc/<pid>/status has VmRSS")
}

/// `VmRSS` of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 100 ms until stopped; returns the peak and
/// the number of samples. The interval is only a sampling rate: nothing
/// waits on it.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u32)> {
    std::thread::spawn(move || {
        let (mut peak, mut samples) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            if let Some(rss) = rss_kib(pid) {
                peak = peak.max(rss);
                samples += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (peak, samples)
    })
}

// --- the readers' progress -----------------------------------------------------

/// How far each well-behaved client has read, for pacing the room's traffic.
struct Progress {
    /// Per client (the readers, then the moderator): consent `update`s seen.
    seen: Vec<AtomicU64>,
    /// Woken whenever a count moves or a client fails.
    changed: Notify,
    /// The first failure of a well-behaved client, if any.
    failure: Mutex<Option<String>>,
}

impl Progress {
    fn new(clients: usize) -> Self {
        Self {
            seen: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            changed: Notify::new(),
            failure: Mutex::new(None),
        }
    }

    fn saw_update(&self, client: usize) {
        self.seen[client].fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn fail(&self, message: String) {
        self.failure
            .lock()
            .unwrap()
            .get_or_insert_with(|| message.clone());
        self.changed.notify_waiters();
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap().clone()
    }

    /// The least number of toggles any client has accounted for: the updates
    /// it saw plus its own toggles (the server does not echo a consent change
    /// to its sender).
    fn slowest(&self, own: &[u64]) -> (usize, u64) {
        self.seen
            .iter()
            .enumerate()
            .map(|(i, seen)| {
                (
                    i,
                    seen.load(Ordering::Relaxed) + own.get(i).copied().unwrap_or(0),
                )
            })
            .min_by_key(|&(_, n)| n)
            .unwrap_or((0, 0))
    }

    /// Waits until every client has accounted for at least `target` toggles.
    async fn wait_for(&self, own: &[u64], target: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(failure) = self.failure() {
                panic!("a well-behaved client failed: {failure}");
            }
            let (client, accounted) = self.slowest(own);
            if accounted >= target {
                return;
            }
            if tokio::time::timeout(RECV, notified).await.is_err() {
                panic!(
                    "client {client} accounted for {accounted} consent toggles and no more \
                     in {RECV:?} (waiting for {target})"
                );
            }
        }
    }
}

/// A recording event as a reader saw it: (`started`|`stopped`, recording id).
type Event = (String, String);

/// One received text frame, parsed and checked against `protocol/schemas`;
/// `Ok(None)` for pings and pongs.
fn parse_text(message: Message) -> Result<Option<Value>, String> {
    match message {
        Message::Text(text) => {
            let frame: Value = serde_json::from_str(&text)
                .map_err(|e| format!("server frame is not JSON: {e}: {text}"))?;
            validate_server_frame(&frame)
                .map_err(|e| format!("server frame outside the schema: {e}: {frame}"))?;
            Ok(Some(frame))
        }
        Message::Ping(_) | Message::Pong(_) => Ok(None),
        Message::Close(frame) => Err(format!("closed by the server: {frame:?}")),
        other => Err(format!("unexpected frame {other:?}")),
    }
}

/// What a well-behaved client does with one frame: count consent updates,
/// collect recording events, refuse any error addressed to it.
fn observe(
    frame: &Value,
    client: usize,
    progress: &Progress,
    events: &mut Vec<Event>,
    left: Option<&watch::Sender<HashSet<String>>>,
) -> Result<(), String> {
    let payload = &frame["payload"];
    let message = payload["message"].as_str().unwrap_or_default();
    match (frame["namespace"].as_str().unwrap_or_default(), message) {
        ("control", "update") => progress.saw_update(client),
        ("control", "left") => {
            if let (Some(left), Some(id)) = (left, payload["id"].as_str()) {
                left.send_modify(|ids| {
                    ids.insert(id.to_owned());
                });
            }
        }
        ("recording", "started" | "stopped") => {
            let id = payload["recording_id"]
                .as_str()
                .ok_or_else(|| format!("no recording_id: {frame}"))?;
            events.push((message.to_owned(), id.to_owned()));
        }
        (_, "error") => return Err(format!("a well-behaved client got an error: {frame}")),
        _ => {}
    }
    Ok(())
}

/// A well-behaved reader: reads everything until the flood is over and it has
/// seen all [`CYCLES`] cycles; returns the recording events it saw.
async fn read_all(
    mut stream: SplitStream<Ws>,
    client: usize,
    progress: Arc<Progress>,
    mut over: watch::Receiver<bool>,
    left: Option<watch::Sender<HashSet<String>>>,
) -> (SplitStream<Ws>, Vec<Event>) {
    let mut events = Vec::new();
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                biased;
                next = tokio::time::timeout(RECV, stream.next()) => {
                    let message = next
                        .map_err(|_| format!("nothing for {RECV:?} after {} events", events.len()))?
                        .ok_or("the socket ended")?
                        .map_err(|e| format!("read error: {e}"))?;
                    if let Some(frame) = parse_text(message)? {
                        observe(&frame, client, &progress, &mut events, left.as_ref())?;
                    }
                }
                _ = over.wait_for(|over| *over), if events.len() >= 2 * CYCLES => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        progress.fail(format!("reader {client}: {e}"));
    }
    (stream, events)
}

/// A reader's display name: 100 characters (the most a name may have), most
/// of them three bytes in UTF-8, so every consent `update` is a sizeable frame
/// and the never-reading client's socket buffers fill in fewer toggles.
fn display_name(reader: usize) -> String {
    let name = format!("Reader {reader:03} ");
    let pad = MAX_DISPLAY_NAME - name.chars().count();
    name + &"名".repeat(pad)
}

// --- the flood ---------------------------------------------------------------

/// What the flooders observed.
#[derive(Default)]
struct FloodStats {
    /// Messages the max-rate flooder got onto the wire.
    flood_sent: AtomicU64,
    /// Connections the max-rate flooder made.
    flood_connections: AtomicU64,
    /// `rate_limited` errors it was told.
    rate_limited: AtomicU64,
    /// Oversized attempts (each a fresh connection that joined first).
    oversized_attempts: AtomicU64,
    /// Of those, how many ended with a close frame carrying 1009.
    closed_1009: AtomicU64,
    /// Close codes other than 1009 (or none) seen by the oversized flooder.
    other_endings: Mutex<Vec<String>>,
}

/// The flood's content: commands whose answers go to the sender alone, so
/// the flood itself adds nothing to the room's fan-out but joins and leaves.
fn flood_messages() -> Vec<Message> {
    let deep = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
    [
        json!({"namespace": "recording", "payload": {"action": "start"}}).to_string(),
        json!({"namespace": "recording", "payload": {"action": "stop", "recording_id": "x"}})
            .to_string(),
        json!({"namespace": "control", "payload": {"action": "join"}}).to_string(),
        json!({"namespace": "nowhere", "payload": {"action": "join"}}).to_string(),
        json!({"namespace": "recording", "payload": {"action": "set_consent"}}).to_string(),
        "{\"namespace\": \"control\", \"payload\": ".to_owned(),
        deep,
    ]
    .into_iter()
    .map(Message::text)
    .collect()
}

/// Connects and joins `ROOM` as a plain user; `None` if the server refused or
/// answered too slowly (the flooders then simply try again).
async fn join_room(server: &Server, name: &str) -> Option<Ws> {
    let url = format!(
        "{}?token={}",
        server.ws_url(),
        server.token(ROOM, name, Role::User)
    );
    let (mut ws, _) = tokio::time::timeout(RECV, tokio_tungstenite::connect_async(url))
        .await
        .ok()?
        .ok()?;
    let join = json!({"namespace": "control", "payload": {"action": "join"}});
    ws.send(Message::text(join.to_string())).await.ok()?;
    loop {
        let message = tokio::time::timeout(RECV, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).ok()?;
            if frame["payload"]["message"] == "join_success" {
                return Some(ws);
            }
        }
    }
}

/// Waits for a permit (granted by the pacing loop) unless the flood is over.
async fn permit(permits: &Semaphore, over: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        _ = over.wait_for(|over| *over) => false,
        permit = permits.acquire() => {
            permit.expect("the semaphore stays open").forget();
            true
        }
    }
}

/// Sends at the maximum rate the socket takes, reading (and counting) the
/// replies on the side; reconnects after [`FLOOD_PER_CONNECTION`] messages or
/// when the server closes it.
async fn max_rate_flooder(
    server: Server,
    stats: Arc<FloodStats>,
    permits: Arc<Semaphore>,
    mut over: watch::Receiver<bool>,
) {
    let messages = flood_messages();
    while permit(&permits, &mut over).await {
        let Some(ws) = join_room(&server, "Flooder").await else {
            continue;
        };
        stats.flood_connections.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = ws.split();
        let counting = Arc::clone(&stats);
        let replies = tokio::spawn(async move {
            // The server ends the socket when the flooder closes it; the
            // timeout only bounds a broken run.
            while let Ok(Some(Ok(message))) = tokio::time::timeout(RECV, stream.next()).await {
                if let Message::Text(text) = message
                    && text.contains("\"rate_limited\"")
                {
                    counting.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut sent = 0u64;
        'flood: while sent < FLOOD_PER_CONNECTION && !*over.borrow() {
            for message in messages.iter().cycle().take(256) {
                if sink.feed(message.clone()).await.is_err() {
                    break 'flood;
                }
                sent += 1;
            }
            if sink.flush().await.is_err() {
                break;
            }
            stats.flood_sent.fetch_add(256, Ordering::Relaxed);
        }
        let _ = sink.close().await;
        let _ = tokio::time::timeout(RECV, replies).await;
    }
}

/// Joins, sends one message over `max_frame_bytes` (alternately one frame,
/// and a message fragmented into frames that are each within the limit),
/// expects a close with 1009, and repeats.
async fn oversized_flooder(
    server: Server,
    stats: Arc<FloodStats>,
    permits: Arc<Semaphore>,
    mut over: watch::Receiver<bool>,
) {
    let mut attempt = 0u64;
    while permit(&permits, &mut over).await {
        let Some(ws) = join_room(&server, "Oversized").await else {
            continue;
        };
        attempt += 1;
        stats.oversized_attempts.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = ws.split();
        let sending = tokio::spawn(async move {
            if attempt % 2 == 1 {
                let text = format!("\"{}\"", "x".repeat(MAX_FRAME_BYTES + 1024));
                let _ = sink.send(Message::text(text)).await;
            } else {
                // Five 16 KiB fragments: 80 KiB in all, each frame allowed.
                let chunk = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
                for i in 0..5 {
                    let opcode = if i == 0 {
                        OpCode::Data(Data::Text)
                    } else {
                        OpCode::Data(Data::Continue)
                    };
                    let frame = WsFrame::message(chunk.clone(), opcode, i == 4);
                    if sink.feed(Message::Frame(frame)).await.is_err() {
                        break;
                    }
                }
                let _ = sink.flush().await;
            }
            sink
        });
        let ending = loop {
            match tokio::time::timeout(RECV, stream.next()).await {
                Err(_) => break "no close in time".to_owned(),
                Ok(None) => break "ended without a close frame".to_owned(),
                Ok(Some(Err(e))) => break format!("ended with an error: {e}"),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    break match frame {
                        Some(f) if u16::from(f.code) == 1009 => String::new(),
                        other => format!("closed with {other:?}"),
                    };
                }
                Ok(Some(Ok(_))) => continue,
            }
        };
        if ending.is_empty() {
            stats.closed_1009.fetch_add(1, Ordering::Relaxed);
        } else {
            let variant = if attempt % 2 == 1 {
                "frame"
            } else {
                "fragments"
            };
            stats
                .other_endings
                .lock()
                .unwrap()
                .push(format!("{variant}: {ending}"));
        }
        let _ = tokio::time::timeout(RECV, sending).await;
    }
}

// --- the moderator -------------------------------------------------------------

/// Runs [`CYCLES`] start/stop cycles, one every [`STEPS_PER_CYCLE`] toggles:
/// the first half from the start of the flood, the second half once the
/// never-reading client has been dropped (so both phases are covered whatever
/// the kernel's socket buffers absorb); then keeps reading until the flood is
/// over. Returns the moderator (still in the room) and the events it caused,
/// in order.
async fn moderate(
    mut moderator: Client,
    client: usize,
    progress: Arc<Progress>,
    mut steps: watch::Receiver<u64>,
    (mut gone, never_reads_id): (watch::Receiver<HashSet<String>>, String),
    mut over: watch::Receiver<bool>,
    cycles_done: watch::Sender<bool>,
) -> (Client, Vec<Event>) {
    let mut events = Vec::new();
    let mut caused = Vec::new();
    let result: Result<(), String> = async {
        // Reads one frame: counts it like a reader does.
        macro_rules! read {
            () => {{
                let message = tokio::time::timeout(RECV, moderator.ws.next())
                    .await
                    .map_err(|_| format!("moderator: nothing for {RECV:?}"))?
                    .ok_or("moderator: the socket ended")?
                    .map_err(|e| format!("moderator: read error: {e}"))?;
                if let Some(frame) = parse_text(message)? {
                    observe(&frame, client, &progress, &mut events, None)?;
                }
            }};
        }
        let half = CYCLES / 2;
        let mut base = 0;
        for cycle in 0..CYCLES {
            if cycle == half {
                loop {
                    tokio::select! {
                        biased;
                        _ = gone.wait_for(|ids| ids.contains(&never_reads_id)) => break,
                        result = async { read!(); Ok::<(), String>(()) } => result?,
                    }
                }
                base = *steps.borrow();
            }
            let target = base + (cycle % half) as u64 * STEPS_PER_CYCLE;
            loop {
                tokio::select! {
                    biased;
                    _ = steps.wait_for(|s| *s >= target) => break,
                    result = async { read!(); Ok::<(), String>(()) } => result?,
                }
            }
            moderator.recording(json!({"action": "start"})).await;
            while events.len() < caused.len() + 1 {
                read!();
            }
            let (kind, id) = events[caused.len()].clone();
            if kind != "started" {
                return Err(format!("moderator: expected started, saw {kind} {id}"));
            }
            caused.push((kind, id.clone()));
            moderator
                .recording(json!({"action": "stop", "recording_id": id}))
                .await;
            while events.len() < caused.len() + 1 {
                read!();
            }
            let stopped = events[caused.len()].clone();
            if stopped != ("stopped".to_owned(), id.clone()) {
                return Err(format!("moderator: expected stopped {id}, saw {stopped:?}"));
            }
            caused.push(stopped);
        }
        let _ = cycles_done.send(true);
        loop {
            tokio::select! {
                biased;
                _ = over.wait_for(|over| *over) => return Ok(()),
                result = async { read!(); Ok::<(), String>(()) } => result?,
            }
        }
    }
    .await;
    if let Err(e) = result {
        progress.fail(e);
    }
    (moderator, caused)
}

// --- the test ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_room_keeps_every_recording_event_and_bounded_memory() {
    // Defaults except the message rate: the readers toggle consent in turn, so
    // each sends a hundredth of the room's toggles; 200/s per connection keeps
    // them far from the limit on any machine, while the max-rate flooder
    // (tens of thousands of messages a second) is still far above it.
    let onair = spawn_onair(&[
        ("ONAIR_SERVER__SEND_QUEUE", "1024"),
        ("ONAIR_SERVER__MAX_FRAME_BYTES", "65536"),
        ("ONAIR_SERVER__MESSAGES_PER_SECOND", "200"),
        ("ONAIR_SERVER__MESSAGE_BURST", "200"),
    ]);
    let server = &onair.server;

    // 100 readers and the moderator join; each reader starts reading at once.
    let progress = Arc::new(Progress::new(READERS + 1));
    let (over_tx, over) = watch::channel(false);
    let (left_tx, left) = watch::channel(HashSet::<String>::new());
    let mut left_tx = Some(left_tx);
    let mut sinks: Vec<SplitSink<Ws, Message>> = Vec::with_capacity(READERS);
    let mut reader_ids = Vec::with_capacity(READERS);
    let mut readers = Vec::with_capacity(READERS);
    for i in 0..READERS {
        let (client, _) = server.join(ROOM, &display_name(i), Role::User).await;
        reader_ids.push(client.id.clone());
        let (sink, stream) = client.ws.split();
        sinks.push(sink);
        readers.push(tokio::spawn(read_all(
            stream,
            i,
            Arc::clone(&progress),
            over.clone(),
            left_tx.take(),
        )));
    }
    let (moderator, _) = server.join(ROOM, "Moderator", Role::Moderator).await;
    let moderator_id = moderator.id.clone();
    let baseline = onair_rss_kib(&onair);

    // The one that never reads joins; its queue fills from here on.
    let (never_reads, never_reads_id) =
        slow::never_reading(server, ROOM, "Never Reads", RECV).await;

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(onair.child.id(), Arc::clone(&stop_sampling));

    let (steps_tx, steps) = watch::channel(0u64);
    let (cycles_done_tx, cycles_done) = watch::channel(false);
    let moderating = tokio::spawn(moderate(
        moderator,
        READERS,
        Arc::clone(&progress),
        steps.clone(),
        (left.clone(), never_reads_id.clone()),
        over.clone(),
        cycles_done_tx,
    ));
    let stats = Arc::new(FloodStats::default());
    let flood_permits = Arc::new(Semaphore::new(1));
    let oversized_permits = Arc::new(Semaphore::new(1));
    let flooding = tokio::spawn(max_rate_flooder(
        Server::remote(server.addr),
        Arc::clone(&stats),
        Arc::clone(&flood_permits),
        over.clone(),
    ));
    let oversizing = tokio::spawn(oversized_flooder(
        Server::remote(server.addr),
        Arc::clone(&stats),
        Arc::clone(&oversized_permits),
        over.clone(),
    ));

    // Another room on the same server, in the middle of the flood: a client
    // there joins and toggles consent, and its neighbour sees it.
    let mut calm_steps = steps.clone();
    let calm_server = Server::remote(server.addr);
    let calm = tokio::spawn(async move {
        calm_steps
            .wait_for(|s| *s >= 200)
            .await
            .expect("the flood runs");
        let (mut ada, _) = calm_server.join("calm", "Ada", Role::User).await;
        let (mut bob, _) = calm_server.join("calm", "Bob", Role::Moderator).await;
        ada.expect("control", "joined").await;
        ada.recording(json!({"action": "set_consent", "consent": true}))
            .await;
        let update = bob.expect("control", "update").await;
        assert_eq!(update["id"], ada.id);
        assert_eq!(update["recording"]["consents_recording"], true);
        // And a recording there is its own.
        bob.recording(json!({"action": "start"})).await;
        let id = bob.until("recording", "started").await["recording_id"].clone();
        assert_eq!(ada.until("recording", "started").await["recording_id"], id);
    });

    // The pacing loop: one consent toggle per step, sent by the readers in
    // turn, never more than WINDOW ahead of the slowest well-behaved client.
    // Each step may also let each flooder reconnect once.
    let mut own = vec![0u64; READERS];
    let mut consent = [false; READERS];
    let mut step = 0u64;
    // The step at which each end condition first held, for the log line.
    let mut reached: [Option<u64>; 5] = [None; 5];
    loop {
        let conditions = [
            *cycles_done.borrow(),
            left.borrow().contains(&never_reads_id),
            stats.rate_limited.load(Ordering::Relaxed) > 0,
            stats.closed_1009.load(Ordering::Relaxed) >= 4,
            calm.is_finished(),
        ];
        for (at, met) in reached.iter_mut().zip(conditions) {
            if met && at.is_none() {
                *at = Some(step);
            }
        }
        if conditions.iter().all(|&met| met) {
            break;
        }
        assert!(
            step < MAX_STEPS,
            "the flood did not end: never-reading client left: {}, rate_limited: {}, \
             1009 closes: {}, other endings: {:?}",
            left.borrow().contains(&never_reads_id),
            stats.rate_limited.load(Ordering::Relaxed),
            stats.closed_1009.load(Ordering::Relaxed),
            stats.other_endings.lock().unwrap(),
        );
        progress
            .wait_for(&own, (step + 1).saturating_sub(WINDOW))
            .await;
        let i = (step % READERS as u64) as usize;
        consent[i] = !consent[i];
        let toggle = json!({"namespace": "recording",
                            "payload": {"action": "set_consent", "consent": consent[i]}});
        sinks[i]
            .send(Message::text(toggle.to_string()))
            .await
            .expect("a reader's socket takes its toggle");
        own[i] += 1;
        step += 1;
        steps_tx.send_replace(step);
        for permits in [&flood_permits, &oversized_permits] {
            if step.is_multiple_of(4) && permits.available_permits() < 2 {
                permits.add_permits(1);
            }
        }
    }

    // The flood is over: the flooders stop, every reader must have every event.
    over_tx.send_replace(true);
    for task in [flooding, oversizing] {
        tokio::time::timeout(RECV, task)
            .await
            .expect("the flooders stop")
            .unwrap();
    }
    tokio::time::timeout(RECV, calm)
        .await
        .expect("the calm room was checked")
        .unwrap();
    let (_moderator, caused) = tokio::time::timeout(RECV * 2, moderating)
        .await
        .expect("the moderator finishes")
        .unwrap();
    let mut streams = Vec::with_capacity(READERS);
    for (i, reader) in readers.into_iter().enumerate() {
        let (stream, events) = tokio::time::timeout(RECV * 2, reader)
            .await
            .expect("the reader finishes")
            .unwrap();
        if let Some(failure) = progress.failure() {
            panic!("a well-behaved client failed: {failure}");
        }
        assert_eq!(
            events, caused,
            "reader {i} saw other recording events than the moderator caused"
        );
        streams.push(stream);
    }
    assert_eq!(caused.len(), 2 * CYCLES);
    let ids: HashSet<&String> = caused.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), CYCLES, "every cycle has its own recording id");

    stop_sampling.store(true, Ordering::Relaxed);
    let (peak, samples) = sampler.join().unwrap();
    let after = onair_rss_kib(&onair);
    // Oversized attempts that did not end in a readable 1009, by how they ended.
    let mut endings = std::collections::BTreeMap::<String, u32>::new();
    for ending in stats.other_endings.lock().unwrap().iter() {
        *endings.entry(ending.clone()).or_default() += 1;
    }
    eprintln!(
        "flood: {step} toggles (cycles done, never-reading client gone, rate-limited, \
         4 closes with 1009, calm room checked at {reached:?}); max-rate flooder sent {} \
         messages over {} connections, told rate_limited {} times; {} oversized attempts, \
         {} closed with 1009, others: {endings:?}; RSS baseline {baseline} KiB, peak {peak} KiB \
         over {samples} samples, after {after} KiB",
        stats.flood_sent.load(Ordering::Relaxed),
        stats.flood_connections.load(Ordering::Relaxed),
        stats.rate_limited.load(Ordering::Relaxed),
        stats.oversized_attempts.load(Ordering::Relaxed),
        stats.closed_1009.load(Ordering::Relaxed),
    );
    assert!(samples > 0, "RSS was sampled during the flood");
    assert!(
        peak <= baseline + RSS_BOUND_KIB,
        "onair's RSS rose from {baseline} KiB to {peak} KiB during the flood (bound: +{RSS_BOUND_KIB} KiB)"
    );

    // The client that never read was closed as a slow reader (1008), once it
    // drains what the kernel still held for it.
    slow::assert_closed_as_slow(never_reads, RECV).await;

    // The room itself is intact: a late joiner finds the readers and the
    // moderator, and neither the slow reader nor a flooder.
    let (_late, success) = server.join(ROOM, "Late", Role::User).await;
    let present: HashSet<&str> = success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    for id in reader_ids.iter().chain([&moderator_id]) {
        assert!(present.contains(id.as_str()), "{id} is still in the room");
    }
    assert!(!present.contains(never_reads_id.as_str()));
    let names: Vec<&str> = success["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["control"]["display_name"].as_str())
        .collect();
    assert!(
        !names.iter().any(|n| *n == "Flooder" || *n == "Oversized"),
        "the flooders left: {names:?}"
    );
    drop(streams);
    drop(sinks);
}
