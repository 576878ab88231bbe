//! `POST /webhooks/jaas`: 8x8 JaaS webhooks, verified exactly as 8x8's
//! "Check the webhook signatures" page says, turned into recording inputs.
//!
//! Verification: `X-Jaas-Signature: t=<unix seconds>,v1=<base64>[,v1=…]` —
//! the header is split on `,` and each element on its first `=`; `t` is the
//! timestamp and every `v1` a signature (schemes other than `v1` are ignored,
//! against downgrades). The expected signature is base64 HMAC-SHA256 keyed
//! with the endpoint secret exactly as the console shows it (`whsec_…`
//! included) over `t + "." + raw body`; it must equal one of the `v1` values
//! (constant-time), and `t` must be within 5 minutes of now. Events whose
//! `idempotencyKey` was already accepted are acknowledged and not applied
//! again; the keys are in the store, so this holds across restarts.
//!
//! An event counts as accepted only once what it changed is durable, and its
//! key is written in the same transaction as what onair must remember of it
//! (never before: a crash in between would turn 8x8's retry into a
//! "duplicate" and lose the event). A start or end is applied to the room
//! first (the room saves its state as it changes), then its key and the
//! session's ordering mark are written together
//! ([`crate::store::Store::jaas_lifecycle_applied`]); a crash between the two
//! makes the retry apply again, which changes nothing, since a second start
//! of a recording or end of an ended one is a no-op in the state machine.
//! An upload's download job and its key are one transaction
//! ([`crate::store::Store::jaas_download_accepted`]).
//!
//! Answers, all JSON:
//!
//! | status | body | when |
//! |---|---|---|
//! | 200 | `{"result":"applied"}` | a recording start or end was applied to its room |
//! | 200 | `{"result":"accepted"}` | a `RECORDING_UPLOADED`: the download runs in the background |
//! | 200 | `{"result":"ignored"}` | another event type, an `fqn` without a valid room, a room onair does not host |
//! | 200 | `{"result":"duplicate"}` | its `idempotencyKey` was already accepted, or the recording is already catalogued or downloading |
//! | 200 | `{"result":"stale"}` | older (payload `timestamp`) than the session's last applied event |
//! | 400 | `{"code":"invalid_body",…}` | signed correctly but not a JaaS event |
//! | 401 | `{"code":"invalid_signature",…}` | missing or malformed header, no matching `v1`, `t` outside the window |
//! | 413 | `{"code":"body_too_large",…}` | body over 256 KiB |
//!
//! Events map to the room named by the `fqn` (`<appId>/<room>`), with the
//! recording id derived from the JaaS `sessionId` (`backends::jaas`):
//! `RECORDING_STARTED` → the room records (`started`; only a room that is live
//! or has a saved recording takes it, others are ignored); `RECORDING_ENDED` →
//! it stops (`stopped`); `RECORDING_UPLOADED` → the file behind
//! `preAuthenticatedLink` is downloaded into `[storage] path`, off the request
//! path, with retries (`[jaas] download_attempts`, `download_timeout_s`, backoff
//! 2 s × 4ⁿ), then catalogued (provider `jaas`, `durationSec`) and announced
//! with `recording_available`; the catalog entry names the meeting's
//! `participants` and the `initiatorId`. An upload is kept for any valid room id, live
//! or not: by then the meeting has usually ended and everyone left, and 8x8
//! keeps the file only 24 h. A download that failed every attempt is logged
//! as an error and not catalogued.
//!
//! Pending downloads survive a restart: each is journalled in the store
//! before the webhook is answered and forgotten once catalogued or given up;
//! [`resume`] picks them up again (the link's 24 h still bounds the retries).
//! Journals an older onair left in `[storage] path/.jaas-pending/` are moved
//! into the store on the way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::{Outcome, bad_signature, cluster_reachable, parse_event, read_signed_body, rejected};
use crate::app::AppError;
use crate::app::AppState;
use crate::backends::Backend;
use crate::backends::jaas::{self, DownloadError, Jaas};
use crate::catalog::{Location, Recording};
use crate::protocol::now_rfc3339;
use crate::recording::Input;
use crate::store::CatalogError;

/// How far `t` may be from now, either way.
pub const REPLAY_WINDOW_S: u64 = 5 * 60;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-jaas-signature";
/// Where an older onair journalled pending downloads, under `[storage] path`.
const LEGACY_PENDING_DIR: &str = ".jaas-pending";
/// Where downloads are written before they are moved into place, under `[storage] path`.
const INCOMING_DIR: &str = ".incoming";

