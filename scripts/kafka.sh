#!/usr/bin/env bash
# Makes sure a Kafka-compatible broker (tansu, in-memory storage) listens on
# ${KAFKA_PORT:-9092}, installing tansu from crates.io if missing (a ~15 min build on 2
# cores, then cached in ~/.cargo/bin), and that Python's confluent-kafka and cloudevents
# (the outside clients the tests use) are installed. Topics are created by the app and the tests; the
# broker does not auto-create them. Idempotent.
#   bash scripts/kafka.sh          start (or keep) the broker
#   bash scripts/kafka.sh stop     stop the broker this script started
set -euo pipefail

port="${KAFKA_PORT:-9092}"
# Tests put a proxy in front of a broker by advertising another port.
advertised="${KAFKA_ADVERTISED_PORT:-$port}"
state_dir="${TMPDIR:-/tmp}/missive-tansu-$port"
mkdir -p "$state_dir"

case "${1:-start}" in start|stop) ;; *) echo "usage: $0 [start|stop]" >&2; exit 2;; esac
if [ "${1:-}" = "stop" ]; then
  if [ -f "$state_dir/pid" ]; then kill "$(cat "$state_dir/pid")" 2>/dev/null || true; rm -f "$state_dir/pid"; fi
  exit 0
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
  echo "kafka: installing tansu (cargo install; takes a while once)"
  cargo install tansu --locked --features dynostore --quiet
fi
# tansu with its SASL mechanisms registered (scripts/tansu-sasl/Cargo.toml says why), for
# the SASL tests, which start their own brokers with it. Cached: fast once built.
tools="${MISSIVE_TOOLS:-$HOME/.cache/missive-tools}"
# Built once: tests call this script to start private brokers, and a cargo run from
# inside a test process can see a different environment and rebuild it all (25 min).
# Delete the binary to rebuild after changing scripts/tansu-sasl.
if [ ! -x "$tools/tansu-sasl-target/release/tansu-sasl" ]; then
  echo "kafka: building tansu with SASL (scripts/tansu-sasl; takes a while once)"
  CARGO_TARGET_DIR="$tools/tansu-sasl-target" cargo build --quiet --release --locked \
    --manifest-path "$(dirname "$0")/tansu-sasl/Cargo.toml"
fi
# The outside clients of the tests: Confluent's Kafka client and the CloudEvents SDK for
# Python (2.x: its `cloudevents.core` bindings), the interop tests' peer.
if ! python3 -c 'import confluent_kafka, cloudevents.core.bindings.kafka' >/dev/null 2>&1; then
  echo "kafka: installing confluent-kafka and cloudevents for Python"
  python3 -m pip install --quiet confluent-kafka 'cloudevents>=2.2,<3'
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
if ! listening; then
  echo "kafka: starting tansu on 127.0.0.1:$port"
  nohup tansu broker \
    --storage-engine memory://tansu/ \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$advertised" \
    >"$state_dir/broker.log" 2>&1 &
  echo $! >"$state_dir/pid"
fi
for _ in $(seq 1 100); do
  if listening; then exit 0; fi
  sleep 0.1
done
echo "kafka: tansu did not start; see $state_dir/broker.log" >&2
cat "$state_dir/broker.log" >&2 || true
exit 1
