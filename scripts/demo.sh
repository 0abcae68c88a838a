#!/usr/bin/env bash
# The main job on the embedded default: set up (virtualenv, libtorch, the SmolLM2 model), build
# the worker, and run the bundled job file through the real model. Bad lines in the file are
# reported per line; the others run in one continuously refilled batch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo build --release --quiet -p worker
target="${CARGO_TARGET_DIR:-$root/target}"
"$target/release/worker" generate --model smollm2 --input "${1:-examples/prompts.jsonl}" --json
