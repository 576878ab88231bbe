//! The recordings API: the `manual` recorder hands recordings in; applications
//! and participants list, fetch and delete them.
//!
//! Who may do what: the admin key may do everything. A participant token (the
//! same JWT as for the socket, as `Authorization: Bearer`) may list and fetch
//! its own room's recordings; a moderator's may also delete them. Media URLs
//! can be signed (`GET /v1/recordings/{id}/url`) so a browser `<video>` can
//! fetch them without headers, like seed 004's presigned URLs.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Admin, AppError, JsonBody, bearer, check_room_id};
use crate::app::AppState;
use crate::auth::{Claims, admin_key_matches};
use crate::catalog::{Location, Recording};
use crate::protocol::{Role, short_detail};
use crate::storage::{MAX_FILE_NAME_BYTES, Object, RangeRequest, fit_name, parse_range, served_as};
use crate::store::CatalogError;

type App = State<Arc<AppState>>;

/// The recordings routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/rooms/{room}/recordings",
            // Uploads are streamed to disk and capped by `[storage] max_upload_bytes`.
            post(hand_in).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/recordings", get(list))
        .route("/v1/recordings/{id}", get(show).delete(delete).patch(hold))
        .route(
            "/v1/recordings/{id}/media",
            get(media).layer(middleware::map_response(media_headers)),
        )
        .route(
            "/v1/recordings/{id}/url",
            get(signed_url).layer(middleware::map_response(media_headers)),
        )
}

/// On every answer of the media routes, whatever it is (the file, a range,
/// a 416, a redirect, an error): the browser must not guess another type
/// than the one sent, and a CSP that allows nothing means even a file a
/// browser is talked into rendering runs no script and loads nothing.
async fn media_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    response
}

/// Who is asking.
enum Caller {
    /// The admin key.
    Admin,
    /// A participant token.
    Participant(Claims),
}

impl Caller {
    fn identify(app: &AppState, headers: &HeaderMap) -> Result<Self, AppError> {
        let token = bearer(headers).ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "send the admin key or a participant token as `Authorization: Bearer`",
            )
        })?;
        if let Some(key) = &app.admin_key
            && admin_key_matches(key, token)
        {
            return Ok(Self::Admin);
        }
        Ok(Self::Participant(app.verifier.verify(token)?))
    }

    fn may_see(&self, room: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Participant(claims) => claims.room == room,
        }
    }

    fn may_delete(&self, room: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Participant(claims) => claims.room == room && claims.role == Role::Moderator,
        }
    }
}

/// The recording `id`, if the caller is known (401), it exists (404) and
/// `allowed` lets the caller at its room (403).
async fn permitted(
    app: &AppState,
    headers: &HeaderMap,
    id: &str,
    allowed: fn(&Caller, &str) -> bool,
) -> Result<Recording, AppError> {
    let caller = Caller::identify(app, headers)?;
    let recording = app.catalog.get(id).await?.ok_or_else(|| not_found(id))?;
    if !allowed(&caller, &recording.room) {
        return Err(forbidden());
    }
    Ok(recording)
}

fn not_found(id: &str) -> AppError {
    // The id comes from the URL, unchecked: a few characters of it.
    AppError::new(
        StatusCode::NOT_FOUND,
        "recording_not_found",
        short_detail(&format!("no recording `{id}`")),
    )
}

fn forbidden() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this token is for another room or lacks the moderator role",
    )
}

/// A recording as the API shows it: no server paths.
#[derive(Serialize)]
struct RecordingView {
    id: String,
    room: String,
    name: String,
    duration_s: f64,
    size_bytes: u64,
    provider: String,
    created_at: String,
    /// Where to fetch the file (needs the same credentials, or a signed URL).
    url: String,
    /// Set when the file lives outside onair (the provider's storage or a URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    external_location: Option<String>,
    /// Who was in it, when the provider says (JaaS user ids).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    participants: Vec<String>,
    /// Who started it, when the provider says (the JaaS `initiatorId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    initiator: Option<String>,
    /// Who owns it and gets its notifications (a token `sub`), when known.
    owner: Option<String>,
    /// Legal hold: kept at least until then, whatever `[storage] retention` says.
    keep_until: Option<String>,
}

