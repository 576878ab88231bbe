//! The Nextcloud Talk recording server (`nextcloud-talk-recording`) as a backend.
//!
//! onair plays the part of the Nextcloud server towards the recording server:
//! it sends `start`/`stop` to `POST {recording_server}/api/v1/room/{token}`
//! (the room id is the Talk room token), and the recording server reports back
//! to the endpoints in [`crate::webhooks::nextcloud`]. Both directions are
//! authenticated the same way: `Talk-Recording-Random` plus
//! `Talk-Recording-Checksum` = lowercase hex HMAC-SHA256(secret, random + data),
//! where data is the raw body (or the room token, for the file upload).
//!
//! The recording server knows nothing of onair's recording ids, and it uploads
//! the file only after it reported `stopped`, when the room's state no longer
//! names the recording (and the room may already be gone). So this backend
//! remembers, per token, which recording it last started and for whom
//! ([`Pending`]) until the file arrives: in memory on one node, in Redis with
//! `[cluster]` (the reports and the upload may reach any node, and the node
//! that made the start may be gone). It also remembers the randoms of
//! accepted inbound requests for a while, so a replayed request is
//! acknowledged and ignored instead of applied twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{BackendError, StartRequest, StopRequest};
use crate::auth::random_string;
use crate::cluster::{Cluster, ClusterError};
use crate::config::NextcloudConfig;

/// Header with the random string the checksum is made with.
pub const RANDOM_HEADER: &str = "Talk-Recording-Random";
/// Header with the lowercase hex HMAC-SHA256 of random + data.
pub const CHECKSUM_HEADER: &str = "Talk-Recording-Checksum";
/// Header naming the (Nextcloud) backend that sends a request to the recording server.
pub const BACKEND_HEADER: &str = "Talk-Recording-Backend";

/// The owner and actor onair names when nobody in particular asked (the REST API).
pub const ONAIR_ACTOR: &str = "onair";
/// The Talk actor type of the users onair names as owner and actor.
pub const ACTOR_TYPE: &str = "users";

/// Talk's `RECORDING_VIDEO`: audio and video.
const STATUS_VIDEO: u8 = 1;
/// Talk's `RECORDING_AUDIO`: audio only.
const STATUS_AUDIO: u8 = 2;

/// Length of the random onair sends (Nextcloud sends 64 characters too).
const RANDOM_LEN: usize = 64;
/// Shortest random onair accepts (Nextcloud's own check).
pub const MIN_RANDOM_LEN: usize = 32;

/// Attempts per call; like Nextcloud, only connection failures and 5xx are retried.
const ATTEMPTS: u32 = 3;
/// Time one attempt may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before the second attempt (doubled before the third).
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// How long a started recording waits for its file before it is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the random of an accepted inbound request is remembered (the
/// protocol has no timestamp, so this is the whole replay window).
const SEEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most randoms remembered; the oldest go first.
const SEEN_CAP: usize = 16 * 1024;

/// A recording onair started on the recording server whose file has not arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// onair's id for the recording (the one `started` announced).
    pub recording_id: String,
    /// The `owner` onair sent, which the upload names again.
    pub owner: String,
    since: Instant,
}

/// The nextcloud backend.
pub struct Nextcloud {
    config: NextcloudConfig,
    http: reqwest::Client,
    /// Started recordings by room token, until their file arrives (one node).
    pending: DashMap<String, Pending>,
    /// `[cluster]`: where the pending starts are kept instead, for every node.
    cluster: OnceLock<Arc<Cluster>>,
    /// Randoms of accepted inbound requests (replay guard). A plain mutex:
    /// every critical section is a few map operations, never an `.await`.
    seen: Mutex<Seen>,
}

