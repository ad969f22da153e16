#!/usr/bin/env bash
# Fuzzes every parser of outside input (the cargo-fuzz targets in fuzz/) for a
# bounded time and prints, per target: runs, exec/s, coverage and corpus size.
# Exits non-zero when a target crashes or fails an assertion; the input that
# did it is kept under fuzz/artifacts/<target>/ and printed in base64.
#
# Usage: scripts/ci/fuzz.sh [TARGET...]        (default: every target)
#   FUZZ_SECONDS   seconds per target                     (default 25)
#   FUZZ_JOBS      targets fuzzed at once                 (default 1)
#   FUZZ_TARGET_DIR  instrumented build, kept between runs
#                  (default $HOME/.cache/order-engine/fuzz-target)
#   FUZZ_WORK_DIR  corpus the runs grow, kept between runs (default $FUZZ_TARGET_DIR/corpus);
#                  the small seed corpus in fuzz/corpus/ is only read
#
# What a fresh machine needs, all installed here if missing: cargo-fuzz
# (from crates.io) and a C++ compiler for libFuzzer (g++, from the machine).
# The stable toolchain is enough: without a sanitizer (`--sanitizer none`;
# the code under test forbids `unsafe`, so AddressSanitizer would mostly
# watch dependencies, at twice the build time) cargo-fuzz passes no `-Z` flag.
# RUSTC_BOOTSTRAP=1 is still set because cargo-fuzz's flags are nightly
# territory in principle, and a future cargo-fuzz may add one.
# Everything runs under `nice -n 19`: the build recompiles every dependency
# with coverage instrumentation, and must not starve the rest of the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-25}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/order-engine/fuzz-target}
FUZZ_WORK_DIR=${FUZZ_WORK_DIR:-$FUZZ_TARGET_DIR/corpus}
# A run that outlives its time by this much is hung, not slow: stop it.
RUN_GRACE_SECS=120
# One input taking longer than this is reported as a hang (libFuzzer -timeout).
INPUT_TIMEOUT_SECS=10
# Memory per target process; the parsers under test hold one input at a time.
RSS_LIMIT_MB=2048
# Longest input tried: submissions and export lines of real size fit in it.
MAX_LEN_BYTES=16384
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  nice -n 19 cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
if ! command -v c++ >/dev/null; then
  echo "installing g++ (libFuzzer is C++)" >&2
  apt-get install -y g++ >/dev/null
fi

# The same flags every time: a different flag set rebuilds everything.
build_started=$(date +%s)
(cd fuzz && nice -n 19 cargo fuzz build --release --debug-assertions --sanitizer none \
  --codegen-units 16 --target-dir "$FUZZ_TARGET_DIR")
build_secs=$(( $(date +%s) - build_started ))
echo "fuzz build: ${build_secs} s (target dir $FUZZ_TARGET_DIR)"

bin_dir="$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_target() { # target
  local target=$1
  local work="$FUZZ_WORK_DIR/$target" artifacts="fuzz/artifacts/$target/"
  local dict="fuzz/dicts/$target.dict" dict_flag=() regressions="fuzz/regressions/$target"
  mkdir -p "$work" "$artifacts"
  [ -f "$dict" ] && dict_flag=("-dict=$dict")
  # Inputs that once failed must pass: each runs once, apart from the
  # fuzzing, so a known failure does not stop the search for new ones.
  local regressions_rc=0
  if [ -d "$regressions" ]; then
    nice -n 19 "$bin_dir/$target" -runs=0 -artifact_prefix="$artifacts" "$regressions" \
      >"$logs/$target.regressions.log" 2>&1 || regressions_rc=$?
  fi
  echo "$regressions_rc" >"$logs/$target.regressions.rc"
  local rc=0
  timeout --kill-after=10 $((FUZZ_SECONDS + RUN_GRACE_SECS)) \
    nice -n 19 "$bin_dir/$target" "$work" "fuzz/corpus/$target" \
    -max_total_time="$FUZZ_SECONDS" -timeout="$INPUT_TIMEOUT_SECS" -rss_limit_mb="$RSS_LIMIT_MB" \
    -max_len="$MAX_LEN_BYTES" -artifact_prefix="$artifacts" -print_final_stats=1 "${dict_flag[@]}" \
    >"$logs/$target.log" 2>&1 || rc=$?
  echo "$rc" >"$logs/$target.rc"
}

started=$(date +%s)
running=0
for target in "${targets[@]}"; do
  [ -x "$bin_dir/$target" ] || { echo "no fuzz target $target in fuzz/" >&2; exit 2; }
  run_target "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$FUZZ_JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
run_secs=$(( $(date +%s) - started ))

failed=0
printf '%-18s %6s %12s %9s %7s %7s %10s\n' target secs runs exec/s cov corpus result
for target in "${targets[@]}"; do
  log="$logs/$target.log"
  rc=$(cat "$logs/$target.rc" 2>/dev/null || echo 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$FUZZ_WORK_DIR/$target" -type f | wc -l)
  result=ok
  if [ "$rc" != 0 ]; then
    result="FAILED($rc)"
    failed=1
  elif [ "$(cat "$logs/$target.regressions.rc")" != 0 ]; then
    result="REGRESSION"
    failed=1
  fi
  printf '%-18s %6s %12s %9s %7s %7s %10s\n' "$target" "${secs:--}" "${runs:--}" "${speed:--}" "${cov:--}" "$corpus" "$result"
done
echo "fuzz run: ${run_secs} s for ${#targets[@]} targets at ${FUZZ_SECONDS} s each, ${FUZZ_JOBS} at once"

if [ "$failed" = 1 ]; then
  for target in "${targets[@]}"; do
    if [ "$(cat "$logs/$target.regressions.rc")" != 0 ]; then
      echo
      echo "== $target fails an input of fuzz/regressions/$target/ =="
      grep -B2 -A3 'panicked at' "$logs/$target.regressions.log" | head -20
    fi
    [ "$(cat "$logs/$target.rc" 2>/dev/null || echo 1)" = 0 ] && continue
    echo
    echo "== $target failed; the end of its log =="
    grep -B2 -A3 'panicked at' "$logs/$target.log" | head -20
    grep -v '^#[0-9]' "$logs/$target.log" | grep -v '^ *\(at \|[0-9]*: \)' | tail -15
    for artifact in "fuzz/artifacts/$target"/*; do
      [ -f "$artifact" ] || continue
      echo "input $artifact (base64): $(base64 -w0 "$artifact" | head -c 4000)"
      echo "replay: $bin_dir/$target $artifact"
    done
  done
  exit 1
fi