impl RecordingView {
    /// The view of `recording`, with its owner and legal hold from the
    /// store (503 when the cluster's Redis does not answer; a SQLite
    /// failure is logged and shown as unknown).
    async fn of(app: &AppState, recording: Recording) -> Result<Self, AppError> {
        let read = |what: &str, value: Result<Option<String>, CatalogError>| match value {
            Ok(value) => Ok(value),
            Err(CatalogError::Store(e)) => {
                tracing::error!(error = %e, "cannot read a recording's {what}");
                Ok(None)
            }
            Err(e) => Err(AppError::from(e)),
        };
        let store = app.catalog.store();
        Ok(Self {
            owner: read("owner", store.owner(&recording.id).await)?,
            keep_until: read("legal hold", store.keep_until(&recording.id).await)?,
            ..Self::from(recording)
        })
    }
}

impl From<Recording> for RecordingView {
    fn from(r: Recording) -> Self {
        Self {
            url: r.media_url(),
            external_location: match &r.location {
                Location::External(location) => Some(location.clone()),
                Location::File(_) | Location::Object { .. } => None,
            },
            id: r.id,
            room: r.room,
            name: r.name,
            duration_s: r.duration_s,
            size_bytes: r.size_bytes,
            provider: r.provider,
            created_at: r.created_at,
            participants: r.participants,
            initiator: r.initiator,
            owner: None,
            keep_until: None,
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    room: Option<String>,
}

/// `GET /v1/recordings[?room=]`
async fn list(
    State(app): App,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, AppError> {
    let caller = Caller::identify(&app, &headers)?;
    let room = match (&caller, query.room) {
        (Caller::Admin, room) => room,
        (Caller::Participant(claims), None) => Some(claims.room.clone()),
        (Caller::Participant(claims), Some(room)) if room == claims.room => Some(room),
        (Caller::Participant(_), Some(_)) => return Err(forbidden()),
    };
    let mut recordings = Vec::new();
    for recording in app.catalog.list(room.as_deref()).await? {
        recordings.push(RecordingView::of(&app, recording).await?);
    }
    Ok(Json(json!({"recordings": recordings})).into_response())
}

/// `GET /v1/recordings/{id}`
async fn show(
    State(app): App,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let recording = permitted(&app, &headers, &id, Caller::may_see).await?;
    Ok(Json(RecordingView::of(&app, recording).await?).into_response())
}

/// The body of `PATCH /v1/recordings/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hold {
    /// Keep the recording at least until then (RFC 3339, UTC: `…Z`), or
    /// `null` to lift the hold.
    keep_until: Option<String>,
}

/// `PATCH /v1/recordings/{id}` `{"keep_until": "<RFC 3339>"|null}`: puts a
/// recording on legal hold, so `[storage] retention` does not delete it
/// before then (an explicit `DELETE` still does), or lifts the hold. Admin only.
async fn hold(
    _: Admin,
    State(app): App,
    Path(id): Path<String>,
    JsonBody(hold): JsonBody<Hold>,
) -> Result<Response, AppError> {
    let keep_until = match hold.keep_until.as_deref() {
        None => None,
        Some(text) => {
            let at = humantime::parse_rfc3339(text.trim()).map_err(|_| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_keep_until",
                    "keep_until must be an RFC 3339 time in UTC, e.g. 2027-01-31T00:00:00Z, or null",
                )
            })?;
            Some(humantime::format_rfc3339_millis(at).to_string())
        }
    };
    let stored = app
        .catalog
        .store()
        .set_keep_until(&id, keep_until.as_deref())
        .await
        .map_err(|e| match e {
            CatalogError::Cluster(e) => AppError::cluster_unavailable(&e),
            e => {
                tracing::error!(error = %e, "cannot save a legal hold");
                AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the hold could not be saved; retry later",
                )
            }
        })?;
    if !stored {
        return Err(not_found(&id));
    }
    let recording = app.catalog.get(&id).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(RecordingView::of(&app, recording).await?).into_response())
}

