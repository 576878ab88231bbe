//! The HTTP surface: the `/signaling` upgrade, tickets, the development token
//! endpoint, the server-to-server REST API and the operations endpoints.
//!
//! Every error leaves as `{"code":"snake_case","message":"…"}` through
//! [`AppError`], which never carries internals.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Extension, FromRequest, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
pub use crate::app::{AppError, CLUSTER_RETRY_AFTER_S};
use crate::auth::{AuthError, Claims, admin_key_matches, claims_for, valid_room_id};
use crate::limits::{Limits, Refusal, TooManyJoins, json_too_deep};
use crate::metrics::{METRICS, count, count_http_refusal};
use crate::protocol::{RecordingError, Role, SUBPROTOCOL};
use crate::recording::{Actor, Input, StartOptions, State as RecordingState};
use crate::room::RecordingSnapshot;
use crate::tickets::{TicketError, TicketRefusal};

mod notifications;
mod recordings;
mod serve;

pub use serve::serve;

type App = State<Arc<AppState>>;

/// Builds the router.
///
/// Around every route: the `Origin` check and CORS (`[server] allowed_origins`),
/// the request body limits (`[server] max_body_bytes`, and
/// `max_webhook_body_bytes` on the providers' webhooks), and the server's
/// [`Limits`] as a request extension for the upgrade and [`JsonBody`].
pub fn router(app: Arc<AppState>) -> Router {
    let server = &app.config.server;
    let limits = app.limits.clone();
    let webhooks = crate::webhooks::routes(app.rooms.backend())
        .layer(DefaultBodyLimit::max(server.max_webhook_body_bytes));
    let mut router = Router::new()
        .route("/signaling", get(signaling))
        .route("/v1/rooms/{room}/start", post(ticket))
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", get(get_room))
        .route(
            "/v1/rooms/{room}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route("/v1/rooms/{room}/recording/status", post(report_status))
        .route("/healthz", get(healthz))
        .route("/v1/server", get(server_info))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(recordings::routes())
        .merge(notifications::routes())
        .merge(webhooks);
    if app.dev_mode {
        router = router.route("/v1/dev/token", post(dev_token));
    }
    router = router
        .merge(crate::web::routes())
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(server.max_body_bytes));
    if let Some(cors) = cors(&server.allowed_origins) {
        router = router.layer(cors);
    }
    // Every body may pause at most `[server] body_timeout_s` between two
    // pieces (uploads); whole bodies read into memory also have that as a
    // deadline (`limits::read_body`).
    let stall = Duration::from_secs(server.body_timeout_s);
    router
        .layer(axum::middleware::map_request(
            move |request: Request| async move {
                request.map(|body| {
                    axum::body::Body::new(tower_http::timeout::TimeoutBody::new(stall, body))
                })
            },
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .layer(Extension(limits))
        .with_state(app)
}

/// CORS for `[server] allowed_origins`: none when the list is empty, so
/// browsers keep the API same-origin.
fn cors(allowed: &[String]) -> Option<CorsLayer> {
    if allowed.is_empty() {
        return None;
    }
    let allowed = allowed.to_vec();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                origin_allowed(&allowed, origin)
            }))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::RANGE])
            .expose_headers([
                header::CONTENT_RANGE,
                header::ACCEPT_RANGES,
                header::CONTENT_LENGTH,
                header::CONTENT_DISPOSITION,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Whether a browser `Origin` is in the list: scheme, host and port compared
/// without regard to case or a trailing `/`. The socket and CORS both use it.
fn origin_allowed(allowed: &[String], origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The endpoint kind a refusal is counted under.
fn endpoint_kind(path: &str) -> &'static str {
    if path.starts_with("/webhooks/") || path.starts_with("/ocs/") {
        "webhook"
    } else {
        "api"
    }
}

/// Refuses a browser `Origin` outside `[server] allowed_origins` (when set) on
/// every HTTP endpoint but the upgrade (which checks and counts it itself),
/// and counts the requests refused for their body size.
async fn guard(State(app): App, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/signaling" {
        return next.run(request).await;
    }
    let endpoint = endpoint_kind(path);
    let allowed = &app.config.server.allowed_origins;
    if !allowed.is_empty()
        && let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin_allowed(allowed, origin)
    {
        count_http_refusal("origin_not_allowed", endpoint);
        return origin_refused().into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        count_http_refusal("body_too_large", endpoint);
    }
    response
}

fn origin_refused() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "this origin is not in [server] allowed_origins",
    )
}

