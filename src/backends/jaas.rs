//! The 8x8 JaaS bridge. JaaS takes no commands: a moderator whose JaaS token
//! allows it records from the Jitsi client, and onair follows the recording
//! through 8x8's webhooks (`webhooks::jaas`). What lives here is what the
//! bridge needs between webhooks, and the rules that need no I/O:
//!
//! * **Recording ids.** JaaS has no notion of onair's id, so the id is derived
//!   from the JaaS meeting `sessionId`: a name-based UUID (version 8, SHA-256,
//!   as RFC 9562 appendix B.2 shows). Every event of a session, a late one or
//!   one after a restart, maps to the same id with nothing stored, and the id
//!   is a UUID like every other onair recording id. A second recording in the
//!   same meeting session (JaaS caps one at 6 h; a moderator may stop and start
//!   again) is catalogued under an id derived from the session *and* its
//!   `recordingSessionId` ([`upload_recording_id`]).
//! * **Order.** 8x8 does not deliver events in order; the payload `timestamp`
//!   is the truth ([`is_newer`]): a `RECORDING_STARTED` older than the
//!   session's last applied event is stale. The marks are in the store, so
//!   this holds across restarts; [`Jaas::turn`] handles one lifecycle event
//!   at a time, so a check and the mark it leads to cannot interleave.
//! * **Downloads.** The recording behind `preAuthenticatedLink` lives 24 h on
//!   8x8's storage. [`Jaas::download`] streams it to a file chunk by chunk,
//!   never holding it in memory; [`retry_delay`] spaces the attempts.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::JaasConfig;

/// How long 8x8 keeps a recording behind its `preAuthenticatedLink`.
pub const LINK_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The wait after the first failed download attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Each further wait is this many times the previous one.
pub const RETRY_FACTOR: u32 = 4;
/// No single wait is longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(2 * 3600);

/// The JaaS bridge.
pub struct Jaas {
    config: JaasConfig,
    http: reqwest::Client,
    /// Held while one lifecycle event is checked against its session's mark,
    /// applied, and its mark written (a tokio mutex: waiting must not block a thread).
    turn: tokio::sync::Mutex<()>,
    /// Catalog ids with a download in flight, so two uploads never write the same id.
    downloads: Mutex<HashSet<String>>,
    /// Whether the downloads left pending by an earlier run were picked up.
    resumed: AtomicBool,
}

/// Why one download attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 8x8's storage answered with an error status.
    #[error("the storage answered {0}")]
    Status(reqwest::StatusCode),
    /// The connection failed or timed out (the URL, a credential, is not in the text).
    #[error("transfer failed: {0}")]
    Transport(reqwest::Error),
    /// Writing the file failed.
    #[error("cannot write the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is larger than `[storage] max_upload_bytes`.
    #[error("the file is larger than the {0} bytes storage allows")]
    TooLarge(u64),
    /// The storage sent no bytes.
    #[error("the file is empty")]
    Empty,
}

impl DownloadError {
    /// Whether another attempt cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge(_))
    }
}

impl From<reqwest::Error> for DownloadError {
    fn from(e: reqwest::Error) -> Self {
        // The link is pre-authenticated: it must not reach the logs.
        Self::Transport(e.without_url())
    }
}

impl Jaas {
    /// A bridge for this configuration.
    pub fn new(config: &JaasConfig, http: reqwest::Client) -> Self {
        Self {
            config: config.clone(),
            http,
            turn: tokio::sync::Mutex::new(()),
            downloads: Mutex::new(HashSet::new()),
            resumed: AtomicBool::new(false),
        }
    }

    /// The secret 8x8 signs webhooks with.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.config.webhook_secret.as_deref()
    }

    /// Download attempts per recording (at least one).
    pub fn attempts(&self) -> u32 {
        self.config.download_attempts.max(1)
    }

    /// Waits for the turn to handle a lifecycle event; the turn lasts as
    /// long as the guard.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Claims a catalog id for a download; `false` if one is already in flight.
    pub fn claim(&self, recording_id: &str) -> bool {
        lock(&self.downloads).insert(recording_id.to_owned())
    }

    /// Whether a download for this id is in flight.
    pub fn claimed(&self, recording_id: &str) -> bool {
        lock(&self.downloads).contains(recording_id)
    }

    /// Releases a claim once its download is catalogued or given up.
    pub fn release(&self, recording_id: &str) {
        lock(&self.downloads).remove(recording_id);
    }

    /// `true` exactly once per process: the caller picks up pending downloads.
    pub fn first_resume(&self) -> bool {
        !self.resumed.swap(true, Ordering::AcqRel)
    }

    /// Streams the file behind `link` to `to` (created or truncated), chunk by
    /// chunk, refusing more than `max_bytes`. One attempt, bounded by
    /// `[jaas] download_timeout_s` from connecting to the last byte. Returns the size.
    pub async fn download(
        &self,
        link: &str,
        to: &Path,
        max_bytes: u64,
    ) -> Result<u64, DownloadError> {
        let mut response = self
            .http
            .get(link)
            // Overrides the client's short default: a recording can be gigabytes.
            .timeout(Duration::from_secs(self.config.download_timeout_s.max(1)))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(DownloadError::Status(response.status()));
        }
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(DownloadError::TooLarge(max_bytes));
        }
        let mut out = tokio::fs::File::create(to).await?;
        let mut size: u64 = 0;
        while let Some(chunk) = response.chunk().await? {
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(DownloadError::TooLarge(max_bytes));
            }
            out.write_all(&chunk).await?;
        }
        if size == 0 {
            return Err(DownloadError::Empty);
        }
        out.flush().await?;
        out.sync_all().await?;
        Ok(size)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data with no invariant a panic could break halfway.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a lifecycle event (`RECORDING_STARTED`/`RECORDING_ENDED`) made at
