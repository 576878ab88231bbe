//! The LiveKit (and OpenVidu 3) backend: room-composite egress for recording,
//! room metadata for mirroring the state, data messages for deletions.
//!
//! Everything goes over LiveKit's twirp API (`POST {url}/twirp/livekit.<Service>/<Method>`,
//! JSON bodies, `Authorization: Bearer <JWT>` signed HS256 with the API
//! secret, `iss` = the API key, and a `video` grant naming exactly the
//! permission the call needs, as LiveKit's own server SDKs mint them).
//!
//! Besides the calls, this module keeps the **egress table** the webhook
//! handler (`webhooks::livekit`) consults: which egress belongs to which
//! room and onair recording, and the newest event applied per egress (so
//! duplicated, reordered and late webhooks never move a recording backwards).
//! It lives here because the backend is the one place both the start call and
//! the webhook reach. It is held in memory and, once the store is attached
//! ([`Livekit::attach_store`]), written through to it (`livekit_egresses`):
//! when the start is answered, as events are admitted, when a stop is asked
//! for. A lookup that misses in memory (after a restart) reads the store, so a
//! webhook about an egress started before a crash still reaches its room, in
//! order, and a `stop` still finds its egress.
//!
//! Mirroring into room metadata (`recordingStatus`, seed 004) and deletion
//! notices are best effort and never block the room: each LiveKit room gets
//! an ordered, bounded job queue worked by one task at a time, every call has
//! the configured timeout and a few retries with backoff, and failures are
//! logged.
//!
//! Reconciliation with LiveKit's `Egress/ListEgress` (`[recording]
//! reconcile_interval_s`) is worked out in [`reconcile`].

pub mod reconcile;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use dashmap::DashMap;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{BackendError, StartRequest, StopRequest};
use crate::cluster::Cluster;
use crate::config::LivekitConfig;
use crate::metrics::{METRICS, count};
use crate::protocol::RecordingStatus;
use crate::store::{LivekitEgressRow, Store};

/// Lifetime of the tokens onair signs for its calls (LiveKit's SDKs use minutes too).
const TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Attempts per mirroring call (metadata, data message) before it is given up.
const MIRROR_ATTEMPTS: u32 = 4;
/// Attempts per `StopEgress` call.
const STOP_ATTEMPTS: u32 = 3;
/// The first retry's delay; each further one doubles it.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Mirroring jobs queued per room; past that the oldest is dropped (the newest
/// status is what matters).
const MIRROR_QUEUE: usize = 64;
/// How long a finished egress is remembered, so late webhooks about it are
/// recognised and dropped.
const FINISHED_RETENTION: Duration = Duration::from_secs(60 * 60);
/// How long any egress is remembered at most.
const EGRESS_RETENTION: Duration = Duration::from_secs(48 * 60 * 60);
/// The data-message topic that announces a deleted recording (seed 004).
pub const RECORDING_DELETED_TOPIC: &str = "RECORDING_DELETED";

/// The livekit backend. Cloning is cheap and shares the state.
#[derive(Clone)]
pub struct Livekit {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration in force.
    config: LivekitConfig,
    /// `url` with `ws(s)://` turned into `http(s)://` and no trailing slash.
    base_url: String,
    /// The shared HTTP client (rustls).
    http: reqwest::Client,
    /// `request_timeout_s`: the limit of one call.
    timeout: Duration,
    /// Egresses onair started, by egress id.
    egresses: DashMap<String, Egress>,
    /// onair recording id → egress id, for `stop`.
    by_recording: DashMap<String, String>,
    /// Starts whose `StartRoomCompositeEgress` has not answered yet, by room:
    /// LiveKit may send `egress_started` before the answer arrives.
    pending: DashMap<String, PendingStart>,
    /// Per-room mirroring queues.
    mirrors: DashMap<String, Mutex<MirrorQueue>>,
    /// Where the egress table is persisted; unset (memory only) until
    /// [`Livekit::attach_store`].
    store: OnceLock<Arc<Store>>,
    /// `[cluster]`: where the egress table is shared with the other nodes
    /// (a webhook or a stop may reach a node that did not start the egress).
    cluster: OnceLock<Arc<Cluster>>,
}

/// One egress onair started.
struct Egress {
    /// The room (LiveKit room name = onair room id).
    room: String,
    /// onair's recording id.
    recording_id: String,
    /// Ordering key of the newest event applied: (`updatedAt` in ns, status rank).
    last: Option<(i64, u8)>,
    /// The status of the newest event applied.
    status: Option<EgressStatus>,
    /// Whether onair asked LiveKit to stop it.
    stop_requested: bool,
    /// When onair learnt of it.
    registered: Instant,
    /// When a final status was applied.
    finished: Option<Instant>,
}

/// A start call in flight.
struct PendingStart {
    /// The recording it is for.
    recording_id: String,
    /// Turns `true` (or closes) when the call has answered.
    done: watch::Receiver<bool>,
}

/// Which room and recording an egress belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRef {
    /// The room id.
    pub room: String,
    /// onair's recording id.
    pub recording_id: String,
}

