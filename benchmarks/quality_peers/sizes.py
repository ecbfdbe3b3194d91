"""Weight bytes a recipe gives a model shape, by layout arithmetic (no export): how big the MiniCPM-2B
package of each recipe would be next to the measured default package.

    python benchmarks/quality_peers/sizes.py [--shape minicpm-2b] [--recipes a,b] [--custom 'NAME={...}']

Per 2-D weight (N, K) with block b (after Recipe.block_for / fit), n_b = ceil(K / b) blocks per row:
codes N·n_b·b·bits/8, scales N·n_b·(4 | 2 with float16 scales), asymmetric int4 zero points N·ceil(n_b/2),
and for an asymmetric int4 tied table GatherBlockQuantized's own zero points N·n_b; 1-D weights fp32.
Checked against the exported fixture and SmolLM2 packages (model.onnx.data) by --check.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_llm.export.families import family_for
from edge_llm.export.recipe import BASE_RECIPE, RECIPES, Recipe
from edge_llm.export.synth import SHAPES

# measured: benchmarks/results/export-2b.md (default recipe, MiniCPM-2B shape)
BF16_2B = 5_449_761_792
PACKAGE_2B_DEFAULT = 1_463_600_000


def weight_bytes(cfg, r: Recipe) -> int:
    total = 0
    head = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
    scale_bytes = 2 if r.scale_dtype == "float16" else 4
    for name, shape in cfg.expected_shapes().items():
        if len(shape) == 1:
            total += 4 * shape[0]
            continue
        n, k = shape
        is_head = name == head
        if is_head and r.head_block_size is not None:
            bs = r.fit(r.lm_head_block, k)
        else:
            bs = r.block_for(name, k)
        bits = (r.head_bits or r.bits_for(name)) if is_head else r.bits_for(name)
        nb = -(-k // bs)
        total += n * nb * bs * bits // 8 + n * nb * scale_bytes
        if bits == 4 and not r.symmetric:
            total += n * (-(-nb // 2))
            if is_head and cfg.tie_word_embeddings or (name == "model.embed_tokens.weight"):
                total += n * nb
    # q|k|v and gate|up are packed into one matmul each: same rows, same blocks, no change in bytes
    return total


def config(path: Path):
    return family_for(json.loads((path / "config.json").read_text()))[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="minicpm-2b")
    ap.add_argument("--recipes", default=",".join(k for k in RECIPES if k != "fp32"))
    ap.add_argument("--custom", action="append", default=[])
    ap.add_argument("--check", type=Path, nargs="+", default=None, metavar="CHECKPOINT PACKAGE",
                    help="a checkpoint and packages exported from it: arithmetic vs model.onnx.data")
    args = ap.parse_args()
    if args.check:
        cfg = config(args.check[0])
        for pkg in args.check[1:]:
            q = json.loads((pkg / "manifest.json").read_text())["quantization"]
            r = Recipe(**{k: v for k, v in q.items() if k in Recipe.__dataclass_fields__})
            got, want = weight_bytes(cfg, r), (pkg / "model.onnx.data").stat().st_size
            print(f"{pkg.name}: arithmetic {got:,} B, model.onnx.data {want:,} B ({got / want - 1:+.3%})")
        return
    plans = {n: RECIPES[n] for n in args.recipes.split(",") if n}
    for spec in args.custom:
        name, fields = spec.split("=", 1)
        plans[name] = Recipe(**json.loads(fields))
    cfg = family_for({"architectures": ["MiniCPMForCausalLM"], **SHAPES[args.shape]})[1]
    base = weight_bytes(cfg, RECIPES[BASE_RECIPE])
    print(f"| recipe | {args.shape} weights | package (measured default {PACKAGE_2B_DEFAULT / 1e6:,.1f} MB "
          f"± weights) | % of bf16 | smaller than bf16 |")
    print("|---|---|---|---|---|")
    for name, r in plans.items():
        w = weight_bytes(cfg, r)
        pkg = PACKAGE_2B_DEFAULT - base + w
        print(f"| {name} | {w / 1e6:,.1f} MB | {pkg / 1e6:,.1f} MB | {pkg / BF16_2B:.2%} | {1 - pkg / BF16_2B:.2%} |")


if __name__ == "__main__":
    main()
