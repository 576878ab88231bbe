//! Inbound requests from the Nextcloud Talk recording server, on the paths
//! where it expects a Nextcloud server (seed 003):
//!
//! * `POST /ocs/v2.php/apps/spreed/api/v1/recording/backend` — `started`,
//!   `stopped`, `failed`; checksum over random + raw body.
//! * `POST /ocs/v2.php/apps/spreed/api/v1/recording/{token}/store` — the
//!   finished file, multipart `file` + `owner`; checksum over random + token.
//!
//! Answers are OCS v2 envelopes (`{"ocs":{"meta":…,"data":…}}`), JSON when
//! the request asks for it (`Accept: application/json` or `?format=json`),
//! XML otherwise, with the HTTP status repeated as `statuscode`, as Nextcloud
//! answers them.
//!
//! What "the room" is: a Talk token is a room id. `started` needs the room
//! live and starting. `stopped` and `failed` are accepted for a live room, and
//! also for a room that emptied while the backend still owed it a recording
//! (the recording server reports `stopped` after the call ended, and uploads
//! only if that report succeeds). The upload is accepted for any token whose
//! checksum verifies: the checksum proves the sender holds the secret, and the
//! file usually arrives after everyone left.

use std::io::{self, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::valid_room_id;
use crate::backends::Backend;
use crate::backends::nextcloud::{CHECKSUM_HEADER, Nextcloud, RANDOM_HEADER};
use crate::catalog::{Location, Recording};
use crate::cluster::ClusterError;
use crate::protocol::now_rfc3339;
use crate::recording::{Input, State as RecordingState};
use crate::storage::{MAX_FILE_NAME_BYTES, fit_name};

/// Where the recording server reports recording state changes.
pub const BACKEND_PATH: &str = "/ocs/v2.php/apps/spreed/api/v1/recording/backend";
/// Where the recording server uploads a finished recording.
pub const STORE_PATH: &str = "/ocs/v2.php/apps/spreed/api/v1/recording/{token}/store";

/// Largest `owner` field.
const MAX_OWNER_BYTES: usize = 1024;
/// How much of the file's start is kept to recognise its format.
const HEAD_BYTES: usize = 4096;
/// Chunks in flight between the request and the file writer.
const WRITE_QUEUE: usize = 8;
/// The `reason` of a `failed` status the recording server reported.
const FAILURE_REASON: &str = "the recording server reported a failure";

/// The recording formats Talk accepts (its `DEFAULT_ALLOWED_RECORDING_FORMATS`):
/// detected media type and the extension that must go with it.
const ALLOWED_FORMATS: [(&str, &str); 5] = [
    ("audio/ogg", "ogg"),
    ("video/ogg", "ogv"),
    ("video/mp4", "mp4"),
    ("video/webm", "webm"),
    ("video/x-matroska", "mkv"),
];

/// The recording server's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(BACKEND_PATH, post(backend)).route(
        STORE_PATH,
        // The upload is bounded by `[storage] max_upload_bytes` while it
        // streams, not by the API's small default body limit.
        post(store).layer(DefaultBodyLimit::disable()),
    )
}

/// The representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/xml`, Nextcloud's default.
    Xml,
}

/// Nextcloud's choice: `?format=`, else the first `Accept` entry it can
/// serve, else XML. Public for the fuzzer.
pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Format {
    let from_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| match pair.strip_prefix("format=") {
            Some("json") => Some(Format::Json),
            Some("xml") => Some(Format::Xml),
            _ => None,
        });
    if let Some(format) = from_query {
        return format;
    }
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|media| {
            let media = media.split(';').next().unwrap_or_default().trim();
            let subtype = media.rsplit('/').next().unwrap_or_default();
            if subtype.eq_ignore_ascii_case("json") {
                Some(Format::Json)
            } else if subtype.eq_ignore_ascii_case("xml") {
                Some(Format::Xml)
            } else {
                None
            }
        })
        .unwrap_or(Format::Xml)
}

