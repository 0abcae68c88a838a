#!/usr/bin/env python3
"""Engine benchmark: beamline's `worker bench` beside HuggingFace transformers, on the same
machine, model, prompts and settings, in one run; prints each side's throughput and the ratios.

transformers runs a GGUF dequantized to float32 (its only way to run a GGUF), a HuggingFace
folder as stored (or --dtype), with `generate(min_new_tokens = max_new_tokens)`, so both sides
generate exactly the same number of tokens. beamline runs its default (`--quant auto`: a GGUF's
own blocks, a folder as stored) unless --quant says otherwise. Prompts are cut from
worker/src/commands/bench_text.txt exactly as `worker bench` cuts them.

    .venv/bin/python scripts/bench_engine.py [--threads 2] [--prompt-tokens 64] [--max-new-tokens 64]
    python3 scripts/bench_engine.py --device cuda --model QWEN2_FOLDER --cases "greedy b64,beam 16x4"

On CUDA each side's peak device memory is read too: transformers' from torch's allocator,
beamline's by polling nvidia-smi for the worker's process while it runs.

With --llama-cpp PYTHON (an interpreter with llama-cpp-python, as scripts/install_llama_cpp.sh
installs it), llama.cpp runs the batch-1 greedy case too, single-stream on the same GGUF and
prompt, in its own process (scripts/llama_cpp_bench.py).
"""
import argparse, json, os, resource, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [  # name, batch, decoding, beams
    ("greedy b1", 1, "greedy", 1),
    ("greedy b16", 16, "greedy", 1),
    ("greedy b64", 64, "greedy", 1),
    ("beam 8x4", 8, "beam", 4),
    ("beam 16x4", 16, "beam", 4),
    ("sample b16", 16, "sample", 1),
]


def synthetic_prompts(source, count, length):
    return [[source[(i * 97 + j) % len(source)] for j in range(length)] for i in range(count)]


