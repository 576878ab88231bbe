//! Recording notifications, Temasys style (seed 001).
//!
//! Each owner (the `sub` of the moderator who starts recordings) may keep one
//! setting: whether to be notified, a URL that receives the recording's
//! metadata as a JSON POST, addresses that receive an e-mail, and their own S3
//! location that the file is uploaded to.
//!
//! The settings model, its validation and the metadata are plain functions of
//! their input ([`Settings::from_request`], [`Settings::view`],
//! [`Metadata::new`]).
//!
//! The POST goes through the durable outbox (`outbox`): when a
//! recording is catalogued, [`Notifications::owed`] turns the owner's
//! settings into an outbox row that the catalog writes in the same SQLite
//! transaction as the entry, so a crash loses neither or both, and the
//! outbox's worker delivers it with backoff ([`post_once`], [`PostPolicy`]),
//! resuming after a restart. When the file is also uploaded to the owner's
//! S3, the row is written *held* and [`Notifications::recording_available`]'s
//! task releases it once the upload names the presigned `retrievalUrl`; a
//! crash before that releases it at the next start with onair's own media
//! URL, which is still a working link. The e-mails (SMTP from `[smtp]`) and
//! the S3 upload run in that task, with in-memory retries.

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::signer::Signer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::catalog_entry::{Location, Recording};
use crate::config::Config;
use crate::delivery::{DeliveryKind, NewDelivery};
use crate::outbox::Outbox;
#[cfg(test)]
use crate::post::is_public;
use crate::post::{MAX_PAUSE, PostPolicy, backoff};
use crate::store::{CatalogError, CatalogStore, RecordingFacts, Store};

/// Most addresses one setting may e-mail.
pub const MAX_EMAILS: usize = 20;
pub use crate::config::MAX_URL_LEN;
/// The fields a request may carry (`username` is read by the HTTP layer).
const FIELDS: &[&str] = &[
    "notify",
    "url",
    "email",
    "s3Arn",
    "s3AccessKeyId",
    "s3SecretAccessKey",
    "username",
];
/// The longest a presigned S3 URL may live (SigV4).
const MAX_PRESIGNED: Duration = Duration::from_secs(7 * 24 * 3600);

// ---------------------------------------------------------------------------
// The settings model
// ---------------------------------------------------------------------------

/// An owner's notification settings, as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether every recording of the owner is announced (the POST and the e-mails).
    pub notify: bool,
    /// Where the recording's metadata is POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who is e-mailed, already split and validated.
    #[serde(default)]
    pub email: Vec<String>,
    /// The owner's own S3 location for the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
}

/// The owner's S3 location and credentials (the seed's three S3 fields).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Settings {
    /// `arn:{partition}:s3:{region}:{account-id}:{bucket}/{prefix}`.
    pub arn: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key; never shown in full, never logged.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("arn", &self.arn)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &mask(&self.secret_access_key))
            .finish()
    }
}

/// Why a request's settings were refused. The message goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The body is not a JSON object.
    #[error("the body must be a JSON object with the notification settings")]
    NotAnObject,
    /// A field the seed does not have (a typo, most likely).
    #[error(
        "unknown field `{0}`; the fields are notify, url, email, s3Arn, s3AccessKeyId, s3SecretAccessKey"
    )]
    UnknownField(String),
    /// `notify` is missing on create.
    #[error("`notify` is required")]
    NotifyRequired,
    /// `notify` is not a boolean.
    #[error("`notify` must be true, false, 1 or 0")]
    Notify,
    /// `url` is not an http(s) URL.
    #[error("`url` must be an http or https URL of at most 2048 characters")]
    Url,
    /// `email` is neither a string nor an array of strings.
    #[error("`email` must be a string of addresses separated by comma, semicolon or space")]
    EmailType,
    /// One of the addresses does not parse.
    #[error("`email`: `{0}` is not an e-mail address")]
    Email(String),
    /// Too many addresses.
    #[error("`email` may hold at most 20 addresses")]
    TooManyEmails,
    /// Some but not all of the three S3 fields.
    #[error("s3Arn, s3AccessKeyId and s3SecretAccessKey go together: `{0}` is missing")]
    S3Incomplete(&'static str),
    /// The ARN does not name an S3 bucket.
    #[error("`s3Arn` must look like arn:aws:s3:region::bucketname/objectpath ({0})")]
    S3Arn(&'static str),
    /// An S3 key is empty, too long or has spaces.
    #[error("`{0}` must be 1-256 characters without spaces")]
    S3Key(&'static str),
}

impl Invalid {
    /// The snake_case code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject => "invalid_body",
            Self::UnknownField(_) => "unknown_field",
            Self::NotifyRequired | Self::Notify => "invalid_notify",
            Self::Url => "invalid_url",
            Self::EmailType | Self::Email(_) | Self::TooManyEmails => "invalid_email",
            Self::S3Incomplete(_) => "incomplete_s3_settings",
            Self::S3Arn(_) => "invalid_s3_arn",
            Self::S3Key(_) => "invalid_s3_key",
        }
    }
}