/// The JaaS webhook routes.
pub fn routes() -> Router<Arc<AppState>> {
    // The body limit is `[server] max_webhook_body_bytes`, layered in `http::router`.
    Router::new().route("/webhooks/jaas", post(receive))
}

async fn receive(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let Backend::Jaas(jaas) = app.rooms.backend().as_ref() else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the jaas backend is not configured",
        ));
    };
    // Until `server::run` calls `resume` at start-up, the first webhook does.
    resume(&app);
    let event = accept(&app, jaas, &headers, body)
        .await
        .inspect_err(rejected)?;
    // A store failure while applying is answered 503 (8x8 retries), not counted.
    Ok(handle(&app, jaas, event).await?.answer())
}

/// Reads and verifies one webhook.
async fn accept(
    app: &AppState,
    jaas: &Jaas,
    headers: &HeaderMap,
    body: Body,
) -> Result<Event, AppError> {
    let body = read_signed_body(
        app,
        headers,
        body,
        axum::http::HeaderName::from_static(SIGNATURE_HEADER),
    )
    .await?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = verify(jaas.webhook_secret(), signature, &body, SystemTime::now()) {
        tracing::warn!(error = %e, "jaas webhook refused");
        return Err(bad_signature(e));
    }
    let event = parse_event(&body, "JaaS webhook event")?;
    cluster_reachable(app)?;
    Ok(event)
}

/// The answer when the store fails: 8x8 retries on a non-2xx answer, and
/// nothing was recorded as seen, so the retry is applied.
fn store_unavailable(e: impl std::fmt::Display) -> AppError {
    tracing::error!(error = %e, "jaas webhook: the store failed");
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the event could not be recorded; retry later",
    )
}

/// The event's idempotency key, if it has one.
fn key_of(event: &Event) -> Option<&str> {
    Some(event.idempotency_key.as_str()).filter(|k| !k.is_empty())
}

/// Whether the event's key was recorded before.
fn seen(app: &AppState, event: &Event) -> Result<bool, AppError> {
    match key_of(event) {
        Some(key) => app
            .store
            .receipt_seen("jaas", key)
            .map_err(store_unavailable),
        None => Ok(false),
    }
}

/// An event that changes nothing: its key is recorded (so a redelivery is
/// answered `duplicate`, as every other), and it is `outcome`.
fn nothing(app: &AppState, event: &Event, outcome: Outcome) -> Result<Outcome, AppError> {
    let Some(key) = key_of(event) else {
        return Ok(outcome);
    };
    let first = app
        .store
        .first_receipt("jaas", key, unix_ms())
        .map_err(store_unavailable)?;
    Ok(if first { outcome } else { Outcome::Duplicate })
}

/// Applies a verified event, at most once. With `[cluster]` its key is first
/// claimed in Redis, on every node at once, so that a duplicate sent to
/// another node (or racing this one) is answered as one; a delivery that
/// could not be applied gives the key back for 8x8's retry.
async fn handle(app: &Arc<AppState>, jaas: &Jaas, event: Event) -> Result<Outcome, AppError> {
    let (Some(cluster), Some(key)) = (app.rooms.cluster(), key_of(&event)) else {
        return handle_here(app, jaas, &event).await;
    };
    let cluster = cluster.clone();
    let key = key.to_owned();
    if !cluster
        .claim_receipt("jaas", &key)
        .await
        .map_err(|e| AppError::cluster_unavailable(&e))?
    {
        tracing::debug!(idempotency_key = %key, event = %event.event_type, "jaas webhook already taken by a node");
        return Ok(Outcome::Duplicate);
    }
    let outcome = handle_here(app, jaas, &event).await;
    if outcome.is_err()
        && let Err(e) = cluster.release_receipt("jaas", &key).await
    {
        tracing::warn!(idempotency_key = %key, error = %e, "cluster: cannot give a jaas webhook key back; its retry counts as a duplicate until it expires");
    }
    outcome
}