/// `DELETE /v1/recordings/{id}`: the file, the catalog entry, and everyone told.
async fn delete(
    State(app): App,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    permitted(&app, &headers, &id, Caller::may_delete).await?;
    crate::retention::delete(&app, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct MediaQuery {
    expires: Option<u64>,
    signature: Option<String>,
}

/// `GET /v1/recordings/{id}/url`: a signed media URL that needs no header.
async fn signed_url(
    State(app): App,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let recording = permitted(&app, &headers, &id, Caller::may_see).await?;
    let link = app.catalog.links().media(&recording.id);
    Ok(Json(json!({
        "url": link.url,
        "expires_at": link.expires_at,
    }))
    .into_response())
}

/// `GET /v1/recordings/{id}/media`: the file, with HTTP Range; or a redirect
/// to an external URL.
///
/// A file in a bucket (onair's, or the LiveKit egress bucket) is streamed
/// through onair rather than redirected to a presigned URL: the bucket can
/// stay private (no S3 endpoint exposed to browsers, no bucket CORS — seed
/// 004's MinIO is not even reachable from other devices), the URL clients
/// hold — plain or signed — behaves the same wherever the file is, and a
/// `DELETE` or an expired link ends access at once rather than when a
/// presigned URL would expire. Local files and objects go through the same
/// `Range` parser ([`parse_range`]) and the same headers ([`media_response`]).
async fn media(
    State(app): App,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<MediaQuery>,
) -> Result<Response, AppError> {
    let signed = match (query.expires, query.signature.as_deref()) {
        (Some(expires), Some(signature)) => {
            if !app.catalog.links().valid(&id, expires, signature) {
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "invalid_signature",
                    "the media URL is not valid or has expired",
                ));
            }
            true
        }
        _ => false,
    };
    let recording = app.catalog.get(&id).await?.ok_or_else(|| not_found(&id))?;
    if !signed && !Caller::identify(&app, &headers)?.may_see(&recording.room) {
        return Err(forbidden());
    }
    // onair sends no validators (ETag, Last-Modified), so an `If-Range` can
    // never be seen to match: RFC 9110 §13.1.5 then wants the whole file.
    let range = headers
        .get(header::RANGE)
        .filter(|_| !headers.contains_key(header::IF_RANGE))
        .and_then(|v| v.to_str().ok());
    let object = |location: &Location| app.catalog.storage()?.object(location);
    match (recording.location.clone(), object(&recording.location)) {
        (Location::File(path), _) => match serve_file(&recording, &path, range).await? {
            Some(response) => Ok(response),
            // Moved to the bucket since the catalog was read?
            None => match app
                .catalog
                .get(&id)
                .await?
                .and_then(|r| object(&r.location))
            {
                Some(moved) => serve_object(&app, &recording, &moved, range).await,
                None => Err(media_missing()),
            },
        },
        // In onair's bucket, or a LiveKit egress file in the egress bucket.
        (_, Some(object)) => serve_object(&app, &recording, &object, range).await,
        // No storage at all: answered as an unreachable bucket.
        (Location::Object { key }, None) => {
            serve_object(&app, &recording, &Object::Stored(key), range).await
        }
        (Location::External(url), None)
            if url.starts_with("https://") || url.starts_with("http://") =>
        {
            Ok(Redirect::temporary(&url).into_response())
        }
        (Location::External(location), None) => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "media_not_here",
            format!("the file is in the provider's storage at `{location}`, not on this server"),
        )),
    }
}

fn media_missing() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "media_missing",
        "the recording is catalogued but its file is gone",
    )
}

fn read_error(e: std::io::Error) -> AppError {
    tracing::error!(error = %e, "cannot read a recording's file");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "io_error",
        "the recording's file could not be read",
    )
}

/// Streams a local file, honouring `Range`; `None` when the file is not there.
async fn serve_file(
    recording: &Recording,
    path: &FsPath,
    range: Option<&str>,
) -> Result<Option<Response>, AppError> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let size = file.metadata().await.map_err(read_error)?.len();
    let (status, wanted) = match parse_range(range, size) {
        RangeRequest::Full => (StatusCode::OK, 0..size),
        RangeRequest::Partial(bytes) => (StatusCode::PARTIAL_CONTENT, bytes),
        RangeRequest::Unsatisfiable => return Ok(Some(unsatisfiable(size))),
    };
    if wanted.start > 0 {
        file.seek(std::io::SeekFrom::Start(wanted.start))
            .await
            .map_err(read_error)?;
    }
    let body = tokio_util::io::ReaderStream::with_capacity(
        file.take(wanted.end - wanted.start),
        64 * 1024,
    );
    media_response(recording, status, wanted, size, Body::from_stream(body)).map(Some)
}

/// `416` with the size, as RFC 9110 §15.5.17 asks.
fn unsatisfiable(size: u64) -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [
            (header::CONTENT_RANGE, format!("bytes */{size}")),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
        ],
    )
        .into_response()
}

/// The answer carrying `served` bytes of a recording of `size` bytes: the
/// type and disposition of [`served_as`], and the range headers.
fn media_response(
    recording: &Recording,
    status: StatusCode,
    served: std::ops::Range<u64>,
    size: u64,
    body: Body,
) -> Result<Response, AppError> {
    let kind = served_as(&recording.name);
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, kind.content_type)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&recording.name, kind.inline),
        )
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, served.end - served.start);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{size}",
                served.start,
                served.end.saturating_sub(1)
            ),
        );
    }
    response.body(body).map_err(|e| {
        tracing::error!(error = %e, "cannot build a media response");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            "the recording could not be served",
        )
    })
}

