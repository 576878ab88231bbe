-- Who started each recording (the token `sub`), for per-owner notifications
-- that are sent when the file becomes available, possibly much later.
CREATE TABLE recording_owners (
    recording_id TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
