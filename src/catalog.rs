//! The recordings catalog: what onair knows about finished recordings.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::notifications::Notifications;
use crate::outbox::Outbox;
use crate::storage::Storage;
use crate::store::{CatalogError, CatalogStore};

/// Where a recording's file is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Location {
    /// A file in onair's storage directory.
    File(std::path::PathBuf),
    /// Somewhere the provider keeps it (a path on the provider's storage or a URL).
    External(String),
    /// An object in onair's S3-compatible bucket (`[storage] s3_bucket`).
    Object {
        /// The object key, with `[storage] s3_prefix` in front.
        key: String,
    },
}

impl Location {
    /// The local file, when it is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::File(path) => Some(path),
            Self::External(_) | Self::Object { .. } => None,
        }
    }
}

/// One finished recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recording {
    /// onair's recording id (the one `started` announced).
    pub id: String,
    /// The room it was made in.
    pub room: String,
    /// The file name.
    pub name: String,
    /// Length in seconds.
    pub duration_s: f64,
    /// Size of the file.
    pub size_bytes: u64,
    /// Where the file is.
    pub location: Location,
    /// The backend that made it.
    pub provider: String,
    /// When onair catalogued it, RFC 3339 UTC.
    pub created_at: String,
    /// Who was in it, as the provider names them (JaaS user ids); empty when
    /// the provider does not say.
    pub participants: Vec<String>,
    /// Who started it, as the provider names them (the JaaS `initiatorId`).
    pub initiator: Option<String>,
}

impl Recording {
    /// The media endpoint's path: where callers with credentials (a token of
    /// the room, the admin key) fetch the file. Links handed to others are
    /// made by [`Links`].
    pub fn media_url(&self) -> String {
        format!("/v1/recordings/{}/media", self.id)
    }
}

/// The links to recordings' files that onair hands out (`recording_available`,
/// the `recording.available` webhook, Temasys `retrievalUrl`s and e-mails,
/// `GET /v1/recordings/{id}/url`): `[server] public_url` followed by the media
/// path, signed and expiring after `[storage] url_ttl_s`, so that they open
/// without a token or the admin key. Without `public_url` they are the signed
/// path alone, to be put after the address clients reach onair at.
#[derive(Debug, Clone)]
pub struct Links {
    /// `[server] public_url` without a trailing `/`, or empty.
    base: String,
    /// Signs the links (derived from the token secret or the admin key, so
    /// links made by one node or before a restart still open).
    key: [u8; 32],
    /// `[storage] url_ttl_s`.
    ttl_s: u64,
}

/// A signed link and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URL.
    pub url: String,
    /// When it stops opening.
    pub expires_at: u64,
}

impl Links {
    /// The links of `config`: under `[server] public_url` (or the older
    /// `[notifications] public_url`), valid `[storage] url_ttl_s`.
    pub fn from_config(config: &crate::Config, key: [u8; 32]) -> Self {
        let base = config
            .server
            .public_url
            .as_deref()
            .or(config.notifications.public_url.as_deref());
        Self::new(base, key, config.storage.url_ttl_s)
    }

    /// Links under `base` (an absolute URL, or none), signed with `key`, valid `ttl_s` seconds.
    pub fn new(base: Option<&str>, key: [u8; 32], ttl_s: u64) -> Self {
        Self {
            base: base.unwrap_or_default().trim_end_matches('/').to_owned(),
            key,
            ttl_s,
        }
    }

    /// A link to recording `id`'s file, valid from now.
    pub fn media(&self, id: &str) -> Link {
        let expires_at = unix_now().saturating_add(self.ttl_s);
        let signature = self.signature(id, expires_at);
        Link {
            url: format!(
                "{}/v1/recordings/{id}/media?expires={expires_at}&signature={signature}",
                self.base
            ),
            expires_at,
        }
    }

    /// Whether a presented link's `expires` and `signature` are ours, for
    /// recording `id`, and not expired (compared in constant time).
    pub fn valid(&self, id: &str, expires: u64, signature: &str) -> bool {
        use hmac::Mac;
        let Ok(presented) = hex::decode(signature) else {
            return false;
        };
        self.mac(id, expires).verify_slice(&presented).is_ok() && expires >= unix_now()
    }

