//! The recordings catalog: what onair knows about finished recordings.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::notifications::Notifications;
use crate::storage::Storage;
use crate::store::Store;
use crate::webhooks::outbound::Outbox;

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
    /// The URL clients fetch the file from (the media endpoint).
    pub fn media_url(&self) -> String {
        format!("/v1/recordings/{}/media", self.id)
    }
}

/// All known recordings, kept in the store. Cataloguing and removing also
/// write the `recording.available` / `recording.deleted` webhooks in the same
/// transaction, and cataloguing the owner's notification POST too (both are
/// then delivered by the outbox, across restarts). With a bucket configured,
/// every file catalogued here (whoever produced it) is then moved to the
/// bucket by [`Storage`].
pub struct Catalog {
    store: Arc<Store>,
    outbox: Arc<Outbox>,
    notifications: Arc<Notifications>,
    storage: Option<Arc<Storage>>,
}

impl Catalog {
    /// A catalog in `store`, announcing through `outbox`.
    pub fn new(store: Arc<Store>, outbox: Arc<Outbox>, notifications: Arc<Notifications>) -> Self {
        // The outbox delivers the notification POSTs that cataloguing writes,
        // with `[notifications]`' attempts, backoff and timeout.
        outbox.deliver_notifications_with(notifications.post_policy());
        Self {
            store,
            outbox,
            notifications,
            storage: None,
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
    /// before a crash or before the bucket was configured). Returns at once.
    pub fn start_storage(&self) {
        if let Some(storage) = &self.storage {
            storage.start(self.list(None));
        }
    }

    /// Adds a recording; `false` if one with that id is already catalogued
    /// (a duplicate report is not applied twice) or the store failed (logged).
    pub fn insert(&self, recording: Recording) -> bool {
        let mut deliveries = self.outbox.deliveries(
            "recording.available",
            json!({
                "room": recording.room,
                "recording_id": recording.id,
                "name": recording.name,
                "duration_s": recording.duration_s,
                "size_bytes": recording.size_bytes,
                "url": recording.media_url(),
                "provider": recording.provider,
            }),
        );
        // The owner (who started it) gets the Temasys-style notifications:
        // the POST is an outbox row in the same transaction as the entry, so
        // a crash loses neither or both.
        let owed = match self.store.owner(&recording.id) {
            Ok(Some(owner)) => self.notifications.owed(&recording, &owner),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the recording's owner");
                None
            }
        };
        deliveries.extend(owed.as_ref().and_then(|o| o.post().cloned()));
        match self.store.insert_recording(&recording, &deliveries) {
            Ok(inserted) => {
                if inserted {
                    self.outbox.wake();
                    if let Some(owed) = owed {
                        self.notifications.recording_available(
                            &recording,
                            owed,
                            self.outbox.clone(),
                        );
                    }
                    // After the notifications: an upload to the owner's S3 opens
                    // the local file before this moves it away.
                    if let Some(storage) = &self.storage {
                        storage.offload(&recording);
                    }
                }
                inserted
            }
            Err(e) => {
                tracing::error!(error = %e, recording_id = %recording.id, "cannot catalogue a recording");
                false
            }
        }
    }

    /// One recording.
    pub fn get(&self, id: &str) -> Option<Recording> {
        self.store
            .recording(id)
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the catalog"))
            .ok()
            .flatten()
    }

    /// Recordings, newest first, optionally of one room.
    pub fn list(&self, room: Option<&str>) -> Vec<Recording> {
        self.store
            .recordings(room)
            .inspect_err(|e| tracing::error!(error = %e, "cannot read the catalog"))
            .unwrap_or_default()
    }

    /// Removes a recording from the catalog (not its file).
    pub fn remove(&self, id: &str) -> Option<Recording> {
        let removed = self
            .store
            .delete_recording(id, |r| {
                self.outbox.deliveries(
                    "recording.deleted",
                    json!({"room": r.room, "recording_id": r.id}),
                )
            })
            .inspect_err(|e| tracing::error!(error = %e, "cannot delete from the catalog"))
            .ok()
            .flatten();
        if removed.is_some() {
            self.outbox.wake();
        }
        removed
    }
}
