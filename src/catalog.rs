//! The recordings catalog: what onair knows about finished recordings.
//!
//! Held in memory for now, so it is empty after a restart; the durable SQLite
//! store is tracked as open work (see README, "Status").

use dashmap::DashMap;
use serde::Serialize;

/// Where a recording's file is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Location {
    /// A file in onair's storage directory.
    File(std::path::PathBuf),
    /// Somewhere the provider keeps it (a path on the provider's storage or a URL).
    External(String),
}

/// One finished recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recording {
    /// onair's recording id (the one `started` announced).
    pub id: String,
    /// The room it was made in.
    pub room: String,
    /// The file name.
    pub name: String,
    /// Length in seconds.
    pub duration_s: f64,
    /// Size of the file.
    pub size_bytes: u64,
    /// Where the file is.
    pub location: Location,
    /// The backend that made it.
    pub provider: String,
    /// When onair catalogued it, RFC 3339 UTC.
    pub created_at: String,
}

/// All known recordings, by id.
#[derive(Default)]
pub struct Catalog {
    recordings: DashMap<String, Recording>,
}

impl Catalog {
    /// Adds a recording; `false` if one with that id is already catalogued
    /// (a duplicate report is not applied twice).
    pub fn insert(&self, recording: Recording) -> bool {
        use dashmap::mapref::entry::Entry;
        match self.recordings.entry(recording.id.clone()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(recording);
                true
            }
        }
    }

    /// One recording.
    pub fn get(&self, id: &str) -> Option<Recording> {
        self.recordings.get(id).map(|r| r.clone())
    }

    /// Recordings, newest first, optionally of one room.
    pub fn list(&self, room: Option<&str>) -> Vec<Recording> {
        let mut all: Vec<Recording> = self
            .recordings
            .iter()
            .filter(|r| room.is_none_or(|room| r.room == room))
            .map(|r| r.clone())
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// Removes a recording from the catalog.
    pub fn remove(&self, id: &str) -> Option<Recording> {
        self.recordings.remove(id).map(|(_, r)| r)
    }
}