/// [`handle`] on this node: its own store's keys and marks (and, with
/// `[cluster]`, the sessions' marks in Redis).
async fn handle_here(app: &Arc<AppState>, jaas: &Jaas, event: &Event) -> Result<Outcome, AppError> {
    if seen(app, event)? {
        tracing::debug!(idempotency_key = %event.idempotency_key, event = %event.event_type, "jaas webhook already seen");
        return Ok(Outcome::Duplicate);
    }
    let Some(room) = jaas::room_of(&event.fqn) else {
        if event.event_type.starts_with("RECORDING_") {
            tracing::warn!(fqn = %event.fqn, event = %event.event_type, "jaas webhook names no valid room");
        }
        return nothing(app, event, Outcome::Ignored);
    };
    if event.session_id.is_empty() {
        return nothing(app, event, Outcome::Ignored);
    }
    let room = room.to_owned();
    match event.event_type.as_str() {
        "RECORDING_STARTED" => lifecycle(app, jaas, event, &room, true).await,
        "RECORDING_ENDED" => lifecycle(app, jaas, event, &room, false).await,
        "RECORDING_UPLOADED" => uploaded(app, jaas, event, room).await,
        _ => nothing(app, event, Outcome::Ignored),
    }
}

/// `RECORDING_STARTED` / `RECORDING_ENDED`: the room's recording state.
/// One at a time: the mark checked is the mark written.
async fn lifecycle(
    app: &Arc<AppState>,
    jaas: &Jaas,
    event: &Event,
    room: &str,
    started: bool,
) -> Result<Outcome, AppError> {
    let _turn = jaas.turn().await;
    // A redelivery that raced the first copy here finds its key now.
    if seen(app, event)? {
        return Ok(Outcome::Duplicate);
    }
    let mark = app
        .store
        .jaas_mark(&event.session_id)
        .map_err(store_unavailable)?;
    // [cluster]: the newest any node applied (this node's `turn` serializes
    // only its own deliveries; the claimed key keeps one event from being
    // applied twice).
    let mark = match app.rooms.cluster() {
        Some(cluster) => mark.max(
            cluster
                .jaas_mark(&event.session_id)
                .await
                .map_err(|e| AppError::cluster_unavailable(&e))?,
        ),
        None => mark,
    };
    let outcome = if !jaas::is_newer(mark, event.timestamp) {
        tracing::debug!(room, session_id = %event.session_id, event = %event.event_type, "stale jaas webhook dropped");
        Outcome::Stale
    } else {
        let recording_id = jaas::recording_id(&event.session_id);
        let input = if started {
            Input::ProviderStarted {
                recording_id: recording_id.clone(),
            }
        } else {
            Input::BackendStopped {
                recording_id: recording_id.clone(),
            }
        };
        // Redis did not answer: nothing recorded as seen, 8x8 retries.
        match app
            .rooms
            .apply_to(room, input)
            .await
            .map_err(|e| AppError::cluster_unavailable(&e))?
        {
            Some(applied) => {
                tracing::info!(room, recording_id, session_id = %event.session_id, event = %event.event_type, status = ?applied.state.status(), "jaas recording update");
                Outcome::Applied
            }
            None => {
                tracing::debug!(room, event = %event.event_type, "jaas webhook for a room onair does not host");
                Outcome::Ignored
            }
        }
    };
    // Only now, with the room's state saved: the key and the mark, together.
    // (The mark moves up only; a stale event leaves it, an ignored one sets
    // it, so an older event about the same session stays stale.)
    app.store
        .jaas_lifecycle_applied(&event.session_id, event.timestamp, key_of(event), unix_ms())
        .map_err(store_unavailable)?;
    if let Some(cluster) = app.rooms.cluster()
        && let Err(e) = cluster
            .raise_jaas_mark(&event.session_id, event.timestamp)
            .await
    {
        tracing::warn!(session_id = %event.session_id, error = %e, "cluster: cannot share a jaas session's mark; an older event sent to another node may still apply");
    }
    Ok(outcome)
}

