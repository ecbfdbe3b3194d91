"""A checkpoint with SmolLM2-1.7B's shapes, SmolLM2's tokenizer and random bf16 weights (speed only).

SmolLM2-1.7B itself is not available offline; this is the larger same-tokenizer target that the
speculative benchmark (benchmarks/speculative.py --cost-package) measures verification cost on, with
SmolLM2-135M-Instruct drafting. Random weights: only speed and memory mean anything.

    python benchmarks/smollm2_shape.py --tokenizer $WORK/cache/smollm2-135m-instruct -o scratch/smollm2-1.7b-shape
    edge-llm export scratch/smollm2-1.7b-shape -o scratch/smollm2-1.7b-shape-int4
"""
from __future__ import annotations

import argparse

from edge_llm.export.synth import write_synthetic

# HuggingFaceTB/SmolLM2-1.7B(-Instruct) config.json
SMOLLM2_1_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 32,
                "intermediate_size": 8192, "vocab_size": 49152, "max_position_embeddings": 8192,
                "rms_norm_eps": 1e-05, "rope_theta": 130000, "tie_word_embeddings": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="folder with SmolLM2's tokenizer.json (any SmolLM2 size)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--layers", type=int, default=None, help="override the 24 layers")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write_synthetic(a.output, shape=SMOLLM2_1_7B, weight_format="safetensors", seed=a.seed,
                    tokenizer_dir=a.tokenizer, layers=a.layers)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
