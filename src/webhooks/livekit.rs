//! `POST /webhooks/livekit`: LiveKit's (and OpenVidu 3's) webhooks, verified
//! exactly as LiveKit's `WebhookReceiver` does, turned into recording inputs.
//!
//! Verification: the `Authorization` header (the bare token, no `Bearer`) is
//! an HS256 JWT whose `iss` is the API key (selecting the secret), with `exp`
//! required and checked with a small leeway, and whose `sha256` claim is the
//! standard-base64 SHA-256 of the raw body, compared in constant time. On top
//! of that, a 5-minute replay window: the token must have been made (its
//! `nbf`/`iat`) within the last 5 minutes, as LiveKit's are; and event ids
//! already received (kept in the store for a day, across restarts) are
//! acknowledged without being applied again.
//!
//! An event id is recorded only once the event is applied: the room saves
//! its state as it changes, the catalog its entry, and then the egress's
//! ordering mark and the event id are written in one transaction
//! (`Store::livekit_event_applied`). A crash before that write leaves the
//! event unseen, so LiveKit's retry is applied again — harmless, because
//! every egress input is idempotent (a second `EGRESS_ACTIVE` or
//! `EGRESS_COMPLETE` changes nothing in the state machine, and a recording
//! is catalogued once). Recording the id first would turn that retry into a
//! "duplicate" and lose the event. Within one process the in-memory mark
//! (`Livekit::admit`) keeps two copies arriving together from both applying.
//!
//! Answers, all JSON:
//!
//! | status | body | when |
//! |---|---|---|
//! | 200 | `{"result":"applied"}` | the event was applied |
//! | 200 | `{"result":"ignored"}` | not about an egress onair started (other events, other egresses) |
//! | 200 | `{"result":"duplicate"}` | an event about onair's egress whose `id` was already received (a replay or redelivery) |
//! | 200 | `{"result":"stale"}` | older than what was applied for that egress, or after its end |
//! | 400 | `{"code":"invalid_body",…}` | signed correctly but not a webhook event |
//! | 401 | `{"code":"invalid_signature",…}` | missing header, bad token, wrong key, expired, outside the replay window, body checksum mismatch |
//! | 413 | `{"code":"body_too_large",…}` | body over 1 MiB |
//!
//! Egress statuses map to the room's recording (SPEC §4): `EGRESS_STARTING`
//! changes nothing (the room is already `initializing`); `EGRESS_ACTIVE`
//! confirms the start; `EGRESS_ENDING` stops the recording as if the API had
//! asked (a no-op when onair asked; an egress that ends on LiveKit's side,
//! e.g. its room closed, passes through `stopping`); `EGRESS_COMPLETE` ends it
//! and catalogues the file (`recording_available`); `EGRESS_FAILED`,
//! `EGRESS_ABORTED` and `EGRESS_LIMIT_REACHED` fail it with the egress's
//! `error` (or the status) as the reason, except an `EGRESS_ABORTED` after
//! onair asked to stop, which is a plain stop (LiveKit aborts an egress
//! stopped before it started). An `EGRESS_LIMIT_REACHED` egress that wrote a
//! file still has it catalogued; so does a `EGRESS_COMPLETE` that arrives
//! after the room gave up waiting (start timeout): the file exists.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Outcome, bad_signature, cluster_reachable, parse_event, read_signed_body, rejected};
use crate::app::AppError;
use crate::app::AppState;
use crate::backends::Backend;
use crate::backends::livekit::{Admission, EgressRef, EgressStatus, Livekit};
use crate::catalog::{Location, Recording};
use crate::config::LivekitConfig;
use crate::protocol::now_rfc3339;
use crate::recording::{Actor, Input};
use crate::store::CatalogError;

/// Clock skew tolerated on `exp` and `nbf` (LiveKit's `TokenVerifier` default).
pub const LEEWAY_S: u64 = 10;
/// How old a webhook token may be: LiveKit signs each delivery with a token
/// valid for 5 minutes.
pub const REPLAY_WINDOW_S: u64 = 5 * 60;

/// The livekit webhook routes.
pub fn routes() -> Router<Arc<AppState>> {
    // The body limit is `[server] max_webhook_body_bytes`, layered in `http::router`.
    Router::new().route("/webhooks/livekit", post(receive))
}

