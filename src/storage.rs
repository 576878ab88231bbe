//! Where recording files are kept: `[storage] path` on local disk, or, with
//! `[storage] s3_bucket`, an S3-compatible bucket (AWS S3, MinIO, Ceph RGW…)
//! through `object_store`.
//!
//! Every producer (a hand-in, Nextcloud's upload, a JaaS download) writes the
//! file to `[storage] path` first and catalogues it as [`Location::File`].
//! With a bucket, [`Storage::offload`] — called by the catalog right after the
//! insert, so from one place for every producer — then streams the file to the
//! bucket in the background (multipart, retried with backoff), switches the
//! catalog entry to [`Location::Object`] only if it is still where it was,
//! and only then removes the local file. A crash at any point leaves either
//! the local file (moved again at the next start, [`Storage::start`]) or the
//! object, never neither.
//!
//! Media is served from whichever location is current; objects are streamed
//! through onair with HTTP Range ([`Storage::get`]), so the bucket can stay
//! private and the media URLs (plain or signed) keep working unchanged.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, GetResult, ObjectStore,
    PutMultipartOptions, WriteMultipart,
};
use rand::Rng;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::catalog::{Location, Recording};
use crate::config::StorageConfig;
use crate::store::Store;

/// Size of one part of a multipart upload (S3 wants at least 5 MiB but for the last).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once: bounds the memory an upload holds.
const PARTS_IN_FLIGHT: usize = 2;
/// Uploads to the bucket running at once; the others wait their turn.
const UPLOADS_AT_ONCE: usize = 4;
/// Attempts to upload one file before it is left on local disk until the next start.
const UPLOAD_ATTEMPTS: u32 = 8;
/// The pause after the first failed attempt; doubled each time, with jitter.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// How long the startup check of the bucket may take: the client's own
/// retries would otherwise hide an unreachable endpoint for minutes.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// Storage that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The S3 client refused the configuration (e.g. a malformed endpoint).
    #[error("[storage] s3: {0}")]
    S3(#[from] object_store::Error),
}

/// A failed upload.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The local file could not be read.
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    /// S3 refused or failed.
    #[error("S3: {0}")]
    S3(#[from] object_store::Error),
    /// Shutdown began.
    #[error("shutting down")]
    Cancelled,
}

/// The S3 connection settings, shared by onair's bucket and (possibly) the
/// owners' buckets of the notifications.
pub struct S3Settings<'a> {
    /// The bucket name.
    pub bucket: &'a str,
    /// The region (`us-east-1` when not given).
    pub region: Option<&'a str>,
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; AWS when `None`.
    pub endpoint: Option<&'a str>,
    /// The access key id.
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a str,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
}

/// An S3 client for `settings`, with connect and request timeouts (the
/// client's own retries cover single failed requests).
pub fn s3_client(settings: &S3Settings<'_>) -> Result<AmazonS3, object_store::Error> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(settings.bucket)
        .with_region(settings.region.unwrap_or("us-east-1"))
        .with_access_key_id(settings.access_key_id)
        .with_secret_access_key(settings.secret_access_key)
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(120))
                .with_allow_http(settings.allow_http),
        );
    if let Some(endpoint) = settings.endpoint {
        // Path-style requests (`endpoint/bucket/key`): what S3-compatible servers expect.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    builder.build()
}

/// onair's bucket.
struct Bucket {
    client: AmazonS3,
    /// The bucket name, for logs.
    name: String,
    /// The key prefix, without leading or trailing `/`.
    prefix: String,
}

/// Where recording files are kept.
pub struct Storage {
    bucket: Option<Arc<Bucket>>,
    store: Arc<Store>,
    /// Bounds the uploads running at once.
    uploads: Arc<Semaphore>,
    /// Recordings being moved, so one is never moved twice at once.
    moving: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
    /// Cancelled on shutdown: uploads abort; the files stay local until the next start.
    shutdown: CancellationToken,
}