impl Settings {
    /// Applies a request body: a create when `existing` is `None` (then
    /// `notify` is required), an update of `existing` otherwise, where an
    /// absent field keeps its value and `null` or `""` clears it.
    pub fn from_request(body: &Value, existing: Option<&Settings>) -> Result<Settings, Invalid> {
        let Value::Object(fields) = body else {
            return Err(Invalid::NotAnObject);
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(Invalid::UnknownField(unknown.clone()));
        }
        let mut settings = existing.cloned().unwrap_or(Settings {
            notify: false,
            url: None,
            email: Vec::new(),
            s3: None,
        });
        match fields.get("notify") {
            Some(value) => settings.notify = flag(value)?,
            None if existing.is_none() => return Err(Invalid::NotifyRequired),
            None => {}
        }
        if let Some(value) = fields.get("url") {
            settings.url = url(value)?;
        }
        if let Some(value) = fields.get("email") {
            settings.email = emails(value)?;
        }
        if let Some(s3) = s3(fields)? {
            settings.s3 = s3;
        }
        Ok(settings)
    }

    /// The seed's answer: `username`, `notify`, `url` only when set, `email`
    /// as an array, `s3Settings` only when set, with the secret masked.
    pub fn view(&self, username: &str) -> Value {
        let mut view = json!({
            "username": username,
            "notify": self.notify,
            "email": self.email,
        });
        if let Some(url) = &self.url {
            view["url"] = json!(url);
        }
        if let Some(s3) = &self.s3 {
            view["s3Settings"] = json!({
                "s3Arn": s3.arn,
                "s3AccessKeyId": s3.access_key_id,
                "s3SecretAccessKey": mask(&s3.secret_access_key),
            });
        }
        view
    }
}

/// A stored setting that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store (SQLite, or the cluster's Redis) failed.
    #[error(transparent)]
    Store(#[from] CatalogError),
    /// The stored JSON does not parse (written by hand, or by a future onair).
    #[error("notification settings: stored JSON is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// An owner's settings from the store.
pub async fn load(store: &CatalogStore, owner: &str) -> Result<Option<Settings>, LoadError> {
    match store.notification_settings(owner).await? {
        Some(json) => Ok(Some(serde_json::from_str(&json)?)),
        None => Ok(None),
    }
}

/// Saves an owner's settings.
pub async fn save(
    store: &CatalogStore,
    owner: &str,
    settings: &Settings,
) -> Result<(), CatalogError> {
    let json = serde_json::to_string(settings).expect("settings serialize");
    store.save_notification_settings(owner, &json).await
}

/// `********` plus the last four characters of a long secret; short ones
/// show nothing. The length is not revealed.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("********{tail}")
    } else {
        "********".to_owned()
    }
}

/// `null` and blank strings clear a field.
fn blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The seed's notify: `true`, `false`, `1`, `0` (and the same as strings, as forms send them).
fn flag(value: &Value) -> Result<bool, Invalid> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::String(s) => match s.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(Invalid::Notify),
        },
        _ => Err(Invalid::Notify),
    }
}

fn url(value: &Value) -> Result<Option<String>, Invalid> {
    if blank(value) {
        return Ok(None);
    }
    let text = value.as_str().ok_or(Invalid::Url)?.trim();
    if text.len() > MAX_URL_LEN {
        return Err(Invalid::Url);
    }
    let parsed = reqwest::Url::parse(text).map_err(|_| Invalid::Url)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Invalid::Url);
    }
    Ok(Some(text.to_owned()))
}

/// Splits on comma, semicolon and white space; validates; drops duplicates.
/// An array of such strings is taken too (what `GET` answers with).
fn emails(value: &Value) -> Result<Vec<String>, Invalid> {
    let texts: Vec<&str> = match value {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().ok_or(Invalid::EmailType))
            .collect::<Result<_, _>>()?,
        _ => return Err(Invalid::EmailType),
    };
    let mut seen = HashSet::new();
    let mut addresses = Vec::new();
    for part in texts
        .iter()
        .flat_map(|t| t.split(|c: char| c == ',' || c == ';' || c.is_whitespace()))
        .filter(|p| !p.is_empty())
    {
        if part.len() > 254 || Address::from_str(part).is_err() {
            return Err(Invalid::Email(part.chars().take(256).collect()));
        }
        if seen.insert(part.to_ascii_lowercase()) {
            addresses.push(part.to_owned());
        }
    }
    if addresses.len() > MAX_EMAILS {
        return Err(Invalid::TooManyEmails);
    }
    Ok(addresses)
}