/// An OCS v2 answer.
#[derive(Debug)]
struct Ocs {
    format: Format,
    status: StatusCode,
    data: Value,
}

impl Ocs {
    fn ok(format: Format) -> Self {
        Self {
            format,
            status: StatusCode::OK,
            data: Value::Null,
        }
    }

    /// The error shape of Talk's backend endpoints.
    fn error(format: Format, status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            format,
            status,
            data: json!({"type": "error", "error": {"code": code, "message": message}}),
        }
    }

    fn forbidden(format: Format, status: StatusCode) -> Self {
        Self::error(
            format,
            status,
            "invalid_request",
            "The request could not be authenticated.",
        )
    }

    fn no_room(format: Format) -> Self {
        Self::error(
            format,
            StatusCode::NOT_FOUND,
            "no_such_room",
            "Room not found.",
        )
    }

    /// The error shape of Talk's store endpoint: `{"error":"<code>"}`.
    fn store_error(format: Format, status: StatusCode, code: &str) -> Self {
        Self {
            format,
            status,
            data: json!({"error": code}),
        }
    }
}

impl IntoResponse for Ocs {
    fn into_response(self) -> Response {
        let ok = self.status.is_success();
        let status = if ok { "ok" } else { "failure" };
        let message = if ok { "OK" } else { "" };
        let code = self.status.as_u16();
        let (content_type, body) = match self.format {
            Format::Json => (
                "application/json; charset=utf-8",
                json!({"ocs": {
                    "meta": {"status": status, "statuscode": code, "message": message},
                    "data": self.data,
                }})
                .to_string(),
            ),
            Format::Xml => (
                "application/xml; charset=utf-8",
                ocs_xml(status, code, message, &self.data),
            ),
        };
        (self.status, [(header::CONTENT_TYPE, content_type)], body).into_response()
    }
}

/// The OCS envelope as Nextcloud's XMLWriter renders it. Public for the fuzzer.
pub fn ocs_xml(status: &str, code: u16, message: &str, data: &Value) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<ocs>\n <meta>\n");
    xml_element(&mut out, "status", &Value::from(status), 2);
    xml_element(&mut out, "statuscode", &Value::from(code), 2);
    xml_element(&mut out, "message", &Value::from(message), 2);
    out.push_str(" </meta>\n");
    xml_element(&mut out, "data", data, 1);
    out.push_str("</ocs>\n");
    out
}

