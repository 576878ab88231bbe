//! Rooms: who is in them, their recording state, and fan-out to their sockets.
//!
//! Rooms live in a [`DashMap`] keyed by room id, are created on the first join
//! and dropped when the last participant leaves. Each room's data sits behind a
//! `std::sync::Mutex`: every critical section is short and synchronous (no
//! `.await` while it is held). Fan-out is a `try_send` of a shared,
//! serialized-once frame into each participant's bounded queue, so a client
//! that stops reading is dropped from the room instead of slowing it down.
//! Backend calls and timers run after the lock is released.
//!
//! **Room isolation.** Under the lock a fan-out only takes a list of its
//! recipients' outlets and appends it to the room's `outgoing` line; the
//! offering to many queues happens after the lock is released, by one thread
//! at a time per room (whoever finds nobody draining drains everything queued,
//! in order), so the room's order is kept and its lock is never held while
//! writing to its members' queues. A large fan-out is offered by a task that
//! yields every few dozen queues, so the socket writes of a room of 1,000 take
//! turns with other rooms' instead of all going first. Each room also has a fan-out budget
//! (`[server] room_fanout_per_second` deliveries): a room over it holds its
//! `update`s back, one per participant with the latest value winning, and a
//! task of the room's own sends them as the budget refills. Recording events,
//! `joined` and `left` are never held or merged; they count against the budget.
//!
//! With `[cluster] redis_url` ([`crate::cluster`]), this map holds only the
//! rooms this node has sockets in, and only those sockets: membership and the
//! recording state live in Redis, every event reaches the sockets through the
//! room's pub/sub channel (also those on this node, so there is one order), and
//! a recording input is stepped against the state read from Redis and written
//! back with a compare-and-set; only the node whose write won carries out the
//! effects (backend calls, timers, the store and the outbox).
//!
//! The operations that may need Redis (join, leave, consent, apply, the
//! snapshots) are `async`: on one node they finish without waiting, with
//! `[cluster]` they await Redis and no thread blocks. Their cluster halves
//! are boxed, so a caller's future (a session's, for one) stays as small as
//! the one-node path needs.

mod budget;
mod cluster;
mod deadlines;
pub mod keepalive;
mod large;
mod queue;

use budget::Budget;
pub use deadlines::Waits;
pub use queue::{Frame, Outlet, Queue, encode};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use crate::backends::{Backend, StartRequest, StopRequest};
use crate::cluster::{Cas, Cluster, ClusterError, wire};
use crate::delivery::NewDelivery;
use crate::metrics::{METRICS, Status, count};
use crate::outbox::Outbox;
use crate::protocol::{
    ControlError, ControlEvent, Participant, RecordingError, RecordingEvent, RecordingStatus, Role,
    ServerFrame,
};
use crate::recording::{self, Deadline, Effect, Input, Policy, StartOptions, State};
use crate::store::{CatalogStore, Fact, NewDeadline, Store};
use large::{Audience, Headcount, Next};

struct Member {
    participant: Participant,
    /// The token's `sub`.
    user_id: String,
    may_record: bool,
    /// Its slice of the keepalive sweep ([`keepalive::slot`]).
    sweep_slot: u8,
    outlet: Outlet,
    /// Cluster mode: set until the member's `join_success` went out.
    pending: Option<PendingJoin>,
}

impl Member {
    fn is_moderator(&self) -> bool {
        self.participant.control.role == Role::Moderator
    }
}

/// A cluster joiner whose `join_success` waits for two things: the snapshot
/// (the join script's answer) and its own `joined` in the room's message
/// stream. Messages before that `joined` are in the snapshot and are skipped;
/// messages after it are news and are buffered until the snapshot is sent.
#[derive(Default)]
struct PendingJoin {
    /// Its own `joined` came through the channel.
    seen_joined: bool,
    /// The `join_success` frame, once the snapshot is known.
    success: Option<Frame>,
    /// Frames after the `joined`, in order.
    buffer: Vec<Frame>,
}

/// Most frames buffered for a pending cluster joiner before it counts as not reading.
const PENDING_BUFFER: usize = 256;
/// Compare-and-set attempts for one recording input before giving up.
const CAS_ATTEMPTS: usize = 32;

#[derive(Default)]
struct RoomInner {
    /// Set once the room is empty and leaving the registry; a joiner that finds
    /// it set retries with a fresh room.
    closed: bool,
    members: Vec<Member>,
    recording: State,
    /// Fan-out in the room's order, waiting to be offered outside the lock.
    outgoing: VecDeque<Outgoing>,
    /// Whether a thread is offering `outgoing` (it takes everything queued).
    draining: bool,
    /// The fan-out budget (`[server] room_fanout_per_second`).
    budget: Budget,
    /// `update`s over the budget: (participant id, its latest `update`), oldest first.
    held: VecDeque<(String, Frame)>,
    /// Whether a task is sending `held` as the budget allows.
    flushing: bool,
    /// The most members while the current recording runs (for its owner's
    /// notification), saved when it stops.
    peak: u32,
    /// Large-room mode ([`large`]): more than `[server] large_room_threshold` members.
    large: bool,
    /// The pace of a large room's `participant_count`.
    headcount: Headcount,
}

/// Frames on their way to some of a room's members: consecutive fan-outs to
/// the same members (`started` then `status`) share one entry, so that each
/// socket gets them together and writes them at once.
struct Outgoing {
    frames: Vec<Frame>,
    /// The members' queues.
    to: Vec<Arc<Queue>>,
}

/// One room.
pub struct Room {
    /// The room id.
    pub id: String,
    /// Deliveries per second this room may make (`[server] room_fanout_per_second`; 0 = any).
    fanout_rate: f64,
    /// Members above which the room is large (`[server] large_room_threshold`; 0 = never).
    large_threshold: usize,
    /// Cluster mode: a member that does not read is only kicked here; its
    /// session's leave removes it everywhere.
    clustered: bool,
    /// Its slice of the keepalive sweep ([`keepalive`]).
    sweep_slot: u8,
    /// Where a large fan-out is offered in paced chunks ([`Room::drain`]).
    runtime: Option<tokio::runtime::Handle>,
    inner: Mutex<RoomInner>,
}

/// Deliveries offered in place by the thread that queued them (a command's
/// two frames to a room of 100 stay in place); a larger fan-out is handed to
/// a task that offers [`DRAIN_CHUNK`] at a time.
const DRAIN_INLINE: usize = 256;
/// Deliveries a draining task offers before it yields: the socket tasks those
/// wake run, and so do other rooms' tasks, before the next chunk, so that a
/// room of 1,000 does not put 1,000 socket writes ahead of everyone else.
const DRAIN_CHUNK: usize = 32;

