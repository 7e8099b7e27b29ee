#!/usr/bin/env bash
# Cost of tracing in CPU instructions: `missive dev` (SQLite) serves 2,000 GET
# /api/messages (4 keep-alive connections) under callgrind, with OpenTelemetry export off
# and on (traces, metrics and logs to bench/otlp_sink.py), and prints the user-space
# instructions per request of each, by thread. Unlike throughput, instruction counts do
# not move with the other tenants of the machine: the same binary gives the same figures
# to a fraction of a percent, so this is the measure to compare two builds with. It does
# not see kernel time, cache misses or lock waits, which the side-by-side throughput
# benchmark (otel_side_by_side.sh) does.
#   bash bench/otel_instructions.sh $CARGO_TARGET_DIR/profiling/missive [REQUESTS]
set -euo pipefail
binary=$(realpath "$1")
cd "$(dirname "$0")/.."
requests="${2:-2000}"
command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
. bench/lib.sh

sink_port=$(free_port)
python3 bench/otlp_sink.py "$sink_port" >/dev/null &
sink=$!
results=$(mktemp)
trap 'kill $sink 2>/dev/null || true; rm -f "$results"' EXIT

measure() {
  local label=$1 endpoint=$2 work port dev cookie
  work=$(mktemp -d)
  port=$(free_port)
  (cd "$work" && PORT=$port DEV_EVENTS_PORT=0 LOG_LEVEL=warn OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
    exec valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$work/cg.out" "$binary" >"$work/dev.log" 2>"$work/valgrind.log") &
  dev=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  cookie=$(bench_user "$port")
  # Warm up (caches, lazily built clients, a first export), then count only the load.
  keepalive_load "$port" "$cookie" GET 200 1
  sleep 6
  callgrind_control -i on "$dev" >/dev/null 2>&1
  keepalive_load "$port" "$cookie" GET "$requests" 4
  callgrind_control -d "$dev" >/dev/null 2>&1
  callgrind_control -i off "$dev" >/dev/null 2>&1
  kill "$dev"; wait "$dev" 2>/dev/null || true
  # One file per thread; the dump taken after the load is the second part (cg.out.1-*).
  python3 - "$label" "$requests" "$work" "$results" <<'PY'
import glob, re, sys
label, requests, work, results = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
total, threads = 0, {}
for path in glob.glob(f"{work}/cg.out.1-*"):
    text = open(path).read()
    count = int(re.search(r"^totals: (\d+)", text, re.M).group(1))
    total += count
    if count > requests * 500:
        threads[path.rsplit("-", 1)[1]] = count
parts = ", ".join(f"thread {t}: {c / requests / 1000:.1f}k" for t, c in sorted(threads.items()))
print(f"{label:4} {total / requests / 1000:7.1f}k instructions per request  ({parts})")
with open(results, "a") as f:
    f.write(f"{label} {total / requests}\n")
PY
  rm -rf "$work"
}

measure off ""
measure on "http://127.0.0.1:$sink_port"
python3 - "$results" <<'PY'
import sys
per = dict(line.split() for line in open(sys.argv[1]))
off, on = float(per["off"]), float(per["on"])
print(f"on vs off: {(on / off - 1) * 100:+.1f} % instructions per request")
PY
