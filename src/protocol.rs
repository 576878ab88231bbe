//! Wire types: the JSON that crosses the WebSocket, and nothing else.
//!
//! No tokio, no I/O, no room logic lives here: every type is plain serde so that
//! the same definitions are checked against the JSON Schemas and examples in
//! `protocol/` (see `tests/protocol_examples.rs`). A new message is one enum
//! variant here plus one schema and one example file there.
//!
//! Client → server: `{"namespace":"…","payload":{"action":"…",…}}`.
//! Server → client: `{"namespace":"…","timestamp":"…","payload":{"message":"…",…}}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The WebSocket subprotocol onair selects when a client offers it (OpenTalk's name).
pub const SUBPROTOCOL: &str = "opentalk-signaling-json-v1.0";

/// A namespace of the envelope: which module a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    /// Joining, presence and protocol errors.
    Control,
    /// The recording module of seed 002 and onair's extensions.
    Recording,
}

impl Namespace {
    /// Looks a namespace up by its wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        match name {
            "control" => Some(Self::Control),
            "recording" => Some(Self::Recording),
            _ => None,
        }
    }
}

/// A client frame before its payload is interpreted: the namespace decides
/// which command type the payload must fit.
#[derive(Debug, Deserialize)]
pub struct RawClientFrame<'a> {
    /// The namespace as sent; an unknown one is answered with `invalid_namespace`.
    /// Borrowed unless the client wrote it with JSON escapes (`"contro\u006c"`).
    #[serde(borrow)]
    pub namespace: std::borrow::Cow<'a, str>,
    /// The payload, parsed only once the namespace is known.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// A client frame with a typed payload (what clients send, for tests and clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "namespace", content = "payload", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A `control` command.
    Control(ControlCommand),
    /// A `recording` command.
    Recording(RecordingCommand),
}

/// Commands of the `control` namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Must be the first message of a connection.
    Join {
        /// Overrides the token's `name` claim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
    },
}

/// Commands of the `recording` namespace (seed 002, plus `audio_only`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecordingCommand {
    /// Moderators only: ask the backend to start recording the room.
    Start {
        /// Record audio only, where the backend supports it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        audio_only: bool,
    },
    /// Moderators only: stop the recording with this id.
    Stop {
        /// The id from `started` or `join_success`.
        recording_id: String,
    },
    /// Anyone, any time: give or withdraw consent to being recorded.
    SetConsent {
        /// `true` to consent.
        consent: bool,
    },
}

/// A server frame: the envelope around every event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerFrame {
    /// The module the event belongs to.
    pub namespace: Namespace,
    /// When the event was produced, RFC 3339 UTC.
    pub timestamp: String,
    /// The event itself.
    pub payload: ServerPayload,
}

/// The payload of a server frame; which enum applies follows from the namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerPayload {
    /// A `control` event.
    Control(ControlEvent),
    /// A `recording` event.
    Recording(RecordingEvent),
}

impl<'de> Deserialize<'de> for ServerFrame {
    /// The namespace decides the payload type: both namespaces have an
    /// `error` message, so an untagged guess would be ambiguous.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Raw {
            namespace: Namespace,
            timestamp: String,
            payload: serde_json::Value,
        }
        let raw = Raw::deserialize(deserializer)?;
        let payload = match raw.namespace {
            Namespace::Control => serde_json::from_value(raw.payload).map(ServerPayload::Control),
            Namespace::Recording => {
                serde_json::from_value(raw.payload).map(ServerPayload::Recording)
            }
        }
        .map_err(D::Error::custom)?;
        Ok(Self {
            namespace: raw.namespace,
            timestamp: raw.timestamp,
            payload,
        })
    }
}

impl ServerFrame {
    /// Wraps a control event with the current time.
    pub fn control(event: ControlEvent) -> Self {
        Self {
            namespace: Namespace::Control,
            timestamp: now_rfc3339(),
            payload: ServerPayload::Control(event),
        }
    }

    /// Wraps a recording event with the current time.
    pub fn recording(event: RecordingEvent) -> Self {
        Self {
            namespace: Namespace::Recording,
            timestamp: now_rfc3339(),
            payload: ServerPayload::Recording(event),
        }
    }