/// A JSON request body, held to `[server] max_body_bytes` (413
/// `body_too_large`, also on routes that lift the default body limit for
/// uploads) and `[server] max_json_depth` (400 `json_too_deep`, checked before
/// serde sees it); every rejection is an [`AppError`].
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (max_bytes, max_depth, deadline) = match req.extensions().get::<Arc<Limits>>() {
            Some(limits) => (
                limits.max_body_bytes,
                limits.max_json_depth,
                limits.body_timeout,
            ),
            None => {
                let defaults = crate::config::ServerConfig::default();
                (
                    defaults.max_body_bytes,
                    defaults.max_json_depth,
                    Duration::from_secs(defaults.body_timeout_s),
                )
            }
        };
        if !json_content_type(req.headers()) {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_body",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(req, max_bytes, deadline).await?;
        if json_too_deep(&bytes, max_depth) {
            count_http_refusal("json_too_deep", "api");
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "json_too_deep",
                format!("the body nests deeper than {max_depth} levels ([server] max_json_depth)"),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Self(value)),
            // serde's text may quote the body: a few characters of it, no more.
            Err(rejection) => Err(AppError::new(
                rejection.status(),
                "invalid_body",
                crate::protocol::short_detail(&rejection.body_text()),
            )),
        }
    }
}

