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

# Sends COUNT requests (METHOD /api/messages, a message body for POST) as the user of
# COOKIE to the server at PORT, over CONNECTIONS keep-alive connections; fails unless
# each is answered 200 (GET) or 201 (POST). For the callgrind benchmarks, whose load
# must be the same every run.
#   keepalive_load PORT COOKIE METHOD COUNT CONNECTIONS
keepalive_load() {
  python3 - "$@" <<'PY'
import http.client, json, sys, threading
port, cookie, method, count, connections = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
body = json.dumps({"text": "benchmark message with a few words to index 안녕하세요"}) if method == "POST" else None
expected = 201 if method == "POST" else 200
failures = []
def run(n):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(n):
        c.request(method, "/api/messages", body=body,
                  headers={"cookie": cookie, "content-type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != expected:
            # An exception would end only this thread; the script must fail.
            failures.append(r.status)
            return
threads = [threading.Thread(target=run, args=(count // connections,)) for _ in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{method} /api/messages answered {failures}")
PY
}
