//! One worker process's share of a scenario: its rooms, their bots, and the
//! phases every worker goes through in step with the others.
//!
//! ```text
//! setup (connect + join, except join-storm) ─▶ Ready ─▶ wait for Go(t)
//!   ─▶ run: warm-up, then the measurement window ─▶ drain ─▶ Done(report)
//!   ─▶ wait for Close ─▶ close every socket ─▶ Closed
//! ```
//!
//! Rooms are dealt out whole (room `r` goes to worker `r % K`), so a room's
//! moderator and recipients share one clock and one set of counters: latency
//! is measured from the command's *intended* send time (open loop) to each
//! recipient's receipt, and to the last recipient's receipt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Minter, Target, Ws};
use crate::proto::{self, Event};
use crate::stats::{Metrics, Progress, WorkerReport};

/// Which scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    JoinStorm,
    Hold,
    Fanout,
    ConsentChurn,
    Mixed,
}

impl Kind {
    /// The scenario's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::JoinStorm => "join-storm",
            Kind::Hold => "hold",
            Kind::Fanout => "fanout",
            Kind::ConsentChurn => "consent-churn",
            Kind::Mixed => "mixed",
        }
    }

    fn has_commands(self) -> bool {
        matches!(self, Kind::Fanout | Kind::Mixed)
    }

    fn has_consent(self) -> bool {
        matches!(self, Kind::ConsentChurn | Kind::Mixed)
    }
}

/// How the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// onair's protocol (the node-ws baseline speaks it too).
    Onair,
    /// The floor hub: frames are relayed unchanged to the whole room.
    Floor,
}

/// Everything a worker needs to know, the same in every worker but for `worker_index`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub target: Target,
    pub dialect: Dialect,
    pub secret: String,
    /// Prefix of room names and user ids, unique per run.
    pub run_id: String,
    /// Core participants in all.
    pub clients: u64,
    pub rooms: u64,
    pub room_size: u64,
    /// Extra participants per room that leave and rejoin (mixed).
    pub visitors: u64,
    /// Recording commands per room per second; 0: closed loop (next when the last one is delivered).
    pub command_rate: f64,
    /// Closed loop: commands per room allowed on their way at once.
    pub window: u32,
    /// Consent toggles per participant per second.
    pub consent_rate: f64,
    pub warmup: Duration,
    /// The measurement window (hold: how long to hold).
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after the window.
    pub drain: Duration,
    /// Connection attempts in flight per worker.
    pub concurrency: usize,
    /// Longest wait for one join to be confirmed.
    pub join_timeout: Duration,
    pub worker_index: usize,
    pub worker_count: usize,
}

impl Plan {
    /// Core participants in room `r`.
    pub fn members_of(&self, r: u64) -> u64 {
        self.room_size
            .min(self.clients.saturating_sub(r * self.room_size))
    }
}

/// Worker → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToParent {
    Progress(Progress),
    Ready,
    Done(Box<WorkerReport>),
    Closed,
    Failed { error: String },
}

/// Parent → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Start the run at this wall-clock time (ns since the Unix epoch).
    Go { unix_ns: u64 },
    /// Close every socket and finish.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Run,
    Close,
}

/// The worker's clock: nanoseconds since `base`, and the run's instants.
struct Clock {
    base: Instant,
    go: OnceLock<Instant>,
    window_start: AtomicU64,
    window_end: AtomicU64,
}

impl Clock {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }

    fn now(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.window_start.load(Ordering::Relaxed)
            && ns < self.window_end.load(Ordering::Relaxed)
    }

    fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// Commands kept in flight per room before a slot is reused.
const RING: usize = 1024;

/// One recording command and who has seen its announcement.
#[derive(Default)]
struct CmdSlot {
    intended: AtomicU64,
    measured: AtomicBool,
    received: AtomicU32,
    statuses: AtomicU32,
    last: AtomicU64,
}

/// One room of this worker.
struct Room {
    index: u64,
    name: String,
    /// Core participants (the recipients counted).
    members: u32,
    slots: Box<[CmdSlot]>,
    sent: AtomicU64,
    completed: AtomicU64,
    notify: Notify,
    /// Per member: intended time of its last toggle to `false` / `true`.
    consent: Box<[[AtomicU64; 2]]>,
    ids: Mutex<HashMap<String, usize>>,
    frozen: OnceLock<HashMap<String, usize>>,
}