/// Whether a webhook about an egress is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Newer than anything applied so far.
    Apply {
        /// Whether onair had asked LiveKit to stop the egress.
        stop_requested: bool,
        /// The egress's mark before this event, for [`Livekit::readmit`].
        before: Mark,
    },
    /// Older than (or the same as) what was applied, or about an egress that
    /// already finished: dropped.
    Stale,
    /// Not an egress onair started.
    Unknown,
}

/// Where an egress's ordering stood before an admitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    last: Option<(i64, u8)>,
    status: Option<EgressStatus>,
}

/// LiveKit's `EgressStatus`, as protojson spells it (name or number).
/// protojson leaves out zero values, so a missing status is the default,
/// `EGRESS_STARTING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EgressStatus {
    /// `EGRESS_STARTING` (0; protojson omits it).
    #[default]
    Starting,
    /// `EGRESS_ACTIVE`.
    Active,
    /// `EGRESS_ENDING`.
    Ending,
    /// `EGRESS_COMPLETE`.
    Complete,
    /// `EGRESS_FAILED`.
    Failed,
    /// `EGRESS_ABORTED`.
    Aborted,
    /// `EGRESS_LIMIT_REACHED`.
    LimitReached,
    /// A value this version does not know; ignored.
    Unknown,
}

impl EgressStatus {
    /// From the enum's name or number.
    pub fn from_name(name: &str) -> Self {
        match name {
            "EGRESS_STARTING" => Self::Starting,
            "EGRESS_ACTIVE" => Self::Active,
            "EGRESS_ENDING" => Self::Ending,
            "EGRESS_COMPLETE" => Self::Complete,
            "EGRESS_FAILED" => Self::Failed,
            "EGRESS_ABORTED" => Self::Aborted,
            "EGRESS_LIMIT_REACHED" => Self::LimitReached,
            _ => Self::Unknown,
        }
    }

    /// From the enum's number.
    pub fn from_number(n: i64) -> Self {
        match n {
            0 => Self::Starting,
            1 => Self::Active,
            2 => Self::Ending,
            3 => Self::Complete,
            4 => Self::Failed,
            5 => Self::Aborted,
            6 => Self::LimitReached,
            _ => Self::Unknown,
        }
    }

    /// The protobuf name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "EGRESS_STARTING",
            Self::Active => "EGRESS_ACTIVE",
            Self::Ending => "EGRESS_ENDING",
            Self::Complete => "EGRESS_COMPLETE",
            Self::Failed => "EGRESS_FAILED",
            Self::Aborted => "EGRESS_ABORTED",
            Self::LimitReached => "EGRESS_LIMIT_REACHED",
            Self::Unknown => "EGRESS_UNKNOWN",
        }
    }

    /// Whether the egress is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Complete | Self::Failed | Self::Aborted | Self::LimitReached
        )
    }

    /// Position in an egress's life; an egress never goes to a lower one.
    pub fn rank(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Active => 1,
            Self::Ending => 2,
            Self::Complete | Self::Failed | Self::Aborted | Self::LimitReached => 3,
            Self::Unknown => 0,
        }
    }
}

impl<'de> Deserialize<'de> for EgressStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(i64),
            Null(()),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::Name(name) => Self::from_name(&name),
            Raw::Number(n) => Self::from_number(n),
            Raw::Null(()) => Self::Starting,
        })
    }
}

/// The value seed 004 keeps in the room metadata's `recordingStatus`.
pub fn metadata_status(status: RecordingStatus) -> &'static str {
    match status {
        RecordingStatus::Initializing => "STARTING",
        RecordingStatus::Recording => "STARTED",
        RecordingStatus::Stopping => "STOPPING",
        RecordingStatus::Inactive => "STOPPED",
        RecordingStatus::Failed => "FAILED",
    }
}

