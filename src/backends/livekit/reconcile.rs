//! Reconciliation with LiveKit (`[recording] reconcile_interval_s`, SPEC §3):
//! what `Egress/ListEgress` reports, compared with onair's egress table and
//! the recording state of the egresses' rooms, gives the repairs. This module
//! only works them out (and stops egresses, a backend call); the rooms are
//! repaired by the caller, `crate::reconcile`, through the room registry —
//! a backend never reaches into a room.
//!
//! One round:
//!
//! 1. `ListEgress {active: true}`: every egress LiveKit runs. One that onair
//!    started (its egress table knows it) and that is `EGRESS_STARTING` or
//!    `EGRESS_ACTIVE` while its room is no longer recording that recording
//!    (its start timed out and it came up anyway; the room moved on) is
//!    **unaccounted for**: the caller stops it, one `StopEgress` per round.
//!    An egress onair did not start is never touched. A room whose state
//!    reads as nothing at all (no such room, or, in a cluster, a state that
//!    could not be read) is believed only when the next round reads the same
//!    ([`Suspects`]): a Redis hiccup must not stop a recording.
//! 2. Every egress onair started whose end it has not applied, that is not
//!    running and whose room still shows its recording as active
//!    (initializing, recording, stopping): `ListEgress {egress_id}` says how
//!    it ended. It becomes the input its `egress_ended` webhook would have
//!    been, with the reason `reconciled`: `EGRESS_COMPLETE` (or
//!    `EGRESS_ABORTED` after onair asked to stop) [`Input::Reconciled`], a
//!    stop; `EGRESS_FAILED`, `EGRESS_ABORTED`, `EGRESS_LIMIT_REACHED`
//!    [`Input::BackendFailed`]. A file it wrote (`EGRESS_COMPLETE`,
//!    `EGRESS_LIMIT_REACHED`) is catalogued as the webhook would. Each end is
//!    admitted in the egress's order ([`Livekit::admit`]) like a webhook, so
//!    a late `egress_ended` after it is stale, and one before it wins.
//!
//! Only final statuses are acted on: an egress that is still starting (its
//! start answered after the listing) or ending is left to its webhooks.

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::{Admission, CallError, EgressRef, EgressStatus, Grant, Livekit, unix_ms};
use crate::backends::BackendError;
use crate::recording::{Input, RECONCILED, State};

/// Pages of `ListEgress {active: true}` read per round at most (LiveKit Cloud
/// pages its answer; the open-source server answers in one).
const MAX_PAGES: usize = 50;

/// What one round found to repair.
#[derive(Debug, Default)]
pub struct Repairs {
    /// Recordings LiveKit ended without onair hearing of it: inputs for their rooms.
    pub ended: Vec<Ended>,
    /// Egresses onair started but no longer accounts for: to stop.
    pub unaccounted: Vec<Unaccounted>,
}

/// A recording LiveKit ended without onair hearing of it.
#[derive(Debug)]
pub struct Ended {
    /// The egress.
    pub egress_id: String,
    /// Its room and onair recording.
    pub egress: EgressRef,
    /// What to feed the room (`Reconciled` or `BackendFailed`, reason `reconciled`).
    pub input: Input,
    /// The egress's `EgressInfo` as LiveKit listed it, when it wrote a file
    /// to catalogue (`webhooks::livekit::catalogue_reported`).
    pub file: Option<Value>,
    /// The status LiveKit reported.
    pub status: EgressStatus,
    /// Its `updatedAt` (ns): the egress's ordering mark, to save once applied.
    pub updated_at: i64,
    /// The mark before, to take the admission back if it cannot be applied.
    pub before: super::Mark,
}

/// An egress onair started that LiveKit runs but onair's room no longer
/// accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaccounted {
    /// The egress.
    pub egress_id: String,
    /// The room and recording it was started for.
    pub egress: EgressRef,
    /// Its status at LiveKit (`EGRESS_STARTING` or `EGRESS_ACTIVE`).
    pub status: EgressStatus,
}

/// What one round tells the next: the egresses whose room's state read as
/// nothing, stopped only if the next round reads nothing again.
#[derive(Debug, Default)]
pub struct Suspects(HashSet<String>);

