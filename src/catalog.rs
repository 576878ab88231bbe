//! The recordings catalog: what onair knows about finished recordings.

use std::sync::Arc;

use serde_json::json;

pub use crate::catalog_entry::{Location, Recording};
pub use crate::links::{Link, Links};
use crate::notifications::Notifications;
use crate::outbox::Outbox;
use crate::storage::Storage;
use crate::store::{CatalogError, CatalogStore};

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
