#!/usr/bin/env bash
# Installs llama-cpp-python (llama.cpp compiled for this CPU) into its own virtualenv outside
# the checkout, once per machine, for `bench_engine.py --llama-cpp`; prints that virtualenv's
# python. Optional: nothing else needs it. The compile takes 7 to 55 minutes on 2 cores (7-9 on
# a recent Xeon, 55 on a Zen 1 class EPYC while a cargo build shared them).
#
#   python=$(scripts/install_llama_cpp.sh)
#   .venv/bin/python scripts/bench_engine.py --llama-cpp "$python" --cases "greedy b1"
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${BEAMLINE_CACHE:-${HOME:-/root}/.cache/beamline}"
# ggml's AMX path crashes in ggml_backend_amx_mul_mat on some AMX machines
# (ggml-org/llama.cpp#20824; it did on a 2-vCPU Xeon VM here, at the first decode), so on a CPU
# with AMX it is compiled out: `-march=native` leaves explicitly disabled extensions off, and
# decoding then runs ggml's AVX-512 VNNI kernels.
flags=""
suffix=""
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  suffix="-noamx"
fi
venv="$cache/llama-cpp-$version$suffix"
python="$venv/bin/python"
if [ -x "$python" ] && "$python" -c "import llama_cpp" 2>/dev/null; then
  echo "$python"
  exit 0
fi
echo "install_llama_cpp: compiling llama-cpp-python $version for this CPU (once per machine, 7-55 min)" >&2
start=$(date +%s)
rm -rf "$venv"
python3 -m venv "$venv"
# Native build (this CPU's vector extensions, as a user of llama.cpp would build it); no tests
# or examples.
CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags'" \
  "$venv/bin/pip" install --quiet --no-cache-dir "llama-cpp-python==$version" numpy >&2
echo "install_llama_cpp: done in $(( $(date +%s) - start )) s" >&2
echo "$python"
