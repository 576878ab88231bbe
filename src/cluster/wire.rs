//! What the cluster keeps in Redis and sends over pub/sub: key names, the
//! pub/sub message format, and the stored forms of participants and the
//! recording state. Pure: no I/O.

use crate::protocol::Participant;
use crate::recording::{Deadline, State};

/// Every key onair writes starts with this.
pub const PREFIX: &str = "onair:";

/// `onair:room:<room>:members` — hash: participant id → `"<seq> <participant JSON>"`.
/// `seq` (from [`seq_key`]) keeps the joining order across nodes.
pub fn members_key(room: &str) -> String {
    format!("{PREFIX}room:{room}:members")
}

/// `onair:room:<room>:seq` — counter giving each join its place in the order.
pub fn seq_key(room: &str) -> String {
    format!("{PREFIX}room:{room}:seq")
}

/// `onair:room:<room>:recording` — hash `{v: version, s: state JSON}`; written
/// only by the compare-and-set script.
pub fn recording_key(room: &str) -> String {
    format!("{PREFIX}room:{room}:recording")
}

/// `onair:room:<room>:events` — the room's pub/sub channel.
pub fn channel(room: &str) -> String {
    format!("{PREFIX}room:{room}:events")
}

/// The room a channel name belongs to.
pub fn room_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix(PREFIX)?
        .strip_prefix("room:")?
        .strip_suffix(":events")
}

/// `onair:rooms` — set of rooms that have members somewhere.
pub fn rooms_key() -> String {
    format!("{PREFIX}rooms")
}

/// `onair:nodes` — set of the node ids that registered and were not reaped yet.
pub fn nodes_key() -> String {
    format!("{PREFIX}nodes")
}

