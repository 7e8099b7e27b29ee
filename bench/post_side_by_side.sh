#!/usr/bin/env bash
# POST /api/messages throughput of two `missive` binaries, side by side, on the same
# machine and setup (missive dev, SQLite, in-process bus, 32 connections), alternating
# A B A B so drift in the machine hits both. Used for the outbox overhead:
#   git worktree add /tmp/pre-outbox <commit before the outbox>
#   (cd /tmp/pre-outbox && cargo build --release -p missive) && cp .../release/missive /tmp/missive-pre-outbox
#   bash bench/post_side_by_side.sh /tmp/missive-pre-outbox $CARGO_TARGET_DIR/release/missive
set -euo pipefail
# The binaries as given, resolved before the cd below.
set -- "$(realpath "$1")" "$(realpath "$2")"
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

run() {
  local binary=$1 work port dev cookie
  work=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  (cd "$work" && PORT=$port DEV_EVENTS_PORT=0 LOG_LEVEL=warn exec "$binary" >"$work/dev.log" 2>&1) &
  dev=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  cookie=$(curl -si -H 'content-type: application/json' \
    -d '{"username":"bench","password":"benchmark!"}' "http://127.0.0.1:$port/api/auth/signup" \
    | sed -n 's/^set-cookie: \(missive_session=[^;]*\).*/\1/Ip' | tr -d '\r')
  COOKIE="$cookie" wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/post.lua \
    "http://127.0.0.1:$port/api/messages" | awk -v b="$binary" '/Requests\/sec/{rps=$2} /^ +99%/{p99=$2} END{printf "%-40s %10s req/s  p99 %s\n", b, rps, p99}'
  kill "$dev"; wait "$dev" 2>/dev/null || true
  rm -rf "$work"
}

for _ in 1 2; do
  run "$1"
  run "$2"
done