impl Room {
    fn new(
        id: &str,
        inner: RoomInner,
        (fanout_rate, large_threshold): (f64, usize),
        clustered: bool,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            fanout_rate,
            large_threshold,
            clustered,
            sweep_slot: keepalive::slot(),
            runtime,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomInner> {
        // A panic while holding the lock cannot leave the plain data torn in a
        // way that matters more than losing the room, so recover the guard.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers the room's queued fan-out, outside the lock and in order. Only
    /// one drainer runs per room at a time; a caller that finds one running
    /// returns at once (the drainer takes its frames too). A small fan-out is
    /// offered here and now; a large one by a task that yields between
    /// chunks ([`DRAIN_CHUNK`]), so that other rooms' sockets get their turn.
    /// Members whose queue is full are dropped (kicked), and in one-node mode
    /// the others told.
    fn drain(self: &Arc<Self>) {
        let mut inner = self.lock();
        if inner.draining {
            return;
        }
        inner.draining = true;
        loop {
            let load: usize = inner
                .outgoing
                .iter()
                .map(|o| o.to.len() * o.frames.len())
                .sum();
            if load == 0 {
                // Dropped whole: an idle room keeps no buffer.
                inner.outgoing = VecDeque::new();
                inner.draining = false;
                return;
            }
            if load > DRAIN_INLINE
                && let Some(runtime) = &self.runtime
            {
                // `draining` stays set: the task owns the line until it is empty.
                drop(inner);
                runtime.spawn(self.clone().drain_paced());
                return;
            }
            let batch = std::mem::take(&mut inner.outgoing);
            drop(inner);
            let (mut full, mut sent) = (Vec::new(), 0);
            for outgoing in batch {
                for queue in &outgoing.to {
                    sent += offer_or_note(queue, &outgoing.frames, &mut full);
                }
            }
            METRICS.frames_sent.inc_by(sent);
            inner = self.lock();
            if !full.is_empty()
                && let Some(wait) = inner.drop_unread(&full, self)
            {
                self.count_later(wait);
            }
        }
    }

    /// [`Room::drain`] for a large fan-out: [`DRAIN_CHUNK`] offers, then a yield.
    async fn drain_paced(self: Arc<Self>) {
        loop {
            let batch = {
                let mut inner = self.lock();
                if inner.outgoing.is_empty() {
                    inner.outgoing = VecDeque::new();
                    inner.draining = false;
                    return;
                }
                std::mem::take(&mut inner.outgoing)
            };
            let (mut full, mut sent) = (Vec::new(), 0);
            let mut offered = 0;
            for outgoing in batch {
                for queue in &outgoing.to {
                    sent += offer_or_note(queue, &outgoing.frames, &mut full);
                    offered += 1;
                    if offered % DRAIN_CHUNK == 0 {
                        METRICS.frames_sent.inc_by(std::mem::take(&mut sent));
                        tokio::task::yield_now().await;
                    }
                }
            }
            METRICS.frames_sent.inc_by(sent);
            if !full.is_empty() {
                let wait = self.lock().drop_unread(&full, &self);
                if let Some(wait) = wait {
                    self.count_later(wait);
                }
            }
        }
    }

    /// Sends a large room's `participant_count` after `wait` (a task: it went
    /// out less than a second ago).
    fn count_later(self: &Arc<Self>, wait: Duration) {
        let room = self.clone();
        let send = async move {
            tokio::time::sleep(wait).await;
            let mut inner = room.lock();
            // Also when the room became small since: that count is its last.
            if inner.headcount.due(Instant::now()) && !inner.closed {
                inner.send_headcount(room.fanout_rate);
            }
            drop(inner);
            room.drain();
        };
        // No runtime to wait on: send it now.
        if !self.spawn(send) {
            let mut inner = self.lock();
            if inner.headcount.due(Instant::now()) {
                inner.send_headcount(self.fanout_rate);
            }
            drop(inner);
            self.drain();
        }
    }

    /// Runs `task` on the room's runtime (or the current one); `false` when
    /// there is none to run it on.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        match self
            .runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        {
            Some(runtime) => {
                runtime.spawn(task);
                true
            }
            None => false,
        }
    }
}

/// Offers `frames` to `queue`, in order; a full queue is noted (once) in
/// `full`. Returns the frames queued, which the caller counts once for the
/// whole fan-out (a shared counter touched per frame is a cache line that
/// every thread fights for).
fn offer_or_note(queue: &Arc<Queue>, frames: &[Frame], full: &mut Vec<Arc<Queue>>) -> u64 {
    let sent = queue.offer_all(frames);
    if sent < frames.len() && !full.iter().any(|f| Arc::ptr_eq(f, queue)) {
        full.push(queue.clone());
    }
    sent as u64
}

impl RoomInner {
    /// The queues of every member of `audience` but `except`; a pending
    /// cluster joiner buffers `frames` instead (or is kicked when its buffer is full).
    fn recipients(
        &mut self,
        frames: &[Frame],
        except: Option<&str>,
        audience: Audience,
    ) -> Vec<Arc<Queue>> {
        let mut to = Vec::with_capacity(self.members.len());
        for member in self.members.iter_mut() {
            if except == Some(member.participant.id.as_str())
                || member.outlet.is_kicked()
                || !audience.includes(member.is_moderator())
            {
                continue;
            }
            let overflow = match member.pending.as_mut() {
                None => {
                    to.push(member.outlet.queue.clone());
                    false
                }
                Some(pending) if !pending.seen_joined => false,
                Some(pending) => {
                    let room = PENDING_BUFFER.saturating_sub(pending.buffer.len());
                    pending.buffer.extend(frames.iter().take(room).cloned());
                    frames.len() > room
                }
            };
            if overflow {
                kick(member);
            }
        }
        to
    }

    /// Queues `frame` for every member but `except`, in the room's order;
    /// it counts against the budget but never waits for it. The caller
    /// drains ([`Room::drain`]) once the lock is released.
    fn fan_out(&mut self, frame: Frame, except: Option<&str>, rate: f64) {
        self.fan_out_to(frame, except, rate, Audience::Everyone);
    }

    /// [`RoomInner::fan_out`] to `audience` only.
    fn fan_out_to(&mut self, frame: Frame, except: Option<&str>, rate: f64, audience: Audience) {
        self.fan_out_all(vec![frame], except, rate, audience);
    }

    /// [`RoomInner::fan_out_to`] of several frames, in order, to the same
    /// members (a transition's `started` and `status`): the members are
    /// looked over once for all of them.
    fn fan_out_all(
        &mut self,
        frames: Vec<Frame>,
        except: Option<&str>,
        rate: f64,
        audience: Audience,
    ) {
        let to = self.recipients(&frames, except, audience);
        self.budget
            .charge(rate, to.len() * frames.len(), Instant::now());
        self.queue_all(frames, to);
    }

    /// Who hears about a member ([`large`]): everyone, or in a large room
    /// only the moderators unless the member is one.
    fn audience_about(&self, subject: &str) -> Audience {
        let moderator = self
            .members
            .iter()
            .any(|m| m.participant.id == subject && m.is_moderator());
        Audience::of(self.large, moderator)
    }

    /// A large room's headcount changed: `participant_count` goes out now, or
    /// `Some(wait)` when a task must send it later ([`Room::count_later`]).
    #[must_use]
    fn headcount_changed(&mut self, rate: f64) -> Option<Duration> {
        if !self.large {
            return None;
        }
        self.pace_headcount(rate)
    }

