-- Tamper evidence: each event's hash chained to its stream's previous event,
-- and a running hash over the whole log (see src/store/chain.rs). Events
-- written before this migration keep NULL and verify as an unhashed prefix.
ALTER TABLE events ADD COLUMN stream_hash BYTEA CHECK (octet_length(stream_hash) = 32);
ALTER TABLE events ADD COLUMN log_hash BYTEA CHECK (octet_length(log_hash) = 32);
