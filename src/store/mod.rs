//! The embedded SQLite store: the recordings catalog, each room's active
//! recording state, the outbound webhook outbox, inbound idempotency keys and
//! notification settings. Rooms and participants themselves stay in memory.
//!
//! One connection behind a `std::sync::Mutex`: every call is a short,
//! synchronous statement or transaction (WAL mode, `synchronous=NORMAL`), and
//! no `.await` happens while it is held. A state change and the outbound
//! webhooks it causes are written in one transaction, so a crash loses
//! neither or both; so are a catalogued recording and its owner's
//! notification POST, and an inbound event's idempotency key and what
//! applying it must remember (see [`Store::jaas_lifecycle_applied`],
//! [`Store::jaas_download_accepted`], [`Store::livekit_event_applied`]).
//!
//! With `[cluster]` the catalog and what hangs on it live in Redis instead
//! ([`RedisCatalog`]); callers reach either through [`CatalogStore`].

mod catalog;
mod export;
mod redis;

pub use catalog::{CatalogError, CatalogStore};
pub use redis::RedisCatalog;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog_entry::{Location, Recording};
pub use crate::delivery::{Delivery, DeliveryKind, NewDelivery};
use crate::recording::State;

/// The migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_recording_owners.sql"),
    include_str!("migrations/0003_livekit_egresses.sql"),
    include_str!("migrations/0004_object_locations.sql"),
    include_str!("migrations/0005_nothing_lost.sql"),
    include_str!("migrations/0006_retention.sql"),
    include_str!("migrations/0007_deadlines.sql"),
    include_str!("migrations/0008_recording_facts.sql"),
];
/// How long inbound idempotency keys are kept: no provider replays past its
/// replay window, and 8x8's links (the longest-lived thing) die after 24 h.
const RECEIPT_TTL_MS: i64 = 24 * 3600 * 1000;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The directory for the database could not be created.
    #[error("store: cannot create {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    /// The thread that checkpoints the write-ahead log could not start.
    #[error("store: cannot start the checkpoint thread: {0}")]
    Thread(std::io::Error),
    /// The database was written by a newer onair.
    #[error("store: database schema version {0} is newer than this onair knows ({1})")]
    TooNew(usize, usize),
}

/// Counts of the outbox by state, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for (another) attempt.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Gave up after the last attempt.
    pub dead: u64,
    /// Not sent: the endpoint answered 410 Gone.
    pub disabled: u64,
}

/// One row of the LiveKit bridge's egress table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivekitEgressRow {
    /// LiveKit's egress id (`EG_…`).
    pub egress_id: String,
    /// The room (LiveKit room name = onair room id).
    pub room: String,
    /// onair's recording id.
    pub recording_id: String,
    /// `updatedAt` (ns) of the newest event applied, if any.
    pub last_updated_at: Option<i64>,
    /// The `EgressStatus` name of the newest event applied, if any.
    pub status: Option<String>,
    /// Whether onair asked LiveKit to stop the egress.
    pub stop_requested: bool,
    /// When onair learnt of it (ms since the epoch).
    pub created_ms: i64,
}

/// What onair saw of a recording while it ran (see [`Store::recording_facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFacts {
    /// When `started` went out (RFC 3339 UTC).
    pub started_at: String,
    /// The most participants in the room while it recorded.
    pub peak_participants: u32,
}

/// A deadline to arm: its name, the recording it is about, and when it
/// passes (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDeadline<'a> {
    /// `start`, `stop` or `empty_room`.
    pub deadline: &'a str,
    /// The recording it is about.
    pub recording_id: &'a str,
    /// When it passes.
    pub at_ms: i64,
}

/// A deadline that has passed (see [`Store::due_deadlines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDeadline {
    /// The room.
    pub room: String,
    /// Its name (`start`, `stop`, `empty_room`).
    pub deadline: String,
    /// The recording it is about.
    pub recording_id: String,
    /// When it passed (Unix ms), to clear exactly this one.
    pub at_ms: i64,
}

/// What onair saw of a recording (seed 001's `startTime` and
/// `participants` for its owner), saved with the transition that saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact<'a> {
    /// It started now, with `present` participants in its room.
    Started {
        /// The recording.
        recording_id: &'a str,
        /// Participants in the room.
        present: u32,
    },
    /// It saw `peak` participants at most (a saved count is never lowered).
    Peak {
        /// The recording.
        recording_id: &'a str,
        /// The most participants seen.
        peak: u32,
    },
    /// A participant started it: the owner its notifications go to (the
    /// first owner stays; see [`Store::set_owner`]).
    Owner {
        /// The recording.
        recording_id: &'a str,
        /// The token `sub` of who started it.
        owner: &'a str,
    },
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
    /// Copies the write-ahead log into the database file, off the callers'
    /// threads; `None` in memory.
    _checkpoints: Option<Checkpoints>,
}

/// How often [`Checkpoints`] copies the write-ahead log back.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread with a connection of its own that checkpoints the write-ahead
/// log every [`CHECKPOINT_EVERY`]; it stops when this is dropped.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses 1,000
/// pages, and it syncs the file: on this VM a sync takes ~2 ms, and the
/// commit it lands in is a room's recording transition, which holds the room
/// and a runtime thread meanwhile (about once a second at 100 transitions a
/// second: `strace -c` counted the syncs). A `PASSIVE` checkpoint from
/// another connection runs beside the writers instead of in front of them.
struct Checkpoints {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Self, StoreError> {
        use std::sync::mpsc::RecvTimeoutError;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("onair-checkpoint".into());
        thread
            .spawn(move || {
                loop {
                    let last = matches!(
                        stopped.recv_timeout(CHECKPOINT_EVERY),
                        Err(RecvTimeoutError::Disconnected)
                    );
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "store: checkpoint failed; the next one retries");
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Self { _stop: stop })
    }
}

impl Store {
    /// Opens (creating) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Directory(dir.into(), e))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints run on their own thread ([`Checkpoints`]).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self::migrate(conn)?;
        store._checkpoints = Some(Checkpoints::start(path)?);
        Ok(store)
    }

