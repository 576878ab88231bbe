-- Legal hold: a recording kept at least until this time (RFC 3339, UTC, the
-- format of created_at), whatever [storage] retention says.
ALTER TABLE recordings ADD COLUMN keep_until TEXT;
CREATE INDEX recordings_by_age ON recordings (created_at);
