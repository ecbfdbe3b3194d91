"""What verifying drafts in a k-row forward changes (issue 22): teacher-forced logits of the k-row path
against the one-row path that plain decoding takes, on real text.

    python benchmarks/speculative_kl.py --package PKG --reference FP32_PKG [--noise PKG_ACC0]
        [--text ../shared/fixtures/corpus-valid.txt] [--tokens 4096] [--rows 5] [--prefix 64]
        [--markdown OUT.md] [--json OUT.json]

For windows of the text (each `prefix` tokens prefilled, then 4 * 32 positions): the one-row path
feeds one token per forward (`ModelSession.forward`, as plain decoding does); the k-row path feeds the
same tokens `rows` at a time (`forward_all`, as lookup verifies `rows - 1` drafts whose guesses were all
right). Both from the same prefilled cache. Reported, over every position:
* KL(one-row || k-row) and their top-1 agreement, the largest |logit difference|;
* each path's KL from the float32 reference package (fp32 weights: what the int4 package approximates)
  and top-1 agreement with it — the question is whether verifying in k rows is a worse model, not only
  a different one;
* with `--noise`, the same weights exported with float32 activations (`--accuracy-level 0`): the KL
  between it and the package's one-row path is what int8 activation rounding itself costs, the scale
  against which the k-row difference is judged.
Not a timing benchmark: any machine, any load.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge_llm.api import Model

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality_peers"))
from portable import portable  # noqa: E402

STEPS = 128


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, nats."""
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def one_row(model: Model, window: np.ndarray, prefix: int) -> np.ndarray:
    s = model.session
    cache = s.new_cache()
    s.forward(window[:prefix], cache)
    return np.stack([s.forward(window[i:i + 1], cache) for i in range(prefix, len(window))])


def k_rows(model: Model, window: np.ndarray, prefix: int, rows: int) -> np.ndarray:
    s = model.session
    cache = s.new_cache()
    s.forward(window[:prefix], cache)
    out = [s.forward_all(window[i:i + rows], cache) for i in range(prefix, len(window), rows)]
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--noise", type=Path, default=None)
    ap.add_argument("--text", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/corpus-valid.txt")
    ap.add_argument("--tokens", type=int, default=4096, help="positions scored in all (default 4096)")
    ap.add_argument("--rows", type=int, default=5, help="rows per verifying forward (default 5: 4 drafts)")
    ap.add_argument("--prefix", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    pkg = Model.load(a.package, threads=a.threads)
    ref = Model.load(a.reference, threads=a.threads)
    noise = Model.load(a.noise, threads=a.threads) if a.noise else None
    ids = np.array(pkg.tokenizer.encode(a.text.read_text(encoding="utf-8"), bos=False), np.int64)
    win = a.prefix + STEPS
    n_windows = max(1, a.tokens // STEPS)
    stride = max(win, (len(ids) - win) // n_windows)
    acc: dict[str, list[np.ndarray]] = {k: [] for k in (
        "kl_1_k", "top1_1_k", "maxdiff", "kl_ref_1", "kl_ref_k", "top1_ref_1", "top1_ref_k", "kl_noise_1", "top1_noise_1")}
    for w in range(n_windows):
        window = ids[w * stride:w * stride + win]
        if len(window) < win:
            break
        one, krow, fp = one_row(pkg, window, a.prefix), k_rows(pkg, window, a.prefix, a.rows), one_row(ref, window, a.prefix)
        acc["kl_1_k"].append(kl(one, krow))
        acc["top1_1_k"].append(one.argmax(-1) == krow.argmax(-1))
        acc["maxdiff"].append(np.abs(one - krow).max(-1))
        acc["kl_ref_1"].append(kl(fp, one))
        acc["kl_ref_k"].append(kl(fp, krow))
        acc["top1_ref_1"].append(fp.argmax(-1) == one.argmax(-1))
        acc["top1_ref_k"].append(fp.argmax(-1) == krow.argmax(-1))
        if noise is not None:
            exact = one_row(noise, window, a.prefix)
            acc["kl_noise_1"].append(kl(exact, one))
            acc["top1_noise_1"].append(exact.argmax(-1) == one.argmax(-1))
    r = {k: float(np.concatenate(v).mean()) for k, v in acc.items() if v}
    r["maxdiff"] = float(np.concatenate(acc["maxdiff"]).max())
    r["positions"] = int(sum(len(v) for v in acc["kl_1_k"]))
    r["rows"] = a.rows
    cmd = f"python benchmarks/speculative_kl.py {portable(' '.join(sys.argv[1:]))}"
    q = pkg.manifest.quantization
    lines = [f"# Verifying in {a.rows}-row forwards vs one row at a time", "",
             f"`{cmd}` · package {a.package.name} (accuracy_level {q.get('accuracy_level', '-')}, "
             f"scales {q.get('scale_dtype', '-')}, {q.get('bpw', '-')} bits/weight planned), {r['positions']:,} teacher-forced positions of {a.text.name}", "",
             "| quantity | value |", "|---|---:|",
             f"| KL(one-row ‖ {a.rows}-row), nats/token | {r['kl_1_k']:.2e} |",
             f"| top-1 agreement, one-row vs {a.rows}-row | {r['top1_1_k']:.2%} |",
             f"| largest logit difference | {r['maxdiff']:.3f} |",
             f"| KL(fp32 reference ‖ one-row) | {r['kl_ref_1']:.4f} |",
             f"| KL(fp32 reference ‖ {a.rows}-row) | {r['kl_ref_k']:.4f} |",
             f"| top-1 vs reference, one-row / {a.rows}-row | {r['top1_ref_1']:.2%} / {r['top1_ref_k']:.2%} |"]
    if noise is not None:
        lines.append(f"| int8 activation noise: KL(same weights, float32 activations ‖ one-row) | {r['kl_noise_1']:.2e} |")
        lines.append(f"| top-1 agreement, float32 activations vs one-row | {r['top1_noise_1']:.2%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        a.markdown.write_text(text)
    if a.json:
        a.json.write_text(json.dumps({"command": cmd, **r}, indent=2) + "\n")


if __name__ == "__main__":
    main()
