//! Reconciliation with the provider (`[recording] reconcile_interval_s`,
//! SPEC §3 "The state never lies"): every interval, onair compares its rooms
//! with what the provider reports and repairs the difference.
//!
//! Data flows one way: the backend works the repairs out from the provider's
//! list and onair's records, given each room's current recording state from
//! the registry ([`Livekit::reconcile`]); this task applies them — inputs to
//! rooms through `rooms.apply_to`, files to the catalog exactly as the
//! provider's webhook does, stops to the backend. It ends with shutdown.
//!
//! Only LiveKit (and OpenVidu 3) has a list API. Nextcloud's recording
//! server and 8x8 JaaS have none: their deadlines (`start_timeout_s`, …)
//! cover them, and the `manual` backend's recorder is the application's own.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::backends::Backend;
use crate::backends::livekit::Livekit;
use crate::backends::livekit::reconcile::{Repairs, Suspects};
use crate::metrics::{METRICS, count};

/// Reconciles every `[recording] reconcile_interval_s` until `shutdown`; the
/// first round one interval after start (webhooks from before a restart
/// arrive first). Returns at once when it is 0 or the backend has no list API.
pub async fn run(app: Arc<AppState>, shutdown: CancellationToken) {
    let every_s = app.config.recording.reconcile_interval_s;
    let Backend::Livekit(livekit) = app.rooms.backend().as_ref() else {
        return;
    };
    if every_s == 0 {
        return;
    }
    let livekit = livekit.clone();
    let mut every = tokio::time::interval(Duration::from_secs(every_s));
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate.
    every.tick().await;
    let mut suspects = Suspects::default();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        // In a cluster cut off from Redis the rooms' states cannot be read.
        if app.rooms.cluster_ready() == Some(false) {
            tracing::debug!("reconciliation skipped: the cluster is not connected");
            continue;
        }
        let rooms = app.rooms.clone();
        let round = livekit.reconcile(&mut suspects, |room| {
            let rooms = rooms.clone();
            async move { rooms.recording_state(&room).await }
        });
        let repairs = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            repairs = round => repairs,
        };
        match repairs {
            Ok(repairs) => repair(&app, &livekit, repairs).await,
            Err(e) => {
                tracing::warn!(error = %e, "reconciliation with livekit failed; trying again next round");
                count(&METRICS.backend_errors, "list_egress");
            }
        }
    }
}

/// Applies one round's repairs.
async fn repair(app: &Arc<AppState>, livekit: &Livekit, repairs: Repairs) {
    for ended in repairs.ended {
        let egress = &ended.egress;
        tracing::info!(
            room = %egress.room,
            recording_id = %egress.recording_id,
            egress_id = %ended.egress_id,
            status = ended.status.name(),
            "reconciled: livekit ended the egress without onair hearing of it"
        );
        if let Err(e) = app.rooms.apply_to(&egress.room, ended.input).await {
            tracing::warn!(room = %egress.room, error = %e, "cannot reconcile now; trying again next round");
            livekit.readmit(&ended.egress_id, ended.before);
            continue;
        }
        count(&METRICS.reconciled, "ended");
        if let Some(info) = &ended.file {
            crate::webhooks::livekit::catalogue_reported(app, egress, info).await;
        }
        // As the webhook does once an event is applied: the egress's mark,
        // so that its late `egress_ended` is recognised as stale.
        if let Err(e) = app.store.livekit_event_applied(
            &ended.egress_id,
            ended.updated_at,
            ended.status.name(),
            None,
            now_ms(),
        ) {
            tracing::error!(egress_id = %ended.egress_id, error = %e, "cannot record a reconciled livekit egress");
        }
    }
    for lost in repairs.unaccounted {
        tracing::warn!(
            room = %lost.egress.room,
            recording_id = %lost.egress.recording_id,
            egress_id = %lost.egress_id,
            status = lost.status.name(),
            "reconciled: stopping a livekit egress onair no longer accounts for"
        );
        count(&METRICS.reconciled, "stopped");
        if let Err(e) = livekit.stop_unaccounted(&lost).await {
            tracing::warn!(egress_id = %lost.egress_id, error = %e, "cannot stop an unaccounted livekit egress; trying again next round");
            count(&METRICS.backend_errors, "stop");
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
