#!/usr/bin/env bash
# Cost of tracing: GET /api/messages throughput of `missive dev` (SQLite, 32 connections,
# a page of 20 messages) with OpenTelemetry export off and on, side by side, alternating
# off on off on so drift in the machine hits both. "On" exports traces, metrics and logs
# over OTLP/HTTP to a local sink (bench/otlp_sink.py). Optionally a third binary (e.g. one
# built before telemetry existed) runs as "base".
#   bash bench/otel_side_by_side.sh target/release/missive [BASE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sink_port=$(free_port)
python3 bench/otlp_sink.py "$sink_port" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT

run() {
  local label=$1 binary=$2 endpoint=$3 work port dev cookie
  work=$(mktemp -d)
  port=$(free_port)
  (cd "$work" && PORT=$port LOG_LEVEL=warn OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" \
    exec "$binary" >"$work/dev.log" 2>&1) &
  dev=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  cookie=$(curl -si -H 'content-type: application/json' \
    -d '{"username":"bench","password":"benchmark!"}' "http://127.0.0.1:$port/api/auth/signup" \
    | sed -n 's/^set-cookie: \(missive_session=[^;]*\).*/\1/Ip' | tr -d '\r')
  for i in $(seq 1 25); do
    curl -sf -o /dev/null -H "cookie: $cookie" -H 'content-type: application/json' \
      -d "{\"text\":\"message number $i\"}" "http://127.0.0.1:$port/api/messages"
  done
  COOKIE="$cookie" wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/get.lua \
    "http://127.0.0.1:$port/api/messages" \
    | awk -v l="$label" '/Requests\/sec/{rps=$2} /^ +50%/{p50=$2} /^ +99%/{p99=$2} END{printf "%-5s %10s req/s  p50 %-8s p99 %s\n", l, rps, p50, p99}'
  kill "$dev"; wait "$dev" 2>/dev/null || true
  rm -rf "$work"
}

for _ in $(seq 1 "${ROUNDS:-2}"); do
  [ -n "${2:-}" ] && run base "$2" ""
  run off "$1" ""
  run on "$1" "http://127.0.0.1:$sink_port"
done
