"""Decode tok/s of several packages, interleaved: each round runs every package once, each in a fresh
process, in rotating order; the report gives per-package medians over rounds and each package's median
ratio to the first one (paired by round). For a noisy shared machine.

    python benchmarks/quality_peers/decode_speed.py PKG_A PKG_B [...] --rounds 7 [--threads 2] [--out OUT]

One child: load with context 512, prefill 128 tokens, then 4 × 32 single-token decode steps from
position 128 (the cache rewound each time); its figure is the median of the 4. With --prefill: a
16-token warm-up, then three 256-token prefills into fresh caches; the median of the 3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from portable import portable

CHILD = r"""
import json, sys, time
from edge_llm.api import Model
m = Model.load(sys.argv[1], threads=int(sys.argv[2]), context_length=512)
c = m.cache(); m.session.forward(list(range(5, 133)), c)
out = []
for _ in range(4):
    c.length = 128
    t = time.perf_counter()
    for i in range(32):
        m.session.forward([7 + i], c)
    out.append(32 / (time.perf_counter() - t))
print(json.dumps(sorted(out)[len(out) // 2]))
"""

PREFILL_CHILD = r"""
import json, sys, time
import numpy as np
from edge_llm.api import Model
m = Model.load(sys.argv[1], threads=int(sys.argv[2]), context_length=512)
m.session.forward(list(range(5, 21)), m.cache())                 # warm-up
ids = np.arange(5, 261, dtype=np.int64)
out = []
for _ in range(3):
    c = m.cache()
    t = time.perf_counter()
    m.session.forward(ids, c)
    out.append(len(ids) / (time.perf_counter() - t))
print(json.dumps(sorted(out)[len(out) // 2]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packages", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="writes OUT.json and OUT.md")
    ap.add_argument("--prefill", action="store_true",
                    help="time a 256-token prefill (median of 3, after a warm-up) instead of decode")
    args = ap.parse_args()
    child = PREFILL_CHILD if args.prefill else CHILD
    names = [p.name for p in args.packages]
    runs = {n: [] for n in names}
    t0 = time.time()
    for r in range(args.rounds):
        order = list(range(len(names)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            out = subprocess.run([sys.executable, "-c", child, str(args.packages[i]), str(args.threads)],
                                 capture_output=True, text=True, check=True)
            runs[names[i]].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}: " + ", ".join(f"{n} {runs[n][-1]:.1f}" for n in names), flush=True)
    base = names[0]
    what = "Prefill tok/s (256 tokens)" if args.prefill else "Decode tok/s (depth 128)"
    lines = [f"# {what}, interleaved ({args.threads} threads, {args.rounds} rounds, fresh process each)",
             "", f"`python {portable(' '.join(sys.argv))}` — {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{time.time() - t0:.0f} s", "",
             f"| package | median tok/s | min | max | median ratio to {base} (paired by round) |", "|---|---|---|---|---|"]
    summary = {}
    for n in names:
        ratio = statistics.median(a / b for a, b in zip(runs[n], runs[base]))
        summary[n] = {"median": statistics.median(runs[n]), "runs": runs[n], "ratio_to_first": ratio}
        lines.append(f"| {n} | {summary[n]['median']:.1f} | {min(runs[n]):.1f} | {max(runs[n]):.1f} | {ratio:.3f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        args.out.with_suffix(".md").write_text(md)
        args.out.with_suffix(".json").write_text(portable(json.dumps(
            {"command": sys.argv, "threads": args.threads, "packages": [str(p) for p in args.packages],
             "results": summary}, indent=2)))


if __name__ == "__main__":
    main()
