#!/usr/bin/env python3
"""beamline's answers beside transformers' on one model and device: greedy token ids for a few
prompts (`worker generate`) and the summed negative log-likelihood of a text (`worker score`).
It is the device check's proof that the CUDA path computes what transformers computes; on the
CPU with `--quant none` both sides run float32 and should agree exactly.

    python3 scripts/compare_outputs.py --model FOLDER --device cuda [--quant auto] [--worker target/release/worker]

transformers runs float32 on the CPU and bfloat16 on CUDA, as beamline does. Prints one JSON
object: per prompt the length of the common prefix of the two greedy outputs, and both NLLs.
"""
import argparse, json, os, subprocess, sys, tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "1, 2, 3, 4, 5,",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "Translate to German: good morning",
    "Photosynthesis is the process by which",
    "Q: What is 12 times 12?\nA:",
]
SCORE_TEXT = ("Bulk inference turns a large file of prompts into a large file of answers. "
              "The work is split into batches, and each batch runs on whatever device is free.")


def worker(args, *extra):
    cmd = [args.worker, *extra, "--model", args.model, "--device", args.device, "--quant", args.quant, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RUST_LOG": "warn"})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-4000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quant", default="auto")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--worker", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "target", "release", "worker"))
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, p in enumerate(PROMPTS):
            f.write(json.dumps({"custom_id": f"p{i}", "prompt": p,
                                "params": {"max_new_tokens": args.max_new_tokens}}) + "\n")
        jobs = f.name
    ours = {o["custom_id"]: o for o in worker(args, "generate", "--input", jobs)}

    rows = []
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):
            ids = torch.tensor([tok(p)["input_ids"]], device=args.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, pad_token_id=tok.eos_token_id)
            theirs = out[0, ids.shape[1]:].tolist()
            mine = ours[f"p{i}"]["token_ids"]
            common = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            rows.append({"prompt": p, "prompt_tokens": [ids.shape[1], ours[f"p{i}"]["prompt_tokens"]],
                         "common_prefix": common, "beamline": len(mine), "transformers": len(theirs)})
        ids = torch.tensor([tok(SCORE_TEXT)["input_ids"]], device=args.device)
        loss = model(ids, labels=ids).loss.float().item()
        nll_ref = loss * (ids.shape[1] - 1)
    nll = worker(args, "score", "--text", SCORE_TEXT)[0]["nll"]

    identical = sum(r["common_prefix"] == r["beamline"] == r["transformers"] for r in rows)
    report = {
        "device": args.device, "quant": args.quant, "transformers_dtype": str(dtype),
        "greedy_identical": f"{identical}/{len(rows)}",
        "greedy_tokens_agreeing_before_first_difference": sum(r["common_prefix"] for r in rows),
        "greedy_tokens": sum(r["transformers"] for r in rows),
        "nll": {"beamline": nll, "transformers": nll_ref, "relative_difference": abs(nll - nll_ref) / abs(nll_ref)},
        "prompts": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
