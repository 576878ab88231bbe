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
//!
//! A second bucket, `[livekit] s3_bucket`, is the one LiveKit's egress
//! uploads to. onair never writes there: a recording the egress made stays
//! catalogued at the location LiveKit reported ([`Location::External`]), and
//! [`Storage::object`] recognizes that location as a key of the egress bucket
//! ([`egress_key`]), so the file is served, copied to an owner's bucket and
//! deleted through the same calls as an object in onair's own bucket. Being
//! recognized when read rather than when catalogued needs no new kind of
//! catalog entry, and it also covers recordings catalogued before the bucket
//! was configured.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, GetResult, ObjectStore,
    PutMultipartOptions, WriteMultipart,
};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::catalog_entry::{Location, Recording};
use crate::config::Config;
use crate::store::CatalogStore;

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
    S3(object_store::Error),
    /// The same, for the egress bucket.
    #[error("[livekit] s3: {0}")]
    Egress(object_store::Error),
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
    /// The object to copy could not be read.
    #[error("reading the object: {0}")]
    Object(#[from] ObjectError),
    /// Shutdown began.
    #[error("shutting down")]
    Cancelled,
}

pub use crate::config::S3Settings;

impl From<UploadError> for crate::store::CatalogError {
    fn from(error: UploadError) -> Self {
        Self::Upload(Box::new(error))
    }
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

/// The bucket LiveKit's egress uploads to (`[livekit] s3_*`): onair reads
/// and deletes there, never writes.
struct EgressBucket {
    client: AmazonS3,
    /// The bucket name, matched against the locations LiveKit reports.
    name: String,
    /// `[livekit] s3_endpoint`, whose host a virtual-hosted location may use.
    endpoint: Option<String>,
}

/// A recording's file in one of the buckets, from [`Storage::object`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A key in onair's bucket (`[storage] s3_bucket`).
    Stored(String),
    /// A key in the egress bucket (`[livekit] s3_bucket`).
    Egress(String),
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
    egress: Option<Arc<EgressBucket>>,
    store: CatalogStore,
    /// Bounds the uploads running at once.
    uploads: Arc<Semaphore>,
    /// Recordings being moved, so one is never moved twice at once.
    moving: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
    /// Cancelled on shutdown: uploads abort; the files stay local until the next start.
    shutdown: CancellationToken,
}