/// `onair:node:<id>` — the node's heartbeat; it expires `node_ttl_s` after the last beat.
pub fn alive_key(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

/// `onair:node:<id>:participants` — hash: participant id → room, for the
/// participants whose sockets this node holds (removed by a survivor when it dies).
pub fn node_participants_key(node: &str) -> String {
    format!("{PREFIX}node:{node}:participants")
}

/// `onair:deadlines` — sorted set: `<room> <recording id>` scored by the time
/// (ms since the epoch) by which the backend must have confirmed the start.
/// The node that armed the start timeout handles it; if that node dies, any
/// survivor takes the overdue entry over (see [`super::Cluster`]'s sweep).
pub fn deadlines_key() -> String {
    format!("{PREFIX}deadlines")
}

/// `onair:livekit:egress:<egress id>` — `<room> <recording id>` of an egress
/// some node started, so that any node can act on its webhooks.
pub fn egress_key(egress_id: &str) -> String {
    format!("{PREFIX}livekit:egress:{egress_id}")
}

/// `onair:livekit:recording:<recording id>` — the egress id of a recording,
/// so that any node can stop it.
pub fn recording_egress_key(recording_id: &str) -> String {
    format!("{PREFIX}livekit:recording:{recording_id}")
}

/// `onair:joins:<sub>` — hash `{tokens, at}`: the join-rate bucket of one
/// token `sub` (`[server] joins_per_second_per_sub`), shared by every node;
/// it expires once it would be full again.
pub fn joins_key(sub: &str) -> String {
    format!("{PREFIX}joins:{sub}")
}

/// `onair:receipt:<provider>:<key>` — a provider's webhook idempotency key
/// (or a Nextcloud request's random), claimed by the node that applies it.
pub fn receipt_key(provider: &str, key: &str) -> String {
    format!("{PREFIX}receipt:{provider}:{key}")
}

/// `onair:jaas:mark:<session>` — the newest event timestamp (ms) applied for
/// a JaaS recording session, so that an older event is stale on every node.
pub fn jaas_mark_key(session: &str) -> String {
    format!("{PREFIX}jaas:mark:{session}")
}

/// `onair:livekit:mark:<egress>` — the newest event applied for a LiveKit
/// egress (`<updatedAt ns> <status rank> <final 0|1>`), so that an older
/// event is stale on every node.
pub fn livekit_mark_key(egress: &str) -> String {
    format!("{PREFIX}livekit:mark:{egress}")
}

/// `onair:nextcloud:pending:<token>` — the recording onair last started
/// for a Nextcloud room token whose file has not arrived (`<recording id>
/// <owner>`), so that the reports and the upload may reach any node.
pub fn nextcloud_pending_key(token: &str) -> String {
    format!("{PREFIX}nextcloud:pending:{token}")
}

/// `onair:ticket:<ticket>` — the claims (JSON) a single-use ticket stands
/// for, expiring with the ticket; redeemed with `GETDEL`, so once on any node.
pub fn ticket_key(ticket: &str) -> String {
    format!("{PREFIX}ticket:{ticket}")
}

/// `onair:tickets:<sub>` — sorted set of a `sub`'s outstanding ticket keys,
/// scored by when each expires (`[auth] max_tickets_per_sub`, on every node).
pub fn tickets_of_key(sub: &str) -> String {
    format!("{PREFIX}tickets:{sub}")
}

/// `onair:catalog:rec:<id>` — hash: one catalogued recording, field per
/// column of the single node's `recordings` table (`id`, `room`, `name`,
/// `duration_s`, `size_bytes`, `location_kind`, `location`, `provider`,
/// `created_at`, `participants` (JSON), `initiator`, `keep_until`; the last
/// two only when set).
pub fn catalog_recording_key(id: &str) -> String {
    format!("{PREFIX}catalog:rec:{id}")
}

/// `onair:catalog:created` — sorted set, every member scored 0 and ordered
/// by its text `<created_at> <id>`: the whole catalog, oldest first, so
/// that a range by text is a range by time (RFC 3339 UTC with milliseconds
/// sorts as text).
pub fn catalog_created_key() -> String {
    format!("{PREFIX}catalog:created")
}

/// `onair:catalog:room:<room>` — set of the recording ids of one room.
pub fn catalog_room_key(room: &str) -> String {
    format!("{PREFIX}catalog:room:{room}")
}

/// `onair:catalog:facts:<id>` — hash `{started_at, peak}`: what onair saw
/// of a recording while it ran.
pub fn catalog_facts_key(recording_id: &str) -> String {
    format!("{PREFIX}catalog:facts:{recording_id}")
}

/// `onair:owner:<recording id>` — who started a recording (a token `sub`),
/// written once.
pub fn owner_key(recording_id: &str) -> String {
    format!("{PREFIX}owner:{recording_id}")
}

/// `onair:notify:<owner>` — an owner's notification settings (JSON).
pub fn notify_key(owner: &str) -> String {
    format!("{PREFIX}notify:{owner}")
}

/// `onair:jaas:download:jobs` — hash: recording id → the journalled JaaS
/// download (JSON) onair owes.
pub fn jaas_download_jobs_key() -> String {
    format!("{PREFIX}jaas:download:jobs")
}

/// `onair:jaas:download:order` — sorted set: the journalled downloads'
/// recording ids, scored by when they were accepted (ms).
pub fn jaas_download_order_key() -> String {
    format!("{PREFIX}jaas:download:order")
}

/// `onair:jaas:download:key:<key>` — the idempotency key of the
/// `RECORDING_UPLOADED` that journalled a download (expires after a day).
pub fn jaas_download_receipt_key(key: &str) -> String {
    format!("{PREFIX}jaas:download:key:{key}")
}

/// `onair:outbox:seq` — counter: `INCR` gives a new outbox row its `seq`.
pub fn outbox_seq_key() -> String {
    format!("{PREFIX}outbox:seq")
}

/// `onair:outbox:row:` — the prefix of the outbox rows' keys (see [`outbox_row_key`]),
/// for the scripts that build a row's key from its `seq`.
pub fn outbox_row_prefix() -> String {
    format!("{PREFIX}outbox:row:")
}

/// `onair:outbox:row:<seq>` — hash: one outbound webhook or notification POST
/// (`kind`, `message_id`, `endpoint`, `event_type`, `payload`, `attempts`,
/// `state`, `created_ms`, `holder` for held rows, `last_error`).
pub fn outbox_row_key(seq: i64) -> String {
    format!("{}{seq}", outbox_row_prefix())
}

/// `onair:outbox:due` — sorted set of pending rows' `seq`, scored by when
/// (ms since the epoch) each is due; a node that claims a row re-scores it
/// to the end of its lease.
pub fn outbox_due_key() -> String {
    format!("{PREFIX}outbox:due")
}

/// `onair:outbox:held` — set of held rows' `seq` (released by their holder,
/// or by a survivor once the holder's heartbeat is gone).
pub fn outbox_held_key() -> String {
    format!("{PREFIX}outbox:held")
}

/// `onair:outbox:wake` — pub/sub channel: a node that wrote outbox rows
/// publishes its id, so that every node looks for due rows at once.
pub fn outbox_wake_channel() -> String {
    format!("{PREFIX}outbox:wake")
}

/// `onair:outbox:disabled` — set of the endpoint URLs that answered 410 Gone.
pub fn outbox_disabled_key() -> String {
    format!("{PREFIX}outbox:disabled")
}

/// `onair:migrated:<kind>:<id>` — written once, in the same script, when
/// `onair migrate-to-redis` copies a single node's outbox row (`outbox`,
/// id `<message id> <endpoint>`) or owed JaaS download (`jaas`, id the
/// recording's): a second run, or one after a crash half-way, copies
/// nothing twice, even what the cluster has since delivered or finished.
pub fn migrated_key(kind: &str, id: &str) -> String {
    format!("{PREFIX}migrated:{kind}:{id}")
}

/// The member of the sorted set of deadlines for `deadline` of
/// `recording_id` in `room` (a start's keeps the older two-part form). Room
/// and recording ids hold no spaces.
pub fn deadline_member(room: &str, recording_id: &str, deadline: Deadline) -> String {
    match deadline {
        Deadline::Start => format!("{room} {recording_id}"),
        other => format!("{room} {recording_id} {}", other.as_str()),
    }
}

/// The room, recording id and kind of a [`deadline_member`].
pub fn parse_deadline(member: &str) -> Option<(&str, &str, Deadline)> {
    let mut parts = member.splitn(3, ' ');
    let (room, recording_id) = (parts.next()?, parts.next()?);
    let deadline = match parts.next() {
        None => Deadline::Start,
        Some(name) => Deadline::parse(name)?,
    };
    Some((room, recording_id, deadline))
}

/// `room recording_id`, as egresses are shared.
pub fn parse_room_and_recording(value: &str) -> Option<(&str, &str)> {
    value.split_once(' ')
}

/// What a pub/sub message asks each node to do with its own sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Forward the frame to every member but `subject` (if set).
    Fanout,
    /// `joined` of `subject`: forward to every member but `subject`, and mark
    /// the point in the stream where `subject`'s `join_success` snapshot was taken.
    Joined,
    /// `subject` left: each node builds the `left` frame itself (the frame is
    /// empty, so that a Lua script can publish it for a dead node).
    Left,
    /// Forward the frame to `subject` only.
    Tell,
}

