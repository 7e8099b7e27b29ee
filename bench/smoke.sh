#!/usr/bin/env bash
# Every benchmark script once, with tiny settings, on the debug build: not figures (the
# machine is busy and the build unoptimised), only proof that each documented command
# still runs as written. The test command runs this; a script that fails fails CI.
# Needs MariaDB, Redis and Kafka, as the tests do, and `cargo build --workspace --bins`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/missive-target}"
debug="$CARGO_TARGET_DIR/debug"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() {
  local name=$1
  shift
  local started=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "ok   bench: $name ($((SECONDS - started)) s)"
  else
    echo "FAIL bench: $name" >&2
    cat "$log" >&2
    exit 1
  fi
}

step run.sh env BIN_DIR="$debug" RUNS=2 DURATION=1 bash bench/run.sh
step startup.py python3 bench/startup.py "$debug" 2
step "startup.py --readyz" python3 bench/startup.py --readyz "$debug" 2
step compare.sh env ROUNDS=1 DURATION=1 RUNS=2 bash bench/compare.sh "$debug" "$debug"
step post_side_by_side.sh env DURATION=1 bash bench/post_side_by_side.sh "$debug/missive" "$debug/missive"
step otel_side_by_side.sh env ROUNDS=1 DURATION=1 bash bench/otel_side_by_side.sh "$debug/missive"
step otel_alternating.sh env ROUNDS=2 DURATION=1 bash bench/otel_alternating.sh "$debug/missive"
step otel_instructions.sh bash bench/otel_instructions.sh "$debug/missive" 40
step image_size.sh env BIN_DIR="$debug" bash bench/image_size.sh
step rss_under_load.sh env DURATION=1 bash bench/rss_under_load.sh "$debug"
step ingest.py python3 bench/ingest.py "$debug/missive" 200 100 2
step ab_alternating.sh env ROUNDS=2 DURATION=1 bash bench/ab_alternating.sh "$debug/missive" "$debug/missive"
step ab_instructions.sh bash bench/ab_instructions.sh "$debug/missive" "$debug/missive" 40
step login_flood.py python3 bench/login_flood.py "$debug/missive" 20 2
step soak.py env INTERVAL=2 python3 bench/soak.py "$debug/missive" 4 50
echo "bench: every script ran"