/// The three S3 fields, all or none. `Ok(None)`: none was sent (keep);
/// `Ok(Some(None))`: all blank (clear); `Ok(Some(Some(_)))`: set.
fn s3(fields: &Map<String, Value>) -> Result<Option<Option<S3Settings>>, Invalid> {
    const NAMES: [&str; 3] = ["s3Arn", "s3AccessKeyId", "s3SecretAccessKey"];
    let values = NAMES.map(|name| fields.get(name));
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let given = |i: usize| values[i].filter(|v| !blank(v));
    if (0..3).all(|i| given(i).is_none()) {
        return Ok(Some(None));
    }
    if let Some(missing) = (0..3).find(|&i| given(i).is_none()) {
        return Err(Invalid::S3Incomplete(NAMES[missing]));
    }
    let text = |i: usize| given(i).and_then(Value::as_str).map(str::trim);
    let arn = text(0).ok_or(Invalid::S3Arn("not a string"))?;
    parse_arn(arn)?;
    let key = |i: usize| {
        text(i)
            .filter(|k| k.len() <= 256 && !k.contains(char::is_whitespace))
            .map(str::to_owned)
            .ok_or(Invalid::S3Key(NAMES[i]))
    };
    Ok(Some(Some(S3Settings {
        arn: arn.to_owned(),
        access_key_id: key(1)?,
        secret_access_key: key(2)?,
    })))
}

/// Where an ARN points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The region, when the ARN names one.
    pub region: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The key prefix (the seed's "objectpath"), without leading or trailing `/`.
    pub prefix: String,
}

