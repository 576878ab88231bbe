//! One API over the catalog and what hangs on it (legal holds, what onair
//! saw of a recording, owners, notification settings, pending JaaS
//! downloads), kept in SQLite on a single node and in Redis with
//! `[cluster]` (SPEC §7: a node is stateless and can be replaced).
//!
//! An enum, not a trait: there are exactly two places the catalog can be,
//! chosen once at start, and a `match` per call reads plainly, needs no
//! boxed futures, and lets a test suite run the same calls against both
//! (`tests/store_suite.rs`). The API is async because the Redis side awaits
//! its exchanges ([`RedisCatalog`], on the cluster's own runtime, never
//! blocking a thread); the SQLite side stays the short synchronous
//! statement it always was, run inside the async fn.

use std::sync::Arc;

use super::redis::RedisCatalog;
use super::{NewDelivery, RecordingFacts, Store, StoreError};
use crate::catalog_entry::{Location, Recording};
use crate::cluster::{Cluster, ClusterError};

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The single node's SQLite failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster's Redis did not answer (or answered an error): nothing
    /// was done, the same call later will be (HTTP: 503 `cluster_unavailable`).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `[cluster]`: a file could not be put in the shared bucket before it
    /// was catalogued; nothing was catalogued.
    #[error("cannot put the recording in the [storage] S3 bucket: {0}")]
    Upload(Box<dyn std::error::Error + Send + Sync>),
}

/// Where the catalog is kept: the node's SQLite [`Store`], or the cluster's
/// Redis. Cheap to clone.
#[derive(Clone)]
pub enum CatalogStore {
    /// One node: the embedded database.
    Sqlite(Arc<Store>),
    /// `[cluster]`: shared by every node.
    Redis(RedisCatalog),
}

impl From<Arc<Store>> for CatalogStore {
    fn from(store: Arc<Store>) -> Self {
        Self::Sqlite(store)
    }
}

impl CatalogStore {
    /// In `cluster`'s Redis when there is one, else in `store`.
    pub fn new(store: Arc<Store>, cluster: Option<Arc<Cluster>>) -> Self {
        match cluster {
            Some(cluster) => Self::Redis(RedisCatalog::new(cluster)),
            None => Self::Sqlite(store),
        }
    }