impl Livekit {
    /// A backend for this configuration.
    pub fn new(config: &LivekitConfig, http: reqwest::Client) -> Self {
        let base_url = config.url.as_deref().map(http_base_url).unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                base_url,
                http,
                timeout: Duration::from_secs(config.request_timeout_s.max(1)),
                config: config.clone(),
                egresses: DashMap::new(),
                by_recording: DashMap::new(),
                pending: DashMap::new(),
                mirrors: DashMap::new(),
                store: OnceLock::new(),
                cluster: OnceLock::new(),
            }),
        }
    }

    /// Persists the egress table in `store` from now on, and reads egresses
    /// the memory does not know (started before a restart) from it. Only the
    /// first store attached counts.
    pub fn attach_store(&self, store: Arc<Store>) {
        let _ = self.inner.store.set(store);
    }

    /// `[cluster]`: shares each egress this node starts through Redis, and
    /// looks up there the egresses other nodes started.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Starts a room-composite egress into a file. The call is made once (a
    /// retried start could record twice); its egress id is remembered for the
    /// webhooks and `stop`.
    pub async fn start(&self, request: &StartRequest) -> Result<(), BackendError> {
        let inner = &self.inner;
        let (done_tx, done_rx) = watch::channel(false);
        inner.pending.insert(
            request.room.clone(),
            PendingStart {
                recording_id: request.recording_id.clone(),
                done: done_rx,
            },
        );
        let body = json!({
            "room_name": request.room,
            "audio_only": request.audio_only,
            "file_outputs": [{
                "file_type": file_type(&inner.config.file_path),
                "filepath": inner.config.file_path,
                "disable_manifest": true,
            }],
        });
        let result: Result<EgressReply, CallError> = inner
            .call("Egress", "StartRoomCompositeEgress", Grant::record(), &body)
            .await;
        let result = result.and_then(|reply| {
            if reply.egress_id.is_empty() {
                Err(CallError::Decode("no egress_id in the answer".into()))
            } else {
                Ok(reply.egress_id)
            }
        });
        if let Ok(egress_id) = &result {
            inner.register(egress_id, &request.room, &request.recording_id);
            if let Some(cluster) = inner.cluster.get()
                && let Err(e) = cluster
                    .share_egress(egress_id, &request.room, &request.recording_id)
                    .await
            {
                tracing::error!(room = %request.room, egress_id, error = %e, "cannot share a livekit egress with the cluster");
            }
            tracing::info!(room = %request.room, recording_id = %request.recording_id, egress_id, "livekit egress started");
        }
        // The table is filled before anyone waiting on the start is woken.
        inner
            .pending
            .remove_if(&request.room, |_, p| p.recording_id == request.recording_id);
        let _ = done_tx.send(true);
        result
            .map(|_| ())
            .map_err(|e| BackendError(format!("livekit: {e}")))
    }

    /// Stops the recording's egress. An egress that is already ending needs
    /// no call; LiveKit's "already over" answer counts as done (its webhooks
    /// settle the state).
    pub async fn stop(&self, request: &StopRequest) -> Result<(), BackendError> {
        let inner = &self.inner;
        inner
            .settled_start(&request.room, Some(&request.recording_id))
            .await;
        let mut egress_id = inner
            .by_recording
            .get(&request.recording_id)
            .map(|e| e.value().clone())
            .or_else(|| inner.load_recording(&request.recording_id));
        if egress_id.is_none() {
            egress_id = inner
                .shared(Shared::OfRecording(&request.recording_id))
                .await
                .map(|(egress_id, _, _)| egress_id);
        }
        let Some(egress_id) = egress_id else {
            return Err(BackendError(
                "livekit: no egress is known for this recording".into(),
            ));
        };
        let already_over = match inner.egresses.get_mut(&egress_id) {
            Some(mut egress) => {
                egress.stop_requested = true;
                egress.status.is_some_and(|s| s.rank() >= 2)
            }
            None => false,
        };
        if let Some(store) = inner.store.get()
            && let Err(e) = store.livekit_egress_stop_requested(&egress_id)
        {
            tracing::error!(egress_id, error = %e, "cannot persist a livekit stop request");
        }
        if already_over {
            return Ok(());
        }
        let body = json!({ "egress_id": egress_id });
        let mut delay = RETRY_BACKOFF;
        for attempt in 1..=STOP_ATTEMPTS {
            let result: Result<IgnoredAny, CallError> = inner
                .call("Egress", "StopEgress", Grant::record(), &body)
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(room = %request.room, recording_id = %request.recording_id, egress_id, "livekit egress stopping");
                    return Ok(());
                }
                Err(CallError::Twirp { code, .. }) if code == "failed_precondition" => {
                    tracing::info!(room = %request.room, egress_id, "livekit egress was already over");
                    return Ok(());
                }
                Err(e) if e.retryable() && attempt < STOP_ATTEMPTS => {
                    tracing::debug!(room = %request.room, egress_id, attempt, error = %e, "StopEgress failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(BackendError(format!("livekit: {e}"))),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Mirrors the recording status into the LiveKit room's metadata
    /// (`recordingStatus`, merged into its JSON). Queued; returns at once.
    pub async fn status_changed(&self, room: &str, status: RecordingStatus) {
        self.mirror_status(room, status);
    }

    /// [`Livekit::status_changed`] without the `async`: queues the update in
    /// the room's ordered queue, so a caller that holds the room's order
    /// (e.g. under the room lock) keeps it.
    pub fn mirror_status(&self, room: &str, status: RecordingStatus) {
        self.inner.enqueue(room, MirrorJob::Status(status));
    }

    /// Tells the LiveKit room that a recording was deleted: a reliable data
    /// message to everyone with topic `RECORDING_DELETED` and payload
    /// `{"recording_id":"…","recordingName":"…"}` (seed 004's client reads
    /// `recordingName`, the file's name). Queued behind the room's metadata
    /// updates; returns at once; retried and logged like them.
    pub async fn recording_deleted(&self, room: &str, recording_id: &str, name: &str) {
        self.inner.enqueue(
            room,
            MirrorJob::Deleted {
                recording_id: recording_id.to_owned(),
                name: name.to_owned(),
            },
        );
    }

    /// The room and recording of an egress onair started. When the egress is
    /// not known yet but a start in its room is still waiting for LiveKit's
    /// answer (LiveKit may send `egress_started` first), waits for that answer.
    pub async fn egress(&self, egress_id: &str, room_name: &str) -> Option<EgressRef> {
        let inner = &self.inner;
        if let Some(found) = inner.lookup(egress_id) {
            return Some(found);
        }
        if !room_name.is_empty() {
            inner.settled_start(room_name, None).await;
        }
        if let Some(found) = inner.lookup(egress_id) {
            return Some(found);
        }
        // Started by another node of the cluster?
        inner.shared(Shared::Egress(egress_id)).await?;
        inner.lookup(egress_id)
    }

    /// Decides whether an event about an egress is newer than everything
    /// applied so far, and records it in memory if so. Events are ordered by
    /// `updatedAt` (nanoseconds), then by how far along the status is; an
    /// egress never goes back to an earlier status, and nothing is applied
    /// after a final one. The caller writes the mark to the store once the
    /// event is applied (`Store::livekit_event_applied`), never before, so a
    /// crash in between does not make LiveKit's retry stale.
    pub fn admit(&self, egress_id: &str, updated_at: i64, status: EgressStatus) -> Admission {
        if !self.inner.egresses.contains_key(egress_id) {
            self.inner.load(egress_id);
        }
        let Some(mut egress) = self.inner.egresses.get_mut(egress_id) else {
            return Admission::Unknown;
        };
        if egress.finished.is_some() || status == EgressStatus::Unknown {
            return Admission::Stale;
        }
        let key = (updated_at, status.rank());
        if let Some(last) = egress.last
            && (key <= last || key.1 < last.1)
        {
            return Admission::Stale;
        }
        let before = Mark {
            last: egress.last,
            status: egress.status,
        };
        egress.last = Some(key);
        egress.status = Some(status);
        if status.is_final() {
            egress.finished = Some(Instant::now());
        }
        let stop_requested = egress.stop_requested;
        drop(egress);
        Admission::Apply {
            stop_requested,
            before,
        }
    }

    /// Takes back an admission whose event could not be applied (the
    /// cluster's Redis did not answer), so that LiveKit's retry is admitted.
    pub fn readmit(&self, egress_id: &str, before: Mark) {
        if let Some(mut egress) = self.inner.egresses.get_mut(egress_id) {
            egress.last = before.last;
            egress.status = before.status;
            egress.finished = None;
        }
    }
}

/// What to look up in the cluster's shared egress table.
enum Shared<'a> {
    /// An egress, by its id.
    Egress(&'a str),
    /// The egress of an onair recording id.
    OfRecording(&'a str),
}

impl Inner {
    /// Looks an egress up in the cluster's shared table (`[cluster]` only)
    /// and, when found, remembers it here as if this node had started it.
    /// Returns `(egress id, room, recording id)`.
    async fn shared(&self, key: Shared<'_>) -> Option<(String, String, String)> {
        let cluster = self.cluster.get()?;
        let found = match key {
            Shared::Egress(egress_id) => cluster.shared_egress(egress_id).await,
            Shared::OfRecording(recording_id) => cluster.shared_egress_of(recording_id).await,
        };
        match found {
            Ok(Some((egress_id, room, recording_id))) => {
                if !self.egresses.contains_key(&egress_id) {
                    self.register(&egress_id, &room, &recording_id);
                }
                Some((egress_id, room, recording_id))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's livekit egresses");
                None
            }
        }
    }

    /// Remembers an egress onair started, and forgets old ones.
    fn register(&self, egress_id: &str, room: &str, recording_id: &str) {
        self.prune();
        self.egresses.insert(
            egress_id.to_owned(),
            Egress {
                room: room.to_owned(),
                recording_id: recording_id.to_owned(),
                last: None,
                status: None,
                stop_requested: false,
                registered: Instant::now(),
                finished: None,
            },
        );
        self.by_recording
            .insert(recording_id.to_owned(), egress_id.to_owned());
        if let Some(store) = self.store.get() {
            let now = unix_ms(SystemTime::now());
            let row = LivekitEgressRow {
                egress_id: egress_id.to_owned(),
                room: room.to_owned(),
                recording_id: recording_id.to_owned(),
                last_updated_at: None,
                status: None,
                stop_requested: false,
                created_ms: now,
            };
            let forget_before = now.saturating_sub(EGRESS_RETENTION.as_millis() as i64);
            if let Err(e) = store.save_livekit_egress(&row, forget_before) {
                tracing::error!(room, recording_id, egress_id, error = %e, "cannot persist a livekit egress");
            }
        }
    }

    /// Brings an egress the memory does not know (e.g. started before a
    /// restart) back from the store, with its ordering state. `true` if found.
    fn load(&self, egress_id: &str) -> bool {
        let Some(store) = self.store.get() else {
            return false;
        };
        match store.livekit_egress(egress_id) {
            Ok(Some(row)) => {
                self.remember(row);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(egress_id, error = %e, "cannot read a livekit egress");
                false
            }
        }
    }

    /// [`Inner::load`] by onair recording id; returns the egress id.
    fn load_recording(&self, recording_id: &str) -> Option<String> {
        let store = self.store.get()?;
        match store.livekit_egress_of_recording(recording_id) {
            Ok(Some(row)) => {
                let egress_id = row.egress_id.clone();
                self.remember(row);
                Some(egress_id)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(recording_id, error = %e, "cannot read a livekit egress");
                None
            }
        }
    }

    /// Puts a stored egress into memory unless it is there already (an
    /// entry in memory is never older than the store's row).
    fn remember(&self, row: LivekitEgressRow) {
        let status = row.status.as_deref().map(EgressStatus::from_name);
        let last = row
            .last_updated_at
            .zip(status)
            .map(|(at, status)| (at, status.rank()));
        let now = Instant::now();
        let age = Duration::from_millis(
            u64::try_from(unix_ms(SystemTime::now()).saturating_sub(row.created_ms)).unwrap_or(0),
        );
        let registered = now.checked_sub(age).unwrap_or(now);
        self.by_recording
            .entry(row.recording_id.clone())
            .or_insert_with(|| row.egress_id.clone());
        self.egresses.entry(row.egress_id).or_insert(Egress {
            room: row.room,
            recording_id: row.recording_id,
            last,
            status,
            stop_requested: row.stop_requested,
            registered,
            finished: status.filter(|s| s.is_final()).map(|_| now),
        });
    }

    fn prune(&self) {
        let mut forgotten = Vec::new();
        self.egresses.retain(|_, e| {
            let keep = e.registered.elapsed() < EGRESS_RETENTION
                && e.finished
                    .is_none_or(|at| at.elapsed() < FINISHED_RETENTION);
            if !keep {
                forgotten.push(e.recording_id.clone());
            }
            keep
        });
        for recording_id in forgotten {
            self.by_recording.remove(&recording_id);
        }
    }

    /// The egress's room and recording, from memory or else the store.
    fn lookup(&self, egress_id: &str) -> Option<EgressRef> {
        if !self.egresses.contains_key(egress_id) && !self.load(egress_id) {
            return None;
        }
        self.egresses.get(egress_id).map(|e| EgressRef {
            room: e.room.clone(),
            recording_id: e.recording_id.clone(),
        })
    }

    /// Waits until the room's start call (for `recording_id`, or any) has
    /// answered; at most a little longer than the call may take.
    async fn settled_start(&self, room: &str, recording_id: Option<&str>) {
        let waiting = self.pending.get(room).and_then(|p| {
            recording_id
                .is_none_or(|id| p.recording_id == id)
                .then(|| p.done.clone())
        });
        let Some(mut done) = waiting else {
            return;
        };
        let limit = self.timeout + Duration::from_secs(1);
        // An error means the start dropped its sender: it has answered too.
        let _ = tokio::time::timeout(limit, done.wait_for(|done| *done)).await;
    }

    /// Queues a mirroring job for a room; starts the room's worker if idle.
    fn enqueue(self: &Arc<Self>, room: &str, job: MirrorJob) {
        let start_worker = {
            // The map entry stays locked while the job is queued, so a worker
            // that is just retiring cannot remove the queue under us.
            let entry = self.mirrors.entry(room.to_owned()).or_default();
            let mut queue = lock(&entry);
            if queue.jobs.len() >= MIRROR_QUEUE
                && let Some(dropped) = queue.jobs.pop_front()
            {
                tracing::warn!(
                    room,
                    job = dropped.describe(),
                    "livekit mirroring queue full: dropping the oldest job"
                );
            }
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.running, true)
        };
        if start_worker {
            let inner = self.clone();
            let room = room.to_owned();
            tokio::spawn(async move { inner.work(room).await });
        }
    }

    /// Works one room's queue in order until it is empty.
    async fn work(self: Arc<Self>, room: String) {
        loop {
            let job = {
                let Some(entry) = self.mirrors.get(&room) else {
                    return;
                };
                let mut queue = lock(&entry);
                let job = queue.jobs.pop_front();
                if job.is_none() {
                    queue.running = false;
                }
                job
            };
            let Some(job) = job else {
                self.mirrors.remove_if(&room, |_, queue| {
                    let queue = lock(queue);
                    queue.jobs.is_empty() && !queue.running
                });
                return;
            };
            self.run(&room, &job).await;
        }
    }

    /// Carries out one job with retries; a failure is logged, never raised.
    async fn run(&self, room: &str, job: &MirrorJob) {
        let mut delay = RETRY_BACKOFF;
        for attempt in 1..=MIRROR_ATTEMPTS {
            let result = match job {
                MirrorJob::Status(status) => self.update_metadata(room, *status).await,
                MirrorJob::Deleted { recording_id, name } => {
                    self.send_deleted(room, recording_id, name).await
                }
            };
            match result {
                Ok(()) => return,
                Err(e) if e.retryable() && attempt < MIRROR_ATTEMPTS => {
                    tracing::debug!(room, job = job.describe(), attempt, error = %e, "livekit call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(room, job = job.describe(), attempts = attempt, error = %e, "livekit mirroring failed");
                    count(&METRICS.backend_errors, job.metric());
                    return;
                }
            }
        }
    }

    /// Reads the room's metadata, sets `recordingStatus`, writes it back.
    async fn update_metadata(&self, room: &str, status: RecordingStatus) -> Result<(), CallError> {
        let rooms: ListRoomsReply = self
            .call(
                "RoomService",
                "ListRooms",
                Grant::list(),
                &json!({ "names": [room] }),
            )
            .await?;
        let current = rooms
            .rooms
            .into_iter()
            .find(|r| r.name == room)
            .ok_or(CallError::NoSuchRoom)?;
        let metadata = merge_metadata(&current.metadata, metadata_status(status))?;
        let _: IgnoredAny = self
            .call(
                "RoomService",
                "UpdateRoomMetadata",
                Grant::admin(room),
                &json!({ "room": room, "metadata": metadata }),
            )
            .await?;
        tracing::debug!(
            room,
            status = metadata_status(status),
            "livekit room metadata updated"
        );
        Ok(())
    }

    /// `RoomService/SendData` to everyone, reliable, topic `RECORDING_DELETED`.
    async fn send_deleted(
        &self,
        room: &str,
        recording_id: &str,
        name: &str,
    ) -> Result<(), CallError> {
        let payload = json!({ "recording_id": recording_id, "recordingName": name }).to_string();
        let body = json!({
            "room": room,
            "data": base64::engine::general_purpose::STANDARD.encode(payload),
            "kind": "RELIABLE",
            "destination_sids": [],
            "topic": RECORDING_DELETED_TOPIC,
        });
        let _: IgnoredAny = self
            .call("RoomService", "SendData", Grant::admin(room), &body)
            .await?;
        tracing::debug!(room, recording_id, "livekit told of a deleted recording");
        Ok(())
    }

    /// One twirp call: a fresh token, the configured timeout, the error mapped.
    async fn call<T: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        grant: Grant<'_>,
        body: &Value,
    ) -> Result<T, CallError> {
        let (Some(key), Some(secret)) = (&self.config.api_key, &self.config.api_secret) else {
            return Err(CallError::NotConfigured);
        };
        if self.base_url.is_empty() {
            return Err(CallError::NotConfigured);
        }
        let token = service_token(key, secret, grant, SystemTime::now());
        let url = format!("{}/twirp/livekit.{service}/{method}", self.base_url);
        let response = self
            .http
            .post(url)
            .timeout(self.timeout)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::transport(&e, self.timeout))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::transport(&e, self.timeout))?;
        if !status.is_success() {
            return Err(CallError::from_twirp(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()))
    }
}

/// A queued mirroring job.
enum MirrorJob {
    /// Set `recordingStatus` in the room metadata.
    Status(RecordingStatus),
    /// Announce a deleted recording with a data message.
    Deleted {
        /// The deleted recording.
        recording_id: String,
        /// Its file's name.
        name: String,
    },
}

impl MirrorJob {
    /// The LiveKit call, for logs.
    fn describe(&self) -> &'static str {
        match self {
            Self::Status(_) => "UpdateRoomMetadata",
            Self::Deleted { .. } => "SendData",
        }
    }

    /// The `onair_backend_errors_total` label of a failed job.
    fn metric(&self) -> &'static str {
        match self {
            Self::Status(_) => "update_room_metadata",
            Self::Deleted { .. } => "send_data",
        }
    }
}