    /// An in-memory store (unit tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(mut conn: Connection) -> Result<Self, StoreError> {
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if applied > MIGRATIONS.len() {
            return Err(StoreError::TooNew(applied, MIGRATIONS.len()));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            _checkpoints: None,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves a room's recording state (an inactive room has no row) together
    /// with the deliveries it causes, the deadline it arms, if any (an
    /// inactive room waits for nothing: its deadlines go), and what it tells
    /// of its recording: one transaction for a transition.
    pub fn save_room_state(
        &self,
        room: &str,
        state: &State,
        deliveries: &[NewDelivery],
        deadline: Option<&NewDeadline<'_>>,
        facts: &[Fact<'_>],
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        in_transaction(&conn, |tx| {
            let now = crate::protocol::now_rfc3339();
            let row = match state {
                State::Inactive => None,
                State::Initializing {
                    recording_id,
                    requested_by,
                } => Some((
                    "initializing",
                    recording_id,
                    false,
                    requested_by.as_deref(),
                    None,
                )),
                State::Recording { recording_id } => {
                    Some(("recording", recording_id, true, None, None))
                }
                State::Stopping {
                    recording_id,
                    announced,
                } => Some(("stopping", recording_id, *announced, None, None)),
                State::Failed {
                    recording_id,
                    reason,
                } => Some(("failed", recording_id, false, None, Some(reason.as_str()))),
            };
            match row {
                None => {
                    cached(tx, "DELETE FROM room_recordings WHERE room = ?1", [room])?;
                    cached(tx, "DELETE FROM room_deadlines WHERE room = ?1", [room])?;
                }
                Some((status, id, announced, requested_by, reason)) => {
                    cached(
                        tx,
                        "INSERT INTO room_recordings (room, status, recording_id, announced, requested_by, reason, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (room) DO UPDATE SET status = ?2, recording_id = ?3, announced = ?4,
                           requested_by = ?5, reason = ?6, updated_at = ?7",
                        params![room, status, id, announced, requested_by, reason, now],
                    )?;
                }
            }
            if let Some(deadline) = deadline {
                insert_deadline(tx, room, deadline)?;
            }
            insert_deliveries(tx, deliveries)?;
            for fact in facts {
                write_fact(tx, fact)?;
            }
            Ok(())
        })
    }

    /// Saves what a step that changed no state told of its recording.
    pub fn note_facts(&self, facts: &[Fact<'_>]) -> Result<(), StoreError> {
        let conn = self.lock();
        for fact in facts {
            write_fact(&conn, fact)?;
        }
        Ok(())
    }

    /// Arms a deadline for a room whose state does not change (an emptied
    /// room's grace period), replacing one of the same name.
    pub fn set_deadline(&self, room: &str, deadline: &NewDeadline<'_>) -> Result<(), StoreError> {
        insert_deadline(&self.lock(), room, deadline)?;
        Ok(())
    }

    /// Deadlines that have passed at `now_ms`: `(room, deadline, recording
    /// id, when)`, earliest first.
    pub fn due_deadlines(&self, now_ms: i64) -> Result<Vec<DueDeadline>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT room, deadline, recording_id, at_ms FROM room_deadlines
             WHERE at_ms <= ?1 ORDER BY at_ms LIMIT 1000",
        )?;
        let rows = statement.query_map([now_ms], |r| {
            Ok(DueDeadline {
                room: r.get(0)?,
                deadline: r.get(1)?,
                recording_id: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Clears a deadline that was handled, unless another one replaced it meanwhile.
    pub fn clear_deadline(&self, due: &DueDeadline) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM room_deadlines WHERE room = ?1 AND deadline = ?2 AND at_ms = ?3",
            params![due.room, due.deadline, due.at_ms],
        )?;
        Ok(())
    }

    /// A room's saved recording state, if it is not inactive.
    pub fn room_state(&self, room: &str) -> Result<Option<State>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT status, recording_id, announced, requested_by, reason FROM room_recordings WHERE room = ?1",
                [room],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(
            row.map(|(status, recording_id, announced, requested_by, reason)| {
                match status.as_str() {
                    "initializing" => State::Initializing {
                        recording_id,
                        requested_by,
                    },
                    "recording" => State::Recording { recording_id },
                    "stopping" => State::Stopping {
                        recording_id,
                        announced,
                    },
                    _ => State::Failed {
                        recording_id,
                        reason: reason.unwrap_or_default(),
                    },
                }
            }),
        )
    }

    /// Writes deliveries on their own (e.g. a consent change).
    pub fn enqueue(&self, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        insert_deliveries(&tx, deliveries)?;
        tx.commit()?;
        Ok(())
    }

    /// Catalogues a recording with its deliveries; `false` (and nothing
    /// written) if the id is already catalogued.
    pub fn insert_recording(
        &self,
        recording: &Recording,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (kind, location) = location_columns(&recording.location);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO recordings (id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at, participants, initiator)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                recording.id,
                recording.room,
                recording.name,
                recording.duration_s,
                recording.size_bytes as i64,
                kind,
                location,
                recording.provider,
                recording.created_at,
                serde_json::to_string(&recording.participants).unwrap_or_else(|_| "[]".into()),
                recording.initiator
            ],
        )? == 1;
        if inserted {
            insert_deliveries(&tx, deliveries)?;
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Moves a recording's file from `from` to `to` (e.g. once it is
    /// uploaded to the bucket); `false` if the recording is gone or is no
    /// longer at `from` (deleted or moved meanwhile), and then nothing changes.
    pub fn move_recording(
        &self,
        id: &str,
        from: &Location,
        to: &Location,
    ) -> Result<bool, StoreError> {
        let (from_kind, from_location) = location_columns(from);
        let (to_kind, to_location) = location_columns(to);
        Ok(self.lock().execute(
            "UPDATE recordings SET location_kind = ?1, location = ?2
             WHERE id = ?3 AND location_kind = ?4 AND location = ?5",
            params![to_kind, to_location, id, from_kind, from_location],
        )? == 1)
    }

    /// One recording.
    pub fn recording(&self, id: &str) -> Result<Option<Recording>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("{SELECT_RECORDING} WHERE id = ?1"),
                [id],
                recording_from_row,
            )
            .optional()?)
    }