    /// Sends `participant_count` now, or `Some(wait)` when it must wait.
    #[must_use]
    fn pace_headcount(&mut self, rate: f64) -> Option<Duration> {
        match self.headcount.changed(Instant::now()) {
            Next::Now => {
                self.send_headcount(rate);
                None
            }
            Next::Later(wait) => Some(wait),
            Next::Scheduled => None,
        }
    }

    /// Fans out `participant_count` to everyone.
    fn send_headcount(&mut self, rate: f64) {
        let count = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        let consenting = self
            .members
            .iter()
            .filter(|m| m.participant.recording.consents_recording)
            .count();
        let frame = encode(&ServerFrame::control(ControlEvent::ParticipantCount {
            count,
            consenting: u32::try_from(consenting).unwrap_or(u32::MAX),
        }));
        self.fan_out(frame, None, rate);
    }

    /// Removes a member and tells those who hear about it; a large room that
    /// becomes small again catches its non-moderators up with a `joined` of
    /// every other non-moderator (they heard of none while it was large),
    /// then sends a last `participant_count`: one that is no more than what
    /// each member now knows tells a client that its list is whole again.
    /// `Some(wait)`: see [`RoomInner::headcount_changed`].
    #[must_use]
    fn remove_member(&mut self, index: usize, room: &Room) -> Option<Duration> {
        let member = self.members.remove(index);
        METRICS.participants.dec();
        let id = member.participant.id;
        self.forget(&id);
        let audience = Audience::of(
            self.large,
            member.participant.control.role == Role::Moderator,
        );
        let left = encode(&ServerFrame::control(ControlEvent::Left { id }));
        self.fan_out_to(left, None, room.fanout_rate, audience);
        if !self.large || large::is_large(room.large_threshold, self.members.len()) {
            return self.headcount_changed(room.fanout_rate);
        }
        self.large = false;
        let others: Vec<(String, Frame)> = self
            .members
            .iter()
            .filter(|m| !m.is_moderator())
            .map(|m| {
                let joined = ControlEvent::Joined(m.participant.clone());
                (
                    m.participant.id.clone(),
                    encode(&ServerFrame::control(joined)),
                )
            })
            .collect();
        for (id, joined) in others {
            self.fan_out_to(joined, Some(&id), room.fanout_rate, Audience::Others);
        }
        self.pace_headcount(room.fanout_rate)
    }

    /// Appends `frame` for `to` to the outgoing line (to its last entry when
    /// that goes to the same members).
    fn queue(&mut self, frame: Frame, to: Vec<Arc<Queue>>) {
        self.queue_all(vec![frame], to);
    }

    /// [`RoomInner::queue`] of several frames, in order.
    fn queue_all(&mut self, frames: Vec<Frame>, to: Vec<Arc<Queue>>) {
        if to.is_empty() || frames.is_empty() {
            return;
        }
        if let Some(last) = self.outgoing.back_mut()
            && last.to.len() == to.len()
            && last.to.iter().zip(&to).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            last.frames.extend(frames);
            return;
        }
        self.outgoing.push_back(Outgoing { frames, to });
    }

    /// Queues `frame` for one member, behind the fan-out already queued.
    fn send_one(&mut self, outlet: &Outlet, frame: Frame) {
        if self.outgoing.is_empty() && !self.draining {
            if !outlet.offer(frame) {
                outlet.kick_out();
            }
            return;
        }
        self.queue(frame, vec![outlet.queue.clone()]);
    }

    /// A participant's `update` (presence): fanned out now if the budget
    /// allows and nothing is held, else held, replacing an older `update` of
    /// the same participant. Returns whether a flush task must be started.
    fn presence(&mut self, subject: &str, frame: Frame, rate: f64) -> bool {
        if let Some(held) = self.held.iter_mut().find(|(id, _)| id == subject) {
            held.1 = frame;
            return false;
        }
        let audience = self.audience_about(subject);
        let cost = self.cost(subject, audience);
        if self.held.is_empty() && self.budget.try_take(rate, cost, Instant::now()) {
            let to = self.recipients(std::slice::from_ref(&frame), Some(subject), audience);
            self.queue(frame, to);
            return false;
        }
        self.held.push_back((subject.to_owned(), frame));
        !std::mem::replace(&mut self.flushing, true)
    }

    /// Queues the held `update`s the budget allows; `None` once none is left
    /// (the flush task ends), else how long until the next one fits.
    fn release_held(&mut self, rate: f64) -> Option<Duration> {
        loop {
            let Some((subject, _)) = self.held.front() else {
                self.flushing = false;
                self.held = VecDeque::new();
                return None;
            };
            let audience = self.audience_about(subject);
            let cost = self.cost(subject, audience);
            if !self.budget.try_take(rate, cost, Instant::now()) {
                return Some(self.budget.wait(rate, cost));
            }
            let (subject, frame) = self.held.pop_front().expect("front exists");
            let to = self.recipients(std::slice::from_ref(&frame), Some(&subject), audience);
            self.queue(frame, to);
        }
    }

    /// Forgets a held `update` of a participant who left: `left` is its last word.
    fn forget(&mut self, subject: &str) {
        self.held.retain(|(id, _)| id != subject);
    }

    /// Deliveries a fan-out to `audience` but `except` makes.
    fn cost(&self, except: &str, audience: Audience) -> usize {
        self.members
            .iter()
            .filter(|m| m.participant.id != except && audience.includes(m.is_moderator()))
            .count()
    }

    /// Members whose queue was full: kicked; in one-node mode also removed
    /// here and the others told they left (in cluster mode the session's leave
    /// does that, through Redis).
    /// `Some(wait)`: see [`RoomInner::headcount_changed`].
    #[must_use]
    fn drop_unread(&mut self, full: &[Arc<Queue>], room: &Room) -> Option<Duration> {
        let unread = |m: &Member| full.iter().any(|f| Arc::ptr_eq(f, &m.outlet.queue));
        if room.clustered {
            for member in self.members.iter().filter(|m| unread(m)) {
                kick(member);
            }
            return None;
        }
        // All kicked first, so that none of them is offered another's `left`.
        for member in self.members.iter().filter(|m| unread(m)) {
            kick(member);
        }
        let mut wait = None;
        while let Some(index) = self.members.iter().position(unread) {
            wait = self.remove_member(index, room).or(wait);
        }
        wait
    }
}

/// What a recording input did, for callers that answer someone (the REST API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The state after the step.
    pub state: State,
    /// The refusal, if the input was refused.
    pub refused: Option<RecordingError>,
}

/// A room as the REST API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomSnapshot {
    /// The room id.
    pub id: String,
    /// The participants, in joining order.
    pub participants: Vec<Participant>,
    /// The recording state.
    pub recording: RecordingSnapshot,
}

