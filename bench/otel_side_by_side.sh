#!/usr/bin/env bash
# Cost of tracing: GET /api/messages throughput of `missive dev` (SQLite, 32 connections,
# a page of 20 messages) with OpenTelemetry export off and on, side by side: rounds of
# "off" then "on", each on a fresh server, and the median of the rounds' on/off ratios.
# This machine's speed swings by a third from one minute to the next (other tenants),
# so only the pairs, run seconds apart, are compared, and the median discards the rounds
# a swing landed in. "On" exports traces, metrics and logs over OTLP/HTTP to a local sink
# (bench/otlp_sink.py). Optionally a third binary (e.g. one built before telemetry
# existed) runs as "base" in each round.
#   ROUNDS=10 DURATION=5 bash bench/otel_side_by_side.sh $CARGO_TARGET_DIR/release/missive [BASE_BINARY]
# With DATABASE_URL and REDIS_URL set, `missive dev` runs on MariaDB and Redis instead of
# SQLite (the bench user signs up once, then logs in).
# Each line also gives the server's CPU time per request (all its threads, from /proc)
# and the sink's CPU time. PIN=1 runs the server on CPU 1 and wrk and the sink on CPU 0:
# the server (exporter threads included) then has one core of its own, as a function's
# pod has its CPU limit, and neither the load generator nor the stand-in collector takes
# CPU from it.
set -euo pipefail
# The binaries as given, resolved before the cd below.
set -- "$(realpath "$1")" ${2:+"$(realpath "$2")"}
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-10}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
. bench/lib.sh
# CPU time (user + system) of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
server_cpu=() client_cpu=()
if [ -n "${PIN:-}" ]; then server_cpu=(taskset -c 1); client_cpu=(taskset -c 0); fi

sink_port=$(free_port)
${client_cpu[@]+"${client_cpu[@]}"} python3 bench/otlp_sink.py "$sink_port" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
results=$(mktemp)

run() {
  local label=$1 binary=$2 endpoint=$3 work port dev cookie server0 sink0 rps
  work=$(mktemp -d)
  port=$(free_port)
  (cd "$work" && PORT=$port DEV_EVENTS_PORT=0 LOG_LEVEL=warn OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
    exec ${server_cpu[@]+"${server_cpu[@]}"} "$binary" >"$work/dev.log" 2>&1) &
  dev=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  cookie=$(bench_user "$port")
  server0=$(ticks "$dev"); sink0=$(ticks "$sink")
  COOKIE="$cookie" ${client_cpu[@]+"${client_cpu[@]}"} wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/get.lua \
    "http://127.0.0.1:$port/api/messages" >"$work/wrk.txt"
  rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.txt")
  awk -v l="$label" -v rps="$rps" -v d="$DURATION" -v hz="$hz" \
    -v server=$(( $(ticks "$dev") - server0 )) -v sink=$(( $(ticks "$sink") - sink0 )) '
    /^ +50%/{p50=$2} /^ +99%/{p99=$2}
    END{printf "%-5s %10.0f req/s  p50 %-8s p99 %-8s server %5.1f us/req  sink %4.2f cpu-s\n",
        l, rps, p50, p99, server / hz * 1e6 / (rps * d), sink / hz}' "$work/wrk.txt"
  echo "$label $rps" >>"$results"
  kill "$dev"; wait "$dev" 2>/dev/null || true
  rm -rf "$work"
}

for round in $(seq 1 "$ROUNDS"); do
  [ -n "${2:-}" ] && run base "$2" ""
  run off "$1" ""
  run on "$1" "http://127.0.0.1:$sink_port"
  awk -v r="$round" '$1=="off"{off=$2} $1=="on"{on=$2} END{printf "round %d: on vs off %+.1f %%\n", r, (on/off-1)*100}' \
    <(tail -n 2 "$results")
done
# The median of the rounds' ratios (and of base vs off, with a base binary).
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
by = {}
for label, rps in rows:
    by.setdefault(label, []).append(float(rps))
on_off = [on / off - 1 for on, off in zip(by["on"], by["off"])]
print(f"median on vs off over {len(on_off)} rounds: {statistics.median(on_off) * 100:+.1f} % "
      f"(rounds from {min(on_off) * 100:+.1f} to {max(on_off) * 100:+.1f} %)")
if "base" in by:
    off_base = [off / base - 1 for off, base in zip(by["off"], by["base"])]
    print(f"median off vs base: {statistics.median(off_base) * 100:+.1f} %")
PY
rm -f "$results"