async fn receive(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let Backend::Livekit(livekit) = app.rooms.backend().as_ref() else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the livekit backend is not configured",
        ));
    };
    let outcome = accept(&app, livekit, &headers, body)
        .await
        .inspect_err(rejected)?;
    Ok(outcome.answer())
}

/// Reads, verifies and applies one webhook.
async fn accept(
    app: &Arc<AppState>,
    livekit: &Livekit,
    headers: &HeaderMap,
    body: Body,
) -> Result<Outcome, AppError> {
    let body = read_signed_body(app, headers, body, header::AUTHORIZATION).await?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = verify(&app.config.livekit, authorization, &body, SystemTime::now()) {
        tracing::warn!(error = %e, "livekit webhook refused");
        return Err(bad_signature(e));
    }
    let event: WebhookEvent = parse_event(&body, "LiveKit webhook event")?;
    cluster_reachable(app)?;
    handle(app, livekit, event).await
}

/// Applies a verified event, at most once and never out of order.
/// `Err` (503) when the cluster's Redis did not answer: nothing is
/// remembered, so LiveKit's retry is applied. With `[cluster]` the id of an
/// event about one of onair's egresses is claimed in Redis, on every node at
/// once, so that a duplicate sent to another node is answered as one.
async fn handle(
    app: &Arc<AppState>,
    livekit: &Livekit,
    event: WebhookEvent,
) -> Result<Outcome, AppError> {
    // LiveKit sends every room, participant and track event here too: only
    // egress events about onair's egresses go further (and touch the store).
    let Some(info) = event
        .egress_info
        .filter(|info| event.event.starts_with("egress_") && !info.egress_id.is_empty())
    else {
        return Ok(Outcome::Ignored);
    };
    let Some(egress) = livekit.egress(&info.egress_id, &info.room_name).await else {
        // With [cluster], the lookup may have missed for want of Redis.
        cluster_reachable(app)?;
        tracing::debug!(egress_id = %info.egress_id, room = %info.room_name, "livekit webhook about an egress onair did not start");
        return Ok(Outcome::Ignored);
    };
    let event_id = Some(event.id.as_str()).filter(|id| !id.is_empty());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let cluster = app.rooms.cluster().cloned();
    if let (Some(cluster), Some(id)) = (&cluster, event_id)
        && !cluster
            .claim_receipt("livekit", id)
            .await
            .map_err(|e| AppError::cluster_unavailable(&e))?
    {
        tracing::debug!(event_id = id, "livekit webhook already taken by a node");
        return Ok(Outcome::Duplicate);
    }
    if let Some(id) = event_id {
        match app.store.receipt_seen("livekit", id) {
            Ok(true) => {
                tracing::debug!(event_id = id, "livekit webhook already received");
                return Ok(Outcome::Duplicate);
            }
            Ok(false) => {}
            // Applying it is safe: events are ordered per egress and a file is catalogued once.
            Err(e) => tracing::error!(event_id = id, error = %e, "cannot read livekit webhook ids"),
        }
    }
    let (stop_requested, before) = match livekit.admit(
        &info.egress_id,
        info.updated_at,
        info.status,
    ) {
        Admission::Apply {
            stop_requested,
            before,
        } => (stop_requested, before),
        Admission::Stale => {
            tracing::debug!(egress_id = %info.egress_id, status = info.status.name(), "stale livekit webhook dropped");
            // Remembered, so that a redelivery is answered as one.
            if let Some(id) = event_id
                && let Err(e) = app.store.first_receipt("livekit", id, now_ms)
            {
                tracing::error!(event_id = id, error = %e, "cannot record a livekit webhook id");
            }
            return Ok(Outcome::Stale);
        }
        Admission::Unknown => return Ok(Outcome::Ignored),
    };
    // A cluster: the egress's mark is shared, so an event older than one
    // another node applied is stale here too.
    let shared = match &cluster {
        Some(cluster) => match cluster
            .admit_egress_event(
                &info.egress_id,
                info.updated_at,
                info.status.rank(),
                info.status.is_final(),
            )
            .await
        {
            Ok(Some(admission)) => Some(admission),
            Ok(None) => {
                livekit.readmit(&info.egress_id, before);
                tracing::debug!(egress_id = %info.egress_id, status = info.status.name(), "livekit webhook older than one another node applied");
                return Ok(Outcome::Stale);
            }
            Err(e) => {
                livekit.readmit(&info.egress_id, before);
                release_claim(cluster, event_id).await;
                return Err(AppError::cluster_unavailable(&e));
            }
        },
        None => None,
    };
    tracing::info!(
        room = %egress.room,
        recording_id = %egress.recording_id,
        egress_id = %info.egress_id,
        event = %event.event,
        status = info.status.name(),
        "livekit egress update"
    );
    let applied = match apply(app, &egress, &info, stop_requested).await {
        // Ended with a file (complete, or cut at its limit): catalogued.
        Ok(())
            if matches!(
                info.status,
                EgressStatus::Complete | EgressStatus::LimitReached
            ) =>
        {
            catalogue(app, &egress, &info).await.map_err(AppError::from)
        }
        Ok(()) => Ok(()),
        Err(e) => Err(AppError::cluster_unavailable(&e)),
    };
    if let Err(e) = applied {
        // Not applied (or its file not catalogued): the egress's mark and the
        // event's id go back, so the retry is neither stale nor a duplicate,
        // and applying it again changes nothing that was.
        livekit.readmit(&info.egress_id, before);
        if let Some(cluster) = &cluster {
            if let Some(admission) = shared
                && let Err(e) = cluster.readmit_egress_event(admission).await
            {
                tracing::warn!(egress_id = %info.egress_id, error = %e, "cluster: cannot take a livekit egress mark back");
            }
            release_claim(cluster, event_id).await;
        }
        return Err(e);
    }
    // Only now, with the room's state and the catalog saved.
    if let Err(e) = app.store.livekit_event_applied(
        &info.egress_id,
        info.updated_at,
        info.status.name(),
        event_id,
        now_ms,
    ) {
        // A retry after a restart is applied again, which changes nothing.
        tracing::error!(egress_id = %info.egress_id, error = %e, "cannot record a livekit egress event");
    }
    Ok(Outcome::Applied)
}