/// Why a round could not be made.
#[derive(Debug, thiserror::Error)]
#[error("livekit ListEgress: {0}")]
pub struct ReconcileError(String);

/// One `EgressInfo` of a `ListEgress` answer: the fields compared, and the
/// whole item (for its file).
struct Listed {
    /// The egress id.
    egress_id: String,
    /// Its status.
    status: EgressStatus,
    /// `updatedAt` (else `endedAt`) in ns; 0 when LiveKit sent neither.
    updated_at: i64,
    /// The item as LiveKit wrote it.
    info: Value,
}

impl Listed {
    fn read(info: Value) -> Option<Self> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default, alias = "egressId")]
            egress_id: String,
            #[serde(default)]
            status: EgressStatus,
        }
        let fields = Fields::deserialize(&info).ok()?;
        if fields.egress_id.is_empty() {
            return None;
        }
        let updated_at = ["updated_at", "updatedAt", "ended_at", "endedAt"]
            .iter()
            .filter_map(|key| info.get(*key).and_then(protojson_int64))
            .find(|&ns| ns > 0)
            .unwrap_or(0);
        Some(Self {
            egress_id: fields.egress_id,
            status: fields.status,
            updated_at,
            info,
        })
    }
}

/// protojson writes 64-bit integers as strings; numbers are read too.
fn protojson_int64(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.trim().parse().ok(),
        other => other.as_i64(),
    }
}

/// The answer to `ListEgress`.
#[derive(Deserialize)]
struct ListEgressReply {
    /// The egresses.
    #[serde(default)]
    items: Vec<Value>,
    /// Set when there are more pages.
    #[serde(default, alias = "nextPageToken")]
    next_page_token: Option<PageToken>,
}

/// LiveKit's `TokenPagination`.
#[derive(Deserialize)]
struct PageToken {
    /// Empty on the last page.
    #[serde(default)]
    token: String,
}

/// Whether `state` still shows `recording_id` as in progress.
fn accounts_for(state: Option<&State>, recording_id: &str) -> bool {
    state.is_some_and(|s| s.is_active() && s.recording_id() == Some(recording_id))
}

/// The input an egress's final status becomes, reason `reconciled`, and
/// whether it wrote a file; `None` for a status that is not final.
fn ended_input(
    status: EgressStatus,
    stop_requested: bool,
    recording_id: String,
) -> Option<(Input, bool)> {
    let input = match status {
        EgressStatus::Complete => Input::Reconciled { recording_id },
        // LiveKit aborts an egress stopped before it started: a plain stop.
        EgressStatus::Aborted if stop_requested => Input::Reconciled { recording_id },
        EgressStatus::Failed | EgressStatus::Aborted | EgressStatus::LimitReached => {
            Input::BackendFailed {
                recording_id,
                reason: RECONCILED.into(),
            }
        }
        EgressStatus::Starting
        | EgressStatus::Active
        | EgressStatus::Ending
        | EgressStatus::Unknown => return None,
    };
    let wrote_file = matches!(status, EgressStatus::Complete | EgressStatus::LimitReached);
    Some((input, wrote_file))
}