impl Storage {
    /// Storage from `[storage]`: local only, unless `s3_bucket` is set.
    /// `store` holds the catalog whose entries are moved.
    pub fn from_config(
        config: &StorageConfig,
        store: Arc<Store>,
        shutdown: CancellationToken,
    ) -> Result<Self, StorageError> {
        let bucket = match (
            &config.s3_bucket,
            &config.s3_access_key_id,
            &config.s3_secret_access_key,
        ) {
            (Some(bucket), Some(access_key_id), Some(secret_access_key)) => {
                let client = s3_client(&S3Settings {
                    bucket,
                    region: config.s3_region.as_deref(),
                    endpoint: config.s3_endpoint.as_deref(),
                    access_key_id,
                    secret_access_key,
                    allow_http: config.s3_allow_http,
                })?;
                Some(Arc::new(Bucket {
                    client,
                    name: bucket.clone(),
                    prefix: config.s3_prefix.trim_matches('/').to_owned(),
                }))
            }
            // `Config::validate` refuses a partial setting.
            _ => None,
        };
        Ok(Self {
            bucket,
            store,
            uploads: Arc::new(Semaphore::new(UPLOADS_AT_ONCE)),
            moving: Arc::default(),
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    /// Checks the bucket is reachable (logging the outcome either way) and
    /// moves every local file in `catalogued` to it. Returns at once.
    pub fn start(&self, catalogued: Vec<Recording>) {
        let Some(bucket) = self.bucket.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("[storage] s3 needs a Tokio runtime");
            return;
        };
        let local: Vec<Recording> = catalogued
            .into_iter()
            .filter(|r| r.location.file().is_some())
            .collect();
        let storage = self.handle();
        self.tasks.spawn_on(
            async move {
                match bucket.check().await {
                    Ok(()) => tracing::info!(
                        bucket = %bucket.name,
                        prefix = %bucket.prefix,
                        "recording files go to the S3 bucket"
                    ),
                    Err(e) => tracing::error!(
                        bucket = %bucket.name,
                        error = %e,
                        "THE S3 BUCKET IS NOT REACHABLE: recording files stay in [storage] path \
                         and are retried; check [storage] s3_* and that the bucket exists"
                    ),
                }
                if !local.is_empty() {
                    tracing::info!(
                        count = local.len(),
                        "moving recordings still on local disk to the bucket"
                    );
                }
                for recording in local {
                    storage.offload(&recording);
                }
            },
            &runtime,
        );
    }

    /// Moves `recording`'s local file to the bucket in the background, then
    /// points the catalog at the object and removes the file. Does nothing
    /// without a bucket, for a recording that is not a local file, or for one
    /// already being moved.
    pub fn offload(&self, recording: &Recording) {
        self.handle().offload(recording);
    }

    fn handle(&self) -> Handle {
        Handle {
            bucket: self.bucket.clone(),
            store: self.store.clone(),
            uploads: self.uploads.clone(),
            moving: self.moving.clone(),
            tasks: self.tasks.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Metadata of an object: its size, or `NotFound`.
    pub async fn size(&self, key: &str) -> Result<u64, ObjectError> {
        let bucket = self.bucket.as_ref().ok_or(ObjectError::NoBucket)?;
        Ok(bucket.client.head(&ObjectPath::from(key)).await?.size)
    }

    /// An object, or the bytes `range` of it, as a stream.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, ObjectError> {
        let bucket = self.bucket.as_ref().ok_or(ObjectError::NoBucket)?;
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        Ok(bucket
            .client
            .get_opts(&ObjectPath::from(key), options)
            .await?)
    }

    /// Removes an object; one already gone counts as removed.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let bucket = self.bucket.as_ref().ok_or(ObjectError::NoBucket)?;
        match bucket.client.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Why an object could not be read or removed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The recording is in a bucket but `[storage] s3_bucket` is not set (any more).
    #[error("the recording is in an S3 bucket but [storage] s3_bucket is not configured")]
    NoBucket,
    /// S3 answered with an error or could not be reached.
    #[error("S3: {0}")]
    S3(#[from] object_store::Error),
}

impl ObjectError {
    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::S3(object_store::Error::NotFound { .. }))
    }
}

/// What a background move needs, cloned out of [`Storage`].
#[derive(Clone)]
struct Handle {
    bucket: Option<Arc<Bucket>>,
    store: Arc<Store>,
    uploads: Arc<Semaphore>,
    moving: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Handle {
    fn offload(&self, recording: &Recording) {
        let Some(bucket) = self.bucket.clone() else {
            return;
        };
        let Location::File(path) = &recording.location else {
            return;
        };
        if !lock(&self.moving).insert(recording.id.clone()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lock(&self.moving).remove(&recording.id);
            tracing::error!("[storage] s3 needs a Tokio runtime");
            return;
        };
        let span =
            tracing::info_span!("offload", room = %recording.room, recording_id = %recording.id);
        let this = self.clone();
        let recording = recording.clone();
        let path = path.clone();
        self.tasks.spawn_on(
            async move {
                this.move_to_bucket(&bucket, &recording, &path).await;
                lock(&this.moving).remove(&recording.id);
            }
            .instrument(span),
            &runtime,
        );
    }

    async fn move_to_bucket(&self, bucket: &Bucket, recording: &Recording, path: &FsPath) {
        let key = object_key(&bucket.prefix, recording);
        let _permit = tokio::select! {
            permit = self.uploads.acquire() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = self.shutdown.cancelled() => return,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match bucket
                .upload(path, &key, &recording.name, &self.shutdown)
                .await
            {
                Ok(()) => break,
                Err(UploadError::Cancelled) => {
                    tracing::info!(
                        "upload to the bucket interrupted by shutdown; resumed at the next start"
                    );
                    return;
                }
                Err(UploadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Deleted meanwhile, or moved by an earlier run.
                    tracing::debug!("the local file is gone; nothing to upload");
                    return;
                }
                Err(e) if attempt >= UPLOAD_ATTEMPTS => {
                    tracing::error!(
                        bucket = %bucket.name,
                        error = %e,
                        attempts = attempt,
                        "cannot upload a recording to the bucket; it stays in [storage] path until the next start"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(bucket = %bucket.name, error = %e, attempt, "upload to the bucket failed; will retry");
                    let pause = backoff(attempt);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
            }
        }
        let object = Location::Object {
            key: key.to_string(),
        };
        let moved = self
            .store
            .move_recording(&recording.id, &recording.location, &object);
        match moved {
            Ok(true) => {
                tracing::info!(bucket = %bucket.name, %key, "recording moved to the bucket");
                if let Err(e) = tokio::fs::remove_file(path).await
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(error = %e, "cannot remove the local copy of a recording moved to the bucket");
                }
            }
            Ok(false) => {
                // Deleted (or moved) while uploading: the object must not outlive it.
                let current = self.store.recording(&recording.id).ok().flatten();
                if current.is_some_and(|r| r.location == object) {
                    return;
                }
                tracing::info!(%key, "recording deleted while uploading; removing the object");
                if let Err(e) = bucket.client.delete(&key).await {
                    tracing::warn!(%key, error = %e, "cannot remove the object of a deleted recording");
                }
            }
            Err(e) => {
                // The file stays where the catalog says; the next start tries again.
                tracing::error!(error = %e, "cannot point the catalog at the uploaded object");
            }
        }
    }
}

impl Bucket {
    /// Lists (at most one page of) the prefix: fails if the bucket is missing,
    /// unreachable or the keys are wrong.
    async fn check(&self) -> Result<(), String> {
        use futures_util::StreamExt;
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut listing = self.client.list(prefix.as_ref());
        match tokio::time::timeout(CHECK_TIMEOUT, listing.next()).await {
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Ok(_) => Ok(()),
        }
    }

    /// Streams the file to the bucket.
    async fn upload(
        &self,
        path: &FsPath,
        key: &ObjectPath,
        name: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), UploadError> {
        upload_file(&self.client, path, key, name, shutdown).await
    }
}

/// Streams a local file to `key` as a multipart upload with the content type
/// of `name`; at most [`PARTS_IN_FLIGHT`] parts are held in memory. Stops
/// (aborting the upload) when `shutdown` is cancelled.
pub async fn upload_file(
    client: &AmazonS3,
    path: &FsPath,
    key: &ObjectPath,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<(), UploadError> {
    {
        let mut file = tokio::fs::File::open(path).await?;
        let options = PutMultipartOptions {
            attributes: Attributes::from_iter([(
                Attribute::ContentType,
                content_type(name).to_owned(),
            )]),
            ..Default::default()
        };
        let upload = client.put_multipart_opts(key, options).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0; 256 * 1024];
        let written: Result<(), UploadError> = async {
            loop {
                if shutdown.is_cancelled() {
                    return Err(UploadError::Cancelled);
                }
                let n = file.read(&mut buffer).await?;
                if n == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match written {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `RETRY_BASE · 2^(n-1)` with ±20 % jitter, at most [`MAX_PAUSE`].
fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    RETRY_BASE
        .saturating_mul(1 << exponent)
        .min(MAX_PAUSE)
        .mul_f64(rand::rng().random_range(0.8..1.2))
}

/// `{prefix}/{room}/{recording id}/{file name}`: the local layout, and one
/// recording never overwrites another.
pub fn object_key(prefix: &str, recording: &Recording) -> ObjectPath {
    let parts = prefix
        .split('/')
        .filter(|p| !p.is_empty())
        .map(PathPart::from)
        .chain([
            PathPart::from(recording.room.as_str()),
            PathPart::from(recording.id.as_str()),
            PathPart::from(recording.name.as_str()),
        ]);
    ObjectPath::from_iter(parts)
}

/// The media type of a recording file, from its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "ogv" => "video/ogg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "m4a" => "audio/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// How a recording's file is served: its type, and whether a browser may
/// show it in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The `Content-Type` of the answer.
    pub content_type: &'static str,
    /// `Content-Disposition: inline` (audio and video) or `attachment`.
    pub inline: bool,
}

/// Only audio and video are served as what they are, inline: anything else
/// handed in (a `rec.html`, a `.svg`, a `.json`) leaves as an
/// `application/octet-stream` attachment, so no file onair stores can run as
/// a page on onair's origin.
pub fn served_as(name: &str) -> Served {
    match content_type(name) {
        media if media.starts_with("audio/") || media.starts_with("video/") => Served {
            content_type: media,
            inline: true,
        },
        _ => Served {
            content_type: "application/octet-stream",
            inline: false,
        },
    }
}

/// The longest file name the common file systems take (ext4, XFS, btrfs,
/// ZFS, APFS), in bytes, and the longest segment of an object key that a
/// file-backed S3 server (MinIO) takes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// An extension kept when a name is cut is at most this long (`.webm`); a
/// longer "extension" is just more of the name.
const MAX_KEPT_EXTENSION_BYTES: usize = 16;

/// `name` cut to at most `max_bytes` bytes, on a UTF-8 character boundary,
/// keeping its extension (`.mp4`) so the file still says what it is.
///
/// Names come from outside (a hand-in, Talk's upload, a JaaS link) and are
/// measured in characters there, but file systems count bytes: 200 CJK
/// characters are 600 bytes. Cutting when the name arrives, rather than
/// failing when the file is moved into place, means a long name never costs
/// a whole upload.
pub fn fit_name(name: &str, max_bytes: usize) -> String {
    if name.len() <= max_bytes {
        return name.to_owned();
    }
    let extension = name
        .rfind('.')
        .filter(|&dot| dot > 0)
        .map(|dot| &name[dot..])
        .filter(|e| e.len() > 1 && e.len() <= MAX_KEPT_EXTENSION_BYTES && e.len() < max_bytes)
        .unwrap_or("");
    let stem = &name[..name.len() - extension.len()];
    let mut end = (max_bytes - extension.len()).min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{extension}", &stem[..end])
}

/// The file name `prefix` + `name`, with `name` cut by [`fit_name`] so the
/// whole fits in [`MAX_FILE_NAME_BYTES`]. Every file name onair makes from a
/// recording's name goes through here.
pub fn file_name(prefix: &str, name: &str) -> String {
    let room = MAX_FILE_NAME_BYTES.saturating_sub(prefix.len());
    format!("{prefix}{}", fit_name(name, room))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: the whole file, `200`.
    Full,
    /// One range of bytes, end exclusive: `206`.
    Partial(Range<u64>),
    /// No range overlaps the file: `416` with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// One `range-spec` of a `Range` header, as far as it overlaps a file.
enum Spec {
    /// The bytes it asks for that exist, end exclusive.
    Satisfiable(Range<u64>),
    /// Valid, but past the end of the file (or a suffix of zero bytes).
    Unsatisfiable,
}

/// Parses a `Range` header as RFC 9110 §14.2 says a server may:
///
/// * a header that does not parse (another unit, `bytes=5-1`, `bytes=x-`) is
///   ignored: `Full`;
/// * `bytes=A-B` and `bytes=A-` are cut to the end of the file, and are
///   unsatisfiable when `A` is at or past it;
/// * `bytes=-N` is the last `N` bytes, the whole file when `N` is larger;
/// * of several ranges, one that is satisfiable is served alone; more than
///   one get the whole file (no `multipart/byteranges`), none get `416`.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Full;
    }
    let mut satisfiable = Vec::new();
    let mut any = false;
    // A list: empty elements are allowed and skipped (RFC 9110 §5.6.1.2).
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        match range_spec(spec, size) {
            None => return RangeRequest::Full,
            Some(Spec::Satisfiable(range)) => satisfiable.push(range),
            Some(Spec::Unsatisfiable) => {}
        }
    }
    match satisfiable.len() {
        _ if !any => RangeRequest::Full,
        0 => RangeRequest::Unsatisfiable,
        1 => RangeRequest::Partial(satisfiable.swap_remove(0)),
        _ => RangeRequest::Full,
    }
}

/// One `int-range` or `suffix-range`; `None` when it does not parse.
fn range_spec(spec: &str, size: u64) -> Option<Spec> {
    let (first, last) = spec.split_once('-')?;
    match (first.is_empty(), last.is_empty()) {
        // `-N`: the last N bytes (RFC 9110 §14.1.1).
        (true, false) => match position(last)? {
            0 => Some(Spec::Unsatisfiable),
            // A zero-length file has no bytes to send; the whole (empty) file then.
            _ if size == 0 => None,
            n => Some(Spec::Satisfiable(size.saturating_sub(n)..size)),
        },
        // `A-`: from A to the end.
        (false, true) => {
            let first = position(first)?;
            Some(if first >= size {
                Spec::Unsatisfiable
            } else {
                Spec::Satisfiable(first..size)
            })
        }
        // `A-B`, inclusive; `B < A` makes the header invalid.
        (false, false) => {
            let (first, last) = (position(first)?, position(last)?);
            if last < first {
                return None;
            }
            Some(if first >= size {
                Spec::Unsatisfiable
            } else {
                Spec::Satisfiable(first..last.saturating_add(1).min(size))
            })
        }
        (true, true) => None,
    }
}

/// `1*DIGIT` (no sign, no spaces); a number too large for `u64` is past any file.
fn position(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeRequest::*;
        let size = 100;
        assert_eq!(parse_range(None, size), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), size), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=90-"), size), Partial(90..100));
        assert_eq!(parse_range(Some("bytes=-10"), size), Partial(90..100));
        // A suffix longer than the file is the whole file, as a range.
        assert_eq!(parse_range(Some("bytes=-500"), size), Partial(0..100));
        assert_eq!(parse_range(Some("bytes=-100"), size), Partial(0..100));
        assert_eq!(parse_range(Some("bytes=50-500"), size), Partial(50..100));
        assert_eq!(parse_range(Some("bytes=99-99"), size), Partial(99..100));
        assert_eq!(parse_range(Some("BYTES = 0-9"), size), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=100-"), size), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=100-200"), size), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), size), Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), size),
            Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-99999999999999999999999"), size),
            Partial(0..100)
        );
        // Several ranges: one that overlaps is served alone; two or more get
        // the whole file; none is unsatisfiable.
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), size), Full);
        assert_eq!(parse_range(Some("bytes=0-1, 200-300"), size), Partial(0..2));
        assert_eq!(parse_range(Some("bytes=200-,300-400"), size), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,,"), size), Partial(0..2));
        // Anything malformed is ignored.
        assert_eq!(parse_range(Some("bytes=9-0"), size), Full);
        assert_eq!(parse_range(Some("bytes=0-1,9-0"), size), Full);
        assert_eq!(parse_range(Some("items=0-1"), size), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), size), Full);
        assert_eq!(parse_range(Some("bytes=+1-2"), size), Full);
        assert_eq!(parse_range(Some("bytes=1 -2"), size), Full);
        assert_eq!(parse_range(Some("bytes=-"), size), Full);
        assert_eq!(parse_range(Some("bytes="), size), Full);
        assert_eq!(parse_range(Some("bytes"), size), Full);
        assert_eq!(parse_range(Some("bytes=,"), size), Full);
        // An empty file: nothing to cut a suffix from.
        assert_eq!(parse_range(Some("bytes=-5"), 0), Full);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let short = "standup.mp4";
        assert_eq!(fit_name(short, 255), short);
        let long = format!("{}.mp4", "録".repeat(200));
        let cut = fit_name(&long, 255);
        assert!(cut.len() <= 255, "{}", cut.len());
        assert!(cut.ends_with(".mp4"), "{cut}");
        assert_eq!(cut, format!("{}.mp4", "録".repeat(83)));
        // No extension, or one too long to be one: just the first bytes.
        assert_eq!(fit_name(&"é".repeat(10), 5), "éé");
        assert_eq!(fit_name("abcdef.0123456789abcdefghij", 5), "abcde");
        let named = file_name("rec-1-", &long);
        assert!(named.len() <= MAX_FILE_NAME_BYTES);
        assert!(named.starts_with("rec-1-録") && named.ends_with(".mp4"));
        assert_eq!(file_name("rec-1-", short), "rec-1-standup.mp4");
    }

    #[test]
    fn only_audio_and_video_are_served_inline() {
        assert_eq!(
            served_as("a.webm"),
            Served {
                content_type: "video/webm",
                inline: true
            }
        );
        assert!(served_as("a.opus").inline);
        for name in ["rec.html", "a.svg", "a.json", "a.txt", "noext"] {
            assert_eq!(
                served_as(name),
                Served {
                    content_type: "application/octet-stream",
                    inline: false
                },
                "{name}"
            );
        }
    }

    #[test]
    fn keys_follow_the_local_layout_under_the_prefix() {
        let recording = Recording {
            id: "rec-1".into(),
            room: "standup".into(),
            name: "a b.mp4".into(),
            duration_s: 1.0,
            size_bytes: 1,
            location: Location::File("/tmp/a.mp4".into()),
            provider: "manual".into(),
            created_at: String::new(),
            participants: Vec::new(),
            initiator: None,
        };
        assert_eq!(
            object_key("/onair/recordings/", &recording).as_ref(),
            "onair/recordings/standup/rec-1/a b.mp4"
        );
        assert_eq!(object_key("", &recording).as_ref(), "standup/rec-1/a b.mp4");
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("a.MP4"), "video/mp4");
        assert_eq!(content_type("a.webm"), "video/webm");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
