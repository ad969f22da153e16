#!/usr/bin/env bash
# schemathesis against the served OpenAPI document: every documented
# operation fuzzed with a valid token for a bounded time; any failure (an
# undocumented status, a wrong content type or body shape, a schema-valid
# request refused, a schema-violating one accepted, an undeclared method not
# answered 405 with Allow, any 5xx) fails the step.
#
# Runs `order-engine serve` (the debug binary in CARGO_TARGET_DIR) on a
# throwaway SQLite file and a free port; never touches PostgreSQL, RabbitMQ
# or any file outside its temp dir and the venv cache.
#
# Environment:
#   CARGO_TARGET_DIR           where the debug binary is (default: ./target)
#   SCHEMATHESIS_MAX_TIME      seconds of fuzzing (default 120; the step stays under 3 minutes)
#   SCHEMATHESIS_MAX_EXAMPLES  cases per operation and phase (default 300)
#   SCHEMATHESIS_SEED          seed, to replay a run (default: random, printed)
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-120}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-300}
SEED=${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}
# Time for `serve` to answer /health/ready, and for pip on a cold cache.
READY_WITHIN_S=30
INSTALL_WITHIN_S=300

cd "$(dirname "$0")/../.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
VENV="$HOME/.cache/order-engine-schemathesis/venv-$SCHEMATHESIS_VERSION"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "schemathesis: installing $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  timeout "$INSTALL_WITHIN_S" "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

# `cargo test` builds the binary for the integration tests; asking for it the
# same way reuses that build (a `cargo build` would compile the dependencies
# again with the features of a non-test build).
cargo test --locked --quiet --no-run --test http_api
BIN="$TARGET_DIR/debug/order-engine"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite:$WORK/schemathesis.db"
export ORDER_ENGINE_HTTP_ADDR="127.0.0.1:$PORT"
# The gRPC service is not under test here; any free port keeps it out of the way.
export ORDER_ENGINE_GRPC_ADDR="127.0.0.1:0"
# A generous ledger: fuzzed orders must not run accounts dry and change the answers.
export ORDER_ENGINE_DEMO_BALANCE=1000000000
export RUST_LOG=${RUST_LOG:-warn}
unset AMQP_URL BALANCE_SERVICE_URL ACCOUNT_SERVICE_URL

"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 $((READY_WITHIN_S * 5))); do
  if curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis: serve exited before it was ready" >&2
    cat "$WORK/serve.log" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null

TOKEN=$("$BIN" token --user "$(python3 -c 'import uuid; print(uuid.uuid4())')")

# 422 is a schema-valid order refused by a rule the document cannot state:
# an unlisted symbol, a closed market, a price the order type does not take,
# more than 8 decimals. Everything else a valid request may get is the default.
cat >"$WORK/schemathesis.toml" <<'EOF'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
EOF

started=$(date +%s)
set +e
# From the temp dir: schemathesis keeps its state (.schemathesis/) in the working directory.
(cd "$WORK" && "$VENV/bin/schemathesis" --no-color --config-file "$WORK/schemathesis.toml" run \
  "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  --url "http://127.0.0.1:$PORT" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --max-time "$MAX_TIME" \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --request-timeout 10 \
  --report ndjson,junit --report-dir "$WORK/report" \
  2>&1) | tee "$WORK/output.txt"
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "schemathesis: serve died during the run" >&2
  tail -50 "$WORK/serve.log" >&2
  status=1
fi

# The summary's own line: "N generated, N passed, …" or "N generated, N found M unique failures, …".
cases=$(grep -oE '^ *[0-9]+ generated.*' "$WORK/output.txt" | tail -1 | sed 's/^ *//' || true)
echo "schemathesis figures: version $SCHEMATHESIS_VERSION, seed $SEED, cases: ${cases:-none reported}, ${elapsed}s, exit $status"
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures above; replay with SCHEMATHESIS_SEED=$SEED" >&2
fi
exit "$status"