/// The recording state as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordingSnapshot {
    /// The status.
    pub status: RecordingStatus,
    /// The recording concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// Why it failed, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&State> for RecordingSnapshot {
    fn from(state: &State) -> Self {
        Self {
            status: state.status(),
            recording_id: state.recording_id().map(str::to_owned),
            reason: match state {
                State::Failed { reason, .. } => Some(reason.clone()),
                _ => None,
            },
        }
    }
}

/// Work a step leaves for after the room lock is released.
#[derive(Default)]
struct Pending {
    /// Backend calls and timers.
    effects: Vec<Effect>,
    /// Whether webhook deliveries were written.
    wake_outbox: bool,
}

/// All rooms of this process.
pub struct Registry {
    rooms: DashMap<String, Arc<Room>>,
    backend: Arc<Backend>,
    policy: Policy,
    waits: Waits,
    store: Arc<Store>,
    /// Where what onair saw of a recording goes in cluster mode (one node
    /// notes it in `store`, with the room's state).
    facts: CatalogStore,
    outbox: Arc<Outbox>,
    cluster: Option<Arc<Cluster>>,
    /// `[server] room_fanout_per_second`, for every room.
    fanout_rate: f64,
    /// `[server] large_room_threshold` (0 in cluster mode: not there yet).
    large_threshold: usize,
    /// Where the rooms' flush tasks run (the main runtime, also when cluster
    /// messages are delivered from the cluster's own).
    runtime: Option<tokio::runtime::Handle>,
}

/// What a [`Registry`] needs besides its rooms.
pub struct RegistryParts {
    /// The recording backend.
    pub backend: Arc<Backend>,
    /// The state machine's policy.
    pub policy: Policy,
    /// How long each wait may last.
    pub waits: Waits,
    /// Where recording state and the outbox are kept.
    pub store: Arc<Store>,
    /// The catalog's store: with `[cluster]`, what onair saw of each
    /// recording (start time, peak headcount) is kept there, for every node.
    pub facts: CatalogStore,
    /// Outbound webhooks.
    pub outbox: Arc<Outbox>,
    /// `[cluster]`: the shared state in Redis; `None` keeps rooms in this process.
    pub cluster: Option<Arc<Cluster>>,
    /// `[server] room_fanout_per_second`: each room's fan-out budget (0 = none).
    pub room_fanout_per_second: u32,
    /// `[server] large_room_threshold` (0 = off; ignored in cluster mode).
    pub large_room_threshold: u32,
}