/// `Content-Disposition` for a recording: `inline` or `attachment`, with the
/// name both as a plain ASCII fallback and as UTF-8 (RFC 6266, RFC 8187), so
/// any name can be sent and the disposition itself is never dropped.
fn disposition(name: &str, inline: bool) -> HeaderValue {
    let kind = if inline { "inline" } else { "attachment" };
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' ' => ' ',
            '"' | '\\' | '%' => '_',
            c if c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        // RFC 8187 attr-char.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static(kind))
}

/// Streams an object from its bucket, honouring `Range`.
async fn serve_object(
    app: &AppState,
    recording: &Recording,
    file: &Object,
    range: Option<&str>,
) -> Result<Response, AppError> {
    use crate::storage::ObjectError;
    let unavailable = |e: ObjectError| {
        if e.is_not_found() {
            return media_missing();
        }
        tracing::error!(recording_id = %recording.id, error = %e, "cannot read a recording from the bucket");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the recording's storage cannot be reached; try again later",
        )
    };
    let storage = app
        .catalog
        .storage()
        .ok_or_else(|| unavailable(ObjectError::NoBucket("[storage] s3_bucket")))?;
    let size = storage.size(file).await.map_err(unavailable)?;
    let (status, wanted) = match parse_range(range, size) {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(bytes) => (StatusCode::PARTIAL_CONTENT, Some(bytes)),
        RangeRequest::Unsatisfiable => return Ok(unsatisfiable(size)),
    };
    let object = storage.get(file, wanted).await.map_err(unavailable)?;
    let served = object.range.clone();
    media_response(
        recording,
        status,
        served,
        size,
        Body::from_stream(object.into_stream()),
    )
}

/// The JSON form of a hand-in: a recording that lives elsewhere.
#[derive(Deserialize)]
struct ExternalRecording {
    #[serde(default)]
    recording_id: Option<String>,
    url: String,
    name: String,
    #[serde(default)]
    duration_s: f64,
    #[serde(default)]
    size_bytes: u64,
}

/// `POST /v1/rooms/{room}/recordings`: the `manual` recorder hands in a
/// finished recording, as a multipart `file` (streamed to storage) plus
/// `recording_id`, or as JSON naming an external `url`.
async fn hand_in(
    State(app): App,
    Path(room): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, AppError> {
    if !matches!(Caller::identify(&app, &headers)?, Caller::Admin) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "admin_only",
            "only the recorder (with the admin key) hands recordings in",
        ));
    }
    check_room_id(&room)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let recording = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &()).await.map_err(|e| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                short_detail(&e.body_text()),
            )
        })?;
        receive_file(&app, &room, multipart).await?
    } else {
        let JsonBody(external) = JsonBody::<ExternalRecording>::from_request(request, &()).await?;
        if !(external.url.starts_with("https://") || external.url.starts_with("http://")) {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_url",
                "url must be an http(s) URL",
            ));
        }
        Recording {
            id: recording_id(external.recording_id)?,
            room: room.clone(),
            name: clean_name(&external.name)?,
            duration_s: external.duration_s.max(0.0),
            size_bytes: external.size_bytes,
            location: Location::External(external.url),
            provider: app.rooms.backend().name().to_owned(),
            created_at: crate::protocol::now_rfc3339(),
            participants: Vec::new(),
            initiator: None,
        }
    };
    let view_id = recording.id.clone();
    let event = app.catalog.available(&recording);
    let path = recording.location.file().map(FsPath::to_path_buf);
    let inserted = app.catalog.insert(recording).await;
    if !matches!(inserted, Ok(true)) {
        // Not catalogued (a duplicate, or nothing written): not kept.
        if let Some(path) = path {
            let _ = tokio::fs::remove_file(path).await;
        }
        inserted?;
        return Err(already_exists(&view_id));
    }
    app.rooms.announce(&room, event).await;
    let stored = app
        .catalog
        .get(&view_id)
        .await?
        .ok_or_else(|| not_found(&view_id))?;
    Ok((
        StatusCode::CREATED,
        Json(RecordingView::of(&app, stored).await?),
    )
        .into_response())
}

fn already_exists(id: &str) -> AppError {
    AppError::new(
        StatusCode::CONFLICT,
        "already_exists",
        format!("recording `{id}` is already catalogued"),
    )
}

fn recording_id(given: Option<String>) -> Result<String, AppError> {
    match given {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(id)
        }
        Some(_) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_recording_id",
            "recording_id is 1-128 characters of A-Z a-z 0-9 - _",
        )),
    }
}

