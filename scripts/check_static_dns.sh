#!/usr/bin/env bash
# The images run statically linked binaries (glibc's libc.a, see the Dockerfile). Its
# resolver must find MariaDB, Redis and Kafka by their cluster DNS names, or no function
# would start in the cluster. /etc/hosts names are not enough to prove it, so here a
# static build runs in a mount namespace whose /etc/resolv.conf names a local DNS server
# (scripts/fake_dns.py: *.missive.test -> 127.0.0.1) and whose nsswitch.conf is
# distroless' `hosts: files dns`, with every backend given by such a name:
#   - `missive migrate` reaches MariaDB;
#   - `message-list` answers /readyz 200, so it reached MariaDB and Redis;
#   - `missive publish` delivers a record to Kafka.
# Needs root (unshare -m, port 53; sudo is used otherwise), MariaDB, Redis and the Kafka
# broker of scripts/kafka.sh.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -E"
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/missive-target}"
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --locked --target "$TARGET" \
  -p message-list -p missive
bin="$CARGO_TARGET_DIR/$TARGET/debug"
for b in message-list missive; do
  ldd "$bin/$b" 2>&1 | grep -qE "statically linked|not a dynamic executable" \
    || { echo "static-dns: $b is not statically linked" >&2; exit 1; }
done

work=$(mktemp -d)
dns_ip=127.0.0.77
$SUDO python3 scripts/fake_dns.py "$dns_ip" & dns=$!
pids=("$dns")
db="missive_dns_$$"
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  bash scripts/mariadb.sh -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
  [ -n "${topic:-}" ] && kafka_admin delete 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Wait until the DNS server answers.
for _ in $(seq 1 50); do
  python3 - "$dns_ip" 2>/dev/null <<'PY' && break
import socket, struct, sys
q = struct.pack("!HHHHHH", 1, 0x100, 1, 0, 0, 0) + b"\x01x\x07missive\x04test\x00" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.sendto(q, (sys.argv[1], 53)); s.recv(512)
PY
  sleep 0.1
done
kill -0 "$dns" 2>/dev/null || { echo "static-dns: the DNS server did not start" >&2; exit 1; }
echo "nameserver $dns_ip" > "$work/resolv.conf"
echo "hosts: files dns" > "$work/nsswitch.conf"

# Becomes a command run with the namespace's resolver configuration: the shell that
# calls it is replaced (unshare and bash exec in turn), so a job started as
# `(ns_exec ...) &` has the command's own pid and `cleanup` stops the command itself,
# not a shell that would leave it running.
ns_exec() {
  exec $SUDO unshare -m --propagation private -- bash -c '
    mount --bind "$0/resolv.conf" /etc/resolv.conf
    mount --bind "$0/nsswitch.conf" /etc/nsswitch.conf
    shift; exec "$@"' "$work" - "$@"
}
# Runs a command with the namespace's resolver configuration, and waits for it.
in_ns() { (ns_exec "$@"); }

brokers="${MISSIVE_TEST_KAFKA_BROKERS:-127.0.0.1:9092}"
broker_port="${brokers##*:}"
# A topic of its own (the broker creates none by itself).
topic="missive_dns_$$.inbox"
kafka_admin() {
  python3 - "$brokers" "$topic" "$1" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
action = admin.create_topics([NewTopic(sys.argv[2], 1)]) if sys.argv[3] == "create" \
    else admin.delete_topics([sys.argv[2]])
for future in action.values():
    future.result(10)
PY
}
kafka_admin create
export DATABASE_URL="mysql://root@mariadb.missive.test:3306/$db"
export REDIS_URL="redis://redis.missive.test:6379"
export REDIS_KEY_PREFIX="missive-dns:" LOG_LEVEL=warn
export KAFKA_BROKERS="kafka.missive.test:$broker_port" KAFKA_INBOX_TOPIC="$topic"

in_ns "$bin/missive" migrate
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(PORT=$port ns_exec "$bin/message-list") > "$work/fn.log" 2>&1 & pids+=($!)
ready=""
for _ in $(seq 1 100); do
  ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
  [ "$ready" = 200 ] && break
  sleep 0.1
done
[ "$ready" = 200 ] || { cat "$work/fn.log"; echo "static-dns: /readyz said $ready" >&2; exit 1; }
in_ns "$bin/missive" publish --user dnscheck --text "resolved by DNS" > "$work/publish.log" 2>&1 \
  || { cat "$work/publish.log"; echo "static-dns: publishing to Kafka by name failed" >&2; exit 1; }
echo "static-dns: a static build found MariaDB, Redis and Kafka through DNS"
