#!/usr/bin/env bash
# Builds the Garage S3 server (crates.io `garage`) once per machine and caches the binary
# outside the checkout: $BEAMLINE_CACHE/garage-<version>/bin/garage. Re-runs return at once.
# Only the features a single-node loopback server needs are built (SQLite metadata, bundled
# libraries), with a light release profile, to keep a fresh machine's first run short.
set -euo pipefail
version="${GARAGE_VERSION:-2.5.0}"
cache="${BEAMLINE_CACHE:-${HOME:-/root}/.cache/beamline}"
root_dir="$cache/garage-$version"
bin="$root_dir/bin/garage"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
echo "garage-install: building garage $version from crates.io (once per machine, several minutes)" >&2
start=$(date +%s)
CARGO_PROFILE_RELEASE_LTO=false \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
CARGO_PROFILE_RELEASE_DEBUG=0 \
CARGO_PROFILE_RELEASE_OPT_LEVEL=2 \
CARGO_TARGET_DIR="$cache/garage-build" \
  cargo install garage --version "$version" --locked --no-default-features \
    --features bundled-libs,sqlite --root "$root_dir" --quiet >&2
rm -rf "$cache/garage-build"
echo "garage-install: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