    /// Serializes the frame; the types here cannot fail to serialize.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("wire types always serialize")
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A participant's role in the room, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May start and stop recordings (unless the token says `recording: false`).
    Moderator,
    /// A signed-in participant.
    #[default]
    User,
    /// A participant without an account.
    Guest,
}

/// How a participant takes part, as OpenTalk reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipationKind {
    /// Moderators and users.
    User,
    /// Guests.
    Guest,
}

impl From<Role> for ParticipationKind {
    fn from(role: Role) -> Self {
        match role {
            Role::Guest => Self::Guest,
            Role::Moderator | Role::User => Self::User,
        }
    }
}

/// A participant as every other participant sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// The participant id: unique per connection, not the token's `sub`.
    pub id: String,
    /// Presence data.
    pub control: ParticipantControl,
    /// Recording-module data.
    pub recording: ParticipantRecording,
}

/// The `control` part of a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantControl {
    /// The name shown to others.
    pub display_name: String,
    /// The participant's role.
    pub role: Role,
    /// When the participant joined, RFC 3339 UTC.
    pub joined_at: String,
    /// `user` or `guest`.
    pub participation_kind: ParticipationKind,
}

/// The `recording` part of a participant (seed 002's `consents_recording`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecording {
    /// Whether this participant consents to being recorded; `false` by default.
    pub consents_recording: bool,
}

/// Events of the `control` namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum ControlEvent {
    /// The answer to `join`, to the joiner only.
    JoinSuccess {
        /// The joiner's participant id.
        id: String,
        /// The joiner's display name.
        display_name: String,
        /// The joiner's role.
        role: Role,
        /// Everyone else in the room.
        participants: Vec<Participant>,
        /// The room's recording, `null` when none is active.
        recording: Option<RecordingData>,
        /// Large rooms only: how many are in the room, the joiner included
        /// (`participants` then lists only the moderators, unless the joiner
        /// is one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant_count: Option<u32>,
    },
    /// Someone joined (to everyone else).
    Joined(Participant),
    /// Someone left or their socket dropped.
    Left {
        /// The participant id of who left.
        id: String,
    },
    /// A participant's data changed (e.g. consent).
    Update(Participant),
    /// Large rooms: how many are in the room and how many of them consent,
    /// at most once a second, in place of other participants' `joined`,
    /// `left` and `update` (moderators still get those).
    ParticipantCount {
        /// Participants in the room.
        count: u32,
        /// Those of them whose consent is given.
        consenting: u32,
    },
    /// A protocol error, to the sender only.
    Error {
        /// What went wrong.
        error: ControlError,
        /// A human-readable explanation, where there is more to say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// Error values of the `control` namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlError {
    /// The frame was not a JSON envelope.
    InvalidJson,
    /// The namespace is not one onair knows.
    InvalidNamespace,
    /// A command came before `join`.
    NotYetJoined,
    /// `join` came twice.
    AlreadyJoined,
    /// The `display_name` of `join` (or the token's `name`, or `sub`, that
    /// stands in for it) is too long or holds control or bidirectional
    /// formatting characters; `detail` says which.
    InvalidDisplayName,
    /// The payload does not fit its action (`detail` names it).
    InvalidPayload,
    /// The connection sent more messages per second than allowed.
    RateLimited,
    /// The cluster's Redis is unreachable: events from other nodes may be
    /// missed until this node reconnects (`[cluster]` deployments only).
    ClusterUnavailable,
}

/// The recording state in `join_success` (seed 002).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordingData {
    /// The backend is starting.
    Initializing {
        /// onair's id for the recording being started (an extension of seed 002).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording_id: Option<String>,
    },
    /// The backend records.
    Recording {
        /// The recording id.
        recording_id: String,
    },
}

/// A recording status, as the `status` extension event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// The backend is starting.
    Initializing,
    /// The backend records.
    Recording,
    /// The backend is finishing.
    Stopping,
    /// The backend failed; a new `start` works.
    Failed,
    /// Nothing is recording.
    Inactive,
}