/// `RECORDING_UPLOADED`: journals the download and starts it; answers at once.
async fn uploaded(
    app: &Arc<AppState>,
    jaas: &Jaas,
    event: &Event,
    room: String,
) -> Result<Outcome, AppError> {
    let data: UploadedData = serde_json::from_value(event.data.clone()).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            crate::protocol::short_detail(&format!("not a RECORDING_UPLOADED payload: {e}")),
        )
    })?;
    let link = data.pre_authenticated_link.trim();
    if !(link.starts_with("https://") || link.starts_with("http://")) {
        tracing::warn!(room, session_id = %event.session_id, "jaas RECORDING_UPLOADED without a download link");
        return nothing(app, event, Outcome::Ignored);
    }
    let Some(recording_id) = catalog_id(
        app,
        jaas,
        &event.session_id,
        data.recording_session_id.as_deref(),
    )
    .await?
    else {
        tracing::info!(room, session_id = %event.session_id, "jaas recording already catalogued or downloading");
        return nothing(app, event, Outcome::Duplicate);
    };
    let duration_s = data
        .duration_sec
        .filter(|d| d.is_finite() && *d >= 0.0)
        .or_else(|| match (data.start_timestamp, data.end_timestamp) {
            (Some(start), Some(end)) if end > start => {
                Some(end.saturating_sub(start) as f64 / 1000.0)
            }
            _ => None,
        })
        .unwrap_or(0.0);
    let job = Job {
        recording_id,
        room,
        session_id: event.session_id.clone(),
        recording_session_id: data.recording_session_id,
        link: link.to_owned(),
        duration_s,
        initiator_id: data.initiator_id.filter(|id| !id.is_empty()),
        participants: data
            .participants
            .into_iter()
            .map(|p| p.id)
            .filter(|id| !id.is_empty())
            .collect(),
        received_ms: unix_ms(),
    };
    let journal = serde_json::to_string(&job).expect("a job serializes");
    match app
        .catalog
        .store()
        .jaas_download_accepted(&job.recording_id, &journal, key_of(event), job.received_ms)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // A redelivery that raced the first copy: that one downloads.
            jaas.release(&job.recording_id);
            return Ok(Outcome::Duplicate);
        }
        Err(CatalogError::Cluster(e)) => {
            jaas.release(&job.recording_id);
            return Err(AppError::cluster_unavailable(&e));
        }
        Err(e) => {
            jaas.release(&job.recording_id);
            return Err(store_unavailable(e));
        }
    }
    tracing::info!(
        room = %job.room,
        recording_id = %job.recording_id,
        session_id = %job.session_id,
        host = host_of(&job.link),
        "jaas recording uploaded; downloading"
    );
    tokio::spawn(download(app.clone(), job));
    Ok(Outcome::Accepted)
}

/// The catalog id for an upload: the session's recording id (the one
/// `started` announced) unless that is taken, else one that also names the
/// recording session. `None` (claiming nothing) when both are taken.
async fn catalog_id(
    app: &AppState,
    jaas: &Jaas,
    session_id: &str,
    recording_session_id: Option<&str>,
) -> Result<Option<String>, AppError> {
    let primary = jaas::recording_id(session_id);
    if !taken(app, jaas, &primary).await? && jaas.claim(&primary) {
        return Ok(Some(primary));
    }
    let Some(recording_session_id) = recording_session_id.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let second = jaas::upload_recording_id(session_id, recording_session_id);
    Ok((!taken(app, jaas, &second).await? && jaas.claim(&second)).then_some(second))
}

/// Whether a catalog id is being downloaded here or is catalogued.
async fn taken(app: &AppState, jaas: &Jaas, id: &str) -> Result<bool, AppError> {
    Ok(jaas.claimed(id) || app.catalog.get(id).await?.is_some())
}

/// A download onair owes: journalled as JSON until it is catalogued or given up.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    /// The catalog id.
    recording_id: String,
    /// The room.
    room: String,
    /// The JaaS meeting session.
    session_id: String,
    /// The JaaS recording session, if given.
    recording_session_id: Option<String>,
    /// The pre-authenticated link (a credential: never logged).
    link: String,
    /// Length in seconds.
    duration_s: f64,
    /// Who started the recording (the JaaS user id), for the catalog.
    #[serde(default)]
    initiator_id: Option<String>,
    /// Who was in the meeting (JaaS user ids), for the catalog.
    #[serde(default)]
    participants: Vec<String>,
    /// When the webhook arrived (ms since the epoch): the link dies 24 h later.
    received_ms: i64,
}

impl Job {
    /// How long the link has left.
    fn link_left(&self) -> Duration {
        let age = Duration::from_millis(unix_ms().saturating_sub(self.received_ms).max(0) as u64);
        jaas::LINK_LIFETIME.saturating_sub(age)
    }
}

