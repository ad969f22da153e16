-- The event log: one append-only table, totally ordered by global_position.
-- Positions are assigned under a transaction-scoped advisory lock, so they are
-- dense and commit in order: a reader never sees position n+1 before n.

CREATE TABLE events (
    global_position BIGINT      PRIMARY KEY CHECK (global_position >= 1),
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version >= 1),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    command_id      UUID,
    recorded_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- One row per command applied to a stream: the unique key makes a retried
-- command (same id) a no-op that returns the first result.
CREATE TABLE stream_commands (
    stream_id      TEXT        NOT NULL,
    command_id     UUID        NOT NULL,
    first_version  BIGINT      NOT NULL,
    last_version   BIGINT      NOT NULL,
    first_position BIGINT      NOT NULL,
    last_position  BIGINT      NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT stream_commands_pkey PRIMARY KEY (stream_id, command_id)
);

CREATE FUNCTION refuse_log_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'append a compensating event instead of changing history';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_log_mutation();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_mutation();
CREATE TRIGGER stream_commands_append_only
    BEFORE UPDATE OR DELETE ON stream_commands
    FOR EACH ROW EXECUTE FUNCTION refuse_log_mutation();
CREATE TRIGGER stream_commands_no_truncate
    BEFORE TRUNCATE ON stream_commands
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_mutation();
