#!/usr/bin/env bash
# The cqrs-es 0.5 + postgres-es 0.5 peer of issue 12 (benches/peer-cqrs-es/):
# builds it in release and runs it at 4 and 64 orders in flight, printing one
# JSON line per level (orders_per_sec, p50_ms, p99_ms, ...). Run it in the same
# session as the engine's benches so the ratio engine/peer compares like with like.
#
# Usage: scripts/bench-peer.sh [extra flags for the binary, e.g. --seconds 30 or --orders 20000]
#        PEER_CONCURRENCY=4,64 and 15 s per level by default (PEER_SECONDS, or PEER_ORDERS for a count); DATABASE_URL picks the server
#        (default postgres://postgres@127.0.0.1:5432/postgres; the run makes and drops its own database).
# Builds into $CARGO_TARGET_DIR, else benches/peer-cqrs-es/target (its own lockfile and workspace:
# the engine's build never compiles it).
set -euo pipefail
cd "$(dirname "$0")/.."
CRATE=benches/peer-cqrs-es
TARGET_DIR=${CARGO_TARGET_DIR:-$CRATE/target}
export PEER_CONCURRENCY=${PEER_CONCURRENCY:-4,64}
cargo build --release --locked --manifest-path "$CRATE/Cargo.toml" --target-dir "$TARGET_DIR" >&2
"$TARGET_DIR/release/order-engine-peer-cqrs-es" "$@"
