-- Issue 15: what onair saw of a recording while it ran, for the owner's
-- notification (seed 001's `startTime` and `participants`): when `started`
-- went out, and the most participants in the room while it recorded.
CREATE TABLE recording_facts (
    recording_id      TEXT PRIMARY KEY,
    started_at        TEXT NOT NULL,
    peak_participants INTEGER NOT NULL DEFAULT 0
);