/// Parses `arn:{partition}:s3:{region}:{account-id}:{bucket}[/{prefix}]`.
pub fn parse_arn(arn: &str) -> Result<S3Location, Invalid> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, _account, resource] = parts[..] else {
        return Err(Invalid::S3Arn("six parts separated by `:`"));
    };
    if scheme != "arn" || partition.is_empty() {
        return Err(Invalid::S3Arn("it starts with arn:aws:"));
    }
    if service != "s3" {
        return Err(Invalid::S3Arn("the service is s3"));
    }
    let (bucket, prefix) = resource.split_once('/').unwrap_or((resource, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(Invalid::S3Arn(
            "the bucket name is 3-63 characters of a-z 0-9 . -",
        ));
    }
    let region_ok = region
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !region_ok {
        return Err(Invalid::S3Arn("the region is letters, digits and -"));
    }
    Ok(S3Location {
        region: (!region.is_empty()).then(|| region.to_owned()),
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

// ---------------------------------------------------------------------------
// What is sent
// ---------------------------------------------------------------------------

/// The metadata POSTed to `url` (the seed's fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The recording's id: onair has no meetings apart from recordings.
    pub meeting_id: String,
    /// The owner whose settings these are: onair's accounts are JWT subjects, not API keys.
    pub api_key: String,
    /// When the recording became available (catalogued), seconds since the epoch.
    pub unix_time: u64,
    /// The room.
    pub room_id: String,
    /// How many took part: the most participants onair saw in the room
    /// while it recorded, or as many as the provider names (JaaS); `null`
    /// when neither is known rather than a made-up number.
    pub participants: Option<u32>,
    /// When recording started, UTC: when onair announced `started`, else
    /// availability minus the duration.
    pub start_time: String,
    /// When recording ended, UTC: taken as the time it became available.
    pub end_time: String,
    /// Where to download the file.
    pub retrieval_url: String,
}

impl Metadata {
    /// The metadata of `recording`, owned by `owner`, downloadable at
    /// `retrieval_url`, with what onair saw of it while it ran (`facts`).
    pub fn new(
        recording: &Recording,
        owner: &str,
        retrieval_url: String,
        facts: Option<&RecordingFacts>,
    ) -> Self {
        let available = humantime::parse_rfc3339_weak(&recording.created_at)
            .unwrap_or_else(|_| SystemTime::now());
        let duration =
            Duration::try_from_secs_f64(recording.duration_s.round()).unwrap_or_default();
        let started = facts
            .and_then(|f| humantime::parse_rfc3339_weak(&f.started_at).ok())
            .unwrap_or_else(|| available.checked_sub(duration).unwrap_or(available));
        let seen = facts.map(|f| f.peak_participants).filter(|peak| *peak > 0);
        Self {
            meeting_id: recording.id.clone(),
            api_key: owner.to_owned(),
            unix_time: available
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            room_id: recording.room.clone(),
            participants: seen.or_else(|| {
                (!recording.participants.is_empty())
                    .then(|| u32::try_from(recording.participants.len()).unwrap_or(u32::MAX))
            }),
            start_time: humantime::format_rfc3339_seconds(started).to_string(),
            end_time: humantime::format_rfc3339_seconds(available).to_string(),
            retrieval_url,
        }
    }

    /// The plain-text e-mail.
    fn email(&self, recording: &Recording) -> (String, String) {
        let subject = format!("Recording available: {}", self.room_id);
        let seconds = recording.duration_s.max(0.0).round() as u64;
        let body = format!(
            "A recording of room {room} is available.\n\n\
             Recording: {name} ({id})\n\
             Started:   {start}\n\
             Ended:     {end}\n\
             Duration:  {h}:{m:02}:{s:02}\n\
             Download:  {url}\n\n\
             You receive this because recording notifications are on for {owner}.\n",
            room = self.room_id,
            name = recording.name,
            id = recording.id,
            start = self.start_time,
            end = self.end_time,
            h = seconds / 3600,
            m = seconds / 60 % 60,
            s = seconds % 60,
            url = self.retrieval_url,
            owner = self.api_key,
        );
        (subject, body)
    }
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

/// Sends the notifications of owners' recordings.
pub struct Notifications {
    inner: Arc<Inner>,
    tasks: TaskTracker,
}

struct Inner {
    /// The outbox's rows (held notification POSTs are released here).
    store: Arc<Store>,
    /// Owners' settings and what onair saw of recordings.
    records: CatalogStore,
    mailer: Option<Mailer>,
    attempts: u32,
    retry_base: Duration,
    post_policy: PostPolicy,
    /// Makes the `retrievalUrl` of files onair serves: absolute, signed, expiring.
    links: crate::links::Links,
    /// Reads files in buckets (onair's, LiveKit's egress bucket) for the
    /// owner's copy; without it only local files are copied.
    storage: Option<Arc<crate::storage::Storage>>,
    s3_endpoint: Option<String>,
    s3_url_ttl: Duration,
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

fn mailer(config: &Config) -> Option<Mailer> {
    let smtp = &config.smtp;
    let host = smtp.host.as_deref()?;
    let from = smtp.from.as_deref().and_then(|f| Mailbox::from_str(f).ok());
    let Some(from) = from else {
        tracing::error!("[smtp] has a host but no valid `from`: notification e-mails are off");
        return None;
    };
    let builder = if smtp.starttls {
        match AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host) {
            Ok(builder) => builder,
            Err(e) => {
                tracing::error!(error = %e, "[smtp]: cannot set up TLS: notification e-mails are off");
                return None;
            }
        }
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(smtp.timeout_s.max(1))));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Some(Mailer {
        transport: builder.build(),
        from,
    })
}

impl Notifications {
    /// Notifications from `config`'s `[smtp]` and `[notifications]`, reading
    /// settings and recordings' facts from `records`, releasing held POSTs
    /// in `store`'s outbox, linking to files with `links`, reading files in
    /// buckets from `storage`. (The POSTs go out through the outbox.)
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        records: CatalogStore,
        links: crate::links::Links,
        storage: Option<Arc<crate::storage::Storage>>,
    ) -> Self {
        let n = &config.notifications;
        Self {
            inner: Arc::new(Inner {
                store,
                records,
                mailer: mailer(config),
                attempts: n.attempts.max(1),
                retry_base: Duration::from_millis(n.retry_base_ms),
                post_policy: PostPolicy {
                    attempts: n.attempts.max(1),
                    retry_base: Duration::from_millis(n.retry_base_ms),
                    timeout: Duration::from_secs(n.timeout_s.max(1)),
                    public_only: !n.allow_private_addresses,
                },
                links,
                storage,
                s3_endpoint: n.s3_endpoint.clone(),
                s3_url_ttl: Duration::from_secs(n.s3_url_ttl_s).min(MAX_PRESIGNED),
            }),
            tasks: TaskTracker::new(),
        }
    }

    /// How the outbox delivers the POSTs (`[notifications]` attempts, backoff, timeout).
    pub fn post_policy(&self) -> PostPolicy {
        self.inner.post_policy
    }

    /// What `recording` of `owner` becoming available owes the owner, from
    /// their settings: `None` when nothing (no settings, or neither `notify`
    /// nor S3). Its [`Owed::post`] is written with the catalog entry.
    pub async fn owed(&self, recording: &Recording, owner: &str) -> Option<Owed> {
        let settings = match load(&self.inner.records, owner).await {
            Ok(Some(settings)) => settings,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, owner, "cannot read notification settings");
                return None;
            }
        };
        if !settings.notify && settings.s3.is_none() {
            return None;
        }
        // Only a file onair can read is uploaded; then the POST waits for its URL.
        let uploads = settings.s3.is_some() && self.inner.readable(&recording.location);
        let post = match (&settings.url, settings.notify) {
            (Some(url), true) => {
                let metadata = Metadata::new(
                    recording,
                    owner,
                    self.inner.retrieval_url(recording),
                    self.inner.facts(recording).await.as_ref(),
                );
                Some(NewDelivery {
                    kind: DeliveryKind::Notification,
                    held: uploads,
                    message_id: format!("ntf_{}", uuid::Uuid::new_v4().simple()),
                    endpoint: url.clone(),
                    event_type: "recording.notification".into(),
                    payload: serde_json::to_string(&metadata).expect("metadata serializes"),
                })
            }
            _ => None,
        };
        Some(Owed {
            owner: owner.to_owned(),
            settings,
            post,
        })
    }

    /// `recording` was catalogued with `owed`'s POST: uploads the file to the
    /// owner's S3 (whenever S3 settings are present), then lets the POST go
    /// (with the upload's presigned URL) and e-mails the addresses if
    /// `notify` is on. Returns at once; the work runs in a task.
    pub fn recording_available(&self, recording: &Recording, owed: Owed, outbox: Arc<Outbox>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(owner = %owed.owner, "recording notifications need a Tokio runtime");
            if let Some(post) = owed.post.as_ref().filter(|p| p.held) {
                let _ = self.inner.store.release_held(&post.message_id, None);
            }
            return;
        };
        let span = tracing::info_span!("notify", owner = %owed.owner, room = %recording.room, recording_id = %recording.id);
        let inner = self.inner.clone();
        let recording = recording.clone();
        self.tasks.spawn_on(
            async move { inner.notify(recording, owed, outbox).await }.instrument(span),
            &runtime,
        );
    }

    /// Waits (at most `within`) for the notifications under way; `true` if
    /// none is left. For shutdown: later calls still send.
    pub async fn drain(&self, within: Duration) -> bool {
        self.tasks.close();
        let drained = tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok();
        self.tasks.reopen();
        drained
    }
}

