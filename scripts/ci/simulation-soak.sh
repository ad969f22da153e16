#!/usr/bin/env bash
# The deterministic simulation on many more seeds than `cargo test` runs: a
# soak for before a release or after a change to the engine's shell. Starts
# from a seed chosen by time (so each soak explores new seeds), prints it,
# and on failure prints each failing seed with the command that replays it.
#
# Usage: scripts/ci/simulation-soak.sh [seeds] [first-seed]
#   seeds       default 50000
#   first-seed  default: seconds since the epoch times 1000
# Bounded by SIM_SOAK_TIMEOUT_S (default 3600).
set -euo pipefail

seeds="${1:-50000}"
start="${2:-$(( $(date +%s) * 1000 ))}"
timeout_s="${SIM_SOAK_TIMEOUT_S:-3600}"

echo "simulation soak: ${seeds} seeds from ${start} (timeout ${timeout_s} s)"
SIM_SEEDS="${seeds}" SIM_SEED_START="${start}" \
  timeout "${timeout_s}" cargo test --locked --test simulation every_seed -- --nocapture
