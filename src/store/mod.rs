//! The embedded SQLite store: the recordings catalog, each room's active
//! recording state, the outbound webhook outbox, inbound idempotency keys and
//! notification settings. Rooms and participants themselves stay in memory.
//!
//! One connection behind a `std::sync::Mutex`: every call is a short,
//! synchronous statement or transaction (WAL mode, `synchronous=NORMAL`), and
//! no `.await` happens while it is held. A state change and the outbound
//! webhooks it causes are written in one transaction, so a crash loses
//! neither or both.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog::{Location, Recording};
use crate::recording::State;

/// The migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_recording_owners.sql"),
    include_str!("migrations/0003_livekit_egresses.sql"),
    include_str!("migrations/0004_object_locations.sql"),
];

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The directory for the database could not be created.
    #[error("store: cannot create {0}: {1}")]
    Directory(PathBuf, std::io::Error),
    /// The database was written by a newer onair.
    #[error("store: database schema version {0} is newer than this onair knows ({1})")]
    TooNew(usize, usize),
}

/// An outbound webhook delivery to write with its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The Standard Webhooks message id, the same for every endpoint and retry.
    pub message_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The event type, e.g. `recording.started`.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
}

/// A delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id.
    pub seq: i64,
    /// The Standard Webhooks message id.
    pub message_id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
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

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::migrate(conn)
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
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves a room's recording state (an inactive room has no row) together
    /// with the deliveries it causes.
    pub fn save_room_state(
        &self,
        room: &str,
        state: &State,
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
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
                tx.execute("DELETE FROM room_recordings WHERE room = ?1", [room])?;
            }
            Some((status, id, announced, requested_by, reason)) => {
                tx.execute(
                    "INSERT INTO room_recordings (room, status, recording_id, announced, requested_by, reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (room) DO UPDATE SET status = ?2, recording_id = ?3, announced = ?4,
                       requested_by = ?5, reason = ?6, updated_at = ?7",
                    params![room, status, id, announced, requested_by, reason, now],
                )?;
            }
        }
        insert_deliveries(&tx, deliveries)?;
        tx.commit()?;
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
            "INSERT OR IGNORE INTO recordings (id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                recording.id,
                recording.room,
                recording.name,
                recording.duration_s,
                recording.size_bytes as i64,
                kind,
                location,
                recording.provider,
                recording.created_at
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

    /// Deliveries due at `now_ms`, oldest first.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT seq, message_id, endpoint, event_type, payload, attempts FROM outbox
             WHERE state = 'pending' AND next_attempt_ms <= ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now_ms, limit as i64], |r| {
            Ok(Delivery {
                seq: r.get(0)?,
                message_id: r.get(1)?,
                endpoint: r.get(2)?,
                event_type: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
            })
        })?;
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

    /// An endpoint answered 410 Gone: nothing more goes to it.
    pub fn disable_endpoint(&self, endpoint: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO disabled_endpoints (endpoint, disabled_at) VALUES (?1, ?2)",
            params![endpoint, crate::protocol::now_rfc3339()],
        )?;
        tx.execute(
            "UPDATE outbox SET state = 'disabled' WHERE endpoint = ?1 AND state = 'pending'",
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

    /// The outbox by state.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let conn = self.lock();
        let mut counts = OutboxCounts::default();
        let mut statement = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let rows =
            statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            match state.as_str() {
                "pending" => counts.pending = n,
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
        let conn = self.lock();
        // Keys older than a day cannot be replayed past the providers' replay windows.
        conn.execute(
            "DELETE FROM webhook_receipts WHERE received_ms < ?1",
            [now_ms - 24 * 3600 * 1000],
        )?;
        Ok(conn.execute(
            "INSERT OR IGNORE INTO webhook_receipts (provider, key, received_ms) VALUES (?1, ?2, ?3)",
            params![provider, key, now_ms],
        )? == 1)
    }

    /// Remembers who started a recording.
    pub fn set_owner(&self, recording_id: &str, owner: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT OR IGNORE INTO recording_owners (recording_id, owner, created_at) VALUES (?1, ?2, ?3)",
            params![recording_id, owner, crate::protocol::now_rfc3339()],
        )?;
        Ok(())
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

    /// Records the newest event admitted for an egress.
    pub fn livekit_egress_admitted(
        &self,
        egress_id: &str,
        updated_at: i64,
        status: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE livekit_egresses SET last_updated_at = ?2, status = ?3 WHERE egress_id = ?1",
            params![egress_id, updated_at, status],
        )?;
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

const SELECT_RECORDING: &str = "SELECT id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at FROM recordings";

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

fn insert_deliveries(
    tx: &rusqlite::Transaction<'_>,
    deliveries: &[NewDelivery],
) -> Result<(), StoreError> {
    let mut statement = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (message_id, endpoint, event_type, payload, next_attempt_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
    )?;
    let now = crate::protocol::now_rfc3339();
    for d in deliveries {
        statement.execute(params![
            d.message_id,
            d.endpoint,
            d.event_type,
            d.payload,
            now
        ])?;
    }
    Ok(())
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
        }
    }

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery {
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
        {
            // A database as the migrations before 0004 left it.
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.execute(
                "INSERT INTO recordings VALUES ('old', 'room', 'a.mp4', 1.0, 42, 'file', '/tmp/a.mp4', 'manual', 'x')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
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
            store.save_room_state("room", &state, &[]).unwrap();
            assert_eq!(store.room_state("room").unwrap(), Some(state));
        }
        store
            .save_room_state("room", &State::Inactive, &[])
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
    fn gone_endpoints_are_disabled() {
        let store = Store::in_memory().unwrap();
        store.enqueue(&[delivery("m1")]).unwrap();
        store.disable_endpoint("http://127.0.0.1:1/hook").unwrap();
        assert_eq!(store.outbox_counts().unwrap().disabled, 1);
        assert_eq!(store.disabled_endpoints().unwrap().len(), 1);
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
        let row = LivekitEgressRow {
            egress_id: "EG_1".into(),
            room: "room".into(),
            recording_id: "rec".into(),
            last_updated_at: None,
            status: None,
            stop_requested: false,
            created_ms: 1_000,
        };
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
    fn receipts_detect_replays() {
        let store = Store::in_memory().unwrap();
        assert!(store.first_receipt("jaas", "k1", 1_000).unwrap());
        assert!(!store.first_receipt("jaas", "k1", 2_000).unwrap());
        assert!(store.first_receipt("livekit", "k1", 2_000).unwrap());
    }
}
