#!/usr/bin/env bash
# The API contract, checked from outside: schemathesis (PyPI) fuzzes `missive dev`
# through GET /api/openapi.json with every check and every phase (examples, coverage,
# fuzzing, stateful), signed in as a user of its own. Zero failures is the bar; CI runs
# it with a fixed seed (scripts/test.sh), so a failure reproduces.
#
#   bash scripts/schemathesis.sh install         install schemathesis (idempotent)
#   bash scripts/schemathesis.sh                 run with the CI seed
#   SCHEMATHESIS_SEED=random bash scripts/schemathesis.sh
#                                                run with a new random seed (printed)
#   SCHEMATHESIS_MAX_EXAMPLES=500 bash ...       more cases per operation (default 60)
#
# The server is the debug `missive` (MISSIVE_BIN to choose another) on the embedded
# backends, in a temporary directory; set DATABASE_URL, REDIS_URL and KAFKA_BROKERS to
# fuzz it on the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
TOOLS="${MISSIVE_TOOLS:-$HOME/.cache/missive-tools}"
venv="$TOOLS/schemathesis"
st="$venv/bin/schemathesis"

install() {
  if [ -x "$st" ] && "$st" --version 2>/dev/null | grep -q "$VERSION"; then return; fi
  echo "schemathesis: installing $VERSION into $venv"
  mkdir -p "$TOOLS"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"
}

install
if [ "${1:-}" = "install" ]; then exit 0; fi

bin="${MISSIVE_BIN:-${CARGO_TARGET_DIR:-target}/debug/missive}"
[ -x "$bin" ] || { echo "schemathesis: no $bin (cargo build first, or set MISSIVE_BIN)" >&2; exit 1; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free port, then `missive dev` on it (its own directory: the embedded SQLite file).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
# The fuzzer logs in and signs up far more than a person: the abuse limits (tested in
# cli/tests/api/auth.rs) would turn its session away mid-run.
(cd "$work" && PORT="$port" DEV_EVENTS_PORT=0 LOG_LEVEL=error LOGIN_FAILURES_PER_ACCOUNT=1000000 \
  LOGIN_FAILURES_PER_CLIENT=1000000 SIGNUPS_PER_CLIENT_PER_HOUR=1000000 exec "$bin" dev >"$work/server.log" 2>&1) &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { cat "$work/server.log" >&2; exit 1; }

# The fuzzer's own account; schemathesis.toml has it log in (and in again after a
# fuzzed logout) and send the session cookie where the document says.
export MISSIVE_FUZZ_USER=fuzzer MISSIVE_FUZZ_PASSWORD="correct horse battery"
curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d "{\"username\":\"$MISSIVE_FUZZ_USER\",\"password\":\"$MISSIVE_FUZZ_PASSWORD\"}" "$base/api/auth/signup"

seed="${SCHEMATHESIS_SEED:-20261202}"
if [ "$seed" = random ]; then seed="$(python3 -c 'import random; print(random.randrange(1, 2**31))')"; fi
echo "schemathesis: seed $seed against $base (reproduce: SCHEMATHESIS_SEED=$seed bash scripts/schemathesis.sh)"

status=0
"$st" --config-file scripts/schemathesis.toml --no-color run "$base/api/openapi.json" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --seed "$seed" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
  --workers 1 \
  --request-timeout 10 \
  --suppress-health-check too_slow,filter_too_much \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures (last lines of the server's log below)" >&2
  tail -n 20 "$work/server.log" >&2
fi
exit "$status"
