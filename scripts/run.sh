#!/usr/bin/env bash
# Runs the whole app in one process (`missive dev`), building the web app first when it
# is missing or older than its sources (needs Node 20.19+ and npm). Arguments go to
# `missive`, e.g. `bash scripts/run.sh publish --user alice --text hi`.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v npm >/dev/null 2>&1; then
  stale=$(find frontend/src frontend/index.html frontend/package.json frontend/public \
    -newer frontend/dist/index.html 2>/dev/null | head -n 1 || true)
  if [ ! -f frontend/dist/index.html ] || [ -n "$stale" ]; then
    echo "building the web app (frontend/dist)"
    [ -d frontend/node_modules ] || npm --prefix frontend ci --no-audit --no-fund --loglevel=error
    npm --prefix frontend run build --silent
  fi
else
  echo "npm not found: serving the API only (install Node 20 and npm for the web app)" >&2
fi
exec cargo run --release --quiet -- "$@"
