-- onair's durable data. Rooms and participants stay in memory; what must
-- survive a crash lives here.

-- Finished recordings: the catalog.
CREATE TABLE recordings (
    id            TEXT PRIMARY KEY,
    room          TEXT NOT NULL,
    name          TEXT NOT NULL,
    duration_s    REAL NOT NULL,
    size_bytes    INTEGER NOT NULL,
    location_kind TEXT NOT NULL CHECK (location_kind IN ('file', 'external')),
    location      TEXT NOT NULL,
    provider      TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX recordings_by_room ON recordings (room, created_at);

-- The recording state of rooms that are not inactive, so a restart resumes it.
CREATE TABLE room_recordings (
    room         TEXT PRIMARY KEY,
    status       TEXT NOT NULL CHECK (status IN ('initializing', 'recording', 'stopping', 'failed')),
    recording_id TEXT NOT NULL,
    announced    INTEGER NOT NULL DEFAULT 0,
    requested_by TEXT,
    reason       TEXT,
    updated_at   TEXT NOT NULL
);

-- Outbound webhook deliveries, written in the same transaction as their cause.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead', 'disabled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    UNIQUE (message_id, endpoint)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);

-- Endpoints that answered 410 Gone: nothing more is sent to them.
CREATE TABLE disabled_endpoints (
    endpoint    TEXT PRIMARY KEY,
    disabled_at TEXT NOT NULL
);

-- Idempotency keys of inbound webhooks, so a replay is acknowledged but not applied.
CREATE TABLE webhook_receipts (
    provider    TEXT NOT NULL,
    key         TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (provider, key)
);

-- Recording notification settings per owner (Temasys style).
CREATE TABLE notification_settings (
    owner      TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