impl Storage {
    /// Storage from `[storage]`: local only, unless `s3_bucket` is set; and
    /// the egress bucket of `[livekit] s3_*`, if set. `store` holds the
    /// catalog whose entries are moved.
    pub fn from_config(
        config: &Config,
        store: CatalogStore,
        shutdown: CancellationToken,
    ) -> Result<Self, StorageError> {
        let bucket = match config.storage.s3().settings() {
            Some(settings) => Some(Arc::new(Bucket {
                client: s3_client(&settings).map_err(StorageError::S3)?,
                name: settings.bucket.to_owned(),
                prefix: config.storage.s3_prefix.trim_matches('/').to_owned(),
            })),
            None => None,
        };
        let egress = match config.livekit.s3().settings() {
            Some(settings) => Some(Arc::new(EgressBucket {
                client: s3_client(&settings).map_err(StorageError::Egress)?,
                name: settings.bucket.to_owned(),
                endpoint: settings.endpoint.map(str::to_owned),
            })),
            None => None,
        };
        Ok(Self {
            bucket,
            egress,
            store,
            uploads: Arc::new(Semaphore::new(UPLOADS_AT_ONCE)),
            moving: Arc::default(),
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    /// Checks the buckets are reachable (logging the outcome either way) and
    /// moves every local file in `catalogued` to onair's. Returns at once.
    pub fn start(&self, catalogued: Vec<Recording>) {
        if self.bucket.is_none() && self.egress.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("[storage] s3 needs a Tokio runtime");
            return;
        };
        if let Some(egress) = self.egress.clone() {
            self.tasks.spawn_on(
                async move {
                    match check(&egress.client, None).await {
                        Ok(()) => tracing::info!(
                            bucket = %egress.name,
                            "LiveKit egress files are read from the S3 bucket"
                        ),
                        Err(e) => tracing::error!(
                            bucket = %egress.name,
                            error = %e,
                            "THE LIVEKIT EGRESS BUCKET IS NOT REACHABLE: its recordings cannot be \
                             served, copied or deleted; check [livekit] s3_*"
                        ),
                    }
                },
                &runtime,
            );
        }
        let Some(bucket) = self.bucket.clone() else {
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

    /// `[cluster]`: puts `recording`'s local file in the bucket before it
    /// is catalogued, so that the shared catalog never names one node's disk
    /// (any node serves it at once; the node may die right after). Returns
    /// the recording as it is to be catalogued, at its object; the local
    /// file stays for the caller to remove once catalogued. Unchanged
    /// without a bucket, or for a recording that is not a local file.
    pub async fn upload_first(&self, mut recording: Recording) -> Result<Recording, UploadError> {
        let (Some(bucket), Location::File(path)) = (&self.bucket, &recording.location) else {
            return Ok(recording);
        };
        let key = object_key(&bucket.prefix, &recording);
        let _permit = self
            .uploads
            .acquire()
            .await
            .map_err(|_| UploadError::Cancelled)?;
        bucket
            .upload(path, &key, &recording.name, &self.shutdown)
            .await?;
        tracing::info!(bucket = %bucket.name, %key, "recording uploaded to the bucket before cataloguing");
        recording.location = Location::Object {
            key: key.to_string(),
        };
        Ok(recording)
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

    /// The object a recording's file is, if it is one: in onair's bucket, or
    /// (for a location LiveKit reported) in the egress bucket. `None` for a
    /// local file and for a location elsewhere, which onair does not read.
    pub fn object(&self, location: &Location) -> Option<Object> {
        match location {
            Location::Object { key } => Some(Object::Stored(key.clone())),
            Location::External(reported) => {
                let egress = self.egress.as_ref()?;
                egress_key(reported, &egress.name, egress.endpoint.as_deref()).map(Object::Egress)
            }
            Location::File(_) => None,
        }
    }

    /// The client of the object's bucket and the object's path.
    fn client(&self, object: &Object) -> Result<(&AmazonS3, ObjectPath), ObjectError> {
        let (client, key) = match object {
            Object::Stored(key) => (
                self.bucket
                    .as_ref()
                    .map(|b| &b.client)
                    .ok_or(ObjectError::NoBucket("[storage] s3_bucket"))?,
                key,
            ),
            Object::Egress(key) => (
                self.egress
                    .as_ref()
                    .map(|b| &b.client)
                    .ok_or(ObjectError::NoBucket("[livekit] s3_bucket"))?,
                key,
            ),
        };
        // `parse`, not `from`: the key is the object's own, and `from` would
        // percent-encode a `%` or `~` in it a second time.
        Ok((
            client,
            ObjectPath::parse(key).map_err(object_store::Error::from)?,
        ))
    }

    /// Metadata of an object: its size, or `NotFound`.
    pub async fn size(&self, object: &Object) -> Result<u64, ObjectError> {
        let (client, path) = self.client(object)?;
        Ok(client.head(&path).await?.size)
    }

    /// An object, or the bytes `range` of it, as a stream.
    pub async fn get(
        &self,
        object: &Object,
        range: Option<Range<u64>>,
    ) -> Result<GetResult, ObjectError> {
        let (client, path) = self.client(object)?;
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        Ok(client.get_opts(&path, options).await?)
    }

    /// Removes an object; one already gone counts as removed.
    pub async fn delete(&self, object: &Object) -> Result<(), ObjectError> {
        let (client, path) = self.client(object)?;
        match client.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Why an object could not be read or removed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The recording is in a bucket whose setting (named) is not configured (any more).
    #[error("the recording is in an S3 bucket but {0} is not configured")]
    NoBucket(&'static str),
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
    store: CatalogStore,
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
            .move_recording(&recording.id, &recording.location, &object)
            .await;
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
                match self.store.recording(&recording.id).await {
                    Ok(current) if current.as_ref().is_some_and(|r| r.location == object) => return,
                    Ok(_) => {}
                    Err(e) => {
                        // Unknown: keep the object rather than lose the file.
                        tracing::error!(%key, error = %e, "cannot read the catalog after an upload; the object stays");
                        return;
                    }
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

/// Lists (at most one page of) `prefix`: fails if the bucket is missing,
/// unreachable or the keys are wrong.
async fn check(client: &AmazonS3, prefix: Option<&ObjectPath>) -> Result<(), String> {
    let mut listing = client.list(prefix);
    match tokio::time::timeout(CHECK_TIMEOUT, listing.next()).await {
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(_) => Ok(()),
    }
}

impl Bucket {
    /// [`check`]s the prefix.
    async fn check(&self) -> Result<(), String> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        check(&self.client, prefix.as_ref()).await
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

/// A whole file as a stream of bytes, to upload somewhere.
pub type FileBytes = BoxStream<'static, Result<Bytes, UploadError>>;

/// A local file as a stream of bytes.
async fn file_bytes(path: &FsPath) -> Result<FileBytes, UploadError> {
    let file = tokio::fs::File::open(path).await?;
    Ok(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map_err(UploadError::from)
            .boxed(),
    )
}

/// The whole file at `location` as a stream of bytes, wherever onair keeps
/// it: a local file, or an object in one of `storage`'s buckets (a LiveKit
/// egress file among them). `None` for a location onair does not read.
pub async fn open(
    storage: Option<&Storage>,
    location: &Location,
) -> Result<Option<FileBytes>, UploadError> {
    if let Location::File(path) = location {
        return file_bytes(path).await.map(Some);
    }
    let Some((storage, object)) = storage.and_then(|s| Some((s, s.object(location)?))) else {
        return Ok(None);
    };
    let object = storage.get(&object, None).await?;
    Ok(Some(
        object.into_stream().map_err(UploadError::from).boxed(),
    ))
}

/// Streams a local file to `key` as a multipart upload with the content type
/// of `name` ([`upload_stream`]).
pub async fn upload_file(
    client: &AmazonS3,
    path: &FsPath,
    key: &ObjectPath,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<(), UploadError> {
    upload_stream(client, file_bytes(path).await?, key, name, shutdown).await
}

/// Streams `bytes` (a local file, another bucket's object) to `key` as a
/// multipart upload with the content type of `name`; at most
/// [`PARTS_IN_FLIGHT`] parts are held in memory. Stops (aborting the upload)
/// when `shutdown` is cancelled or `bytes` fails.
pub async fn upload_stream(
    client: &AmazonS3,
    bytes: impl Stream<Item = Result<Bytes, UploadError>>,
    key: &ObjectPath,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<(), UploadError> {
    let options = PutMultipartOptions {
        attributes: Attributes::from_iter([(
            Attribute::ContentType,
            content_type(name).to_owned(),
        )]),
        ..Default::default()
    };
    let upload = client.put_multipart_opts(key, options).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let written: Result<(), UploadError> = async {
        let mut bytes = std::pin::pin!(bytes);
        loop {
            if shutdown.is_cancelled() {
                return Err(UploadError::Cancelled);
            }
            let Some(chunk) = bytes.next().await.transpose()? else {
                return Ok(());
            };
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.put(chunk);
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

/// The key in `bucket` that `location` names, as LiveKit's egress reports
/// an upload (`FileInfo.location`), or `None` when it names something else:
///
/// * `s3://bucket/key`;
/// * virtual-hosted style, `https://bucket.s3.region.amazonaws.com/key` (any
///   AWS S3 host) or `https://bucket.<host of endpoint>/key`;
/// * path style, `https://host/bucket/key`, on any host that is not itself a
///   virtual-hosted bucket: LiveKit and onair often reach the same S3 service
///   at different addresses (a container name, loopback).
///
/// The key is percent-decoded, as the S3 SDKs encode it into the URL; a key
/// with an empty, `.` or `..` segment names no object onair will touch.
/// `endpoint` is the bucket's configured endpoint (`None`: AWS).
pub fn egress_key(location: &str, bucket: &str, endpoint: Option<&str>) -> Option<String> {
    let url = reqwest::Url::parse(location.trim()).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    let encoded = match url.scheme() {
        "s3" => host.eq_ignore_ascii_case(bucket).then_some(path)?,
        "http" | "https" => {
            let endpoint_host = endpoint
                .and_then(|e| reqwest::Url::parse(e).ok())
                .and_then(|e| e.host_str().map(str::to_ascii_lowercase));
            match virtual_host_bucket(&host, endpoint_host.as_deref()) {
                Some(named) => named.eq_ignore_ascii_case(bucket).then_some(path)?,
                None => {
                    let (first, rest) = path.split_once('/')?;
                    first.eq_ignore_ascii_case(bucket).then_some(rest)?
                }
            }
        }
        _ => return None,
    };
    let key = ObjectPath::from_url_path(encoded).ok()?;
    (!key.as_ref().is_empty()).then(|| key.as_ref().to_owned())
}

/// The bucket a virtual-hosted-style host names (`bucket.s3.amazonaws.com`,
/// `bucket.s3-eu-west-1.amazonaws.com`, `bucket.<endpoint host>`), or `None`
/// for a path-style host (`s3.eu-west-1.amazonaws.com`, `minio:9000`).
fn virtual_host_bucket<'h>(host: &'h str, endpoint_host: Option<&str>) -> Option<&'h str> {
    if let Some(endpoint) = endpoint_host
        && let Some(bucket) = host
            .strip_suffix(endpoint)
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
    {
        return Some(bucket);
    }
    if !(host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")) {
        return None;
    }
    // The S3 part of an AWS host starts with a label `s3` or `s3-…`; a bucket
    // name may hold dots, so the last such label is the one.
    let at = [".s3.", ".s3-"]
        .iter()
        .filter_map(|l| host.rfind(l))
        .max()?;
    Some(&host[..at])
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
    fn egress_locations_are_matched_to_keys_in_the_bucket() {
        let aws = |location: &str| egress_key(location, "egress", None);
        let minio = |location: &str| egress_key(location, "egress", Some("http://minio:9000"));
        let key = Some("recordings/standup-2025.mp4".to_owned());
        // The three forms LiveKit reports.
        assert_eq!(aws("s3://egress/recordings/standup-2025.mp4"), key);
        assert_eq!(
            aws("https://egress.s3.eu-west-1.amazonaws.com/recordings/standup-2025.mp4"),
            key
        );
        assert_eq!(
            aws("https://egress.s3.amazonaws.com/recordings/standup-2025.mp4"),
            key
        );
        assert_eq!(
            aws("https://egress.s3-eu-west-1.amazonaws.com/recordings/standup-2025.mp4"),
            key
        );
        assert_eq!(
            aws("https://s3.eu-west-1.amazonaws.com/egress/recordings/standup-2025.mp4"),
            key
        );
        assert_eq!(
            minio("http://minio:9000/egress/recordings/standup-2025.mp4"),
            key
        );
        // Path style on another address of the same service.
        assert_eq!(
            minio("http://127.0.0.1:9000/egress/recordings/standup-2025.mp4"),
            key
        );
        assert_eq!(
            minio("http://egress.minio:9000/recordings/standup-2025.mp4"),
            key
        );
        // Percent-encoded keys are decoded; a query string is not the key.
        assert_eq!(
            aws("https://egress.s3.amazonaws.com/recordings/a%20b%7E%25.mp4?X-Amz-Signature=1"),
            Some("recordings/a b~%.mp4".to_owned())
        );
        assert_eq!(
            aws("s3://egress/recordings/a b.mp4"),
            Some("recordings/a b.mp4".to_owned())
        );
        // Bucket names may hold dots.
        assert_eq!(
            egress_key(
                "https://my.egress.s3.us-east-2.amazonaws.com/k.mp4",
                "my.egress",
                None
            ),
            Some("k.mp4".to_owned())
        );
        // Another bucket, in every form, stays outside.
        assert_eq!(aws("s3://other/recordings/standup-2025.mp4"), None);
        assert_eq!(
            aws("https://other.s3.amazonaws.com/recordings/standup-2025.mp4"),
            None
        );
        // …even when its first path segment happens to be our bucket's name.
        assert_eq!(aws("https://other.s3.amazonaws.com/egress/k.mp4"), None);
        assert_eq!(minio("http://other.minio:9000/egress/k.mp4"), None);
        assert_eq!(aws("https://cdn.example.com/other/k.mp4"), None);
        // Not a URL, no key, or a key onair will not touch.
        assert_eq!(aws("recordings/standup-2025.mp4"), None);
        assert_eq!(aws("/egress/recordings/standup-2025.mp4"), None);
        assert_eq!(aws("s3://egress/"), None);
        assert_eq!(aws("https://egress.s3.amazonaws.com/"), None);
        assert_eq!(aws("s3://egress/a//b.mp4"), None);
        assert_eq!(aws("ftp://egress/k.mp4"), None);
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("a.MP4"), "video/mp4");
        assert_eq!(content_type("a.webm"), "video/webm");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
