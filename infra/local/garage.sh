#!/usr/bin/env bash
# Starts (or stops) a single-node Garage S3 server on loopback (127.0.0.1:3900, region
# "garage") with data under $BEAMLINE_CACHE/garage-data, and makes sure the bucket and an
# access key exist. Builds Garage first when this machine has no binary (garage-install.sh).
# Usage: garage.sh start | stop | env
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${BEAMLINE_CACHE:-${HOME:-/root}/.cache/beamline}"
data="$cache/garage-data"
conf="$data/garage.toml"
bucket="${BEAMLINE_BUCKET:-beamline}"
# A fixed local-only key pair (Garage's format: GK + 24 hex, 64 hex): the server listens on
# loopback only, and tests need stable credentials.
key_id="GK0123456789abcdef01234567"
secret="7b3e1f0c9a8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f"

print_env() {
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:3900
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=garage
ENV
}

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "${1:-start}" in
  env) print_env; exit 0 ;;
  stop)
    if [ -f "$data/garage.pid" ]; then kill "$(cat "$data/garage.pid")" 2>/dev/null || true; rm -f "$data/garage.pid"; fi
    exit 0 ;;
  start) ;;
  *) echo "usage: garage.sh start|stop|env" >&2; exit 2 ;;
esac

garage="$("$here/garage-install.sh")"
mkdir -p "$data/meta" "$data/data"
if [ ! -f "$conf" ]; then
  cat > "$conf" <<TOML
metadata_dir = "$data/meta"
data_dir = "$data/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
TOML
fi
g() { "$garage" -c "$conf" "$@"; }
if ! up 3900; then
  echo "garage: starting on 127.0.0.1:3900" >&2
  nohup "$garage" -c "$conf" server > "$data/garage.log" 2>&1 &
  echo $! > "$data/garage.pid"
  for _ in $(seq 1 60); do up 3900 && up 3901 && break; sleep 0.5; done
  up 3900 || { echo "garage: did not start; see $data/garage.log" >&2; exit 1; }
fi
# One-time cluster layout, key and bucket (each step is skipped when already done).
for _ in $(seq 1 30); do g status >/dev/null 2>&1 && break; sleep 0.5; done
if g status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
  node="$(g node id -q 2>/dev/null | cut -d@ -f1)"
  g layout assign -z dc1 -c 1G "$node" >/dev/null
  version="$(g layout show 2>/dev/null | sed -n 's/.*--version \([0-9]*\).*/\1/p' | head -n 1)"
  g layout apply --version "${version:-1}" >/dev/null
fi
g key info "$key_id" >/dev/null 2>&1 || g key import --yes -n beamline "$key_id" "$secret" >/dev/null
g bucket info "$bucket" >/dev/null 2>&1 || g bucket create "$bucket" >/dev/null
g bucket allow --read --write --owner "$bucket" --key "$key_id" >/dev/null
echo "garage: ready, bucket $bucket" >&2
print_env
