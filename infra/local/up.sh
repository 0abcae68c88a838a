#!/usr/bin/env bash
# Makes the cluster form of beamline ready on this machine: Postgres and RabbitMQ (started if
# down), the `beamline` database, and the Garage S3 server on loopback with its bucket. Prints
# the `export` lines that point the binaries at them:  eval "$(infra/local/up.sh)"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/scripts/services.sh"
database="${BEAMLINE_PG_DATABASE:-beamline}"
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  createdb -h 127.0.0.1 -U postgres "$database"
fi
s3_env="$("$root/infra/local/garage.sh" start)"
cat <<ENV
export BEAMLINE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$database
export BEAMLINE_QUEUE_URL=amqp://guest:guest@127.0.0.1:5672/%2f
export BEAMLINE_OBJECT_STORE=s3://beamline
$s3_env
ENV
