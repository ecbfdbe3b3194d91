#!/usr/bin/env python3
"""Question: does a package exported from a GGUF give the logits of that GGUF's exactly dequantized model?

Exports GGUF with float32 activations (--accuracy-level 1) and with the default int8 activations, and
compares each with the numpy reference forward on the GGUF's tensors dequantized by gguf (float32):
mean KL(reference || package), max |logit diff| and top-1 agreement over windows of the bundled
calibration text (8 x 512 = 4,096 tokens by default). Then greedy text on a few prompts.

usage: python benchmarks/gguf_same_file.py MODEL.gguf OUT_DIR [--windows 8 --window-len 512 --text FILE]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.families import family_for
from edge_llm.export.families.tensors import CanonicalTensors
from edge_llm.export.gguf_import import open_gguf
from edge_llm.export.recipe import BASE_RECIPE, RECIPES
from edge_llm.export.reference import forward
from edge_llm.session import ModelSession
from edge_llm.tokenizer import Tokenizer

PROMPTS = ["What is the capital of France?", "Who wrote Romeo and Juliet?", "Give me three tips for sleeping well."]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    lp, lq = log_softmax(ref.astype(np.float64)), log_softmax(got.astype(np.float64))
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return {"mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "max_abs_logit_diff": float(np.abs(ref - got).max()),
            "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window-len", type=int, default=512)
    ap.add_argument("--text", type=Path, default=Path(__file__).resolve().parents[1] / "edge_llm" / "data" / "calibration.txt",
                    help="text to score (default: the bundled calibration text, about 3,200 SmolLM2 tokens)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    pkgs = {}
    for name, level in (("fp32-activations", 1), ("default-int8-activations", 4)):
        pkgs[name] = a.out / name
        r = export_checkpoint(a.gguf, pkgs[name], recipe=replace(RECIPES[BASE_RECIPE], accuracy_level=level),
                              force=True, validate=False)
        print(name, "package", r.package_bytes, "bytes; bits/weight", r.manifest["quantization"]["gguf"], flush=True)
    sessions = {k: ModelSession(p, threads=2) for k, p in pkgs.items()}
    tok = Tokenizer.from_manifest(sessions["fp32-activations"].manifest)
    text = a.text.read_text(encoding="utf-8")
    ids = np.asarray(tok.encode(text), np.int64)
    n = a.windows * a.window_len
    if len(ids) < n:
        raise SystemExit(f"{a.text} has {len(ids)} tokens, fewer than {n}")
    refs, gots = [], {k: [] for k in sessions}
    with open_gguf(a.gguf) as ck:
        family, cfg = family_for(ck.config)
        canonical = CanonicalTensors(ck, family, cfg)          # the family's names (Gemma: its (1 + w) norms)
        cache = {}
        get = lambda name: cache.setdefault(name, canonical.load(name))
        for w in range(a.windows):
            win = ids[w * a.window_len:(w + 1) * a.window_len]
            refs.append(forward(cfg, get, win))
            for k, s in sessions.items():
                gots[k].append(s.logits_all(win))
            print(f"window {w + 1}/{a.windows}", flush=True)
    ref = np.concatenate(refs)
    result = {"gguf": a.gguf.name, "tokens": int(ref.shape[0]),
              "vs_exact_dequantized": {k: compare(ref, np.concatenate(v)) for k, v in gots.items()}}
    from edge_llm.api import Model
    result["greedy"] = {}
    for k, p in pkgs.items():
        m = Model.load(p, threads=2, speculate="off")           # plain decoding: the packages' own text
        result["greedy"][k] = ["".join(r.text for r in m.chat([{"role": "user", "content": q}], max_new_tokens=40))
                               for q in PROMPTS]
    print(json.dumps(result, indent=1, ensure_ascii=False))
    (a.out / "gguf_same_file.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
