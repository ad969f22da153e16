#!/usr/bin/env bash
# The long version of tests/http_floods.rs's memory test: tens of thousands
# of MARKET orders over HTTP into the in-process app, the test process's
# resident memory sampled throughout; fails if the last third of the orders
# grew it by more than the test's stated bound. Prints the test's figures.
#
# Environment:
#   ORDERS    orders to submit (default 40000)
#   SECONDS_MAX  submission time cap in seconds (default 1200)
#   PROFILE   cargo profile flag: --release (default, representative of
#             serve) or empty for the debug build CI uses
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${ORDERS:-40000}
SECONDS_MAX=${SECONDS_MAX:-1200}
PROFILE=${PROFILE---release}
# The cap bounds the run; the outer timeout bounds a hang on top of it.
ORDER_ENGINE_FLOOD_ORDERS="$ORDERS" ORDER_ENGINE_FLOOD_SECONDS="$SECONDS_MAX" \
  timeout $((SECONDS_MAX + 600)) \
  cargo test --locked $PROFILE --test http_floods memory_stays_flat -- --nocapture 2>&1 \
  | grep -E '^memory:|^test |test result'