    /// Whether the catalog is shared by a cluster.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Catalogues a recording with its deliveries (one transaction, or one
    /// script); `false` (and nothing written) if the id is already catalogued.
    pub async fn insert_recording(
        &self,
        recording: &Recording,
        deliveries: &[NewDelivery],
    ) -> Result<bool, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.insert_recording(recording, deliveries)?,
            Self::Redis(redis) => redis.insert_recording(recording, deliveries).await?,
        })
    }

    /// Moves a recording's file from `from` to `to`; `false` if it is gone
    /// or no longer at `from`, and then nothing changes.
    pub async fn move_recording(
        &self,
        id: &str,
        from: &Location,
        to: &Location,
    ) -> Result<bool, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.move_recording(id, from, to)?,
            Self::Redis(redis) => redis.move_recording(id, from, to).await?,
        })
    }

    /// One recording.
    pub async fn recording(&self, id: &str) -> Result<Option<Recording>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.recording(id)?,
            Self::Redis(redis) => redis.recording(id).await?,
        })
    }

    /// Recordings, newest first (then by id), optionally of one room.
    pub async fn recordings(&self, room: Option<&str>) -> Result<Vec<Recording>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.recordings(room)?,
            Self::Redis(redis) => redis.recordings(room).await?,
        })
    }

    /// Removes a recording with the deliveries its removal causes (made
    /// from the removed entry); `None` if there was none.
    pub async fn delete_recording(
        &self,
        id: &str,
        deliveries: impl FnOnce(&Recording) -> Vec<NewDelivery>,
    ) -> Result<Option<Recording>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.delete_recording(id, deliveries)?,
            Self::Redis(redis) => redis.delete_recording(id, deliveries).await?,
        })
    }

    /// Recordings catalogued before `created_before` and not on legal hold
    /// at `now` (RFC 3339 UTC with milliseconds), oldest first, at most `limit`.
    pub async fn expired_recordings(
        &self,
        created_before: &str,
        now: &str,
        limit: usize,
    ) -> Result<Vec<String>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.expired_recordings(created_before, now, limit)?,
            Self::Redis(redis) => redis.expired_recordings(created_before, now, limit).await?,
        })
    }

    /// Puts a recording on legal hold until `keep_until`, or lifts the hold;
    /// `false` if there is no such recording.
    pub async fn set_keep_until(
        &self,
        id: &str,
        keep_until: Option<&str>,
    ) -> Result<bool, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.set_keep_until(id, keep_until)?,
            Self::Redis(redis) => redis.set_keep_until(id, keep_until).await?,
        })
    }

    /// A recording's legal hold, if it has one.
    pub async fn keep_until(&self, id: &str) -> Result<Option<String>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.keep_until(id)?,
            Self::Redis(redis) => redis.keep_until(id).await?,
        })
    }

    /// Notes that a recording started now, with `present` participants.
    pub async fn recording_started(
        &self,
        recording_id: &str,
        present: u32,
    ) -> Result<(), CatalogError> {
        match self {
            Self::Sqlite(store) => store.recording_started(recording_id, present)?,
            Self::Redis(redis) => redis.recording_started(recording_id, present).await?,
        }
        Ok(())
    }

    /// Raises a recording's peak participant count to `peak` (never lowers it).
    pub async fn recording_peak(&self, recording_id: &str, peak: u32) -> Result<(), CatalogError> {
        match self {
            Self::Sqlite(store) => store.recording_peak(recording_id, peak)?,
            Self::Redis(redis) => redis.recording_peak(recording_id, peak).await?,
        }
        Ok(())
    }

    /// When a recording started and the most participants it saw, if onair ran it.
    pub async fn recording_facts(
        &self,
        recording_id: &str,
    ) -> Result<Option<RecordingFacts>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.recording_facts(recording_id)?,
            Self::Redis(redis) => redis.recording_facts(recording_id).await?,
        })
    }

    /// Remembers who started a recording (the first owner stays).
    pub async fn set_owner(&self, recording_id: &str, owner: &str) -> Result<(), CatalogError> {
        match self {
            Self::Sqlite(store) => store.set_owner(recording_id, owner)?,
            Self::Redis(redis) => redis.set_owner(recording_id, owner).await?,
        }
        Ok(())
    }

    /// Who started a recording, if a participant did.
    pub async fn owner(&self, recording_id: &str) -> Result<Option<String>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.owner(recording_id)?,
            Self::Redis(redis) => redis.owner(recording_id).await?,
        })
    }

    /// An owner's notification settings (JSON).
    pub async fn notification_settings(&self, owner: &str) -> Result<Option<String>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.notification_settings(owner)?,
            Self::Redis(redis) => redis.notification_settings(owner).await?,
        })
    }

    /// Saves an owner's notification settings (JSON).
    pub async fn save_notification_settings(
        &self,
        owner: &str,
        settings: &str,
    ) -> Result<(), CatalogError> {
        match self {
            Self::Sqlite(store) => store.save_notification_settings(owner, settings)?,
            Self::Redis(redis) => redis.save_notification_settings(owner, settings).await?,
        }
        Ok(())
    }

    /// Journals a JaaS download (`job`, JSON) with the idempotency key of
    /// the `RECORDING_UPLOADED` that asked for it; `false` (nothing written)
    /// if the key was recorded before.
    pub async fn jaas_download_accepted(
        &self,
        recording_id: &str,
        job: &str,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => {
                store.jaas_download_accepted(recording_id, job, idempotency_key, now_ms)?
            }
            Self::Redis(redis) => {
                redis
                    .jaas_download_accepted(recording_id, job, idempotency_key, now_ms)
                    .await?
            }
        })
    }

    /// The journalled JaaS downloads, `(recording id, job JSON)`, oldest first.
    pub async fn jaas_downloads(&self) -> Result<Vec<(String, String)>, CatalogError> {
        Ok(match self {
            Self::Sqlite(store) => store.jaas_downloads()?,
            Self::Redis(redis) => redis.jaas_downloads().await?,
        })
    }

    /// Forgets a JaaS download (catalogued or given up).
    pub async fn jaas_download_done(&self, recording_id: &str) -> Result<(), CatalogError> {
        match self {
            Self::Sqlite(store) => store.jaas_download_done(recording_id)?,
            Self::Redis(redis) => redis.jaas_download_done(recording_id).await?,
        }
        Ok(())
    }
}