    /// Recordings, newest first, optionally of one room.
    pub fn recordings(&self, room: Option<&str>) -> Result<Vec<Recording>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(&format!(
            "{SELECT_RECORDING} WHERE (?1 IS NULL OR room = ?1) ORDER BY created_at DESC, id"
        ))?;
        let rows = statement.query_map([room], recording_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a recording from the catalog with the deliveries its removal causes.
    pub fn delete_recording(
        &self,
        id: &str,
        deliveries: impl FnOnce(&Recording) -> Vec<NewDelivery>,
    ) -> Result<Option<Recording>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let Some(recording) = tx
            .query_row(
                &format!("{SELECT_RECORDING} WHERE id = ?1"),
                [id],
                recording_from_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        tx.execute("DELETE FROM recordings WHERE id = ?1", [id])?;
        insert_deliveries(&tx, &deliveries(&recording))?;
        tx.commit()?;
        Ok(Some(recording))
    }

    /// Deletes delivered, dead and disabled outbox rows written before
    /// `before` (RFC 3339, as `created_at`); pending and held rows stay.
    /// Returns how many went.
    pub fn prune_outbox(&self, before: &str) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM outbox WHERE state IN ('delivered', 'dead', 'disabled') AND created_at < ?1",
            [before],
        )?)
    }

    /// Deliveries due at `now_ms`, oldest first.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT seq, message_id, endpoint, event_type, payload, attempts, kind FROM outbox
             WHERE state = 'pending' AND next_attempt_ms <= ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now_ms, limit as i64], delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending delivery is due, if any.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Marks a delivery done.
    pub fn delivered(&self, seq: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL WHERE seq = ?1",
            [seq],
        )?;
        Ok(())
    }

    /// Schedules another attempt, or gives up (`next_attempt_ms` = `None`).
    pub fn failed_attempt(
        &self,
        seq: i64,
        error: &str,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        match next_attempt_ms {
            Some(at) => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE seq = ?1",
                params![seq, error, at],
            )?,
            None => conn.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
                params![seq, error],
            )?,
        };
        Ok(())
    }

    /// Lets a held row go, with a new payload if given; `false` if no row
    /// with that message id is held (released already, e.g. by a restart).
    pub fn release_held(
        &self,
        message_id: &str,
        payload: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            "UPDATE outbox SET state = 'pending', payload = COALESCE(?2, payload)
             WHERE message_id = ?1 AND state = 'held'",
            params![message_id, payload],
        )? > 0)
    }

    /// Lets every held row go as it is (at start-up: whatever held them died
    /// with the previous process). Returns how many.
    pub fn release_all_held(&self) -> Result<usize, StoreError> {
        Ok(self.lock().execute(
            "UPDATE outbox SET state = 'pending' WHERE state = 'held'",
            [],
        )?)
    }

    /// An endpoint answered 410 Gone: nothing more goes to it.
    pub fn disable_endpoint(&self, endpoint: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO disabled_endpoints (endpoint, disabled_at) VALUES (?1, ?2)",
            params![endpoint, crate::protocol::now_rfc3339()],
        )?;
        tx.execute(
            "UPDATE outbox SET state = 'disabled'
             WHERE endpoint = ?1 AND state = 'pending' AND kind = 'webhook'",
            [endpoint],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Endpoints disabled by a 410.
    pub fn disabled_endpoints(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare("SELECT endpoint FROM disabled_endpoints")?;
        let rows = statement.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The outbound webhooks by state.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.counts(DeliveryKind::Webhook)
    }

    /// The notification POSTs by state (a held one counts as pending).
    pub fn notification_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.counts(DeliveryKind::Notification)
    }

    fn counts(&self, kind: DeliveryKind) -> Result<OutboxCounts, StoreError> {
        let conn = self.lock();
        let mut counts = OutboxCounts::default();
        let mut statement =
            conn.prepare("SELECT state, COUNT(*) FROM outbox WHERE kind = ?1 GROUP BY state")?;
        let rows = statement.query_map([kind.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            match state.as_str() {
                "pending" | "held" => counts.pending += n,
                "delivered" => counts.delivered = n,
                "dead" => counts.dead = n,
                _ => counts.disabled = n,
            }
        }
        Ok(counts)
    }

    /// Records an inbound webhook's idempotency key; `false` if it was seen before.
    pub fn first_receipt(
        &self,
        provider: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let first = insert_receipt(&tx, provider, key, now_ms)?;
        tx.commit()?;
        Ok(first)
    }

    /// Whether an inbound webhook's idempotency key was recorded (read only:
    /// for providers whose key is recorded once the event is applied).
    pub fn receipt_seen(&self, provider: &str, key: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT 1 FROM webhook_receipts WHERE provider = ?1 AND key = ?2",
                params![provider, key],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Recordings catalogued before `created_before` and not on legal hold
    /// at `now` (both RFC 3339 UTC with milliseconds, as `created_at`), oldest
    /// first, at most `limit`.
    pub fn expired_recordings(
        &self,
        created_before: &str,
        now: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT id FROM recordings
             WHERE created_at < ?1 AND (keep_until IS NULL OR keep_until <= ?2)
             ORDER BY created_at LIMIT ?3",
        )?;
        let rows = statement.query_map(params![created_before, now, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Puts a recording on legal hold until `keep_until` (RFC 3339 UTC with
    /// milliseconds), or lifts the hold; `false` if there is no such recording.
    pub fn set_keep_until(&self, id: &str, keep_until: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            "UPDATE recordings SET keep_until = ?1 WHERE id = ?2",
            params![keep_until, id],
        )? == 1)
    }

    /// A recording's legal hold, if it has one.
    pub fn keep_until(&self, id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT keep_until FROM recordings WHERE id = ?1",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Notes that a recording started now, with `present` participants in its room.
    pub fn recording_started(&self, recording_id: &str, present: u32) -> Result<(), StoreError> {
        write_fact(
            &self.lock(),
            &Fact::Started {
                recording_id,
                present,
            },
        )
    }

    /// Raises a recording's peak participant count to `peak` (never lowers it).
    pub fn recording_peak(&self, recording_id: &str, peak: u32) -> Result<(), StoreError> {
        write_fact(&self.lock(), &Fact::Peak { recording_id, peak })
    }

    /// When a recording started and the most participants it saw, if onair ran it.
    pub fn recording_facts(
        &self,
        recording_id: &str,
    ) -> Result<Option<RecordingFacts>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT started_at, peak_participants FROM recording_facts WHERE recording_id = ?1",
                [recording_id],
                |r| {
                    Ok(RecordingFacts {
                        started_at: r.get(0)?,
                        peak_participants: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Remembers who started a recording.
    pub fn set_owner(&self, recording_id: &str, owner: &str) -> Result<(), StoreError> {
        write_fact(
            &self.lock(),
            &Fact::Owner {
                recording_id,
                owner,
            },
        )
    }

    /// Who started a recording, if a participant did.
    pub fn owner(&self, recording_id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT owner FROM recording_owners WHERE recording_id = ?1",
                [recording_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forgets an idempotency key (a request refused after it was recorded may be retried).
    pub fn forget_receipt(&self, provider: &str, key: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM webhook_receipts WHERE provider = ?1 AND key = ?2",
            params![provider, key],
        )?;
        Ok(())
    }

    /// An owner's notification settings (JSON).
    pub fn notification_settings(&self, owner: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT settings FROM notification_settings WHERE owner = ?1",
                [owner],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Saves an owner's notification settings (JSON).
    pub fn save_notification_settings(
        &self,
        owner: &str,
        settings: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO notification_settings (owner, settings, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner) DO UPDATE SET settings = ?2, updated_at = ?3",
            params![owner, settings, crate::protocol::now_rfc3339()],
        )?;
        Ok(())
    }
}

/// The LiveKit bridge's egress table (`backends::livekit`): written when an
/// egress's start is answered and as its events are admitted, read when the
/// in-memory table misses (after a restart).
impl Store {
    /// Remembers a new egress (or re-registers it, keeping its ordering state
    /// if the id is already known), and forgets those created before
    /// `forget_before_ms`.
    pub fn save_livekit_egress(
        &self,
        row: &LivekitEgressRow,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM livekit_egresses WHERE created_ms < ?1",
            [forget_before_ms],
        )?;
        tx.execute(
            "INSERT INTO livekit_egresses (egress_id, room, recording_id, last_updated_at, status, stop_requested, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (egress_id) DO UPDATE SET room = ?2, recording_id = ?3",
            params![
                row.egress_id,
                row.room,
                row.recording_id,
                row.last_updated_at,
                row.status,
                row.stop_requested,
                row.created_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records the newest event admitted for an egress (never moving the
    /// mark back: writes of two events may reach the store out of order).
    pub fn livekit_egress_admitted(
        &self,
        egress_id: &str,
        updated_at: i64,
        status: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        advance_livekit_mark(&tx, egress_id, updated_at, status)?;
        tx.commit()?;
        Ok(())
    }

    /// A LiveKit egress event was applied to its room (whose state is already
    /// saved): its ordering mark and its event id, in one transaction. Only
    /// now is the event "seen": a crash before this leaves both unwritten, so
    /// LiveKit's retry is applied again, which is harmless because every
    /// egress input is idempotent in the state machine and the catalog.
    pub fn livekit_event_applied(
        &self,
        egress_id: &str,
        updated_at: i64,
        status: &str,
        event_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        advance_livekit_mark(&tx, egress_id, updated_at, status)?;
        if let Some(key) = event_id {
            insert_receipt(&tx, "livekit", key, now_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that onair asked LiveKit to stop an egress.
    pub fn livekit_egress_stop_requested(&self, egress_id: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE livekit_egresses SET stop_requested = 1 WHERE egress_id = ?1",
            [egress_id],
        )?;
        Ok(())
    }

    /// One egress, by its id.
    pub fn livekit_egress(&self, egress_id: &str) -> Result<Option<LivekitEgressRow>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("{SELECT_LIVEKIT_EGRESS} WHERE egress_id = ?1"),
                [egress_id],
                livekit_egress_from_row,
            )
            .optional()?)
    }

    /// The newest egress of an onair recording.
    pub fn livekit_egress_of_recording(
        &self,
        recording_id: &str,
    ) -> Result<Option<LivekitEgressRow>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "{SELECT_LIVEKIT_EGRESS} WHERE recording_id = ?1 ORDER BY created_ms DESC LIMIT 1"
                ),
                [recording_id],
                livekit_egress_from_row,
            )
            .optional()?)
    }

    /// The egresses onair started whose end it has not applied yet (no final
    /// status), oldest first: what reconciliation asks LiveKit about.
    pub fn livekit_open_egresses(&self) -> Result<Vec<LivekitEgressRow>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(&format!(
            "{SELECT_LIVEKIT_EGRESS} WHERE status IS NULL OR status NOT IN
               ('EGRESS_COMPLETE', 'EGRESS_FAILED', 'EGRESS_ABORTED', 'EGRESS_LIMIT_REACHED')
             ORDER BY created_ms"
        ))?;
        let rows = statement
            .query_map([], livekit_egress_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// The JaaS bridge's durable state (`webhooks::jaas`): per-session ordering
/// marks and the downloads onair owes, each written together with the
/// idempotency key of the event that caused it.
impl Store {
    /// The payload `timestamp` (ms) of the newest `RECORDING_STARTED`/`ENDED`
    /// applied for a JaaS meeting session.
    pub fn jaas_mark(&self, session_id: &str) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT last_ms FROM jaas_sessions WHERE session_id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A JaaS lifecycle event was handled (its room state, if it changed, is
    /// already saved): the session's mark moves up to `timestamp_ms` (never
    /// down; `0` = no timestamp, no mark) and the idempotency key is recorded,
    /// in one transaction. Marks older than a week are forgotten (a JaaS
    /// recording lasts at most 6 h; its upload follows within minutes).
    pub fn jaas_lifecycle_applied(
        &self,
        session_id: &str,
        timestamp_ms: i64,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM jaas_sessions WHERE updated_ms < ?1",
            [now_ms - 7 * 24 * 3600 * 1000],
        )?;
        if timestamp_ms > 0 {
            tx.execute(
                "INSERT INTO jaas_sessions (session_id, last_ms, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (session_id) DO UPDATE SET last_ms = MAX(last_ms, ?2), updated_ms = ?3",
                params![session_id, timestamp_ms, now_ms],
            )?;
        }
        if let Some(key) = idempotency_key {
            insert_receipt(&tx, "jaas", key, now_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Journals a JaaS download (`job`, JSON) with the idempotency key of the
    /// `RECORDING_UPLOADED` that asked for it, in one transaction; `false`
    /// (nothing written) if the key was recorded before.
    pub fn jaas_download_accepted(
        &self,
        recording_id: &str,
        job: &str,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if let Some(key) = idempotency_key
            && !insert_receipt(&tx, "jaas", key, now_ms)?
        {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO jaas_downloads (recording_id, job, created_ms) VALUES (?1, ?2, ?3)",
            params![recording_id, job, now_ms],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The journalled JaaS downloads, `(recording id, job JSON)`, oldest first.
    pub fn jaas_downloads(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut statement =
            conn.prepare("SELECT recording_id, job FROM jaas_downloads ORDER BY created_ms")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a JaaS download (catalogued or given up).
    pub fn jaas_download_done(&self, recording_id: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM jaas_downloads WHERE recording_id = ?1",
            [recording_id],
        )?;
        Ok(())
    }
}

const SELECT_LIVEKIT_EGRESS: &str = "SELECT egress_id, room, recording_id, last_updated_at, status, stop_requested, created_ms FROM livekit_egresses";

fn livekit_egress_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LivekitEgressRow> {
    Ok(LivekitEgressRow {
        egress_id: r.get(0)?,
        room: r.get(1)?,
        recording_id: r.get(2)?,
        last_updated_at: r.get(3)?,
        status: r.get(4)?,
        stop_requested: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

const SELECT_RECORDING: &str = "SELECT id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at, participants, initiator FROM recordings";

fn recording_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Recording> {
    let kind: String = r.get(5)?;
    let location: String = r.get(6)?;
    Ok(Recording {
        id: r.get(0)?,
        room: r.get(1)?,
        name: r.get(2)?,
        duration_s: r.get(3)?,
        size_bytes: r.get::<_, i64>(4)?.max(0) as u64,
        location: match kind.as_str() {
            "file" => Location::File(location.into()),
            "object" => Location::Object { key: location },
            _ => Location::External(location),
        },
        provider: r.get(7)?,
        created_at: r.get(8)?,
        // Written by `insert_recording` as a JSON array; unreadable means none known.
        participants: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or_default(),
        initiator: r.get(10)?,
    })
}

/// A location as its `(location_kind, location)` columns.
fn location_columns(location: &Location) -> (&'static str, String) {
    match location {
        Location::File(path) => ("file", path.to_string_lossy().into_owned()),
        Location::External(url) => ("external", url.clone()),
        Location::Object { key } => ("object", key.clone()),
    }
}

/// Moves an egress's mark forward (a later `updatedAt`, or the same one with
/// another status); an older event's write changes nothing.
fn advance_livekit_mark(
    tx: &rusqlite::Transaction<'_>,
    egress_id: &str,
    updated_at: i64,
    status: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE livekit_egresses SET last_updated_at = ?2, status = ?3
         WHERE egress_id = ?1 AND (last_updated_at IS NULL OR last_updated_at <= ?2)",
        params![egress_id, updated_at, status],
    )?;
    Ok(())
}

/// Records an inbound idempotency key; `false` if it was recorded before.
/// Forgets keys past [`RECEIPT_TTL_MS`] on the way.
fn insert_receipt(
    tx: &rusqlite::Transaction<'_>,
    provider: &str,
    key: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    tx.execute(
        "DELETE FROM webhook_receipts WHERE received_ms < ?1",
        [now_ms - RECEIPT_TTL_MS],
    )?;
    Ok(tx.execute(
        "INSERT OR IGNORE INTO webhook_receipts (provider, key, received_ms) VALUES (?1, ?2, ?3)",
        params![provider, key, now_ms],
    )? == 1)
}

/// Runs a statement of the hot path (each recording transition) from the
/// connection's statement cache, so that SQLite parses it once per
/// connection rather than on every call (`load-tests/instructions.sh`).
fn cached(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Runs `f` in one transaction, its `BEGIN` and `COMMIT` from the statement
/// cache: rusqlite's `Connection::transaction` parses both again on every
/// call (`execute_batch`), which callgrind counted among a transition's
/// costs. Rolled back if `f` fails.
fn in_transaction(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    cached(conn, "BEGIN", [])?;
    match f(conn) {
        Ok(()) => {
            if let Err(e) = cached(conn, "COMMIT", []) {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn write_fact(conn: &Connection, fact: &Fact<'_>) -> Result<(), StoreError> {
    match *fact {
        Fact::Started {
            recording_id,
            present,
        } => cached(
            conn,
            "INSERT OR IGNORE INTO recording_facts (recording_id, started_at, peak_participants) VALUES (?1, ?2, ?3)",
            params![recording_id, crate::protocol::now_rfc3339(), present],
        )?,
        Fact::Peak { recording_id, peak } => cached(
            conn,
            "UPDATE recording_facts SET peak_participants = MAX(peak_participants, ?2) WHERE recording_id = ?1",
            params![recording_id, peak],
        )?,
        Fact::Owner {
            recording_id,
            owner,
        } => cached(
            conn,
            "INSERT OR IGNORE INTO recording_owners (recording_id, owner, created_at) VALUES (?1, ?2, ?3)",
            params![recording_id, owner, crate::protocol::now_rfc3339()],
        )?,
    };
    Ok(())
}

fn insert_deadline(
    conn: &Connection,
    room: &str,
    deadline: &NewDeadline<'_>,
) -> Result<(), StoreError> {
    cached(
        conn,
        "INSERT INTO room_deadlines (room, deadline, recording_id, at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (room, deadline) DO UPDATE SET recording_id = ?3, at_ms = ?4",
        params![
            room,
            deadline.deadline,
            deadline.recording_id,
            deadline.at_ms
        ],
    )?;
    Ok(())
}

/// Outbox rows, inside the caller's transaction.
fn insert_deliveries(tx: &Connection, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
    let mut statement = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (kind, message_id, endpoint, event_type, payload, state, next_attempt_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
    )?;
    let now = crate::protocol::now_rfc3339();
    for d in deliveries {
        statement.execute(params![
            d.kind.as_str(),
            d.message_id,
            d.endpoint,
            d.event_type,
            d.payload,
            if d.held { "held" } else { "pending" },
            now
        ])?;
    }
    Ok(())
}

/// An outbox row read with `SELECT seq, message_id, endpoint, event_type,
/// payload, attempts, kind`.
pub(crate) fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        seq: r.get(0)?,
        kind: DeliveryKind::parse(&r.get::<_, String>(6)?),
        message_id: r.get(1)?,
        endpoint: r.get(2)?,
        event_type: r.get(3)?,
        payload: r.get(4)?,
        attempts: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(id: &str) -> Recording {
        Recording {
            id: id.into(),
            room: "room".into(),
            name: "a.mp4".into(),
            duration_s: 1.5,
            size_bytes: 42,
            location: Location::File("/tmp/a.mp4".into()),
            provider: "manual".into(),
            created_at: crate::protocol::now_rfc3339(),
            participants: Vec::new(),
            initiator: None,
        }
    }

    /// A LiveKit egress of recording "rec" in "room", created at 1 s.
    fn egress(id: &str) -> LivekitEgressRow {
        LivekitEgressRow {
            egress_id: id.into(),
            room: "room".into(),
            recording_id: "rec".into(),
            last_updated_at: None,
            status: None,
            stop_requested: false,
            created_ms: 1_000,
        }
    }

    /// A database at `path` as the first `version` migrations left it, with
    /// one row written by `insert`.
    fn database_at_version(path: &Path, version: usize, insert: &str) {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..version] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", version).unwrap();
        tx.execute(insert, []).unwrap();
        tx.commit().unwrap();
    }

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery {
            kind: DeliveryKind::Webhook,
            held: false,
            message_id: id.into(),
            endpoint: "http://127.0.0.1:1/hook".into(),
            event_type: "recording.available".into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn migrations_apply_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/onair.db");
        let store = Store::open(&path).unwrap();
        store.insert_recording(&recording("r1"), &[]).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.recording("r1").unwrap().unwrap().size_bytes, 42);
    }

    #[test]
    fn the_checkpoint_thread_copies_writes_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onair.db");
        let store = Store::open(&path).unwrap();
        let state = State::Recording {
            recording_id: "r1".into(),
        };
        store
            .save_room_state("room", &state, &[], None, &[])
            .unwrap();
        // The database file alone (no write-ahead log beside it) holds the
        // row once a checkpoint ran; commits no longer checkpoint themselves.
        let copy = dir.path().join("copy.db");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            std::fs::copy(&path, &copy).unwrap();
            let found = Connection::open(&copy)
                .and_then(|c| {
                    c.query_row("SELECT count(*) FROM room_recordings", [], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .unwrap_or(0);
            if found == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint copied the write into the database file"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(store);
    }

    #[test]
    fn recordings_are_catalogued_once_with_their_deliveries() {
        let store = Store::in_memory().unwrap();
        assert!(
            store
                .insert_recording(&recording("r1"), &[delivery("m1")])
                .unwrap()
        );
        assert!(
            !store
                .insert_recording(&recording("r1"), &[delivery("m2")])
                .unwrap()
        );
        assert_eq!(store.outbox_counts().unwrap().pending, 1);
        assert_eq!(store.recordings(Some("room")).unwrap().len(), 1);
        assert_eq!(store.recordings(Some("other")).unwrap().len(), 0);
        let removed = store
            .delete_recording("r1", |_| vec![delivery("m3")])
            .unwrap();
        assert_eq!(removed.unwrap().id, "r1");
        assert!(store.recording("r1").unwrap().is_none());
        assert_eq!(store.outbox_counts().unwrap().pending, 2);
    }

    #[test]
    fn recordings_move_only_from_where_they_are() {
        let store = Store::in_memory().unwrap();
        store.insert_recording(&recording("r1"), &[]).unwrap();
        let file = Location::File("/tmp/a.mp4".into());
        let object = Location::Object {
            key: "recordings/room/r1/a.mp4".into(),
        };
        assert!(
            !store
                .move_recording("r1", &Location::File("/elsewhere".into()), &object)
                .unwrap()
        );
        assert!(!store.move_recording("r2", &file, &object).unwrap());
        assert!(store.move_recording("r1", &file, &object).unwrap());
        assert_eq!(store.recording("r1").unwrap().unwrap().location, object);
        assert!(!store.move_recording("r1", &file, &object).unwrap());
    }

    #[test]
    fn the_location_migration_keeps_older_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onair.db");
        // A database as the migrations before 0004 left it.
        database_at_version(
            &path,
            3,
            "INSERT INTO recordings VALUES ('old', 'room', 'a.mp4', 1.0, 42, 'file', '/tmp/a.mp4', 'manual', 'x')",
        );
        let store = Store::open(&path).unwrap();
        let old = store.recording("old").unwrap().unwrap();
        assert_eq!(old.location, Location::File("/tmp/a.mp4".into()));
        let mut new = recording("new");
        new.location = Location::Object { key: "k".into() };
        store.insert_recording(&new, &[]).unwrap();
        assert_eq!(store.recordings(Some("room")).unwrap().len(), 2);
    }

    #[test]
    fn room_state_round_trips() {
        let store = Store::in_memory().unwrap();
        for state in [
            State::Initializing {
                recording_id: "r".into(),
                requested_by: Some("p".into()),
            },
            State::Recording {
                recording_id: "r".into(),
            },
            State::Stopping {
                recording_id: "r".into(),
                announced: true,
            },
            State::Failed {
                recording_id: "r".into(),
                reason: "disk".into(),
            },
        ] {
            store
                .save_room_state("room", &state, &[], None, &[])
                .unwrap();
            assert_eq!(store.room_state("room").unwrap(), Some(state));
        }
        store
            .save_room_state("room", &State::Inactive, &[], None, &[])
            .unwrap();
        assert_eq!(store.room_state("room").unwrap(), None);
    }

    #[test]
    fn outbox_retries_and_gives_up() {
        let store = Store::in_memory().unwrap();
        store.enqueue(&[delivery("m1"), delivery("m2")]).unwrap();
        let due = store.due_deliveries(0, 10).unwrap();
        assert_eq!(due.len(), 2);
        store
            .failed_attempt(due[0].seq, "503", Some(1_000))
            .unwrap();
        store.delivered(due[1].seq).unwrap();
        assert!(store.due_deliveries(999, 10).unwrap().is_empty());
        assert_eq!(store.next_due_ms().unwrap(), Some(1_000));
        let again = store.due_deliveries(1_000, 10).unwrap();
        assert_eq!(again[0].attempts, 1);
        store.failed_attempt(again[0].seq, "503", None).unwrap();
        let counts = store.outbox_counts().unwrap();
        assert_eq!((counts.delivered, counts.dead, counts.pending), (1, 1, 0));
    }

    #[test]
    fn finished_outbox_rows_are_pruned_and_pending_ones_kept() {
        let store = Store::in_memory().unwrap();
        store
            .enqueue(&[delivery("a"), delivery("b"), delivery("c")])
            .unwrap();
        let due = store.due_deliveries(i64::MAX, 10).unwrap();
        store.delivered(due[0].seq).unwrap();
        store.failed_attempt(due[1].seq, "gone", None).unwrap();
        // Rows written now are not older than a cutoff in the past…
        assert_eq!(store.prune_outbox("2000-01-01T00:00:00.000Z").unwrap(), 0);
        // …and with a cutoff in the future only the finished ones go.
        assert_eq!(store.prune_outbox("2999-01-01T00:00:00.000Z").unwrap(), 2);
        let counts = store.outbox_counts().unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dead), (1, 0, 0));
    }

    #[test]
    fn gone_endpoints_are_disabled() {
        let store = Store::in_memory().unwrap();
        store.enqueue(&[delivery("m1")]).unwrap();
        store.disable_endpoint("http://127.0.0.1:1/hook").unwrap();
        assert_eq!(store.outbox_counts().unwrap().disabled, 1);
        assert_eq!(store.disabled_endpoints().unwrap().len(), 1);
    }

    #[test]
    fn deadlines_are_saved_with_their_transition_and_cleared_once() {
        let store = Store::in_memory().unwrap();
        let initializing = State::Initializing {
            recording_id: "r1".into(),
            requested_by: None,
        };
        let start = NewDeadline {
            deadline: "start",
            recording_id: "r1",
            at_ms: 1_000,
        };
        store
            .save_room_state("a", &initializing, &[], Some(&start), &[])
            .unwrap();
        // Room a also empties: a second wait beside the start's.
        let grace = NewDeadline {
            deadline: "empty_room",
            recording_id: "r1",
            at_ms: 2_000,
        };
        store.set_deadline("a", &grace).unwrap();
        assert_eq!(store.due_deadlines(999).unwrap(), []);
        let due = store.due_deadlines(5_000).unwrap();
        let names: Vec<_> = due
            .iter()
            .map(|d| {
                (
                    d.room.as_str(),
                    d.deadline.as_str(),
                    d.recording_id.as_str(),
                )
            })
            .collect();
        assert_eq!(names, [("a", "start", "r1"), ("a", "empty_room", "r1")]);
        // Re-armed meanwhile: clearing the passed one leaves the new one.
        store
            .set_deadline(
                "a",
                &NewDeadline {
                    at_ms: 3_000,
                    ..grace
                },
            )
            .unwrap();
        store.clear_deadline(&due[1]).unwrap();
        store.clear_deadline(&due[0]).unwrap();
        assert_eq!(store.due_deadlines(5_000).unwrap().len(), 1);
        // An inactive room waits for nothing.
        store
            .save_room_state("a", &State::Inactive, &[], None, &[])
            .unwrap();
        assert_eq!(store.due_deadlines(5_000).unwrap(), []);
    }

    #[test]
    fn old_recordings_expire_unless_held() {
        let store = Store::in_memory().unwrap();
        for (id, created) in [
            ("old", "2026-01-01T00:00:00.000Z"),
            ("held", "2026-01-02T00:00:00.000Z"),
            ("new", "2026-06-01T00:00:00.000Z"),
        ] {
            let mut r = recording(id);
            r.created_at = created.into();
            store.insert_recording(&r, &[]).unwrap();
        }
        assert!(
            store
                .set_keep_until("held", Some("2026-07-01T00:00:00.000Z"))
                .unwrap()
        );
        assert!(!store.set_keep_until("nothing", None).unwrap());
        let cutoff = "2026-03-01T00:00:00.000Z";
        assert_eq!(
            store
                .expired_recordings(cutoff, "2026-04-01T00:00:00.000Z", 10)
                .unwrap(),
            ["old"]
        );
        // Once the hold has passed, or is lifted, the retention applies.
        assert_eq!(
            store
                .expired_recordings(cutoff, "2026-08-01T00:00:00.000Z", 10)
                .unwrap(),
            ["old", "held"]
        );
        store.set_keep_until("held", None).unwrap();
        assert_eq!(store.keep_until("held").unwrap(), None);
        assert_eq!(
            store.expired_recordings(cutoff, cutoff, 1).unwrap(),
            ["old"]
        );
    }

    #[test]
    fn recording_facts_keep_the_start_and_only_raise_the_peak() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.recording_facts("r1").unwrap(), None);
        store.recording_started("r1", 2).unwrap();
        let started = store.recording_facts("r1").unwrap().unwrap();
        store.recording_started("r1", 9).unwrap();
        store.recording_peak("r1", 5).unwrap();
        store.recording_peak("r1", 3).unwrap();
        let facts = store.recording_facts("r1").unwrap().unwrap();
        assert_eq!(facts.started_at, started.started_at);
        assert_eq!(facts.peak_participants, 5);
    }

    #[test]
    fn owners_are_remembered() {
        let store = Store::in_memory().unwrap();
        store.set_owner("r1", "ada").unwrap();
        store.set_owner("r1", "mallory").unwrap();
        assert_eq!(store.owner("r1").unwrap().as_deref(), Some("ada"));
        assert_eq!(store.owner("r2").unwrap(), None);
    }

    #[test]
    fn livekit_egresses_survive_reopening_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onair.db");
        let store = Store::open(&path).unwrap();
        let row = egress("EG_1");
        store.save_livekit_egress(&row, 0).unwrap();
        store
            .livekit_egress_admitted("EG_1", 42, "EGRESS_ACTIVE")
            .unwrap();
        store.livekit_egress_stop_requested("EG_1").unwrap();
        // Registering again keeps the ordering state.
        store.save_livekit_egress(&row, 0).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let expected = LivekitEgressRow {
            last_updated_at: Some(42),
            status: Some("EGRESS_ACTIVE".into()),
            stop_requested: true,
            ..row.clone()
        };
        assert_eq!(
            store.livekit_egress("EG_1").unwrap(),
            Some(expected.clone())
        );
        assert_eq!(
            store.livekit_egress_of_recording("rec").unwrap(),
            Some(expected)
        );
        assert_eq!(store.livekit_egress("EG_2").unwrap(), None);
        // Old egresses are forgotten when a new one is saved.
        let newer = LivekitEgressRow {
            egress_id: "EG_2".into(),
            created_ms: 5_000,
            ..row
        };
        store.save_livekit_egress(&newer, 2_000).unwrap();
        assert_eq!(store.livekit_egress("EG_1").unwrap(), None);
        assert!(store.livekit_egress("EG_2").unwrap().is_some());
    }

    #[test]
    fn notifications_share_the_outbox_and_may_be_held() {
        let store = Store::in_memory().unwrap();
        let post = |id: &str, held: bool| NewDelivery {
            kind: DeliveryKind::Notification,
            held,
            message_id: id.into(),
            endpoint: "http://127.0.0.1:1/notify".into(),
            event_type: "recording.notification".into(),
            payload: "{\"retrievalUrl\":\"/v1/recordings/r1/media\"}".into(),
        };
        // Written with the catalog entry, in one transaction.
        let mut attended = recording("r1");
        attended.participants = vec!["ada".into(), "grace".into()];
        attended.initiator = Some("ada".into());
        store
            .insert_recording(&attended, &[delivery("m1"), post("n1", true)])
            .unwrap();
        assert_eq!(store.recording("r1").unwrap().unwrap(), attended);
        store.enqueue(&[post("n2", false)]).unwrap();
        // Held rows wait; the webhook counts do not include notifications.
        let due = store.due_deliveries(0, 10).unwrap();
        let kinds: Vec<_> = due
            .iter()
            .map(|d| (d.message_id.as_str(), d.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("m1", DeliveryKind::Webhook),
                ("n2", DeliveryKind::Notification)
            ]
        );
        assert_eq!(store.outbox_counts().unwrap().pending, 1);
        assert_eq!(store.notification_counts().unwrap().pending, 2);
        // Released with the upload's URL; only once.
        assert!(store.release_held("n1", Some("{\"x\":1}")).unwrap());
        assert!(!store.release_held("n1", None).unwrap());
        let n1 = store
            .due_deliveries(0, 10)
            .unwrap()
            .into_iter()
            .find(|d| d.message_id == "n1")
            .unwrap();
        assert_eq!(n1.payload, "{\"x\":1}");
        // A 410 from a webhook endpoint never disables a notification.
        store.disable_endpoint("http://127.0.0.1:1/notify").unwrap();
        assert_eq!(store.notification_counts().unwrap().pending, 2);
        // At start-up, rows left held go as written.
        store.enqueue(&[post("n3", true)]).unwrap();
        assert_eq!(store.release_all_held().unwrap(), 1);
    }

    #[test]
    fn the_outbox_migration_keeps_pending_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("onair.db");
        database_at_version(
            &path,
            4,
            "INSERT INTO outbox (message_id, endpoint, event_type, payload, next_attempt_ms, created_at)
             VALUES ('m0', 'http://e', 'recording.started', '{}', 0, 'x')",
        );
        let store = Store::open(&path).unwrap();
        let due = store.due_deliveries(0, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].message_id.as_str(), due[0].kind),
            ("m0", DeliveryKind::Webhook)
        );
        // New rows do not reuse the old row's sequence number.
        store.enqueue(&[delivery("m1")]).unwrap();
        assert!(store.due_deliveries(0, 10).unwrap()[1].seq > due[0].seq);
    }

    #[test]
    fn jaas_marks_and_keys_are_written_together_and_only_move_up() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.jaas_mark("s1").unwrap(), None);
        assert!(!store.receipt_seen("jaas", "k1").unwrap());
        store
            .jaas_lifecycle_applied("s1", 2_000, Some("k1"), 10_000)
            .unwrap();
        assert_eq!(store.jaas_mark("s1").unwrap(), Some(2_000));
        assert!(store.receipt_seen("jaas", "k1").unwrap());
        // An older (stale) event's key is kept; the mark stays.
        store
            .jaas_lifecycle_applied("s1", 1_000, Some("k0"), 10_000)
            .unwrap();
        assert_eq!(store.jaas_mark("s1").unwrap(), Some(2_000));
        assert!(store.receipt_seen("jaas", "k0").unwrap());
        // No timestamp, no mark.
        store.jaas_lifecycle_applied("s2", 0, None, 10_000).unwrap();
        assert_eq!(store.jaas_mark("s2").unwrap(), None);
        // Marks are forgotten after a week.
        store
            .jaas_lifecycle_applied("s3", 5, None, 10_000 + 8 * 24 * 3600 * 1000)
            .unwrap();
        assert_eq!(store.jaas_mark("s1").unwrap(), None);
    }

    #[test]
    fn a_jaas_download_is_journalled_with_its_key_once() {
        let store = Store::in_memory().unwrap();
        assert!(
            store
                .jaas_download_accepted("r1", "{}", Some("k1"), 1_000)
                .unwrap()
        );
        // The same key again (a redelivery) writes nothing.
        assert!(
            !store
                .jaas_download_accepted("r2", "{}", Some("k1"), 1_000)
                .unwrap()
        );
        assert_eq!(
            store.jaas_downloads().unwrap(),
            [("r1".into(), "{}".into())]
        );
        store.jaas_download_done("r1").unwrap();
        assert!(store.jaas_downloads().unwrap().is_empty());
        assert!(store.receipt_seen("jaas", "k1").unwrap());
    }

    #[test]
    fn a_livekit_event_is_seen_only_with_its_mark() {
        let store = Store::in_memory().unwrap();
        let row = egress("EG_1");
        store.save_livekit_egress(&row, 0).unwrap();
        // Before the write (a crash after applying): neither is known.
        assert!(!store.receipt_seen("livekit", "EV_1").unwrap());
        store
            .livekit_event_applied("EG_1", 20, "EGRESS_ACTIVE", Some("EV_1"), 1_000)
            .unwrap();
        assert!(store.receipt_seen("livekit", "EV_1").unwrap());
        let saved = store.livekit_egress("EG_1").unwrap().unwrap();
        assert_eq!(
            (saved.last_updated_at, saved.status.as_deref()),
            (Some(20), Some("EGRESS_ACTIVE"))
        );
        // A write that reaches the store late never moves the mark back.
        store
            .livekit_event_applied("EG_1", 10, "EGRESS_STARTING", None, 1_000)
            .unwrap();
        let saved = store.livekit_egress("EG_1").unwrap().unwrap();
        assert_eq!(saved.last_updated_at, Some(20));
    }

    #[test]
    fn receipts_detect_replays() {
        let store = Store::in_memory().unwrap();
        assert!(store.first_receipt("jaas", "k1", 1_000).unwrap());
        assert!(!store.first_receipt("jaas", "k1", 2_000).unwrap());
        assert!(store.first_receipt("livekit", "k1", 2_000).unwrap());
    }
}