/// `application/json` or `application/<something>+json`, as axum's `Json` wants.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Reads a REST request body of at most `limit` bytes within `[server] body_timeout_s`.
async fn read_body(
    req: Request,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, AppError> {
    let (parts, body) = req.into_parts();
    crate::limits::read_body(&parts.headers, body, limit, deadline)
        .await
        .map_err(AppError::from)
}

/// `?token=` on the upgrade request.
#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `GET /signaling`: every refusal happens here, before the upgrade.
///
/// The upgrade is done here rather than with axum's `WebSocketUpgrade` so that
/// the session owns a plain tokio-tungstenite stream and can send large frames
/// in fragments (see `session::feed_text`).
///
/// The connection limits are checked before the token (a flood costs no
/// signature checks), the room's after it; the [`crate::limits::Slot`] taken
/// here lives as long as the session and gives the counts back when dropped.
async fn signaling(
    State(app): App,
    Extension(limits): Extension<Arc<Limits>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(query): Query<TokenQuery>,
    mut request: Request,
) -> Result<Response, AppError> {
    let refused =
        |reason: &'static str| move |_: &AppError| count(&METRICS.upgrades_refused, reason);
    let over_limit = |refusal: Refusal| {
        count(&METRICS.upgrades_refused, refusal.code());
        crate::limits::limit_reached(refusal.code(), &refusal);
        limit_refused(refusal)
    };
    let headers = request.headers();
    check_origin(&app, headers).inspect_err(refused("origin_not_allowed"))?;
    let client_ip = limits.client_ip(peer.ip(), headers);
    let mut slot = limits.admit(client_ip).map_err(over_limit)?;
    // From here the connection counts as a socket, not as an HTTP connection
    // (a refusal below closes it).
    if let Some(http) = request.extensions().get::<Arc<crate::limits::HttpSlot>>() {
        http.release();
    }
    let claims = authenticate(&app, headers, query.token.as_deref())
        .await
        .inspect_err(refused("invalid_token"))?;
    check_room_id(&claims.room).inspect_err(refused("invalid_room"))?;
    // Reconnecting must not get around the message rate: joins per `sub`.
    if let Err(too_many) = app.joins.take(&claims.sub, app.rooms.cluster()).await {
        count(&METRICS.upgrades_refused, "too_many_joins");
        return Ok(too_many_joins(too_many));
    }
    limits.enter(&mut slot, &claims.room).map_err(over_limit)?;
    let accept = websocket_accept(headers)?;
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if app.shutdown.is_cancelled() {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let limits = &app.config.server;
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
        // Small buffers: clients send frames of a few hundred bytes, and memory per idle socket matters.
        .read_buffer_size(512)
        .write_buffer_size(0)
        // Large frames leave in fragments, so no single frame is bigger than this.
        .max_write_buffer_size(limits.max_frame_bytes);
    let app_for_session = app.clone();
    app.sessions.spawn(async move {
        // `slot` is held until the session ends, whichever way it ends.
        match on_upgrade.await {
            Ok(upgraded) => {
                // The plain TCP stream: no boxed I/O and no HTTP bookkeeping
                // per socket.
                let Ok((tcp, read)) = serve::into_tcp(upgraded) else {
                    tracing::error!("an upgraded connection was not served by onair's accept loop");
                    return;
                };
                let socket = tokio_tungstenite::WebSocketStream::from_partially_read(
                    crate::session::cork::Corked::new(tcp),
                    read,
                    tungstenite::protocol::Role::Server,
                    Some(config),
                )
                .await;
                // A task of its own: this one, with what the upgrade needed,
                // ends here, and the session's future is all that an idle
                // participant keeps (nested in this task it cost ~0.9 KiB more
                // per socket; load-tests/RESULTS.md, "A task per session").
                let sessions = app_for_session.sessions.clone();
                sessions.spawn(crate::session::serve(socket, claims, app_for_session, slot));
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(response)
}

/// 429 `too_many_joins` with `Retry-After` (whole seconds, at least 1).
fn too_many_joins(refused: TooManyJoins) -> Response {
    let seconds = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_joins",
        format!(
            "this user joined too often ([server] joins_per_second_per_sub); retry in {seconds} s"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Checks that the request asks for a WebSocket (RFC 6455 §4.2.1) and answers its key.
fn websocket_accept(headers: &HeaderMap) -> Result<header::HeaderValue, AppError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let refuse = |message: &str| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "websocket_upgrade_required",
            message.to_owned(),
        )
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return Err(refuse("Connection header did not include 'upgrade'"));
    }
    if !has_token(header::UPGRADE, "websocket") {
        return Err(refuse("`Upgrade` header did not include 'websocket'"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(refuse(
            "`Sec-WebSocket-Version` header did not include '13'",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| refuse("`Sec-WebSocket-Key` header missing"))?;
    header::HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
        .map_err(|_| refuse("bad `Sec-WebSocket-Key`"))
}

fn check_origin(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let allowed = &app.config.server.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    match headers.get(header::ORIGIN) {
        // Not a browser: origins do not apply.
        None => Ok(()),
        Some(origin) if origin_allowed(allowed, origin) => Ok(()),
        Some(_) => Err(origin_refused()),
    }
}

/// The answer to an upgrade over a connection limit.
fn limit_refused(refusal: Refusal) -> AppError {
    AppError::new(refusal.status(), refusal.code(), refusal.to_string())
}

/// Finds the credential on an upgrade request: a `ticket#` subprotocol, a
/// bearer header, or `?token=`, in that order.
async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Claims, AppError> {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("ticket#"));
    let claims = if let Some(ticket) = offered {
        match app
            .tickets
            .redeem(ticket)
            .await
            .map_err(|e| AppError::cluster_unavailable(&e))?
        {
            Some(claims) => claims,
            // OpenTalk clients may put the JWT itself behind `ticket#`.
            None if ticket.contains('.') => app.verifier.verify(ticket)?,
            None => return Err(AuthError::BadTicket.into()),
        }
    } else if let Some(token) = bearer(headers) {
        app.verifier.verify(token)?
    } else if let Some(token) = query.filter(|t| !t.is_empty()) {
        app.verifier.verify(token)?
    } else {
        return Err(AuthError::Missing.into());
    };
    Ok(claims)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

pub(crate) fn check_room_id(room: &str) -> Result<(), AppError> {
    if valid_room_id(room) {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_room",
            "room ids are 1-128 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// `POST /v1/rooms/{room}/start`: trades a JWT for a single-use ticket (OpenTalk).
async fn ticket(
    State(app): App,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    check_room_id(&room)?;
    let token = bearer(&headers).ok_or(AuthError::Missing)?;
    let claims = app.verifier.verify(token)?;
    if claims.room != room {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "room_mismatch",
            "the token is for another room",
        ));
    }
    let ticket = app
        .tickets
        .issue(claims, app.config.auth.max_tickets_per_sub)
        .await
        .map_err(|e| match e {
            TicketError::Refused(refusal @ TicketRefusal::TooMany(_)) => AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tickets",
                refusal.to_string(),
            ),
            TicketError::Refused(refusal @ TicketRefusal::TokenExpired) => {
                AppError::unauthorized(refusal.to_string())
            }
            TicketError::Unavailable(e) => AppError::cluster_unavailable(&e),
        })?;
    Ok(Json(json!({"ticket": ticket, "resumption": null})))
}

/// The body of `POST /v1/dev/token`.
#[derive(Deserialize)]
struct DevTokenRequest {
    room: String,
    name: String,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// `POST /v1/dev/token`: development mode only; mints a token for anyone.
async fn dev_token(
    State(app): App,
    JsonBody(req): JsonBody<DevTokenRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    check_room_id(&req.room)?;
    let name = req.name.trim();
    if name.is_empty() || crate::protocol::check_display_name(name).is_err() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "name must be 1-100 characters, without control or bidirectional formatting characters",
        ));
    }
    let ttl = Duration::from_secs(req.ttl_s.unwrap_or(3600).clamp(1, 24 * 3600));
    let claims = claims_for(&req.room, name, req.sub.as_deref(), req.role, ttl);
    let token = app.verifier.mint(&claims);
    Ok(Json(
        json!({"token": token, "room": claims.room, "sub": claims.sub, "exp": claims.exp}),
    ))
}

fn require_admin(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(configured) = &app.admin_key else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "admin_api_disabled",
            "the REST API needs [auth] admin_key",
        ));
    };
    match bearer(headers) {
        Some(presented) if admin_key_matches(configured, presented) => Ok(()),
        Some(_) => Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_key",
            "wrong admin key",
        )),
        None => Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_key",
            "send the admin key as `Authorization: Bearer <key>`",
        )),
    }
}