impl Livekit {
    /// One reconciliation round (see the module's comment): asks LiveKit
    /// what it runs and how onair's open egresses ended, compares that with
    /// onair's records and `state_of` (a room's current recording state, as
    /// the room registry has it), and returns the repairs. Changes nothing
    /// but the egresses' ordering marks in memory.
    pub async fn reconcile<F: Future<Output = Option<State>>>(
        &self,
        suspects: &mut Suspects,
        state_of: impl Fn(String) -> F,
    ) -> Result<Repairs, ReconcileError> {
        let inner = &self.inner;
        let mut repairs = Repairs::default();
        let running = self
            .list_running()
            .await
            .map_err(|e| ReconcileError(e.to_string()))?;
        let mut unknown = HashSet::new();
        for listed in &running {
            if !matches!(listed.status, EgressStatus::Starting | EgressStatus::Active) {
                continue;
            }
            // Only onair's own egresses, from its table (memory, else the store).
            let Some(egress) = inner.lookup(&listed.egress_id) else {
                continue;
            };
            let unaccounted = match state_of(egress.room.clone()).await {
                Some(state) => !accounts_for(Some(&state), &egress.recording_id),
                None => {
                    unknown.insert(listed.egress_id.clone());
                    suspects.0.contains(&listed.egress_id)
                }
            };
            if unaccounted {
                repairs.unaccounted.push(Unaccounted {
                    egress_id: listed.egress_id.clone(),
                    egress,
                    status: listed.status,
                });
            }
        }
        suspects.0 = unknown;

        for (egress_id, egress) in self.open_egresses() {
            if running.iter().any(|r| r.egress_id == egress_id)
                || !accounts_for(
                    state_of(egress.room.clone()).await.as_ref(),
                    &egress.recording_id,
                )
            {
                continue;
            }
            let listed = match self.list_one(&egress_id).await {
                Ok(Some(listed)) => listed,
                Ok(None) => {
                    tracing::warn!(room = %egress.room, recording_id = %egress.recording_id, egress_id, "livekit no longer knows an egress onair still records with; its deadlines will end it");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(egress_id, error = %e, "cannot ask livekit about an egress");
                    continue;
                }
            };
            if !listed.status.is_final() {
                continue;
            }
            let updated_at = if listed.updated_at > 0 {
                listed.updated_at
            } else {
                // No time from LiveKit: now, which orders after every event so far.
                unix_ms(std::time::SystemTime::now()).saturating_mul(1_000_000)
            };
            let (stop_requested, before) = match self.admit(&egress_id, updated_at, listed.status) {
                Admission::Apply {
                    stop_requested,
                    before,
                } => (stop_requested, before),
                // A webhook applied its end meanwhile.
                Admission::Stale | Admission::Unknown => continue,
            };
            let Some((input, wrote_file)) =
                ended_input(listed.status, stop_requested, egress.recording_id.clone())
            else {
                continue;
            };
            repairs.ended.push(Ended {
                egress_id,
                egress,
                input,
                file: wrote_file.then_some(listed.info),
                status: listed.status,
                updated_at,
                before,
            });
        }
        Ok(repairs)
    }

    /// Stops an egress onair no longer accounts for: one `StopEgress`, no
    /// retry (the next round tries again if it still runs). LiveKit's
    /// "already over" answer counts as done.
    pub async fn stop_unaccounted(&self, lost: &Unaccounted) -> Result<(), BackendError> {
        let inner = &self.inner;
        if let Some(mut egress) = inner.egresses.get_mut(&lost.egress_id) {
            egress.stop_requested = true;
        }
        if let Some(store) = inner.store.get()
            && let Err(e) = store.livekit_egress_stop_requested(&lost.egress_id)
        {
            tracing::error!(egress_id = %lost.egress_id, error = %e, "cannot persist a livekit stop request");
        }
        let result: Result<IgnoredAny, CallError> = inner
            .call(
                "Egress",
                "StopEgress",
                Grant::record(),
                &json!({ "egress_id": lost.egress_id }),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(CallError::Twirp { code, .. }) if code == "failed_precondition" => Ok(()),
            Err(e) => Err(BackendError(format!("livekit: {e}"))),
        }
    }

    /// The egresses onair started whose end it has not applied: from the
    /// store (so those started before a restart count), else from memory.
    fn open_egresses(&self) -> Vec<(String, EgressRef)> {
        let inner = &self.inner;
        if let Some(store) = inner.store.get() {
            match store.livekit_open_egresses() {
                Ok(rows) => {
                    return rows
                        .into_iter()
                        .map(|row| {
                            let egress = EgressRef {
                                room: row.room.clone(),
                                recording_id: row.recording_id.clone(),
                            };
                            (row.egress_id, egress)
                        })
                        .collect();
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the open livekit egresses");
                    return Vec::new();
                }
            }
        }
        inner
            .egresses
            .iter()
            .filter(|e| e.finished.is_none())
            .map(|e| {
                let egress = EgressRef {
                    room: e.room.clone(),
                    recording_id: e.recording_id.clone(),
                };
                (e.key().clone(), egress)
            })
            .collect()
    }

