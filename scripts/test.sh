#!/usr/bin/env bash
# The test command: sets up what the tests need (virtualenv with libtorch, the SmolLM2 model,
# the local services), then runs every test of the workspace: unit, integration and
# conformance tests against transformers' reference outputs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
scripts/services.sh
export BEAMLINE_TEST_MODEL="${BEAMLINE_TEST_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
export BEAMLINE_PYTHON="${BEAMLINE_PYTHON:-$root/.venv/bin/python}"
# Tests share two cores; libtorch's own thread pool would oversubscribe them.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace "$@"