/// A caller that presented the admin key. As an extractor it runs before
/// any body extractor, so an unauthenticated request's body is never read.
pub(crate) struct Admin;

impl axum::extract::FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        require_admin(app, &parts.headers).map(|()| Self)
    }
}

/// `GET /v1/rooms`
async fn list_rooms(State(app): App, headers: HeaderMap) -> Result<Response, AppError> {
    require_admin(&app, &headers)?;
    Ok(Json(json!({"rooms": app.rooms.snapshots().await})).into_response())
}

/// `GET /v1/rooms/{room}`
async fn get_room(
    State(app): App,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_admin(&app, &headers)?;
    check_room_id(&room)?;
    let snapshot = app
        .rooms
        .snapshot(&room)
        .await
        .ok_or_else(|| AppError::room_not_found(&room))?;
    Ok(Json(snapshot).into_response())
}

/// The answer to the recording endpoints.
#[derive(Serialize)]
struct RecordingAnswer {
    room: String,
    #[serde(flatten)]
    recording: RecordingSnapshot,
}

fn answer(room: &str, state: &RecordingState) -> Json<RecordingAnswer> {
    Json(RecordingAnswer {
        room: room.to_owned(),
        recording: RecordingSnapshot::from(state),
    })
}

fn refusal(error: RecordingError) -> AppError {
    let (status, code, message) = match error {
        RecordingError::AlreadyRecording => (
            StatusCode::BAD_REQUEST,
            "already_recording",
            "a recording is already active in this room",
        ),
        RecordingError::InvalidRecordingId => (
            StatusCode::BAD_REQUEST,
            "invalid_recording_id",
            "that is not the room's active recording",
        ),
        RecordingError::RecordingDisabled => (
            StatusCode::FORBIDDEN,
            "recording_disabled",
            "recording is disabled on this server",
        ),
        RecordingError::NotSupported => (
            StatusCode::BAD_REQUEST,
            "not_supported",
            "the backend takes no start or stop commands",
        ),
        other => (
            StatusCode::BAD_REQUEST,
            "refused",
            // Not reachable for the API actor, which may always record.
            match other {
                RecordingError::InsufficientPermissions => "insufficient permissions",
                _ => "refused",
            },
        ),
    };
    AppError::new(status, code, message)
}