/// One room's mirroring queue.
#[derive(Default)]
struct MirrorQueue {
    /// Jobs in the order they happened.
    jobs: VecDeque<MirrorJob>,
    /// Whether a worker task is draining the queue.
    running: bool,
}

/// Why a call to LiveKit failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// `url`, `api_key` or `api_secret` is missing.
    #[error("url, api_key and api_secret must be configured")]
    NotConfigured,
    /// No answer (connection, timeout).
    #[error("{0}")]
    Transport(String),
    /// A twirp error answer.
    #[error("{code}: {msg}")]
    Twirp {
        /// The HTTP status.
        status: u16,
        /// Twirp's error code, e.g. `unavailable`.
        code: String,
        /// Twirp's message.
        msg: String,
    },
    /// An answer onair cannot read.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// `ListRooms` does not know the room.
    #[error("the LiveKit room does not exist")]
    NoSuchRoom,
    /// The room metadata is not a JSON object, so there is nothing to merge into.
    #[error("the room metadata is not a JSON object; leaving it alone")]
    MetadataNotAnObject,
}

impl CallError {
    fn transport(e: &reqwest::Error, timeout: Duration) -> Self {
        Self::Transport(if e.is_timeout() {
            format!("no answer within {} s", timeout.as_secs())
        } else if e.is_connect() {
            "cannot connect".into()
        } else {
            "the request failed".into()
        })
    }