impl Registry {
    /// An empty registry.
    pub fn new(parts: RegistryParts) -> Self {
        // Cluster rooms keep only this node's members, so they cannot tell
        // whether they are large: large-room mode is one node only for now.
        let large_threshold = match &parts.cluster {
            Some(_) if parts.large_room_threshold > 0 => {
                tracing::info!(
                    "[server] large_room_threshold is not supported with [cluster] yet: \
                     every room gets per-participant presence"
                );
                0
            }
            Some(_) => 0,
            None => usize::try_from(parts.large_room_threshold).unwrap_or(usize::MAX),
        };
        Self {
            large_threshold,
            rooms: DashMap::new(),
            backend: parts.backend,
            policy: parts.policy,
            waits: parts.waits,
            store: parts.store,
            facts: parts.facts,
            outbox: parts.outbox,
            cluster: parts.cluster,
            fanout_rate: f64::from(parts.room_fanout_per_second),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// A new room handle (not yet in the map).
    fn new_room(&self, room_id: &str, recording: State) -> Arc<Room> {
        Arc::new(Room::new(
            room_id,
            RoomInner {
                recording,
                ..RoomInner::default()
            },
            (self.fanout_rate, self.large_threshold),
            self.cluster.is_some(),
            self.runtime.clone(),
        ))
    }

    /// Starts the task that sends a room's held `update`s as its budget refills.
    fn start_flush(&self, room: &Arc<Room>) {
        let flushed = room.clone();
        let flush = async move {
            let room = flushed;
            loop {
                let wait = room.lock().release_held(room.fanout_rate);
                room.drain();
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return,
                }
            }
        };
        // No runtime to wait on: send them all now.
        if !room.spawn(flush) {
            room.lock().release_held(0.0);
            room.drain();
        }
    }

    /// The live room, or a new one that starts from the saved recording state
    /// (a room whose recording outlived its participants, or a restart).
    fn room(&self, room_id: &str) -> Arc<Room> {
        if let Some(room) = self.get(room_id) {
            return room;
        }
        let saved = self
            .store
            .room_state(room_id)
            .inspect_err(|e| tracing::error!(room = room_id, error = %e, "cannot read the saved recording state"))
            .ok()
            .flatten()
            .unwrap_or_default();
        self.rooms
            .entry(room_id.to_owned())
            .or_insert_with(|| {
                METRICS.rooms.inc();
                self.new_room(room_id, saved)
            })
            .clone()
    }

    /// The live room, or one brought back for a saved recording that is not inactive.
    fn room_with_recording(&self, room_id: &str) -> Option<Arc<Room>> {
        if let Some(room) = self.get(room_id) {
            return Some(room);
        }
        match self.store.room_state(room_id) {
            Ok(Some(_)) => Some(self.room(room_id)),
            _ => None,
        }
    }

    /// Drops a room that nobody joined (it was only brought back to apply an input).
    fn release(&self, room: &Arc<Room>) {
        let mut inner = room.lock();
        if !inner.members.is_empty() || inner.closed {
            return;
        }
        inner.closed = true;
        drop(inner);
        if self
            .rooms
            .remove_if(&room.id, |_, r| Arc::ptr_eq(r, room))
            .is_some()
        {
            METRICS.rooms.dec();
        }
    }

    /// The backend this registry drives.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Sends a recording event to everyone in a live room (e.g. `recording_available`).
    /// Returns `false` when the room is not live.
    pub async fn announce(&self, room_id: &str, event: RecordingEvent) -> bool {
        if let Some(cluster) = &self.cluster {
            let frame = encode(&ServerFrame::recording(event));
            let message = wire::encode(wire::Kind::Fanout, "", &frame);
            return Box::pin(cluster.publish(room_id, &message))
                .await
                .inspect_err(
                    |e| tracing::warn!(room = room_id, error = %e, "cluster: cannot announce"),
                )
                .is_ok_and(|nodes| nodes > 0);
        }
        let Some(room) = self.get(room_id) else {
            return false;
        };
        let frame = encode(&ServerFrame::recording(event));
        room.lock().fan_out(frame, None, room.fanout_rate);
        room.drain();
        true
    }

    /// Adds a participant to a room (creating it), sends `join_success` to it
    /// and `joined` to everyone else. Returns the room to use from now on.
    pub async fn join(
        &self,
        room_id: &str,
        participant: Participant,
        user_id: &str,
        may_record: bool,
        outlet: Outlet,
    ) -> Arc<Room> {
        if let Some(cluster) = &self.cluster {
            let joining =
                self.cluster_join(cluster, room_id, participant, user_id, may_record, outlet);
            return Box::pin(joining).await;
        }
        loop {
            let room = self.room(room_id);
            let mut inner = room.lock();
            if inner.closed {
                // The last participant is taking this room down; wait for it to leave the map.
                drop(inner);
                std::thread::yield_now();
                continue;
            }
            let present = inner.members.len() + 1;
            inner.large |= large::is_large(room.large_threshold, present);
            let moderator = participant.control.role == Role::Moderator;
            // In a large room, a non-moderator is shown the moderators only.
            let shown = if inner.large && !moderator {
                Audience::Moderators
            } else {
                Audience::Everyone
            };
            let success = ServerFrame::control(ControlEvent::JoinSuccess {
                id: participant.id.clone(),
                display_name: participant.control.display_name.clone(),
                role: participant.control.role,
                participants: inner
                    .members
                    .iter()
                    .filter(|m| shown.includes(m.is_moderator()))
                    .map(|m| m.participant.clone())
                    .collect(),
                recording: inner.recording.join_data(),
                participant_count: inner
                    .large
                    .then(|| u32::try_from(present).unwrap_or(u32::MAX)),
            });
            // Behind the fan-out already queued, which the joiner is not part of.
            inner.send_one(&outlet, encode(&success));
            let joined = encode(&ServerFrame::control(ControlEvent::Joined(
                participant.clone(),
            )));
            let audience = Audience::of(inner.large, moderator);
            inner.fan_out_to(joined, None, room.fanout_rate, audience);
            METRICS.participants.inc();
            inner.members.push(Member {
                participant,
                user_id: user_id.to_owned(),
                may_record,
                sweep_slot: keepalive::slot(),
                outlet,
                pending: None,
            });
            if inner.recording.is_active() {
                let present = u32::try_from(inner.members.len()).unwrap_or(u32::MAX);
                inner.peak = inner.peak.max(present);
            }
            let count_later = inner.headcount_changed(room.fanout_rate);
            drop(inner);
            room.drain();
            if let Some(wait) = count_later {
                room.count_later(wait);
            }
            return room;
        }
    }

    /// Removes a participant (on leave, socket drop or kick) and tells the others.
    pub async fn leave(self: &Arc<Self>, room: &Arc<Room>, participant_id: &str) {
        if let Some(cluster) = &self.cluster {
            return Box::pin(self.cluster_leave(cluster, room, participant_id)).await;
        }
        let mut inner = room.lock();
        let mut count_later = None;
        if let Some(index) = inner
            .members
            .iter()
            .position(|m| m.participant.id == participant_id)
        {
            count_later = inner.remove_member(index, room);
        }
        if !inner.members.is_empty() || inner.closed {
            drop(inner);
            room.drain();
            if let Some(wait) = count_later {
                room.count_later(wait);
            }
            return;
        }
        inner.closed = true;
        inner.held.clear();
        let pending = self.step(room, &mut inner, None, Input::RoomEmptied).1;
        drop(inner);
        room.drain();
        if self
            .rooms
            .remove_if(&room.id, |_, r| Arc::ptr_eq(r, room))
            .is_some()
        {
            METRICS.rooms.dec();
        }
        tracing::debug!(room = %room.id, "room closed");
        self.run_effects(&room.id, pending);
    }

    /// Changes a participant's consent and sends `update` to everyone else.
    pub async fn set_consent(&self, room: &Arc<Room>, participant_id: &str, consent: bool) {
        // Scoped: no guard may live across the cluster's await below.
        let (update, deliveries, shared) = {
            let mut inner = room.lock();
            let Some(member) = inner
                .members
                .iter_mut()
                .find(|m| m.participant.id == participant_id)
            else {
                return;
            };
            if member.participant.recording.consents_recording == consent {
                return;
            }
            member.participant.recording.consents_recording = consent;
            let update = encode(&ServerFrame::control(ControlEvent::Update(
                member.participant.clone(),
            )));
            let deliveries = self.outbox.deliveries(
                "participant.consent_changed",
                serde_json::json!({
                    "room": room.id,
                    "participant_id": participant_id,
                    "user_id": member.user_id,
                    "consent": consent,
                }),
            );
            let shared = self
                .cluster
                .as_ref()
                .map(|_| (member.participant.clone(), member.outlet.clone()));
            (update, deliveries, shared)
        };
        if let (Some(cluster), Some((participant, outlet))) = (&self.cluster, shared) {
            // Stored, announced and its webhooks queued through Redis, in one
            // step, outside the lock.
            let message = wire::encode(wire::Kind::Fanout, participant_id, &update);
            let stored = cluster.update(&room.id, &participant, &message, &deliveries);
            if let Err(e) = Box::pin(stored).await {
                tracing::warn!(room = %room.id, error = %e, "cluster: cannot store a consent change");
                outlet.offer(cluster_unavailable(&e));
                return;
            }
        }
        let mut inner = room.lock();
        if !inner
            .members
            .iter()
            .any(|m| m.participant.id == participant_id)
        {
            return;
        }
        let flush =
            self.cluster.is_none() && inner.presence(participant_id, update, room.fanout_rate);
        let count_later = inner.headcount_changed(room.fanout_rate);
        drop(inner);
        room.drain();
        if flush {
            self.start_flush(room);
        }
        if let Some(wait) = count_later {
            room.count_later(wait);
        }
        match &self.cluster {
            None => self.outbox.enqueue_detached(deliveries, "consent webhook"),
            Some(_) if !deliveries.is_empty() => self.outbox.wake(),
            Some(_) => {}
        }
    }

    /// Whether the participant may start and stop recordings.
    pub fn may_record(&self, room: &Arc<Room>, participant_id: &str) -> bool {
        room.lock()
            .members
            .iter()
            .any(|m| m.participant.id == participant_id && m.may_record)
    }

    /// Feeds a recording input to a room; refusals go to `reply`.
    pub async fn apply(
        self: &Arc<Self>,
        room: &Arc<Room>,
        reply: Option<&Outlet>,
        input: Input,
    ) -> Applied {
        if let Some(cluster) = &self.cluster {
            return Box::pin(self.cluster_apply(cluster, &room.id, reply, input, false)).await;
        }
        let mut inner = room.lock();
        let (applied, pending) = self.step(room, &mut inner, reply, input);
        drop(inner);
        room.drain();
        self.run_effects(&room.id, pending);
        applied
    }

    /// Feeds a recording input to a room by id (backend answers, timers, the
    /// REST API). A room nobody is in still takes inputs while its saved
    /// recording is not inactive; `None` for a room that is neither live nor recording.
    ///
    /// `Err` only with `[cluster]`, when Redis did not answer: nothing was
    /// applied, and a provider's webhook must be answered so that it retries.
    pub async fn apply_to(
        self: &Arc<Self>,
        room_id: &str,
        input: Input,
    ) -> Result<Option<Applied>, ClusterError> {
        if let Some(cluster) = &self.cluster {
            return Box::pin(async {
                if !self.cluster_room_exists_or_err(cluster, room_id).await? {
                    return Ok(None);
                }
                self.cluster_apply_or_err(cluster, room_id, None, input, false)
                    .await
                    .map(Some)
            })
            .await;
        }
        let Some(room) = self.room_with_recording(room_id) else {
            return Ok(None);
        };
        let mut inner = room.lock();
        let (applied, pending) = self.step(&room, &mut inner, None, input);
        drop(inner);
        room.drain();
        self.run_effects(&room.id, pending);
        self.release(&room);
        Ok(Some(applied))
    }

    /// A room with sockets on this node, by id.
    pub fn get(&self, room_id: &str) -> Option<Arc<Room>> {
        self.rooms.get(room_id).map(|r| r.clone())
    }

    /// A room with participants, by id; with `[cluster]`, also one whose
    /// participants are all on other nodes (a handle to apply inputs to).
    pub async fn live(&self, room_id: &str) -> Option<Arc<Room>> {
        let local = self.get(room_id);
        match &self.cluster {
            Some(cluster) if local.is_none() => {
                let members = Box::pin(cluster.members(room_id)).await.ok()?;
                (!members.is_empty()).then(|| self.new_room(room_id, State::default()))
            }
            _ => local,
        }
    }

    /// Snapshots of every live room.
    pub async fn snapshots(&self) -> Vec<RoomSnapshot> {
        if let Some(cluster) = &self.cluster {
            return Box::pin(async {
                let mut ids = cluster.rooms().await.unwrap_or_default();
                ids.sort();
                let mut snapshots = Vec::with_capacity(ids.len());
                for id in &ids {
                    snapshots.extend(self.cluster_snapshot(cluster, id).await);
                }
                snapshots
            })
            .await;
        }
        // Clone the Arcs out first: no shard guard is held while a room is locked.
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        let mut snapshots: Vec<RoomSnapshot> = rooms.iter().map(|r| snapshot(r)).collect();
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        snapshots
    }

    /// A snapshot of one live room.
    pub async fn snapshot(&self, room_id: &str) -> Option<RoomSnapshot> {
        if let Some(cluster) = &self.cluster {
            return Box::pin(self.cluster_snapshot(cluster, room_id)).await;
        }
        self.get(room_id).map(|r| snapshot(&r))
    }

    /// The recording state of a live room, or the saved one of a room nobody is in.
    pub async fn recording_state(&self, room_id: &str) -> Option<State> {
        if let Some(cluster) = &self.cluster {
            return Box::pin(async {
                let read = cluster.read_state(room_id).await.ok()?;
                (read.exists || self.cluster_room_exists(cluster, room_id).await)
                    .then_some(read.state)
            })
            .await;
        }
        if let Some(room) = self.get(room_id) {
            return Some(room.lock().recording.clone());
        }
        self.store.room_state(room_id).ok().flatten()
    }

    /// `None` without `[cluster]`; otherwise whether this node is connected to Redis.
    pub fn cluster_ready(&self) -> Option<bool> {
        self.cluster.as_ref().map(|c| c.is_ready())
    }

    /// The cluster, if `[cluster]` is configured.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Number of live rooms (with sockets on this node).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is live.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Runs one state-machine step under the room lock and fans out its
    /// announcements; returns the effects that must wait for the lock to go.
    fn step(
        &self,
        room: &Room,
        inner: &mut RoomInner,
        reply: Option<&Outlet>,
        input: Input,
    ) -> (Applied, Pending) {
        // Who starts a recording owns it (the notifications go to them when
        // its file is ready): saved in the transaction of the transition
        // that starts it. A cluster's session saves it in Redis instead.
        let owner = match &input {
            Input::Start {
                new_recording_id,
                options:
                    StartOptions {
                        requested_by_user: Some(user),
                        ..
                    },
                ..
            } => Some((new_recording_id.clone(), user.clone())),
            _ => None,
        };
        let (state, effects) = recording::step(self.policy, &inner.recording, input);
        let mut facts = facts(inner, &effects);
        if let Some((recording_id, owner)) = &owner
            && state.recording_id() == Some(recording_id.as_str())
            && inner.recording.recording_id() != Some(recording_id.as_str())
        {
            facts.push(Fact::Owner {
                recording_id,
                owner,
            });
        }
        let mut pending =
            self.record_transition(&room.id, &inner.recording, &state, &effects, &facts);
        inner.recording = state;
        let mut refused = None;
        // Consecutive announcements go out together ([`RoomInner::fan_out_all`]),
        // and before any reply that follows them.
        let mut announced = Vec::new();
        let rate = room.fanout_rate;
        let announce = |inner: &mut RoomInner, frames: &mut Vec<Frame>| {
            if !frames.is_empty() {
                inner.fan_out_all(std::mem::take(frames), None, rate, Audience::Everyone);
            }
        };
        for effect in effects {
            let event = match effect {
                Effect::AnnounceStarted { recording_id } => {
                    RecordingEvent::Started { recording_id }
                }
                Effect::AnnounceStopped { recording_id } => {
                    RecordingEvent::Stopped { recording_id }
                }
                Effect::AnnounceStatus { .. } => match self.announcement(&effect) {
                    Some(event) => event,
                    None => continue,
                },
                Effect::Refuse(error) => {
                    refused = Some(error);
                    if let Some(outlet) = reply {
                        announce(inner, &mut announced);
                        inner.send_one(outlet, recording_error(error));
                    }
                    continue;
                }
                Effect::Tell { participant, error } => {
                    if let Some(outlet) = inner
                        .members
                        .iter()
                        .find(|m| m.participant.id == participant)
                        .map(|m| m.outlet.clone())
                    {
                        announce(inner, &mut announced);
                        inner.send_one(&outlet, recording_error(error));
                    }
                    continue;
                }
                Effect::BackendStart { .. } | Effect::BackendStop { .. } | Effect::Arm { .. } => {
                    pending.effects.push(effect);
                    continue;
                }
            };
            announced.push(encode(&ServerFrame::recording(event)));
        }
        announce(inner, &mut announced);
        let applied = Applied {
            state: inner.recording.clone(),
            refused,
        };
        (applied, pending)
    }

    /// Carries out backend calls and timers; their outcomes come back as inputs.
    fn run_effects(self: &Arc<Self>, room_id: &str, pending: Pending) {
        if pending.wake_outbox {
            self.outbox.wake();
        }
        for effect in pending.effects {
            let backend = self.backend.clone();
            let room_id = room_id.to_owned();
            let registry = self.clone();
            match effect {
                Effect::BackendStart {
                    recording_id,
                    options,
                } => {
                    tokio::spawn(async move {
                        let request = StartRequest {
                            room: room_id.clone(),
                            recording_id: recording_id.clone(),
                            audio_only: options.audio_only,
                            requested_by_user: options.requested_by_user,
                        };
                        if let Err(e) = backend.start(&request).await {
                            registry
                                .backend_failed("start", &room_id, recording_id, e)
                                .await;
                        }
                    });
                }
                Effect::BackendStop { recording_id } => {
                    tokio::spawn(async move {
                        let request = StopRequest {
                            room: room_id.clone(),
                            recording_id: recording_id.clone(),
                        };
                        if let Err(e) = backend.stop(&request).await {
                            registry
                                .backend_failed("stop", &room_id, recording_id, e)
                                .await;
                        }
                    });
                }
                // One node: the deadline was saved with its transition and
                // `enforce_deadlines` feeds it back, after a restart too; no
                // timer per room. A cluster keeps a timer on the node that
                // armed it (the start deadline is also shared in Redis, and a
                // survivor enforces it if this node dies).
                Effect::Arm { .. } if self.cluster.is_none() => {}
                Effect::Arm {
                    deadline,
                    recording_id,
                } => {
                    let wait = self.waits.of(deadline);
                    let cluster = self.cluster.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let input = Input::Expired {
                            deadline,
                            recording_id: recording_id.clone(),
                        };
                        let applied = match (&cluster, deadline) {
                            // Only while nobody is in the room on any node.
                            (Some(cluster), Deadline::EmptyRoom) => {
                                match registry.cluster_room_exists_or_err(cluster, &room_id).await {
                                    Ok(true) => registry
                                        .cluster_apply_or_err(cluster, &room_id, None, input, true)
                                        .await
                                        .map(drop),
                                    Ok(false) => Ok(()),
                                    Err(e) => Err(e),
                                }
                            }
                            _ => registry.apply_to(&room_id, input).await.map(drop),
                        };
                        // Redis did not answer: the shared deadline stays, and
                        // a node's sweep enforces it once Redis is back.
                        if let (Some(cluster), Ok(())) = (&cluster, applied) {
                            let _ = cluster
                                .disarm_deadline(&room_id, &recording_id, deadline)
                                .await;
                        }
                    });
                }
                _ => unreachable!("only deferred effects are pending"),
            }
        }
    }
}