const API_ACTOR: Actor = Actor {
    participant: None,
    may_record: true,
};

/// The optional JSON body of `POST /v1/rooms/{room}/recording`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    /// Who the recording is for (a token `sub`): it owns the recording and
    /// gets its notifications, as when that user starts it over the socket.
    owner: Option<String>,
}

/// `POST /v1/rooms/{room}/recording`: start as the backend's operator would,
/// optionally for an `owner`.
async fn start_recording(
    _: Admin,
    State(app): App,
    Path(room): Path<String>,
    request: Request,
) -> Result<Response, AppError> {
    check_room_id(&room)?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let start = match declared {
        true => {
            JsonBody::<StartRequest>::from_request(request, &())
                .await?
                .0
        }
        false => StartRequest::default(),
    };
    if let Some(owner) = &start.owner
        && !crate::webhooks::nextcloud::valid_owner(owner)
    {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_owner",
            "owner must be 1–255 characters without control characters",
        ));
    }
    let live = app
        .rooms
        .live(&room)
        .await
        .ok_or_else(|| AppError::room_not_found(&room))?;
    let id = uuid::Uuid::new_v4().to_string();
    let applied = app
        .rooms
        .apply(
            &live,
            None,
            Input::Start {
                actor: API_ACTOR,
                new_recording_id: id.clone(),
                options: StartOptions {
                    requested_by_user: start.owner.clone(),
                    ..StartOptions::default()
                },
            },
        )
        .await;
    if let Some(error) = applied.refused {
        return Err(refusal(error));
    }
    if let Some(owner) = &start.owner
        && let Err(e) = app.catalog.store().set_owner(&id, owner).await
    {
        tracing::error!(error = %e, "cannot record the recording's owner");
    }
    Ok((StatusCode::CREATED, answer(&room, &applied.state)).into_response())
}

/// `?recording_id=` on `DELETE /v1/rooms/{room}/recording`.
#[derive(Deserialize)]
struct StopQuery {
    recording_id: Option<String>,
}

/// `DELETE /v1/rooms/{room}/recording`: stop the active recording.
async fn stop_recording(
    State(app): App,
    Path(room): Path<String>,
    Query(query): Query<StopQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    require_admin(&app, &headers)?;
    check_room_id(&room)?;
    let live = app
        .rooms
        .live(&room)
        .await
        .ok_or_else(|| AppError::room_not_found(&room))?;
    let current = app
        .rooms
        .recording_state(&room)
        .await
        .ok_or_else(|| AppError::room_not_found(&room))?;
    let recording_id = match (query.recording_id, current.is_active()) {
        (Some(id), _) => id,
        (None, true) => current.recording_id().unwrap_or_default().to_owned(),
        (None, false) => {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "not_recording",
                "no recording is active in this room",
            ));
        }
    };
    let applied = app
        .rooms
        .apply(
            &live,
            None,
            Input::Stop {
                actor: API_ACTOR,
                recording_id,
            },
        )
        .await;
    if let Some(error) = applied.refused {
        return Err(refusal(error));
    }
    Ok(answer(&room, &applied.state).into_response())
}