/// Gives the event's id back to the cluster: its delivery was not applied,
/// and LiveKit's retry must be.
async fn release_claim(cluster: &Arc<crate::cluster::Cluster>, event_id: Option<&str>) {
    if let Some(id) = event_id
        && let Err(e) = cluster.release_receipt("livekit", id).await
    {
        tracing::warn!(event_id = id, error = %e, "cluster: cannot give a livekit event id back");
    }
}

/// Feeds the egress's new status to its room; `Err` when the cluster's Redis
/// did not answer. Its file, if it ended with one, is catalogued next ([`catalogue`]).
async fn apply(
    app: &Arc<AppState>,
    egress: &EgressRef,
    info: &EgressInfo,
    stop_requested: bool,
) -> Result<(), crate::cluster::ClusterError> {
    let rooms = &app.rooms;
    let recording_id = egress.recording_id.clone();
    let input = match info.status {
        EgressStatus::Starting | EgressStatus::Unknown => None,
        EgressStatus::Active => Some(Input::BackendRecording { recording_id }),
        EgressStatus::Ending => Some(Input::Stop {
            actor: Actor {
                participant: None,
                may_record: true,
            },
            recording_id,
        }),
        EgressStatus::Complete => Some(Input::BackendStopped { recording_id }),
        EgressStatus::Aborted if stop_requested => Some(Input::BackendStopped { recording_id }),
        EgressStatus::Failed | EgressStatus::Aborted | EgressStatus::LimitReached => {
            let reason = if info.error.trim().is_empty() {
                info.status.name().to_owned()
            } else {
                info.error.clone()
            };
            Some(Input::BackendFailed {
                recording_id,
                reason,
            })
        }
    };
    if let Some(input) = input {
        rooms.apply_to(&egress.room, input).await?;
    }
    Ok(())
}

/// Catalogues the file of an egress that LiveKit reports finished, given its
/// `EgressInfo` as LiveKit wrote it (a `ListEgress` item; reconciliation
/// calls this), exactly as an `egress_ended` webhook does: once, announced.
pub async fn catalogue_reported(app: &Arc<AppState>, egress: &EgressRef, info: &Value) {
    match EgressInfo::deserialize(info) {
        Ok(info) => {
            // Logged by the catalog if it fails; the next reconciliation reports it again.
            let _ = catalogue(app, egress, &info).await;
        }
        Err(e) => {
            tracing::warn!(room = %egress.room, recording_id = %egress.recording_id, error = %e, "cannot read a livekit egress's file")
        }
    }
}

