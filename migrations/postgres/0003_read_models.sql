-- Read models (seed 004 section 4), derived from the log by projections.
-- Adapted to event sourcing: no foreign key to a users table (there is none),
-- TIMESTAMPTZ in UTC, and execution_value kept exact (quantity × price may
-- need more than 8 places). Dropping these tables and replaying rebuilds them.
CREATE TABLE orders (
    id                         UUID           PRIMARY KEY,
    user_id                    UUID           NOT NULL,
    symbol                     VARCHAR(20)    NOT NULL,
    order_type                 VARCHAR(20)    NOT NULL,
    order_side                 VARCHAR(10)    NOT NULL,
    quantity                   DECIMAL(18, 8) NOT NULL,
    price                      DECIMAL(18, 8),
    stop_price                 DECIMAL(18, 8),
    status                     VARCHAR(20)    NOT NULL,
    created_at                 TIMESTAMPTZ    NOT NULL,
    updated_at                 TIMESTAMPTZ    NOT NULL,
    executed_at                TIMESTAMPTZ,
    execution_price            DECIMAL(18, 8),
    execution_value            NUMERIC,
    market_price_at_submission DECIMAL(18, 8),
    market_data_timestamp      TIMESTAMPTZ,
    failure_reason             TEXT
);
CREATE INDEX idx_orders_user_id ON orders (user_id);
CREATE INDEX idx_orders_status ON orders (status);
CREATE INDEX idx_orders_symbol ON orders (symbol);
CREATE INDEX idx_orders_created_at ON orders (created_at DESC);
CREATE INDEX idx_orders_user_history ON orders (user_id, created_at DESC, id);

-- Command-side dedup of HTTP Idempotency-Key headers. Scoped per user (the
-- seed's key alone would let one user's key collide with another's), with
-- the request's hash so the same key with another body is refused.
CREATE TABLE order_idempotency (
    idempotency_key VARCHAR(255) NOT NULL,
    user_id         UUID         NOT NULL,
    order_id        UUID         NOT NULL,
    status          VARCHAR(50)  NOT NULL,
    request_hash    TEXT         NOT NULL,
    response_data   JSONB,
    created_at      TIMESTAMPTZ  NOT NULL,
    expires_at      TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX idx_idempotency_user_id ON order_idempotency (user_id);
CREATE INDEX idx_idempotency_expires_at ON order_idempotency (expires_at);
