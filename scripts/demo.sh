#!/usr/bin/env bash
# README command 1: sets everything up on a fresh machine and runs the main job end to end with
# the real SmolLM2 model: submits examples/jobs.jsonl (chat, plain, beam-search, sampled and
# OpenAI-format jobs, and a few bad lines), processes it with a worker until the queue is
# empty, and prints a summary table and where the results are.
#   scripts/demo.sh             the embedded default (SQLite + local files, no services)
#   scripts/demo.sh --cluster   the same against Postgres, RabbitMQ and S3 (Garage) on loopback
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
if [ "${1:-}" = "--cluster" ]; then
  eval "$(infra/local/up.sh)"
  shift
else
  # The embedded default: nothing set means SQLite and local files under ./beamline-data/.
  unset BEAMLINE_DATABASE_URL BEAMLINE_QUEUE_URL BEAMLINE_OBJECT_STORE
fi
cargo build --release --quiet -p producer -p worker
bin="${CARGO_TARGET_DIR:-$root/target}/release"
file="${1:-examples/jobs.jsonl}"
name="demo-$(date +%Y%m%d-%H%M%S)"

echo "== submit $file as batch $name" >&2
batch="$("$bin/producer" submit "$file" --name "$name")"
echo "== worker (real model) until the queue is empty" >&2
"$bin/worker" run --exit-when-idle
echo "== summary" >&2
"$bin/producer" status "$batch"
"$bin/producer" results "$batch" | python3 scripts/results_table.py
cat >&2 <<TXT
== where the results are
  database:      ${BEAMLINE_DATABASE_URL:-sqlite://beamline-data/beamline.db}  (tables batches, jobs, results, rejected_lines; view batch_progress)
  result shards: ${BEAMLINE_OBJECT_STORE:-file://beamline-data/objects}/results/$batch/
  manifest:      ${BEAMLINE_OBJECT_STORE:-file://beamline-data/objects}/manifests/$batch.json
  export:        $bin/producer results $batch [--format openai] [--out FILE]
TXT