/// Events of the `recording` namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum RecordingEvent {
    /// A recording started (to everyone).
    Started {
        /// The recording id.
        recording_id: String,
    },
    /// A recording stopped (to everyone).
    Stopped {
        /// The recording id.
        recording_id: String,
    },
    /// A refused command, to the sender only.
    Error {
        /// What went wrong.
        error: RecordingError,
        /// A human-readable explanation, where there is more to say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Extension: every state transition, LiveKit room-metadata style.
    Status {
        /// The new status.
        status: RecordingStatus,
        /// The recording concerned, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording_id: Option<String>,
        /// The backend (`manual`, `livekit`, `nextcloud`, `jaas`).
        provider: String,
        /// Why, for `failed` and for a timeout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Extension: a recording's file exists.
    RecordingAvailable {
        /// The recording id.
        recording_id: String,
        /// The file name.
        name: String,
        /// Length in seconds.
        duration_s: f64,
        /// Size of the file.
        size_bytes: u64,
        /// Where to fetch it.
        url: String,
    },
    /// Extension: a recording was deleted.
    RecordingDeleted {
        /// The recording id.
        recording_id: String,
    },
}

/// Error values of the `recording` namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingError {
    /// Only moderators whose token allows recording may start or stop.
    InsufficientPermissions,
    /// A recording is already active in this room.
    AlreadyRecording,
    /// `stop` named a recording that is not the active one.
    InvalidRecordingId,
    /// The backend did not confirm the start in time; a new `start` works.
    RecorderTimeout,
    /// Recording is switched off on this deployment.
    RecordingDisabled,
    /// The backend could not be reached.
    BackendUnavailable,
    /// The backend takes no commands from onair (8x8 JaaS).
    NotSupported,
    /// The payload does not fit its action (`detail` names it).
    InvalidPayload,
}

impl ControlError {
    /// The wire name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidNamespace => "invalid_namespace",
            Self::NotYetJoined => "not_yet_joined",
            Self::AlreadyJoined => "already_joined",
            Self::InvalidDisplayName => "invalid_display_name",
            Self::InvalidPayload => "invalid_payload",
            Self::RateLimited => "rate_limited",
            Self::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

/// Longest display name accepted, in characters.
pub const MAX_DISPLAY_NAME: usize = 100;

/// Why a display name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    /// More than [`MAX_DISPLAY_NAME`] characters.
    #[error("is longer than {MAX_DISPLAY_NAME} characters")]
    TooLong,
    /// A control character (C0, DEL, C1): line breaks, escapes, NUL.
    #[error("contains a control character")]
    Control,
    /// A character that reorders the text around it, so a name can make the
    /// names or words next to it read differently (a "Trojan Source" name).
    #[error(
        "contains a bidirectional formatting character (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C)"
    )]
    Bidi,
}

/// Whether `c` is a bidirectional formatting character: the embeddings and
/// overrides U+202A–U+202E, the isolates U+2066–U+2069, and the marks
/// U+200E, U+200F and U+061C.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Checks a display name as others will see it: `join`'s `display_name`, a
/// token's `name` claim, the development token endpoint's `name`.
pub fn check_display_name(name: &str) -> Result<(), DisplayNameError> {
    if name.chars().any(char::is_control) {
        return Err(DisplayNameError::Control);
    }
    if name.chars().any(is_bidi_control) {
        return Err(DisplayNameError::Bidi);
    }
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(DisplayNameError::TooLong);
    }
    Ok(())
}

/// Longest error text sent back for something a client sent, in characters.
pub const MAX_DETAIL_CHARS: usize = 200;

/// How many characters of a quoted piece of input an error text keeps.
const QUOTED_CHARS: usize = 16;

/// An error text that may quote the input (serde's `invalid type: string
/// "…"`, `unknown variant `…``, multer's field names) made fit to send back:
/// every quoted run (`"…"` or `` `…` ``) keeps its first few characters, and
/// the whole at most [`MAX_DETAIL_CHARS`]. It still says what was wrong, but
/// a client never gets its own 64 KiB frame back.
pub fn short_detail(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL_CHARS * 2));
    let mut written = 0;
    // The quote character of the run we are in, how much of it was seen,
    // and whether the last character was a backslash inside `"…"`.
    let mut quote: Option<char> = None;
    let mut seen = 0;
    let mut escaped = false;
    for c in text.chars() {
        if written >= MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        let keep = match quote {
            None => {
                if c == '"' || c == '`' {
                    (quote, seen, escaped) = (Some(c), 0, false);
                }
                true
            }
            Some(q) if c == q && !escaped => {
                if seen > QUOTED_CHARS {
                    out.push('…');
                    written += 1;
                }
                quote = None;
                true
            }
            Some(q) => {
                escaped = q == '"' && c == '\\' && !escaped;
                seen += 1;
                seen <= QUOTED_CHARS
            }
        };
        if keep {
            out.push(c);
            written += 1;
        }
    }
    if quote.is_some() && seen > QUOTED_CHARS && !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// What a client frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A well-formed command.
    Command(ClientMessage),
    /// Not a JSON envelope at all.
    InvalidJson(String),
    /// A namespace onair does not know.
    InvalidNamespace(String),
    /// A known namespace whose payload does not fit any action.
    InvalidPayload {
        /// The namespace the error is reported in.
        namespace: Namespace,
        /// What serde said, naming the action and field.
        detail: String,
    },
}

