//! Cluster mode: joins, leaves and snapshots with Redis as the shared
//! state, and what the cluster hands this node ([`Host`]).

use std::sync::Arc;

use super::{
    Frame, Member, Outlet, PendingJoin, RecordingSnapshot, Registry, Room, RoomSnapshot,
    cluster_unavailable, encode, kick,
};
use crate::cluster::{Cluster, ClusterError, Host, wire};
use crate::metrics::METRICS;
use crate::protocol::{ControlEvent, Participant, ServerFrame};
use crate::recording::{Deadline, Input, State};

impl Registry {
    /// The local room for `room_id`, created (without saved state: Redis has it) if needed.
    pub(super) fn local_room(&self, room_id: &str) -> Arc<Room> {
        if let Some(room) = self.rooms.get(room_id) {
            return room.clone();
        }
        self.rooms
            .entry(room_id.to_owned())
            .or_insert_with(|| {
                METRICS.rooms.inc();
                self.new_room(room_id, State::default())
            })
            .clone()
    }

    pub(super) async fn cluster_join(
        &self,
        cluster: &Arc<Cluster>,
        room_id: &str,
        participant: Participant,
        user_id: &str,
        may_record: bool,
        outlet: Outlet,
    ) -> Arc<Room> {
        let id = participant.id.clone();
        let room = loop {
            let room = self.local_room(room_id);
            let mut inner = room.lock();
            if inner.closed {
                drop(inner);
                std::thread::yield_now();
                continue;
            }
            METRICS.participants.inc();
            inner.members.push(Member {
                participant: participant.clone(),
                user_id: user_id.to_owned(),
                may_record,
                sweep_slot: super::keepalive::slot(),
                outlet: outlet.clone(),
                pending: Some(PendingJoin::default()),
            });
            drop(inner);
            break room;
        };
        let joined = encode(&ServerFrame::control(ControlEvent::Joined(
            participant.clone(),
        )));
        let message = wire::encode(wire::Kind::Joined, &id, &joined);
        match cluster.join(room_id, &participant, &message).await {
            Ok(view) => {
                // A recording running: its peak headcount, on every node.
                if let State::Recording { recording_id, .. } = &view.state {
                    let present = u32::try_from(view.members.len()).unwrap_or(u32::MAX);
                    if let Err(e) = self.facts.recording_peak(recording_id, present).await {
                        tracing::error!(error = %e, "cannot save who saw a recording");
                    }
                }
                let others = view.members.into_iter().filter(|p| p.id != id).collect();
                let success = join_success(&participant, others, view.state.join_data());
                let mut inner = room.lock();
                if let Some(member) = inner.members.iter_mut().find(|m| m.participant.id == id)
                    && let Some(pending) = member.pending.as_mut()
                {
                    pending.success = Some(success);
                    if pending.seen_joined {
                        activate(member);
                    }
                }
            }
            Err(e) => {
                // Not in the shared room: answer from what this node knows, then say why.
                tracing::warn!(room = room_id, error = %e, "cluster: join not shared");
                let mut inner = room.lock();
                let others = inner
                    .members
                    .iter()
                    .filter(|m| m.participant.id != id)
                    .map(|m| m.participant.clone())
                    .collect();
                if let Some(member) = inner.members.iter_mut().find(|m| m.participant.id == id) {
                    member.pending = None;
                    member
                        .outlet
                        .offer(join_success(&participant, others, None));
                    member.outlet.offer(cluster_unavailable(&e));
                }
            }
        }
        room
    }

    pub(super) async fn cluster_leave(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        room: &Arc<Room>,
        participant_id: &str,
    ) {
        // Scoped: no guard may live across the awaits below.
        let now_empty = {
            let mut inner = room.lock();
            let Some(index) = inner
                .members
                .iter()
                .position(|m| m.participant.id == participant_id)
            else {
                return;
            };
            inner.members.remove(index);
            METRICS.participants.dec();
            let now_empty = inner.members.is_empty() && !inner.closed;
            if now_empty {
                inner.closed = true;
            }
            now_empty
        };
        if now_empty
            && self
                .rooms
                .remove_if(&room.id, |_, r| Arc::ptr_eq(r, room))
                .is_some()
        {
            METRICS.rooms.dec();
            cluster.unsubscribe(&room.id);
        }
        match cluster.leave(&room.id, participant_id).await {
            // The last one anywhere: the room empties (a recording stops, as on one node).
            Ok(Some(0)) => {
                self.cluster_apply(cluster, &room.id, None, Input::RoomEmptied, true)
                    .await;
            }
            Ok(_) => {}
            // Left in Redis under this node's name: removed when the node re-registers.
            Err(e) => tracing::warn!(room = %room.id, error = %e, "cluster: leave not shared yet"),
        }
    }

    /// Whether the room has members somewhere.
    pub(super) async fn cluster_room_exists(&self, cluster: &Cluster, room_id: &str) -> bool {
        self.cluster_room_exists_or_err(cluster, room_id)
            .await
            .unwrap_or(false)
    }

    /// Whether the room has a recording state or members in Redis.
    pub(super) async fn cluster_room_exists_or_err(
        &self,
        cluster: &Cluster,
        room_id: &str,
    ) -> Result<bool, ClusterError> {
        let state = cluster.read_state(room_id).await?;
        Ok(state.exists || !cluster.members(room_id).await?.is_empty())
    }

