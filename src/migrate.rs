//! `onair migrate-to-redis`: from one node to a cluster. Copies a single
//! node's durable state out of its SQLite store (`[store] path`) into the
//! cluster's Redis (`[cluster] redis_url`) and bucket (`[storage] s3_*`),
//! so that nodes started on that Redis and bucket with empty disks carry on
//! where the single node stopped (SPEC §7: in a cluster everything durable
//! lives in Redis).
//!
//! What is copied, kind by kind, through the cluster's own Redis code
//! ([`RedisCatalog`], the outbox's row layout): the catalog (each recording
//! with its legal hold; a file on the node's disk is put in the bucket first
//! and catalogued as that object, as a cluster node does), what onair saw of
//! each recording, the recordings' owners, owners' notification settings,
//! the JaaS downloads still owed, and the outbox rows not delivered yet
//! (held ones become pending: the node that held them is gone), with their
//! message ids and attempts.
//!
//! Idempotent: every write is "only if not there yet", decided in Redis
//! (a recording by its id; an outbox row or a JaaS download by a marker
//! written in the same script as the copy, [`wire::migrated_key`]), so a
//! second run, or one after a crash half-way, copies nothing twice and never
//! overwrites what the cluster changed since. SQLite is read a page at a
//! time. The node must be stopped: rows it delivers or recordings it
//! catalogues while this runs would be sent twice or missed.
//!
//! [`wire::migrated_key`]: crate::cluster::wire::migrated_key

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::cluster::{Cluster, ClusterError};
use crate::storage::{Storage, StorageError};
use crate::store::{CatalogStore, RedisCatalog, Store, StoreError};

/// Rows read from SQLite at a time.
const PAGE: usize = 500;

/// Why the migration could not run (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No Redis to copy into.
    #[error(
        "no [cluster] redis_url: set it (or ONAIR_CLUSTER__REDIS_URL) to the Redis the cluster \
         will use; that is where this copies the node's catalog, settings and outbox"
    )]
    NoCluster,
    /// No bucket for the node's local files.
    #[error(
        "no [storage] s3_bucket: set [storage] s3_bucket, s3_access_key_id and \
         s3_secret_access_key (and s3_endpoint for a store other than AWS) to the cluster's \
         bucket; the recordings on this node's disk are put there"
    )]
    NoBucket,
    /// The single node's database is not where the configuration says.
    #[error(
        "the node's SQLite store {0} does not exist: set [store] path (or ONAIR_STORE__PATH) \
         to the database of the node to migrate"
    )]
    NoStore(PathBuf),
    /// SQLite failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket's client could not be set up.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Redis did not answer, or answered an error: stopped there. What was
    /// copied stays; running again copies the rest.
    #[error(
        "the cluster's Redis failed, so the copy stopped (what was copied stays; run \
         onair migrate-to-redis again to copy the rest)"
    )]
    Cluster(#[from] ClusterError),
}

/// What happened to the things of one kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Written into Redis by this run.
    pub copied: u64,
    /// There already (an earlier run, or the cluster itself): left as they are.
    pub already_there: u64,
    /// Not copied (e.g. a local file that could not be read or uploaded).
    pub failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.copied += other.copied;
        self.already_there += other.already_there;
        self.failed += other.failed;
    }

    fn count(&mut self, copied: bool) {
        if copied {
            self.copied += 1;
        } else {
            self.already_there += 1;
        }
    }
}

/// What a run did, kind by kind.
#[derive(Debug, Default)]
pub struct Summary {
    /// Each kind's name and tally, in the order they were copied.
    pub kinds: Vec<(&'static str, Tally)>,
}

impl Summary {
    /// Every kind's tally added up.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for (_, tally) in &self.kinds {
            total.add(*tally);
        }
        total
    }
}

/// Prints one progress line.
fn line(out: &mut dyn Write, kind: &str, tally: Tally, done: bool) {
    let state = if done { "" } else { " so far" };
    // stdout closed or full: the work goes on, the summary is returned.
    let _ = writeln!(
        out,
        "{kind}: {} copied, {} already there, {} failed{state}",
        tally.copied, tally.already_there, tally.failed
    );
    let _ = out.flush();
}

