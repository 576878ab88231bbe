//! Inbound webhooks from recording providers. Each provider's module verifies
//! the request exactly as the provider signs it (raw body, constant-time
//! comparison, replay window), then feeds what it learned to the room as a
//! recording input, the same path a socket command takes.

pub mod jaas;
pub mod livekit;
pub mod nextcloud;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::app::AppError;
use crate::app::AppState;
use crate::backends::Backend;
use crate::metrics::{METRICS, count};

/// The webhook routes of the configured backend (other providers' paths answer 404).
pub fn routes(backend: &Backend) -> Router<Arc<AppState>> {
    match backend {
        Backend::Manual { .. } => Router::new(),
        Backend::Livekit(_) => livekit::routes(),
        Backend::Nextcloud(_) => nextcloud::routes(),
        Backend::Jaas(_) => jaas::routes(),
    }
}

/// What became of a verified provider webhook: the `result` of the answer,
/// and the label it is counted under in `onair_inbound_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It changed the room's recording state.
    Applied,
    /// Taken on for later (a JaaS download).
    Accepted,
    /// Not about anything onair runs.
    Ignored,
    /// Seen before.
    Duplicate,
    /// Older than what was already applied.
    Stale,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Accepted => "accepted",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
        }
    }

    /// Counts the outcome and answers `{"result":"…"}`.
    fn answer(self) -> Json<Value> {
        count(&METRICS.inbound_webhooks, self.as_str());
        Json(json!({ "result": self.as_str() }))
    }
}

/// Counts a webhook refused before it was applied (unreadable, forged, malformed).
fn rejected(_: &AppError) {
    count(&METRICS.inbound_webhooks, "rejected");
}

/// A webhook's raw body. Refused before anything is read when the
/// provider's signature header is missing (401) or the declared length is
/// over `[server] max_webhook_body_bytes` (413); then read within
/// `[server] body_timeout_s` (408).
async fn read_signed_body(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    signature: HeaderName,
) -> Result<Bytes, AppError> {
    if !headers.contains_key(&signature) {
        return Err(bad_signature(format!("the {signature} header is missing")));
    }
    let limit = app.config.server.max_webhook_body_bytes;
    crate::limits::read_body(headers, body, limit, app.limits.body_timeout)
        .await
        .map_err(|e| match e {
            crate::limits::BodyError::TooLarge(_) => AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a webhook body may have at most {limit} bytes"),
            ),
            other => other.into(),
        })
}

/// The answer to a webhook whose signature did not verify.
fn bad_signature(error: impl std::fmt::Display) -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        error.to_string(),
    )
}

/// A verified body read as the provider's event; `what` names it in the 400.
fn parse_event<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "not a {what}: {}",
                crate::protocol::short_detail(&e.to_string())
            ),
        )
    })
}

/// `[cluster]`: a verified webhook is taken only while this node reaches
/// Redis, where the rooms' state lives; otherwise 503 with `Retry-After`, and
/// nothing is remembered (no idempotency key, no ordering mark), so the
/// provider's retry is applied once Redis is back.
fn cluster_reachable(app: &AppState) -> Result<(), AppError> {
    match app.rooms.cluster() {
        Some(cluster) if !cluster.is_ready() => Err(AppError::cluster_unavailable(
            &crate::cluster::ClusterError::Unavailable,
        )),
        _ => Ok(()),
    }
}
