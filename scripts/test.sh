#!/usr/bin/env bash
# The test command: sets up what the tests need (virtualenv with libtorch, the SmolLM2 model,
# Postgres and RabbitMQ, the Garage S3 server on loopback), then runs every test of the
# workspace: unit tests, conformance tests against transformers' reference outputs, and the
# pipeline integration tests in tests/ against the real services.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
scripts/services.sh
BEAMLINE_PG_DATABASE=beamline_test infra/local/up.sh > /dev/null
export BEAMLINE_TEST_MODEL="${BEAMLINE_TEST_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
export BEAMLINE_PYTHON="${BEAMLINE_PYTHON:-$root/.venv/bin/python}"
# Tests share two cores; libtorch's own thread pool would oversubscribe them.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace "$@"
# On a CPU with AVX-512 the AVX2 machines' default kernel (16-bit activations) never ran above:
# check it against the float reference too, with the kernels kept to AVX2.
if [ $# -eq 0 ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  BEAMLINE_CPU_ISA=avx2 cargo test --workspace --test conformance_smollm2 -- 16_bit
fi