/// Runs a job's attempts until it is catalogued, given up, or the server shuts down
/// (then the journal keeps it for the next start).
async fn download(app: Arc<AppState>, job: Job) {
    let Backend::Jaas(jaas) = app.rooms.backend().as_ref() else {
        return;
    };
    let attempts = jaas.attempts();
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        let result = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            result = fetch(&app, jaas, &job) => result,
        };
        match result {
            Ok(recording) => match catalogue(&app, &job, recording).await {
                Ok(()) => {
                    finish(&app, jaas, &job).await;
                    return;
                }
                // Not catalogued (the catalog's store, or the cluster's
                // Redis, did not answer): another attempt, like a failed download.
                Err(e) => {
                    tracing::warn!(recording_id = %job.recording_id, attempt, attempts, error = %e, "jaas recording downloaded but not catalogued");
                    last_error = e.to_string();
                }
            },
            Err(e) => {
                tracing::warn!(recording_id = %job.recording_id, attempt, attempts, error = %e, "jaas download attempt failed");
                last_error = e.to_string();
                if e.is_permanent() {
                    break;
                }
            }
        }
        if attempt == attempts {
            break;
        }
        let wait = jaas::jittered(jaas::retry_delay(attempt));
        if wait >= job.link_left() {
            last_error = format!("{last_error}; the link expires before the next attempt");
            break;
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::error!(
        room = %job.room,
        recording_id = %job.recording_id,
        session_id = %job.session_id,
        attempts,
        error = %last_error,
        "jaas recording could not be downloaded; it is not catalogued"
    );
    finish(&app, jaas, &job).await;
}

/// One attempt: the file into `[storage] path/<room>/`, returned as a recording.
async fn fetch(app: &AppState, jaas: &Jaas, job: &Job) -> Result<Recording, DownloadError> {
    let storage = &app.config.storage;
    let incoming = storage.path.join(INCOMING_DIR);
    tokio::fs::create_dir_all(&incoming).await?;
    let temp = TempFile(incoming.join(uuid::Uuid::new_v4().to_string()));
    let size = jaas
        .download(&job.link, &temp.0, storage.max_upload_bytes)
        .await?;
    // A room named like onair's own directories (`.incoming`) gets its own.
    let dir = if job.room.starts_with('.') {
        storage.path.join(format!("_{}", job.room))
    } else {
        storage.path.join(&job.room)
    };
    tokio::fs::create_dir_all(&dir).await?;
    let name = jaas::file_name(&job.link, &format!("{}-{}.mp4", job.room, job.recording_id));
    let mut path = dir.join(crate::storage::file_name(
        &format!("{}-", job.recording_id),
        &name,
    ));
    // Never move over another file.
    if tokio::fs::try_exists(&path).await.unwrap_or(true) {
        let prefix = format!("{}-{}-", job.recording_id, uuid::Uuid::new_v4().simple());
        path = dir.join(crate::storage::file_name(&prefix, &name));
    }
    let path = std::path::absolute(&path).unwrap_or(path);
    temp.persist(&path).await?;
    Ok(Recording {
        id: job.recording_id.clone(),
        room: job.room.clone(),
        name,
        duration_s: job.duration_s,
        size_bytes: size,
        location: Location::File(path),
        provider: "jaas".into(),
        created_at: now_rfc3339(),
        participants: job.participants.clone(),
        initiator: job.initiator_id.clone(),
    })
}

/// Catalogues a downloaded recording and tells the room, once.
/// `Err` when nothing was written (the copy is dropped; a later attempt
/// downloads it again).
async fn catalogue(app: &AppState, job: &Job, recording: Recording) -> Result<(), CatalogError> {
    // 8x8 names who started it: that user (the `sub` of their onair tokens)
    // owns it and gets its notifications. Set before cataloguing, which
    // writes the owner's notification in the same transaction.
    if let Some(initiator) = job.initiator_id.as_deref()
        && let Err(e) = app
            .catalog
            .store()
            .set_owner(&recording.id, initiator)
            .await
    {
        tracing::error!(error = %e, "cannot record the recording's owner");
    }
    let event = app.catalog.available(&recording);
    let path = match &recording.location {
        Location::File(path) => Some(path.clone()),
        Location::External(_) | Location::Object { .. } => None,
    };
    let size = recording.size_bytes;
    let inserted = app.catalog.insert(recording).await;
    if let Ok(true) = inserted {
        tracing::info!(
            room = %job.room,
            recording_id = %job.recording_id,
            size_bytes = size,
            duration_s = job.duration_s,
            initiator = job.initiator_id.as_deref().unwrap_or(""),
            participants = job.participants.len(),
            "jaas recording catalogued"
        );
        app.rooms.announce(&job.room, event).await;
    } else if let Some(path) = path {
        // Catalogued meanwhile, or not catalogued now: drop the copy.
        let _ = tokio::fs::remove_file(path).await;
    }
    inserted.map(drop)
}

