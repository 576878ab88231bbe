//! What every request handler shares, whichever door the request came in by
//! (the REST API, the signaling upgrade, a provider's webhook): the
//! application's state, and the one error answer.

use std::sync::Arc;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthError, Verifier};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::notifications::Notifications;
use crate::outbox::Outbox;
use crate::room::Registry;
use crate::store::CatalogError;
use crate::store::Store;
use crate::tickets::Tickets;

/// Everything the HTTP handlers and socket sessions share.
pub struct AppState {
    /// The configuration in force.
    pub config: Config,
    /// Verifies (and in development mode mints) participant tokens.
    pub verifier: Verifier,
    /// Outstanding single-use tickets.
    pub tickets: Tickets,
    /// Joins per token `sub` (`[server] joins_per_second_per_sub`).
    pub joins: crate::limits::JoinRate,
    /// The live rooms.
    pub rooms: Arc<Registry>,
    /// Finished recordings.
    pub catalog: Arc<Catalog>,
    /// The embedded database.
    pub store: Arc<Store>,
    /// Outbound webhooks.
    pub outbox: Arc<Outbox>,
    /// Recording notifications, Temasys style (seed 001).
    pub notifications: Arc<Notifications>,
    /// The HTTP client for calls to providers (rustls, with timeouts).
    pub http: reqwest::Client,
    /// The admin key for the REST API, if any.
    pub admin_key: Option<String>,
    /// Whether onair runs without a configured secret (SPEC §1).
    pub dev_mode: bool,
    /// Open connections per server, client IP and room, and the body limits.
    pub limits: Arc<crate::limits::Limits>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// Tracks socket sessions so shutdown can wait for them to close.
    pub sessions: TaskTracker,
}

/// The one error type of the HTTP API.
#[derive(Debug)]
pub struct AppError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// `Retry-After`, in seconds, for an error worth retrying.
    retry_after_s: Option<u32>,
}

/// How long a caller refused for an unreachable cluster Redis should wait.
pub const CLUSTER_RETRY_AFTER_S: u32 = 5;

impl AppError {
    /// An error with a status, a snake_case code and a human message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 503 `cluster_unavailable` with `Retry-After`: `[cluster]`'s Redis did
    /// not answer, so nothing was done; the same request later will be.
    pub fn cluster_unavailable(error: &crate::cluster::ClusterError) -> Self {
        tracing::warn!(error = %error, "cluster: a request is answered 503 until Redis is back");
        Self {
            retry_after_s: Some(CLUSTER_RETRY_AFTER_S),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!(
                    "the cluster's Redis did not answer ({error}); nothing was done, try again"
                ),
            )
        }
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }

    pub(crate) fn room_not_found(room: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "room_not_found",
            format!("room `{room}` has no participants"),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = Json(json!({"code": self.code, "message": self.message}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        Self::unauthorized(e.to_string())
    }
}

impl From<crate::limits::BodyError> for AppError {
    fn from(e: crate::limits::BodyError) -> Self {
        use crate::limits::BodyError;
        let status = match e {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Unreadable => StatusCode::BAD_REQUEST,
        };
        let code = match e {
            BodyError::TooLarge(_) => "body_too_large",
            BodyError::TimedOut(_) => "body_timeout",
            BodyError::Unreadable => "invalid_body",
        };
        AppError::new(status, code, e.to_string())
    }
}

impl From<CatalogError> for AppError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Cluster(e) => Self::cluster_unavailable(&e),
            CatalogError::Upload(e) => {
                tracing::error!(error = %e, "a recording could not be put in the bucket");
                Self::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the recording could not be put in the [storage] S3 bucket; retry later",
                )
            }
            CatalogError::Store(e) => {
                tracing::error!(error = %e, "the catalog's store failed");
                Self::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the catalog could not be read or written; retry later",
                )
            }
        }
    }
}