impl Kind {
    fn tag(self) -> char {
        match self {
            Self::Fanout => 'F',
            Self::Joined => 'J',
            Self::Left => 'L',
            Self::Tell => 'T',
        }
    }
}

/// One decoded pub/sub message. The frame is the already serialized server
/// frame: the origin node serializes once and every node forwards the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// What to do.
    pub kind: Kind,
    /// The participant concerned (empty for none).
    pub subject: &'a str,
    /// The serialized frame (empty for [`Kind::Left`]).
    pub frame: &'a str,
}

/// `"<tag>\t<subject>\t<frame>"`: a cheap header, no JSON parsing on the way through.
pub fn encode(kind: Kind, subject: &str, frame: &str) -> String {
    let mut out = String::with_capacity(frame.len() + subject.len() + 3);
    out.push(kind.tag());
    out.push('\t');
    out.push_str(subject);
    out.push('\t');
    out.push_str(frame);
    out
}

/// The inverse of [`encode`]; `None` for anything else.
pub fn decode(message: &str) -> Option<Message<'_>> {
    let (tag, rest) = message.split_once('\t')?;
    let (subject, frame) = rest.split_once('\t')?;
    let kind = match tag {
        "F" => Kind::Fanout,
        "J" => Kind::Joined,
        "L" => Kind::Left,
        "T" => Kind::Tell,
        _ => return None,
    };
    Some(Message {
        kind,
        subject,
        frame,
    })
}

