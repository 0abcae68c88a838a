#!/usr/bin/env python3
"""Make a random-weight Qwen2ForCausalLM checkpoint in a HuggingFace folder, for benchmarks and
device checks where no real checkpoint can be fetched (nothing reaches a model hub here).

    python3 scripts/make_random_qwen2.py OUT --shape 1.5b --tokenizer TOKENIZER [--device cuda]

--shape 1.5b is Qwen2-1.5B's shape (28 layers, hidden 1536, 12 query / 2 key-value heads,
intermediate 8960, vocabulary 151936, tied embeddings), saved in bfloat16 (3.1 GB); --shape tiny
is a 2-layer model for trying this script out. The weights are drawn as transformers initialises
a new model (normal, std 0.02), seeded, so a run is repeatable.

TOKENIZER is a folder holding tokenizer.json (and tokenizer_config.json), or a .gguf file whose
tokenizer transformers rebuilds; it is copied into OUT. Its vocabulary may be smaller than the
model's: ids past it decode to nothing, which a throughput benchmark does not mind.
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

SHAPES = {
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True),
}


def load_tokenizer(source):
    if source.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(source))
        return AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return AutoTokenizer.from_pretrained(source)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1.5b")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()

    tok = load_tokenizer(a.tokenizer)
    config = Qwen2Config(
        **SHAPES[a.shape],
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        dtype=a.dtype,
    )
    torch.manual_seed(0)
    with torch.device(a.device):  # initialising 1.5 B parameters on the GPU takes a second
        model = Qwen2ForCausalLM(config)
    model = model.to(getattr(torch, a.dtype)).eval()
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save_pretrained(a.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: Qwen2 {a.shape}, {params / 1e9:.2f} B parameters, {a.dtype}")


if __name__ == "__main__":
    main()