class GpuMemoryPoller:
    """Largest device memory nvidia-smi reports for one process while it runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = str(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                for line in out.splitlines():
                    pid, used = [x.strip() for x in line.split(",")]
                    if pid == self.pid:
                        self.peak = max(self.peak, int(used) * 2**20)
            except Exception:
                pass
            self.stop.wait(0.2)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.peak or None


def run_beamline(args, batch, decoding, beams):
    cmd = [args.worker, "bench", "--model", args.model, "--batch-size", str(batch), "--decoding", decoding,
           "--num-beams", str(beams), "--prompt-tokens", str(args.prompt_tokens),
           "--max-new-tokens", str(args.max_new_tokens), "--quant", args.quant, "--device", args.device, "--bf16", args.bf16, "--int8", args.int8, "--int16", args.int16, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUST_LOG": "warn"})
    poller = GpuMemoryPoller(proc.pid) if args.device == "cuda" else None
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker bench failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-4000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    if poller is not None:
        report["device_peak_bytes"] = poller.finish()
    return report


def run_transformers(model, prompts, decoding, beams, new_tokens, device):
    import torch
    ids = torch.tensor(prompts, device=device)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
    pad = pad[0] if isinstance(pad, list) else (pad if pad is not None else 0)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)
    if decoding == "beam":
        kwargs.update(num_beams=beams, num_return_sequences=1, do_sample=False)
    elif decoding == "sample":
        kwargs.update(do_sample=True, top_k=50, temperature=1.0)
    else:
        kwargs.update(do_sample=False)
    with torch.no_grad():
        if cuda:  # the first CUDA calls pay for kernel loading and autotuning; beamline warms up too
            model.generate(ids, attention_mask=torch.ones_like(ids), **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        model(ids)
        sync()
        prefill = time.perf_counter() - start
        torch.manual_seed(1)
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        sync()
        wall = time.perf_counter() - start
    generated = (out.shape[1] - ids.shape[1]) * out.shape[0]
    return {"prompt_tokens_per_s": ids.numel() / prefill, "generated_tokens_per_s": generated / wall,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            # torch's allocator: what tensors took at most, and what it held from the device
            # (beamline's figure is nvidia-smi's for its process: that plus the CUDA context).
            "device_peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "device_peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None}


def run_llama_cpp(python, model, prompt, new_tokens, threads):
    request = {"model": model, "threads": threads, "prompt_ids": prompt, "new_tokens": new_tokens}
    script = os.path.join(ROOT, "scripts", "llama_cpp_bench.py")
    proc = subprocess.run([python, script], input=json.dumps(request), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"llama.cpp bench failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--worker", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "worker"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--quant", default="auto")
    ap.add_argument("--bf16", default="on", choices=["on", "off"],
                    help="beamline's batched products in bfloat16 (AMX or AVX-512 BF16), where the CPU has them")
    ap.add_argument("--int8", default="off", choices=["on", "off"],
                    help="beamline's batched products with 8-bit activations where bfloat16 does not run (opt-in)")
    ap.add_argument("--int16", default="on", choices=["on", "off"],
                    help="beamline's batched products with 16-bit activations on AVX2 CPUs without AVX-512 (the default there)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None,
                    help="transformers' dtype (default: float32 for a GGUF; bfloat16 on CUDA, else as stored, for a folder)")
    ap.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated case names")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--llama-cpp", metavar="PYTHON", default=None,
                    help="a Python with llama-cpp-python: llama.cpp runs the batch-1 greedy case too (GGUF only)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out", "engine.json"))
    args = ap.parse_args()
    wanted = set(args.cases.split(","))
    cases = [c for c in CASES if c[0] in wanted]

    if args.llama_cpp and os.path.isdir(args.model):
        raise SystemExit("--llama-cpp needs a .gguf model")
    model = tok = source = None
    if not args.skip_transformers or args.llama_cpp:
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.set_num_threads(args.threads)
        gguf = {} if os.path.isdir(args.model) else {"gguf_file": os.path.basename(args.model)}
        folder = args.model if os.path.isdir(args.model) else os.path.dirname(os.path.abspath(args.model))
        tok = AutoTokenizer.from_pretrained(folder, **gguf)
        if not args.skip_transformers:
            if gguf:
                print("transformers loading (dequantizes the GGUF to float32) ...", file=sys.stderr, flush=True)
                dtype = getattr(torch, args.dtype or "float32")
            else:
                name = args.dtype or ("bfloat16" if args.device == "cuda" else "auto")
                print(f"transformers loading {args.model} ({name}) ...", file=sys.stderr, flush=True)
                dtype = getattr(torch, name, name)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **gguf).to(args.device).eval()
        with open(os.path.join(ROOT, "worker", "src", "commands", "bench_text.txt"), encoding="utf-8") as f:
            source = tok(f.read(), add_special_tokens=False)["input_ids"]

    # Each case runs on both sides back to back, so a slow spell of a shared machine hits both.
    results = []
    for name, batch, decoding, beams in cases:
        print(f"beamline     {name:<11} ...", file=sys.stderr, flush=True)
        row = {"case": name, "beamline": run_beamline(args, batch, decoding, beams)}
        if model is not None:
            print(f"transformers {name:<11} ...", file=sys.stderr, flush=True)
            prompts = synthetic_prompts(source, batch, args.prompt_tokens)
            row["transformers"] = run_transformers(model, prompts, decoding, beams, args.max_new_tokens, args.device)
        if args.llama_cpp and batch == 1 and decoding == "greedy":
            print(f"llama.cpp    {name:<11} ...", file=sys.stderr, flush=True)
            prompt = synthetic_prompts(source, 1, args.prompt_tokens)[0]
            row["llama_cpp"] = run_llama_cpp(args.llama_cpp, os.path.abspath(args.model), prompt,
                                             args.max_new_tokens, args.threads)
        results.append(row)

    print(f"\n{'case':<12}{'beamline tok/s':>16}{'transformers':>14}{'ratio':>8}{'prompt tok/s ratio':>20}"
          f"{'peak RSS run/load':>19}{'weights+KV':>12}{'RSS/(w+KV)':>12}{'(RSS-libtorch)/(w+KV)':>23}")
    for row in results:
        b, t = row["beamline"], row.get("transformers")
        ratio = b["generated_tokens_per_s"] / t["generated_tokens_per_s"] if t else float("nan")
        pratio = b["prompt_tokens_per_s"] / t["prompt_tokens_per_s"] if t else float("nan")
        row["ratio_generated"], row["ratio_prompt"] = ratio, pratio
        # Memory against what the model needs: weights as held plus the KV cache. The peak is
        # the whole process's (loading included); the baseline is the process before loading
        # (libtorch's own pages and its operator tables).
        held = b["weights_bytes"] + b["kv_cache_bytes"]
        load = b.get("load_peak_rss_bytes") or 0
        peak = max(b["peak_rss_bytes"], load)
        print(f"{row['case']:<12}{b['generated_tokens_per_s']:>16.1f}{(t or {}).get('generated_tokens_per_s', float('nan')):>14.1f}"
              f"{ratio:>8.2f}{pratio:>20.2f}{b['peak_rss_bytes'] / 2**20:>10.0f}/{load / 2**20:.0f} MiB"
              f"{held / 2**20:>8.0f} MiB{peak / held:>12.2f}{(peak - b['baseline_rss_bytes']) / held:>23.2f}")
    for row in results:
        if "llama_cpp" in row:
            b, l = row["beamline"], row["llama_cpp"]
            row["ratio_llama_cpp"] = b["generated_tokens_per_s"] / l["generated_tokens_per_s"]
            print(f"\n{row['case']}: llama.cpp {l['generated_tokens_per_s']:.1f} tok/s (decode {l['decode_tokens_per_s']:.1f}, "
                  f"prompt {l['prompt_tokens_per_s']:.1f}, peak RSS {l['peak_rss_bytes'] / 2**20:.0f} MiB); "
                  f"beamline {b['generated_tokens_per_s']:.1f} (decode {b['decode_tokens_per_s']:.1f}, prompt "
                  f"{b['prompt_tokens_per_s']:.1f}): {row['ratio_llama_cpp']:.2f}x llama.cpp")
    if args.device == "cuda":
        mib = lambda v: f"{v / 2**20:.0f} MiB" if v else "n/a"
        print(f"\n{'case':<12}{'beamline process':>18}{'transformers allocated':>24}{'reserved':>12}{'beamline weights+KV':>21}")
        for row in results:
            b, t = row["beamline"], row.get("transformers") or {}
            held = b["weights_bytes"] + b["kv_cache_bytes"]
            print(f"{row['case']:<12}{mib(b.get('device_peak_bytes')):>18}{mib(t.get('device_peak_bytes')):>24}"
                  f"{mib(t.get('device_peak_reserved_bytes')):>12}{mib(held):>21}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "results": results}, f, indent=1)
    print(f"\nwritten {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
