# Helpers shared by the tracing benchmarks (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The benchmark user's session cookie on the server at port $1. Signs up, or logs in
# where an earlier run on the same database (DATABASE_URL set) already did; then posts
# 25 messages, so that GET /api/messages returns a full page of 20.
bench_user() {
  local port=$1 cookie i
  cookie=$(bench_session "$port" signup)
  [ -n "$cookie" ] || cookie=$(bench_session "$port" login)
  for i in $(seq 1 25); do
    curl -sf -o /dev/null -H "cookie: $cookie" -H 'content-type: application/json' \
      -d "{\"text\":\"message number $i\"}" "http://127.0.0.1:$port/api/messages"
  done
  echo "$cookie"
}

# The session cookie that /api/auth/$2 (signup or login) sets for the benchmark user.
bench_session() {
  curl -si -H 'content-type: application/json' \
    -d '{"username":"bench","password":"benchmark!"}' "http://127.0.0.1:$1/api/auth/$2" \
    | sed -n 's/^set-cookie: \(missive_session=[^;]*\).*/\1/Ip' | tr -d '\r'
}