/// What a recording's availability owes its owner ([`Notifications::owed`]).
pub struct Owed {
    /// The owner.
    owner: String,
    /// The owner's settings when the recording was catalogued.
    settings: Settings,
    /// The metadata POST as an outbox row, when `notify` is on and a `url` is set.
    post: Option<NewDelivery>,
}

impl Owed {
    /// The outbox row of the POST, to write with the catalog entry.
    pub fn post(&self) -> Option<&NewDelivery> {
        self.post.as_ref()
    }
}

/// One attempt's outcome.
enum Attempt {
    Done,
    /// Worth another try, after the given pause if the other side named one.
    Retry(String, Option<Duration>),
    GiveUp(String),
}

impl Inner {
    /// What onair saw of the recording while it ran, if it ran it.
    async fn facts(&self, recording: &Recording) -> Option<RecordingFacts> {
        self.records
            .recording_facts(&recording.id)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot read a recording's start"))
            .ok()
            .flatten()
    }

    async fn notify(&self, recording: Recording, owed: Owed, outbox: Arc<Outbox>) {
        let uploaded = match &owed.settings.s3 {
            Some(s3) => self.upload(&recording, s3).await,
            None => None,
        };
        let retrieval_url = uploaded.unwrap_or_else(|| self.retrieval_url(&recording));
        let metadata = Metadata::new(
            &recording,
            &owed.owner,
            retrieval_url,
            self.facts(&recording).await.as_ref(),
        );
        if let Some(post) = owed.post.as_ref().filter(|p| p.held) {
            let payload = serde_json::to_string(&metadata).expect("metadata serializes");
            match outbox.release_held(&post.message_id, Some(&payload)).await {
                Ok(_) => {}
                // It stays held until the next start releases it as written.
                Err(e) => tracing::error!(error = %e, "cannot release a notification POST"),
            }
        }
        if !owed.settings.notify {
            return;
        }
        futures_util::future::join_all(
            owed.settings
                .email
                .iter()
                .map(|to| self.email(to, &recording, &metadata)),
        )
        .await;
    }

    /// Whether onair can read the file at `location`: a local file, or an
    /// object in one of its buckets (a LiveKit egress file among them).
    fn readable(&self, location: &Location) -> bool {
        location.file().is_some()
            || self
                .storage
                .as_ref()
                .is_some_and(|storage| storage.object(location).is_some())
    }

    /// Where the file can be fetched when it was not uploaded to the owner's
    /// S3: an external URL as it is, anything onair serves by its own link
    /// (an egress bucket's URL would not open without credentials).
    fn retrieval_url(&self, recording: &Recording) -> String {
        if let Location::External(url) = &recording.location
            && (url.starts_with("https://") || url.starts_with("http://"))
            && !self.readable(&recording.location)
        {
            return url.clone();
        }
        self.links.media(&recording.id).url
    }

