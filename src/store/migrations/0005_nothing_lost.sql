-- Issue 4, "Nothing lost": the last pieces that lived only in memory.

-- 1. The outbox carries two kinds of rows: Standard Webhooks to the
--    `[[webhooks.endpoints]]` ('webhook') and the Temasys-style POST of a
--    recording's metadata to its owner's `url` ('notification'). A
--    notification may be 'held' while the file is uploaded to the owner's S3
--    (its `retrievalUrl` is then the presigned URL); a restart releases held
--    rows as they are. SQLite cannot alter a CHECK constraint: the table is rebuilt.
CREATE TABLE outbox_new (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL DEFAULT 'webhook' CHECK (kind IN ('webhook', 'notification')),
    message_id      TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('held', 'pending', 'delivered', 'dead', 'disabled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    UNIQUE (message_id, endpoint)
);
INSERT INTO outbox_new (seq, message_id, endpoint, event_type, payload, state, attempts, next_attempt_ms, last_error, created_at)
    SELECT seq, message_id, endpoint, event_type, payload, state, attempts, next_attempt_ms, last_error, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);

-- 2. Who was in a recording and who started it (JaaS `RECORDING_UPLOADED`
--    names them): a JSON array of user ids, and the initiator's id.
ALTER TABLE recordings ADD COLUMN participants TEXT NOT NULL DEFAULT '[]';
ALTER TABLE recordings ADD COLUMN initiator TEXT;

-- 3. The JaaS ordering marks: the payload `timestamp` (ms) of the newest
--    RECORDING_STARTED/ENDED applied per meeting session, so that an older
--    event arriving later, even after a restart, is ignored.
CREATE TABLE jaas_sessions (
    session_id TEXT PRIMARY KEY,
    last_ms    INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX jaas_sessions_by_age ON jaas_sessions (updated_ms);

-- 4. JaaS downloads onair owes (a `RECORDING_UPLOADED` accepted but not yet
--    catalogued), written in the same transaction as the event's idempotency key.
CREATE TABLE jaas_downloads (
    recording_id TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);