    pub(super) async fn cluster_snapshot(
        &self,
        cluster: &Cluster,
        room_id: &str,
    ) -> Option<RoomSnapshot> {
        let participants = cluster.members(room_id).await.ok()?;
        let state = cluster.read_state(room_id).await.ok()?.state;
        (!participants.is_empty()).then(|| RoomSnapshot {
            id: room_id.to_owned(),
            participants,
            recording: RecordingSnapshot::from(&state),
        })
    }
}

impl Host for Registry {
    fn deliver(self: &Arc<Self>, room_id: &str, message: wire::Message<'_>) {
        let Some(room) = self.rooms.get(room_id).map(|r| r.clone()) else {
            return;
        };
        let frame = match message.kind {
            wire::Kind::Left => encode(&ServerFrame::control(ControlEvent::Left {
                id: message.subject.to_owned(),
            })),
            _ => Frame::from(message.frame),
        };
        let mut inner = room.lock();
        let mut flush = false;
        match message.kind {
            wire::Kind::Tell => {
                if let Some(outlet) = inner
                    .members
                    .iter()
                    .find(|m| m.participant.id == message.subject && m.pending.is_none())
                    .map(|m| m.outlet.clone())
                {
                    inner.send_one(&outlet, frame);
                }
            }
            wire::Kind::Joined => {
                if let Some(member) = inner
                    .members
                    .iter_mut()
                    .find(|m| m.participant.id == message.subject)
                    && let Some(pending) = member.pending.as_mut()
                {
                    pending.seen_joined = true;
                    if pending.success.is_some() {
                        activate(member);
                    }
                }
                inner.fan_out(frame, Some(message.subject), room.fanout_rate);
            }
            // A participant's `update` (recording events have no subject).
            wire::Kind::Fanout if !message.subject.is_empty() => {
                flush = inner.presence(message.subject, frame, room.fanout_rate);
            }
            wire::Kind::Fanout => inner.fan_out(frame, None, room.fanout_rate),
            wire::Kind::Left => {
                inner.forget(message.subject);
                inner.fan_out(frame, Some(message.subject), room.fanout_rate);
            }
        }
        drop(inner);
        room.drain();
        if flush {
            self.start_flush(&room);
        }
    }

    fn local_members(&self) -> Vec<(String, Participant)> {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        rooms
            .iter()
            .flat_map(|room| {
                room.lock()
                    .members
                    .iter()
                    .map(|m| (room.id.clone(), m.participant.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn is_local(&self, room_id: &str) -> bool {
        self.rooms.contains_key(room_id)
    }

    fn connection_lost(&self) {
        let error = cluster_unavailable(&ClusterError::Unavailable);
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.value().clone()).collect();
        for room in rooms {
            let mut inner = room.lock();
            let others: Vec<Participant> = inner
                .members
                .iter()
                .map(|m| m.participant.clone())
                .collect();
            for member in inner.members.iter_mut() {
                // A joiner caught half-way gets its answer from what this node knows.
                if let Some(pending) = member.pending.as_mut()
                    && pending.success.is_none()
                {
                    let id = member.participant.id.clone();
                    pending.success = Some(join_success(
                        &member.participant,
                        others.iter().filter(|p| p.id != id).cloned().collect(),
                        None,
                    ));
                }
                if member.pending.is_some() {
                    activate(member);
                }
                if !member.outlet.offer(error.clone()) {
                    kick(member);
                }
            }
        }
    }

    fn deadline_overdue(self: &Arc<Self>, room: String, recording_id: String, deadline: Deadline) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let registry = self.clone();
        tokio::spawn(async move {
            let input = Input::Expired {
                deadline,
                recording_id,
            };
            // An emptied room's only while it is still empty on every node.
            let require_empty = deadline == Deadline::EmptyRoom;
            if registry.cluster_room_exists(&cluster, &room).await {
                registry
                    .cluster_apply(&cluster, &room, None, input, require_empty)
                    .await;
            }
        });
    }

    fn rooms_emptied(self: &Arc<Self>, rooms: Vec<String>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let registry = self.clone();
        tokio::spawn(async move {
            for room in rooms {
                registry
                    .cluster_apply(&cluster, &room, None, Input::RoomEmptied, true)
                    .await;
            }
        });
    }
}

/// A cluster joiner's `join_success` (cluster rooms are never large).
pub(super) fn join_success(
    participant: &Participant,
    participants: Vec<Participant>,
    recording: Option<crate::protocol::RecordingData>,
) -> Frame {
    encode(&ServerFrame::control(ControlEvent::JoinSuccess {
        id: participant.id.clone(),
        display_name: participant.control.display_name.clone(),
        role: participant.control.role,
        participants,
        recording,
        participant_count: None,
    }))
}

/// Sends a cluster joiner its `join_success` and what was buffered behind it.
pub(super) fn activate(member: &mut Member) {
    let Some(pending) = member.pending.take() else {
        return;
    };
    let frames = pending.success.into_iter().chain(pending.buffer);
    for frame in frames {
        if !member.outlet.offer(frame) {
            kick(member);
            return;
        }
    }
}