fn xml_element(out: &mut String, name: &str, value: &Value, depth: usize) {
    let indent = " ".repeat(depth);
    let text = match value {
        Value::Null | Value::Bool(false) => None,
        Value::Object(map) if map.is_empty() => None,
        Value::Array(items) if items.is_empty() => None,
        Value::Object(map) => {
            out.push_str(&format!("{indent}<{name}>\n"));
            for (key, child) in map {
                xml_element(out, key, child, depth + 1);
            }
            out.push_str(&format!("{indent}</{name}>\n"));
            return;
        }
        Value::Array(items) => {
            out.push_str(&format!("{indent}<{name}>\n"));
            for child in items {
                xml_element(out, "element", child, depth + 1);
            }
            out.push_str(&format!("{indent}</{name}>\n"));
            return;
        }
        Value::Bool(true) => Some("1".to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(xml_escape(s)),
    };
    match text {
        Some(text) => out.push_str(&format!("{indent}<{name}>{text}</{name}>\n")),
        None => out.push_str(&format!("{indent}<{name}/>\n")),
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control character, not even as a
            // character reference: an echoed one would make the answer unreadable.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The nextcloud backend, when it is the configured one.
fn nextcloud(app: &AppState) -> Option<&Nextcloud> {
    match app.rooms.backend().as_ref() {
        Backend::Nextcloud(nextcloud) => Some(nextcloud),
        _ => None,
    }
}

/// `POST …/recording/backend`: the recording server reports `started`,
/// `stopped` or `failed`.
async fn backend(
    State(app): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Ocs {
    let format = negotiate(query.as_deref(), &headers);
    let Some(nc) = nextcloud(&app) else {
        return Ocs::no_room(format);
    };
    // Without the checksum headers nothing is read.
    if header_str(&headers, RANDOM_HEADER).is_none()
        || header_str(&headers, CHECKSUM_HEADER).is_none()
    {
        tracing::warn!("recording server request without its checksum headers");
        return Ocs::forbidden(format, StatusCode::FORBIDDEN);
    }
    // State reports are a few hundred bytes; the limit is `[server] max_webhook_body_bytes`.
    let limit = app.config.server.max_webhook_body_bytes;
    let body = match crate::limits::read_body(&headers, body, limit, app.limits.body_timeout).await
    {
        Ok(body) => body,
        Err(crate::limits::BodyError::TooLarge(_)) => {
            return Ocs::error(
                format,
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("The body is larger than {limit} bytes."),
            );
        }
        Err(e) => {
            return Ocs::error(
                format,
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                &e.to_string(),
            );
        }
    };
    let random = header_str(&headers, RANDOM_HEADER);
    if !nc.verify(random, header_str(&headers, CHECKSUM_HEADER), &body) {
        tracing::warn!("recording server request with a bad or missing checksum");
        return Ocs::forbidden(format, StatusCode::FORBIDDEN);
    }
    if app.rooms.cluster().is_some_and(|c| !c.is_ready()) {
        return cluster_unavailable(format);
    }
    let random = random.unwrap_or_default();
    match claim(&app, nc, random).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("recording server request replayed or retried: acknowledged, ignored");
            return Ocs::ok(format);
        }
        Err(_) => return cluster_unavailable(format),
    }
    let answer = report(&app, nc, &body, format).await;
    if !answer.status.is_success() {
        release(&app, nc, random).await;
    }
    answer
}

/// Claims a request's random: in memory, and in the store so that a replay is
/// recognised after a restart too. `false` for a replay or a retry.
/// With `[cluster]`, also in Redis, so that a replay sent to another node is
/// one too (`Err` when Redis did not answer: nothing is claimed).
async fn claim(app: &AppState, nc: &Nextcloud, random: &str) -> Result<bool, ClusterError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let fresh_everywhere = match app.rooms.cluster() {
        Some(cluster) => cluster.claim_receipt("nextcloud", random).await?,
        None => true,
    };
    let fresh_here = nc.claim(random);
    Ok(fresh_everywhere
        && match app.store.first_receipt("nextcloud", random, now_ms) {
            Ok(fresh) => fresh_here && fresh,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a recording server request");
                fresh_here
            }
        })
}

/// Releases a claim after a refusal, so the recording server's retry is judged again.
async fn release(app: &AppState, nc: &Nextcloud, random: &str) {
    nc.release(random);
    if let Err(e) = app.store.forget_receipt("nextcloud", random) {
        tracing::error!(error = %e, "cannot release a recording server request");
    }
    if let Some(cluster) = app.rooms.cluster()
        && let Err(e) = cluster.release_receipt("nextcloud", random).await
    {
        tracing::warn!(error = %e, "cluster: cannot release a recording server request");
    }
}

/// A state report of the recording server, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// `started`, `stopped` or `failed`.
    pub kind: &'static str,
    /// The Talk token it is about: a valid room id.
    pub token: String,
}

/// Why a state report's body was refused, before any room was looked at.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// 400 `invalid_body`.
    #[error("The body is not JSON.")]
    NotJson,
    /// 400 `unknown_type` (the type as sent, empty when missing).
    #[error("The given type `{0}` is not supported.")]
    UnknownType(String),
    /// 400 `invalid_body`.
    #[error("`{0}.token` is missing.")]
    MissingToken(&'static str),
    /// 404 `no_such_room`: the token is not a valid room id.
    #[error("Room not found.")]
    NoRoom,
}

