#!/usr/bin/env bash
# Two builds side by side on every budget a refactoring must hold: cold start, idle RSS
# and stripped size of each function binary (bench/startup.py), then `missive dev`
# throughput of POST and GET /api/messages on SQLite and on MariaDB + Redis.
#   bash bench/compare.sh BEFORE_DIR AFTER_DIR
# Each DIR holds release binaries (`missive` and every function), e.g. copied from
# $CARGO_TARGET_DIR/release after `cargo build --release --workspace` at two commits. Throughput
# runs alternate A B, then B A, ROUNDS times (default 3) with a fresh server and
# database each, so the machine's drift lands on both; medians are printed.
# DURATION (default 5) is seconds per wrk run; RUNS (default 20) starts per binary (0: no
# start-up part, throughput only).
set -euo pipefail
# The directories as given, resolved before the cd below.
set -- "$(realpath "$1")" "$(realpath "$2")"
cd "$(dirname "$0")/.."
. bench/lib.sh
before=$1 after=$2
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" RUNS="${RUNS:-20}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

# RUNS=0 compares throughput only; the DIRs then need only `missive`.
if [ "$RUNS" -gt 0 ]; then
  for dir in "$before" "$after"; do
    echo "== function binaries in $dir ($RUNS starts each)"
    python3 bench/startup.py "$dir" "$RUNS"
  done
fi

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One server on a fresh database: prints "<backend> <POST req/s> <GET req/s>".
run() {
  local binary=$1 backend=$2 work port dev cookie db env post get
  work=$(mktemp -d)
  port=$(free_port)
  env=(PORT="$port" DEV_EVENTS_PORT=0 LOG_LEVEL=warn)
  if [ "$backend" = mariadb ]; then
    db="missive_compare_$$_$RANDOM"
    env+=(DATABASE_URL="${MISSIVE_TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}/$db"
      REDIS_URL="${MISSIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
      REDIS_KEY_PREFIX="compare:$db:")
  fi
  (cd "$work" && exec env "${env[@]}" "$binary" >"$work/dev.log" 2>&1) &
  dev=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  cookie=$(bench_user "$port")
  post=$(COOKIE="$cookie" wrk -t2 -c32 -d"${DURATION}s" -s bench/post.lua \
    "http://127.0.0.1:$port/api/messages" | awk '/Requests\/sec/{print $2}')
  get=$(COOKIE="$cookie" wrk -t2 -c32 -d"${DURATION}s" -s bench/get.lua \
    "http://127.0.0.1:$port/api/messages" | awk '/Requests\/sec/{print $2}')
  kill "$dev"; wait "$dev" 2>/dev/null || true
  if [ "$backend" = mariadb ]; then
    bash scripts/mariadb.sh -e "DROP DATABASE IF EXISTS \`$db\`"
  fi
  rm -rf "$work"
  echo "$post $get"
}

for backend in sqlite mariadb; do
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order=(before after); else order=(after before); fi
    for which in "${order[@]}"; do
      dir=$before; [ "$which" = after ] && dir=$after
      echo "$backend $which $(run "$dir/missive" "$backend")" | tee -a "$results"
    done
  done
done

echo
echo "== medians over $ROUNDS rounds (req/s, 32 connections, ${DURATION}s each)"
python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
for backend in ("sqlite", "mariadb"):
    for i, name in ((2, "POST"), (3, "GET")):
        med = {w: statistics.median(float(r[i]) for r in rows if r[0] == backend and r[1] == w)
               for w in ("before", "after")}
        print(f"{backend:8} {name:5} before {med['before']:8.0f}  after {med['after']:8.0f}  "
              f"({(med['after'] / med['before'] - 1) * 100:+.1f} %)")
PY
