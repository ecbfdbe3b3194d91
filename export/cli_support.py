"""Glue between `edge-llm export` and the exporter: recipe from flags, and the final summary."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_llm.errors import ExportError

from .exporter import ExportResult, export_checkpoint
from .recipe import ARM_MAX_BLOCK, BASE_RECIPE, DEFAULT_RECIPE, RECIPES, Recipe, arm_block


def make_recipe(*, precision="int4", recipe_name=None, block_size=None, asymmetric=None, accuracy_level=None,
                calibration=None, target="any", bpw: float | None = None) -> Recipe:
    if precision == "fp32":
        return RECIPES["fp32"]
    if recipe_name is not None and recipe_name not in RECIPES:
        raise ExportError(f"unknown recipe '{recipe_name}'; known: {', '.join(RECIPES)}")
    if recipe_name is None and bpw is None and block_size is not None:
        recipe_name = BASE_RECIPE       # a block size asked for: one uniform layout, not a planned mix
    r = RECIPES[recipe_name or DEFAULT_RECIPE]
    changes = {}
    if block_size is not None:
        changes["block_size"] = block_size
        changes["head_block_size"] = None
    if asymmetric is not None:
        changes["symmetric"] = not asymmetric
    if accuracy_level is not None:
        changes["accuracy_level"] = accuracy_level
    if calibration is not None:
        changes["calibration"] = str(calibration)
    if target == "arm":
        # KleidiAI int4 kernels: block a multiple of 32 and at most 128 here, K divisible by the block,
        # symmetric weights (older onnxruntime releases take no zero points on that path).
        changes["symmetric"] = True
        changes["target"] = "arm"
        # float32 scales: the KleidiAI path takes float32 activations (float16 ones are another kernel)
        changes["scale_dtype"] = "float32"
        # the recorded block size is the one the graph uses (block_for may lower it further per K)
        changes["block_size"] = arm_block(block_size or r.block_size)
        if r.head_block_size is not None or "head_block_size" in changes:
            head = changes.get("head_block_size") or r.head_block_size or ARM_MAX_BLOCK
            changes["head_block_size"] = arm_block(head)
    r = replace(r, **changes)
    return r if bpw is None else r.with_budget(bpw)


def run_export(src: Path, out: Path, *, precision, recipe_name, block_size, asymmetric, accuracy_level, calibration,
               target, force, validate, progress, kv_dtype="float32", context_length=None, bpw=None) -> str:
    if recipe_name is None and bpw is None and Path(src).is_file():
        recipe_name = BASE_RECIPE       # a GGUF: its quantized tensors are carried; --bpw only when asked
    recipe = make_recipe(precision=precision, recipe_name=recipe_name, block_size=block_size, asymmetric=asymmetric,
                         accuracy_level=accuracy_level, calibration=calibration, target=target, bpw=bpw)
    result = export_checkpoint(src, out, recipe=recipe, force=force, validate=validate, progress=progress,
                               kv_dtype=kv_dtype, context_length=context_length)
    return summary(result)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _relative_size(package: int, source: int) -> str:
    """'27.5% of the source, 72.5% smaller', or '2.00× the source size' for a larger (fp32) package."""
    if not source:
        return "source size unknown"
    ratio = package / source
    if ratio > 1:
        return f"{ratio:.2f}× the source size"
    return f"{ratio:.1%} of the source, {1 - ratio:.1%} smaller"


def summary(r: ExportResult) -> str:
    q = r.manifest["quantization"]
    lines = [
        f"exported {r.package}",
        f"  recipe      {q['precision']}" + (
            f", block {q['block_size']} (head {q['head_block_size'] or q['block_size']}), "
            f"{'symmetric' if q['symmetric'] else 'asymmetric'}, accuracy level "
            f"{q['accuracy_level']}" + (", float16 scales" if q.get("scale_dtype") == "float16" else "")
            if q["precision"] == "int4" else ""),
        f"  source      {_mb(r.source_bytes)} ({', '.join(r.manifest['source']['files'])})",
        f"  package     {_mb(r.package_bytes)} ({_relative_size(r.package_bytes, r.source_bytes)})",
        f"  time        {r.seconds:.1f} s",
    ]
    if q.get("tensors"):
        lines.append(f"  mix         {mix_line(q['tensors'])}")
    params = r.manifest["model"]["parameters"]
    weights = r.manifest.get("sizes", {}).get("weights_bytes")
    if weights and q["precision"] == "int4":
        target = f" (budget {q['bpw']:g})" if q.get("bpw") else ""
        lines.append(f"  bits/weight {weights * 8 / params:.2f}{target}: {_mb(weights)} of weights for "
                     f"{params:,} parameters")
    g = q.get("gguf")
    if g:
        lines.append(f"  gguf        {g['gguf_bits_per_weight']:.2f} bits/weight in the GGUF, "
                     f"{g['package_bits_per_weight']:.2f} in the package ({q['scale_dtype']} scales)")
        for ty, t in g["types"].items():
            lines.append(f"    {ty:<6} {t['tensors']:>4} tensors  {t['carried']}")
        if g.get("note"):
            lines.append(f"  {g['note']}")
    if r.worst_tensor:
        w = r.worst_tensor
        lines.append(f"  worst tensor {w['tensor']}: relative RMS error {w['rel_rms_error']:.4f}, "
                     f"max abs error {w['max_abs_error']:.4g}")
    v = r.manifest.get("validation")
    if v and "max_abs_diff" in v:
        lines += validation_lines(v, q["precision"])
    return "\n".join(lines)


def validation_lines(v: dict, precision: str) -> list[str]:
    """The probe's figures and what they mean. 16 tokens cannot measure quality (the interval is some
    50 points wide; SmolLM2's 25% here is 50.7% over 2,048 tokens of `edge-llm eval`), but they do
    tell a working export from a broken one: a broken one (wrong scales, transposed or misplaced
    weights) agrees with the original on about 1/vocab of tokens, a working int4 one on 25-100% here."""
    from .validate import PROBE_TOKENS
    n = PROBE_TOKENS
    k = round(v["top1_agreement"] * n)
    lo, hi = wilson(k, n)
    head = (f"  validation  logits vs numpy reference (original weights, {n}-token probe): max |diff| "
            f"{v['max_abs_diff']:.3g}, top-1 agreement {k}/{n} ({lo:.0%}-{hi:.0%} at 95%)")
    if precision == "fp32":
        return [head, "              ok: fp32 matches the reference within 1e-3 (checked)"]
    if k >= MIN_PROBE_AGREEMENT:
        verdict = (f"ok: the package follows the original model (a broken export agrees on ~0 of {n}); a probe "
                   f"this short is no quality figure: edge-llm eval PKG --text FILE --reference FP32_PKG")
    else:
        verdict = (f"WARNING: {k} of {n} probe tokens agree; a working int4 export agrees on several, a broken "
                   f"one on ~0. Compare with an fp32 export: edge-llm eval PKG --text FILE --reference FP32_PKG")
    return [head, "              " + verdict]


MIN_PROBE_AGREEMENT = 2      # of 16: below it the export is suspect (see validation_lines)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def mix_line(tensors: dict[str, dict]) -> str:
    """'q_proj 6b64×3 4b128×5; ...': bits and block per tensor kind, from a --bpw plan."""
    from collections import Counter
    kinds: dict[str, Counter] = {}
    for name, o in tensors.items():
        kind = name.rsplit(".", 2)[-2] if name.startswith("model.layers.") else name.split(".")[-2]
        kinds.setdefault(kind, Counter())[f"{o['bits']}b{o['block_size']}"] += 1
    return "; ".join(f"{k} " + " ".join(f"{opt}×{n}" for opt, n in sorted(c.items(), key=lambda t: -t[1]))
                     for k, c in kinds.items())
