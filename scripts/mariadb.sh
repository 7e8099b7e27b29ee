#!/usr/bin/env bash
# The mariadb client on the server the tests use: MISSIVE_TEST_DATABASE_URL
# (mysql://user[:password]@host[:port], default mysql://root@127.0.0.1:3306), so every
# script honours the same override as the Rust tests. Arguments go to the client:
#   bash scripts/mariadb.sh -N -e "SELECT 1"
set -euo pipefail
url="${MISSIVE_TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306}"
mapfile -t args < <(python3 - "$url" <<'PY'
import sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
print("-h"); print(u.hostname or "127.0.0.1")
print("-P"); print(str(u.port or 3306))
print("-u"); print(unquote(u.username or "root"))
if u.password:
    print(f"--password={unquote(u.password)}")
PY
)
exec mariadb "${args[@]}" "$@"