/// Forgets a job: its journal entry and its claim.
async fn finish(app: &AppState, jaas: &Jaas, job: &Job) {
    if let Err(e) = app
        .catalog
        .store()
        .jaas_download_done(&job.recording_id)
        .await
    {
        // Harmless: the next start finds it catalogued (or given up) and forgets it.
        tracing::warn!(recording_id = %job.recording_id, error = %e, "cannot remove a jaas download from the journal");
    }
    jaas.release(&job.recording_id);
}

/// Picks up the downloads an earlier run left pending (once per process;
/// later calls return at once). Call it when the server starts.
pub fn resume(app: &Arc<AppState>) {
    let Backend::Jaas(jaas) = app.rooms.backend().as_ref() else {
        return;
    };
    if !jaas.first_resume() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        import_legacy_journal(&app).await;
        let jobs = match app.catalog.store().jaas_downloads().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the pending jaas downloads");
                return;
            }
        };
        let Backend::Jaas(jaas) = app.rooms.backend().as_ref() else {
            return;
        };
        for (recording_id, journal) in jobs {
            let job = match serde_json::from_str::<Job>(&journal) {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(%recording_id, error = %e, "unreadable pending jaas download; removed");
                    let _ = app.catalog.store().jaas_download_done(&recording_id).await;
                    continue;
                }
            };
            if job.link_left().is_zero() {
                tracing::error!(room = %job.room, recording_id = %job.recording_id, "jaas recording link expired before it could be downloaded; it is not catalogued");
                finish(&app, jaas, &job).await;
                continue;
            }
            if let Ok(Some(_)) = app.catalog.get(&job.recording_id).await {
                // Catalogued just before a crash: only the journal entry was left.
                finish(&app, jaas, &job).await;
                continue;
            }
            if !jaas.claim(&job.recording_id) {
                continue;
            }
            tracing::info!(room = %job.room, recording_id = %job.recording_id, "resuming a pending jaas download");
            tokio::spawn(download(app.clone(), job));
        }
    });
}

/// Moves the file journal of an older onair (`[storage] path/.jaas-pending/`)
/// into the store.
async fn import_legacy_journal(app: &AppState) {
    let dir = app.config.storage.path.join(LEGACY_PENDING_DIR);
    let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let job = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<Job>(&bytes),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read a pending jaas download");
                continue;
            }
        };
        let imported = match job {
            Ok(job) => {
                let journal = serde_json::to_string(&job).expect("a job serializes");
                app.catalog
                    .store()
                    .jaas_download_accepted(&job.recording_id, &journal, None, job.received_ms)
                    .await
                    .inspect_err(
                        |e| tracing::error!(error = %e, "cannot journal a pending jaas download"),
                    )
                    .is_ok()
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "unreadable pending jaas download; removed");
                true
            }
        };
        if imported {
            let _ = tokio::fs::remove_file(&path).await;
        }
    }
}

/// A temporary file removed unless it is moved into place.
struct TempFile(PathBuf);

impl TempFile {
    async fn persist(self, to: &Path) -> std::io::Result<()> {
        tokio::fs::rename(&self.0, to).await?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The host of a link, for logs (the rest of a pre-authenticated link is a credential).
fn host_of(link: &str) -> String {
    reqwest::Url::parse(link)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A JaaS webhook event, the fields onair reads; unknown fields are ignored.
/// Public (fields private) so that the fuzzer parses into the handler's type.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Event {
    /// `RECORDING_STARTED`, `RECORDING_ENDED`, `RECORDING_UPLOADED`, …
    event_type: String,
    /// The meeting session.
    session_id: String,
    /// When the event happened, ms since the epoch (the order of truth).
    timestamp: i64,
    /// `<appId>/<room>`.
    fqn: String,
    /// Identical for redeliveries of one event.
    idempotency_key: String,
    /// The event's own fields.
    data: Value,
}

/// `data` of `RECORDING_UPLOADED`. Public (fields private) for the fuzzer.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UploadedData {
    /// Who was in the meeting.
    participants: Vec<JaasParticipant>,
    /// Where the file is, for 24 h.
    pre_authenticated_link: String,
    /// The recording initiator's user id.
    initiator_id: Option<String>,
    /// Length in seconds.
    duration_sec: Option<f64>,
    /// When recording started, ms since the epoch.
    start_timestamp: Option<i64>,
    /// When recording ended, ms since the epoch.
    end_timestamp: Option<i64>,
    /// The recording session (several per meeting session are possible).
    recording_session_id: Option<String>,
}

/// A participant in `RECORDING_UPLOADED`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JaasParticipant {
    /// The JaaS user id.
    id: String,
}

