"""Which tensor families does int4 hurt? Quantize one family at a time (everything else stays float32)
and measure the mean KL divergence of the numpy reference forward against the float model, on 4
windows of 512 tokens of the fixture's corpus-valid.txt.

    python benchmarks/experiments/sensitivity.py > benchmarks/results/sensitivity-fixture.txt

Prints one line per (block size, scheme, family): `128 asym-clip qkv 0.0232`. Asymmetric blocks use
the clip search (the default recipe's), symmetric ones plain round to nearest.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge_llm.api import Model
from edge_llm.evaluate import corpus_tokens
from edge_llm.export.checkpoint import open_checkpoint
from edge_llm.export.config import config_for
from edge_llm.export.quant import dequantize_int4, quantize_int4
from edge_llm.export.reference import forward
from edge_llm.paths import BUNDLED

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
WINDOW, N_WINDOWS = 512, 4
FAMILIES = {                      # weight-name fragments of each family
    "head": ("embed_tokens",),    # the tied embedding is also the lm_head
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}
SCHEMES = [(128, True), (128, False), (32, True)]   # (block size, symmetric)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kl(cfg, get, windows: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean over windows and positions of KL(reference || model)."""
    kls = []
    for ids, ref in zip(windows, reference):
        logp = log_softmax(forward(cfg, get, ids))
        kls.append((np.exp(ref) * (ref - logp)).sum(-1).mean())
    return float(np.mean(kls))


def quantize_family(weights: dict, fragments, *, block: int, symmetric: bool) -> dict:
    """A copy of `weights` with the matrices of one family replaced by their int4 round trip."""
    out = dict(weights)
    for name, w in weights.items():
        if w.ndim == 2 and any(f in name for f in fragments):
            q = quantize_int4(w, block_size=block, symmetric=symmetric, clip_search=not symmetric)
            out[name] = dequantize_int4(q)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=FIXTURES / "minicpm-tiny")
    ap.add_argument("--corpus", type=Path, default=FIXTURES / "corpus-valid.txt")
    a = ap.parse_args()

    with open_checkpoint(a.checkpoint) as ckpt:
        cfg = config_for(ckpt.config)
        weights = {name: ckpt.load(name) for name in ckpt.names()}
    ids = np.array(corpus_tokens(Model.load(BUNDLED, threads=1), a.corpus)[:N_WINDOWS * WINDOW + 1])
    windows = [ids[i * WINDOW:(i + 1) * WINDOW] for i in range(N_WINDOWS)]
    reference = [log_softmax(forward(cfg, weights.get, w)) for w in windows]

    print(f"# python benchmarks/experiments/sensitivity.py  (block, scheme, tensor family quantized alone, KL vs float "
          f"on {N_WINDOWS * WINDOW} tokens)")
    for block, symmetric in SCHEMES:
        scheme = "sym" if symmetric else "asym-clip"
        for family, fragments in FAMILIES.items():
            q = quantize_family(weights, fragments, block=block, symmetric=symmetric)
            print(block, scheme, family, round(mean_kl(cfg, q.get, windows, reference), 4), flush=True)


if __name__ == "__main__":
    main()
