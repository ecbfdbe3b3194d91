"""Merge score.py runs of one model and write the committed table.

    python benchmarks/quality_peers/report.py --out benchmarks/results/quality-peers-fixture RUN1.json [RUN2.json ...]

Runs merge only when they scored the same windows (model, text, filter, tokens, window) and their fp32
reference gave the same perplexity, so candidates scored in separate runs share one table; a later run's
row replaces an earlier row of the same name. Writes OUT.json (merged) and OUT.md: one row per
candidate, by size, with bytes, % of the bf16 checkpoint, bits per weight, perplexity (change vs
fp32), mean KL, KL p99, top-1 agreement; then the llama.cpp tensor-type mix of each GGUF.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from portable import portable

from edge_llm.export.recipe import DEFAULT_RECIPE, RECIPES, Recipe


def registered_name(r: dict) -> str | None:
    """The registered recipe a package was exported with, matched by its manifest's recipe fields (fields
    a package predates take their defaults), so rows exported under --custom names still find theirs."""
    fields = {k: v for k, v in r.get("recipe", {}).items() if k in Recipe.__dataclass_fields__}
    if fields.get("bpw") is not None:
        fields["tensors"] = {}      # a --bpw package records its plan; the preset is the budget before planning
    if fields.get("bpw_margin") is not None:
        fields["bpw"] = None        # the default records the budget its margin gave
    fields["strict_budget"] = True      # --bpw B and --recipe bpwB plan alike
    try:
        recipe = Recipe(**fields)
    except Exception:       # a field value this version refuses: not a registered recipe
        return None
    return next((name for name, reg in RECIPES.items() if replace(reg, strict_budget=True) == recipe), None)


def describe(q: dict) -> str:
    """Short recipe text for an unregistered point: block, sym/asym, clip, head/override bits, scales."""
    if q.get("bpw") is not None:
        return f"`--bpw {q['bpw']:g}` plan on the base recipe"
    parts = [f"b{q.get('block_size')}", "sym" if q.get("symmetric") else "asym"]
    if q.get("clip_search"):
        parts.append("clip")
    if q.get("head_bits") or q.get("head_block_size"):
        parts.append("head" + (f" {q['head_bits']}-bit" if q.get("head_bits") else "")
                     + (f" b{q['head_block_size']}" if q.get("head_block_size") else ""))
    if q.get("bits", 4) != 4:
        parts.append(f"{q['bits']}-bit")
    for key, o in (q.get("overrides") or {}).items():
        parts.append(f"{key.split('.')[-1]} " + " ".join(f"{'b' if k == 'block_size' else ''}{v}{'-bit' if k == 'bits' else ''}"
                                                     for k, v in o.items()))
    if q.get("scale_dtype") == "float16":
        parts.append("fp16 scales")
    return ", ".join(parts)


def _kl(x: float) -> str:
    return f"{x:.4f}" if x >= 0.01 else f"{x:.6f}" if x >= 1e-5 else f"{x:.0e}"


def row(r: dict, label: str) -> str:
    if "kl_divergence" not in r:
        return (f"| {label} | {r['bytes']:,} | {r['fraction_of_bf16']:.1%} | {r['bits_per_weight']:.2f} | "
                f"{r['perplexity']:.3f} | — | — | — | — |")
    return (f"| {label} | {r['bytes']:,} | {r['fraction_of_bf16']:.1%} | {r['bits_per_weight']:.2f} | "
            f"{r['perplexity']:.3f} | {r['perplexity_change']:+.2%} | {_kl(r['kl_divergence'])} | "
            f"{r['kl_divergence_p99']:.3f} | {r['top1_agreement']:.1%} |")


def markdown(data: dict, *, note: str = "") -> str:
    rows = sorted(data["rows"], key=lambda r: (r["kind"] != "edge-llm" or "kl_divergence" in r, r["bytes"]))
    head = ("| format | bytes | % of bf16 | bits/weight | perplexity | Δ ppl | mean KL | KL p99 | top-1 |\n"
            "|---|---|---|---|---|---|---|---|---|")
    text = f"{data['text']}" + (" (documents without CJK characters only)" if data.get("english_only") else "")
    main, extra, plans, seen = [], [], [], set()
    for r in rows:
        if r["kind"] != "edge-llm":
            line = row(r, f"llama.cpp {r['name'].removeprefix('llama.cpp ')}")
            main.append(line)
            if "F32" not in r["name"]:
                plans.append(line)
            continue
        if (r.get("recipe") or {}).get("tensors") and (r["recipe"].get("bpw") or r["recipe"].get("bpw_margin")):
            reg = registered_name(r)
            acc = r["recipe"].get("accuracy_level", 4)
            label = (f"edge-llm `--recipe {reg}`" if reg else f"edge-llm `--bpw {r['recipe']['bpw']:g}"
                     + (f" --accuracy-level {acc}`" if acc != 4 else "`"))
            plans.append(row(r, f"**{label}** (default)" if reg == DEFAULT_RECIPE else label))
            continue
        if r["name"] == "fp32 (reference)":
            main.append(row(r, "edge-llm fp32 (the reference)"))
            continue
        reg = registered_name(r)
        if reg and reg not in seen:
            seen.add(reg)
            main.append(row(r, f"**edge-llm {reg}** (default)" if reg == DEFAULT_RECIPE else f"edge-llm {reg}"))
        elif not reg:
            extra.append(row(r, f"{r['name']}: {describe(r['recipe'])}"))
    out = [f"# Quality side by side: {data['model']}", "",
           f"{data['tokens_scored']:,} tokens of {text}, {data['tokens_scored'] // data['window']} fresh windows of "
           f"{data['window']} (ids from edge-llm's tokenizer, fed as ids to both runtimes); KL, top-1 and Δ ppl "
           f"against edge-llm's fp32 export. llama.cpp KV cache {data['llama_kv_cache']}. bits/weight = weight "
           f"bytes (model.onnx.data / GGUF tensor data) × 8 ÷ {data['parameters']:,} parameters; % of bf16 = whole "
           f"package folder or GGUF file ÷ the checkpoint's {data['source_bytes']:,} weight bytes.", ""]
    if note:
        out += [note, ""]
    out += ["Registered recipes (`edge-llm export --recipe NAME`) and llama.cpp:", "", head] + main
    if plans:
        out += ["", "Per-tensor budget plans (`--bpw B`, `--recipe bpwB`, the default `q4-plan`: bits and block per "
                "tensor chosen by measured sensitivity; the mix is in each package's manifest) and llama.cpp, by size:",
                "", head] + plans
    if extra:
        out += ["", "Exploration points (not registered; `export_packages.py --custom`, fields as listed):", "",
                head.replace("| format |", "| point |")] + extra
    mixes = [r for r in rows if r["kind"] == "llama.cpp"]
    if mixes:
        out += ["", "llama.cpp tensor types (share of parameters):", ""]
        for r in mixes:
            total = sum(r["tensor_types_by_elements"].values())
            mix = ", ".join(f"{t} {n / total:.0%}" for t, n in
                            sorted(r["tensor_types_by_elements"].items(), key=lambda kv: -kv[1]))
            out.append(f"- {r['name']}: {mix}")
    out += ["", "Commands:", ""] + [f"- `{' '.join(c)}`" for c in data.get("commands", [data["command"]])] + [""]
    return portable("\n".join(out))


SAME = ("model", "text", "english_only", "tokens_scored", "window", "llama_kv_cache")


def merge(runs: list[dict]) -> dict:
    base = dict(runs[0])
    ref_ppl = next(r["perplexity"] for r in base["rows"] if r["name"] == "fp32 (reference)")
    rows = {r["name"]: r for r in base["rows"]}
    commands = [base["command"]]
    for run in runs[1:]:
        for key in SAME:
            same = portable(run[key]) == portable(base[key]) if key == "text" else run.get(key) == base.get(key)
            if not same:       # the text path as committed: runs give it relative or absolute
                raise SystemExit(f"cannot merge: {key} differs ({run.get(key)!r} vs {base.get(key)!r})")
        ppl = next(r["perplexity"] for r in run["rows"] if r["name"] == "fp32 (reference)")
        if abs(ppl - ref_ppl) > 1e-6 * ref_ppl:     # float32 vs float64 log-softmax: ~1e-7
            raise SystemExit(f"cannot merge: the fp32 reference perplexity differs ({ppl} vs {ref_ppl})")
        rows |= {r["name"]: r for r in run["rows"]}
        commands.append(run["command"])
    base["rows"] = list(rows.values())
    base["commands"] = commands
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="score.py JSON files of one model")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    data = merge([json.loads(p.read_text()) for p in args.runs])
    args.out.with_suffix(".json").write_text(portable(json.dumps(data, indent=2)))
    args.out.with_suffix(".md").write_text(markdown(data, note=args.note))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
