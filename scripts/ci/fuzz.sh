#!/usr/bin/env bash
# Fuzzes every parser of outside input (the libFuzzer targets in fuzz/) for a
# bounded time and prints, per target: runs, exec/s, coverage and corpus size.
# Exits non-zero when a target crashes or fails an assertion, or when an input
# of fuzz/regressions/ fails again; the input that did it is kept under
# fuzz/artifacts/<target>/ and printed in base64.
#
# Usage: scripts/ci/fuzz.sh [TARGET...]        (default: every target)
#   FUZZ_SECONDS   seconds per target                     (default 20)
#   FUZZ_JOBS      targets fuzzed at once                 (default 1)
#   FUZZ_BUILD     short (default) or long: which build, see below
#   FUZZ_TARGET_DIR  instrumented builds, kept between runs
#                  (default $HOME/.cache/order-engine/fuzz-target)
#   FUZZ_WORK_DIR  corpus the runs grow, kept between runs (default $FUZZ_TARGET_DIR/corpus);
#                  the small seed corpus in fuzz/corpus/ is only read
#   CARGO_BUILD_JOBS  cargo's -j for the build (default: every core)
#
# `.ci/run` calls this as its last step: the short build, then every target
# for FUZZ_SECONDS=20, two at once. Cold (fresh target dir, no cargo-fuzz
# installed) the build measured 300-370 CPU-seconds (user+sys; the more on a
# loaded machine), i.e. about 2.5 to 3 minutes of wall on 2 idle cores, and
# the runs take 65 s: the step fits the ~5 minutes a cold CI has left. Warm
# (nothing changed) the build is a no-op and the step is the runs alone.
# scripts/fuzz-long.sh runs the long build for 10 minutes per target.
#
# The two builds are profiles of fuzz/Cargo.toml (the why of each is there):
#   short  (profile fuzz-short): opt-level 0, no debug info, debug
#          assertions on; cheapest cold build, 300-370 CPU-seconds, and
#          ~800 (jwt_verify) to ~17,000 (http_submit_body) inputs per
#          CPU-second, 4,000-6,000 for the others.
#   long   (profile fuzz-long):  opt-level 3 with debug assertions and line
#          tables, as `cargo fuzz build --release --debug-assertions` gives;
#          ~940 CPU-seconds cold (measured when it was CI's build; its
#          speed was not measured beside the others, but opt-level 1 alone,
#          ~650 CPU-seconds cold, already runs 10-15x the short build's
#          inputs per CPU-second, which ten minutes per target repay).
#
# cargo-fuzz itself is not needed: this script runs the `cargo build` that
# `cargo fuzz build --sanitizer none` (0.13.2) runs, with the same RUSTFLAGS,
# so a cold machine saves installing it (~63 CPU-seconds) and the flags are
# pinned here rather than by whichever cargo-fuzz is installed. Without a
# sanitizer (the code under test forbids `unsafe`, so AddressSanitizer would
# mostly watch dependencies, at twice the build time) no `-Z` flag is passed:
# the stable toolchain is enough. A fresh machine needs only a C++ compiler
# for libFuzzer (g++, installed here if missing). `cargo fuzz run`, `tmin`
# and `cmin` by hand still work on fuzz/ as on any cargo-fuzz crate.
# Everything runs under `nice -n 19`: the build recompiles every dependency
# with coverage instrumentation, and must not starve the rest of the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_BUILD=${FUZZ_BUILD:-short}
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
export CARGO_TERM_COLOR=never

case "$FUZZ_BUILD" in
  short | long) profile="fuzz-$FUZZ_BUILD" ;;
  *) echo "FUZZ_BUILD is short or long, not $FUZZ_BUILD" >&2; exit 2 ;;
esac
if ! command -v c++ >/dev/null; then
  echo "installing g++ (libFuzzer is C++)" >&2
  apt-get install -y g++ >/dev/null
fi

# What `cargo fuzz build --sanitizer none` 0.13.2 passes (src/project.rs,
# `Project::cargo`): SanitizerCoverage with inline 8-bit counters, the PC
# table and compare tracing (libFuzzer's feedback), `--cfg fuzzing`, no
# branch folding, stack depth tracing. Debug assertions, codegen units and
# debug info come from the profile instead of -C flags, so both builds take
# the same RUSTFLAGS. Changing them rebuilds everything.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
# An explicit --target, as cargo-fuzz passes: RUSTFLAGS then reach only the
# target's code, not build scripts and proc macros, which cannot link the
# coverage hooks.
triple=$(rustc -vV | sed -n 's/^host: //p')

# User+sys CPU-seconds of this shell's waited-for children so far (cutime and
# cstime of /proc/PID/stat; `times` would report the $(...) subshell's own).
# CPU-seconds, not wall, are what compare across loaded and idle machines.
cpu_secs() {
  cut -d')' -f2 "/proc/$$/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) / hz }'
}
build_started=$(date +%s)
build_cpu_before=$(cpu_secs)
# --locked: the fuzz crate must build the versions the engine locks. When
# this fails after a dependency change, refresh fuzz/Cargo.lock from the
# engine's: `cp Cargo.lock fuzz/ && cargo fetch --manifest-path fuzz/Cargo.toml`.
nice -n 19 cargo build --locked --manifest-path fuzz/Cargo.toml --profile "$profile" \
  --target "$triple" --bins --target-dir "$FUZZ_TARGET_DIR"
echo "fuzz build ($FUZZ_BUILD): $(( $(date +%s) - build_started )) s wall, $(( $(cpu_secs) - build_cpu_before )) CPU-s (target dir $FUZZ_TARGET_DIR)"

bin_dir="$FUZZ_TARGET_DIR/$triple/$profile"
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//')
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
