-- Read models (seed 004 section 4), derived from the log by projections.
-- Decimals are TEXT (exact), times RFC 3339 UTC TEXT, UUIDs TEXT.
CREATE TABLE orders (
    id                         TEXT PRIMARY KEY,
    user_id                    TEXT NOT NULL,
    symbol                     TEXT NOT NULL,
    order_type                 TEXT NOT NULL,
    order_side                 TEXT NOT NULL,
    quantity                   TEXT NOT NULL,
    price                      TEXT,
    stop_price                 TEXT,
    status                     TEXT NOT NULL,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    executed_at                TEXT,
    execution_price            TEXT,
    execution_value            TEXT,
    market_price_at_submission TEXT,
    market_data_timestamp      TEXT,
    failure_reason             TEXT
);
CREATE INDEX idx_orders_user_history ON orders (user_id, created_at DESC, id);
CREATE INDEX idx_orders_status ON orders (status);

CREATE TABLE order_idempotency (
    idempotency_key TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    status          TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_data   TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX idx_idempotency_expires_at ON order_idempotency (expires_at);
