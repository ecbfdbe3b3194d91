"""Size-vs-quality table for the export recipes on the trained fixture (issue: quantization quality).

    python benchmarks/quality.py --out benchmarks/results/quality-fixture   [--max-tokens 60000]

Exports ../shared/fixtures/minicpm-tiny with every recipe in edge_llm.export.recipe.RECIPES (plus any
`--calibration FILE` variant), evaluates each on the first --max-tokens tokens of corpus-valid.txt
against the fp32 export, and writes <out>.json and <out>.md. Package sizes count every byte of the
package folder. For the MiniCPM-2B shape it also computes what each recipe's package would weigh
(exact layout arithmetic, checked against a real export in benchmarks/results/export-2b.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edge_llm.api import Model
from edge_llm.evaluate import evaluate, markdown_row
from edge_llm.export.config import DecoderConfig, config_for
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.recipe import DEFAULT_RECIPE, RECIPES
from edge_llm.export.synth import SHAPES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
BF16_2B = 5_449_761_792


def int4_bytes(cfg: DecoderConfig, recipe) -> int:
    """Weight bytes of a package: 4-bit codes + fp32 scales (+ packed zero points) + fp32 norms."""
    total = 0
    for name, shape in cfg.expected_shapes().items():
        if len(shape) == 1:
            total += 4 * shape[0]
            continue
        n, k = shape
        bs = recipe.block_for(name, k) if not name.endswith("embed_tokens.weight") or recipe.head_block_size is None \
            else recipe.lm_head_block
        nb = -(-k // bs)
        total += n * nb * bs // 2 + 4 * n * nb + (0 if recipe.symmetric else n * (-(-nb // 2)))
        if name.endswith("embed_tokens.weight") and not recipe.symmetric:
            total += n * nb          # GatherBlockQuantized's own zero points
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality-fixture"))
    ap.add_argument("--max-tokens", type=int, default=60_000)
    ap.add_argument("--recipes", default=",".join(k for k in RECIPES if k != "fp32"))
    ap.add_argument("--calibration", type=Path, default=None,
                    help="extra row: --calibration-recipe calibrated on this text instead of the bundled one")
    ap.add_argument("--calibration-recipe", default="gptq-asym-b128")
    args = ap.parse_args()
    text = SHARED / "corpus-valid.txt"
    cfg2b = config_for({**SHAPES["minicpm-2b"], "architectures": ["MiniCPMForCausalLM"]})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = Path(tmp) / "fp32"
        export_checkpoint(SHARED / "minicpm-tiny", ref_dir, recipe=RECIPES["fp32"], validate=False)
        ref = Model.load(ref_dir)
        plans = [(name, RECIPES[name]) for name in args.recipes.split(",")]
        if args.calibration:
            plans.append((f"{args.calibration_recipe}+calib:{args.calibration.name}",
                          replace(RECIPES[args.calibration_recipe], calibration=str(args.calibration))))
        for name, recipe in plans + [("fp32", None)]:
            if recipe is None:          # the reference itself: perplexity only
                r = evaluate(ref, text, max_tokens=args.max_tokens)
                results.append(r | {"recipe": "fp32", "export_seconds": 0.0, "default": False, "size_2b_shape_bytes": None})
                print("fp32", markdown_row(r), flush=True)
                continue
            out = Path(tmp) / name.replace(":", "_")
            t0 = time.perf_counter()
            export_checkpoint(SHARED / "minicpm-tiny", out, recipe=recipe, validate=False)
            export_s = time.perf_counter() - t0
            r = evaluate(Model.load(out), text, reference=ref if name != "fp32" else None, max_tokens=args.max_tokens)
            r |= {"recipe": name, "export_seconds": export_s, "default": name == DEFAULT_RECIPE,
                  "size_2b_shape_bytes": None if recipe.precision == "fp32" else int4_bytes(cfg2b, recipe)}
            results.append(r)
            print(name, markdown_row(r), flush=True)
    fp32_ppl = next(r["perplexity"] for r in results if r["recipe"] == "fp32")
    lines = ["| recipe | fixture package vs bf16 | 2B-shape weights vs bf16 | perplexity (Δ vs fp32) | top-1 agree | KL | export s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        size2b = f"{r['size_2b_shape_bytes'] / BF16_2B:.1%}" if r["size_2b_shape_bytes"] else "—"
        top1 = f"{r['top1_agreement']:.1%}" if "top1_agreement" in r else "—"
        kl = f"{r['kl_divergence']:.4f}" if "kl_divergence" in r else "—"
        name = f"**{r['recipe']}** (default)" if r["default"] else r["recipe"]
        lines.append(f"| {name} | {r['package_bytes'] / r['source_bytes']:.1%} | {size2b} | {r['perplexity']:.3f} "
                     f"({r['perplexity'] / fp32_ppl - 1:+.1%}) | {top1} | {kl} | {r['export_seconds']:.0f} |")
    md = (f"# Size vs quality on the trained fixture\n\nFirst {results[0]['tokens_scored']} tokens of "
          f"corpus-valid.txt (protocol of shared/fixtures/README.md), KL/top-1 against the fp32 export.\n"
          f"Command: `python {' '.join(sys.argv)}`\n\n" + "\n".join(lines) + "\n")
    args.out.with_suffix(".md").write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(md)


if __name__ == "__main__":
    main()
