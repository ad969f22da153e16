#!/usr/bin/env bash
# The long fuzz run: every target (or those named) for 10 minutes, two at a
# time, with the same build, corpus and report as CI's short run.
#
# Usage: scripts/fuzz-long.sh [TARGET...]
#   FUZZ_SECONDS (default 600) and FUZZ_JOBS (default 2) as in scripts/ci/fuzz.sh,
#   which this runs; six targets take about 30 minutes plus the build.
set -euo pipefail
export FUZZ_SECONDS=${FUZZ_SECONDS:-600}
export FUZZ_JOBS=${FUZZ_JOBS:-2}
exec "$(dirname "$0")/ci/fuzz.sh" "$@"