    fn signature(&self, id: &str, expires: u64) -> String {
        use hmac::Mac;
        hex::encode(self.mac(id, expires).finalize().into_bytes())
    }

    fn mac(&self, id: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// How many times (a second apart) a starting node reads the catalog to
/// move its local files to the bucket, while the cluster's Redis is not up yet.
const STORAGE_START_ATTEMPTS: u32 = 60;

/// All known recordings, kept in the store (SQLite on one node, Redis with
/// `[cluster]`, see [`CatalogStore`]). Cataloguing and removing also
/// write the `recording.available` / `recording.deleted` webhooks in the same
/// transaction, and cataloguing the owner's notification POST too (both are
/// then delivered by the outbox, across restarts). With a bucket configured,
/// every file catalogued here (whoever produced it) is then moved to the
/// bucket by [`Storage`].
pub struct Catalog {
    store: CatalogStore,
    outbox: Arc<Outbox>,
    notifications: Arc<Notifications>,
    storage: Option<Arc<Storage>>,
    links: Links,
}

impl Catalog {
    /// A catalog in `store`, announcing through `outbox`, handing out `links`.
    pub fn new(
        store: impl Into<CatalogStore>,
        outbox: Arc<Outbox>,
        notifications: Arc<Notifications>,
        links: Links,
    ) -> Self {
        let store = store.into();
        // The outbox delivers the notification POSTs that cataloguing writes,
        // with `[notifications]`' attempts, backoff and timeout.
        outbox.deliver_notifications_with(notifications.post_policy());
        Self {
            store,
            outbox,
            notifications,
            storage: None,
            links,
        }
    }

    /// Where the catalog and what hangs on it (owners, legal holds, …) are kept.
    pub fn store(&self) -> &CatalogStore {
        &self.store
    }

    /// The links to recordings' files this catalog hands out.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The `recording_available` event announcing `recording` to its room,
    /// with a link that opens without credentials.
    pub fn available(&self, recording: &Recording) -> crate::protocol::RecordingEvent {
        crate::protocol::RecordingEvent::RecordingAvailable {
            recording_id: recording.id.clone(),
            name: recording.name.clone(),
            duration_s: recording.duration_s,
            size_bytes: recording.size_bytes,
            url: self.links.media(&recording.id).url,
        }
    }

    /// Moves catalogued files into `storage`'s bucket (when it has one).
    pub fn with_storage(mut self, storage: Arc<Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Where recording files are kept, if set.
    pub fn storage(&self) -> Option<&Arc<Storage>> {
        self.storage.as_ref()
    }

    /// With a bucket: checks it is reachable (logging clearly if not) and
    /// moves every file still catalogued as local into it (those handed in
    /// before a crash or before the bucket was configured). Returns at once;
    /// with `[cluster]`, the catalog is read once Redis answers (a node
    /// starts before its connection is up).
    pub fn start_storage(self: &Arc<Self>) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            for attempt in 1..=STORAGE_START_ATTEMPTS {
                match this.list(None).await {
                    Ok(recordings) => return storage.start(recordings),
                    Err(CatalogError::Cluster(_)) if attempt < STORAGE_START_ATTEMPTS => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    // The files stay where they are; the next start moves them.
                    Err(e) => {
                        return tracing::error!(error = %e, "cannot read the catalog to move its files to the bucket");
                    }
                }
            }
        });
    }

