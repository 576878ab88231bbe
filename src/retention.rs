//! How a recording goes away: `DELETE /v1/recordings/{id}` and the
//! `[storage] retention` sweep both call [`delete`], so a recording that
//! expires is deleted exactly like one a moderator deletes (file, catalog
//! entry with its `recording.deleted` webhook, `recording_deleted` to the
//! room, the provider told), except while it is on legal hold
//! (`PATCH /v1/recordings/{id}` `{"keep_until": …}`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::catalog::{Location, Recording};
use crate::protocol::RecordingEvent;
use crate::store::CatalogError;

/// The longest pause between two sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Recordings deleted per store query (a sweep repeats until none is left).
const BATCH: usize = 100;

/// Deletes recording `id` everywhere; `None` if it is not catalogued. An
/// error means nothing was deleted (the store, or the cluster's Redis, failed).
pub async fn delete(app: &AppState, id: &str) -> Result<Option<Recording>, CatalogError> {
    let Some(recording) = app.catalog.remove(id).await? else {
        return Ok(None);
    };
    // Wherever the file is now. One still being moved to the bucket is
    // removed from there by the move, which finds its catalog entry gone.
    match &recording.location {
        Location::File(path) => {
            if let Err(e) = tokio::fs::remove_file(path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(recording_id = %id, error = %e, "cannot remove a recording's file");
            }
        }
        // An object in onair's bucket, or a LiveKit egress file in the egress
        // bucket; any other location is not onair's to delete.
        location @ (Location::Object { .. } | Location::External(_)) => {
            let object = app
                .catalog
                .storage()
                .and_then(|storage| Some((storage, storage.object(location)?)));
            if let Some((storage, object)) = object
                && let Err(e) = storage.delete(&object).await
            {
                tracing::warn!(recording_id = %id, error = %e, "cannot remove a recording's object");
            }
        }
    }
    app.rooms
        .announce(
            &recording.room,
            RecordingEvent::RecordingDeleted {
                recording_id: recording.id.clone(),
            },
        )
        .await;
    let backend = app.rooms.backend().clone();
    let told = recording.clone();
    tokio::spawn(async move {
        backend
            .recording_deleted(&told.room, &told.id, &told.name)
            .await
    });
    Ok(Some(recording))
}

/// With `[storage] retention` set, deletes expired recordings until
/// `shutdown`: at start, then every hour (or every quarter of the retention,
/// when that is shorter, so that a short retention is kept closely).
pub async fn run(app: Arc<AppState>, shutdown: CancellationToken) {
    let Some(retention) = app.config.storage.retention() else {
        return;
    };
    let every = (retention / 4).clamp(Duration::from_secs(1), SWEEP_EVERY);
    tracing::info!(retention = %humantime::format_duration(retention), "recordings expire");
    loop {
        sweep(&app, retention).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes every recording older than `retention` that is not on legal hold.
async fn sweep(app: &AppState, retention: Duration) {
    let now = SystemTime::now();
    let cutoff = humantime::format_rfc3339_millis(now - retention).to_string();
    let now = humantime::format_rfc3339_millis(now).to_string();
    loop {
        let expired = match app
            .catalog
            .store()
            .expired_recordings(&cutoff, &now, BATCH)
            .await
        {
            Ok(expired) => expired,
            Err(e) => {
                tracing::error!(error = %e, "cannot look for expired recordings");
                return;
            }
        };
        let last_batch = expired.len() < BATCH;
        for id in expired {
            match delete(app, &id).await {
                Ok(Some(_)) => {
                    tracing::info!(recording_id = %id, "recording deleted: older than [storage] retention");
                }
                // Deleted meanwhile (by a moderator, or another node's sweep).
                Ok(None) => {}
                Err(e) => {
                    // The next sweep tries again.
                    tracing::error!(recording_id = %id, error = %e, "cannot delete an expired recording");
                    return;
                }
            }
        }
        if last_batch {
            return;
        }
    }
}
