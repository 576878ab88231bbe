//! Just enough of the wire protocol for bots: building client frames, and
//! reading the few fields a bot needs out of server frames without a full
//! JSON parse (the bots share the CPU with the server they measure, so every
//! microsecond they spend per frame is one the server does not get).
//!
//! Two dialects: `onair` (also spoken by the node-ws baseline) and `floor`,
//! where the hub relays frames unchanged, so a bot sends frames that look like
//! (and are as large as) the server frames onair would send, and the hub's
//! echo plays the server's part.

use std::fmt::Write;

/// What a server frame is, by its `payload.message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    JoinSuccess,
    Joined,
    Left,
    Update,
    Started,
    Stopped,
    Status,
    Error,
    Other,
}

/// Classifies a server frame by the first `"message":"…"` in it.
pub fn classify(frame: &str) -> Event {
    match string_field(frame, "message") {
        Some("join_success") => Event::JoinSuccess,
        Some("joined") => Event::Joined,
        Some("left") => Event::Left,
        Some("update") => Event::Update,
        Some("started") => Event::Started,
        Some("stopped") => Event::Stopped,
        Some("status") => Event::Status,
        Some("error") => Event::Error,
        _ => Event::Other,
    }
}

/// The value of the first `"key":"value"` in `frame` (values here never hold escapes).
pub fn string_field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let bytes = frame.as_bytes();
    let mut from = 0;
    while let Some(at) = frame[from..].find(key) {
        let start = from + at;
        let end = start + key.len();
        from = end;
        if start == 0 || bytes[start - 1] != b'"' || !frame[end..].starts_with("\":\"") {
            continue;
        }
        let value = &frame[end + 3..];
        return value.find('"').map(|q| &value[..q]);
    }
    None
}

/// The value of the first `"key":true|false` in `frame`.
pub fn bool_field(frame: &str, key: &str) -> Option<bool> {
    let at = frame.find(&format!("\"{key}\":"))?;
    let rest = &frame[at + key.len() + 3..];
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

/// `control/join`.
pub fn join() -> String {
    r#"{"namespace":"control","payload":{"action":"join"}}"#.to_owned()
}

/// `recording/start`.
pub fn start() -> String {
    r#"{"namespace":"recording","payload":{"action":"start"}}"#.to_owned()
}

/// `recording/stop`.
pub fn stop(recording_id: &str) -> String {
    format!(
        r#"{{"namespace":"recording","payload":{{"action":"stop","recording_id":"{recording_id}"}}}}"#
    )
}

/// `recording/set_consent`.
pub fn set_consent(consent: bool) -> String {
    format!(
        r#"{{"namespace":"recording","payload":{{"action":"set_consent","consent":{consent}}}}}"#
    )
}

/// A fixed timestamp: the floor's frames only need onair's shape and size.
const TIMESTAMP: &str = "2025-06-03T14:02:11.483Z";

/// Floor dialect: the Participant frame (`joined` or `update`) a bot relays about itself.
pub fn floor_participant(message: &str, id: &str, name: &str, consent: bool) -> String {
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        r#"{{"namespace":"control","timestamp":"{TIMESTAMP}","payload":{{"message":"{message}","id":"{id}","control":{{"display_name":"{name}","role":"user","joined_at":"{TIMESTAMP}","participation_kind":"user"}},"recording":{{"consents_recording":{consent}}}}}}}"#
    );
    s
}

/// Floor dialect: `started`/`stopped` as onair sends them.
pub fn floor_announce(message: &str, recording_id: &str) -> String {
    format!(
        r#"{{"namespace":"recording","timestamp":"{TIMESTAMP}","payload":{{"message":"{message}","recording_id":"{recording_id}"}}}}"#
    )
}

/// Floor dialect: `status` as onair's manual backend sends it.
pub fn floor_status(status: &str, recording_id: &str) -> String {
    format!(
        r#"{{"namespace":"recording","timestamp":"{TIMESTAMP}","payload":{{"message":"status","status":"{status}","recording_id":"{recording_id}","provider":"manual"}}}}"#
    )
}

/// A random UUID-shaped id (the floor's stand-in for server-assigned ids).
pub fn random_id(seed: u64) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_server_frames() {
        let frame = r#"{"namespace":"control","timestamp":"t","payload":{"message":"update","id":"abc","control":{"display_name":"x"},"recording":{"consents_recording":true}}}"#;
        assert_eq!(classify(frame), Event::Update);
        assert_eq!(string_field(frame, "id"), Some("abc"));
        assert_eq!(bool_field(frame, "consents_recording"), Some(true));
        let started = floor_announce("started", "r1");
        assert_eq!(classify(&started), Event::Started);
        assert_eq!(string_field(&started, "recording_id"), Some("r1"));
        // A key that is only a suffix of another key does not match.
        assert_eq!(
            string_field(r#"{"xid":"no","id":"yes"}"#, "id"),
            Some("yes")
        );
        let joined = floor_participant("joined", "me", "bot", false);
        assert_eq!(classify(&joined), Event::Joined);
        assert_eq!(string_field(&joined, "id"), Some("me"));
        assert!(serde_json::from_str::<serde_json::Value>(&joined).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&floor_status("recording", "r")).is_ok());
        assert_eq!(random_id(1).len(), 36);
    }
}