/// Parses one text frame from a client. Never panics, whatever the input.
pub fn parse_client_frame(text: &str) -> Parsed {
    let raw: RawClientFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Parsed::InvalidJson(short_detail(&e.to_string())),
    };
    let Some(namespace) = Namespace::from_wire(&raw.namespace) else {
        return Parsed::InvalidNamespace(raw.namespace.chars().take(64).collect());
    };
    let payload = raw.payload.get();
    let result = match namespace {
        Namespace::Control => {
            serde_json::from_str::<ControlCommand>(payload).map(ClientMessage::Control)
        }
        Namespace::Recording => {
            serde_json::from_str::<RecordingCommand>(payload).map(ClientMessage::Recording)
        }
    };
    match result {
        Ok(message) => Parsed::Command(message),
        Err(e) => Parsed::InvalidPayload {
            namespace,
            detail: short_detail(&e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip_client(value: serde_json::Value, expected: ClientMessage) {
        let parsed = parse_client_frame(&value.to_string());
        assert_eq!(parsed, Parsed::Command(expected.clone()));
        assert_eq!(serde_json::to_value(&expected).unwrap(), value);
    }

    #[test]
    fn client_commands_round_trip() {
        roundtrip_client(
            json!({"namespace":"control","payload":{"action":"join","display_name":"Ada"}}),
            ClientMessage::Control(ControlCommand::Join {
                display_name: Some("Ada".into()),
            }),
        );
        roundtrip_client(
            json!({"namespace":"recording","payload":{"action":"start"}}),
            ClientMessage::Recording(RecordingCommand::Start { audio_only: false }),
        );
        roundtrip_client(
            json!({"namespace":"recording","payload":{"action":"stop","recording_id":"x"}}),
            ClientMessage::Recording(RecordingCommand::Stop {
                recording_id: "x".into(),
            }),
        );
        roundtrip_client(
            json!({"namespace":"recording","payload":{"action":"set_consent","consent":true}}),
            ClientMessage::Recording(RecordingCommand::SetConsent { consent: true }),
        );
    }

    #[test]
    fn an_escaped_namespace_is_read_like_any_other() {
        let frame = r#"{"namespace":"contro\u006c","payload":{"action":"join"}}"#;
        assert!(matches!(
            parse_client_frame(frame),
            Parsed::Command(ClientMessage::Control(ControlCommand::Join { .. }))
        ));
    }

    #[test]
    fn bad_frames_are_classified() {
        assert!(matches!(parse_client_frame("{"), Parsed::InvalidJson(_)));
        assert!(matches!(parse_client_frame("[]"), Parsed::InvalidJson(_)));
        assert!(matches!(
            parse_client_frame(r#"{"namespace":"chat","payload":{}}"#),
            Parsed::InvalidNamespace(ns) if ns == "chat"
        ));
        match parse_client_frame(r#"{"namespace":"recording","payload":{"action":"stop"}}"#) {
            Parsed::InvalidPayload { namespace, detail } => {
                assert_eq!(namespace, Namespace::Recording);
                assert!(detail.contains("recording_id"), "{detail}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_client_frame(r#"{"namespace":"recording","payload":{"action":"dance"}}"#),
            Parsed::InvalidPayload { .. }
        ));
    }

    #[test]
    fn error_details_do_not_echo_the_input() {
        let big = format!("\"{}\"", "A".repeat(65_000));
        let Parsed::InvalidJson(detail) = parse_client_frame(&big) else {
            panic!("a bare string is no envelope");
        };
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS + 1, "{detail}");
        assert!(!detail.contains(&"A".repeat(QUOTED_CHARS + 1)), "{detail}");
        assert!(detail.starts_with("invalid type: string"), "{detail}");

        let variant = format!(
            r#"{{"namespace":"recording","payload":{{"action":"{}"}}}}"#,
            "dance".repeat(10_000)
        );
        let Parsed::InvalidPayload { detail, .. } = parse_client_frame(&variant) else {
            panic!("an unknown action is an invalid payload");
        };
        assert!(detail.contains("unknown variant `dancedance"), "{detail}");
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS + 1, "{detail}");
        assert!(!detail.contains(&"dance".repeat(4)), "{detail}");

        // Short quotes (the expected values) stay whole; escapes do not end a quote.
        assert_eq!(
            short_detail("unknown variant `x`, expected one of `start`, `stop`"),
            "unknown variant `x`, expected one of `start`, `stop`"
        );
        assert_eq!(
            short_detail(r#"invalid type: string "a\"bcdefghijklmnopqrstuvwxyz", expected x"#),
            r#"invalid type: string "a\"bcdefghijklmn…", expected x"#
        );
        // A quote that never closes is still cut.
        assert_eq!(
            short_detail("oops `0123456789abcdefXYZ"),
            "oops `0123456789abcdef…"
        );
    }

    #[test]
    fn display_names_without_control_or_bidi_characters_pass() {
        assert_eq!(check_display_name("Ada Lovelace"), Ok(()));
        assert_eq!(check_display_name("Zoë 李 محمد"), Ok(()));
        assert_eq!(check_display_name(&"x".repeat(MAX_DISPLAY_NAME)), Ok(()));
        assert_eq!(
            check_display_name(&"x".repeat(MAX_DISPLAY_NAME + 1)),
            Err(DisplayNameError::TooLong)
        );
        for bad in ["a\nb", "a\u{0}", "a\u{1b}[31m", "a\u{7f}", "a\u{85}"] {
            assert_eq!(
                check_display_name(bad),
                Err(DisplayNameError::Control),
                "{bad:?}"
            );
        }
        for bad in [
            "\u{202E}gpj.exe",
            "a\u{202A}",
            "a\u{2066}b\u{2069}",
            "a\u{200E}",
            "a\u{200F}",
            "a\u{061C}",
        ] {
            assert_eq!(
                check_display_name(bad),
                Err(DisplayNameError::Bidi),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn server_events_serialize_like_seed_002() {
        let started = serde_json::to_value(RecordingEvent::Started {
            recording_id: "00000000-0000-0000-0000-000000000000".into(),
        })
        .unwrap();
        assert_eq!(
            started,
            json!({"message":"started","recording_id":"00000000-0000-0000-0000-000000000000"})
        );
        let error = serde_json::to_value(RecordingEvent::Error {
            error: RecordingError::InsufficientPermissions,
            detail: None,
        })
        .unwrap();
        assert_eq!(
            error,
            json!({"message":"error","error":"insufficient_permissions"})
        );
        let data = serde_json::to_value(RecordingData::Recording {
            recording_id: "r".into(),
        })
        .unwrap();
        assert_eq!(data, json!({"status":"recording","recording_id":"r"}));
    }

    #[test]
    fn server_frames_round_trip() {
        let participant = Participant {
            id: "p".into(),
            control: ParticipantControl {
                display_name: "Ada".into(),
                role: Role::Guest,
                joined_at: now_rfc3339(),
                participation_kind: ParticipationKind::Guest,
            },
            recording: ParticipantRecording {
                consents_recording: true,
            },
        };
        for frame in [
            ServerFrame::control(ControlEvent::Joined(participant.clone())),
            ServerFrame::control(ControlEvent::Left { id: "p".into() }),
            ServerFrame::recording(RecordingEvent::Status {
                status: RecordingStatus::Failed,
                recording_id: Some("r".into()),
                provider: "manual".into(),
                reason: Some("disk full".into()),
            }),
        ] {
            let text = frame.to_json();
            let back: ServerFrame = serde_json::from_str(&text).unwrap();
            assert_eq!(back, frame);
        }
    }
}
