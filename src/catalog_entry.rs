//! A finished recording as the catalog keeps it, and where its file is. The
//! service that keeps them is [`crate::catalog`]; this is only the data, so
//! that the stores below it can hold it.

use serde::Serialize;

/// Where a recording's file is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Location {
    /// A file in onair's storage directory.
    File(std::path::PathBuf),
    /// Somewhere the provider keeps it (a path on the provider's storage or a URL).
    External(String),
    /// An object in onair's S3-compatible bucket (`[storage] s3_bucket`).
    Object {
        /// The object key, with `[storage] s3_prefix` in front.
        key: String,
    },
}

impl Location {
    /// The local file, when it is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::File(path) => Some(path),
            Self::External(_) | Self::Object { .. } => None,
        }
    }
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
    /// Who was in it, as the provider names them (JaaS user ids); empty when
    /// the provider does not say.
    pub participants: Vec<String>,
    /// Who started it, as the provider names them (the JaaS `initiatorId`).
    pub initiator: Option<String>,
}

impl Recording {
    /// The media endpoint's path: where callers with credentials (a token of
    /// the room, the admin key) fetch the file. Links handed to others are
    /// made by [`crate::links::Links`].
    pub fn media_url(&self) -> String {
        format!("/v1/recordings/{}/media", self.id)
    }
}
