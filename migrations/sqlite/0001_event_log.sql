-- The event log: one append-only table, totally ordered by global_position.
-- SQLite runs one write transaction at a time, so positions are dense and
-- commit in order.

CREATE TABLE events (
    global_position INTEGER PRIMARY KEY CHECK (global_position >= 1),
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata        TEXT    NOT NULL CHECK (json_valid(metadata)),
    command_id      TEXT,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (stream_id, stream_version)
);

CREATE TABLE stream_commands (
    stream_id      TEXT    NOT NULL,
    command_id     TEXT    NOT NULL,
    first_version  INTEGER NOT NULL,
    last_version   INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_position  INTEGER NOT NULL,
    recorded_at    TEXT    NOT NULL,
    PRIMARY KEY (stream_id, command_id)
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE on events is refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE on events is refused'); END;
CREATE TRIGGER stream_commands_no_update BEFORE UPDATE ON stream_commands
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE on stream_commands is refused'); END;
CREATE TRIGGER stream_commands_no_delete BEFORE DELETE ON stream_commands
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE on stream_commands is refused'); END;
