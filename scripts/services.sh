#!/usr/bin/env bash
# Makes sure the local Postgres (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) are up, starting
# them when they are down. Idempotent.
set -euo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on port $1" >&2; return 1
}
if ! up 5432; then
  echo "services: starting Postgres" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  wait_for 5432 Postgres
fi
if ! up 5672; then
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached
  wait_for 5672 RabbitMQ
fi
