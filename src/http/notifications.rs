//! `GET|POST|PUT /rest/recording/notifications`: an owner's recording
//! notification settings, Temasys style (seed 001).
//!
//! Answers use the seed's envelope rather than onair's `{"code","message"}`:
//! `{"status":1,"content":{"data":…}}` on success, `status` 0 when the
//! request failed and −1 when the caller is not authorized, with
//! `content: {"code","message"}`. The HTTP status says the same for clients
//! that look at it.
//!
//! Whose settings: a participant token's `sub`, the owner of the recordings
//! that participant starts. The admin key names the owner with `?username=`
//! (or a `username` field), the seed's word for the owner of a setting.
//! Anyone with a token may read their own settings; changing them (which
//! decides where recordings go) takes a token that may record.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::bearer;
use crate::app::AppState;
use crate::auth::{Claims, admin_key_matches};
use crate::notifications::{self, Invalid, Settings};
use crate::store::CatalogError;

type App = State<Arc<AppState>>;

/// The notifications routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/rest/recording/notifications",
        get(show).post(create).put(update),
    )
}

/// A failed request, in the seed's envelope.
#[derive(Debug)]
struct Failure {
    http: StatusCode,
    /// 0: failed; −1: not authorized.
    status: i8,
    code: &'static str,
    message: String,
}

impl Failure {
    fn failed(http: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            http,
            status: 0,
            code,
            message: message.into(),
        }
    }

    fn not_authorized(http: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            http,
            status: -1,
            code,
            message: message.into(),
        }
    }

    /// `[cluster]`'s Redis did not answer: nothing was read or saved.
    fn unavailable(error: &crate::cluster::ClusterError) -> Self {
        tracing::warn!(error = %error, "cluster: notification settings are answered 503 until Redis is back");
        Self::failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            "the cluster's Redis did not answer; nothing was done, try again",
        )
    }

    fn internal() -> Self {
        Self::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the settings could not be read or saved; try again",
        )
    }
}

impl From<Invalid> for Failure {
    fn from(e: Invalid) -> Self {
        // The message may quote a field or value: a few characters of it.
        Self::failed(
            StatusCode::BAD_REQUEST,
            e.code(),
            crate::protocol::short_detail(&e.to_string()),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status,
            "content": {"code": self.code, "message": self.message},
        });
        (self.http, axum::Json(body)).into_response()
    }
}

fn success(owner: &str, settings: &Settings) -> Response {
    axum::Json(json!({"status": 1, "content": {"data": settings.view(owner)}})).into_response()
}

