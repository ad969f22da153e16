#!/usr/bin/env bash
# The long version of the chaos battery (tests/chaos.rs): the same four tests
# with bigger numbers (3,000+ orders and 14+ SIGKILLs in the crash test, 2,000
# orders through each restart and fault run), ROUNDS times with fresh seeds.
# Prints each test's figure line (`chaos <name>: …`); exits non-zero at the
# first failing round. Needs what CI needs: PostgreSQL and RabbitMQ reachable,
# PostgreSQL 15+ server binaries and rabbitmq-server installed (the restart
# tests start private servers of their own; the shared ones are never touched).
#
# Usage: scripts/chaos-soak.sh [ROUNDS]     (env: see the defaults below)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-1}
export ORDER_ENGINE_REQUIRE_SERVICES=1
export CHAOS_ORDERS=${CHAOS_ORDERS:-3000}
export CHAOS_RATE=${CHAOS_RATE:-40}
export CHAOS_KILL_EVERY_MS=${CHAOS_KILL_EVERY_MS:-4000}
export CHAOS_RESTART_ORDERS=${CHAOS_RESTART_ORDERS:-2000}
export CHAOS_FAULT_ORDERS=${CHAOS_FAULT_ORDERS:-2000}
export CHAOS_OUTAGE_MS=${CHAOS_OUTAGE_MS:-2500}
export CHAOS_DRAIN_S=${CHAOS_DRAIN_S:-120}
# Each round is bounded: four tests of at most a few minutes each.
round_timeout=${CHAOS_ROUND_TIMEOUT:-1200}

cargo test --locked --test chaos --no-run
for round in $(seq 1 "$rounds"); do
  seed=${CHAOS_SEED:-$RANDOM$RANDOM}
  echo "== chaos soak round $round/$rounds (seed $seed, $CHAOS_ORDERS orders, a kill every ${CHAOS_KILL_EVERY_MS} ms) =="
  log=$(mktemp)
  # One test at a time: the figures are then the engine's, not the machine's contention.
  if ! CHAOS_SEED=$seed timeout "$round_timeout" \
      cargo test --locked --test chaos -- --test-threads=1 --nocapture >"$log" 2>&1; then
    # libtest may print a figure line after "test <name> ... " on the same line.
    grep -oE 'chaos [a-z-]+: seed=.*|panicked.*|test .* FAILED' "$log" || tail -50 "$log"
    echo "chaos soak: round $round failed (full log: $log)" >&2
    exit 1
  fi
  grep -oE 'chaos [a-z-]+: seed=.*' "$log"
  rm -f "$log"
done
echo "chaos soak: $rounds round(s) clean"