/// Catalogues the egress's file and announces it, once; `Err` (nothing catalogued) when
/// the catalog's store did not answer. The location is kept as LiveKit
/// reported it; one in `[livekit] s3_bucket` is recognized as an object
/// there whenever the file is read (`Storage::object`).
async fn catalogue(
    app: &Arc<AppState>,
    egress: &EgressRef,
    info: &EgressInfo,
) -> Result<(), CatalogError> {
    let Some(file) = info.file_results.first().or(info.file.as_ref()) else {
        tracing::warn!(room = %egress.room, recording_id = %egress.recording_id, "livekit egress ended without a file");
        return Ok(());
    };
    let location = if file.location.is_empty() {
        file.filename.clone()
    } else {
        file.location.clone()
    };
    if location.is_empty() {
        tracing::warn!(room = %egress.room, recording_id = %egress.recording_id, "livekit egress file has no name or location");
        return Ok(());
    }
    let name = file_name(&file.filename)
        .or_else(|| file_name(&file.location))
        .unwrap_or_else(|| format!("{}.mp4", egress.recording_id));
    let duration_ns = if file.duration > 0 {
        file.duration
    } else if file.started_at > 0 && file.ended_at > file.started_at {
        file.ended_at - file.started_at
    } else {
        0
    };
    let recording = Recording {
        id: egress.recording_id.clone(),
        room: egress.room.clone(),
        name,
        duration_s: duration_ns as f64 / 1e9,
        size_bytes: u64::try_from(file.size).unwrap_or(0),
        location: Location::External(location),
        provider: "livekit".into(),
        created_at: now_rfc3339(),
        participants: Vec::new(),
        initiator: None,
    };
    let event = app.catalog.available(&recording);
    if app.catalog.insert(recording).await? {
        app.rooms.announce(&egress.room, event).await;
    }
    Ok(())
}

/// The last path segment of a file name or URL (without a query string).
fn file_name(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/')
        .next()
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// Why a webhook's signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header.
    #[error("authorization header is empty")]
    MissingHeader,
    /// onair has no API key and secret to check with.
    #[error("livekit api_key and api_secret are not configured")]
    NotConfigured,
    /// The token does not verify.
    #[error("invalid token: {0}")]
    Token(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// The token is older than the replay window.
    #[error("token is older than the {REPLAY_WINDOW_S} s replay window")]
    OutsideWindow,
    /// The body is not the one the token was made for.
    #[error("sha256 checksum of body does not match")]
    Checksum,
}

/// The claims of a webhook token that onair reads.
#[derive(Deserialize)]
struct WebhookClaims {
    /// Standard-base64 SHA-256 of the body.
    #[serde(default)]
    sha256: Option<String>,
    /// Expiry (seconds).
    exp: i64,
    /// Not before (seconds); LiveKit sets it to the signing time.
    #[serde(default)]
    nbf: Option<i64>,
    /// Issued at (seconds), if present.
    #[serde(default)]
    iat: Option<i64>,
}

/// Verifies a webhook as LiveKit's `WebhookReceiver` does, plus the replay window.
/// Public for the fuzzer (`fuzz/`) and `tests/fuzz_corpus.rs`.
pub fn verify(
    config: &LivekitConfig,
    authorization: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), VerifyError> {
    let token = authorization
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(VerifyError::MissingHeader)?;
    let (Some(key), Some(secret)) = (&config.api_key, &config.api_secret) else {
        return Err(VerifyError::NotConfigured);
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    // The times are checked below against `now`, with the replay window.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[key]);
    let claims = jsonwebtoken::decode::<WebhookClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| VerifyError::Token(describe(&e)))?
    .claims;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let leeway = LEEWAY_S as i64;
    let window = REPLAY_WINDOW_S as i64;
    if claims.exp < now - leeway {
        return Err(VerifyError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(VerifyError::NotYetValid);
    }
    let made = claims.nbf.into_iter().chain(claims.iat).max();
    let fresh = match made {
        // Saturating: a signing time far in the past is outside the window, not an overflow.
        Some(made) => now.saturating_sub(made) <= window + leeway,
        // No signing time: the expiry must be within one window.
        None => claims.exp - now <= window + leeway,
    };
    if !fresh {
        return Err(VerifyError::OutsideWindow);
    }
    let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    let claimed = claims.sha256.unwrap_or_default();
    if !bool::from(expected.as_bytes().ct_eq(claimed.as_bytes())) {
        return Err(VerifyError::Checksum);
    }
    Ok(())
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed",
        ErrorKind::InvalidIssuer => "unknown API key",
        ErrorKind::MissingRequiredClaim(_) => "missing exp or iss",
        _ => "malformed token",
    }
}

/// LiveKit's `WebhookEvent` in protojson, the fields onair reads. Unknown
/// fields are ignored (as `WebhookReceiver` does). Public (fields private) so
/// that the fuzzer parses bodies into the very type the handler uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebhookEvent {
    /// `egress_started`, `egress_updated`, `egress_ended`, `room_started`, …
    event: String,
    /// Unique per event (`EV_…`).
    id: String,
    /// Set for egress events.
    #[serde(alias = "egress_info")]
    egress_info: Option<EgressInfo>,
}

