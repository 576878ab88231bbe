//! The wire contract has three copies: the serde types in `src/protocol.rs`,
//! the JSON Schemas in `protocol/schemas/` and the examples in
//! `protocol/examples/`. These tests keep them from drifting apart: every
//! example is valid against its own schema and the umbrella schema, and
//! round-trips through the Rust types unchanged; every schema has an example;
//! the schemas' enums list exactly the Rust enums' values; and frames the
//! schemas must refuse are refused.

#[path = "support/schemas.rs"]
mod schemas;

use std::collections::BTreeSet;

use onair::protocol::*;
use serde_json::{Value, json};

/// One example file.
struct Example {
    /// File name, e.g. `server.recording.status.2.json`.
    file: String,
    /// The schema it illustrates, e.g. `server.recording.status.json`.
    schema: String,
    /// The file's text, as a client or server would send it.
    text: String,
    /// The parsed JSON.
    value: Value,
}

/// `server.recording.status.2.json` → `server.recording.status.json`.
fn schema_of(example_file: &str) -> String {
    let stem = example_file.strip_suffix(".json").unwrap_or(example_file);
    let stem = match stem.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    };
    format!("{stem}.json")
}

fn examples() -> Vec<Example> {
    let dir = schemas::example_dir();
    let values = schemas::read_json_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(!values.is_empty(), "no examples in {}", dir.display());
    values
        .into_iter()
        .map(|(file, value)| {
            let path = dir.join(&file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Example {
                schema: schema_of(&file),
                file,
                text,
                value,
            }
        })
        .collect()
}

/// Collects failures so that one run reports every broken file, not just the first.
fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn example_file_names_map_to_schema_names() {
    assert_eq!(
        schema_of("server.recording.status.json"),
        "server.recording.status.json"
    );
    assert_eq!(
        schema_of("server.recording.status.12.json"),
        "server.recording.status.json"
    );
    assert_eq!(
        schema_of("client.recording.set_consent.2.json"),
        "client.recording.set_consent.json"
    );
}

#[test]
fn every_example_is_valid_against_its_schema_and_the_umbrella() {
    let mut failures = Vec::new();
    for example in examples() {
        if let Err(e) = schemas::validate_with(&example.schema, &example.value) {
            failures.push(format!("{}: {e}", example.file));
        }
        let umbrella = if example.file.starts_with("client.") {
            schemas::validate_client_frame(&example.value)
        } else if example.file.starts_with("server.") {
            schemas::validate_server_frame(&example.value)
        } else {
            Err("name starts with neither `client.` nor `server.`".to_owned())
        };
        if let Err(e) = umbrella {
            failures.push(format!("{} (umbrella): {e}", example.file));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn client_examples_round_trip_through_the_rust_types() {
    let mut failures = Vec::new();
    for example in examples()
        .into_iter()
        .filter(|e| e.file.starts_with("client."))
    {
        match parse_client_frame(&example.text) {
            Parsed::Command(message) => {
                let back = serde_json::to_value(&message).expect("wire types serialize");
                if back != example.value {
                    failures.push(format!(
                        "{}: re-serialized differently\n  file: {}\n  rust: {back}",
                        example.file, example.value
                    ));
                }
            }
            other => failures.push(format!("{}: parsed as {other:?}", example.file)),
        }
    }
    assert_no_failures(failures);
}

#[test]
fn server_examples_round_trip_through_the_rust_types() {
    let mut failures = Vec::new();
    for example in examples()
        .into_iter()
        .filter(|e| e.file.starts_with("server."))
    {
        match serde_json::from_str::<ServerFrame>(&example.text) {
            Ok(frame) => {
                let back = serde_json::to_value(&frame).expect("wire types serialize");
                if back != example.value {
                    failures.push(format!(
                        "{}: re-serialized differently\n  file: {}\n  rust: {back}",
                        example.file, example.value
                    ));
                }
                // What the server actually writes is `to_json`; it must agree.
                let text: Value = serde_json::from_str(&frame.to_json()).expect("valid JSON");
                if text != example.value {
                    failures.push(format!("{}: to_json differs: {text}", example.file));
                }
            }
            Err(e) => failures.push(format!("{}: does not deserialize: {e}", example.file)),
        }
    }
    assert_no_failures(failures);
}

#[test]
fn every_schema_has_an_example_and_every_example_a_schema() {
    let message_schemas: BTreeSet<String> = schemas::schema_files()
        .into_iter()
        .filter(|f| !schemas::NON_MESSAGE_SCHEMAS.contains(f))
        .map(str::to_owned)
        .collect();
    let illustrated: BTreeSet<String> = examples().into_iter().map(|e| e.schema).collect();
    let without_example: Vec<_> = message_schemas.difference(&illustrated).collect();
    let without_schema: Vec<_> = illustrated.difference(&message_schemas).collect();
    assert!(
        without_example.is_empty(),
        "schemas without an example: {without_example:?}"
    );
    assert!(
        without_schema.is_empty(),
        "examples without a schema: {without_schema:?}"
    );
    for shared in schemas::NON_MESSAGE_SCHEMAS {
        assert!(
            schemas::schema_files().contains(&shared),
            "missing protocol/schemas/{shared}"
        );
    }
}

#[test]
fn umbrella_schemas_list_every_message_schema() {
    let documents = schemas::read_json_dir(&schemas::schema_dir()).unwrap();
    for side in ["client", "server"] {
        let listed: BTreeSet<&str> = documents[&format!("{side}.json")]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{side}.json has no oneOf"))
            .iter()
            .filter_map(|entry| entry["$ref"].as_str())
            .collect();
        let files: BTreeSet<&str> = documents
            .keys()
            .map(String::as_str)
            .filter(|f| f.starts_with(&format!("{side}.")) && *f != format!("{side}.json"))
            .collect();
        assert_eq!(
            listed, files,
            "{side}.json oneOf vs the {side}.*.json files"
        );
    }
}

/// The values a string enum of `common.json` lists.
fn schema_enum(definition: &str) -> BTreeSet<String> {
    let documents = schemas::read_json_dir(&schemas::schema_dir()).unwrap();
    documents["common.json"]["$defs"][definition]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("common.json#/$defs/{definition} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_owned())
        .collect()
}

/// The wire names of a list of Rust enum values.
fn wire_names<T: serde::Serialize>(values: &[T]) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| match serde_json::to_value(v) {
            Ok(Value::String(s)) => s,
            other => panic!("not a string enum: {other:?}"),
        })
        .collect()
}

/// Every value of each Rust enum. The `match`es do not compile when a variant
/// is added, which points here; the arrays must then list it too.
fn all_control_errors() -> [ControlError; 8] {
    use ControlError::*;
    let _exhaustive = |e: ControlError| match e {
        InvalidJson | InvalidNamespace | NotYetJoined | AlreadyJoined | InvalidDisplayName
        | InvalidPayload | RateLimited | ClusterUnavailable => (),
    };
    [
        InvalidJson,
        InvalidNamespace,
        NotYetJoined,
        AlreadyJoined,
        InvalidDisplayName,
        InvalidPayload,
        RateLimited,
        ClusterUnavailable,
    ]
}

fn all_recording_errors() -> [RecordingError; 8] {
    use RecordingError::*;
    let _exhaustive = |e: RecordingError| match e {
        InsufficientPermissions
        | AlreadyRecording
        | InvalidRecordingId
        | RecorderTimeout
        | RecordingDisabled
        | BackendUnavailable
        | NotSupported
        | InvalidPayload => (),
    };
    [
        InsufficientPermissions,
        AlreadyRecording,
        InvalidRecordingId,
        RecorderTimeout,
        RecordingDisabled,
        BackendUnavailable,
        NotSupported,
        InvalidPayload,
    ]
}

fn all_recording_statuses() -> [RecordingStatus; 5] {
    use RecordingStatus::*;
    let _exhaustive = |s: RecordingStatus| match s {
        Initializing | Recording | Stopping | Failed | Inactive => (),
    };
    [Initializing, Recording, Stopping, Failed, Inactive]
}

fn all_roles() -> [Role; 3] {
    let _exhaustive = |r: Role| match r {
        Role::Moderator | Role::User | Role::Guest => (),
    };
    [Role::Moderator, Role::User, Role::Guest]
}

#[test]
fn schema_enums_list_exactly_the_rust_enum_values() {
    assert_eq!(
        schema_enum("ControlError"),
        wire_names(&all_control_errors())
    );
    assert_eq!(
        schema_enum("RecordingError"),
        wire_names(&all_recording_errors())
    );
    assert_eq!(
        schema_enum("RecordingStatus"),
        wire_names(&all_recording_statuses())
    );
    assert_eq!(schema_enum("Role"), wire_names(&all_roles()));
    assert_eq!(
        schema_enum("ParticipationKind"),
        wire_names(&[ParticipationKind::User, ParticipationKind::Guest])
    );
}

fn participant(role: Role) -> Participant {
    Participant {
        id: "5f0c6a0e-2b4d-4d1e-9a53-8c1f7e2d4b10".into(),
        control: ParticipantControl {
            display_name: "Ada Lovelace".into(),
            role,
            joined_at: now_rfc3339(),
            participation_kind: role.into(),
        },
        recording: ParticipantRecording {
            consents_recording: false,
        },
    }
}

/// Frames built the way the server builds them (constructors, `now_rfc3339`)
/// are valid: the timestamp format and every enum value included.
#[test]
fn frames_built_by_the_rust_types_are_valid() {
    const ID: &str = "c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57";
    let mut frames = vec![
        ServerFrame::control(ControlEvent::JoinSuccess {
            id: "0d9a4e7c-3b21-4f5a-a6c8-72e1b9d04f35".into(),
            display_name: "Linus".into(),
            role: Role::Guest,
            participants: all_roles().map(participant).to_vec(),
            recording: Some(RecordingData::Initializing { recording_id: None }),
            participant_count: None,
        }),
        ServerFrame::control(ControlEvent::JoinSuccess {
            id: "0d9a4e7c-3b21-4f5a-a6c8-72e1b9d04f35".into(),
            display_name: "Linus".into(),
            role: Role::User,
            participants: vec![participant(Role::Moderator)],
            recording: None,
            participant_count: Some(2_400),
        }),
        ServerFrame::control(ControlEvent::ParticipantCount {
            count: 2_400,
            consenting: 1_910,
        }),
        ServerFrame::control(ControlEvent::Joined(participant(Role::User))),
        ServerFrame::control(ControlEvent::Update(participant(Role::Moderator))),
        ServerFrame::control(ControlEvent::Left { id: ID.into() }),
        ServerFrame::recording(RecordingEvent::Started {
            recording_id: ID.into(),
        }),
        ServerFrame::recording(RecordingEvent::Stopped {
            recording_id: ID.into(),
        }),
        ServerFrame::recording(RecordingEvent::RecordingAvailable {
            recording_id: ID.into(),
            name: "standup.mp4".into(),
            duration_s: 1800.0,
            size_bytes: 0,
            url: format!("/v1/recordings/{ID}/media"),
        }),
        ServerFrame::recording(RecordingEvent::RecordingDeleted {
            recording_id: ID.into(),
        }),
    ];
    for error in all_control_errors() {
        frames.push(ServerFrame::control(ControlEvent::Error {
            error,
            detail: None,
        }));
    }
    for error in all_recording_errors() {
        frames.push(ServerFrame::recording(RecordingEvent::Error {
            error,
            detail: Some("why".into()),
        }));
    }
    for status in all_recording_statuses() {
        for provider in ["manual", "livekit", "nextcloud", "jaas"] {
            frames.push(ServerFrame::recording(RecordingEvent::Status {
                status,
                recording_id: Some(ID.into()),
                provider: provider.into(),
                reason: None,
            }));
        }
    }
    let mut failures = Vec::new();
    for frame in &frames {
        let value: Value = serde_json::from_str(&frame.to_json()).expect("valid JSON");
        if let Err(e) = schemas::validate_server_frame(&value) {
            failures.push(e);
        }
    }
    assert_no_failures(failures);
}

fn server_frame(namespace: &str, payload: Value) -> Value {
    json!({"namespace": namespace, "timestamp": "2025-06-03T14:05:02.640Z", "payload": payload})
}

const REC: &str = "c2f1e8d4-7a3b-4e9c-b5d2-6f0a1e8c3b57";

#[test]
fn schemas_refuse_server_frames_that_drifted() {
    let ada = json!({
        "id": "5f0c6a0e-2b4d-4d1e-9a53-8c1f7e2d4b10",
        "control": {"display_name": "Ada", "role": "moderator",
                    "joined_at": "2025-06-03T14:02:11.470Z", "participation_kind": "user"},
        "recording": {"consents_recording": false}
    });
    let mut wrong_kind = ada.clone();
    wrong_kind["control"]["participation_kind"] = json!("guest");
    let mut seed_consent_name = ada.clone();
    seed_consent_name["recording"] = json!({"recording_consent": true});
    let join_success = |recording: Value, participants: Value| {
        server_frame(
            "control",
            json!({"message": "join_success", "id": "p", "display_name": "Ada",
                   "role": "moderator", "participants": participants, "recording": recording}),
        )
    };

    let cases = [
        (
            "recording error with an unknown value",
            server_frame(
                "recording",
                json!({"message": "error", "error": "disk_on_fire"}),
            ),
        ),
        (
            "recording error value in the control namespace",
            server_frame(
                "control",
                json!({"message": "error", "error": "already_recording"}),
            ),
        ),
        (
            "control error value in the recording namespace",
            server_frame(
                "recording",
                json!({"message": "error", "error": "not_yet_joined"}),
            ),
        ),
        (
            "started without recording_id",
            server_frame("recording", json!({"message": "started"})),
        ),
        (
            "stopped with an empty recording_id",
            server_frame(
                "recording",
                json!({"message": "stopped", "recording_id": ""}),
            ),
        ),
        (
            "an extra field in a server payload",
            server_frame(
                "recording",
                json!({"message": "started", "recording_id": REC, "by": "p"}),
            ),
        ),
        (
            "an extra field in the server envelope",
            json!({"namespace": "recording", "timestamp": "2025-06-03T14:05:02.640Z",
                   "payload": {"message": "started", "recording_id": REC}, "seq": 1}),
        ),
        (
            "no timestamp",
            json!({"namespace": "recording", "payload": {"message": "started", "recording_id": REC}}),
        ),
        (
            "a timestamp that is not RFC 3339",
            json!({"namespace": "recording", "timestamp": "1749038702",
                   "payload": {"message": "started", "recording_id": REC}}),
        ),
        (
            "a timestamp that is not UTC",
            json!({"namespace": "recording", "timestamp": "2025-06-03T16:05:02.640+02:00",
                   "payload": {"message": "started", "recording_id": REC}}),
        ),
        (
            "an unknown message",
            server_frame(
                "recording",
                json!({"message": "paused", "recording_id": REC}),
            ),
        ),
        (
            "a recording message in the control namespace",
            server_frame(
                "control",
                json!({"message": "started", "recording_id": REC}),
            ),
        ),
        (
            "an unknown namespace",
            server_frame("chat", json!({"message": "left", "id": "p"})),
        ),
        (
            "status with an unknown status",
            server_frame(
                "recording",
                json!({"message": "status", "status": "paused", "provider": "manual"}),
            ),
        ),
        (
            "status with an unknown provider",
            server_frame(
                "recording",
                json!({"message": "status", "status": "inactive", "provider": "zoom"}),
            ),
        ),
        (
            "status recording without recording_id",
            server_frame(
                "recording",
                json!({"message": "status", "status": "recording", "provider": "manual"}),
            ),
        ),
        (
            "status without provider",
            server_frame(
                "recording",
                json!({"message": "status", "status": "inactive"}),
            ),
        ),
        (
            "recording_available with a negative size",
            server_frame(
                "recording",
                json!({"message": "recording_available", "recording_id": REC, "name": "a.mp4",
                       "duration_s": 1.5, "size_bytes": -1, "url": "https://example.com/a.mp4"}),
            ),
        ),
        (
            "recording_available with a duration as a string",
            server_frame(
                "recording",
                json!({"message": "recording_available", "recording_id": REC, "name": "a.mp4",
                       "duration_s": "1.5", "size_bytes": 1, "url": "https://example.com/a.mp4"}),
            ),
        ),
        (
            "join_success recording without recording_id",
            join_success(json!({"status": "recording"}), json!([])),
        ),
        (
            "join_success recording with status stopping",
            join_success(
                json!({"status": "stopping", "recording_id": REC}),
                json!([]),
            ),
        ),
        (
            "join_success without recording (it must be null, not absent)",
            server_frame(
                "control",
                json!({"message": "join_success", "id": "p", "display_name": "Ada",
                       "role": "moderator", "participants": []}),
            ),
        ),
        (
            "join_success with an unknown role",
            server_frame(
                "control",
                json!({"message": "join_success", "id": "p", "display_name": "Ada",
                       "role": "owner", "participants": [], "recording": null}),
            ),
        ),
        (
            "a participant whose participation_kind contradicts its role",
            join_success(Value::Null, json!([wrong_kind])),
        ),
        (
            "a participant with seed 002's join_success field name recording_consent",
            join_success(Value::Null, json!([seed_consent_name])),
        ),
        (
            "joined without the recording part",
            server_frame(
                "control",
                json!({"message": "joined", "id": ada["id"], "control": ada["control"]}),
            ),
        ),
        (
            "update with a participant nested instead of flattened",
            server_frame("control", json!({"message": "update", "participant": ada})),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, frame) in &cases {
        if schemas::validate_server_frame(frame).is_ok() {
            accepted.push(format!("{what}: {frame}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "server.json accepted frames it must refuse:\n{}",
        accepted.join("\n")
    );

    // The message-specific schemas refuse them too, not only the umbrella.
    let unknown_error = &cases[0].1;
    let error = schemas::validate_with("server.recording.error.json", unknown_error).unwrap_err();
    assert!(error.contains("disk_on_fire"), "{error}");
    let no_id = &cases[3].1;
    let error = schemas::validate_with("server.recording.started.json", no_id).unwrap_err();
    assert!(error.contains("recording_id"), "{error}");
    // And the umbrella's report names the message's own schema and the field.
    let error = schemas::validate_server_frame(no_id).unwrap_err();
    assert!(error.contains("server.recording.started.json"), "{error}");
    assert!(error.contains("recording_id"), "{error}");
}

#[test]
fn schemas_refuse_malformed_client_frames() {
    let cases = [
        ("no namespace", json!({"payload": {"action": "join"}})),
        ("no payload", json!({"namespace": "control"})),
        (
            "an unknown namespace",
            json!({"namespace": "chat", "payload": {"action": "send"}}),
        ),
        (
            "an unknown action",
            json!({"namespace": "recording", "payload": {"action": "pause"}}),
        ),
        (
            "a recording action in the control namespace",
            json!({"namespace": "control", "payload": {"action": "start"}}),
        ),
        (
            "stop without recording_id",
            json!({"namespace": "recording", "payload": {"action": "stop"}}),
        ),
        (
            "set_consent without consent",
            json!({"namespace": "recording", "payload": {"action": "set_consent"}}),
        ),
        (
            "set_consent with a string",
            json!({"namespace": "recording", "payload": {"action": "set_consent", "consent": "yes"}}),
        ),
        (
            "start with audio_only as a string",
            json!({"namespace": "recording", "payload": {"action": "start", "audio_only": "true"}}),
        ),
        (
            "join with a numeric display_name",
            json!({"namespace": "control", "payload": {"action": "join", "display_name": 42}}),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, frame) in &cases {
        if schemas::validate_client_frame(frame).is_ok() {
            accepted.push(format!("{what}: {frame}"));
        }
        // The server refuses them as well, one way or another.
        if let Parsed::Command(m) = parse_client_frame(&frame.to_string()) {
            accepted.push(format!("{what}: parse_client_frame accepted it as {m:?}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "client frames that must be refused were accepted:\n{}",
        accepted.join("\n")
    );
}

/// Clients may add fields (newer clients, OpenTalk clients): the schemas and
/// the server both accept them and ignore them.
#[test]
fn client_frames_may_carry_extra_fields() {
    let frames = [
        json!({"namespace": "control", "payload": {"action": "join", "display_name": "Ada", "avatar_url": "https://example.com/a.png"}}),
        json!({"namespace": "recording", "payload": {"action": "start", "layout": "grid"}}),
        json!({"namespace": "recording", "payload": {"action": "set_consent", "consent": true, "reason": "ok"}}),
        json!({"namespace": "recording", "payload": {"action": "stop", "recording_id": REC}, "request_id": 7}),
    ];
    for frame in &frames {
        schemas::validate_client_frame(frame).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(parse_client_frame(&frame.to_string()), Parsed::Command(_)),
            "parse_client_frame refused {frame}"
        );
    }
}

#[test]
fn the_catalog_example_matches_its_schema() {
    let path = schemas::schema_dir().join("../rest/recording.example.json");
    let example: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    schemas::validate_rest_recording(&example).unwrap();
    // The schema is strict: a field the API starts showing is added there first.
    let mut drifted = example.clone();
    drifted["surprise"] = json!(1);
    assert!(schemas::validate_rest_recording(&drifted).is_err());
}
