#!/usr/bin/env bash
# The whole test suite: formatting, lints, static checks of the observability config and
# of the deployment, the
# web app (build, unit tests, end-to-end in Chromium), then every Rust test on both
# backends (embedded SQLite + in-process store, and MariaDB + Redis + Kafka). Installs and
# starts what it needs first (scripts/setup.sh); point it elsewhere with
# MISSIVE_TEST_DATABASE_URL, MISSIVE_TEST_REDIS_URL and MISSIVE_TEST_KAFKA_BROKERS.
set -euo pipefail
cd "$(dirname "$0")/.."

# Install and start what the tests need (fast when everything is already there).
[ "${MISSIVE_SKIP_SETUP:-}" = 1 ] || bash scripts/setup.sh

export MISSIVE_TEST_DATABASE_URL="${MISSIVE_TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}"
export MISSIVE_TEST_REDIS_URL="${MISSIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export MISSIVE_TEST_KAFKA_BROKERS="${MISSIVE_TEST_KAFKA_BROKERS:-127.0.0.1:9092}"

# Databases that tests left behind (a test process killed before its clean-up ran):
# only those whose tables are over an hour old, so a concurrent run keeps its own.
if command -v mariadb >/dev/null 2>&1; then
  bash scripts/mariadb.sh -N -e \
    "SELECT table_schema FROM information_schema.tables WHERE table_schema LIKE 'missive\_test\_%'
     GROUP BY table_schema HAVING MAX(create_time) < NOW() - INTERVAL 1 HOUR" 2>/dev/null \
    | while read -r db; do bash scripts/mariadb.sh -e "DROP DATABASE \`$db\`"; done || true
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The `aws` feature (in the release images only): its code and tests, linted too.
cargo clippy -p missive-adapters -p missive-app --all-targets --features missive-app/aws -- -D warnings
python3 scripts/check_observability.py
# The deployment (manifests, Terraform, Dockerfile, workflows): tools from
# scripts/deploy-tools.sh.
"${MISSIVE_TOOLS:-$HOME/.cache/missive-tools}/venv/bin/python" scripts/check_deploy.py
"${MISSIVE_TOOLS:-$HOME/.cache/missive-tools}/venv/bin/python" -m unittest scripts/test_check_deploy.py

# The web app: type-check and build (warnings fail), size budget, unit tests, then the
# end-to-end suite in Chromium against a real `missive dev` serving the build.
(
  cd frontend
  npm ci --no-audit --no-fund --loglevel=error
  build_log=$(npm run build 2>&1) || { echo "$build_log"; exit 1; }
  echo "$build_log" | tail -n 3
  if echo "$build_log" | grep -qiE '\bwarn(ing)?\b'; then echo "$build_log"; echo "frontend build has warnings" >&2; exit 1; fi
  node scripts/size.mjs
  npm test
)
# Every binary: the e2e suite runs `missive`, the runtime-contract tests every function.
cargo build --workspace --bins --quiet
# The web app's API types must be what the server's OpenAPI document says.
MISSIVE_BIN="${CARGO_TARGET_DIR:-target}/debug/missive" bash frontend/scripts/api-types.sh --check
MISSIVE_BIN="${CARGO_TARGET_DIR:-target}/debug/missive" node frontend/tests/e2e/run.mjs
# The API contract from outside: schemathesis against `missive dev`, every check and
# phase, the fixed seed (SCHEMATHESIS_SEED=random for a new one).
MISSIVE_BIN="${CARGO_TARGET_DIR:-target}/debug/missive" bash scripts/schemathesis.sh
# The images' statically linked binaries resolve the backends through DNS.
bash scripts/check_static_dns.sh
# Every benchmark script runs as documented (tiny settings, debug build; no figures).
bash bench/smoke.sh

cargo nextest run --workspace --no-fail-fast
# Credentials from AWS, offline: SigV4 golden vectors, a fake Secrets Manager in front of
# the real MariaDB and Redis (rotation), token renewal with short lifetimes.
cargo nextest run -p missive-adapters --features aws --no-fail-fast