    fn from_twirp(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct TwirpError {
            #[serde(default)]
            code: String,
            #[serde(default)]
            msg: String,
        }
        match serde_json::from_slice::<TwirpError>(body) {
            Ok(e) if !e.code.is_empty() => Self::Twirp {
                status,
                code: e.code,
                msg: e.msg,
            },
            _ => Self::Twirp {
                status,
                code: format!("http_{status}"),
                msg: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            },
        }
    }

    /// Worth another try: no answer, or a server-side error.
    fn retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Twirp { status, code, .. } => {
                *status >= 500
                    || matches!(
                        code.as_str(),
                        "unavailable" | "internal" | "unknown" | "deadline_exceeded"
                    )
            }
            Self::NotConfigured
            | Self::Decode(_)
            | Self::NoSuchRoom
            | Self::MetadataNotAnObject => false,
        }
    }
}

/// The answer to `StartRoomCompositeEgress` (an `EgressInfo`; twirp sends
/// proto names, protojson readers accept camelCase too).
#[derive(Deserialize)]
struct EgressReply {
    /// The new egress's id.
    #[serde(default, alias = "egressId")]
    egress_id: String,
}

/// The answer to `ListRooms`.
#[derive(Deserialize)]
struct ListRoomsReply {
    /// The rooms that exist, of those asked for.
    #[serde(default)]
    rooms: Vec<RoomReply>,
}

