#!/usr/bin/env bash
# Cost of tracing, measured in alternation: two `missive dev` servers of the same binary
# run side by side for the whole measurement, one with OpenTelemetry export off and one
# with it on (traces, metrics and logs to bench/otlp_sink.py). wrk loads one, then the
# other, for DURATION seconds each, ROUNDS times, the order swapped every round; each
# pair gives an on/off ratio, and the median of the ratios is the result.
#
# Why not otel_side_by_side.sh: this machine's speed swings by a third from one minute to
# the next (other tenants), and a server started fresh for every run adds the start-up,
# the sign-up and a cold cache to each. Here the two servers are started, warmed and
# then measured in short turns, so a swing lands on both halves of a pair, and the pairs
# it lands between are the outliers the median drops.
#
# The server under load runs on CPU 1 (both are pinned there; the idle one takes
# nothing), wrk and the sink on CPU 0, as in otel_side_by_side.sh with PIN=1.
#   ROUNDS=40 DURATION=2 bash bench/otel_alternating.sh $CARGO_TARGET_DIR/release/missive
set -euo pipefail
binary=$(realpath "$1")
cd "$(dirname "$0")/.."
DURATION="${DURATION:-2}"
ROUNDS="${ROUNDS:-40}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
. bench/lib.sh

sink_port=$(free_port)
taskset -c 0 python3 bench/otlp_sink.py "$sink_port" &
pids=($!)
work=$(mktemp -d)
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

declare -A port cookie
for mode in off on; do
  port[$mode]=$(free_port)
  endpoint=""
  [ "$mode" = on ] && endpoint="http://127.0.0.1:$sink_port"
  mkdir "$work/$mode"
  (cd "$work/$mode" && PORT=${port[$mode]} DEV_EVENTS_PORT=0 LOG_LEVEL=warn OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
    exec taskset -c 1 "$binary" >dev.log 2>&1) &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${port[$mode]}/healthz" >/dev/null && break; sleep 0.1; done
  cookie[$mode]=$(bench_user "${port[$mode]}")
done

load() {
  COOKIE="${cookie[$1]}" taskset -c 0 wrk -t2 -c32 -d"$2s" -s bench/get.lua \
    "http://127.0.0.1:${port[$1]}/api/messages" | awk '/Requests\/sec/{print $2}'
}
# Warm-up: both servers, once, unmeasured.
load off 2 >/dev/null
load on 2 >/dev/null

results="$work/results"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
  declare -A rps
  for mode in $order; do rps[$mode]=$(load "$mode" "$DURATION"); done
  echo "${rps[off]} ${rps[on]}" >>"$results"
  awk -v r="$round" -v off="${rps[off]}" -v on="${rps[on]}" \
    'BEGIN{printf "round %2d: off %7.0f  on %7.0f req/s  on vs off %+6.1f %%\n", r, off, on, (on/off-1)*100}'
done
python3 - "$results" <<'PY'
import statistics, sys
pairs = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
ratios = sorted(on / off - 1 for off, on in pairs)
n = len(ratios)
q = lambda p: ratios[min(n - 1, int(p * n))] * 100
print(f"median on vs off over {n} pairs: {statistics.median(ratios) * 100:+.1f} % "
      f"(middle half {q(0.25):+.1f} … {q(0.75):+.1f} %); "
      f"median req/s off {statistics.median(p[0] for p in pairs):.0f}, "
      f"on {statistics.median(p[1] for p in pairs):.0f}")
PY