#[derive(Deserialize)]
struct OwnerQuery {
    username: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Who is asking.
enum Caller {
    /// The admin key: may name any owner.
    Admin,
    /// A participant token: its own settings.
    Participant(Claims),
}

/// Checks the credential (before anything else, so an unauthorized caller learns nothing).
fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, Failure> {
    let token = bearer(headers).ok_or_else(|| {
        Failure::not_authorized(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "send the admin key or a participant token as `Authorization: Bearer`",
        )
    })?;
    if let Some(key) = &app.admin_key
        && admin_key_matches(key, token)
    {
        return Ok(Caller::Admin);
    }
    app.verifier
        .verify(token)
        .map(Caller::Participant)
        .map_err(|e| {
            Failure::not_authorized(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
        })
}

/// Whose settings the request is about, and whether the caller may touch them.
fn owner(
    caller: Caller,
    query: Result<Query<OwnerQuery>, QueryRejection>,
    body_username: Option<&str>,
    access: Access,
) -> Result<String, Failure> {
    let query = query
        .map_err(|e| Failure::failed(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?
        .0
        .username;
    let named = match (query.as_deref(), body_username) {
        (Some(a), Some(b)) if a != b => {
            return Err(Failure::failed(
                StatusCode::BAD_REQUEST,
                "username_mismatch",
                "`?username=` and the body's `username` differ",
            ));
        }
        (a, b) => a.or(b),
    };
    match caller {
        Caller::Admin => {
            let named = named.ok_or_else(|| {
                Failure::failed(
                    StatusCode::BAD_REQUEST,
                    "username_required",
                    "with the admin key, name the owner: `?username=<sub>`",
                )
            })?;
            if named.is_empty() || named.len() > 256 || named.chars().any(char::is_control) {
                return Err(Failure::failed(
                    StatusCode::BAD_REQUEST,
                    "invalid_username",
                    "`username` must be 1-256 characters",
                ));
            }
            Ok(named.to_owned())
        }
        Caller::Participant(claims) => {
            if named.is_some_and(|n| n != claims.sub) {
                return Err(Failure::not_authorized(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a participant token reads and writes its own settings only",
                ));
            }
            if access == Access::Write && !claims.may_record() {
                return Err(Failure::not_authorized(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "changing notification settings takes a token that may record (a moderator's)",
                ));
            }
            Ok(claims.sub)
        }
    }
}

/// The JSON body (read only now, after the caller was authenticated), with
/// its `username` (if any) apart.
async fn parse(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Value, Option<String>), Failure> {
    let limits = &app.limits;
    let bytes = crate::limits::read_body(headers, body, limits.max_body_bytes, limits.body_timeout)
        .await
        .map_err(|e| {
            let e = super::AppError::from(e);
            Failure::failed(e.status, e.code, e.message)
        })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::failed(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let username = match value.get("username") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Failure::failed(
                StatusCode::BAD_REQUEST,
                "invalid_username",
                "`username` must be a string",
            ));
        }
    };
    Ok((value, username))
}

async fn load(app: &AppState, owner: &str) -> Result<Option<Settings>, Failure> {
    notifications::load(app.catalog.store(), owner)
        .await
        .map_err(|e| match e {
            notifications::LoadError::Store(CatalogError::Cluster(e)) => Failure::unavailable(&e),
            e => {
                tracing::error!(error = %e, owner, "cannot read notification settings");
                Failure::internal()
            }
        })
}

async fn save(app: &AppState, owner: &str, settings: &Settings) -> Result<(), Failure> {
    notifications::save(app.catalog.store(), owner, settings)
        .await
        .map_err(|e| match e {
            CatalogError::Cluster(e) => Failure::unavailable(&e),
            e => {
                tracing::error!(error = %e, owner, "cannot save notification settings");
                Failure::internal()
            }
        })
}

fn none_yet(owner: &str) -> Failure {
    Failure::failed(
        StatusCode::NOT_FOUND,
        "no_settings",
        format!("`{owner}` has no notification settings; create them with POST"),
    )
}

/// `GET`: the owner's settings, the secret masked.
async fn show(
    State(app): App,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let caller = authenticate(&app, &headers)?;
    let owner = owner(caller, query, None, Access::Read)?;
    let settings = load(&app, &owner).await?.ok_or_else(|| none_yet(&owner))?;
    Ok(success(&owner, &settings))
}

/// `POST`: creates the owner's settings; refused if they exist.
async fn create(
    State(app): App,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let caller = authenticate(&app, &headers)?;
    let (body, username) = parse(&app, &headers, body).await?;
    let owner = owner(caller, query, username.as_deref(), Access::Write)?;
    if load(&app, &owner).await?.is_some() {
        return Err(Failure::failed(
            StatusCode::CONFLICT,
            "settings_exist",
            format!("`{owner}` already has notification settings; change them with PUT"),
        ));
    }
    let settings = Settings::from_request(&body, None)?;
    save(&app, &owner, &settings).await?;
    Ok(success(&owner, &settings))
}

/// `PUT`: updates existing settings; the fields sent replace, the others stay.
async fn update(
    State(app): App,
    headers: HeaderMap,
    query: Result<Query<OwnerQuery>, QueryRejection>,
    body: Body,
) -> Result<Response, Failure> {
    let caller = authenticate(&app, &headers)?;
    let (body, username) = parse(&app, &headers, body).await?;
    let owner = owner(caller, query, username.as_deref(), Access::Write)?;
    let existing = load(&app, &owner).await?.ok_or_else(|| none_yet(&owner))?;
    let settings = Settings::from_request(&body, Some(&existing))?;
    save(&app, &owner, &settings).await?;
    Ok(success(&owner, &settings))
}