    /// Adds a recording; `false` if one with that id is already catalogued
    /// (a duplicate report is not applied twice). An error means nothing
    /// was written (HTTP: 503, the caller retries).
    ///
    /// With `[cluster]`, a local file is put in the shared bucket first
    /// (and its local copy removed once catalogued): every node must be able
    /// to serve what the shared catalog lists.
    pub async fn insert(&self, recording: Recording) -> Result<bool, CatalogError> {
        let local = recording.location.file().map(std::path::Path::to_path_buf);
        let recording = match &self.storage {
            Some(storage) if self.store.is_shared() && local.is_some() => {
                // A duplicate is refused before its file can overwrite the
                // object of the recording it duplicates.
                if self.store.recording(&recording.id).await?.is_some() {
                    return Ok(false);
                }
                storage.upload_first(recording).await?
            }
            _ => recording,
        };
        let uploaded = local.filter(|_| recording.location.file().is_none());
        let mut deliveries = self.outbox.deliveries(
            "recording.available",
            json!({
                "room": recording.room,
                "recording_id": recording.id,
                "name": recording.name,
                "duration_s": recording.duration_s,
                "size_bytes": recording.size_bytes,
                "url": self.links.media(&recording.id).url,
                "provider": recording.provider,
            }),
        );
        // The owner (who started it) gets the Temasys-style notifications:
        // the POST is an outbox row in the same transaction as the entry, so
        // a crash loses neither or both.
        let owner = match self.store.owner(&recording.id).await {
            Ok(owner) => owner,
            // One node: as ever, catalogued without the notification.
            Err(CatalogError::Store(e)) => {
                tracing::error!(error = %e, "cannot read the recording's owner");
                None
            }
            // A cluster: nothing written; the caller's retry owes it in full.
            Err(e) => return Err(e),
        };
        let owed = match owner {
            Some(owner) => self.notifications.owed(&recording, &owner).await,
            None => None,
        };
        deliveries.extend(owed.as_ref().and_then(|o| o.post().cloned()));
        let inserted = self
            .store
            .insert_recording(&recording, &deliveries)
            .await
            .inspect_err(|e| tracing::error!(error = %e, recording_id = %recording.id, "cannot catalogue a recording"))?;
        if inserted {
            if let Some(path) = uploaded
                && let Err(e) = tokio::fs::remove_file(&path).await
            {
                tracing::warn!(error = %e, "cannot remove the local copy of a recording put in the bucket");
            }
            self.outbox.wake();
            if let Some(owed) = owed {
                self.notifications
                    .recording_available(&recording, owed, self.outbox.clone());
            }
            // After the notifications: an upload to the owner's S3 opens
            // the local file before this moves it away.
            if let Some(storage) = &self.storage {
                storage.offload(&recording);
            }
        }
        Ok(inserted)
    }

    /// One recording.
    pub async fn get(&self, id: &str) -> Result<Option<Recording>, CatalogError> {
        self.store
            .recording(id)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the catalog"))
    }

    /// Recordings, newest first, optionally of one room.
    pub async fn list(&self, room: Option<&str>) -> Result<Vec<Recording>, CatalogError> {
        self.store
            .recordings(room)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the catalog"))
    }

    /// Removes a recording from the catalog (not its file).
    pub async fn remove(&self, id: &str) -> Result<Option<Recording>, CatalogError> {
        let removed = self
            .store
            .delete_recording(id, |r| {
                self.outbox.deliveries(
                    "recording.deleted",
                    json!({"room": r.room, "recording_id": r.id}),
                )
            })
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot delete from the catalog"))?;
        if removed.is_some() {
            self.outbox.wake();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> (u64, String) {
        let (_, query) = url.split_once('?').unwrap();
        let mut expires = 0;
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", v) => expires = v.parse().unwrap(),
                ("signature", v) => signature = v.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn links_are_absolute_signed_and_expire() {
        let links = Links::new(Some("https://onair.example.com/"), [7; 32], 60);
        let link = links.media("r1");
        assert!(
            link.url
                .starts_with("https://onair.example.com/v1/recordings/r1/media?expires="),
            "{}",
            link.url
        );
        let (expires, signature) = query(&link.url);
        assert_eq!(expires, link.expires_at);
        assert!(links.valid("r1", expires, &signature));
        // Another recording, another key, a changed expiry, a tampered or
        // malformed signature: refused.
        assert!(!links.valid("r2", expires, &signature));
        assert!(!Links::new(None, [8; 32], 60).valid("r1", expires, &signature));
        assert!(!links.valid("r1", expires + 1, &signature));
        let mut tampered = signature.clone();
        tampered.replace_range(0..1, if signature.starts_with('0') { "1" } else { "0" });
        assert!(!links.valid("r1", expires, &tampered));
        assert!(!links.valid("r1", expires, "not-hex"));
        // An expired link, even correctly signed, is refused.
        let past = unix_now() - 1;
        assert!(!links.valid("r1", past, &links.signature("r1", past)));
        // Without a public URL the link is the signed path.
        let path = Links::new(None, [7; 32], 60).media("r1");
        assert!(path.url.starts_with("/v1/recordings/r1/media?expires="));
    }
}
