#!/usr/bin/env bash
# The web app's API types (src/api/schema.d.ts) are generated from the server's OpenAPI
# document, so a change to a Rust DTO reaches the TypeScript compiler:
#   bash frontend/scripts/api-types.sh          regenerate
#   bash frontend/scripts/api-types.sh --check  fail if the committed file is stale (CI)
# Needs the `missive` binary (MISSIVE_BIN, default: cargo's debug build) and
# `npm ci` in frontend/.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${MISSIVE_BIN:-${CARGO_TARGET_DIR:-../target}/debug/missive}"
out=src/api/schema.d.ts
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$bin" openapi >"$tmp/openapi.json"
npx --no-install openapi-typescript "$tmp/openapi.json" --output "$tmp/schema.d.ts" >/dev/null
{
  echo "// Generated from GET /api/openapi.json by scripts/api-types.sh; do not edit."
  echo "// CI fails when this file is stale: run \`bash frontend/scripts/api-types.sh\`."
  cat "$tmp/schema.d.ts"
} >"$tmp/with-header.d.ts"

if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$out" "$tmp/with-header.d.ts"; then
    echo "frontend/$out is stale: run bash frontend/scripts/api-types.sh" >&2
    exit 1
  fi
  echo "api types: frontend/$out matches the OpenAPI document"
else
  cp "$tmp/with-header.d.ts" "$out"
  echo "api types: wrote frontend/$out"
fi
