-- The LiveKit bridge's egress table, so that after a restart a webhook about
-- an egress started before it still reaches its room, in order.
CREATE TABLE livekit_egresses (
    egress_id       TEXT PRIMARY KEY,
    room            TEXT NOT NULL,
    recording_id    TEXT NOT NULL,
    -- `updatedAt` (ns) of the newest event applied; NULL before the first.
    last_updated_at INTEGER,
    -- The `EgressStatus` name of the newest event applied; NULL before the first.
    status          TEXT,
    -- Whether onair asked LiveKit to stop it (an ABORTED after that is a plain stop).
    stop_requested  INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL
);
CREATE INDEX livekit_egresses_by_recording ON livekit_egresses (recording_id);
CREATE INDEX livekit_egresses_by_age ON livekit_egresses (created_ms);