    /// `ListEgress {active: true}`, every page: the egresses LiveKit runs
    /// (filtered here too: older servers ignore `active`).
    async fn list_running(&self) -> Result<Vec<Listed>, CallError> {
        let mut running = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = json!({ "active": true });
            if let Some(token) = &page {
                body["page_token"] = json!({ "token": token });
            }
            let reply: ListEgressReply = self
                .inner
                .call("Egress", "ListEgress", Grant::record(), &body)
                .await?;
            running.extend(
                reply
                    .items
                    .into_iter()
                    .filter_map(Listed::read)
                    .filter(|l| !l.status.is_final() && l.status != EgressStatus::Unknown),
            );
            page = reply
                .next_page_token
                .map(|p| p.token)
                .filter(|t| !t.is_empty());
            if page.is_none() {
                return Ok(running);
            }
        }
        tracing::warn!(
            pages = MAX_PAGES,
            "livekit ListEgress has more pages than one round reads"
        );
        Ok(running)
    }

    /// `ListEgress {egress_id}`: one egress, `None` if LiveKit does not know it.
    async fn list_one(&self, egress_id: &str) -> Result<Option<Listed>, CallError> {
        let reply: Result<ListEgressReply, CallError> = self
            .inner
            .call(
                "Egress",
                "ListEgress",
                Grant::record(),
                &json!({ "egress_id": egress_id }),
            )
            .await;
        match reply {
            // Older servers ignore `egress_id` and list more: pick it out.
            Ok(reply) => Ok(reply
                .items
                .into_iter()
                .filter_map(Listed::read)
                .find(|l| l.egress_id == egress_id)),
            Err(CallError::Twirp { code, .. }) if code == "not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_become_the_webhooks_inputs_with_reason_reconciled() {
        let id = || "rec".to_owned();
        assert_eq!(
            ended_input(EgressStatus::Complete, false, id()),
            Some((Input::Reconciled { recording_id: id() }, true))
        );
        assert_eq!(
            ended_input(EgressStatus::Aborted, true, id()),
            Some((Input::Reconciled { recording_id: id() }, false))
        );
        let failed = Input::BackendFailed {
            recording_id: id(),
            reason: "reconciled".into(),
        };
        assert_eq!(
            ended_input(EgressStatus::Aborted, false, id()),
            Some((failed.clone(), false))
        );
        assert_eq!(
            ended_input(EgressStatus::Failed, false, id()),
            Some((failed.clone(), false))
        );
        assert_eq!(
            ended_input(EgressStatus::LimitReached, true, id()),
            Some((failed, true))
        );
        for running in [
            EgressStatus::Starting,
            EgressStatus::Active,
            EgressStatus::Ending,
            EgressStatus::Unknown,
        ] {
            assert_eq!(ended_input(running, false, id()), None);
        }
    }

    #[test]
    fn a_room_accounts_only_for_its_active_recording() {
        let recording = State::Recording {
            recording_id: "rec".into(),
        };
        assert!(accounts_for(Some(&recording), "rec"));
        assert!(!accounts_for(Some(&recording), "other"));
        assert!(accounts_for(
            Some(&State::Stopping {
                recording_id: "rec".into(),
                announced: true
            }),
            "rec"
        ));
        assert!(!accounts_for(
            Some(&State::Failed {
                recording_id: "rec".into(),
                reason: "x".into()
            }),
            "rec"
        ));
        assert!(!accounts_for(Some(&State::Inactive), "rec"));
        assert!(!accounts_for(None, "rec"));
    }

    #[test]
    fn listed_egresses_read_protojson() {
        let listed = Listed::read(json!({
            "egress_id": "EG_1", "status": "EGRESS_COMPLETE",
            "updated_at": "1750000000123456789", "file_results": []
        }))
        .unwrap();
        assert_eq!(listed.egress_id, "EG_1");
        assert_eq!(listed.status, EgressStatus::Complete);
        assert_eq!(listed.updated_at, 1_750_000_000_123_456_789);
        // camelCase, a missing status (STARTING) and no times.
        let listed = Listed::read(json!({"egressId": "EG_2"})).unwrap();
        assert_eq!(
            (listed.status, listed.updated_at),
            (EgressStatus::Starting, 0)
        );
        assert!(Listed::read(json!({"status": 1})).is_none());
        let reply: ListEgressReply = serde_json::from_value(json!({
            "items": [{"egress_id": "EG_1"}], "next_page_token": {"token": "p2"}
        }))
        .unwrap();
        assert_eq!(reply.items.len(), 1);
        assert_eq!(reply.next_page_token.unwrap().token, "p2");
    }
}