impl Registry {
    /// Metrics, log, store and outbox for one step (in cluster mode, on the node
    /// whose write won), with what it tells of its recording ([`facts`]; a
    /// cluster keeps those in Redis); returns what must wait for the room
    /// lock to go.
    fn record_transition(
        &self,
        room_id: &str,
        from: &State,
        to: &State,
        effects: &[Effect],
        facts: &[Fact<'_>],
    ) -> Pending {
        let mut pending = Pending::default();
        if to.status() != from.status() {
            // Queued here, in transition order (the backend keeps a per-room queue).
            self.backend.status_changed(room_id, to.status());
            METRICS
                .recording_transitions
                .get_or_create(&Status {
                    status: format!("{:?}", to.status()).to_lowercase(),
                })
                .inc();
        }
        // The deadline this step arms, stored with its transition.
        let deadline = effects.iter().find_map(|effect| match effect {
            Effect::Arm {
                deadline,
                recording_id,
            } => Some(NewDeadline {
                deadline: deadline.as_str(),
                recording_id,
                at_ms: unix_ms(SystemTime::now() + self.waits.of(*deadline)),
            }),
            _ => None,
        });
        if to != from {
            tracing::info!(
                room = %room_id,
                from = ?from.status(),
                to = ?to.status(),
                recording_id = to.recording_id(),
                "recording state changed"
            );
            // A cluster's compare-and-set wrote them (`cluster_step`).
            let deliveries = match self.cluster {
                Some(_) => Vec::new(),
                None => self.webhook_deliveries(room_id, effects),
            };
            if let Err(e) =
                self.store
                    .save_room_state(room_id, to, &deliveries, deadline.as_ref(), facts)
            {
                tracing::error!(room = %room_id, error = %e, "cannot save the recording state");
            }
            pending.wake_outbox = self.cluster.is_some() || !deliveries.is_empty();
            return pending;
        }
        if let Some(deadline) = &deadline
            && let Err(e) = self.store.set_deadline(room_id, deadline)
        {
            tracing::error!(room = %room_id, error = %e, "cannot save a deadline");
        }
        if !facts.is_empty()
            && let Err(e) = self.store.note_facts(facts)
        {
            tracing::error!(error = %e, "cannot save when a recording started or who saw it");
        }
        pending
    }

    /// A backend call (`what`: `start` or `stop`) failed: counted, logged,
    /// and fed back to the room as [`Input::BackendFailed`].
    async fn backend_failed(
        self: &Arc<Self>,
        what: &'static str,
        room_id: &str,
        recording_id: String,
        error: crate::backends::BackendError,
    ) {
        tracing::warn!(room = %room_id, recording_id, error = %error, "backend {what} failed");
        count(&METRICS.backend_errors, what);
        let input = Input::BackendFailed {
            recording_id,
            reason: error.to_string(),
        };
        self.apply_or_log(room_id, input).await;
    }

    /// [`Registry::apply_to`] for inputs nobody waits to hear about: a
    /// cluster's Redis that did not answer is logged (by the cluster path).
    pub async fn apply_or_log(self: &Arc<Self>, room_id: &str, input: Input) {
        if let Err(e) = self.apply_to(room_id, input).await {
            tracing::debug!(room = room_id, error = %e, "input not applied");
        }
    }

    /// The event an announcing effect fans out.
    fn announcement(&self, effect: &Effect) -> Option<RecordingEvent> {
        Some(match effect.clone() {
            Effect::AnnounceStarted { recording_id } => RecordingEvent::Started { recording_id },
            Effect::AnnounceStopped { recording_id } => RecordingEvent::Stopped { recording_id },
            Effect::AnnounceStatus {
                status,
                recording_id,
                reason,
            } => RecordingEvent::Status {
                status,
                recording_id,
                provider: self.backend.name().to_owned(),
                reason,
            },
            _ => return None,
        })
    }

    /// The outbound webhooks a step's announcements cause.
    fn webhook_deliveries(&self, room_id: &str, effects: &[Effect]) -> Vec<NewDelivery> {
        let provider = self.backend.name();
        let mut deliveries = Vec::new();
        for effect in effects {
            let (event_type, data) = match effect {
                Effect::AnnounceStarted { recording_id } => (
                    "recording.started",
                    serde_json::json!({"room": room_id, "recording_id": recording_id, "provider": provider}),
                ),
                Effect::AnnounceStopped { recording_id } => (
                    "recording.stopped",
                    serde_json::json!({"room": room_id, "recording_id": recording_id, "provider": provider}),
                ),
                Effect::AnnounceStatus {
                    status: RecordingStatus::Failed,
                    recording_id,
                    reason,
                } => (
                    "recording.failed",
                    serde_json::json!({"room": room_id, "recording_id": recording_id, "provider": provider, "reason": reason}),
                ),
                _ => continue,
            };
            deliveries.extend(self.outbox.deliveries(event_type, data));
        }
        deliveries
    }
}

/// What a step tells of its recording: when it started and the most members
/// it saw (the peak a running recording keeps in `inner`).
fn facts<'a>(inner: &mut RoomInner, effects: &'a [Effect]) -> Vec<Fact<'a>> {
    let present = u32::try_from(inner.members.len()).unwrap_or(u32::MAX);
    let mut facts = Vec::new();
    for effect in effects {
        match effect {
            Effect::AnnounceStarted { recording_id } => {
                inner.peak = present;
                facts.push(Fact::Started {
                    recording_id,
                    present,
                });
            }
            Effect::AnnounceStopped { recording_id } => facts.push(Fact::Peak {
                recording_id,
                peak: inner.peak.max(present),
            }),
            _ => {}
        }
    }
    facts
}