/// LiveKit's `EgressInfo`, the fields onair reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EgressInfo {
    /// The egress id (`EG_…`).
    #[serde(alias = "egress_id")]
    egress_id: String,
    /// The LiveKit room name (onair's room id).
    #[serde(alias = "room_name")]
    room_name: String,
    /// Missing means `EGRESS_STARTING`.
    status: EgressStatus,
    /// When the egress last changed, in nanoseconds.
    #[serde(alias = "updated_at", deserialize_with = "int64")]
    updated_at: i64,
    /// Why it failed.
    error: String,
    /// The files written (LiveKit ≥ 1.4).
    #[serde(alias = "file_results")]
    file_results: Vec<FileInfo>,
    /// The file written (older LiveKit).
    file: Option<FileInfo>,
}

/// LiveKit's `FileInfo`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FileInfo {
    /// The path the file was written to.
    filename: String,
    /// Where it was uploaded (a URL or storage path), if anywhere.
    location: String,
    /// Length in nanoseconds.
    #[serde(deserialize_with = "int64")]
    duration: i64,
    /// Size in bytes.
    #[serde(deserialize_with = "int64")]
    size: i64,
    /// Start, in nanoseconds since the epoch.
    #[serde(alias = "started_at", deserialize_with = "int64")]
    started_at: i64,
    /// End, in nanoseconds since the epoch.
    #[serde(alias = "ended_at", deserialize_with = "int64")]
    ended_at: i64,
}

