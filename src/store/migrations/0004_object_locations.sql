-- Recording files may live in an S3-compatible bucket (`[storage] s3_*`):
-- a third location kind, 'object', whose location is the object key.
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt.

CREATE TABLE recordings_new (
    id            TEXT PRIMARY KEY,
    room          TEXT NOT NULL,
    name          TEXT NOT NULL,
    duration_s    REAL NOT NULL,
    size_bytes    INTEGER NOT NULL,
    location_kind TEXT NOT NULL CHECK (location_kind IN ('file', 'external', 'object')),
    location      TEXT NOT NULL,
    provider      TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
INSERT INTO recordings_new (id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at)
    SELECT id, room, name, duration_s, size_bytes, location_kind, location, provider, created_at FROM recordings;
DROP TABLE recordings;
ALTER TABLE recordings_new RENAME TO recordings;
CREATE INDEX recordings_by_room ON recordings (room, created_at);
