-- Where each reader of the whole log has got to. Not part of the log: rows
-- are updated in place as readers advance.
CREATE TABLE checkpoints (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at TEXT    NOT NULL
);