fn snapshot(room: &Room) -> RoomSnapshot {
    let inner = room.lock();
    RoomSnapshot {
        id: room.id.clone(),
        participants: inner
            .members
            .iter()
            .map(|m| m.participant.clone())
            .collect(),
        recording: RecordingSnapshot::from(&inner.recording),
    }
}

fn recording_error(error: RecordingError) -> Frame {
    encode(&ServerFrame::recording(RecordingEvent::Error {
        error,
        detail: None,
    }))
}

/// The outcome of one recording input in cluster mode, before its effects run.
struct Stepped {
    from: State,
    to: State,
    effects: Vec<Effect>,
    /// Whether this node's write won (only then does it carry out the effects).
    won: bool,
}

/// Cluster mode: the same operations with Redis as the shared state.
impl Registry {
    /// Steps the shared recording state: read, `recording::step`, compare-and-set
    /// with the step's announcements, retried while another node wrote first.
    /// Refusals go to `reply`; the effects run here only if this write won.
    async fn cluster_apply(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        room_id: &str,
        reply: Option<&Outlet>,
        input: Input,
        require_empty: bool,
    ) -> Applied {
        match self
            .cluster_apply_or_err(cluster, room_id, reply, input, require_empty)
            .await
        {
            Ok(applied) => applied,
            Err(e) => {
                if let Some(outlet) = reply {
                    outlet.offer(cluster_unavailable(&e));
                }
                Applied {
                    state: State::Inactive,
                    refused: Some(RecordingError::BackendUnavailable),
                }
            }
        }
    }