/// `timestamp_ms` is newer than its session's mark (the newest applied, if
/// any). Events without a timestamp are always admitted.
pub fn is_newer(mark: Option<i64>, timestamp_ms: i64) -> bool {
    timestamp_ms <= 0 || mark.is_none_or(|last| timestamp_ms > last)
}

/// onair's recording id for a JaaS meeting session: a name-based UUID
/// (version 8, SHA-256), the same for every event of the session.
pub fn recording_id(session_id: &str) -> String {
    name_uuid(&["onair/jaas/session", session_id])
}

/// The catalog id of a second recording made in the same meeting session.
pub fn upload_recording_id(session_id: &str, recording_session_id: &str) -> String {
    name_uuid(&["onair/jaas/recording", session_id, recording_session_id])
}

fn name_uuid(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// The room of a JaaS `fqn` (`<appId>/<room>`), if it is a valid onair room
/// id. `.` and `..` are not: the room names a directory in storage.
pub fn room_of(fqn: &str) -> Option<&str> {
    let (app_id, room) = fqn.split_once('/')?;
    let usable =
        !app_id.is_empty() && crate::auth::valid_room_id(room) && !matches!(room, "." | "..");
    usable.then_some(room)
}

/// The wait before attempt `failed + 1`, after `failed` attempts failed:
/// 2 s, 8 s, 32 s, 128 s, 512 s, … at most 2 h. With the default six
/// attempts the last one starts about 11 minutes after the first; ten
/// attempts span about 7 hours, still well inside the link's 24 h.
pub fn retry_delay(failed: u32) -> Duration {
    let factor = RETRY_FACTOR.saturating_pow(failed.saturating_sub(1));
    FIRST_RETRY.saturating_mul(factor).min(MAX_RETRY)
}

/// [`retry_delay`] with jitter (75–100 %), so retries of many recordings
/// after one outage do not arrive together.
pub fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::rng().random_range(0.75..=1.0))
}

