#!/usr/bin/env python3
"""A Llama-shaped GGUF with random weights, for measuring what the engine holds in memory on a
model larger than the 135M test model (memory does not depend on the weights' values).

The tokenizer, chat template and general metadata are copied from a donor GGUF (the test
model), so the result loads, tokenizes and generates like a real model; the shape comes from
the flags (defaults: Llama 3.2 1B's layer shape with the donor's vocabulary, about 1.07B
parameters). Norms are float32; the quantization follows `--scheme`:

- `q4_1` (default): projections Q4_1, the token table Q8_0 and tied to the output, as in the
  donor's file;
- `q4_k_m`: as llama.cpp's Q4_K_M, the layout of most published GGUFs: projections Q4_K, v and
  down Q6_K in the first and last eighth of the layers and every third in between, an untied
  Q6_K output layer and a Q4_K token table. gguf-py has no K-quant quantizer, so these tensors
  are random bytes with small half-float scales (what is measured does not depend on them).

    .venv/bin/python scripts/make_random_gguf.py --out /tmp/llama-1b-q4_1.gguf
    .venv/bin/python scripts/make_random_gguf.py --scheme q4_k_m --out /tmp/llama-1b-q4_k_m.gguf
"""
import argparse

import numpy as np
import gguf

SHAPE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
              "attention.head_count_kv", "rope.dimension_count", "context_length")


def copy_metadata(reader, writer, arch):
    """Every key of the donor but the file's own bookkeeping and the layer shape."""
    skip = {f"{arch}.{k}" for k in SHAPE_KEYS} | {"general.architecture", "general.name",
                                                   "general.size_label"}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skip:
            continue
        types = field.types
        sub = types[1] if types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), types[0], sub)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--donor", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--context", type=int, help="context length to claim (default: the donor's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scheme", choices=("q4_1", "q4_k_m"), default="q4_1")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.donor)
    arch = "llama"
    vocab = int(reader.fields[f"{arch}.vocab_size"].contents())
    head_dim = args.hidden // args.heads
    writer = gguf.GGUFWriter(args.out, arch)
    writer.add_name(f"random llama {args.layers}x{args.hidden}")
    copy_metadata(reader, writer, arch)
    writer.add_block_count(args.layers)
    writer.add_embedding_length(args.hidden)
    writer.add_feed_forward_length(args.intermediate)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_context_length(args.context or int(reader.fields[f"{arch}.context_length"].contents()))

    rng = np.random.default_rng(args.seed)
    Q4_1, Q8_0, F32 = (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0,
                       gguf.GGMLQuantizationType.F32)

    Q4_K, Q6_K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K
    # Super-block bytes, and where its half-float scales lie.
    K_LAYOUT = {Q4_K: (144, (0, 2)), Q6_K: (210, (208,))}

    def add(name, rows, cols, qtype):
        if qtype in K_LAYOUT:
            size, scales_at = K_LAYOUT[qtype]
            blocks = rng.integers(0, 256, (rows, cols // 256, size), dtype=np.uint8)
            for at in scales_at:
                blocks[:, :, at:at + 2] = np.frombuffer(np.float16(1e-3).tobytes(), dtype=np.uint8)
            writer.add_tensor(name, blocks.reshape(rows, -1), raw_dtype=qtype)
            return
        values = rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    k_quants = args.scheme == "q4_k_m"
    proj = Q4_K if k_quants else Q4_1
    add("token_embd.weight", vocab, args.hidden, Q4_K if k_quants else Q8_0)
    if k_quants:
        add("output.weight", vocab, args.hidden, Q6_K)
    writer.add_tensor("output_norm.weight", np.ones(args.hidden, dtype=np.float32), raw_dtype=F32)
    kv = args.kv_heads * head_dim
    for i in range(args.layers):
        print(f"layer {i + 1}/{args.layers}", flush=True)
        n = args.layers
        # llama.cpp's use_more_bits: the first and last eighth, and every third in between.
        more_bits = i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
        wide = Q6_K if k_quants and more_bits else proj
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(args.hidden, dtype=np.float32), raw_dtype=F32)
        add(f"blk.{i}.attn_q.weight", args.hidden, args.hidden, proj)
        add(f"blk.{i}.attn_k.weight", kv, args.hidden, proj)
        add(f"blk.{i}.attn_v.weight", kv, args.hidden, wide)
        add(f"blk.{i}.attn_output.weight", args.hidden, args.hidden, proj)
        add(f"blk.{i}.ffn_gate.weight", args.intermediate, args.hidden, proj)
        add(f"blk.{i}.ffn_up.weight", args.intermediate, args.hidden, proj)
        add(f"blk.{i}.ffn_down.weight", args.hidden, args.intermediate, wide)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