/// A LiveKit `Room`, the fields onair reads.
#[derive(Deserialize)]
struct RoomReply {
    /// The room name.
    #[serde(default)]
    name: String,
    /// Its application metadata (any string; seed 004 keeps JSON there).
    #[serde(default)]
    metadata: String,
}

/// Sets `recordingStatus` in the metadata JSON, keeping every other key.
fn merge_metadata(current: &str, status: &str) -> Result<String, CallError> {
    let mut object = if current.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<Value>(current) {
            Ok(Value::Object(object)) => object,
            _ => return Err(CallError::MetadataNotAnObject),
        }
    };
    object.insert("recordingStatus".into(), Value::from(status));
    Ok(Value::Object(object).to_string())
}

/// `ws://` → `http://`, `wss://` → `https://` (LiveKit URLs are often given
/// in their WebSocket form), without a trailing slash.
fn http_base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        url.to_owned()
    }
}

/// The egress file type for a path template: `OGG` for `.ogg`, else `MP4`.
fn file_type(path: &str) -> &'static str {
    if path.to_ascii_lowercase().ends_with(".ogg") {
        "OGG"
    } else {
        "MP4"
    }
}

/// The `video` grant of a service token: only what the call needs.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Grant<'a> {
    /// Egress calls.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    room_record: bool,
    /// `ListRooms`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    room_list: bool,
    /// Calls that change one room.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    room_admin: bool,
    /// The room a `roomAdmin` grant is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
}