/// Parses the members hash (`HGETALL`, flattened) into participants in joining order.
pub fn members(flat: &[String]) -> Vec<Participant> {
    let mut members: Vec<(u64, Participant)> = flat
        .chunks_exact(2)
        .filter_map(|pair| {
            let (seq, json) = pair[1].split_once(' ')?;
            Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
        })
        .collect();
    members.sort_by_key(|(seq, _)| *seq);
    members.into_iter().map(|(_, p)| p).collect()
}

/// Serializes a recording state for Redis (`{"status":…, …}`, see [`State`]).
pub fn state_to_json(state: &State) -> String {
    serde_json::to_string(state).expect("plain data serializes")
}

/// Reads a stored recording state; `None` if it does not parse.
pub fn state_from_json(json: &str) -> Option<State> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn deadline_members_name_their_kind() {
        use crate::recording::Deadline;
        for deadline in [Deadline::Start, Deadline::Stop, Deadline::EmptyRoom] {
            let member = deadline_member("standup", "r1", deadline);
            assert_eq!(parse_deadline(&member), Some(("standup", "r1", deadline)));
        }
        // A start's keeps the older two-part form, which older nodes wrote.
        assert_eq!(deadline_member("a", "b", Deadline::Start), "a b");
        assert_eq!(parse_deadline("a b nonsense"), None);
    }
    use super::*;

    #[test]
    fn messages_round_trip() {
        for kind in [Kind::Fanout, Kind::Joined, Kind::Left, Kind::Tell] {
            let text = encode(kind, "p1", r#"{"a":"x\ty"}"#);
            assert_eq!(
                decode(&text),
                Some(Message {
                    kind,
                    subject: "p1",
                    frame: r#"{"a":"x\ty"}"#
                })
            );
        }
        assert_eq!(decode("F\t\t").map(|m| m.subject), Some(""));
        assert_eq!(decode("X\ta\tb"), None);
        assert_eq!(decode("garbage"), None);
    }

    #[test]
    fn channels_name_their_room() {
        assert_eq!(room_of_channel(&channel("standup:1")), Some("standup:1"));
        assert_eq!(room_of_channel("other"), None);
    }

    #[test]
    fn states_round_trip() {
        for state in [
            State::Inactive,
            State::Initializing {
                recording_id: "r".into(),
                requested_by: Some("p".into()),
            },
            State::Recording {
                recording_id: "r".into(),
            },
            State::Stopping {
                recording_id: "r".into(),
                announced: true,
            },
            State::Failed {
                recording_id: "r".into(),
                reason: "why".into(),
            },
        ] {
            assert_eq!(state_from_json(&state_to_json(&state)), Some(state));
        }
    }

    #[test]
    fn the_stored_form_is_pinned() {
        // What nodes of another version read from Redis: keep it stable.
        let state = State::Initializing {
            recording_id: "r".into(),
            requested_by: None,
        };
        assert_eq!(
            state_to_json(&state),
            r#"{"status":"initializing","recording_id":"r","requested_by":null}"#
        );
        assert_eq!(state_to_json(&State::Inactive), r#"{"status":"inactive"}"#);
        assert_eq!(
            state_from_json(r#"{"status":"failed","recording_id":"r","reason":"why"}"#),
            Some(State::Failed {
                recording_id: "r".into(),
                reason: "why".into()
            })
        );
    }

    #[test]
    fn members_come_in_joining_order() {
        let p = |id: &str| {
            serde_json::json!({"id": id, "control": {"display_name": id, "role": "guest",
                "joined_at": "2025-06-03T14:02:16.305Z", "participation_kind": "guest"},
                "recording": {"consents_recording": false}})
            .to_string()
        };
        let flat = vec![
            "b".into(),
            format!("10 {}", p("b")),
            "a".into(),
            format!("9 {}", p("a")),
            "c".into(),
            "garbage".into(),
        ];
        let ids: Vec<String> = members(&flat).into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