/// Parses a state report's body. Public for the fuzzer (`fuzz/`) and
/// `tests/fuzz_corpus.rs`.
pub fn parse_report(body: &[u8]) -> Result<Report, ReportError> {
    let message = serde_json::from_slice::<Value>(body).map_err(|_| ReportError::NotJson)?;
    let kind = match message.get("type").and_then(Value::as_str) {
        Some("started") => "started",
        Some("stopped") => "stopped",
        Some("failed") => "failed",
        other => {
            return Err(ReportError::UnknownType(
                other.unwrap_or_default().to_owned(),
            ));
        }
    };
    // `actor` and `status` are informational here; only the token matters.
    let token = message
        .get(kind)
        .and_then(|payload| payload.get("token"))
        .and_then(Value::as_str)
        .ok_or(ReportError::MissingToken(kind))?;
    if !valid_room_id(token) {
        return Err(ReportError::NoRoom);
    }
    Ok(Report {
        kind,
        token: token.to_owned(),
    })
}

/// Applies one verified state report.
async fn report(app: &AppState, nc: &Nextcloud, body: &[u8], format: Format) -> Ocs {
    let (kind, token) = match parse_report(body) {
        Ok(Report { kind, token }) => (kind, token),
        Err(ReportError::NoRoom) => return Ocs::no_room(format),
        Err(e) => {
            let code = match e {
                ReportError::UnknownType(_) => "unknown_type",
                _ => "invalid_body",
            };
            let message = crate::protocol::short_detail(&e.to_string());
            return Ocs::error(format, StatusCode::BAD_REQUEST, code, &message);
        }
    };
    let token = token.as_str();
    let found = match kind {
        "started" => started(app, token).await,
        "stopped" => stopped(app, nc, token).await,
        _ => failed(app, nc, token).await,
    };
    // Redis did not answer: nothing applied, and the request's random is
    // released (not a success), so the same report is taken again.
    let Ok(found) = found else {
        return cluster_unavailable(format);
    };
    tracing::info!(room = %token, kind, found, "recording server report");
    if found {
        Ocs::ok(format)
    } else {
        Ocs::no_room(format)
    }
}

/// `started` confirms a start only while the room is starting; a repeated or
/// late confirmation of a recording already running is acknowledged.
async fn started(app: &AppState, token: &str) -> Result<bool, ClusterError> {
    Ok(match app.rooms.recording_state(token).await {
        Some(RecordingState::Initializing { recording_id, .. }) => {
            app.rooms
                .apply_to(token, Input::BackendRecording { recording_id })
                .await?;
            true
        }
        Some(RecordingState::Recording { .. } | RecordingState::Stopping { .. }) => true,
        // Nextcloud answers a start nobody asked for as if the room did not exist.
        _ => false,
    })
}

/// `stopped` ends the room's recording; for an emptied room that still owes
/// a file it is acknowledged so that the recording server goes on to upload.
async fn stopped(app: &AppState, nc: &Nextcloud, token: &str) -> Result<bool, ClusterError> {
    Ok(match app.rooms.recording_state(token).await {
        Some(state) => {
            if let Some(recording_id) = state.recording_id().filter(|_| state.is_active()) {
                app.rooms
                    .apply_to(
                        token,
                        Input::BackendStopped {
                            recording_id: recording_id.to_owned(),
                        },
                    )
                    .await?;
            }
            true
        }
        None => nc.pending(token).await?.is_some(),
    })
}

/// `failed` fails the room's recording; no file follows it.
async fn failed(app: &AppState, nc: &Nextcloud, token: &str) -> Result<bool, ClusterError> {
    let owed = nc.pending(token).await?.is_some();
    let found = match app.rooms.recording_state(token).await {
        Some(state) => {
            if let Some(recording_id) = state.recording_id().filter(|_| state.is_active()) {
                app.rooms
                    .apply_to(
                        token,
                        Input::BackendFailed {
                            recording_id: recording_id.to_owned(),
                            reason: FAILURE_REASON.into(),
                        },
                    )
                    .await?;
            }
            true
        }
        None => owed,
    };
    // Only once applied: a retry still finds what the room owes.
    nc.forget(token).await?;
    Ok(found)
}

