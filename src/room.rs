//! Rooms: who is in them, their recording state, and fan-out to their sockets.
//!
//! Rooms live in a [`DashMap`] keyed by room id, are created on the first join
//! and dropped when the last participant leaves. Each room's data sits behind a
//! `std::sync::Mutex`: every critical section is short and synchronous (no
//! `.await` while it is held), and fan-out is a `try_send` of a shared,
//! serialized-once frame into each participant's bounded queue, so a client
//! that stops reading is dropped from the room instead of slowing it down.
//! Backend calls and timers run after the lock is released.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use crate::backends::{Backend, StartRequest, StopRequest};
use crate::metrics::{METRICS, Status, count};
use crate::protocol::{
    ControlEvent, Participant, RecordingError, RecordingEvent, RecordingStatus, ServerFrame,
};
use crate::recording::{self, Effect, Input, Policy, State};
use crate::store::{NewDelivery, Store};
use crate::webhooks::outbound::Outbox;

/// A serialized server frame, shared by every recipient (cloning is a refcount).
pub type Frame = Utf8Bytes;

/// Serializes a frame once, for any number of recipients.
pub fn encode(frame: &ServerFrame) -> Frame {
    Frame::from(frame.to_json())
}

/// How the room reaches one participant's socket task.
#[derive(Clone, Debug)]
pub struct Outlet {
    /// The participant's bounded outgoing queue.
    pub tx: mpsc::Sender<Frame>,
    /// Cancelled when the room drops the participant for not reading.
    pub kick: CancellationToken,
}

impl Outlet {
    /// Queues a frame; `false` if the queue is full (the client is not reading).
    fn offer(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => {
                METRICS.frames_sent.inc();
                true
            }
            Err(TrySendError::Full(_)) => false,
            // The socket task is gone; its leave is on the way.
            Err(TrySendError::Closed(_)) => true,
        }
    }
}

struct Member {
    participant: Participant,
    /// The token's `sub`.
    user_id: String,
    may_record: bool,
    outlet: Outlet,
}

#[derive(Default)]
struct RoomInner {
    /// Set once the room is empty and leaving the registry; a joiner that finds
    /// it set retries with a fresh room.
    closed: bool,
    members: Vec<Member>,
    recording: State,
}