impl<'a> Grant<'a> {
    fn record() -> Self {
        Self {
            room_record: true,
            ..Self::default()
        }
    }

    fn list() -> Self {
        Self {
            room_list: true,
            ..Self::default()
        }
    }

    fn admin(room: &'a str) -> Self {
        Self {
            room_admin: true,
            room: Some(room),
            ..Self::default()
        }
    }
}

/// The claims of a service token, as LiveKit's `AccessToken` writes them.
#[derive(Serialize)]
struct ServiceClaims<'a> {
    /// The API key.
    iss: &'a str,
    /// Who calls.
    sub: &'static str,
    /// Not before (seconds).
    nbf: u64,
    /// Expiry (seconds).
    exp: u64,
    /// The grant.
    video: Grant<'a>,
}

/// A short-lived HS256 token for one call.
fn service_token(key: &str, secret: &str, grant: Grant<'_>, now: SystemTime) -> String {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let claims = ServiceClaims {
        iss: key,
        sub: "onair",
        nbf: now,
        exp: now + TOKEN_TTL.as_secs(),
        video: grant,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Milliseconds since the Unix epoch.
fn unix_ms(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admission that applies, onair not having asked for a stop.
    fn applied_once(admission: Admission) -> bool {
        matches!(
            admission,
            Admission::Apply {
                stop_requested: false,
                ..
            }
        )
    }

    fn backend() -> Livekit {
        let config = LivekitConfig {
            url: Some("wss://livekit.invalid/".into()),
            api_key: Some("key".into()),
            api_secret: Some("secret".into()),
            ..LivekitConfig::default()
        };
        Livekit::new(&config, reqwest::Client::new())
    }

    #[test]
    fn metadata_is_merged_not_replaced() {
        let merged = merge_metadata(
            r#"{"createdBy":"app","recordingStatus":"STOPPED"}"#,
            "STARTING",
        )
        .unwrap();
        let value: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(
            value,
            json!({"createdBy": "app", "recordingStatus": "STARTING"})
        );
        assert_eq!(
            merge_metadata("", "STARTED").unwrap(),
            r#"{"recordingStatus":"STARTED"}"#
        );
        assert!(matches!(
            merge_metadata("plain text", "STARTED"),
            Err(CallError::MetadataNotAnObject)
        ));
        assert!(merge_metadata("[1]", "STARTED").is_err());
    }

    #[test]
    fn statuses_map_to_seed_004() {
        assert_eq!(metadata_status(RecordingStatus::Initializing), "STARTING");
        assert_eq!(metadata_status(RecordingStatus::Recording), "STARTED");
        assert_eq!(metadata_status(RecordingStatus::Stopping), "STOPPING");
        assert_eq!(metadata_status(RecordingStatus::Inactive), "STOPPED");
        assert_eq!(metadata_status(RecordingStatus::Failed), "FAILED");
    }

    #[test]
    fn urls_and_file_types() {
        assert_eq!(
            http_base_url("wss://lk.example.com/"),
            "https://lk.example.com"
        );
        assert_eq!(
            http_base_url("ws://127.0.0.1:7880"),
            "http://127.0.0.1:7880"
        );
        assert_eq!(
            http_base_url("https://lk.example.com"),
            "https://lk.example.com"
        );
        assert_eq!(file_type("{room_name}-{time}.mp4"), "MP4");
        assert_eq!(file_type("audio/{room_name}.OGG"), "OGG");
    }

    #[test]
    fn service_tokens_carry_livekit_grants() {
        let token = service_token("key", "secret", Grant::admin("r1"), SystemTime::now());
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["key"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        let claims = data.claims;
        assert_eq!(claims["video"], json!({"roomAdmin": true, "room": "r1"}));
        assert_eq!(claims["sub"], "onair");
        let lifetime = claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap();
        assert!(lifetime <= 600, "{lifetime}");
        let record = service_token("key", "secret", Grant::record(), SystemTime::now());
        let payload = record.split('.').nth(1).unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["video"], json!({"roomRecord": true}));
    }

    #[test]
    fn egress_status_reads_protojson() {
        let parse = |v: Value| serde_json::from_value::<EgressStatus>(v).unwrap();
        assert_eq!(parse(json!("EGRESS_ACTIVE")), EgressStatus::Active);
        assert_eq!(parse(json!(3)), EgressStatus::Complete);
        assert_eq!(parse(json!("EGRESS_SOMETHING_NEW")), EgressStatus::Unknown);
        assert_eq!(parse(Value::Null), EgressStatus::Starting);
        assert_eq!(EgressStatus::default(), EgressStatus::Starting);
    }

    #[test]
    fn events_are_admitted_in_order_and_once() {
        let lk = backend();
        lk.inner.register("EG_1", "room", "rec");
        assert_eq!(
            lk.admit("EG_other", 1, EgressStatus::Active),
            Admission::Unknown
        );
        assert!(applied_once(lk.admit("EG_1", 10, EgressStatus::Starting)));
        assert!(applied_once(lk.admit("EG_1", 20, EgressStatus::Active)));
        // The same event again, an older one, and a newer one that goes backwards.
        assert_eq!(lk.admit("EG_1", 20, EgressStatus::Active), Admission::Stale);
        assert_eq!(
            lk.admit("EG_1", 10, EgressStatus::Starting),
            Admission::Stale
        );
        assert_eq!(
            lk.admit("EG_1", 30, EgressStatus::Starting),
            Admission::Stale
        );
        // Same timestamp, further along: newer.
        assert!(applied_once(lk.admit("EG_1", 20, EgressStatus::Ending)));
        assert!(applied_once(lk.admit("EG_1", 40, EgressStatus::Complete)));
        // Nothing after the end, not even a newer final event.
        assert_eq!(lk.admit("EG_1", 50, EgressStatus::Active), Admission::Stale);
        assert_eq!(
            lk.admit("EG_1", 50, EgressStatus::Complete),
            Admission::Stale
        );
    }

    #[tokio::test]
    async fn the_egress_table_survives_a_restart() {
        let store = Arc::new(Store::in_memory().unwrap());
        let before = backend();
        before.attach_store(store.clone());
        before.inner.register("EG_1", "room", "rec");
        assert!(applied_once(before.admit("EG_1", 20, EgressStatus::Active)));
        // The webhook writes the mark once the event is applied.
        let applied = |at: i64, status: EgressStatus| {
            store
                .livekit_event_applied("EG_1", at, status.name(), None, 0)
                .unwrap();
        };
        applied(20, EgressStatus::Active);
        drop(before);

        // A new process: nothing in memory, the same store.
        let after = backend();
        after.attach_store(store.clone());
        assert_eq!(
            after.egress("EG_1", "room").await,
            Some(EgressRef {
                room: "room".into(),
                recording_id: "rec".into()
            })
        );
        assert_eq!(after.egress("EG_other", "").await, None);
        // The ordering state came back too.
        assert_eq!(
            after.admit("EG_1", 20, EgressStatus::Active),
            Admission::Stale
        );
        assert_eq!(
            after.admit("EG_1", 10, EgressStatus::Starting),
            Admission::Stale
        );
        assert!(applied_once(after.admit(
            "EG_1",
            30,
            EgressStatus::Complete
        )));
        applied(30, EgressStatus::Complete);
        drop(after);

        // And the end: nothing more is applied after another restart.
        let again = backend();
        again.attach_store(store.clone());
        assert_eq!(
            again.admit("EG_1", 40, EgressStatus::Complete),
            Admission::Stale
        );
        // `stop` finds the egress by its recording id, and knows it is over.
        again
            .stop(&StopRequest {
                room: "room".into(),
                recording_id: "rec".into(),
            })
            .await
            .unwrap();
    }

    #[test]
    fn twirp_errors_are_read() {
        let e = CallError::from_twirp(
            503,
            br#"{"code":"unavailable","msg":"egress not connected"}"#,
        );
        assert_eq!(e.to_string(), "unavailable: egress not connected");
        assert!(e.retryable());
        let e = CallError::from_twirp(404, br#"{"code":"not_found","msg":"no room"}"#);
        assert!(!e.retryable());
        let e = CallError::from_twirp(502, b"<html>bad gateway</html>");
        assert!(e.retryable());
        assert!(e.to_string().starts_with("http_502"));
    }
}