    async fn email(&self, to: &str, recording: &Recording, metadata: &Metadata) {
        let Some(mailer) = &self.mailer else {
            tracing::warn!("a recording notification e-mail is due but [smtp] has no host");
            return;
        };
        let (subject, body) = metadata.email(recording);
        let message = to
            .parse::<Mailbox>()
            .map_err(|e| e.to_string())
            .and_then(|to| {
                Message::builder()
                    .from(mailer.from.clone())
                    .to(to)
                    .subject(subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(body)
                    .map_err(|e| e.to_string())
            });
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "cannot build a recording notification e-mail");
                return;
            }
        };
        let result = self
            .with_retries(|| async {
                match mailer.transport.send(message.clone()).await {
                    Ok(_) => Attempt::Done,
                    // A 5xx answer or a message the client refuses will not get better.
                    Err(e) if e.is_permanent() || e.is_client() => Attempt::GiveUp(e.to_string()),
                    Err(e) => Attempt::Retry(e.to_string(), None),
                }
            })
            .await;
        match result {
            Ok(()) => tracing::info!("recording notification e-mailed"),
            Err(error) => tracing::warn!(%error, "recording notification e-mail failed"),
        }
    }

    /// Uploads the file to the owner's S3 location; the presigned URL of the
    /// object, or `None` when there was nothing to upload or it failed (logged).
    async fn upload(&self, recording: &Recording, s3: &S3Settings) -> Option<String> {
        if !self.readable(&recording.location) {
            tracing::info!(
                "the recording lives outside onair: nothing to upload to the owner's S3"
            );
            return None;
        }
        let location = match parse_arn(&s3.arn) {
            Ok(location) => location,
            Err(e) => {
                tracing::warn!(error = %e, "the owner's s3Arn no longer parses");
                return None;
            }
        };
        let key = object_key(&location.prefix, recording);
        let settings = crate::storage::S3Settings {
            bucket: &location.bucket,
            region: location.region.as_deref(),
            endpoint: self.s3_endpoint.as_deref(),
            access_key_id: &s3.access_key_id,
            secret_access_key: &s3.secret_access_key,
            allow_http: self
                .s3_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        };
        let client = match crate::storage::s3_client(&settings) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, bucket = %location.bucket, "cannot set up the owner's S3 client");
                return None;
            }
        };
        let never = tokio_util::sync::CancellationToken::new();
        let uploaded = match crate::storage::open(self.storage.as_deref(), &recording.location)
            .await
        {
            Ok(Some(bytes)) => {
                crate::storage::upload_stream(&client, bytes, &key, &recording.name, &never).await
            }
            // Gone from where onair reads it since it was catalogued.
            Ok(None) => Err(std::io::Error::from(std::io::ErrorKind::NotFound).into()),
            Err(e) => Err(e),
        };
        if let Err(e) = uploaded {
            tracing::warn!(error = %e, bucket = %location.bucket, %key, "upload to the owner's S3 failed");
            return None;
        }
        tracing::info!(bucket = %location.bucket, %key, "recording uploaded to the owner's S3");
        match client
            .signed_url(reqwest::Method::GET, &key, self.s3_url_ttl)
            .await
        {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot presign the uploaded recording");
                None
            }
        }
    }

    /// Runs `attempt` until it is done, gives up, or the attempts are used
    /// up, pausing `base · 2^(n-1)` (±20 %) or what the other side asked.
    async fn with_retries<F, Fut>(&self, mut attempt: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let mut n = 0;
        loop {
            n += 1;
            let (error, pause) = match attempt().await {
                Attempt::Done => return Ok(()),
                Attempt::GiveUp(error) => return Err(error),
                Attempt::Retry(error, pause) => (error, pause),
            };
            if n >= self.attempts {
                return Err(format!("{error} (after {n} attempts)"));
            }
            tracing::debug!(%error, attempt = n, "notification attempt failed; will retry");
            let pause = pause.unwrap_or_else(|| backoff(self.retry_base, n));
            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
        }
    }
}