/// `[cluster]`: the recording server's report is refused while Redis does
/// not answer (503), and nothing is remembered, so it may send it again.
fn cluster_unavailable(format: Format) -> Ocs {
    tracing::warn!("recording server report refused: the cluster's Redis did not answer");
    Ocs::error(
        format,
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        "The cluster's Redis did not answer; nothing was done. Try again.",
    )
}

/// `POST …/recording/{token}/store`: the recording server uploads the file.
async fn store(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Ocs {
    let format = negotiate(query.as_deref(), &headers);
    let Some(nc) = nextcloud(&app) else {
        return Ocs::no_room(format);
    };
    if !valid_room_id(&token) {
        return Ocs::no_room(format);
    }
    let random = header_str(&headers, RANDOM_HEADER);
    if !nc.verify(
        random,
        header_str(&headers, CHECKSUM_HEADER),
        token.as_bytes(),
    ) {
        tracing::warn!(room = %token, "recording upload with a bad or missing checksum");
        return Ocs::forbidden(format, StatusCode::UNAUTHORIZED);
    }
    if crate::limits::declared_too_large(&headers, limit_of_uploads(&app)) {
        tracing::warn!(room = %token, limit = app.config.storage.max_upload_bytes, "recording upload too large");
        return Ocs::store_error(format, StatusCode::PAYLOAD_TOO_LARGE, "size");
    }
    let random = random.unwrap_or_default();
    match claim(&app, nc, random).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(room = %token, "recording upload replayed or retried: acknowledged, ignored");
            return Ocs::ok(format);
        }
        Err(_) => return cluster_unavailable(format),
    }
    let answer = match receive(&app, nc, &token, multipart).await {
        Ok(()) => Ocs::ok(format),
        Err(UploadError::Invalid(code)) => {
            tracing::warn!(room = %token, error = code, "recording upload refused");
            Ocs::store_error(format, StatusCode::BAD_REQUEST, code)
        }
        Err(UploadError::TooLarge) => {
            tracing::warn!(room = %token, limit = app.config.storage.max_upload_bytes, "recording upload too large");
            Ocs::store_error(format, StatusCode::PAYLOAD_TOO_LARGE, "size")
        }
        Err(UploadError::Storage(e)) => {
            tracing::error!(room = %token, error = %e, "recording upload could not be stored");
            Ocs::store_error(format, StatusCode::INTERNAL_SERVER_ERROR, "storage")
        }
    };
    if !answer.status.is_success() {
        release(&app, nc, random).await;
    }
    answer
}

/// `[storage] max_upload_bytes` as a body length, with room for the
/// multipart framing around the file.
fn limit_of_uploads(app: &AppState) -> usize {
    usize::try_from(app.config.storage.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024)
}