impl Nextcloud {
    /// A backend for this configuration.
    pub fn new(config: &NextcloudConfig, http: reqwest::Client) -> Self {
        Self {
            config: config.clone(),
            http,
            pending: DashMap::new(),
            cluster: OnceLock::new(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// `[cluster]`: keeps the pending starts in Redis, shared by every node.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Starts a recording: `{"type":"start","start":{"status","owner","actor"}}`.
    pub async fn start(&self, request: &StartRequest) -> Result<(), BackendError> {
        let user = request
            .requested_by_user
            .as_deref()
            .unwrap_or(ONAIR_ACTOR)
            .to_owned();
        let status = if request.audio_only {
            STATUS_AUDIO
        } else {
            STATUS_VIDEO
        };
        let body = json!({
            "type": "start",
            "start": {
                "status": status,
                "owner": user,
                "actor": {"type": ACTOR_TYPE, "id": user},
            },
        });
        // Remember the recording before the request leaves: the recording
        // server may report back before its answer arrives.
        if let Some(cluster) = self.cluster.get() {
            // Not remembered, not asked: the room's start fails and may be tried again.
            cluster
                .remember_nextcloud_start(&request.room, &request.recording_id, &user)
                .await
                .map_err(|e| {
                    BackendError(format!("cannot remember the start in the cluster: {e}"))
                })?;
        } else {
            self.remember_start(&request.room, &request.recording_id, &user);
        }
        let result = self.send(&request.room, "start", &body).await;
        if result.is_err() {
            self.delivered(&request.room, &request.recording_id).await;
        }
        result
    }

    /// Stops a recording: `{"type":"stop","stop":{"actor"}}`. The recording
    /// server answers 404 for a recording it does not know, which fails the room
    /// as it fails a Nextcloud conversation.
    pub async fn stop(&self, request: &StopRequest) -> Result<(), BackendError> {
        let body = json!({
            "type": "stop",
            "stop": {"actor": {"type": ACTOR_TYPE, "id": ONAIR_ACTOR}},
        });
        self.send(&request.room, "stop", &body).await
    }

    /// Whether `checksum` is HMAC-SHA256(secret, random + data) and `random` is
    /// long enough. Hex is compared case-insensitively, in constant time.
    pub fn verify(&self, random: Option<&str>, checksum: Option<&str>, data: &[u8]) -> bool {
        let Some(secret) = self.config.secret.as_deref() else {
            return false;
        };
        match (random, checksum) {
            (Some(random), Some(checksum)) if random.len() >= MIN_RANDOM_LEN => {
                checksum_matches(secret.as_bytes(), random, data, checksum)
            }
            _ => false,
        }
    }

    /// The recording started for this token whose file has not arrived, if
    /// any; `Err` only with `[cluster]`, when Redis did not answer.
    pub async fn pending(&self, token: &str) -> Result<Option<Pending>, ClusterError> {
        let Some(cluster) = self.cluster.get() else {
            return Ok(self.pending.get(token).map(|p| p.clone()));
        };
        Ok(cluster
            .nextcloud_start(token)
            .await?
            .map(|(recording_id, owner)| Pending {
                recording_id,
                owner,
                since: Instant::now(),
            }))
    }

    /// Forgets this recording of this token: its file arrived.
    pub async fn delivered(&self, token: &str, recording_id: &str) {
        match self.cluster.get() {
            None => {
                self.pending
                    .remove_if(token, |_, p| p.recording_id == recording_id);
            }
            Some(cluster) => {
                if let Err(e) = cluster
                    .forget_nextcloud_start(token, Some(recording_id))
                    .await
                {
                    // It expires after a day; a later upload would reuse the id
                    // only if the catalog did not have it (it does).
                    tracing::warn!(room = token, error = %e, "cluster: cannot forget a nextcloud start");
                }
            }
        }
    }

    /// Forgets the pending recording of this token (the recording server
    /// reported a failure, so no file follows).
    pub async fn forget(&self, token: &str) -> Result<(), ClusterError> {
        match self.cluster.get() {
            None => {
                self.pending.remove(token);
                Ok(())
            }
            Some(cluster) => cluster.forget_nextcloud_start(token, None).await,
        }
    }

    /// Marks an authenticated request's random as used; `false` if it was
    /// already used within the last day (a replay, or a retry of a request that
    /// was applied).
    pub fn claim(&self, random: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .claim(random, Instant::now())
    }

    /// Releases a random whose request was refused, so that a retry is judged afresh.
    pub fn release(&self, random: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(random);
    }

    fn remember_start(&self, token: &str, recording_id: &str, owner: &str) {
        // Recordings whose file never came (a failed upload) go after a day.
        self.pending.retain(|_, p| p.since.elapsed() < PENDING_TTL);
        self.pending.insert(
            token.to_owned(),
            Pending {
                recording_id: recording_id.to_owned(),
                owner: owner.to_owned(),
                since: Instant::now(),
            },
        );
    }

    /// Sends one signed request to the recording server, retrying connection
    /// failures and 5xx answers as Nextcloud's BackendNotifier does.
    async fn send(&self, token: &str, kind: &str, body: &Value) -> Result<(), BackendError> {
        let (Some(server), Some(secret), Some(backend_url)) = (
            self.config.recording_server.as_deref(),
            self.config.secret.as_deref(),
            self.config.backend_url.as_deref(),
        ) else {
            return Err(BackendError(
                "the nextcloud backend needs [nextcloud] recording_server, secret and backend_url"
                    .into(),
            ));
        };
        let url = format!("{}/api/v1/room/{token}", server.trim_end_matches('/'));
        // The recording server looks its backends up by URL; Nextcloud sends
        // its base URL with the trailing slash.
        let backend = format!("{}/", backend_url.trim_end_matches('/'));
        let body = serde_json::to_vec(body).expect("a JSON value serializes");
        let random = random_string(RANDOM_LEN);
        let checksum = checksum(secret.as_bytes(), &random, &body);
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .post(&url)
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("OCS-APIRequest", "true")
                .header(RANDOM_HEADER, &random)
                .header(CHECKSUM_HEADER, &checksum)
                .header(BACKEND_HEADER, &backend)
                .body(body.clone())
                .send()
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(room = %token, kind, "recording server accepted the request");
                    return Ok(());
                }
                Ok(response) => {
                    let status = response.status();
                    let failure = format!("the recording server answered {status}");
                    if !status.is_server_error() {
                        return Err(BackendError(failure));
                    }
                    failure
                }
                Err(e) => format!(
                    "the recording server could not be reached: {}",
                    e.without_url()
                ),
            };
            if attempt >= ATTEMPTS {
                return Err(BackendError(failure));
            }
            tracing::warn!(room = %token, kind, attempt, error = %failure, "recording server request failed; retrying");
            tokio::time::sleep(RETRY_BACKOFF * 2u32.pow(attempt - 1)).await;
            attempt += 1;
        }
    }
}