impl Room {
    fn new(plan: &Plan, index: u64) -> Self {
        let members = plan.members_of(index);
        Self {
            index,
            name: format!("{}-r{index}", plan.run_id),
            members: members as u32,
            slots: (0..if plan.kind.has_commands() { RING } else { 0 })
                .map(|_| CmdSlot::default())
                .collect(),
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            notify: Notify::new(),
            consent: (0..if plan.kind.has_consent() { members } else { 0 })
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            ids: Mutex::new(HashMap::new()),
            frozen: OnceLock::new(),
        }
    }

    /// Counts a finished (or abandoned) command into the report.
    fn finalize(&self, k: u64, metrics: &Metrics) {
        let slot = &self.slots[(k as usize) % RING];
        if !slot.measured.swap(false, Ordering::Relaxed) {
            return;
        }
        let received = slot.received.load(Ordering::Relaxed);
        metrics
            .expected
            .fetch_add(u64::from(self.members), Ordering::Relaxed);
        metrics
            .received
            .fetch_add(u64::from(received), Ordering::Relaxed);
        if received >= self.members {
            let intended = slot.intended.load(Ordering::Relaxed);
            let last = slot.last.load(Ordering::Relaxed);
            metrics
                .last
                .record(self.index as usize, last.saturating_sub(intended) / 1000);
        }
    }

    /// Whether every sent command has been seen (both frames) by every member.
    fn settled(&self) -> bool {
        self.completed.load(Ordering::Relaxed) >= self.sent.load(Ordering::Relaxed)
    }
}

/// What the bots of one worker share.
struct Ctx {
    plan: Arc<Plan>,
    metrics: Arc<Metrics>,
    clock: Clock,
    minter: Minter,
    connecting: Semaphore,
    /// Bots whose setup ended, joined or not.
    settled: AtomicU64,
    /// When the last join was confirmed (clock ns).
    last_join: AtomicU64,
    /// Connection attempts so far (spreads them over the source addresses).
    connections: AtomicU64,
    /// Consent announcements expected and received (measured toggles only).
    consent_expected: AtomicU64,
    consent_received: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Moderator,
    Member,
}

/// Runs this worker's share of the plan, talking to the parent through the channels.
pub async fn run(
    plan: Plan,
    to_parent: mpsc::UnboundedSender<ToParent>,
    mut from_parent: mpsc::UnboundedReceiver<ToWorker>,
) {
    let failed = to_parent.clone();
    if let Err(e) = run_inner(plan, to_parent, &mut from_parent).await {
        let _ = failed.send(ToParent::Failed {
            error: format!("{e:#}"),
        });
    }
}

