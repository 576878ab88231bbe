-- Issue 13, "the state never lies": every waiting state has a deadline,
-- written in the same transaction as the transition that armed it, so that
-- it fires after a restart too. A room may wait for two things at once (a
-- start, and its grace period after everyone left), one row each.
-- `deadline` is `start`, `stop` or `empty_room`; `at_ms` is when it passes
-- (Unix milliseconds). A deadline that no longer applies when it passes
-- (its recording moved on) changes nothing and is cleared.
CREATE TABLE room_deadlines (
    room         TEXT NOT NULL,
    deadline     TEXT NOT NULL,
    recording_id TEXT NOT NULL,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (room, deadline)
);
CREATE INDEX room_deadlines_due ON room_deadlines (at_ms);
