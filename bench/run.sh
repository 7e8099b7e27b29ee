#!/usr/bin/env bash
# Benchmarks for the budgets of the foundation issue. Not a test: it prints figures.
#   1. every function binary: exec -> first /healthz 200, idle RSS, stripped size
#   2. `missive dev` on SQLite: POST and GET /api/messages, 32 connections, wrk
# Usage: bash bench/run.sh   (DURATION=10 by default, seconds per wrk run)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/missive-target}"
DURATION="${DURATION:-10}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

# BIN_DIR: binaries built elsewhere (the smoke run uses the debug build); else a release
# build of the workspace.
if [ -n "${BIN_DIR:-}" ]; then
  release=$(realpath "$BIN_DIR")
else
  cargo build --release --workspace --quiet
  release="$CARGO_TARGET_DIR/release"
fi

if [ -z "${SKIP_STARTUP:-}" ]; then
  echo "== function binaries (${RUNS:-30} starts each)"
  python3 bench/startup.py "$release" "${RUNS:-30}"
fi

echo
echo "== missive dev on SQLite: 32 connections, ${DURATION}s each, wrk 2 threads"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && PORT=$port DEV_EVENTS_PORT=0 LOG_LEVEL=warn exec "$release/missive" >"$work/dev.log" 2>&1) &
dev=$!
trap 'kill $dev 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
cookie=$(curl -si -H 'content-type: application/json' \
  -d '{"username":"bench","password":"benchmark!"}' "http://127.0.0.1:$port/api/auth/signup" \
  | sed -n 's/^set-cookie: \(missive_session=[^;]*\).*/\1/Ip' | tr -d '\r')
export COOKIE="$cookie"
echo "-- POST /api/messages"
wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/post.lua "http://127.0.0.1:$port/api/messages" \
  | grep -E 'Requests/sec|^ +(50|99)%|Non-2xx|Socket errors'
echo "-- GET /api/messages (first page of 20)"
wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/get.lua "http://127.0.0.1:$port/api/messages" \
  | grep -E 'Requests/sec|^ +(50|99)%|Non-2xx|Socket errors'
echo "RSS of missive dev after the runs: $(awk '/VmRSS/{print $2/1024 " MB"}' /proc/$dev/status)"
