#!/usr/bin/env bash
# The CUDA check, run once on a lent GPU machine that has PyTorch 2.11 and transformers but no
# Rust toolchain: the worker binary is built here and carried (with a tokenizer) in .device/.
#   1. the binary finds the machine's own libtorch, loads libtorch_cuda and sees the GPU;
#   2. a random-weight Qwen2-1.5B-shaped checkpoint is made there with transformers;
#   3. beamline's greedy ids and NLL beside transformers', on CUDA (bfloat16) and on the CPU
#      (float32, --quant none), and the int8/int4 CUDA paths on a short run;
#   4. `worker bench` beside `transformers.generate` on the GPU: greedy batch 1 and 64, beam
#      search 16 prompts x 4 beams, sampling batch 16; ratios and device memory.
# Usage (from the repository root there): scripts/device_check.sh OUTDIR
# A dry run on a machine without a GPU: SHAPE=tiny DEVICE=cpu WORKER=target/release/worker.
# Every step is bounded and a failing step does not stop the next. QUICK=1 skips the int8/int4
# runs and the CPU comparison.
set -uo pipefail
out="${1:?output folder}"
mkdir -p "$out"
worker="$(realpath "${WORKER:-.device/worker}")"
shape="${SHAPE:-1.5b}"
device="${DEVICE:-cuda}"
model="/tmp/qwen2-$shape-random"
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RUST_LOG=warn

step() { echo; echo "=== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
echo "worker links: $(ldd "$worker" | grep -E 'torch|c10' | awk '{print $1}' | tr '\n' ' ')"

step "make the random Qwen2-$shape-shaped checkpoint"
[ -d "$model" ] || timeout 240 python3 scripts/make_random_qwen2.py "$model" --shape "$shape" \
  --tokenizer .device/tokenizer --device "$device"

step "worker generate --device $device"
timeout 90 "$worker" generate --model "$model" --device "$device" --prompt "The capital of France is" \
  --max-new-tokens 8 --json

step "worker bench beside transformers.generate on $device"
timeout 240 python3 scripts/bench_engine.py --device "$device" --model "$model" --worker "$worker" \
  --cases "greedy b1,greedy b16,greedy b64,beam 16x4,sample b16" --prompt-tokens 64 --max-new-tokens 64 \
  --out "$out/bench_$device.json"

step "beamline vs transformers on $device: greedy ids and NLL"
timeout 120 python3 scripts/compare_outputs.py --worker "$worker" --model "$model" --device "$device" \
  | tee "$out/compare_$device.json"

step "a CUDA out-of-memory is a typed error, not a crash (expect: device out of memory)"
timeout 60 "$worker" bench --model "$model" --device "$device" --batch-size 100000 --prompt-tokens 8 \
  --max-new-tokens 2 --warmup 0 --json 2>&1 | tail -n 2
echo "exit status: ${PIPESTATUS[0]}"

[ -n "${QUICK:-}" ] && { step "done (QUICK: int8/int4 and the CPU comparison skipped)"; exit 0; }

for q in int8 int4; do
  step "worker bench --device $device --quant $q (greedy batch 64)"
  timeout 60 "$worker" bench --model "$model" --device "$device" --quant "$q" --batch-size 64 \
    --prompt-tokens 64 --max-new-tokens 64 --json | tee -a "$out/quant_$device.jsonl"
done

step "beamline vs transformers on the CPU, float32 (--quant none)"
timeout 150 python3 scripts/compare_outputs.py --worker "$worker" --model "$model" --device cpu --quant none \
  | tee "$out/compare_cpu.json"
step "done"
