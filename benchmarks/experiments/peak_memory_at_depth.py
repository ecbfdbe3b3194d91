"""Peak and current resident memory of one process that loads a package and fills one request's cache
to `depth` tokens (issue 14: where the memory goes).

    python benchmarks/experiments/peak_memory_at_depth.py PACKAGE DEPTH [--arena 0|1] [--chunk N]

Prints one JSON line: VmHWM / VmRSS / RssAnon / RssFile (MiB) after load and at the end, the cache's
allocated MiB, prefill seconds and a rough decode tok/s (16 steps; speed is not this script's point).
`--arena 0` turns onnxruntime's CPU memory arena off; `--chunk` feeds the prompt in pieces of N.
Run it at a commit before the anonymous-map KV buffers (e.g. `git stash; git checkout 2d035b7 -- edge_llm/session.py`)
to see the old figures.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import edge_llm.session as S
from edge_llm.metering.probes import proc_status_bytes


def status() -> dict:
    """MiB of the /proc/self/status lines that tell where resident memory is."""
    return {key: proc_status_bytes(key) // 2 ** 20 for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("depth", type=int)
    ap.add_argument("--arena", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    base = S.session_options

    def options(*args, **kw):
        so = base(*args, **kw)
        so.enable_cpu_mem_arena = bool(a.arena)
        return so
    S.session_options = options
    from edge_llm.api import Model
    m = Model.load(a.package, threads=a.threads, context_length=a.depth + 17, speculate="off")
    load = status()
    c = m.cache()
    ids = np.random.default_rng(0).integers(3, 8000, a.depth).astype(np.int64)
    chunk = a.chunk or a.depth
    t = time.perf_counter()
    for i in range(0, a.depth, chunk):
        m.session.forward(ids[i:i + chunk], c)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(16):
        m.session.forward(np.array([5 + i], np.int64), c)
    print(json.dumps({"depth": a.depth, "arena": bool(a.arena), "chunk": chunk, "load_mib": load, "end_mib": status(),
                      "kv_mib": c.nbytes / 2 ** 20, "prefill_s": round(prefill, 1),
                      "decode_tok_s": round(16 / (time.perf_counter() - t), 2)}))


if __name__ == "__main__":
    main()
