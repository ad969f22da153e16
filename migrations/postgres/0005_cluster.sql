-- Scale-out (issue 13, docs/adr/0003-leases-in-postgresql.md): the processes
-- sharing one database, and which of them owns each piece of work. Times are
-- the database's clock (now()), so processes' clocks never disagree about a
-- lease. A handful of rows, updated in place every heartbeat: not part of the log.
CREATE TABLE cluster_members (
    node         TEXT        PRIMARY KEY,
    -- A new one per process start: a restart under the same node name takes
    -- its predecessor's place (and leases) at once.
    incarnation  UUID        NOT NULL,
    partitions   INTEGER     NOT NULL CHECK (partitions > 0),
    version      TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE cluster_leases (
    -- `partition.p007`, `leader.projection.orders`, ...
    name        TEXT        PRIMARY KEY,
    node        TEXT        NOT NULL,
    incarnation UUID        NOT NULL,
    -- Grows by one at every change of holder: a fencing token.
    token       BIGINT      NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
