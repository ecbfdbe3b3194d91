#!/usr/bin/env python3
"""onnxruntime-genai child of the peer harness: the SAME edge-llm package, loaded through the
``genai_config.json`` the exporter writes (model type ``llama``). Runs in the project venv.

    python benchmarks/peers/bench_ortgenai.py --package scratch/pkg-2b-default --json out.json \
        [--threads 2] [--prompt-len 128] [--gen-len 128] [--reps 3] [--warmup 1] [--seed 0]

Measurement (as peers.md's ``bench_ortgenai.py``):

* ``cfg = og.Config(pkg)``; ``cfg.overlay('{"model": {"decoder": {"session_options":
  {"intra_op_num_threads": T, "inter_op_num_threads": 1}}}}')``; load time = ``og.Config`` +
  ``og.Model(cfg)``.
* per repetition a fresh ``og.Generator`` (not timed) with ``max_length = min_length =
  prompt_len + gen_len`` (EOS cannot stop it), ``do_sample=False`` (greedy);
  prefill = wall time of ``generator.append_tokens(prompt)`` (runs the model on the whole prompt);
  TTFT = prefill + the first ``generate_next_token()`` (only picks from the prefill logits);
  decode tok/s = (gen_len - 1) / time of the remaining ``generate_next_token()`` calls (each one
  model step + greedy pick over the whole vocabulary), at positions prompt_len ..
  prompt_len + gen_len - 2.
* ``warmup`` unreported repetitions first; medians over ``reps``. Peak memory: ``ru_maxrss`` and
  ``VmHWM`` of this process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import (add_run_options, check_run_options, make_prompt, median, prompt_digest, rep_record,
                    write_json)
from edge_llm.metering.probes import folder_bytes, memory_snapshot

SCHEMA = "edge-llm/peers/ortgenai/v1"


def thread_overlay(threads: int) -> str:
    return json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}})


def bench_ortgenai(pkg: Path, *, threads: int = 2, prompt_len: int = 128, gen_len: int = 128,
                   reps: int = 3, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    import onnxruntime_genai as og

    cfg_path = pkg / "genai_config.json"
    genai_cfg = json.loads(cfg_path.read_text())
    total = prompt_len + gen_len
    if total > genai_cfg["model"]["context_length"]:
        raise SystemExit(f"prompt + gen = {total} exceeds context_length {genai_cfg['model']['context_length']}")
    prompt = make_prompt(prompt_len, seed)
    ids = np.asarray(prompt, np.int32)
    overlay = thread_overlay(threads)

    mem_before = memory_snapshot()
    t0 = time.perf_counter()
    cfg = og.Config(str(pkg))
    cfg.overlay(overlay)
    model = og.Model(cfg)
    load_s = time.perf_counter() - t0
    mem_load = memory_snapshot()

    search = {"max_length": total, "min_length": total, "do_sample": False, "num_beams": 1}
    runs = []
    for rep in range(warmup + reps):
        params = og.GeneratorParams(model)
        params.set_search_options(**search)
        gen = og.Generator(model, params)
        t_start = time.perf_counter()
        gen.append_tokens(ids)
        t_prefill = time.perf_counter()
        gen.generate_next_token()
        t_first = time.perf_counter()
        n = 1
        while not gen.is_done():
            gen.generate_next_token()
            n += 1
        t_end = time.perf_counter()
        seq = list(map(int, gen.get_sequence(0)))
        del gen, params
        if n != gen_len or len(seq) != total:
            raise RuntimeError(f"generated {n} tokens / sequence {len(seq)} (wanted {gen_len} / {total})")
        runs.append(rep_record(rep=rep, warmup=warmup, prompt_len=prompt_len, gen_len=gen_len, t_start=t_start,
                               t_prefill=t_prefill, t_first=t_first, t_end=t_end, first_tokens=seq[prompt_len:]))
    mem_end = memory_snapshot()
    measured = [r for r in runs if not r["warmup"]]
    keys = ("prefill_s", "prefill_tok_s", "ttft_s", "decode_s", "decode_tok_s", "decode_ms_per_tok", "total_s")
    weights = pkg / genai_cfg["model"]["decoder"]["filename"]
    data = weights.with_name(weights.name + ".data")
    return {
        "runtime": "onnxruntime-genai",
        "settings": {"threads": threads, "inter_op_threads": 1, "prompt_len": prompt_len, "gen_len": gen_len,
                     "reps": reps, "warmup": warmup, "seed": seed, "search": search, "overlay": overlay,
                     "prompt": f"BOS + {prompt_len - 1} random ids in [3, 8192)",
                     "prompt_sha256_16": prompt_digest(prompt),
                     "decode_positions": [prompt_len, prompt_len + gen_len - 2]},
        "package": str(pkg), "package_bytes": folder_bytes(pkg),
        "weights_file_bytes": (data if data.exists() else weights).stat().st_size,
        "genai_config": genai_cfg,
        "load_s": load_s,
        "median": {k: median([r[k] for r in measured]) for k in keys},
        "runs": runs,
        "memory": {"before_load": mem_before, "after_load": mem_load, "end": mem_end},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="onnxruntime-genai child of the peer harness")
    ap.add_argument("--package", required=True, type=Path)
    add_run_options(ap)
    a = ap.parse_args(argv)
    check_run_options(ap, a)

    import onnxruntime_genai as og
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    r = bench_ortgenai(a.package, threads=a.threads, prompt_len=a.prompt_len, gen_len=a.gen_len,
                       reps=a.reps, warmup=a.warmup, seed=a.seed)
    try:
        import onnxruntime as ort
        ort_version = ort.__version__
    except ImportError:
        ort_version = None
    r.update({"schema": SCHEMA, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "versions": {"onnxruntime_genai": og.__version__, "onnxruntime_python": ort_version,
                           "numpy": np.__version__, "python": sys.version.split()[0]},
              "pid": os.getpid(), "argv": sys.argv})
    r["memory"]["peak"] = memory_snapshot()
    write_json(r, a.json)
    m = r["median"]
    print(f"onnxruntime-genai: load {r['load_s']:.2f} s | prefill {m['prefill_tok_s']:.1f} tok/s | "
          f"TTFT {m['ttft_s']:.3f} s | decode {m['decode_tok_s']:.2f} tok/s | "
          f"peak RSS {r['memory']['peak']['vmhwm_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
