"""Is decode speed a property of the process? Start N fresh processes on one package, each measuring
decode tok/s several times; report per-process medians and the spread within each process.

    python benchmarks/decode_modes.py PACKAGE [--processes 6] [--threads 2] [--out benchmarks/results/decode-modes.md]

On the development VM the figures fall into two clusters that hold for a whole process (see README).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from edge_llm.api import Model
m = Model.load(sys.argv[1], threads=int(sys.argv[2]), context_length=512)
c = m.cache(); m.session.forward([5] * 128, c)
out = []
for _ in range(6):
    c.length = 128
    t = time.perf_counter()
    for _ in range(24):
        m.session.forward([5], c)
    out.append(24 / (time.perf_counter() - t))
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("package")
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/decode-modes.md"))
    args = ap.parse_args()
    rows = []
    for i in range(args.processes):
        r = subprocess.run([sys.executable, "-c", CHILD, args.package, str(args.threads)], capture_output=True,
                           text=True, check=True)
        runs = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(runs)
        print(f"process {i}: median {statistics.median(runs):.2f} tok/s, runs {[round(x, 1) for x in runs]}", flush=True)
    lines = [f"# Decode tok/s per process ({args.package}, {args.threads} threads, depth 128, 6 × 24 steps each)",
             "", f"`python {' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| process | median tok/s | min | max |", "|---|---|---|---|"]
    for i, runs in enumerate(rows):
        lines.append(f"| {i} | {statistics.median(runs):.2f} | {min(runs):.2f} | {max(runs):.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
