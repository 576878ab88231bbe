//! Reading the single node's durable state out of SQLite page by page, for
//! `onair migrate-to-redis` (`migrate`): each call returns at most
//! `limit` rows after a key (keyset paging, so a page costs the same however
//! far in it is, and a large catalog is never held in memory at once).

use rusqlite::params;

use super::{Delivery, RecordingFacts, SELECT_RECORDING, Store, StoreError, recording_from_row};
use crate::catalog_entry::Recording;

impl Store {
    /// At most `limit` catalogued recordings whose id sorts after `after`
    /// (`""`: from the first), by id, each with its legal hold.
    pub fn recordings_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(Recording, Option<String>)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(&format!(
            "{SELECT_RECORDING} WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let recordings: Vec<Recording> = statement
            .query_map(params![after, limit as i64], recording_from_row)?
            .collect::<Result<_, _>>()?;
        let mut hold = conn.prepare_cached("SELECT keep_until FROM recordings WHERE id = ?1")?;
        let mut page = Vec::with_capacity(recordings.len());
        for recording in recordings {
            let keep_until: Option<String> = hold.query_row([&recording.id], |r| r.get(0))?;
            page.push((recording, keep_until));
        }
        Ok(page)
    }

    /// At most `limit` recordings' facts (see [`Store::recording_facts`])
    /// whose recording id sorts after `after`, by id.
    pub fn recording_facts_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, RecordingFacts)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT recording_id, started_at, peak_participants FROM recording_facts
             WHERE recording_id > ?1 ORDER BY recording_id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get(0)?,
                RecordingFacts {
                    started_at: r.get(1)?,
                    peak_participants: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At most `limit` `(recording id, owner)` whose recording id sorts after
    /// `after`, by id (see [`Store::owner`]).
    pub fn owners_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs_after(
            "SELECT recording_id, owner FROM recording_owners
             WHERE recording_id > ?1 ORDER BY recording_id LIMIT ?2",
            after,
            limit,
        )
    }

    /// At most `limit` `(owner, settings JSON)` whose owner sorts after
    /// `after`, by owner (see [`Store::notification_settings`]).
    pub fn notification_settings_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs_after(
            "SELECT owner, settings FROM notification_settings
             WHERE owner > ?1 ORDER BY owner LIMIT ?2",
            after,
            limit,
        )
    }

    /// At most `limit` journalled JaaS downloads `(recording id, job JSON,
    /// accepted at (ms))` whose recording id sorts after `after`, by id (see
    /// [`Store::jaas_downloads`]).
    pub fn jaas_downloads_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT recording_id, job, created_ms FROM jaas_downloads
             WHERE recording_id > ?1 ORDER BY recording_id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At most `limit` outbox rows not delivered yet (pending, whenever
    /// due, and held) whose `seq` is above `after`, by `seq`.
    pub fn undelivered_after(&self, after: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(
            "SELECT seq, message_id, endpoint, event_type, payload, attempts, kind FROM outbox
             WHERE state IN ('pending', 'held') AND seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit as i64], super::delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn pairs_after(
        &self,
        sql: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn.prepare(sql)?;
        let rows =
            statement.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog_entry::Location;
    use crate::delivery::{DeliveryKind, NewDelivery};

    fn recording(id: &str) -> Recording {
        Recording {
            id: id.into(),
            room: "standup".into(),
            name: format!("{id}.mp4"),
            duration_s: 1.0,
            size_bytes: 10,
            location: Location::External(format!("https://files.example/{id}")),
            provider: "manual".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            participants: Vec::new(),
            initiator: None,
        }
    }

    #[test]
    fn pages_cover_everything_once_in_order() {
        let store = Store::in_memory().unwrap();
        for id in ["c", "a", "b", "e", "d"] {
            store.insert_recording(&recording(id), &[]).unwrap();
        }
        store
            .set_keep_until("b", Some("2099-01-01T00:00:00.000Z"))
            .unwrap();
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = store.recordings_after(&after, 2).unwrap();
            let Some((last, _)) = page.last() else { break };
            after = last.id.clone();
            seen.extend(page.into_iter().map(|(r, hold)| (r.id, hold)));
        }
        let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
        assert_eq!(seen[1].1.as_deref(), Some("2099-01-01T00:00:00.000Z"));
        assert_eq!(seen[0].1, None);
    }

    #[test]
    fn only_undelivered_rows_are_read_held_ones_included() {
        let store = Store::in_memory().unwrap();
        let row = |id: &str, held: bool| NewDelivery {
            kind: DeliveryKind::Webhook,
            held,
            message_id: id.into(),
            endpoint: "http://127.0.0.1:9/hook".into(),
            event_type: "recording.available".into(),
            payload: "{}".into(),
        };
        store
            .enqueue(&[row("msg_1", false), row("msg_2", true), row("msg_3", false)])
            .unwrap();
        store.delivered(1).unwrap();
        store.failed_attempt(3, "HTTP 503", Some(i64::MAX)).unwrap();
        let rows = store.undelivered_after(0, 10).unwrap();
        let ids: Vec<(&str, u32)> = rows
            .iter()
            .map(|d| (d.message_id.as_str(), d.attempts))
            .collect();
        assert_eq!(ids, [("msg_2", 0), ("msg_3", 1)]);
        assert!(store.undelivered_after(rows[1].seq, 10).unwrap().is_empty());
    }
}