/// `{prefix}/{recording id}/{file name}`: one recording never overwrites another.
pub fn object_key(prefix: &str, recording: &Recording) -> ObjectPath {
    let parts = prefix
        .split('/')
        .filter(|p| !p.is_empty())
        .map(PathPart::from)
        .chain([
            PathPart::from(recording.id.as_str()),
            PathPart::from(recording.name.as_str()),
        ]);
    ObjectPath::from_iter(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    fn create(body: Value) -> Result<Settings, Invalid> {
        Settings::from_request(&body, None)
    }

    fn recording() -> Recording {
        Recording {
            id: "rec-1".into(),
            room: "standup".into(),
            name: "standup.mp4".into(),
            duration_s: 90.4,
            size_bytes: 42,
            location: Location::File("/tmp/standup.mp4".into()),
            provider: "manual".into(),
            created_at: "2024-05-01T10:01:30.000Z".into(),
            participants: Vec::new(),
            initiator: None,
        }
    }

    #[test]
    fn the_seed_example_is_accepted_and_answered_masked() {
        let settings = create(json!({
            "notify": true,
            "url": "https://site.com/events",
            "email": "a@b.com,b@c.com",
            "s3Arn": "arn:aws:s3:region::folder_name/objectpath",
            "s3AccessKeyId": "akewjdwifuendjf",
            "s3SecretAccessKey": "iewmdfuasfwnwksd"
        }));
        // `folder_name` has an underscore: not a bucket name.
        assert_eq!(settings.unwrap_err().code(), "invalid_s3_arn");
        let settings = create(json!({
            "notify": true,
            "url": "https://site.com/events",
            "email": "a@b.com,b@c.com",
            "s3Arn": "arn:aws:s3:region::bucketname/objectpath",
            "s3AccessKeyId": "akewjdwifuendjf",
            "s3SecretAccessKey": "iewmdfuasfwnwksd"
        }))
        .unwrap();
        assert_eq!(
            settings.view("temasys"),
            json!({
                "username": "temasys",
                "notify": true,
                "url": "https://site.com/events",
                "email": ["a@b.com", "b@c.com"],
                "s3Settings": {
                    "s3Arn": "arn:aws:s3:region::bucketname/objectpath",
                    "s3AccessKeyId": "akewjdwifuendjf",
                    "s3SecretAccessKey": "********wksd"
                }
            })
        );
    }

    #[test]
    fn notify_takes_the_seeds_spellings() {
        for (value, expected) in [
            (json!(true), true),
            (json!(false), false),
            (json!(1), true),
            (json!(0), false),
            (json!("1"), true),
            (json!("false"), false),
        ] {
            assert_eq!(create(json!({"notify": value})).unwrap().notify, expected);
        }
        for value in [json!(2), json!("yes"), json!(null), json!([])] {
            assert_eq!(create(json!({"notify": value})), Err(Invalid::Notify));
        }
        assert_eq!(
            create(json!({"url": "https://a.example"})),
            Err(Invalid::NotifyRequired)
        );
    }

    #[test]
    fn emails_split_on_comma_semicolon_and_space() {
        let settings =
            create(json!({"notify": 1, "email": " a@b.com; c@d.org  e@f.net,,A@B.com "})).unwrap();
        assert_eq!(settings.email, ["a@b.com", "c@d.org", "e@f.net"]);
        let settings =
            create(json!({"notify": 1, "email": ["a@b.com", "c@d.org;e@f.net"]})).unwrap();
        assert_eq!(settings.email.len(), 3);
        assert_eq!(
            create(json!({"notify": 1, "email": "a@b.com, not-an-address"})),
            Err(Invalid::Email("not-an-address".into()))
        );
        assert_eq!(
            create(json!({"notify": 1, "email": 5})),
            Err(Invalid::EmailType)
        );
        let many: Vec<String> = (0..21).map(|i| format!("u{i}@x.org")).collect();
        assert_eq!(
            create(json!({"notify": 1, "email": many.join(",")})),
            Err(Invalid::TooManyEmails)
        );
    }

    #[test]
    fn urls_must_be_http() {
        for bad in [
            "ftp://a.example/x",
            "not a url",
            "http://",
            "javascript:alert(1)",
        ] {
            assert_eq!(create(json!({"notify": 1, "url": bad})), Err(Invalid::Url));
        }
        assert_eq!(create(json!({"notify": 1, "url": ""})).unwrap().url, None);
        assert_eq!(
            create(json!({"notify": 1, "url": "http://127.0.0.1:9/x?y=1"}))
                .unwrap()
                .url
                .as_deref(),
            Some("http://127.0.0.1:9/x?y=1")
        );
    }

    #[test]
    fn s3_fields_come_all_or_none() {
        let arn = "arn:aws:s3:eu-west-1::my-bucket/recordings/2024";
        assert_eq!(
            create(json!({"notify": 1, "s3Arn": arn, "s3AccessKeyId": "AKIA"})),
            Err(Invalid::S3Incomplete("s3SecretAccessKey"))
        );
        assert_eq!(
            create(
                json!({"notify": 1, "s3Arn": arn, "s3AccessKeyId": "", "s3SecretAccessKey": "s"})
            ),
            Err(Invalid::S3Incomplete("s3AccessKeyId"))
        );
        assert_eq!(
            create(
                json!({"notify": 1, "s3Arn": arn, "s3AccessKeyId": "a b", "s3SecretAccessKey": "s"})
            ),
            Err(Invalid::S3Key("s3AccessKeyId"))
        );
        let set = create(
            json!({"notify": 1, "s3Arn": arn, "s3AccessKeyId": "AKIA", "s3SecretAccessKey": "s"}),
        )
        .unwrap();
        assert_eq!(set.s3.as_ref().unwrap().access_key_id, "AKIA");
        // An update without S3 fields keeps them; all three blank clears them.
        let kept = Settings::from_request(&json!({"notify": false}), Some(&set)).unwrap();
        assert_eq!(kept.s3, set.s3);
        let cleared = Settings::from_request(
            &json!({"s3Arn": null, "s3AccessKeyId": "", "s3SecretAccessKey": null}),
            Some(&set),
        )
        .unwrap();
        assert_eq!(cleared.s3, None);
        assert!(cleared.notify);
    }

    #[test]
    fn arns_name_a_bucket_and_prefix() {
        assert_eq!(
            parse_arn("arn:aws:s3:eu-west-1::my-bucket/a/b/").unwrap(),
            S3Location {
                region: Some("eu-west-1".into()),
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse_arn("arn:aws:s3:::my-bucket").unwrap(),
            S3Location {
                region: None,
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
        for bad in [
            "arn:aws:sqs:eu-west-1::my-bucket",
            "my-bucket",
            "arn:aws:s3:eu-west-1::My_Bucket/x",
            "arn::s3:::bucket",
            "arn:aws:s3:eu west::bucket",
        ] {
            assert_eq!(
                parse_arn(bad).unwrap_err().code(),
                "invalid_s3_arn",
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_non_objects_are_refused() {
        assert_eq!(
            create(json!({"notify": 1, "s3arn": "x"})),
            Err(Invalid::UnknownField("s3arn".into()))
        );
        assert_eq!(create(json!([1])), Err(Invalid::NotAnObject));
        // `username` is the HTTP layer's business, not an error.
        assert!(create(json!({"notify": 1, "username": "ada"})).is_ok());
    }

    #[test]
    fn secrets_are_masked_without_their_length() {
        assert_eq!(mask("short"), "********");
        assert_eq!(mask("0123456789abcdefWXYZ"), "********WXYZ");
        assert_eq!(mask("0123456789abcdefghijklmnopWXYZ"), "********WXYZ");
        let s3 = S3Settings {
            arn: "arn:aws:s3:::b-1".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: "very-secret-value-1234".into(),
        };
        assert!(!format!("{s3:?}").contains("very-secret"));
    }

    #[test]
    fn metadata_has_the_seeds_fields() {
        let metadata = Metadata::new(&recording(), "ada", "https://x.example/r".into(), None);
        assert_eq!(
            serde_json::to_value(&metadata).unwrap(),
            json!({
                "meetingId": "rec-1",
                "apiKey": "ada",
                "unixTime": 1714557690,
                "roomId": "standup",
                "participants": null,
                "startTime": "2024-05-01T10:00:00Z",
                "endTime": "2024-05-01T10:01:30Z",
                "retrievalUrl": "https://x.example/r"
            })
        );
        let mut attended = recording();
        attended.participants = vec!["user-ada".into(), "user-grace".into()];
        let metadata_attended = Metadata::new(&attended, "ada", String::new(), None);
        assert_eq!(metadata_attended.participants, Some(2));
        // What onair saw wins over the estimate: the real start, the peak.
        let facts = RecordingFacts {
            started_at: "2024-05-01T09:59:58.250Z".into(),
            peak_participants: 7,
        };
        let seen = Metadata::new(&attended, "ada", String::new(), Some(&facts));
        assert_eq!(seen.start_time, "2024-05-01T09:59:58Z");
        assert_eq!(seen.participants, Some(7));
        let (subject, body) = metadata.email(&recording());
        assert_eq!(subject, "Recording available: standup");
        assert!(body.contains("Duration:  0:01:30"), "{body}");
        assert!(body.contains("https://x.example/r"), "{body}");
    }

    #[test]
    fn object_keys_are_one_per_recording() {
        assert_eq!(
            object_key("a/b", &recording()).as_ref(),
            "a/b/rec-1/standup.mp4"
        );
        assert_eq!(object_key("", &recording()).as_ref(), "rec-1/standup.mp4");
        let mut odd = recording();
        odd.name = "../x/y.mp4".into();
        assert_eq!(object_key("", &odd).parts().count(), 2);
    }

    #[test]
    fn backoff_doubles_within_jitter() {
        let base = Duration::from_millis(100);
        let third = backoff(base, 3);
        assert!(third >= Duration::from_millis(320) && third <= Duration::from_millis(480));
        assert!(backoff(base, 40) <= MAX_PAUSE.mul_f64(1.2));
    }
}
