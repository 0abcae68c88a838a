#!/usr/bin/env python3
"""llama.cpp's side of `bench_engine.py --llama-cpp`: one prompt, single-stream greedy decoding
of exactly N new tokens on a GGUF file, through llama-cpp-python. Runs in its own process and
virtualenv (scripts/install_llama_cpp.sh), so its memory is its own.

Reads a JSON request on stdin: {"model", "threads", "prompt_ids" (a list of token ids),
"new_tokens"}; prints one JSON object: prompt_tokens_per_s (one forward pass over the prompt),
generated_tokens_per_s (new tokens over the wall time of prompt plus decoding, as transformers'
and beamline's figures are), decode_tokens_per_s and peak_rss_bytes.
"""
import json, sys, time

from llama_cpp import Llama


def peak_rss_bytes():
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: on Linux that
    carries over the parent's resident size from the fork, here the benchmark's transformers."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    request = json.load(sys.stdin)
    prompt, new_tokens = request["prompt_ids"], request["new_tokens"]
    llm = Llama(model_path=request["model"], n_ctx=max(512, len(prompt) + new_tokens + 8),
                n_threads=request["threads"], n_threads_batch=request["threads"],
                n_batch=max(64, len(prompt)), verbose=False)
    # Warm-up: the first pass maps the weights in and sizes the buffers; beamline warms up too.
    llm.reset()
    llm.eval(prompt[:8])

    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - start

    # Greedy (top-k 1), EOS not honoured: exactly `new_tokens` tokens, like the other sides'
    # `min_new_tokens = max_new_tokens`.
    llm.reset()
    generated = []
    start = time.perf_counter()
    first = None
    for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if first is None:
            first = time.perf_counter()
        generated.append(token)
        if len(generated) == new_tokens:
            break
    wall = time.perf_counter() - start
    decode = time.perf_counter() - first
    json.dump({"prompt_tokens_per_s": len(prompt) / prefill,
               "generated_tokens_per_s": len(generated) / wall,
               "decode_tokens_per_s": (len(generated) - 1) / decode if decode > 0 else None,
               "generated_tokens": len(generated),
               "peak_rss_bytes": peak_rss_bytes()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