/// Lowercase hex HMAC-SHA256(secret, random + data), as both sides compute it.
pub fn checksum(secret: &[u8], random: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(random.as_bytes());
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `presented` (hex, any case) is the checksum of random + data; the
/// MAC comparison is constant-time.
pub fn checksum_matches(secret: &[u8], random: &str, data: &[u8], presented: &str) -> bool {
    let Ok(presented) = hex::decode(presented.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(random.as_bytes());
    mac.update(data);
    mac.verify_slice(&presented).is_ok()
}

/// Randoms of accepted requests, oldest first, bounded in age and number.
#[derive(Default)]
struct Seen {
    at: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl Seen {
    fn claim(&mut self, random: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < SEEN_TTL && self.order.len() < SEEN_CAP {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // A released and re-claimed random has a newer entry; keep that one.
                if self.at.get(&key) == Some(&at) {
                    self.at.remove(&key);
                }
            }
        }
        if self.at.contains_key(random) {
            return false;
        }
        self.at.insert(random.to_owned(), now);
        self.order.push_back((now, random.to_owned()));
        true
    }

    fn release(&mut self, random: &str) {
        self.at.remove(random);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_lowercase_hex_hmac_of_random_and_data() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let sum = checksum(b"key", "The quick brown fox ", b"jumps over the lazy dog");
        assert_eq!(
            sum,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert!(checksum_matches(
            b"key",
            "The quick brown fox ",
            b"jumps over the lazy dog",
            &sum.to_uppercase()
        ));
        assert!(!checksum_matches(b"key", "x", b"y", &sum));
        assert!(!checksum_matches(b"key", "x", b"y", "not hex"));
    }

    fn backend() -> Nextcloud {
        Nextcloud::new(
            &NextcloudConfig {
                recording_server: None,
                secret: Some("the-shared-secret".into()),
                backend_url: None,
            },
            reqwest::Client::new(),
        )
    }

    #[test]
    fn verify_wants_a_long_random_and_the_right_checksum() {
        let nc = backend();
        let random = "r".repeat(32);
        let sum = checksum(b"the-shared-secret", &random, b"body");
        assert!(nc.verify(Some(&random), Some(&sum), b"body"));
        assert!(!nc.verify(Some(&random), Some(&sum), b"other"));
        let short = "r".repeat(31);
        let sum = checksum(b"the-shared-secret", &short, b"body");
        assert!(!nc.verify(Some(&short), Some(&sum), b"body"));
        assert!(!nc.verify(None, Some(&sum), b"body"));
        assert!(!nc.verify(Some(&random), None, b"body"));
    }

    #[test]
    fn a_random_is_claimed_once_until_released() {
        let nc = backend();
        assert!(nc.claim("abc"));
        assert!(!nc.claim("abc"));
        nc.release("abc");
        assert!(nc.claim("abc"));
    }

    #[test]
    fn seen_randoms_expire_and_are_bounded() {
        let mut seen = Seen::default();
        let start = Instant::now();
        assert!(seen.claim("a", start));
        assert!(!seen.claim("a", start + Duration::from_secs(60)));
        assert!(seen.claim("a", start + SEEN_TTL + Duration::from_secs(1)));
        for i in 0..SEEN_CAP + 10 {
            seen.claim(&i.to_string(), start + SEEN_TTL * 2);
        }
        assert!(seen.at.len() <= SEEN_CAP);
        assert_eq!(seen.at.len(), seen.order.len());
    }

    #[tokio::test]
    async fn pending_recordings_are_remembered_per_token() {
        let nc = backend();
        nc.remember_start("tok", "r1", "ada");
        nc.remember_start("tok", "r2", "bob");
        let pending = nc.pending("tok").await.unwrap();
        assert_eq!(
            pending.as_ref().map(|p| p.recording_id.as_str()),
            Some("r2")
        );
        assert_eq!(pending.as_ref().map(|p| p.owner.as_str()), Some("bob"));
        nc.delivered("tok", "r1").await;
        assert!(nc.pending("tok").await.unwrap().is_some());
        nc.delivered("tok", "r2").await;
        assert_eq!(nc.pending("tok").await.unwrap(), None);
    }
}
