"""Resident memory against context: does it follow package + KV(c)?

    python benchmarks/experiments/kv_memory.py PACKAGE [--contexts 0,256,1024,2048,4096] [--markdown OUT.md]

Loads the package, then fills one request's KV cache to each context length in turn (prefill in
512-token pieces) and reads the process's resident memory; KV(c) is the cache's allocated bytes
(capacity grows in 256-position chunks) from the manifest's bytes per position.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np
from _report import emit   # this folder is on sys.path when a script here runs

from edge_llm.metering.probes import rss_bytes
from edge_llm.session import ModelSession


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--contexts", default="0,256,1024,2048,4096")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    s = ModelSession(a.package, threads=a.threads)
    s.forward([1, 2, 3], s.new_cache())        # first run: onnxruntime's own buffers
    gc.collect()
    base = rss_bytes()
    per = s.manifest.kv.bytes_per_position
    rows = []
    for c in [int(x) for x in a.contexts.split(",")]:
        c = min(c, s.context_length)
        cache = s.new_cache()
        if c:
            s.forward(np.random.default_rng(0).integers(3, min(s.vocab, 8000), c), cache)
        rss = rss_bytes()
        rows.append((c, cache.nbytes, rss))
        del cache
        gc.collect()
    mib = 2 ** 20
    lines = ["# Resident memory against context", "",
             f"`python benchmarks/experiments/kv_memory.py {' '.join(sys.argv[1:])}` · package {a.package.name} · "
             f"KV {per:,} bytes per position · resident after loading and one step: {base / mib:.1f} MiB", "",
             "| context | KV allocated (MiB) | resident (MiB) | resident − loaded (MiB) | minus KV (MiB) |",
             "|---|---|---|---|---|"]
    for c, kv, rss in rows:
        lines.append(f"| {c} | {kv / mib:.1f} | {rss / mib:.1f} | {(rss - base) / mib:.1f} | "
                     f"{(rss - base - kv) / mib:.1f} |")
    return emit(lines, a.markdown)


if __name__ == "__main__":
    sys.exit(main())
