#!/usr/bin/env bash
# Everything the test suite needs, installed and started if missing; idempotent, so a
# machine that already has it all is through in a few seconds. scripts/test.sh runs it
# first (MISSIVE_SKIP_SETUP=1 skips it when you manage the services yourself).
#   Rust: clippy, rustfmt, cargo-nextest
#   Python: pyyaml (the static checks), schemathesis (the contract fuzzer), and through
#           scripts/kafka.sh confluent-kafka and cloudevents (outside Kafka clients)
#   Node 20.19+ with npm, Debian's Chromium (the web app's browser tests)
#   scripts/deploy-tools.sh  the deployment checkers, under ~/.cache/missive-tools
#   scripts/services.sh      MariaDB on 127.0.0.1:3306 and Redis on 127.0.0.1:6379
#   scripts/kafka.sh         a tansu broker on 127.0.0.1:9092, and tansu with SASL
#                            (scripts/tansu-sasl) for the Kafka authentication tests
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked

python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
bash scripts/schemathesis.sh install
# Node 20.19+ with npm (preinstalled here; Debian's own nodejs is too old for Vite 7).
command -v node >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
# openssl makes the certificates of the HTTPS JWKS test; redis-server runs a private
# Redis for the one-subscription test (both from Debian).
command -v openssl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openssl; }
command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }
# stunnel puts TLS in front of tansu for the Kafka-over-TLS tests (tansu 0.6's own TLS
# options cannot both be given).
command -v stunnel >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq stunnel4; }
command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
bash scripts/deploy-tools.sh
bash scripts/services.sh
bash scripts/kafka.sh