/// The body of `POST /v1/rooms/{room}/recording/status`.
#[derive(Deserialize)]
struct StatusReport {
    status: ReportedStatus,
    recording_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ReportedStatus {
    Recording,
    Failed,
    Stopped,
}

/// `POST /v1/rooms/{room}/recording/status`: the `manual` backend's recorder reports.
async fn report_status(
    _: Admin,
    State(app): App,
    Path(room): Path<String>,
    JsonBody(report): JsonBody<StatusReport>,
) -> Result<Response, AppError> {
    check_room_id(&room)?;
    let current = app
        .rooms
        .recording_state(&room)
        .await
        .ok_or_else(|| AppError::room_not_found(&room))?;
    let id = report.recording_id;
    let is_current = current.recording_id() == Some(id.as_str());
    // A late `stopped` for a recording that already ended is acknowledged; any
    // other report must name the room's current recording.
    if !is_current && !matches!(report.status, ReportedStatus::Stopped) {
        return Err(refusal(RecordingError::InvalidRecordingId));
    }
    let input = match report.status {
        ReportedStatus::Recording => Input::BackendRecording { recording_id: id },
        ReportedStatus::Stopped => Input::BackendStopped { recording_id: id },
        ReportedStatus::Failed => Input::BackendFailed {
            recording_id: id,
            reason: report
                .reason
                .unwrap_or_else(|| "the recorder reported a failure".into()),
        },
    };
    let applied = app
        .rooms
        .apply_to(&room, input)
        .await
        .map_err(|e| AppError::cluster_unavailable(&e))?
        .ok_or_else(|| AppError::room_not_found(&room))?;
    Ok(answer(&room, &applied.state).into_response())
}

/// `GET /metrics`: Prometheus text format, from `[metrics] allowed_ips` only.
///
/// Only the TCP peer is checked, never `X-Forwarded-For` (even from a
/// `trusted_proxies` peer): an address a header names proves nothing. And a
/// request that came through a proxy at all is refused, whoever the proxy
/// is: behind a reverse proxy on the same host every client's peer address
/// is the proxy's (loopback, allowed by default), so admitting it would
/// admit everyone. Scrapers connect to onair directly.
async fn metrics(
    State(app): App,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let ip = peer.ip().to_canonical();
    if !app
        .config
        .metrics
        .allowed_ips
        .iter()
        .any(|r| r.contains(ip))
    {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this address may not read metrics ([metrics] allowed_ips)",
        ));
    }
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name));
    if forwarded {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics are not served through a proxy: scrape onair directly from an address in [metrics] allowed_ips",
        ));
    }
    let mut text = crate::metrics::METRICS.encode();
    // A cluster's outbox is in Redis, shared: the node's own store has no rows.
    if let Some(Ok(counts)) = (!app.outbox.is_shared()).then(|| app.store.outbox_counts()) {
        text.push_str(&format!(
            "# HELP onair_outbox_deliveries Outbound webhook deliveries by state.\n# TYPE onair_outbox_deliveries gauge\n\
             onair_outbox_deliveries{{state=\"pending\"}} {}\nonair_outbox_deliveries{{state=\"delivered\"}} {}\n\
             onair_outbox_deliveries{{state=\"dead\"}} {}\nonair_outbox_deliveries{{state=\"disabled\"}} {}\n",
            counts.pending, counts.delivered, counts.dead, counts.disabled
        ));
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /v1/server`: what this server offers, for pages and clients to adapt
/// to (no credentials needed; nothing secret).
async fn server_info(State(app): App) -> Json<serde_json::Value> {
    let backend = serde_json::to_value(app.config.recording.backend).unwrap_or_default();
    Json(json!({
        "name": "onair",
        "version": env!("CARGO_PKG_VERSION"),
        "dev_mode": app.dev_mode,
        "backend": backend,
        "recording_enabled": app.config.recording.enabled,
    }))
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the server accepts connections (not while shutting down, nor
/// while a `[cluster]` node is cut off from Redis).
async fn readyz(State(app): App) -> Response {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    // [cluster]: a node without its Redis cannot serve rooms shared with the others.
    if app.rooms.cluster_ready() == Some(false) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "cluster_unavailable"})),
        )
            .into_response();
    }
    Json(json!({"status": "ready", "rooms": app.rooms.len()})).into_response()
}
