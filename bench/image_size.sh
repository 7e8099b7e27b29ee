#!/usr/bin/env bash
# Size of each function's image, from what goes into it: the statically linked binary
# (the Dockerfile's build, reproduced here without Docker) plus the distroless
# static-debian12 base layer, plus the built app for `web`. Budget: under 30 MB.
#
# Usage: bash bench/image_size.sh      (builds the static binaries first if needed)
# The base layer cannot be pulled on this network: BASE_MB is the published uncompressed
# size of gcr.io/distroless/static-debian12:nonroot (about 2 MB); override if you measure it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/missive-target}"
TARGET=x86_64-unknown-linux-gnu
BASE_MB="${BASE_MB:-2.0}"

# BIN_DIR: binaries built elsewhere (the smoke run uses the debug build, which is not
# static: the linkage column says so); else the images' static release build.
if [ -n "${BIN_DIR:-}" ]; then
  bin=$(realpath "$BIN_DIR")
else
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
    --target "$TARGET" --workspace --bins
  bin="$CARGO_TARGET_DIR/$TARGET/release"
fi
site_mb=0
if [ -f frontend/dist/index.html ]; then
  site_mb=$(du -sb frontend/dist | awk '{printf "%.2f", $1/1048576}')
fi

printf '%-18s %10s %10s %10s  %s\n' image binary base total linkage
worst=0
for dir in functions/*/ cli/; do
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)
  file="$bin/$name"
  mb=$(stat -c %s "$file" | awk '{printf "%.2f", $1/1048576}')
  extra=0
  [ "$name" = web ] && extra=$site_mb
  total=$(awk -v a="$mb" -v b="$BASE_MB" -v c="$extra" 'BEGIN{printf "%.2f", a+b+c}')
  if ldd "$file" 2>&1 | grep -qE "statically linked|not a dynamic executable"; then linkage=static; else linkage=dynamic; fi
  printf '%-18s %8s MB %8s MB %8s MB  %s%s\n' "$name" "$mb" "$BASE_MB" "$total" "$linkage" \
    "$([ "$extra" != 0 ] && echo " (+ app ${extra} MB)")"
  worst=$(awk -v a="$total" -v w="$worst" 'BEGIN{print (a>w)?a:w}')
done
echo "largest image: ${worst} MB (budget 30 MB)"
