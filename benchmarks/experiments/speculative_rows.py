"""Is a k-row forward of a package exact and cheap enough for speculative decoding? (issue 15)

    python benchmarks/experiments/speculative_rows.py PKG [PKG ...] [--trials 20] [--threads 2] [--out OUT]

For each package:
* exactness: over `trials` random contexts (5..200 tokens of random ids), the logits of a k-row
  forward (`forward_all`, k = 2..12) against k successive 1-row forwards from the same cache: the
  largest |difference| and how many rows differ by more than 1e-3;
* cost: at 200 tokens of context, the seconds of a forward of r rows (r = 1, 2, 3, 4, 6, 8) relative to
  one row (median of 8 calls, 3 interleaved repeats).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_llm.api import Model


def exactness(s, trials: int) -> dict:
    rng = np.random.default_rng(1)
    worst: dict[int, list] = {}
    for _ in range(trials):
        n0 = int(rng.integers(5, 200))
        ids = rng.integers(3, 8000, n0 + 12)
        base = s.new_cache()
        s.forward(ids[:n0], base)
        b = base.copy()
        seq = np.stack([s.forward(ids[n0 + j:n0 + j + 1], b) for j in range(12)])
        for k in range(2, 13):
            rows = s.forward_all(ids[n0:n0 + k], base.copy())
            worst.setdefault(k, []).append(np.abs(rows - seq[:k]).max(1))
    return {k: {"max_abs_diff": float(np.max(v)), "rows_off": int((np.stack(v) > 1e-3).sum()), "rows": int(np.size(v))}
            for k, v in worst.items()}


def cost(s) -> dict:
    c = s.new_cache()
    s.forward(np.arange(5, 205, dtype=np.int64), c)
    res: dict[int, list] = {}
    for _ in range(3):
        for r in (1, 2, 3, 4, 6, 8):
            ts = []
            for _ in range(8):
                c.length = 200
                t = time.perf_counter()
                if r == 1:
                    s.forward(np.array([7], np.int64), c)
                else:
                    s.forward_all(np.arange(7, 7 + r, dtype=np.int64), c)
                ts.append(time.perf_counter() - t)
            res.setdefault(r, []).append(float(np.median(ts)))
    t1 = float(np.median(res[1]))
    return {"one_row_ms": 1000 * t1, "relative": {r: float(np.median(v)) / t1 for r, v in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+", type=Path)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = {}
    lines = ["# k-row forwards: exactness and cost", "",
             f"`python benchmarks/experiments/speculative_rows.py {' '.join(map(str, a.packages))} --trials {a.trials} "
             f"--threads {a.threads}`", "",
             "| package | quantization | max k-row vs 1-row diff (k ≤ 4) | (k ≤ 12) | rows off by > 1e-3 | 1 row ms | "
             "cost of 2 / 3 / 4 / 6 / 8 rows (× one row) |", "|---|---|---|---|---|---|---|"]
    for p in a.packages:
        m = Model.load(p, threads=a.threads, speculate="off")
        q = m.manifest.quantization
        ex, co = exactness(m.session, a.trials), cost(m.session)
        out[str(p)] = {"quantization": q, "exactness": ex, "cost": co}
        desc = (q.get("precision") if q.get("precision") == "fp32" else
                f"acc level {q.get('accuracy_level')}, {q.get('scale_dtype', 'float32')} scales")
        off = sum(v["rows_off"] for v in ex.values())
        total = sum(v["rows"] for v in ex.values())
        lines.append(f"| {p.name} | {desc} | {max(ex[k]['max_abs_diff'] for k in (2, 3, 4)):.2g} | "
                     f"{max(v['max_abs_diff'] for v in ex.values()):.2g} | {off}/{total} | {co['one_row_ms']:.1f} | "
                     + " / ".join(f"{co['relative'][r]:.2f}" for r in (2, 3, 4, 6, 8)) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if a.out:
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
