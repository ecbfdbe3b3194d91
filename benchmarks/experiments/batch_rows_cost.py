"""What does a batched decode forward cost by the number of rows? (issue 22: why 4 streams give less than 3x)

    python benchmarks/experiments/batch_rows_cost.py PKG [PKG ...] [--rows 1,2,4,8] [--depth 128] [--reps 12]

For each package: a SlotPool of max(rows) slots, every slot prefilled with `depth` tokens, then
`SlotPool.decode` over the first B slots (one token each), `reps` times per B, B values interleaved;
the median seconds per forward, and relative to one row. A timing experiment: quiet machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge_llm.api import Model
from edge_llm.slots import SlotPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quality_peers"))
from portable import portable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("packages", nargs="+")
    ap.add_argument("--rows", default="1,2,4,8")
    ap.add_argument("--depth", type=int, default=128)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rows = [int(r) for r in a.rows.split(",")]
    lines = ["| package | " + " | ".join(f"{r} row(s)" for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for pkg in a.packages:
        m = Model.load(pkg, threads=a.threads, speculate="off")
        pool = SlotPool(m.session, max(rows), a.depth + a.reps * len(rows) + 8)
        rng = np.random.default_rng(0)
        for s in range(max(rows)):
            pool.acquire(a.depth + a.reps * len(rows) + 4, slot=s)
            pool.prefill(s, rng.integers(100, 1000, a.depth))
        times: dict[int, list[float]] = {r: [] for r in rows}
        pool.decode(list(range(max(rows))), [5] * max(rows))            # warm-up
        for i in range(a.reps):
            for r in (rows if i % 2 == 0 else rows[::-1]):
                t = time.perf_counter()
                pool.decode(list(range(r)), [5] * r)
                times[r].append(time.perf_counter() - t)
        med = {r: statistics.median(v) for r, v in times.items()}
        lines.append(f"| {portable(pkg)} (1 row {med[rows[0]] * 1000:.0f} ms) | "
                     + " | ".join(f"{med[r] / med[rows[0]]:.2f}" for r in rows) + " |")
        print(lines[-1], flush=True)
    print(f"\n`python benchmarks/experiments/batch_rows_cost.py {portable(' '.join(sys.argv[1:]))}`: seconds of a "
          f"batched decode forward relative to one row (median of {a.reps}), depth {a.depth}, {a.threads} threads\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
