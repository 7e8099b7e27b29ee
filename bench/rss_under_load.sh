#!/usr/bin/env bash
# Peak memory (VmHWM) of function binaries under load, against live MariaDB and Redis:
# what the manifests' memory requests and limits are sized from.
#   message-list: GET /api/messages (page of 20), 100 connections (containerConcurrency)
#   auth-login:   POST /api/auth/login, 8 connections (its containerConcurrency; argon2id,
#                 19 MiB per verification)
# Usage: bash bench/rss_under_load.sh [BIN_DIR]   (default: the static release binaries)
set -euo pipefail
# The directory as given, resolved before the cd below.
[ -n "${1:-}" ] && set -- "$(realpath "$1")"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/missive-target}"
BIN="${1:-$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release}"
DURATION="${DURATION:-10}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
. bench/lib.sh

export DATABASE_URL="${MISSIVE_TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}/missive_rss"
export REDIS_URL="${MISSIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_KEY_PREFIX="missive-rss:" KAFKA_BROKERS="${MISSIVE_TEST_KAFKA_BROKERS:-127.0.0.1:9092}" LOG_LEVEL=warn
"$BIN/missive" migrate >/dev/null
pids_file=$(mktemp)
# Every server started, by pid: `start` runs in a subshell (its output is read), so the
# pids go through a file, and all of them are stopped however the script ends.
trap 'xargs -r kill <"$pids_file" 2>/dev/null || true; rm -f "$pids_file"; bash scripts/mariadb.sh -e "DROP DATABASE IF EXISTS missive_rss" 2>/dev/null || true' EXIT
start() { local port pid; port=$(free_port); PORT=$port "$BIN/$1" >/dev/null 2>&1 & pid=$!; echo "$pid" >>"$pids_file"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done; echo "$port $pid"; }
hwm() { awk '/VmHWM/{printf "%.1f MB", $2/1024}' "/proc/$1/status"; }

read -r signup_port _ < <(start auth-signup)
read -r login_port login_pid < <(start auth-login)
read -r create_port _ < <(start message-create)
read -r list_port list_pid < <(start message-list)
user="rss$RANDOM"
cookie=$(curl -si -H 'content-type: application/json' -d "{\"username\":\"$user\",\"password\":\"benchmark!\"}" \
  "http://127.0.0.1:$signup_port/api/auth/signup" | sed -n 's/^set-cookie: \(missive_session=[^;]*\).*/\1/Ip' | tr -d '\r')
for i in $(seq 1 25); do
  curl -sf -o /dev/null -H "cookie: $cookie" -H 'content-type: application/json' \
    -d "{\"text\":\"message number $i\"}" "http://127.0.0.1:$create_port/api/messages"
done
echo "message-list idle: $(hwm "$list_pid")"
COOKIE="$cookie" wrk -t2 -c100 -d"${DURATION}s" -s bench/get.lua "http://127.0.0.1:$list_port/api/messages" | grep -E 'Requests/sec|Non-2xx'
echo "message-list peak after 100 connections: $(hwm "$list_pid")"
# A different unknown user per request: each costs a full verification (against the
# dummy hash) and none trips the per-user attempt limit.
cat > /tmp/missive-login.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, nil, nil, '{"username":"u' .. math.random(1, 1e9) .. '","password":"benchmark!"}')
end
LUA
wrk -t2 -c8 -d"${DURATION}s" -s /tmp/missive-login.lua "http://127.0.0.1:$login_port/api/auth/login" | grep -E 'Requests/sec|Non-2xx'
echo "auth-login peak after 8 concurrent logins: $(hwm "$login_pid")"