/// Copies the single node's state described by `config` into the cluster's
/// Redis and bucket, printing a line per kind (and per page of a large one)
/// on `out`. Returns what was done; items that failed are counted (and
/// logged), while a failing SQLite or Redis stops the run.
pub async fn run(config: &Config, out: &mut dyn Write) -> Result<Summary, MigrateError> {
    if config.cluster.redis_url.is_none() {
        return Err(MigrateError::NoCluster);
    }
    if config.storage.s3_bucket.is_none() {
        return Err(MigrateError::NoBucket);
    }
    if !config.store.path.is_file() {
        return Err(MigrateError::NoStore(config.store.path.clone()));
    }
    let store = Arc::new(Store::open(&config.store.path)?);
    let cluster = Cluster::from_config(&config.cluster)?.ok_or(MigrateError::NoCluster)?;
    cluster.connect_without_joining().await?;
    let catalog = RedisCatalog::new(cluster.clone());
    let storage = Storage::from_config(
        config,
        CatalogStore::Redis(catalog.clone()),
        CancellationToken::new(),
    )?;

    let mut summary = Summary::default();
    summary.kinds.push((
        "recordings",
        recordings(&store, &catalog, &storage, out).await?,
    ));
    summary
        .kinds
        .push(("recording facts", facts(&store, &catalog, out).await?));
    summary
        .kinds
        .push(("owners", owners(&store, &catalog, out).await?));
    summary.kinds.push((
        "notification settings",
        settings(&store, &catalog, out).await?,
    ));
    summary
        .kinds
        .push(("JaaS downloads", jaas(&store, &catalog, out).await?));
    summary
        .kinds
        .push(("outbox rows", outbox(&store, &cluster, out).await?));
    line(out, "total", summary.total(), true);
    Ok(summary)
}

/// The catalog: each recording with its legal hold; a local file goes to
/// the bucket first. One already catalogued is left as it is (not uploaded).
async fn recordings(
    store: &Store,
    catalog: &RedisCatalog,
    storage: &Storage,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "recordings";
    let mut tally = Tally::default();
    let mut after = String::new();
    loop {
        let page = store.recordings_after(&after, PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = last.id.clone();
        let full = page.len() == PAGE;
        for (recording, keep_until) in page {
            if catalog.recording(&recording.id).await?.is_some() {
                tally.already_there += 1;
                continue;
            }
            let id = recording.id.clone();
            let local = recording.location.file().map(|p| p.display().to_string());
            let recording = match storage.upload_first(recording).await {
                Ok(recording) => recording,
                Err(e) => {
                    tracing::error!(
                        recording_id = %id,
                        file = local.as_deref().unwrap_or_default(),
                        error = %e,
                        "a recording's file could not be put in the bucket; not copied \
                         (fix it and run again)"
                    );
                    tally.failed += 1;
                    continue;
                }
            };
            tally.count(
                catalog
                    .import_recording(&recording, keep_until.as_deref())
                    .await?,
            );
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}

/// What onair saw of each recording while it ran.
async fn facts(
    store: &Store,
    catalog: &RedisCatalog,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "recording facts";
    let mut tally = Tally::default();
    let mut after = String::new();
    loop {
        let page = store.recording_facts_after(&after, PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        let full = page.len() == PAGE;
        for (id, facts) in page {
            tally.count(catalog.import_facts(&id, &facts).await?);
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}

/// Who started each recording (read when its file arrives, maybe later).
async fn owners(
    store: &Store,
    catalog: &RedisCatalog,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "owners";
    let mut tally = Tally::default();
    let mut after = String::new();
    loop {
        let page = store.owners_after(&after, PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        let full = page.len() == PAGE;
        for (id, owner) in page {
            tally.count(catalog.import_owner(&id, &owner).await?);
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}

/// Each owner's notification settings (an owner's settings in the cluster stay).
async fn settings(
    store: &Store,
    catalog: &RedisCatalog,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "notification settings";
    let mut tally = Tally::default();
    let mut after = String::new();
    loop {
        let page = store.notification_settings_after(&after, PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        let full = page.len() == PAGE;
        for (owner, settings) in page {
            tally.count(
                catalog
                    .import_notification_settings(&owner, &settings)
                    .await?,
            );
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}

/// The JaaS downloads onair still owes (a cluster node downloads them).
async fn jaas(
    store: &Store,
    catalog: &RedisCatalog,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "JaaS downloads";
    let mut tally = Tally::default();
    let mut after = String::new();
    loop {
        let page = store.jaas_downloads_after(&after, PAGE)?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        after = last.clone();
        let full = page.len() == PAGE;
        for (id, job, accepted_ms) in page {
            tally.count(catalog.import_jaas_download(&id, &job, accepted_ms).await?);
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}

/// The outbox rows not delivered yet, each once.
async fn outbox(
    store: &Store,
    cluster: &Arc<Cluster>,
    out: &mut dyn Write,
) -> Result<Tally, MigrateError> {
    const KIND: &str = "outbox rows";
    let mut tally = Tally::default();
    let mut after = 0;
    loop {
        let page = store.undelivered_after(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() == PAGE;
        for row in &page {
            tally.count(cluster.outbox_import(row).await?);
        }
        if full {
            line(out, KIND, tally, false);
        }
    }
    line(out, KIND, tally, true);
    Ok(tally)
}