/// Why an upload was not stored.
#[derive(Debug)]
pub enum UploadError {
    /// 400 with Talk's error code.
    Invalid(&'static str),
    /// The body exceeded `[storage] max_upload_bytes`.
    TooLarge,
    /// onair's storage failed.
    Storage(io::Error),
}

use UploadError::Invalid;

/// Reads the multipart body, streams the file to storage, validates it as
/// Talk does, catalogues it and announces it.
async fn receive(
    app: &AppState,
    nc: &Nextcloud,
    token: &str,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(), UploadError> {
    let mut multipart = multipart.map_err(|_| Invalid("invalid_file"))?;
    let dir = app.config.storage.path.clone();
    let mut owner: Option<String> = None;
    let mut file: Option<Received> = None;
    let mut total = Budget {
        used: 0,
        limit: app.config.storage.max_upload_bytes,
    };
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|_| Invalid("invalid_file"))?
    {
        match field.name() {
            Some("owner") => {
                let bytes = read_small(&mut field, MAX_OWNER_BYTES, &mut total).await?;
                owner = Some(String::from_utf8(bytes).map_err(|_| Invalid("owner_invalid"))?);
            }
            Some("file") => {
                if file.is_some() {
                    return Err(Invalid("invalid_file"));
                }
                // Name and extension are known before the content: refuse early.
                let name = file_name(field.file_name())?;
                let extension = extension(&name)?;
                file = Some(receive_file(field, &dir, &mut total, name, extension).await?);
            }
            _ => drain(&mut field, &mut total).await?,
        }
    }
    let file = file.ok_or(Invalid("invalid_file"))?;
    let owner = owner
        .filter(|o| valid_owner(o))
        .ok_or(Invalid("owner_invalid"))?;
    let pending = nc.pending(token).await.map_err(|e| {
        UploadError::Storage(io::Error::other(format!(
            "cannot read the room's pending start in the cluster: {e}"
        )))
    })?;
    if pending.as_ref().is_some_and(|p| p.owner != owner) {
        // Talk refuses an owner who is not in the conversation; onair knows
        // exactly whom it asked to record for.
        return Err(Invalid("owner_participant"));
    }
    if file.size == 0 {
        return Err(Invalid("empty_file"));
    }
    let mime = sniff(&file.head).ok_or(Invalid("file_mimetype"))?;
    if !ALLOWED_FORMATS.contains(&(mime, file.extension.as_str())) {
        return Err(Invalid("file_extension"));
    }

    // The recording server uploads the one file of the recording onair last
    // started for this token; without one (onair restarted meanwhile) the file
    // gets a fresh id rather than being lost.
    let owed = pending.map(|p| p.recording_id);
    let mut recording_id = owed.clone().unwrap_or_else(new_id);
    let taken = app.catalog.get(&recording_id).await.map_err(|e| {
        UploadError::Storage(io::Error::other(format!("cannot read the catalog: {e}")))
    })?;
    if taken.is_some() {
        recording_id = new_id();
    }
    let path = dir.join(format!("{recording_id}.{}", file.extension));
    let size_bytes = file.size;
    let name = file.name.clone();
    file.persist(&path).await.map_err(UploadError::Storage)?;
    let recording = Recording {
        id: recording_id.clone(),
        room: token.to_owned(),
        name: name.clone(),
        duration_s: 0.0,
        size_bytes,
        location: Location::File(path.clone()),
        provider: "nextcloud".into(),
        created_at: now_rfc3339(),
        participants: Vec::new(),
        initiator: None,
    };
    // The upload names its owner: the owner of a start onair knows already,
    // or (after a restart) the one Talk says, so notifications still go out.
    if let Err(e) = app.catalog.store().set_owner(&recording.id, &owner).await {
        tracing::error!(error = %e, "cannot record the recording's owner");
    }
    let event = app.catalog.available(&recording);
    if !matches!(app.catalog.insert(recording).await, Ok(true)) {
        // Not catalogued, not kept: the recording server keeps its copy when
        // the upload fails.
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        return Err(UploadError::Storage(io::Error::other(
            "the recording could not be catalogued",
        )));
    }
    if let Some(owed) = owed {
        nc.delivered(token, &owed).await;
    }
    let announced = app.rooms.announce(token, event).await;
    tracing::info!(room = %token, recording_id, size_bytes, announced, "recording stored");
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Talk user id: anything printable of sensible length. Public for the fuzzer.
pub fn valid_owner(owner: &str) -> bool {
    !owner.trim().is_empty() && owner.len() <= 255 && !owner.chars().any(char::is_control)
}

/// The base name of the uploaded file (Talk stores `basename($name)`), cut
/// to [`MAX_FILE_NAME_BYTES`] (keeping its extension) so it fits as an
/// object key's last segment and in the owner's bucket. Public for the fuzzer.
pub fn file_name(raw: Option<&str>) -> Result<String, UploadError> {
    // A `file` field that is not a file upload is no file at all.
    let raw = raw.ok_or(Invalid("invalid_file"))?;
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.is_empty() || base.starts_with('.') || base.chars().any(char::is_control) {
        return Err(Invalid("file_name"));
    }
    Ok(fit_name(base, MAX_FILE_NAME_BYTES))
}

/// The lowercase extension, if Talk accepts it for some recording format.
/// Public for the fuzzer.
pub fn extension(name: &str) -> Result<String, UploadError> {
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if ALLOWED_FORMATS.iter().any(|(_, e)| *e == extension) {
        Ok(extension)
    } else {
        Err(Invalid("file_extension"))
    }
}

/// The media type of a recording from its first bytes, for the formats Talk
/// accepts (what `finfo` reports for them). Public for the fuzzer.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML: the DocType element near the start names the flavour.
        let header = &head[..head.len().min(128)];
        if contains(header, b"webm") {
            return Some("video/webm");
        }
        if contains(header, b"matroska") {
            return Some("video/x-matroska");
        }
        return None;
    }
    if head.starts_with(b"OggS") {
        return Some(if contains(head, b"\x80theora") {
            "video/ogg"
        } else {
            "audio/ogg"
        });
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some("video/mp4");
    }
    None
}

