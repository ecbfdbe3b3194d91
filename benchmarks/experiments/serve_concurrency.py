"""Should the server run requests' model steps at the same time (a thread each) or take turns?

    python benchmarks/experiments/serve_concurrency.py PACKAGE [--streams 1,2,4] [--tokens 64] [--rounds 3]
                                           [--threads N] [--markdown OUT.md]

For each number of streams, aggregate decode tokens/s of
  turns    one thread stepping every stream in turn (what `edge-llm serve` does), and
  threads  one Python thread per stream, calling onnxruntime concurrently on one session,
each stream on its own KV cache after a 32-token prompt; modes alternate within each round and the
median over rounds is reported. Also tokens per CPU-second of this process: on a machine shared with
other work, more threads can win wall-clock speed just by taking a larger share of the cores, while
on a device of its own the cores are the limit and tokens per CPU-second decide.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _report import emit   # this folder is on sys.path when a script here runs

from edge_llm.session import ModelSession


def _streams(session, n):
    caches = [session.new_cache() for _ in range(n)]
    for i, c in enumerate(caches):
        session.forward(np.arange(3 + i, 35 + i), c)
    return caches


def turns(session, n, tokens):
    caches = _streams(session, n)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(tokens):
        for c in caches:
            session.forward([5], c)
    return n * tokens / (time.perf_counter() - t), n * tokens / (time.process_time() - cpu)


def threads(session, n, tokens):
    caches = _streams(session, n)

    def run(c):
        for _ in range(tokens):
            session.forward([5], c)
    ts = [threading.Thread(target=run, args=(c,)) for c in caches]
    t, cpu = time.perf_counter(), time.process_time()
    for x in ts:
        x.start()
    for x in ts:
        x.join()
    return n * tokens / (time.perf_counter() - t), n * tokens / (time.process_time() - cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--streams", default="1,2,4")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="Intra-op threads (default: physical cores).")
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    session = ModelSession(a.package, threads=a.threads)
    turns(session, 1, 8)                                   # warm-up
    streams = [int(x) for x in a.streams.split(",")]
    got = {(m, n): [] for m in ("turns", "threads") for n in streams}
    for r in range(a.rounds):
        for n in streams:
            for mode, fn in (("turns", turns), ("threads", threads)) if r % 2 == 0 else \
                    (("threads", threads), ("turns", turns)):
                got[(mode, n)].append(fn(session, n, a.tokens))
    size = sum(p.stat().st_size for p in a.package.iterdir() if p.is_file()) / 2 ** 20
    lines = ["# Model steps: taking turns vs concurrent threads", "",
             f"`python benchmarks/experiments/serve_concurrency.py {' '.join(sys.argv[1:])}` · package {a.package.name} "
             f"({size:.0f} MiB) · {session.threads} intra-op threads · {a.tokens} decode steps per stream · "
             f"median of {a.rounds} interleaved rounds", "",
             "| streams | turns: tok/s (all streams) | threads: tok/s | threads ÷ turns "
             "| turns: tok per CPU-s | threads: tok per CPU-s |",
             "|---|---|---|---|---|---|"]
    med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals)) for k, vals in got.items()}
    for n in streams:
        t, c = med[("turns", n)], med[("threads", n)]
        lines.append(f"| {n} | {t[0]:.1f} | {c[0]:.1f} | {c[0] / t[0]:.2f} | {t[1]:.1f} | {c[1]:.1f} |")
    lines += ["", "Every round (tok/s): " + "; ".join(f"{m} {n}: " + ", ".join(f"{v[0]:.1f}" for v in vals)
                                                     for (m, n), vals in got.items())]
    try:
        import os
        lines += ["", f"1-minute load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} logical CPUs"]
    except (AttributeError, OSError):
        pass
    return emit(lines, a.markdown)


if __name__ == "__main__":
    sys.exit(main())