/// A file name for the recording: the last segment of the link's path
/// (8x8 names them `<room>_<date>.mp4`), reduced to safe characters and to
/// 200 bytes (keeping its extension), or `fallback` when the link has none.
pub fn file_name(link: &str, fallback: &str) -> String {
    let segment = reqwest::Url::parse(link)
        .ok()
        .and_then(|url| {
            url.path_segments()
                .and_then(|mut segments| segments.next_back().map(str::to_owned))
        })
        .unwrap_or_default();
    let cleaned: String = segment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = crate::storage::fit_name(cleaned.trim_start_matches('.'), 200);
    if cleaned.is_empty() || !cleaned.contains('.') {
        return fallback.to_owned();
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> Jaas {
        Jaas::new(&JaasConfig::default(), reqwest::Client::new())
    }

    #[test]
    fn recording_ids_are_stable_uuids_per_session() {
        let a = recording_id("be4d177c-a342-41e6-a9b9-8be7ff0b0cc8");
        assert_eq!(a, recording_id("be4d177c-a342-41e6-a9b9-8be7ff0b0cc8"));
        assert_ne!(a, recording_id("be4d177c-a342-41e6-a9b9-8be7ff0b0cc9"));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        let second = upload_recording_id("be4d177c-a342-41e6-a9b9-8be7ff0b0cc8", "rs1");
        assert_ne!(a, second);
        assert_eq!(
            second,
            upload_recording_id("be4d177c-a342-41e6-a9b9-8be7ff0b0cc8", "rs1")
        );
        // The parts are length-prefixed.
        assert_ne!(
            upload_recording_id("ab", "c"),
            upload_recording_id("a", "bc")
        );
    }

    #[test]
    fn rooms_come_from_the_fqn() {
        assert_eq!(
            room_of("vpaas-magic-cookie-c2824d584eac4489a1e32e4e164d5a3c/testroom2"),
            Some("testroom2")
        );
        assert_eq!(room_of("testroom2"), None);
        assert_eq!(room_of("/testroom2"), None);
        assert_eq!(room_of("app/"), None);
        assert_eq!(room_of("app/a/b"), None);
        assert_eq!(room_of("app/a b"), None);
        assert_eq!(room_of("app/.."), None);
        assert_eq!(room_of("app/."), None);
        assert_eq!(room_of("app/..."), Some("..."));
    }

    #[test]
    fn events_older_than_the_last_applied_are_stale() {
        assert!(is_newer(None, 1_000), "the first event of a session");
        assert!(!is_newer(Some(2_000), 1_000), "a start older than its end");
        assert!(!is_newer(Some(2_000), 2_000), "the same instant again");
        assert!(
            is_newer(Some(2_000), 3_000),
            "a new recording in the same session"
        );
        assert!(is_newer(Some(2_000), 0), "no timestamp, no ordering");
    }

    #[test]
    fn retries_back_off_exponentially_within_the_link_life() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(8));
        assert_eq!(retry_delay(3), Duration::from_secs(32));
        assert_eq!(retry_delay(50), MAX_RETRY);
        let ten_attempts: Duration = (1..10).map(retry_delay).sum();
        assert!(ten_attempts < LINK_LIFETIME / 3, "{ten_attempts:?}");
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(8));
            assert!(j >= Duration::from_secs(6) && j <= Duration::from_secs(8));
        }
    }

    #[test]
    fn claims_are_exclusive_until_released() {
        let jaas = bridge();
        assert!(jaas.claim("r1"));
        assert!(!jaas.claim("r1"));
        assert!(jaas.claimed("r1"));
        jaas.release("r1");
        assert!(jaas.claim("r1"));
        assert!(jaas.first_resume());
        assert!(!jaas.first_resume());
    }

    #[test]
    fn file_names_come_from_the_link() {
        let link = "https://objectstorage.us-phoenix-1.oraclecloud.com/p/x/n/y/b/z/o/vpaas-magic-cookie-c28/testroom2_2020-09-24-12-01-07.mp4";
        assert_eq!(
            file_name(link, "f.mp4"),
            "testroom2_2020-09-24-12-01-07.mp4"
        );
        assert_eq!(
            file_name("https://h/a/my%20talk.mp4?sig=1", "f.mp4"),
            "my_20talk.mp4"
        );
        assert_eq!(file_name("https://h/", "f.mp4"), "f.mp4");
        let long = file_name(&format!("https://h/a.b{}.mp4", "x".repeat(300)), "f.mp4");
        assert_eq!(long.len(), 200);
        assert!(
            long.starts_with("a.bxx") && long.ends_with("x.mp4"),
            "{long}"
        );
        assert_eq!(file_name("https://h/noext", "f.mp4"), "f.mp4");
        assert_eq!(file_name("https://h/..", "f.mp4"), "f.mp4");
        assert_eq!(file_name("not a url", "f.mp4"), "f.mp4");
    }
}

/// Who a JaaS meeting token is for (seed 000, step 1: the application decides
/// per user who moderates and who may record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasUser {
    /// The user's id in your application.
    pub id: String,
    /// The name shown in the meeting.
    pub name: String,
    /// The user's e-mail, if any.
    pub email: Option<String>,
    /// Moderator rights.
    pub moderator: bool,
    /// The `recording` feature (8x8 grants features to moderators only).
    pub recording: bool,
}

/// Mints the RS256 JWT that the Jitsi client presents to 8x8 JaaS, from
/// `[jaas] app_id, api_key_id, private_key_path`.
pub fn mint_meeting_token(
    config: &JaasConfig,
    room: &str,
    user: &JaasUser,
    ttl: std::time::Duration,
) -> Result<String, String> {
    let missing = |key: &str| format!("`onair jaas-token` needs [jaas] {key}");
    let app_id = config.app_id.as_deref().ok_or_else(|| missing("app_id"))?;
    let key_id = config
        .api_key_id
        .as_deref()
        .ok_or_else(|| missing("api_key_id"))?;
    let path = config
        .private_key_path
        .as_deref()
        .ok_or_else(|| missing("private_key_path"))?;
    if user.recording && !user.moderator {
        return Err("8x8 grants the recording feature to moderators only".into());
    }
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
        .map_err(|e| format!("{} is not an RSA private key in PEM: {e}", path.display()))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(format!("{app_id}/{key_id}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // 8x8 reads these flags as the strings "true" / "false".
    let flag = |on: bool| if on { "true" } else { "false" };
    let claims = serde_json::json!({
        "aud": "jitsi",
        "iss": "chat",
        "sub": app_id,
        "room": room,
        "iat": now,
        "nbf": now.saturating_sub(10),
        "exp": now + ttl.as_secs(),
        "context": {
            "user": {
                "id": user.id,
                "name": user.name,
                "email": user.email.clone().unwrap_or_default(),
                "avatar": "",
                "moderator": flag(user.moderator),
            },
            "features": {
                "recording": flag(user.recording),
                "livestreaming": "false",
                "transcription": "false",
                "outbound-call": "false",
            },
        },
    });
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing failed: {e}"))
}