/// Counts a chunk against the upload limit.
fn count(total: &mut Budget, chunk: &Bytes) -> Result<(), UploadError> {
    total.used += chunk.len() as u64;
    if total.used > total.limit {
        return Err(UploadError::TooLarge);
    }
    Ok(())
}

/// The bytes one upload has used of `[storage] max_upload_bytes`.
struct Budget {
    /// Read so far, all fields together.
    used: u64,
    /// The most one upload may send.
    limit: u64,
}

/// Reads a small text field.
async fn read_small(
    field: &mut Field<'_>,
    max: usize,
    total: &mut Budget,
) -> Result<Vec<u8>, UploadError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|_| Invalid("invalid_file"))? {
        count(total, &chunk)?;
        if bytes.len() + chunk.len() > max {
            return Err(Invalid("owner_invalid"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Skips a field onair does not use.
async fn drain(field: &mut Field<'_>, total: &mut Budget) -> Result<(), UploadError> {
    while let Some(chunk) = field.chunk().await.map_err(|_| Invalid("invalid_file"))? {
        count(total, &chunk)?;
    }
    Ok(())
}

/// A received file under its temporary name; removed unless persisted.
struct Received {
    temp: TempFile,
    size: u64,
    head: Vec<u8>,
    name: String,
    extension: String,
}

impl Received {
    /// Moves the file to its final name (same directory, so atomically).
    async fn persist(mut self, path: &FsPath) -> io::Result<()> {
        let from = self.temp.path.clone();
        let to = path.to_owned();
        tokio::task::spawn_blocking(move || std::fs::rename(from, to))
            .await
            .map_err(io::Error::other)??;
        self.temp.persisted = true;
        Ok(())
    }
}

/// A temporary upload file, deleted when dropped unless persisted.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            // Removing one directory entry; not worth a blocking-pool round trip.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams the `file` field chunk by chunk to a temporary file in `dir`,
/// through a blocking writer thread fed by a bounded queue, so at most a few
/// chunks are in memory whatever the file's size.
async fn receive_file(
    mut field: Field<'_>,
    dir: &FsPath,
    total: &mut Budget,
    name: String,
    extension: String,
) -> Result<Received, UploadError> {
    let temp = TempFile {
        path: dir.join(format!(".upload-{}.part", new_id())),
        persisted: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = {
        let dir = dir.to_owned();
        let path = temp.path.clone();
        tokio::task::spawn_blocking(move || write_file(&dir, &path, rx))
    };
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let mut size: u64 = 0;
    let streamed = async {
        while let Some(chunk) = field.chunk().await.map_err(|_| Invalid("invalid_file"))? {
            count(total, &chunk)?;
            size += chunk.len() as u64;
            if head.len() < HEAD_BYTES {
                let take = chunk.len().min(HEAD_BYTES - head.len());
                head.extend_from_slice(&chunk[..take]);
            }
            if tx.send(chunk).await.is_err() {
                // The writer stopped; its error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(io::Error::other);
    streamed?;
    written.and_then(|w| w).map_err(UploadError::Storage)?;
    Ok(Received {
        temp,
        size,
        head,
        name,
        extension,
    })
}

/// The blocking side of [`receive_file`].
fn write_file(
    dir: &FsPath,
    path: &FsPath,
    mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    while let Some(chunk) = chunks.blocking_recv() {
        file.write_all(&chunk)?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_nextcloud() {
        let mut headers = HeaderMap::new();
        assert_eq!(negotiate(None, &headers), Format::Xml);
        headers.insert(
            header::ACCEPT,
            "text/html, application/json".parse().unwrap(),
        );
        assert_eq!(negotiate(None, &headers), Format::Json);
        assert_eq!(negotiate(Some("a=b&format=xml"), &headers), Format::Xml);
        assert_eq!(
            negotiate(Some("format=json"), &HeaderMap::new()),
            Format::Json
        );
    }

    #[test]
    fn xml_envelope() {
        let xml = ocs_xml(
            "failure",
            403,
            "",
            &json!({"type": "error", "error": {"code": "a<b", "message": ""}}),
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\"?>\n<ocs>\n <meta>\n  <status>failure</status>\n  \
             <statuscode>403</statuscode>\n  <message></message>\n </meta>\n <data>\n  \
             <error>\n   <code>a&lt;b</code>\n   <message></message>\n  </error>\n  \
             <type>error</type>\n </data>\n</ocs>\n"
        );
        assert!(ocs_xml("ok", 200, "OK", &Value::Null).contains(" <data/>\n"));
        // Control characters XML 1.0 forbids are replaced, tabs and newlines kept.
        let xml = ocs_xml("failure", 400, "bad \u{1}type\tx\n", &Value::Null);
        assert!(
            xml.contains("<message>bad \u{FFFD}type\tx\n</message>"),
            "{xml}"
        );
    }

    #[test]
    fn file_names_and_extensions() {
        assert_eq!(
            file_name(Some("/tmp/x/Recording 2025-06-03 14-05-02.webm")).unwrap(),
            "Recording 2025-06-03 14-05-02.webm"
        );
        assert!(matches!(file_name(None), Err(Invalid("invalid_file"))));
        for bad in ["", "dir/", ".hidden.webm", "a\nb.webm"] {
            assert!(
                matches!(file_name(Some(bad)), Err(Invalid("file_name"))),
                "{bad:?}"
            );
        }
        // A name too long for a file system is cut, keeping its extension.
        let long = file_name(Some(&format!("{}.webm", "録".repeat(200)))).unwrap();
        assert!(long.len() <= MAX_FILE_NAME_BYTES && long.ends_with(".webm"));
        assert_eq!(extension(&long).unwrap(), "webm");
        assert_eq!(extension("a.WEBM").unwrap(), "webm");
        assert!(matches!(extension("a.txt"), Err(Invalid("file_extension"))));
        assert!(matches!(extension("noext"), Err(Invalid("file_extension"))));
    }

    #[test]
    fn sniffing() {
        let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x84];
        webm.extend_from_slice(b"webm");
        assert_eq!(sniff(&webm), Some("video/webm"));
        let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x88];
        mkv.extend_from_slice(b"matroska");
        assert_eq!(sniff(&mkv), Some("video/x-matroska"));
        assert_eq!(sniff(b"OggS\0\x02...OpusHead"), Some("audio/ogg"));
        assert_eq!(sniff(b"OggS\0\x02...\x80theora"), Some("video/ogg"));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0"), Some("video/mp4"));
        assert_eq!(sniff(b"hello, world"), None);
        assert_eq!(sniff(b""), None);
    }
}
