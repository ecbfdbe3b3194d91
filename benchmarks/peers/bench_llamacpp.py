#!/usr/bin/env python3
"""llama.cpp peer benchmark: llama-cpp-python bindings (and optionally llama-bench) on a GGUF.

Runs inside the benchmark-only venv built by ``benchmarks/peers/setup_llamacpp.sh`` (it imports
``llama_cpp``); a parent harness runs it as a subprocess and reads the JSON it writes:

    ~/.cache/edge-llm-peers/venv/bin/python benchmarks/peers/bench_llamacpp.py \
        --gguf scratch/gguf/minicpm2b-shape-Q4_0.gguf --json out.json \
        [--threads 2] [--prompt-len 128] [--gen-len 128] [--reps 3] [--warmup 1] \
        [--flash-attn on|off|both] [--seed 0] [--llama-bench auto|PATH] [--no-bindings]

Measurement (same definitions as peers.md's bindings harness):

* ``Llama(n_threads=T, n_threads_batch=T, n_ctx=1024, n_batch=512, n_ubatch=512,
  flash_attn=...)``; load time = that constructor (mmap + Q4_0 -> q4_0_8x8 repack).
* prompt = BOS (1) + ``prompt_len - 1`` random ids in [3, 8192) (``numpy`` rng seeded by ``seed``),
  fed as ids (no tokenizer in the loop), one batch.
* per repetition: ``llm.reset()`` (drops the KV cache from position 0 at the next eval), then
  prefill = wall time of ``llm.eval(prompt)``; TTFT = prefill + numpy argmax over the last logits;
  decode = ``gen_len - 1`` x (``llm.eval([tok])`` + argmax), at positions prompt_len ..
  prompt_len + gen_len - 2; decode tok/s = (gen_len - 1) / decode time.  EOS is never checked.
  ``warmup`` unreported repetitions come first; medians are over the ``reps`` reported ones.
* logits are read from llama.cpp's output buffer (``llama_get_logits_ith(ctx, -1)``): in 0.3.x
  ``Llama.eval`` no longer copies them into ``llm.scores`` unless ``logits_all=True``, which would
  also make llama.cpp compute the lm_head for every prompt position.
* peak RSS = ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (process-wide high-water mark, so
  with ``--flash-attn both`` the second configuration's figure includes the first); current RSS
  after load and after the last repetition come from /proc/self/status.

``run_llama_bench`` runs ``llama-bench -m GGUF -p P -n N -t T -r R -fa auto -o json`` (one warm-up
built in; tg starts from an empty context, i.e. depth 0, unlike the bindings' decode at depth P).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import (RANDOM_ID_RANGE, add_run_options, check_run_options, make_prompt, median, rep_record,
                    write_json)
from edge_llm.metering.probes import memory_snapshot

N_CTX = 1024
N_BATCH = 512
N_UBATCH = 512
MiB = 2**20


def _rss_mb() -> float | None:
    rss = memory_snapshot()["rss_bytes"]
    return None if rss is None else rss / MiB


def host_info() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def bench_llamacpp(gguf_path: str | os.PathLike, *, threads: int = 2, prompt_len: int = 128,
                   gen_len: int = 128, reps: int = 3, warmup: int = 1, flash_attn: bool = True,
                   seed: int = 0) -> dict[str, Any]:
    """Time prefill / TTFT / decode through llama-cpp-python.  Returns a JSON-able dict."""
    import llama_cpp

    if prompt_len < 1 or gen_len < 2 or reps < 1 or warmup < 0:
        raise ValueError("need prompt_len >= 1, gen_len >= 2, reps >= 1, warmup >= 0")
    if prompt_len + gen_len > N_CTX:
        raise ValueError(f"prompt_len + gen_len must fit n_ctx={N_CTX}")
    gguf_path = Path(gguf_path)

    rss_before = _rss_mb()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(gguf_path), n_ctx=N_CTX, n_batch=N_BATCH, n_ubatch=N_UBATCH,
        n_threads=threads, n_threads_batch=threads, flash_attn=flash_attn, seed=seed,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    rss_after_load = _rss_mb()
    n_vocab = llm.n_vocab()
    ctx = llm.ctx

    def argmax_last() -> int:
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    prompt = make_prompt(prompt_len, seed)
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(warmup + reps):
            llm.reset()
            t_start = time.perf_counter()
            llm.eval(prompt)
            t_prefill = time.perf_counter()
            tok = argmax_last()
            t_first = time.perf_counter()
            generated = [tok]
            for _ in range(gen_len - 1):
                llm.eval([tok])
                tok = argmax_last()
                generated.append(tok)
            t_end = time.perf_counter()
            if llm.n_tokens != prompt_len + gen_len - 1:
                raise RuntimeError(f"n_tokens {llm.n_tokens} != {prompt_len + gen_len - 1}")
            runs.append(rep_record(rep=rep, warmup=warmup, prompt_len=prompt_len, gen_len=gen_len,
                                   t_start=t_start, t_prefill=t_prefill, t_first=t_first, t_end=t_end,
                                   first_tokens=generated))
    finally:
        rss_end = _rss_mb()
        llm.close()

    measured = [r for r in runs if not r["warmup"]]
    med = {k: median([r[k] for r in measured])
           for k in ("prefill_s", "prefill_tok_s", "ttft_s", "decode_s", "decode_tok_s",
                     "decode_ms_per_tok", "total_s")}
    return {
        "runtime": "llama-cpp-python",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "gguf": str(gguf_path), "gguf_size_bytes": gguf_path.stat().st_size,
        "settings": {"threads": threads, "n_threads_batch": threads, "prompt_len": prompt_len,
                     "gen_len": gen_len, "reps": reps, "warmup": warmup,
                     "flash_attn": flash_attn, "seed": seed, "n_ctx": N_CTX, "n_batch": N_BATCH,
                     "n_ubatch": N_UBATCH, "prompt": f"BOS + {prompt_len - 1} random ids in "
                                                      f"[{RANDOM_ID_RANGE[0]}, {RANDOM_ID_RANGE[1]})",
                     "decode_positions": [prompt_len, prompt_len + gen_len - 2]},
        "load_s": load_s,
        "median": med,
        "runs": runs,
        "rss_mb": {"before_load": rss_before, "after_load": rss_after_load, "end": rss_end,
                   "peak_process": memory_snapshot()["ru_maxrss_bytes"] / MiB},
    }


def find_llama_bench() -> str | None:
    """llama-bench next to this interpreter (setup_llamacpp.sh links it into the venv's bin/)."""
    cand = Path(sys.executable).parent / "llama-bench"
    if cand.exists():
        return str(cand)
    return shutil.which("llama-bench")


def run_llama_bench(binary: str | os.PathLike, gguf: str | os.PathLike, threads: int = 2,
                    p: int = 128, n: int = 128, reps: int = 3, *, flash_attn: str = "auto",
                    extra_args: Sequence[str] = (), timeout: float | None = 1800) -> dict[str, Any]:
    """Run ``llama-bench -o json`` and return pp/tg tokens/s (mean, stddev, per-rep samples)."""
    cmd = [str(binary), "-m", str(gguf), "-p", str(p), "-n", str(n), "-t", str(threads),
           "-r", str(reps), "-fa", str(flash_attn), "-o", "json", *map(str, extra_args)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rows = json.loads(proc.stdout)
    out: dict[str, Any] = {"runtime": "llama-bench", "cmd": cmd, "wall_s": wall,
                           "gguf": str(gguf), "raw": rows}
    for row in rows:
        if row.get("n_prompt", 0) > 0 and row.get("n_gen", 0) == 0:
            key = "pp"
        elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
            key = "tg"
        else:
            key = f"pp{row.get('n_prompt')}+tg{row.get('n_gen')}"
        test = {"pp": f"pp{row.get('n_prompt')}", "tg": f"tg{row.get('n_gen')}"}.get(key, key)
        if row.get("n_depth"):
            test += f"@d{row['n_depth']}"
        out[key] = {"test": test,
                    "n_prompt": row.get("n_prompt"), "n_gen": row.get("n_gen"),
                    "n_depth": row.get("n_depth"),
                    "tok_s": row.get("avg_ts"), "stddev_tok_s": row.get("stddev_ts"),
                    "samples_tok_s": row.get("samples_ts"), "samples_ns": row.get("samples_ns")}
    if rows:
        r0 = rows[0]
        out["build"] = {k: r0.get(k) for k in ("build_commit", "build_number", "cpu_info",
                                               "backends", "model_type", "model_size",
                                               "model_n_params", "n_threads", "flash_attn",
                                               "n_batch", "n_ubatch", "type_k", "type_v")}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="llama.cpp peer benchmark (llama-cpp-python / llama-bench)")
    ap.add_argument("--gguf", required=True, type=Path)
    add_run_options(ap)
    ap.add_argument("--flash-attn", choices=["on", "off", "both"], default="on",
                    help="bindings flash attention (binding default is off; peers.md headline: on)")
    ap.add_argument("--no-bindings", action="store_true", help="skip the llama-cpp-python runs")
    ap.add_argument("--llama-bench", default=None, metavar="auto|PATH",
                    help="also run llama-bench ('auto': the one linked into this venv's bin/)")
    ap.add_argument("--llama-bench-fa", default="auto", help="llama-bench -fa value (peers.md: auto)")
    a = ap.parse_args(argv)
    check_run_options(ap, a)

    result: dict[str, Any] = {"schema": "edge-llm/peers/llamacpp/v1",
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "host": host_info(), "bindings": [], "llama_bench": None}
    if not a.no_bindings:
        for fa in {"on": [True], "off": [False], "both": [True, False]}[a.flash_attn]:
            r = bench_llamacpp(a.gguf, threads=a.threads, prompt_len=a.prompt_len,
                               gen_len=a.gen_len, reps=a.reps, warmup=a.warmup, flash_attn=fa,
                               seed=a.seed)
            m = r["median"]
            print(f"llama-cpp-python fa={'on' if fa else 'off'}: load {r['load_s']:.2f} s | "
                  f"prefill {m['prefill_tok_s']:.1f} tok/s | TTFT {m['ttft_s']:.3f} s | "
                  f"decode {m['decode_tok_s']:.2f} tok/s | peak RSS {r['rss_mb']['peak_process']:.0f} MB",
                  file=sys.stderr)
            result["bindings"].append(r)
    if a.llama_bench:
        binary = find_llama_bench() if a.llama_bench == "auto" else a.llama_bench
        if not binary:
            raise SystemExit("llama-bench not found (run benchmarks/peers/setup_llamacpp.sh)")
        lb = run_llama_bench(binary, a.gguf, threads=a.threads, p=a.prompt_len, n=a.gen_len,
                             reps=a.reps, flash_attn=a.llama_bench_fa)
        print(f"llama-bench: pp{a.prompt_len} {lb.get('pp', {}).get('tok_s')} tok/s | "
              f"tg{a.gen_len} {lb.get('tg', {}).get('tok_s')} tok/s", file=sys.stderr)
        result["llama_bench"] = lb
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(result, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
