#!/usr/bin/env bash
# Two `missive` builds compared in CPU instructions per request: each serves REQUESTS
# (default 2,000) GET and then POST /api/messages on 4 keep-alive connections under
# callgrind (`missive dev`, SQLite, telemetry export off), and the user-space
# instructions of every thread are added up. Instruction counts do not move with the
# machine's other tenants, so this shows a change of a percent or two that throughput
# pairs (ab_alternating.sh) only show with many rounds; it does not see kernel time,
# cache misses or lock waits, which they do.
#   bash bench/ab_instructions.sh BEFORE/missive AFTER/missive [REQUESTS]
set -euo pipefail
set -- "$(realpath "$1")" "$(realpath "$2")" "${3:-2000}"
cd "$(dirname "$0")/.."
requests=$3
command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
. bench/lib.sh
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# Instructions per request of `binary` for `method`, over every thread.
measure() {
  local label=$1 binary=$2 method=$3 work port dev cookie
  work=$(mktemp -d)
  port=$(free_port)
  (cd "$work" && PORT=$port DEV_EVENTS_PORT=0 LOG_LEVEL=warn \
    exec valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$work/cg.out" "$binary" >"$work/dev.log" 2>"$work/valgrind.log") &
  dev=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  cookie=$(bench_user "$port")
  # Warm up (caches, pools, lazily built parts), then count only the load.
  keepalive_load "$port" "$cookie" "$method" 200 1
  sleep 2
  callgrind_control -i on "$dev" >/dev/null 2>&1
  keepalive_load "$port" "$cookie" "$method" "$requests" 4
  # Let the events the load published be handled (activity log) within the count.
  sleep 2
  callgrind_control -d "$dev" >/dev/null 2>&1
  callgrind_control -i off "$dev" >/dev/null 2>&1
  kill "$dev"; wait "$dev" 2>/dev/null || true
  python3 - "$label" "$method" "$requests" "$work" "$results" <<'PY'
import glob, re, sys
label, method, requests, work, results = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
total = sum(int(re.search(r"^totals: (\d+)", open(p).read(), re.M).group(1))
            for p in glob.glob(f"{work}/cg.out.1-*"))
print(f"{label:6} {method:4} {total / requests / 1000:7.1f}k instructions per request")
with open(results, "a") as f:
    f.write(f"{label} {method} {total / requests}\n")
PY
  rm -rf "$work"
}

for method in GET POST; do
  measure before "$1" "$method"
  measure after "$2" "$method"
done
python3 - "$results" <<'PY'
import sys
per = {}
for line in open(sys.argv[1]):
    label, method, value = line.split()
    per[(label, method)] = float(value)
for method in ("GET", "POST"):
    before, after = per[("before", method)], per[("after", method)]
    print(f"{method}: after vs before {(after / before - 1) * 100:+.1f} % instructions per request")
PY
