#!/usr/bin/env bash
# Replay speed on a log of ~1,000,000 events on PostgreSQL.
#
# Writes a log shaped like the engine's (per order: 3 order events, 9 saga
# events, 3 ledger entries, as ARCHITECTURE.md's "life of an order"; 80 %
# MARKET BUYs executed, 20 % LIMIT BUYs cancelled) straight into a fresh
# database with one INSERT … SELECT over generate_series, then times
# `order-engine replay --all` (release build) into it, and drops the database.
#
# Usage: scripts/replay-bench.sh [ORDERS]   (default 66667 orders = 1,000,005 events)
# Needs: psql, a PostgreSQL at $ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# and the release binary (built with `cargo build --release` into $CARGO_TARGET_DIR or target/).
set -euo pipefail

ORDERS=${1:-66667}
ADMIN_URL=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=oe_replay_bench
URL="${ADMIN_URL%/*}/$DB"
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/order-engine}

psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
# KEEP=1 keeps the database for another look (drop it yourself afterwards).
[ "${KEEP:-0}" = 1 ] || trap 'psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT

# The binary applies the migrations on open (an empty replay).
DATABASE_URL=$URL RUST_LOG=warn "$BIN" replay --all >/dev/null

echo "writing $((ORDERS * 15)) events for $ORDERS orders..." >&2
psql -q -v ON_ERROR_STOP=1 "$URL" <<SQL
CREATE FUNCTION pg_temp.ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS
  \$\$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') \$\$;
INSERT INTO events (global_position, stream_id, stream_version, event_id, event_type, schema_version,
                    payload, metadata, command_id, recorded_at)
SELECT (o.n - 1) * 15 + s.k,
       CASE WHEN s.k IN (1, 6, 7) THEN 'order-' || o.oid
            WHEN s.k IN (4, 10, 13) THEN 'account-' || o.uid
            ELSE 'saga-' || o.oid END,
       CASE s.k WHEN 1 THEN 1 WHEN 6 THEN 2 WHEN 7 THEN 3
                WHEN 4 THEN o.acct * 3 + 1 WHEN 10 THEN o.acct * 3 + 2 WHEN 13 THEN o.acct * 3 + 3
                WHEN 2 THEN 1 WHEN 3 THEN 2 WHEN 5 THEN 3 WHEN 8 THEN 4 WHEN 9 THEN 5
                WHEN 11 THEN 6 WHEN 12 THEN 7 WHEN 14 THEN 8 ELSE 9 END,
       gen_random_uuid(),
       CASE s.k WHEN 1 THEN 'OrderSubmitted' WHEN 6 THEN 'OrderAccepted'
                WHEN 7 THEN CASE WHEN o.market THEN 'OrderExecuted' ELSE 'OrderCancelled' END
                WHEN 4 THEN 'FundsReserved'
                WHEN 10 THEN CASE WHEN o.market THEN 'ReservationDeducted' ELSE 'ReservationReleased' END
                WHEN 13 THEN 'ReservationReleased'
                WHEN 2 THEN 'SagaStarted' WHEN 8 THEN 'OrderObserved' WHEN 15 THEN 'SagaCompleted'
                WHEN 3 THEN 'StepAttempted' WHEN 9 THEN 'StepAttempted' WHEN 12 THEN 'StepAttempted'
                ELSE 'StepSucceeded' END,
       CASE s.k WHEN 1 THEN 2 ELSE 1 END,
       CASE s.k
         WHEN 1 THEN jsonb_build_object('order_id', o.oid, 'user_id', o.uid, 'symbol', 'AAPL', 'side', 'BUY',
                       'order_type', CASE WHEN o.market THEN 'MARKET' ELSE 'LIMIT' END, 'quantity', '2',
                       'limit_price', CASE WHEN o.market THEN NULL ELSE '100.5' END, 'stop_price', NULL,
                       'market_price_at_submission', '150.25', 'market_data_timestamp', pg_temp.ts(o.at),
                       'submitted_at', pg_temp.ts(o.at))
         WHEN 6 THEN jsonb_build_object('reserved_amount', '301.25', 'accepted_at', pg_temp.ts(o.at + interval '6 ms'))
         WHEN 7 THEN CASE WHEN o.market
                 THEN jsonb_build_object('execution_price', '150.3', 'quantity', '2', 'total_value', '300.6',
                        'market_price_at_exec', '150.3', 'executed_at', pg_temp.ts(o.at + interval '7 ms'))
                 ELSE jsonb_build_object('reason', 'requested by user', 'cancelled_at', pg_temp.ts(o.at + interval '7 ms'))
                 END
         WHEN 4 THEN jsonb_build_object('order_id', o.oid, 'amount', '301.25', 'idempotency_key', o.oid || ':reserve',
                       'at', pg_temp.ts(o.at + interval '4 ms'))
         WHEN 10 THEN jsonb_build_object('order_id', o.oid, 'amount', CASE WHEN o.market THEN '300.6' ELSE '301.25' END,
                       'idempotency_key', o.oid || CASE WHEN o.market THEN ':deduct' ELSE ':release' END,
                       'at', pg_temp.ts(o.at + interval '10 ms'))
         WHEN 13 THEN jsonb_build_object('order_id', o.oid, 'amount', CASE WHEN o.market THEN '0.65' ELSE '0' END,
                       'idempotency_key', o.oid || ':release-rest', 'at', pg_temp.ts(o.at + interval '13 ms'))
         WHEN 2 THEN jsonb_build_object('order_id', o.oid, 'user_id', o.uid, 'side', 'BUY', 'reserve_amount', '301.25',
                       'started_at', pg_temp.ts(o.at + interval '2 ms'))
         WHEN 15 THEN jsonb_build_object('completed_at', pg_temp.ts(o.at + interval '15 ms'))
         ELSE jsonb_build_object('step', 'reserve', 'attempt', 1, 'amount', '301.25',
                       'idempotency_key', o.oid || ':reserve', 'attempted_at', pg_temp.ts(o.at + s.k * interval '1 ms'))
       END,
       jsonb_build_object('correlation_id', o.oid, 'causation_id', NULL, 'who', o.uid::text, 'source', 'http'),
       CASE WHEN s.k IN (1, 6, 7) THEN gen_random_uuid() END,
       o.at + s.k * interval '1 ms'
FROM (SELECT n, md5('order' || n)::uuid AS oid, md5('user' || ((n - 1) % 1000))::uuid AS uid,
             (n - 1) / 1000 AS acct, n % 5 <> 0 AS market,
             timestamptz '2026-01-01 00:00:00+00' + n * interval '20 ms' AS at
      FROM generate_series(1, $ORDERS) AS n) AS o
CROSS JOIN generate_series(1, 15) AS s(k);
ANALYZE events;
SQL

echo "events: $(psql -tA "$URL" -c 'SELECT count(*) FROM events')" >&2
echo "+ DATABASE_URL=$URL $BIN replay --all" >&2
DATABASE_URL=$URL RUST_LOG=warn "$BIN" replay --all
echo "orders rows: $(psql -tA "$URL" -c 'SELECT count(*) FROM orders')" >&2