/// Why a webhook's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `X-Jaas-Signature` header.
    #[error("the X-Jaas-Signature header is missing")]
    MissingHeader,
    /// onair has no secret to check with.
    #[error("jaas webhook_secret is not configured")]
    NotConfigured,
    /// The header has no `t` or no `v1`.
    #[error("the X-Jaas-Signature header needs t=<seconds> and at least one v1=<signature>")]
    Malformed,
    /// No `v1` signature matches.
    #[error("no v1 signature matches the body")]
    Mismatch,
    /// `t` is too far from now.
    #[error("the signature timestamp is outside the {REPLAY_WINDOW_S} s window")]
    OutsideWindow,
}

/// Verifies an `X-Jaas-Signature` over `body` as 8x8 documents it, plus the replay window.
/// Public for the fuzzer (`fuzz/`) and `tests/fuzz_corpus.rs`.
pub fn verify(
    secret: Option<&str>,
    header: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), VerifyError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(VerifyError::MissingHeader)?;
    let secret = secret.ok_or(VerifyError::NotConfigured)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        // Base64 values may end in `=`: split on the first one only.
        let Some((prefix, value)) = element.split_once('=') else {
            continue;
        };
        match prefix.trim() {
            "t" if timestamp.is_none() => timestamp = Some(value.trim()),
            "t" => return Err(VerifyError::Malformed),
            "v1" => signatures.push(value.trim()),
            // Other schemes are ignored (downgrade protection).
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    let seconds: u64 = timestamp.parse().map_err(|_| VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures.iter().any(|signature| {
        base64::engine::general_purpose::STANDARD
            .decode(signature)
            // Constant-time comparison.
            .is_ok_and(|presented| mac.clone().verify_slice(&presented).is_ok())
    });
    if !matched {
        return Err(VerifyError::Mismatch);
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(seconds) > REPLAY_WINDOW_S {
        return Err(VerifyError::OutsideWindow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example on 8x8's "Check the webhook signatures" page.
    const DOC_SECRET: &str = "whsec_9635df66714a4cf088ee9d0979dd3bf6";
    const DOC_T: u64 = 1632490060;
    const DOC_SIGNATURE: &str = "xlzqEojlh4qb21sQpXYsWgyK8x9HVpz+RQldsv18rV0=";
    const DOC_BODY: &str = r#"{"eventType":"PARTICIPANT_JOINED","sessionId":"9a441d60-ceaf-4eba-b0a8-a7d940a76e1b","timestamp":1632490058278,"fqn":"vpaas-magic-cookie-96f0941768964ab380ed0fbada7a502f/sampleappromanticshiftsstripas","idempotencyKey":"9e9e7420-562d-4659-8e22-44b9b22aaa49","customerId":"96f0941768964ab380ed0fbada7a502f","appId":"vpaas-magic-cookie-96f0941768964ab380ed0fbada7a502f","data":{"avatar":"","name":"Test User","id":"auth0|5f903d7a77f3b4006eb8e67d","participantJid":"fc1ea14a-9bca-4218-a563-8c627e803d56@8x8.vc","moderator":true,"email":"test.user@company.com"}}"#;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn check(header: &str, now: u64) -> Result<(), VerifyError> {
        verify(Some(DOC_SECRET), Some(header), DOC_BODY.as_bytes(), at(now))
    }

    #[test]
    fn the_documented_example_verifies() {
        let header = format!("t={DOC_T},v1={DOC_SIGNATURE}");
        assert_eq!(check(&header, DOC_T), Ok(()));
        assert_eq!(check(&header, DOC_T + REPLAY_WINDOW_S), Ok(()));
        assert_eq!(check(&header, DOC_T - REPLAY_WINDOW_S), Ok(()));
    }

    #[test]
    fn several_signatures_and_other_schemes() {
        let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let header = format!("t={DOC_T},v0={DOC_SIGNATURE},v1={other},v1={DOC_SIGNATURE}");
        assert_eq!(check(&header, DOC_T), Ok(()));
        let header = format!(" t={DOC_T} , v1={DOC_SIGNATURE} ");
        assert_eq!(check(&header, DOC_T), Ok(()));
        // A valid signature under another scheme does not count.
        let header = format!("t={DOC_T},v0={DOC_SIGNATURE}");
        assert_eq!(check(&header, DOC_T), Err(VerifyError::Malformed));
        let header = format!("t={DOC_T},v1={other},v2={DOC_SIGNATURE}");
        assert_eq!(check(&header, DOC_T), Err(VerifyError::Mismatch));
    }

    #[test]
    fn refusals() {
        let good = format!("t={DOC_T},v1={DOC_SIGNATURE}");
        assert_eq!(
            verify(Some(DOC_SECRET), None, DOC_BODY.as_bytes(), at(DOC_T)),
            Err(VerifyError::MissingHeader)
        );
        assert_eq!(
            verify(None, Some(&good), DOC_BODY.as_bytes(), at(DOC_T)),
            Err(VerifyError::NotConfigured)
        );
        // The secret without its `whsec_` prefix is another key.
        assert_eq!(
            verify(
                Some("9635df66714a4cf088ee9d0979dd3bf6"),
                Some(&good),
                DOC_BODY.as_bytes(),
                at(DOC_T)
            ),
            Err(VerifyError::Mismatch)
        );
        let tampered = DOC_BODY.replace("Test User", "Test Usr");
        assert_eq!(
            verify(
                Some(DOC_SECRET),
                Some(&good),
                tampered.as_bytes(),
                at(DOC_T)
            ),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = format!("t={},v1={DOC_SIGNATURE}", DOC_T + 1);
        assert_eq!(check(&moved, DOC_T), Err(VerifyError::Mismatch));
        assert_eq!(
            check(&good, DOC_T + REPLAY_WINDOW_S + 1),
            Err(VerifyError::OutsideWindow)
        );
        assert_eq!(
            check(&good, DOC_T - REPLAY_WINDOW_S - 1),
            Err(VerifyError::OutsideWindow)
        );
        for malformed in [
            format!("v1={DOC_SIGNATURE}"),
            format!("t={DOC_T}"),
            format!("t=soon,v1={DOC_SIGNATURE}"),
            format!("t={DOC_T},t={DOC_T},v1={DOC_SIGNATURE}"),
            "garbage".to_owned(),
        ] {
            assert_eq!(
                check(&malformed, DOC_T),
                Err(VerifyError::Malformed),
                "{malformed}"
            );
        }
        assert_eq!(
            check(&format!("t={DOC_T},v1=not base64!"), DOC_T),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn events_parse_leniently() {
        let event: Event = serde_json::from_str(DOC_BODY).unwrap();
        assert_eq!(event.event_type, "PARTICIPANT_JOINED");
        assert_eq!(event.timestamp, 1632490058278);
        // 8x8's RECORDING_UPLOADED example.
        let uploaded: Event = serde_json::from_value(json!({
            "idempotencyKey": "c2b42ad3d-12a6-5908-cf38-f21ae2451fc0",
            "customerId": "c2824d584eac4489a1e32e4e164d5a3c",
            "appId": "vpaas-magic-cookie-c2824d584eac4489a1e32e4e164d5a3c",
            "eventType": "RECORDING_UPLOADED",
            "sessionId": "c3348153-1027-4382-afad-5ae91b433c26",
            "timestamp": 1600952817465_i64,
            "fqn": "vpaas-magic-cookie-c2824d584eac4489a1e32e4e164d5a3c/testroom2",
            "data": {
                "participants": [
                    {"name": "Jane Doe", "avatar": "https://link.to/user/avatar/picture1", "id": "uniqueUserIdentifier1"},
                    {"name": "John Doe ", "avatar": "https://link.to/user/avatar/picture2", "id": "uniqueUserIdentifier2"}
                ],
                "preAuthenticatedLink": "https://objectstorage.us-phoenix-1.oraclecloud.com/p/x/o/testroom2_2020-09-24-12-01-07.mp4",
                "share": true,
                "initiatorId": "uniqueUserIdentifier1",
                "durationSec": 15,
                "startTimestamp": 1612175247396_i64,
                "endTimestamp": 1612175263000_i64,
                "recordingSessionId": "nkdsnfkdfkjdsfdsjklds"
            }
        }))
        .unwrap();
        let data: UploadedData = serde_json::from_value(uploaded.data).unwrap();
        assert_eq!(data.duration_sec, Some(15.0));
        assert_eq!(data.participants.len(), 2);
        assert_eq!(data.initiator_id.as_deref(), Some("uniqueUserIdentifier1"));
        assert_eq!(
            data.recording_session_id.as_deref(),
            Some("nkdsnfkdfkjdsfdsjklds")
        );
    }
}
