//! Durable deadlines (a start or stop the backend has not confirmed, a room
//! nobody is in): how long each waits, and the one-node sweep that feeds
//! the passed ones back to their rooms.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Registry, unix_ms};
use crate::recording::{Deadline, Input};
use crate::store::DueDeadline;

/// How long each wait may last (`[recording] start_timeout_s`,
/// `stop_timeout_s`, `empty_room_grace_s`).
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// A start the backend has not confirmed.
    pub start: Duration,
    /// A stop the backend has not confirmed.
    pub stop: Duration,
    /// A recording whose room nobody is in.
    pub empty_room: Duration,
}

impl Waits {
    /// How long `deadline` waits.
    pub fn of(&self, deadline: Deadline) -> Duration {
        match deadline {
            Deadline::Start => self.start,
            Deadline::Stop => self.stop,
            Deadline::EmptyRoom => self.empty_room,
        }
    }
}

/// How often the durable deadlines are looked at (one node).
const DEADLINES_EVERY: Duration = Duration::from_millis(500);

impl Registry {
    /// One node: feeds every stored deadline that has passed back to its
    /// room, at start (deadlines a previous run armed) and then twice a
    /// second, until `shutdown`. An emptied room's deadline is dropped when
    /// somebody is back in it. A cluster enforces its deadlines itself.
    pub async fn enforce_deadlines(self: Arc<Self>, shutdown: CancellationToken) {
        if self.cluster.is_some() {
            return;
        }
        loop {
            let due = self
                .store
                .due_deadlines(unix_ms(SystemTime::now()))
                .inspect_err(|e| tracing::error!(error = %e, "cannot read deadlines"))
                .unwrap_or_default();
            for due in due {
                self.expire(&due).await;
                if let Err(e) = self.store.clear_deadline(&due) {
                    tracing::error!(room = %due.room, error = %e, "cannot clear a deadline");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DEADLINES_EVERY) => {}
            }
        }
    }

    /// Feeds one passed deadline to its room.
    async fn expire(self: &Arc<Self>, due: &DueDeadline) {
        let Some(deadline) = Deadline::parse(&due.deadline) else {
            tracing::warn!(room = %due.room, deadline = %due.deadline, "unknown deadline dropped");
            return;
        };
        if deadline == Deadline::EmptyRoom
            && self
                .get(&due.room)
                .is_some_and(|room| !room.lock().members.is_empty())
        {
            // Somebody came back within the grace period (a reload).
            return;
        }
        tracing::info!(room = %due.room, deadline = deadline.as_str(), recording_id = %due.recording_id, "deadline passed");
        self.apply_or_log(
            &due.room,
            Input::Expired {
                deadline,
                recording_id: due.recording_id.clone(),
            },
        )
        .await;
    }
}
