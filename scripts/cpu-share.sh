#!/usr/bin/env bash
# CPU seconds each party of a benchmark used over a window: the engine, the
# load generator, PostgreSQL (every postgres process) and RabbitMQ (beam.smp),
# read from /proc at the start and end of the window. Run it beside a load
# (e.g. 5 s into `scripts/e2e-bench.sh true max 20 TAG`) to see which party
# bounds the figure: divide each by the orders the window completed.
#
# Usage: scripts/cpu-share.sh SECONDS     prints one JSON line
# Processes that start inside the window count from zero; ones that exit
# inside it are missed (the engine opens no connections in steady state).
set -euo pipefail
WINDOW=${1:?usage: scripts/cpu-share.sh SECONDS}
TICKS=$(getconf CLK_TCK)

snapshot() { # -> lines "party pid ticks"
  for stat in /proc/[0-9]*/stat; do
    pid=${stat#/proc/}; pid=${pid%/stat}
    { read -r comm < "/proc/$pid/comm"; } 2>/dev/null || continue
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
    case "$comm:$cmd" in
      postgres:*) party=postgres ;;
      beam.smp:*) party=rabbitmq ;;
      *"order-engine serve"*|*"oe-"*" serve"*) party=engine ;;
      *"loadgen"*) party=loadgen ;;
      *) continue ;;
    esac
    # Fields 14 and 15 (utime, stime); the command name in field 2 may hold spaces.
    rest=$(sed 's/^.*) //' "$stat" 2>/dev/null) || continue
    set -- $rest
    echo "$party $pid $(( ${12} + ${13} ))"
  done
}

before=$(snapshot)
cores_busy_before=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
sleep "$WINDOW"
after=$(snapshot)
cores_busy_after=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)

python3 - "$TICKS" "$WINDOW" "$cores_busy_before" "$cores_busy_after" <<EOF
import json, sys
ticks, window = int(sys.argv[1]), float(sys.argv[2])
busy0, idle0 = map(int, sys.argv[3].split())
busy1, idle1 = map(int, sys.argv[4].split())
def parse(text):
    out = {}
    for line in text.strip().splitlines():
        party, pid, t = line.split()
        out[(party, pid)] = int(t)
    return out
before, after = parse("""$before"""), parse("""$after""")
used = {}
for key, t in after.items():
    used[key[0]] = used.get(key[0], 0) + t - before.get(key, 0)
result = {party: round(t / ticks, 2) for party, t in sorted(used.items())}
result["window_s"] = window
result["machine_busy_fraction"] = round((busy1 - busy0) / max(1, (busy1 - busy0) + (idle1 - idle0)), 3)
print(json.dumps(result))
EOF
