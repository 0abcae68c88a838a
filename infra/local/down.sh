#!/usr/bin/env bash
# Stops what infra/local/up.sh started for beamline: the Garage server. Postgres and RabbitMQ
# are the machine's own services and keep running; the data stays for the next up.sh.
set -euo pipefail
"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/garage.sh" stop
echo "garage stopped" >&2
