//! Copying a single node's catalog into the cluster's Redis (`onair
//! migrate-to-redis`, `migrate`): the same keys and scripts as the
//! cluster's own writes, each call writing only what is not there yet and
//! saying whether it wrote, so that a second run copies nothing twice and
//! never overwrites what the cluster changed since.

use std::sync::LazyLock;

use redis::Script;

use super::RedisCatalog;
use crate::catalog_entry::Recording;
use crate::cluster::{ClusterError, wire};
use crate::store::RecordingFacts;

/// A recording's facts as the single node noted them, unless some are
/// noted already. KEYS: its facts. ARGV: started at, peak. Returns 1 if
/// written.
static FACTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'peak', ARGV[2])
return 1
",
    )
});

/// Journal an owed JaaS download once: not if it was copied before (the
/// marker), nor over a job the cluster journalled itself. KEYS: the jobs,
/// their order, the marker. ARGV: recording id, job JSON, accepted at (ms).
/// Returns 1 if written.
static JAAS_DOWNLOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[3], '1', 'NX') then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
",
    )
});

impl RedisCatalog {
    /// Catalogues `recording` with its legal hold in one script (the
    /// cluster's own insert), unless its id is catalogued already; `true`
    /// if written.
    pub async fn import_recording(
        &self,
        recording: &Recording,
        keep_until: Option<&str>,
    ) -> Result<bool, ClusterError> {
        self.insert(recording, keep_until, &[]).await
    }

    /// Notes what onair saw of a recording while it ran, unless something
    /// is noted already; `true` if written.
    pub async fn import_facts(
        &self,
        recording_id: &str,
        facts: &RecordingFacts,
    ) -> Result<bool, ClusterError> {
        let written: i64 = self
            .run(
                &FACTS,
                vec![wire::catalog_facts_key(recording_id)],
                vec![
                    facts.started_at.clone(),
                    facts.peak_participants.to_string(),
                ],
            )
            .await?;
        Ok(written == 1)
    }

    /// Remembers who started a recording, unless someone is remembered
    /// already (as [`RedisCatalog::set_owner`]); `true` if written.
    pub async fn import_owner(
        &self,
        recording_id: &str,
        owner: &str,
    ) -> Result<bool, ClusterError> {
        let set: Option<String> = self
            .command(
                redis::cmd("SET")
                    .arg(wire::owner_key(recording_id))
                    .arg(owner)
                    .arg("NX")
                    .clone(),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Saves an owner's notification settings unless the owner has some
    /// already (changed in the cluster since: those stay); `true` if written.
    pub async fn import_notification_settings(
        &self,
        owner: &str,
        settings: &str,
    ) -> Result<bool, ClusterError> {
        let set: Option<String> = self
            .command(
                redis::cmd("SET")
                    .arg(wire::notify_key(owner))
                    .arg(settings)
                    .arg("NX")
                    .clone(),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Journals a JaaS download onair owes, once (see [`JAAS_DOWNLOAD`]);
    /// `true` if written.
    pub async fn import_jaas_download(
        &self,
        recording_id: &str,
        job: &str,
        accepted_ms: i64,
    ) -> Result<bool, ClusterError> {
        let written: i64 = self
            .run(
                &JAAS_DOWNLOAD,
                vec![
                    wire::jaas_download_jobs_key(),
                    wire::jaas_download_order_key(),
                    wire::migrated_key("jaas", recording_id),
                ],
                vec![
                    recording_id.to_owned(),
                    job.to_owned(),
                    accepted_ms.to_string(),
                ],
            )
            .await?;
        Ok(written == 1)
    }
}