async fn run_inner(
    plan: Plan,
    to_parent: mpsc::UnboundedSender<ToParent>,
    from_parent: &mut mpsc::UnboundedReceiver<ToWorker>,
) -> anyhow::Result<()> {
    let plan = Arc::new(plan);
    let ctx = Arc::new(Ctx {
        metrics: Arc::new(Metrics::default()),
        clock: Clock {
            base: Instant::now(),
            go: OnceLock::new(),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
        },
        minter: Minter::new(&plan.secret, Duration::from_secs(6 * 3600)),
        connecting: Semaphore::new(plan.concurrency.max(1)),
        settled: AtomicU64::new(0),
        last_join: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        consent_expected: AtomicU64::new(0),
        consent_received: AtomicU64::new(0),
        plan: plan.clone(),
    });
    let rooms: Vec<Arc<Room>> = (0..plan.rooms)
        .filter(|r| (*r as usize) % plan.worker_count == plan.worker_index)
        .map(|r| Arc::new(Room::new(&plan, r)))
        .collect();
    let core: u64 = rooms.iter().map(|r| u64::from(r.members)).sum();

    // Progress, twice a second, until the worker ends.
    let progress = {
        let metrics = ctx.metrics.clone();
        let tx = to_parent.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                if tx.send(ToParent::Progress(metrics.progress())).is_err() {
                    break;
                }
            }
        })
    };

    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let mut bots = tokio::task::JoinSet::new();
    let spawn_core = |bots: &mut tokio::task::JoinSet<()>| {
        for room in &rooms {
            for slot in 0..room.members as usize {
                let role = if slot == 0 && plan.kind.has_commands() {
                    Role::Moderator
                } else {
                    Role::Member
                };
                let bot = Bot::new(ctx.clone(), room.clone(), slot, role);
                bots.spawn(bot.run(phase_rx.clone()));
            }
        }
    };

    // Setup: everyone joins before the start signal, except in a join storm.
    let setup_start = ctx.clock.now();
    if plan.kind != Kind::JoinStorm {
        spawn_core(&mut bots);
        wait_settled(&ctx, core, setup_timeout(&plan, core)).await;
        for room in &rooms {
            let ids = room.ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = room.frozen.set(ids);
        }
    }
    to_parent.send(ToParent::Ready)?;

    // Go.
    let go = match from_parent.recv().await {
        Some(ToWorker::Go { unix_ns }) => instant_of(unix_ns),
        _ => anyhow::bail!("the parent went away before the start"),
    };
    let _ = ctx.clock.go.set(go);
    let start = go + plan.warmup;
    let end = start + plan.duration;
    ctx.clock
        .window_start
        .store(ctx.clock.ns(start), Ordering::Relaxed);
    ctx.clock
        .window_end
        .store(ctx.clock.ns(end), Ordering::Relaxed);
    tokio::time::sleep_until(go.into()).await;
    let run_start = ctx.clock.now();
    if plan.kind == Kind::JoinStorm {
        spawn_core(&mut bots);
    }
    if plan.kind == Kind::Mixed {
        for room in &rooms {
            for v in 0..plan.visitors {
                bots.spawn(visitor(ctx.clone(), room.clone(), v, phase_rx.clone()));
            }
        }
    }
    phase_tx.send_replace(Phase::Run);

    match plan.kind {
        Kind::JoinStorm => wait_settled(&ctx, core, setup_timeout(&plan, core)).await,
        Kind::Hold => tokio::time::sleep_until((end).into()).await,
        _ => {
            tokio::time::sleep_until(end.into()).await;
            // Drain: wait for what was sent in the window to arrive.
            let deadline = Instant::now() + plan.drain;
            while Instant::now() < deadline {
                let consent_done = ctx.consent_received.load(Ordering::Relaxed)
                    >= ctx.consent_expected.load(Ordering::Relaxed);
                if consent_done && rooms.iter().all(|r| r.settled()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    for room in &rooms {
        let sent = room.sent.load(Ordering::Relaxed);
        for k in sent.saturating_sub(RING as u64)..sent {
            room.finalize(k, &ctx.metrics);
        }
    }
    let metrics = &ctx.metrics;
    metrics.expected.fetch_add(
        ctx.consent_expected.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    metrics.received.fetch_add(
        ctx.consent_received.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let mut report = metrics.report();
    let joins_from = if plan.kind == Kind::JoinStorm {
        run_start
    } else {
        setup_start
    };
    report.join_span_s = ctx
        .last_join
        .load(Ordering::Relaxed)
        .saturating_sub(joins_from) as f64
        / 1e9;
    report.bots_cpu_s = crate::procfs::own_cpu_s();
    to_parent.send(ToParent::Done(Box::new(report)))?;

    // Close.
    let _ = from_parent.recv().await;
    phase_tx.send_replace(Phase::Close);
    let closing = tokio::time::timeout(Duration::from_secs(15), async {
        while bots.join_next().await.is_some() {}
    })
    .await;
    if closing.is_err() {
        bots.abort_all();
    }
    progress.abort();
    to_parent.send(ToParent::Closed)?;
    Ok(())
}

/// How long setup may take: generous, but bounded.
fn setup_timeout(plan: &Plan, clients: u64) -> Duration {
    plan.join_timeout + Duration::from_millis(clients.saturating_mul(20)) + Duration::from_secs(10)
}

async fn wait_settled(ctx: &Ctx, clients: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while ctx.settled.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The local instant of a wall-clock time.
fn instant_of(unix_ns: u64) -> Instant {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let now = Instant::now();
    if unix_ns >= now_unix {
        now + Duration::from_nanos(unix_ns - now_unix)
    } else {
        now
    }
}

/// A deterministic offset in `[0, period)` for room or participant `key`,
/// so that commands are spread over the second instead of sent together.
fn phase_of(key: u64, period: Duration) -> Duration {
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Duration::from_nanos(z % (period.as_nanos().max(1) as u64))
}

/// One core participant.
struct Bot {
    ctx: Arc<Ctx>,
    room: Arc<Room>,
    slot: usize,
    role: Role,
    /// Server-assigned (onair) or own (floor) participant id.
    id: String,
    /// Announcements (`started`/`stopped`) and `status` frames seen.
    announcements: u64,
    statuses: u64,
    /// The recording a moderator will stop next (onair dialect).
    recording_id: Option<String>,
    /// Next command / toggle number and when it is due.
    next: u64,
    due: Option<Instant>,
    /// A stop waits for the `started` that names its recording.
    stop_waiting: bool,
}

impl Bot {
    fn new(ctx: Arc<Ctx>, room: Arc<Room>, slot: usize, role: Role) -> Self {
        Self {
            ctx,
            room,
            slot,
            role,
            id: String::new(),
            announcements: 0,
            statuses: 0,
            recording_id: None,
            next: 0,
            due: None,
            stop_waiting: false,
        }
    }

    fn user(&self) -> String {
        format!("{}-u{}", self.room.name, self.slot)
    }

    async fn run(mut self, mut phase: watch::Receiver<Phase>) {
        let metrics = self.ctx.metrics.clone();
        let joined = {
            let _permit = self.ctx.connecting.acquire().await;
            let started = Instant::now();
            let joined = join(
                &self.ctx,
                &self.room,
                &self.user(),
                self.role == Role::Moderator,
            )
            .await;
            if joined.is_ok() {
                metrics.join.record(
                    self.room.index as usize,
                    started.elapsed().as_micros() as u64,
                );
            }
            joined
        };
        let mut ws = match joined {
            Ok((ws, id)) => {
                self.id = id;
                self.room
                    .ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(self.id.clone(), self.slot);
                metrics.joined.fetch_add(1, Ordering::Relaxed);
                metrics.live.fetch_add(1, Ordering::Relaxed);
                self.ctx
                    .last_join
                    .fetch_max(self.ctx.clock.now(), Ordering::Relaxed);
                self.ctx.settled.fetch_add(1, Ordering::Relaxed);
                ws
            }
            Err(kind) => {
                metrics.error(&kind);
                self.ctx.settled.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if *phase.borrow() == Phase::Run {
            self.schedule_first();
        }
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        if let Some(due) = self.due {
            sleep.as_mut().reset(due.into());
        }
        let outcome: Result<(), String> = loop {
            let closed_loop_wait = self.role == Role::Moderator
                && self.ctx.plan.command_rate <= 0.0
                && *phase.borrow() == Phase::Run;
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Close {
                        break Ok(());
                    }
                    if *phase.borrow() == Phase::Run {
                        self.schedule_first();
                    }
                }
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = self.on_frame(&text, &mut ws).await {
                            break Err(e);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => break Err("closed_by_server".into()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) => break Err("read_error".into()),
                },
                _ = &mut sleep, if self.due.is_some() => {
                    if let Err(e) = self.on_due(&mut ws).await {
                        break Err(e);
                    }
                }
                _ = self.room.notify.notified(), if closed_loop_wait => {
                    if let Err(e) = self.closed_loop_next(&mut ws).await {
                        break Err(e);
                    }
                }
            }
            if let Some(due) = self.due
                && sleep.deadline() != due.into()
            {
                sleep.as_mut().reset(due.into());
            }
        };
        metrics.live.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => close(ws).await,
            Err(kind) => metrics.error(&kind),
        }
    }

    /// Arms the first command or consent toggle when the run starts.
    fn schedule_first(&mut self) {
        let plan = &self.ctx.plan;
        let Some(&go) = self.ctx.clock.go.get() else {
            return;
        };
        self.next = 0;
        match self.role {
            Role::Moderator if plan.command_rate > 0.0 => {
                let period = Duration::from_secs_f64(1.0 / plan.command_rate);
                self.due = Some(go + phase_of(self.room.index, period));
            }
            Role::Moderator => {
                // Closed loop: the first command goes now; the next one when it is delivered.
                self.due = Some(go);
            }
            Role::Member if plan.kind.has_consent() && plan.consent_rate > 0.0 => {
                let period = Duration::from_secs_f64(1.0 / plan.consent_rate);
                let key = self.room.index * 100_003 + self.slot as u64;
                self.due = Some(go + phase_of(key, period));
            }
            _ => {}
        }
    }

    /// When the `k`-th command or toggle is due.
    fn due_of(&self, k: u64) -> Option<Instant> {
        let plan = &self.ctx.plan;
        let go = *self.ctx.clock.go.get()?;
        let (rate, key) = match self.role {
            Role::Moderator => (plan.command_rate, self.room.index),
            _ => (
                plan.consent_rate,
                self.room.index * 100_003 + self.slot as u64,
            ),
        };
        if rate <= 0.0 {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / rate);
        Some(go + phase_of(key, period) + Duration::from_secs_f64(k as f64 / rate))
    }

    async fn on_due(&mut self, ws: &mut Ws) -> Result<(), String> {
        let Some(due) = self.due.take() else {
            return Ok(());
        };
        let clock = &self.ctx.clock;
        let intended = clock.ns(due);
        if intended >= clock.window_end.load(Ordering::Relaxed) {
            return Ok(()); // the run is over for this bot
        }
        match self.role {
            Role::Moderator => {
                if self.ctx.plan.dialect == Dialect::Onair
                    && self.next % 2 == 1
                    && self.recording_id.is_none()
                {
                    // The stop needs the id from `started`: send it when that arrives.
                    self.due = Some(due);
                    self.stop_waiting = true;
                    return Ok(());
                }
                self.command(ws, intended).await?;
                self.due = self.due_of(self.next);
                if self.ctx.plan.command_rate <= 0.0 {
                    self.closed_loop_next(ws).await?;
                }
            }
            Role::Member => {
                self.toggle(ws, intended).await?;
                self.due = self.due_of(self.next);
            }
        }
        Ok(())
    }

    /// Closed loop: the next commands as soon as fewer than `--window` of
    /// this room's commands are still on their way to someone.
    async fn closed_loop_next(&mut self, ws: &mut Ws) -> Result<(), String> {
        let window = u64::from(self.ctx.plan.window.max(1));
        loop {
            let in_flight = self.room.sent.load(Ordering::Relaxed)
                - self
                    .room
                    .completed
                    .load(Ordering::Relaxed)
                    .min(self.room.sent.load(Ordering::Relaxed));
            let now = self.ctx.clock.now();
            if in_flight >= window || now >= self.ctx.clock.window_end.load(Ordering::Relaxed) {
                return Ok(());
            }
            if self.ctx.plan.dialect == Dialect::Onair
                && self.next % 2 == 1
                && self.recording_id.is_none()
            {
                // A stop names the recording: wait for this moderator's own `started`.
                return Ok(());
            }
            self.command(ws, now).await?;
        }
    }

    /// Sends recording command `self.next` (start on even, stop on odd), intended at `intended`.
    async fn command(&mut self, ws: &mut Ws, intended: u64) -> Result<(), String> {
        let k = self.next;
        let room = &self.room;
        if k >= RING as u64 {
            room.finalize(k - RING as u64, &self.ctx.metrics);
        }
        let slot = &room.slots[(k as usize) % RING];
        slot.received.store(0, Ordering::Relaxed);
        slot.statuses.store(0, Ordering::Relaxed);
        slot.last.store(0, Ordering::Relaxed);
        slot.intended.store(intended, Ordering::Release);
        let measured = self.ctx.clock.in_window(intended);
        slot.measured.store(measured, Ordering::Relaxed);
        room.sent.store(k + 1, Ordering::Release);
        if measured {
            self.ctx.metrics.commands.fetch_add(1, Ordering::Relaxed);
        }
        self.next += 1;
        let start = k.is_multiple_of(2);
        match self.ctx.plan.dialect {
            Dialect::Onair => {
                let frame = if start {
                    proto::start()
                } else {
                    let id = self.recording_id.take().unwrap_or_default();
                    proto::stop(&id)
                };
                send(ws, frame).await
            }
            Dialect::Floor => {
                let id = proto::random_id(room.index << 32 | k);
                let (message, status) = if start {
                    ("started", "recording")
                } else {
                    ("stopped", "inactive")
                };
                send_no_flush(ws, proto::floor_announce(message, &id)).await?;
                send(ws, proto::floor_status(status, &id)).await
            }
        }
    }

    /// Toggles consent (`true` first), intended at `intended`.
    async fn toggle(&mut self, ws: &mut Ws, intended: u64) -> Result<(), String> {
        let value = self.next.is_multiple_of(2);
        self.next += 1;
        self.room.consent[self.slot][usize::from(value)].store(intended, Ordering::Release);
        if self.ctx.clock.in_window(intended) {
            self.ctx.metrics.commands.fetch_add(1, Ordering::Relaxed);
            self.ctx.consent_expected.fetch_add(
                u64::from(self.room.members.saturating_sub(1)),
                Ordering::Relaxed,
            );
        }
        let frame = match self.ctx.plan.dialect {
            Dialect::Onair => proto::set_consent(value),
            Dialect::Floor => proto::floor_participant("update", &self.id, &self.user(), value),
        };
        send(ws, frame).await
    }

    async fn on_frame(&mut self, text: &str, ws: &mut Ws) -> Result<(), String> {
        let clock = &self.ctx.clock;
        let metrics = &self.ctx.metrics;
        let now = clock.now();
        metrics.frames.fetch_add(1, Ordering::Relaxed);
        if clock.in_window(now) {
            metrics.deliveries.fetch_add(1, Ordering::Relaxed);
        }
        match proto::classify(text) {
            event @ (Event::Started | Event::Stopped) => {
                if self.room.slots.is_empty() {
                    return Ok(());
                }
                let k = self.announcements;
                self.announcements += 1;
                let slot = &self.room.slots[(k as usize) % RING];
                let intended = slot.intended.load(Ordering::Acquire);
                if slot.measured.load(Ordering::Relaxed) {
                    metrics.delivery.record(
                        self.room.index as usize,
                        now.saturating_sub(intended) / 1000,
                    );
                }
                slot.last.fetch_max(now, Ordering::Relaxed);
                slot.received.fetch_add(1, Ordering::Relaxed);
                if self.role == Role::Moderator && event == Event::Started {
                    self.recording_id =
                        proto::string_field(text, "recording_id").map(str::to_owned);
                    if self.stop_waiting {
                        self.stop_waiting = false;
                        let due = self.due.take().map(|d| clock.ns(d)).unwrap_or(now);
                        self.command(ws, due).await?;
                        self.due = self.due_of(self.next);
                    }
                    if self.ctx.plan.command_rate <= 0.0 && self.ctx.clock.go.get().is_some() {
                        self.closed_loop_next(ws).await?;
                    }
                }
            }
            Event::Status => {
                if self.room.slots.is_empty() {
                    return Ok(());
                }
                let k = self.statuses;
                self.statuses += 1;
                let slot = &self.room.slots[(k as usize) % RING];
                let seen = slot.statuses.fetch_add(1, Ordering::AcqRel) + 1;
                if seen == self.room.members {
                    self.room.completed.fetch_add(1, Ordering::AcqRel);
                    self.room.notify.notify_one();
                }
            }
            Event::Update => {
                let Some(id) = proto::string_field(text, "id") else {
                    return Ok(());
                };
                if id == self.id || self.room.consent.is_empty() {
                    return Ok(());
                }
                let (Some(ids), Some(value)) = (
                    self.room.frozen.get(),
                    proto::bool_field(text, "consents_recording"),
                ) else {
                    return Ok(());
                };
                if let Some(&sender) = ids.get(id) {
                    let intended =
                        self.room.consent[sender][usize::from(value)].load(Ordering::Acquire);
                    if clock.in_window(intended) {
                        metrics.consent.record(
                            self.room.index as usize,
                            now.saturating_sub(intended) / 1000,
                        );
                        self.ctx.consent_received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Event::Error => {
                let error = proto::string_field(text, "error").unwrap_or("unknown");
                metrics.error(&format!("server_error_{error}"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Connects and joins; returns the socket and the participant id.
async fn join(ctx: &Ctx, room: &Room, user: &str, moderator: bool) -> Result<(Ws, String), String> {
    let plan = &ctx.plan;
    let index = ctx.connections.fetch_add(1, Ordering::Relaxed);
    let (token, query_room) = match plan.dialect {
        Dialect::Onair => (Some(ctx.minter.mint(user, &room.name, moderator)), None),
        Dialect::Floor => (None, Some(room.name.as_str())),
    };
    let mut ws = plan
        .target
        .connect(index, token.as_deref(), query_room)
        .await
        .map_err(|e| e.0)?;
    ctx.metrics.connected.fetch_add(1, Ordering::Relaxed);
    let own = match plan.dialect {
        Dialect::Onair => {
            send(&mut ws, proto::join()).await?;
            None
        }
        Dialect::Floor => {
            let id = proto::random_id(hash(user));
            send(
                &mut ws,
                proto::floor_participant("joined", &id, user, false),
            )
            .await?;
            Some(id)
        }
    };
    let confirmed = tokio::time::timeout(plan.join_timeout, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    ctx.metrics.frames.fetch_add(1, Ordering::Relaxed);
                    match (proto::classify(&text), &own) {
                        (Event::JoinSuccess, None) => {
                            return proto::string_field(&text, "id")
                                .map(str::to_owned)
                                .ok_or_else(|| "join_success_without_id".to_owned());
                        }
                        (Event::Joined, Some(own))
                            if proto::string_field(&text, "id") == Some(own.as_str()) =>
                        {
                            return Ok(own.clone());
                        }
                        (Event::Error, _) => return Err("join_refused".to_owned()),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Err("closed_during_join".to_owned()),
                Some(Ok(_)) => {}
                Some(Err(_)) => return Err("read_error_during_join".to_owned()),
            }
        }
    })
    .await;
    match confirmed {
        Ok(Ok(id)) => Ok((ws, id)),
        Ok(Err(kind)) => Err(kind),
        Err(_) => Err("join_timeout".to_owned()),
    }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A participant that joins, stays 1–3 s, leaves, and joins again until the window ends (mixed).
async fn visitor(ctx: Arc<Ctx>, room: Arc<Room>, v: u64, mut phase: watch::Receiver<Phase>) {
    let end = ctx.clock.at(ctx.clock.window_end.load(Ordering::Relaxed));
    let mut round = 0u64;
    while Instant::now() < end && *phase.borrow() != Phase::Close {
        round += 1;
        let user = format!("{}-v{v}-{round}", room.name);
        let started = Instant::now();
        let joined = {
            let _permit = ctx.connecting.acquire().await;
            join(&ctx, &room, &user, false).await
        };
        let mut ws = match joined {
            Ok((ws, _)) => ws,
            Err(kind) => {
                ctx.metrics.error(&kind);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        ctx.metrics
            .join
            .record(room.index as usize, started.elapsed().as_micros() as u64);
        ctx.metrics.joined.fetch_add(1, Ordering::Relaxed);
        let stay = Duration::from_millis(1000) + phase_of(hash(&user), Duration::from_secs(2));
        let leave_at = (Instant::now() + stay).min(end);
        let gone = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(leave_at.into()) => break false,
                changed = phase.changed() => if changed.is_err() || *phase.borrow() == Phase::Close { break false },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(_))) => {
                        ctx.metrics.frames.fetch_add(1, Ordering::Relaxed);
                        if ctx.clock.in_window(ctx.clock.now()) {
                            ctx.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                    Some(Ok(_)) => {}
                },
            }
        };
        if gone {
            ctx.metrics.error("closed_by_server");
        } else {
            close(ws).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(ws: &mut Ws, frame: String) -> Result<(), String> {
    ws.send(Message::Text(frame.into()))
        .await
        .map_err(|_| "send_failed".to_owned())
}

async fn send_no_flush(ws: &mut Ws, frame: String) -> Result<(), String> {
    ws.feed(Message::Text(frame.into()))
        .await
        .map_err(|_| "send_failed".to_owned())
}

/// Closes with a Close handshake, waiting at most 2 s for the server's answer.
async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