    /// [`Registry::cluster_apply`], `Err` when Redis did not answer (nothing applied).
    async fn cluster_apply_or_err(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        room_id: &str,
        reply: Option<&Outlet>,
        input: Input,
        require_empty: bool,
    ) -> Result<Applied, ClusterError> {
        let stepped = self
            .cluster_step(cluster, room_id, input, require_empty)
            .await
            .inspect_err(|e| {
                tracing::warn!(room = room_id, error = %e, "cluster: recording input not applied");
            })?;
        let mut refused = None;
        for effect in &stepped.effects {
            if let Effect::Refuse(error) = effect {
                refused = Some(*error);
                if let Some(outlet) = reply {
                    outlet.offer(recording_error(*error));
                }
            }
        }
        if stepped.won {
            self.cluster_note_facts(cluster, room_id, &stepped.effects)
                .await;
            let mut pending =
                self.record_transition(room_id, &stepped.from, &stepped.to, &stepped.effects, &[]);
            pending.effects = stepped
                .effects
                .into_iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::BackendStart { .. }
                            | Effect::BackendStop { .. }
                            | Effect::Arm { .. }
                    )
                })
                .collect();
            self.run_effects(room_id, pending);
        }
        Ok(Applied {
            state: stepped.to,
            refused,
        })
    }

    /// Cluster mode: what onair saw of a recording (when it started, the
    /// most participants it had, on every node), in the catalog's store.
    /// The peak is raised on every join while it runs, too
    /// ([`Registry::cluster_join`]). A failure is logged: these are facts
    /// about the recording, not its state.
    async fn cluster_note_facts(&self, cluster: &Cluster, room_id: &str, effects: &[Effect]) {
        for effect in effects {
            let (recording_id, started) = match effect {
                Effect::AnnounceStarted { recording_id } => (recording_id, true),
                Effect::AnnounceStopped { recording_id } => (recording_id, false),
                _ => continue,
            };
            let present = match cluster.members(room_id).await {
                Ok(members) => u32::try_from(members.len()).unwrap_or(u32::MAX),
                Err(e) => {
                    tracing::warn!(room = room_id, error = %e, "cluster: cannot count a recording's participants");
                    continue;
                }
            };
            let saved = match started {
                true => self.facts.recording_started(recording_id, present).await,
                false => self.facts.recording_peak(recording_id, present).await,
            };
            if let Err(e) = saved {
                tracing::error!(error = %e, "cannot save when a recording started or who saw it");
            }
        }
    }

    async fn cluster_step(
        &self,
        cluster: &Cluster,
        room_id: &str,
        input: Input,
        require_empty: bool,
    ) -> Result<Stepped, ClusterError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = cluster.read_state(room_id).await?;
            let (to, effects) = recording::step(self.policy, &current.state, input.clone());
            let mut messages = Vec::new();
            for effect in &effects {
                if let Effect::Tell { participant, error } = effect {
                    messages.push(wire::encode(
                        wire::Kind::Tell,
                        participant,
                        &recording_error(*error),
                    ));
                } else if let Some(event) = self.announcement(effect) {
                    let frame = encode(&ServerFrame::recording(event));
                    messages.push(wire::encode(wire::Kind::Fanout, "", &frame));
                }
            }
            let only_refusals = effects.iter().all(|e| matches!(e, Effect::Refuse(_)));
            if to == current.state && only_refusals {
                // Nothing to write: the answer holds for the state as read.
                return Ok(Stepped {
                    from: current.state,
                    to,
                    effects,
                    won: false,
                });
            }
            // The outbound webhooks go with the write that causes them.
            let webhooks = match to != current.state {
                true => self.webhook_deliveries(room_id, &effects),
                false => Vec::new(),
            };
            match cluster
                .compare_and_set(
                    room_id,
                    current.version,
                    &to,
                    require_empty,
                    effects.iter().find_map(|effect| match effect {
                        Effect::Arm {
                            deadline,
                            recording_id,
                        } => Some((*deadline, recording_id.as_str(), self.waits.of(*deadline))),
                        _ => None,
                    }),
                    &messages,
                    &webhooks,
                )
                .await?
            {
                Cas::Won => {
                    return Ok(Stepped {
                        from: current.state,
                        to,
                        effects,
                        won: true,
                    });
                }
                Cas::NotEmpty => {
                    return Ok(Stepped {
                        from: current.state.clone(),
                        to: current.state,
                        effects: Vec::new(),
                        won: false,
                    });
                }
                Cas::Moved => continue,
            }
        }
        Err(ClusterError::Data("the recording state kept changing"))
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Closes a client that does not read; its session leaves the room (and the cluster).
fn kick(member: &Member) {
    if !member.outlet.is_kicked() {
        tracing::warn!(participant = %member.participant.id, "send queue full: closing a client that does not read");
        member.outlet.kick_out();
    }
}

fn cluster_unavailable(error: &ClusterError) -> Frame {
    crate::metrics::count(
        &METRICS.client_errors,
        ControlError::ClusterUnavailable.as_str(),
    );
    encode(&ServerFrame::control(ControlEvent::Error {
        error: ControlError::ClusterUnavailable,
        detail: Some(format!(
            "{error}; events from other nodes may be missed until this node reconnects"
        )),
    }))
}
