#!/usr/bin/env bash
# Two `missive` builds in alternation, for "costs under N % of throughput" budgets: a
# server of each runs side by side for the whole measurement (SQLite, in-process stores),
# and wrk loads one, then the other, for DURATION seconds each, ROUNDS times per request
# (GET and POST /api/messages, 32 connections), the order swapped every round. Each pair
# gives a B/A ratio; the medians are the result. Same method as otel_alternating.sh: the
# machine's speed swings land on both halves of a pair. Each load also gives the server's
# own CPU time per request (from /proc), which time stolen by the machine's other tenants
# does not inflate: on a noisy machine the steadier of the two measures.
#
# Servers on CPU 1, wrk on CPU 0. With BACKEND=mariadb both run on MariaDB + Redis
# (MISSIVE_TEST_DATABASE_URL, MISSIVE_TEST_REDIS_URL), each on a database of its own.
#   ROUNDS=20 DURATION=2 bash bench/ab_alternating.sh BEFORE/missive AFTER/missive
set -euo pipefail
set -- "$(realpath "$1")" "$(realpath "$2")"
cd "$(dirname "$0")/.."
DURATION="${DURATION:-2}"
ROUNDS="${ROUNDS:-20}"
BACKEND="${BACKEND:-sqlite}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
. bench/lib.sh

declare -A binary=([a]=$1 [b]=$2) port cookie pid
pids=()
work=$(mktemp -d)
databases=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  for db in "${databases[@]}"; do bash scripts/mariadb.sh -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for side in a b; do
  port[$side]=$(free_port)
  mkdir "$work/$side"
  env=(PORT="${port[$side]}" DEV_EVENTS_PORT=0 LOG_LEVEL=warn)
  if [ "$BACKEND" = mariadb ]; then
    db="missive_bench_ab_${side}_$$"
    databases+=("$db")
    server="${MISSIVE_TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}"
    env+=(DATABASE_URL="${server%/}/$db" REDIS_URL="${MISSIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
      REDIS_KEY_PREFIX="$db:")
  fi
  (cd "$work/$side" && exec env "${env[@]}" taskset -c 1 "${binary[$side]}" >dev.log 2>&1) &
  pids+=($!)
  pid[$side]=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${port[$side]}/healthz" >/dev/null && break; sleep 0.1; done
  cookie[$side]=$(bench_user "${port[$side]}")
done

# CPU time (user + system, clock ticks) the server of side $1 has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }

# Loads side $1 with request $2 for $3 seconds; prints its req/s and the server's CPU
# microseconds per request (its own time, which the machine's other tenants do not
# inflate: stolen time is not counted).
load() {
  local before after
  before=$(cpu_ticks "$1")
  COOKIE="${cookie[$1]}" taskset -c 0 wrk -t2 -c32 -d"$3s" -s "bench/$2.lua" \
    "http://127.0.0.1:${port[$1]}/api/messages" >"$work/wrk.out"
  after=$(cpu_ticks "$1")
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {requests = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s %.1f\n", rps, ticks / hz * 1e6 / requests}' "$work/wrk.out"
}

for request in get post; do
  load a "$request" 2 >/dev/null
  load b "$request" 2 >/dev/null
  results="$work/$request"
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
    declare -A measured
    for side in $order; do measured[$side]=$(load "$side" "$request" "$DURATION"); done
    echo "${measured[a]} ${measured[b]}" >>"$results"
  done
  python3 - "$results" "${request^^}" "$BACKEND" <<'PY'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
def summary(a_of, b_of, what):
    ratios = sorted(b_of(r) / a_of(r) - 1 for r in rows)
    n = len(ratios)
    q = lambda p: ratios[min(n - 1, int(p * n))] * 100
    return (f"{what} B vs A median {statistics.median(ratios) * 100:+.1f} % over {n} pairs "
            f"(middle half {q(0.25):+.1f} … {q(0.75):+.1f} %)")
print(f"{sys.argv[2]} ({sys.argv[3]}): " + summary(lambda r: r[0], lambda r: r[2], "req/s") +
      f"; median req/s A {statistics.median(r[0] for r in rows):.0f}, B {statistics.median(r[2] for r in rows):.0f}")
print(f"{sys.argv[2]} ({sys.argv[3]}): " + summary(lambda r: r[1], lambda r: r[3], "CPU per request") +
      f"; median µs A {statistics.median(r[1] for r in rows):.1f}, B {statistics.median(r[3] for r in rows):.1f}")
PY
done
