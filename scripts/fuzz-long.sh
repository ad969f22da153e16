#!/usr/bin/env bash
# The long fuzz run: every target (or those named) for 10 minutes, two at a
# time, with the same corpus and report as CI's short run (scripts/ci/fuzz.sh)
# but the optimized build (FUZZ_BUILD=long, profile fuzz-long in fuzz/Cargo.toml).
#
# Usage: scripts/fuzz-long.sh [TARGET...]
#   FUZZ_SECONDS (default 600) and FUZZ_JOBS (default 2) as in scripts/ci/fuzz.sh,
#   which this runs; six targets take about 30 minutes plus the build.
set -euo pipefail
export FUZZ_SECONDS=${FUZZ_SECONDS:-600}
export FUZZ_JOBS=${FUZZ_JOBS:-2}
# The optimized build: ten minutes per target repay its dearer cold build.
export FUZZ_BUILD=${FUZZ_BUILD:-long}
exec "$(dirname "$0")/ci/fuzz.sh" "$@"