/// A file name safe to show and to store: no paths, no control characters,
/// at most [`MAX_FILE_NAME_BYTES`] bytes (cut, keeping the extension).
fn clean_name(name: &str) -> Result<String, AppError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = fit_name(&cleaned, MAX_FILE_NAME_BYTES);
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "the recording needs a file name",
        ));
    }
    Ok(cleaned)
}

/// Streams the multipart `file` to a temporary file, then moves it into place
/// once `recording_id` is known. Never holds the file in memory.
async fn receive_file(
    app: &AppState,
    room: &str,
    mut multipart: Multipart,
) -> Result<Recording, AppError> {
    let storage = &app.config.storage;
    let incoming = storage.path.join(".incoming");
    tokio::fs::create_dir_all(&incoming)
        .await
        .map_err(io_error)?;
    let temp = TempFile(incoming.join(uuid::Uuid::new_v4().to_string()));
    let mut given_id = None;
    let mut name = None;
    let mut duration_s = 0.0;
    let mut size: u64 = 0;
    let mut got_file = false;
    let bad =
        |code: &'static str, message: String| AppError::new(StatusCode::BAD_REQUEST, code, message);
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?
    {
        match field.name().unwrap_or_default() {
            "file" => {
                if got_file {
                    return Err(bad("invalid_body", "only one `file` per request".into()));
                }
                got_file = true;
                // The name is checked (and cut to fit) before the content is read.
                if name.is_none() {
                    name = field.file_name().map(clean_name).transpose()?;
                }
                let mut out = tokio::fs::File::create(&temp.0).await.map_err(io_error)?;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?
                {
                    size += chunk.len() as u64;
                    if size > storage.max_upload_bytes {
                        return Err(AppError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "file_too_large",
                            format!("files are limited to {} bytes", storage.max_upload_bytes),
                        ));
                    }
                    out.write_all(&chunk).await.map_err(io_error)?;
                }
                out.flush().await.map_err(io_error)?;
                out.sync_all().await.map_err(io_error)?;
            }
            "recording_id" => {
                given_id = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?,
                )
            }
            "name" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?;
                name = Some(clean_name(&text)?);
            }
            "duration_s" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?;
                duration_s = text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && *d >= 0.0)
                    .ok_or_else(|| {
                        bad(
                            "invalid_duration",
                            "duration_s must be a number of seconds".into(),
                        )
                    })?;
            }
            // Unknown fields are drained and ignored.
            _ => {
                while field
                    .chunk()
                    .await
                    .map_err(|e| bad("invalid_body", short_detail(&e.body_text())))?
                    .is_some()
                {}
            }
        }
    }
    if !got_file {
        return Err(bad(
            "missing_file",
            "send the recording as the multipart field `file`".into(),
        ));
    }
    if size == 0 {
        return Err(bad("empty_file", "the file is empty".into()));
    }
    let id = recording_id(given_id)?;
    if app.catalog.get(&id).await?.is_some() {
        return Err(already_exists(&id));
    }
    let name = name.unwrap_or_else(|| "recording".to_owned());
    let dir = storage.path.join(room);
    tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
    // Never move over another file, whatever raced us here.
    let mut path = dir.join(crate::storage::file_name(&format!("{id}-"), &name));
    if tokio::fs::try_exists(&path).await.unwrap_or(true) {
        let prefix = format!("{id}-{}-", uuid::Uuid::new_v4().simple());
        path = dir.join(crate::storage::file_name(&prefix, &name));
    }
    let path = std::path::absolute(&path).unwrap_or(path);
    temp.persist(&path).await?;
    Ok(Recording {
        id,
        room: room.to_owned(),
        name,
        duration_s,
        size_bytes: size,
        location: Location::File(path),
        provider: app.rooms.backend().name().to_owned(),
        created_at: crate::protocol::now_rfc3339(),
        participants: Vec::new(),
        initiator: None,
    })
}

fn io_error(e: std::io::Error) -> AppError {
    tracing::error!(error = %e, "storage I/O error");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_error",
        "the recording could not be stored",
    )
}

/// A temporary file removed unless it is moved into place.
struct TempFile(PathBuf);

impl TempFile {
    async fn persist(self, to: &FsPath) -> Result<(), AppError> {
        tokio::fs::rename(&self.0, to).await.map_err(io_error)?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(clean_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_name("C:\\x\\a.mp4").unwrap(), "a.mp4");
        assert!(clean_name("..").is_err());
        assert!(clean_name("  ").is_err());
    }
}