/// protojson writes 64-bit integers as strings; numbers are accepted too.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Integer(i64),
        Float(f64),
        Text(String),
        Null(()),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Integer(n) => Ok(n),
        Raw::Float(f) => Ok(f as i64),
        Raw::Text(s) if s.trim().is_empty() => Ok(0),
        Raw::Text(s) => s.trim().parse().map_err(D::Error::custom),
        Raw::Null(()) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const KEY: &str = "key";
    const SECRET: &str = "secret-secret";

    fn config() -> LivekitConfig {
        LivekitConfig {
            api_key: Some(KEY.into()),
            api_secret: Some(SECRET.into()),
            ..LivekitConfig::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn sha(body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    }

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn a_livekit_style_token_verifies() {
        let body = br#"{"event":"egress_started"}"#;
        let token = sign(
            json!({"iss": KEY, "nbf": NOW, "exp": NOW + 300, "sha256": sha(body)}),
            SECRET,
        );
        verify(&config(), Some(&token), body, at(NOW + 5)).unwrap();
    }

    #[test]
    fn every_flaw_is_refused() {
        let body = br#"{"event":"egress_started"}"#;
        let good = json!({"iss": KEY, "nbf": NOW, "exp": NOW + 300, "sha256": sha(body)});
        let check = |claims: &Value, secret: &str, body: &[u8], now: u64| {
            verify(
                &config(),
                Some(&sign(claims.clone(), secret)),
                body,
                at(now),
            )
        };
        assert!(matches!(
            verify(&config(), None, body, at(NOW)),
            Err(VerifyError::MissingHeader)
        ));
        assert!(matches!(
            check(&good, "another-secret", body, NOW),
            Err(VerifyError::Token("bad signature"))
        ));
        let mut other_key = good.clone();
        other_key["iss"] = json!("other");
        assert!(matches!(
            check(&other_key, SECRET, body, NOW),
            Err(VerifyError::Token("unknown API key"))
        ));
        assert!(matches!(
            check(&good, SECRET, b"{\"event\":\"egress_ended\"}", NOW),
            Err(VerifyError::Checksum)
        ));
        assert!(matches!(
            check(&good, SECRET, body, NOW + 300 + LEEWAY_S + 1),
            Err(VerifyError::Expired)
        ));
        // Within the leeway it still passes.
        check(&good, SECRET, body, NOW + 300 + LEEWAY_S - 1).unwrap();
        assert!(matches!(
            check(&good, SECRET, body, NOW - LEEWAY_S - 5),
            Err(VerifyError::NotYetValid)
        ));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(check(&no_exp, SECRET, body, NOW).is_err());
        let mut no_sha = good.clone();
        no_sha.as_object_mut().unwrap().remove("sha256");
        assert!(matches!(
            check(&no_sha, SECRET, body, NOW),
            Err(VerifyError::Checksum)
        ));
        // A token made long ago with a long life is outside the replay window.
        let long_lived =
            json!({"iss": KEY, "nbf": NOW, "exp": NOW + 6 * 3600, "sha256": sha(body)});
        assert!(matches!(
            check(&long_lived, SECRET, body, NOW + 600),
            Err(VerifyError::OutsideWindow)
        ));
        let no_times = json!({"iss": KEY, "exp": NOW + 3600, "sha256": sha(body)});
        assert!(matches!(
            check(&no_times, SECRET, body, NOW),
            Err(VerifyError::OutsideWindow)
        ));
        // `Bearer` is not part of LiveKit's header.
        let bearer = format!("Bearer {}", sign(good.clone(), SECRET));
        assert!(verify(&config(), Some(&bearer), body, at(NOW)).is_err());
    }

    #[test]
    fn protojson_egress_events_parse() {
        let body = r#"{"event":"egress_ended","id":"EV_x","createdAt":"1750000000",
            "egressInfo":{"egressId":"EG_1","roomName":"r","status":"EGRESS_COMPLETE",
            "updatedAt":"1750000000123456789","error":"",
            "fileResults":[{"filename":"rec/r-2025.mp4","startedAt":"1","endedAt":"2",
            "duration":"61500000000","size":"1048576","location":"s3://bucket/rec/r-2025.mp4"}]}}"#;
        let event: WebhookEvent = serde_json::from_str(body).unwrap();
        let info = event.egress_info.unwrap();
        assert_eq!(info.status, EgressStatus::Complete);
        assert_eq!(info.updated_at, 1_750_000_000_123_456_789);
        assert_eq!(info.file_results[0].duration, 61_500_000_000);
        assert_eq!(info.file_results[0].size, 1_048_576);
        // protojson leaves out zero values: no status is EGRESS_STARTING.
        let started: WebhookEvent =
            serde_json::from_str(r#"{"event":"egress_started","egressInfo":{"egressId":"EG_1"}}"#)
                .unwrap();
        assert_eq!(started.egress_info.unwrap().status, EgressStatus::Starting);
        // Proto field names are read too.
        let snake: WebhookEvent = serde_json::from_str(
            r#"{"event":"egress_updated","egress_info":{"egress_id":"EG_2","status":1,"updated_at":5}}"#,
        )
        .unwrap();
        let info = snake.egress_info.unwrap();
        assert_eq!(
            (info.egress_id.as_str(), info.status, info.updated_at),
            ("EG_2", EgressStatus::Active, 5)
        );
    }

    #[test]
    fn file_names_are_the_last_segment() {
        assert_eq!(file_name("rec/a/b.mp4").as_deref(), Some("b.mp4"));
        assert_eq!(
            file_name("https://s3.example/bucket/b.mp4?X-Amz-Signature=1").as_deref(),
            Some("b.mp4")
        );
        assert_eq!(file_name("b.mp4").as_deref(), Some("b.mp4"));
        assert_eq!(file_name("dir/"), None);
        assert_eq!(file_name(""), None);
    }
}