/// One room.
pub struct Room {
    /// The room id.
    pub id: String,
    inner: Mutex<RoomInner>,
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, RoomInner> {
        // A panic while holding the lock cannot leave the plain data torn in a
        // way that matters more than losing the room, so recover the guard.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The new status, when it changed (mirrored to the provider).
    changed: Option<RecordingStatus>,
    /// Whether webhook deliveries were written.
    wake_outbox: bool,
}

/// All rooms of this process.
pub struct Registry {
    rooms: DashMap<String, Arc<Room>>,
    backend: Arc<Backend>,
    policy: Policy,
    start_timeout: Duration,
    store: Arc<Store>,
    outbox: Arc<Outbox>,
}

/// What a [`Registry`] needs besides its rooms.
pub struct RegistryParts {
    /// The recording backend.
    pub backend: Arc<Backend>,
    /// The state machine's policy.
    pub policy: Policy,
    /// How long a backend has to confirm a start.
    pub start_timeout: Duration,
    /// Where recording state and the outbox are kept.
    pub store: Arc<Store>,
    /// Outbound webhooks.
    pub outbox: Arc<Outbox>,
}

impl Registry {
    /// An empty registry.
    pub fn new(parts: RegistryParts) -> Self {
        Self {
            rooms: DashMap::new(),
            backend: parts.backend,
            policy: parts.policy,
            start_timeout: parts.start_timeout,
            store: parts.store,
            outbox: parts.outbox,
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
                Arc::new(Room {
                    id: room_id.to_owned(),
                    inner: Mutex::new(RoomInner {
                        recording: saved,
                        ..RoomInner::default()
                    }),
                })
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
    pub fn announce(&self, room_id: &str, event: RecordingEvent) -> bool {
        let Some(room) = self.get(room_id) else {
            return false;
        };
        let frame = encode(&ServerFrame::recording(event));
        broadcast(&mut room.lock(), &frame, None);
        true
    }

    /// Adds a participant to a room (creating it), sends `join_success` to it
    /// and `joined` to everyone else. Returns the room to use from now on.
    pub fn join(
        &self,
        room_id: &str,
        participant: Participant,
        user_id: &str,
        may_record: bool,
        outlet: Outlet,
    ) -> Arc<Room> {
        loop {
            let room = self.room(room_id);
            let mut inner = room.lock();
            if inner.closed {
                // The last participant is taking this room down; wait for it to leave the map.
                drop(inner);
                std::thread::yield_now();
                continue;
            }
            let success = ServerFrame::control(ControlEvent::JoinSuccess {
                id: participant.id.clone(),
                display_name: participant.control.display_name.clone(),
                role: participant.control.role,
                participants: inner
                    .members
                    .iter()
                    .map(|m| m.participant.clone())
                    .collect(),
                recording: inner.recording.join_data(),
            });
            // A fresh queue always has room for its first frame.
            outlet.offer(encode(&success));
            let joined = encode(&ServerFrame::control(ControlEvent::Joined(
                participant.clone(),
            )));
            broadcast(&mut inner, &joined, None);
            METRICS.participants.inc();
            inner.members.push(Member {
                participant,
                user_id: user_id.to_owned(),
                may_record,
                outlet,
            });
            drop(inner);
            return room;
        }
    }

    /// Removes a participant (on leave, socket drop or kick) and tells the others.
    pub fn leave(self: &Arc<Self>, room: &Arc<Room>, participant_id: &str) {
        let mut inner = room.lock();
        if let Some(index) = inner
            .members
            .iter()
            .position(|m| m.participant.id == participant_id)
        {
            inner.members.remove(index);
            METRICS.participants.dec();
            let left = encode(&ServerFrame::control(ControlEvent::Left {
                id: participant_id.to_owned(),
            }));
            broadcast(&mut inner, &left, None);
        }
        if !inner.members.is_empty() || inner.closed {
            return;
        }
        inner.closed = true;
        let pending = self.step(room, &mut inner, None, Input::RoomEmptied).1;
        drop(inner);
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
    pub fn set_consent(&self, room: &Arc<Room>, participant_id: &str, consent: bool) {
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
        broadcast(&mut inner, &update, Some(participant_id));
        drop(inner);
        if !deliveries.is_empty() {
            match self.store.enqueue(&deliveries) {
                Ok(()) => self.outbox.wake(),
                Err(e) => tracing::error!(error = %e, "cannot queue the consent webhook"),
            }
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
    pub fn apply(
        self: &Arc<Self>,
        room: &Arc<Room>,
        reply: Option<&Outlet>,
        input: Input,
    ) -> Applied {
        let mut inner = room.lock();
        let (applied, pending) = self.step(room, &mut inner, reply, input);
        drop(inner);
        self.run_effects(&room.id, pending);
        applied
    }

    /// Feeds a recording input to a room by id (backend answers, timers, the
    /// REST API). A room nobody is in still takes inputs while its saved
    /// recording is not inactive; `None` for a room that is neither live nor recording.
    pub fn apply_to(self: &Arc<Self>, room_id: &str, input: Input) -> Option<Applied> {
        let room = self.room_with_recording(room_id)?;
        let applied = self.apply(&room, None, input);
        self.release(&room);
        Some(applied)
    }

    /// A live room by id.
    pub fn get(&self, room_id: &str) -> Option<Arc<Room>> {
        self.rooms.get(room_id).map(|r| r.clone())
    }

    /// Snapshots of every live room.
    pub fn snapshots(&self) -> Vec<RoomSnapshot> {
        // Clone the Arcs out first: no shard guard is held while a room is locked.
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        let mut snapshots: Vec<RoomSnapshot> = rooms.iter().map(|r| snapshot(r)).collect();
        snapshots.sort_by(|a, b| a.id.cmp(&b.id));
        snapshots
    }

    /// A snapshot of one live room.
    pub fn snapshot(&self, room_id: &str) -> Option<RoomSnapshot> {
        self.get(room_id).map(|r| snapshot(&r))
    }

    /// The recording state of a live room, or the saved one of a room nobody is in.
    pub fn recording_state(&self, room_id: &str) -> Option<State> {
        if let Some(room) = self.get(room_id) {
            return Some(room.lock().recording.clone());
        }
        self.store.room_state(room_id).ok().flatten()
    }

    /// Number of live rooms.
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
        let (state, effects) = recording::step(self.policy, &inner.recording, input);
        let mut pending = Pending::default();
        if state.status() != inner.recording.status() {
            pending.changed = Some(state.status());
        }
        let changed = state != inner.recording;
        if state.status() != inner.recording.status() {
            METRICS
                .recording_transitions
                .get_or_create(&Status {
                    status: format!("{:?}", state.status()).to_lowercase(),
                })
                .inc();
        }
        if changed {
            tracing::info!(
                room = %room.id,
                from = ?inner.recording.status(),
                to = ?state.status(),
                recording_id = state.recording_id(),
                "recording state changed"
            );
        }
        if changed {
            let deliveries = self.webhook_deliveries(&room.id, &effects);
            if let Err(e) = self.store.save_room_state(&room.id, &state, &deliveries) {
                tracing::error!(room = %room.id, error = %e, "cannot save the recording state");
            }
            pending.wake_outbox = !deliveries.is_empty();
        }
        inner.recording = state;
        let mut refused = None;
        for effect in effects {
            let event = match effect {
                Effect::AnnounceStarted { recording_id } => {
                    RecordingEvent::Started { recording_id }
                }
                Effect::AnnounceStopped { recording_id } => {
                    RecordingEvent::Stopped { recording_id }
                }
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
                Effect::Refuse(error) => {
                    refused = Some(error);
                    if let Some(outlet) = reply {
                        outlet.offer(recording_error(error));
                    }
                    continue;
                }
                Effect::Tell { participant, error } => {
                    if let Some(m) = inner
                        .members
                        .iter()
                        .find(|m| m.participant.id == participant)
                    {
                        m.outlet.offer(recording_error(error));
                    }
                    continue;
                }
                Effect::BackendStart { .. }
                | Effect::BackendStop { .. }
                | Effect::ArmStartTimeout { .. } => {
                    pending.effects.push(effect);
                    continue;
                }
            };
            broadcast(inner, &encode(&ServerFrame::recording(event)), None);
        }
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
        if let Some(status) = pending.changed {
            let backend = self.backend.clone();
            let room_id = room_id.to_owned();
            tokio::spawn(async move { backend.status_changed(&room_id, status).await });
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
                            tracing::warn!(room = %room_id, recording_id, error = %e, "backend start failed");
                            count(&METRICS.backend_errors, "start");
                            registry.apply_to(
                                &room_id,
                                Input::BackendFailed {
                                    recording_id,
                                    reason: e.to_string(),
                                },
                            );
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
                            tracing::warn!(room = %room_id, recording_id, error = %e, "backend stop failed");
                            count(&METRICS.backend_errors, "stop");
                            registry.apply_to(
                                &room_id,
                                Input::BackendFailed {
                                    recording_id,
                                    reason: e.to_string(),
                                },
                            );
                        }
                    });
                }
                Effect::ArmStartTimeout { recording_id } => {
                    let timeout = self.start_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        registry.apply_to(&room_id, Input::StartTimedOut { recording_id });
                    });
                }
                _ => unreachable!("only deferred effects are pending"),
            }
        }
    }
}

impl Registry {
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

/// Offers a frame to every member (but `except`); members whose queue is full
/// are removed and kicked, and the others are told they left.
fn broadcast(inner: &mut RoomInner, frame: &Frame, except: Option<&str>) {
    let mut kicked: Vec<String> = Vec::new();
    inner.members.retain(|m| {
        if except == Some(m.participant.id.as_str()) || m.outlet.offer(frame.clone()) {
            return true;
        }
        tracing::warn!(participant = %m.participant.id, "send queue full: closing a client that does not read");
        m.outlet.kick.cancel();
        METRICS.participants.dec();
        kicked.push(m.participant.id.clone());
        false
    });
    for id in kicked {
        let left = encode(&ServerFrame::control(ControlEvent::Left { id }));
        broadcast(inner, &left, None);
    }
}
