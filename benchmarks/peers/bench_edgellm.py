#!/usr/bin/env python3
"""edge-llm child of the peer harness (runs in the project venv; ``run_peers.py`` starts one per
measurement so memory and threads never mix with the other runtimes).

Three modes, one per process:

``--mode headline`` (default) -- prompt 128 / generate 128, the settings of every runtime:
    ``Model.load(pkg, threads=T, context_length=prompt_len + gen_len)``; load time = that call.
    Per repetition ``list(model.stream(prompt_ids, max_new_tokens=gen_len, ignore_eos=True))``
    (greedy, the product's own generator):
      * prefill = wall time of the prefill ``session.forward`` call (timed by wrapping the session's
        ``forward``; the stream gives no separate prefill record);
      * TTFT = ``TokenRecord.seconds`` of record 0 (prefill + first greedy pick);
      * decode tok/s = (gen_len - 1) / sum(``TokenRecord.seconds`` of records 1..), each record one
        model step + greedy pick, at positions prompt_len .. prompt_len + gen_len - 2;
      * also kept: per-step model time vs record time (the per-token Python overhead) and the wall
        time of the whole iteration (adds the stream's detokenisation, which the records exclude).
    ``warmup`` unreported repetitions first; medians over ``reps``.

``--mode depth`` -- decode speed against context depth (issue 7: decode at ~2k context >= 0.9x
    decode at 64). Loads with the package context (2048), prefills BOS + random ids once per depth
    into its own KV cache (untimed for the decode figure, reported as ``context_prefill``), then per
    repetition rewinds the cache to ``depth - 1`` and runs ``generate_tokens`` on the one token at
    position depth - 1 (record 0), so records 1.. are decode steps at positions depth .. depth +
    gen_len - 2. Depths are interleaved inside every repetition.

``--mode profile`` -- onnxruntime's per-node profiler over ``profile_steps`` decode steps (after the
    prompt's prefill and ``warmup_steps`` unprofiled-in-the-summary steps): time per op type, per
    node role (layer index folded) with the weight bytes each node reads and the bandwidth that
    implies, top nodes, and Python/ORT overhead per token. Profiling is switched on by wrapping
    ``edge_llm.session.session_options`` (so every other option is exactly the runtime's own).
    Writes ``--profile-json`` and ``--profile-md``.

Peak memory: ``ru_maxrss`` (getrusage RUSAGE_SELF) and ``VmHWM`` from /proc/self/status, right
after load and at the end. Prompt ids: ``common.make_prompt`` (BOS + random ids in
[3, 8192), numpy default_rng(seed)) -- byte-identical across the three runtimes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import add_run_options, check_run_options, make_prompt, median, prompt_digest, write_json
from edge_llm.metering.probes import folder_bytes, memory_snapshot

SCHEMA = "edge-llm/peers/edgellm/v1"


# ---- helpers -------------------------------------------------------------------------------------

def package_sizes(pkg: Path, manifest) -> dict[str, Any]:
    files = manifest.data["files"]
    weights = manifest.file("weights") if "weights" in files else manifest.file("model")
    q = manifest.data.get("quantization") or {}
    return {"package_bytes": folder_bytes(pkg), "weights_file_bytes": weights.stat().st_size,
            "model_file_bytes": manifest.file("model").stat().st_size,
            "quantization": {k: q.get(k) for k in ("precision", "block_size", "head_block_size",
                                                    "symmetric", "accuracy_level", "target")}}


class ForwardTimer:
    """Wraps a ModelSession's ``forward`` (instance attribute) and records each call's wall time."""

    def __init__(self, session):
        self.session, self.inner, self.calls = session, session.forward, []
        session.forward = self

    def __call__(self, ids, cache):
        t0 = time.perf_counter()
        out = self.inner(ids, cache)
        self.calls.append((int(np.asarray(ids).size), time.perf_counter() - t0))
        return out

    def take(self) -> list[tuple[int, float]]:
        calls, self.calls = self.calls, []
        return calls


# ---- headline ----------------------------------------------------------------------------------

def run_headline(a) -> dict[str, Any]:
    from edge_llm.api import Model

    prompt = make_prompt(a.prompt_len, a.seed)
    ctx = a.context_length or (a.prompt_len + a.gen_len)
    mem_before = memory_snapshot()
    t0 = time.perf_counter()
    model = Model.load(a.package, threads=a.threads, context_length=ctx, speculate="off")   # plain decoding, as tg
    load_s = time.perf_counter() - t0
    mem_load = memory_snapshot()
    timer = ForwardTimer(model.session)
    cache_nbytes = model.cache().nbytes
    runs = []
    for rep in range(a.warmup + a.reps):
        timer.take()
        t_start = time.perf_counter()
        recs, arrivals = [], []
        for r in model.stream(prompt, max_new_tokens=a.gen_len, ignore_eos=True):
            arrivals.append(time.perf_counter())
            recs.append(r)
        t_end = time.perf_counter()
        calls = timer.take()
        if len(recs) != a.gen_len:
            raise RuntimeError(f"stream gave {len(recs)} records (wanted {a.gen_len})")
        n_steps = a.gen_len - 1
        decode_s = sum(r.seconds for r in recs[1:])
        if len(calls) >= a.gen_len:   # one prefill forward (chunked inside), then one per step
            prefill_calls, step_calls = calls[:len(calls) - n_steps], calls[len(calls) - n_steps:]
            prefill_s, prefill_source = sum(s for _, s in prefill_calls), "session.forward"
            model_decode_s = sum(s for _, s in step_calls)
        else:                         # the generator no longer goes through session.forward
            prefill_calls, prefill_s, prefill_source, model_decode_s = [], recs[0].seconds, "ttft", decode_s
        runs.append({
            "rep": rep - a.warmup, "warmup": rep < a.warmup,
            "prefill_s": prefill_s, "prefill_tok_s": a.prompt_len / prefill_s,
            "prefill_forward_calls_tokens": [n for n, _ in prefill_calls], "prefill_source": prefill_source,
            "ttft_s": recs[0].seconds,
            "decode_s": decode_s, "decode_tok_s": (a.gen_len - 1) / decode_s,
            "decode_ms_per_tok": 1e3 * decode_s / (a.gen_len - 1),
            "decode_model_s": model_decode_s,
            "python_overhead_ms_per_tok": 1e3 * (decode_s - model_decode_s) / (a.gen_len - 1),
            "step_ms": [round(1e3 * r.seconds, 4) for r in recs[1:]],
            "stream_wall": {"total_s": t_end - t_start, "ttft_s": arrivals[0] - t_start,
                            "decode_s": arrivals[-1] - arrivals[0],
                            "decode_tok_s": (a.gen_len - 1) / (arrivals[-1] - arrivals[0])},
            "positions": [recs[0].position, recs[-1].position],
            "first_tokens": [r.token_id for r in recs[:8]],
        })
    mem_end = memory_snapshot()
    measured = [r for r in runs if not r["warmup"]]
    keys = ("prefill_s", "prefill_tok_s", "ttft_s", "decode_s", "decode_tok_s", "decode_ms_per_tok",
            "python_overhead_ms_per_tok")
    manifest = model.manifest
    return {
        "runtime": "edge-llm", "mode": "headline",
        "settings": {"threads": a.threads, "prompt_len": a.prompt_len, "gen_len": a.gen_len,
                     "reps": a.reps, "warmup": a.warmup, "seed": a.seed, "context_length": ctx,
                     "sampling": "greedy", "ignore_eos": True,
                     "prefill_chunk": getattr(model.session, "prefill_chunk", None),
                     "prompt": f"BOS + {a.prompt_len - 1} random ids in [3, 8192)",
                     "prompt_sha256_16": prompt_digest(prompt)},
        "package": str(a.package), **package_sizes(Path(a.package), manifest),
        "kv_cache_bytes_allocated": cache_nbytes, "kv_bytes_per_position": manifest.kv.bytes_per_position,
        "load_s": load_s,
        "median": {k: median([r[k] for r in measured]) for k in keys},
        "median_stream_wall_decode_tok_s": median([r["stream_wall"]["decode_tok_s"] for r in measured]),
        "runs": runs,
        "memory": {"before_load": mem_before, "after_load": mem_load, "end": mem_end},
    }


# ---- depth -------------------------------------------------------------------------------------

def run_depth(a) -> dict[str, Any]:
    from edge_llm.api import Model
    from edge_llm.generate import generate_tokens
    from edge_llm.sampling import SamplingParams

    depths = sorted({int(d) for d in a.depths.split(",")})
    t0 = time.perf_counter()
    model = Model.load(a.package, threads=a.threads, context_length=a.context_length, speculate="off")
    load_s = time.perf_counter() - t0
    mem_load = memory_snapshot()
    sess = model.session
    ctx = model.context_length
    if depths[0] < 1 or depths[-1] + a.gen_len - 1 > ctx:
        raise SystemExit(f"depths {depths} + gen {a.gen_len} must fit the context {ctx}")
    ids = make_prompt(depths[-1], a.seed)
    caches, prefill = {}, {}
    for d in depths:
        cache = sess.new_cache(min(ctx, d + a.gen_len))
        cache.length = 0
        t = time.perf_counter()
        sess.forward(np.asarray(ids[:d], np.int64), cache)
        prefill[d] = {"tokens": d, "seconds": time.perf_counter() - t}
        prefill[d]["tok_s"] = d / prefill[d]["seconds"]
        caches[d] = cache
    runs = {d: [] for d in depths}
    for rep in range(a.warmup + a.reps):
        for d in depths:
            cache = caches[d]
            cache.length = d - 1
            recs = list(generate_tokens(sess, model.tokenizer, cache, [ids[d - 1]], params=SamplingParams(),
                                        max_new_tokens=a.gen_len, ignore_eos=True))
            if len(recs) != a.gen_len:
                raise RuntimeError(f"depth {d}: {len(recs)} records")
            decode_s = sum(r.seconds for r in recs[1:])
            runs[d].append({"rep": rep - a.warmup, "warmup": rep < a.warmup,
                            "first_step_s": recs[0].seconds, "decode_s": decode_s,
                            "decode_tok_s": (a.gen_len - 1) / decode_s,
                            "positions": [recs[1].position - 1, recs[-1].position - 1],
                            "step_ms_first_last": [1e3 * recs[1].seconds, 1e3 * recs[-1].seconds]})
    mem_end = memory_snapshot()
    out = {}
    for d in depths:
        measured = [r for r in runs[d] if not r["warmup"]]
        out[str(d)] = {"depth": d, "decode_tok_s": median([r["decode_tok_s"] for r in measured]),
                       "context_prefill": prefill[d], "runs": runs[d]}
    lo, hi = str(depths[0]), str(depths[-1])
    return {
        "runtime": "edge-llm", "mode": "depth",
        "settings": {"threads": a.threads, "gen_len": a.gen_len, "reps": a.reps, "warmup": a.warmup,
                     "seed": a.seed, "depths": depths, "context_length": ctx,
                     "definition": "decode tok/s = (gen_len-1) / time of steps at positions depth..depth+gen_len-2"},
        "package": str(a.package), **package_sizes(Path(a.package), model.manifest),
        "kv_cache_bytes_allocated": sum(c.nbytes for c in caches.values()),
        "kv_bytes_per_position": model.manifest.kv.bytes_per_position,
        "load_s": load_s, "depths": out,
        "ratio_deep_to_shallow": (out[hi]["decode_tok_s"] / out[lo]["decode_tok_s"]
                                  if out[lo]["decode_tok_s"] else None),
        "memory": {"after_load": mem_load, "end": mem_end},
    }


# ---- profile -----------------------------------------------------------------------------------

_LAYER = re.compile(r"layers?[._/]?(\d+)")


def node_role(name: str) -> str:
    return _LAYER.sub(lambda m: m.group(0)[: -len(m.group(1))] + "N", name)


def initializer_bytes_by_node(model_path: Path) -> dict[str, dict[str, Any]]:
    """Per node of the exported graph: op type and bytes of the initializers it reads."""
    import onnx
    m = onnx.load(str(model_path), load_external_data=False)
    sizes = {}
    for t in m.graph.initializer:
        n = next((int(e.value) for e in t.external_data if e.key == "length"), None)
        sizes[t.name] = n if n is not None else len(t.raw_data)
    return {n.name: {"op_type": n.op_type, "weight_bytes": sum(sizes.get(i, 0) for i in n.input)}
            for n in m.graph.node}


def summarise_profile(trace: list[dict], *, n_prefill: int, warmup_steps: int, profile_steps: int,
                      graph_nodes: dict[str, dict], step_wall_s: Sequence[float]) -> dict[str, Any]:
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) < n_prefill + warmup_steps + profile_steps:
        raise RuntimeError(f"trace has {len(runs)} model_run events, expected "
                           f"{n_prefill + warmup_steps + profile_steps}")
    nodes = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]

    def window(sel: list[dict]) -> dict[str, Any]:
        spans = [(r["ts"], r["ts"] + r["dur"]) for r in sel]
        inside = [e for e in nodes if any(a <= e["ts"] <= b for a, b in spans)]
        n = len(sel)
        run_us = sum(r["dur"] for r in sel)
        kern_us = sum(e["dur"] for e in inside)
        by_op: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
        by_role: dict[str, dict] = {}
        by_node: dict[str, float] = collections.defaultdict(float)
        for e in inside:
            args = e.get("args", {})
            op = args.get("op_name", "?")
            name = e["name"][: -len("_kernel_time")]
            by_op[op][0] += 1
            by_op[op][1] += e["dur"]
            by_node[name] += e["dur"]
            role = node_role(name)
            r = by_role.setdefault(role, {"op_type": op, "count": 0, "us": 0.0, "weight_bytes": 0})
            r["count"] += 1
            r["us"] += e["dur"]
            if not op.startswith("Gather"):   # a gather reads one row, not its whole table
                r["weight_bytes"] += (graph_nodes.get(name) or {}).get("weight_bytes", 0)
        ops = sorted(({"op_type": k, "calls_per_step": c / n, "ms_per_step": us / n / 1e3,
                       "share_of_kernel_time": us / kern_us if kern_us else None}
                      for k, (c, us) in by_op.items()), key=lambda x: -x["ms_per_step"])
        roles = []
        for k, r in by_role.items():
            gbps = (r["weight_bytes"] / (r["us"] / 1e6) / 1e9
                    if r["us"] and r["weight_bytes"] >= n * 2**20 else None)   # only weight-heavy nodes
            roles.append({"role": k, "op_type": r["op_type"], "nodes_per_step": r["count"] / n,
                          "ms_per_step": r["us"] / n / 1e3,
                          "share_of_kernel_time": r["us"] / kern_us if kern_us else None,
                          "weight_bytes_per_step": r["weight_bytes"] / n,
                          "weight_read_GB_s": gbps})
        roles.sort(key=lambda x: -x["ms_per_step"])
        top = sorted(({"node": k, "ms_per_step": us / n / 1e3,
                       "op_type": (graph_nodes.get(k) or {}).get("op_type"),
                       "weight_bytes": (graph_nodes.get(k) or {}).get("weight_bytes")}
                      for k, us in by_node.items()), key=lambda x: -x["ms_per_step"])[:25]
        mm = [r for r in by_role.values() if r["op_type"] == "MatMulNBits"]
        mm_bytes, mm_us = sum(r["weight_bytes"] for r in mm), sum(r["us"] for r in mm)
        return {"runs": n, "model_run_ms_per_step": run_us / n / 1e3,
                "matmulnbits_weight_bytes_per_step": mm_bytes / n,
                "matmulnbits_ms_per_step": mm_us / n / 1e3,
                "matmulnbits_weight_read_GB_s": mm_bytes / (mm_us / 1e6) / 1e9 if mm_us else None,
                "kernel_ms_per_step": kern_us / n / 1e3,
                "ort_overhead_ms_per_step": (run_us - kern_us) / n / 1e3,
                "nodes_per_step": len(inside) / n,
                "by_op_type": ops, "by_role": roles, "top_nodes": top}

    prefill = window(runs[:n_prefill])
    decode = window(runs[n_prefill + warmup_steps: n_prefill + warmup_steps + profile_steps])
    wall = list(step_wall_s)[warmup_steps: warmup_steps + profile_steps]
    wall_ms = 1e3 * statistics.fmean(wall) if wall else None
    decode["python_step_wall_ms"] = wall_ms
    decode["python_overhead_ms_per_step"] = (wall_ms - decode["model_run_ms_per_step"]) if wall_ms else None
    return {"prefill": prefill, "decode": decode}


def run_profile(a) -> dict[str, Any]:
    import onnxruntime as ort
    import edge_llm.session as es
    from edge_llm.api import Model
    from edge_llm.generate import decode_one_token, prefill as do_prefill
    from edge_llm.sampling import SamplingParams, make_sampler

    prefix = str(Path(a.profile_trace_prefix or (Path(a.profile_json or "profile").with_suffix("")))
                 ) + f"-ort-{os.getpid()}"
    original = es.session_options

    def profiled_options(*args, **kw):
        so = original(*args, **kw)
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        return so

    es.session_options = profiled_options
    try:
        model = Model.load(a.package, threads=a.threads, context_length=a.prompt_len + a.warmup_steps
                           + a.profile_steps + 1)
    finally:
        es.session_options = original
    sess = model.session
    sample = make_sampler(SamplingParams())
    prompt = make_prompt(a.prompt_len, a.seed)
    cache = model.cache()
    n_prefill = -(-a.prompt_len // getattr(sess, "prefill_chunk", a.prompt_len))
    t = time.perf_counter()
    logits = do_prefill(sess, cache, prompt)
    prefill_wall = time.perf_counter() - t
    token = sample(logits, prompt)
    wall = []
    for _ in range(a.warmup_steps + a.profile_steps):
        t = time.perf_counter()
        logits = decode_one_token(sess, cache, token)
        token = sample(logits, prompt)
        wall.append(time.perf_counter() - t)
    trace_path = Path(sess.sess.end_profiling())
    trace = json.loads(trace_path.read_text())
    graph_nodes = initializer_bytes_by_node(model.manifest.file("model"))
    summary = summarise_profile(trace, n_prefill=n_prefill, warmup_steps=a.warmup_steps,
                                profile_steps=a.profile_steps, graph_nodes=graph_nodes, step_wall_s=wall)
    summary["prefill"]["python_wall_ms"] = 1e3 * prefill_wall
    sizes = package_sizes(Path(a.package), model.manifest)
    out = {"schema": "edge-llm/peers/profile/v1", "runtime": "edge-llm", "mode": "profile",
           "package": str(a.package), **sizes,
           "onnxruntime": ort.__version__,
           "settings": {"threads": a.threads, "prompt_len": a.prompt_len, "warmup_steps": a.warmup_steps,
                        "profile_steps": a.profile_steps, "seed": a.seed,
                        "note": "ORT profiling on (adds some per-node overhead); greedy via edge_llm.sampling"},
           "trace_file": str(trace_path) if a.keep_trace else None,
           "trace_events": len(trace), **summary}
    if not a.keep_trace:
        trace_path.unlink(missing_ok=True)
    if a.profile_md:
        Path(a.profile_md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.profile_md).write_text(profile_markdown(out))
    return out


def _f(x, nd=2):
    return "–" if x is None else f"{x:,.{nd}f}"


def profile_markdown(p: dict, *, heading: str = "#", top: int = 12) -> str:
    d, pf = p["decode"], p["prefill"]
    s = p["settings"]
    L = [f"{heading} edge-llm onnxruntime profile: {Path(p['package']).name}", "",
         f"{s['threads']} threads; prefill of a {s['prompt_len']}-token prompt, then {s['warmup_steps']} "
         f"warm-up decode steps and {s['profile_steps']} profiled decode steps (onnxruntime "
         f"{p['onnxruntime']} `enable_profiling`; profiling adds some overhead per node). "
         f"Weights file {p['weights_file_bytes']:,} B.", "",
         "Decode step, where the time goes (means per step):", "",
         "| item | ms/step |", "|---|---|",
         f"| Python wall time of one step (forward + greedy pick) | {_f(d['python_step_wall_ms'])} |",
         f"| ORT `model_run` | {_f(d['model_run_ms_per_step'])} |",
         f"| sum of node kernels | {_f(d['kernel_ms_per_step'])} |",
         f"| ORT overhead (model_run − kernels) | {_f(d['ort_overhead_ms_per_step'])} |",
         f"| Python overhead (wall − model_run) | {_f(d['python_overhead_ms_per_step'])} |", "",
         f"All MatMulNBits together read {d['matmulnbits_weight_bytes_per_step']:,.0f} B of weights per step in "
         f"{_f(d['matmulnbits_ms_per_step'])} ms: {_f(d['matmulnbits_weight_read_GB_s'], 1)} GB/s "
         "(compare with the measured memory bandwidth).", "",
         "Decode, per op type:", "", "| op type | calls/step | ms/step | share of kernel time |",
         "|---|---|---|---|"]
    for o in d["by_op_type"][:top]:
        L.append(f"| {o['op_type']} | {o['calls_per_step']:.0f} | {_f(o['ms_per_step'])} | "
                 f"{_f(100 * (o['share_of_kernel_time'] or 0), 1)} % |")
    L += ["", "Decode, per node role (layer index folded to N; weight read rate = initializer bytes ÷ kernel time):",
          "", "| role | op | nodes/step | ms/step | share | weight bytes/step | weight read GB/s |",
          "|---|---|---|---|---|---|---|"]
    for r in d["by_role"][:top]:
        L.append(f"| `{r['role']}` | {r['op_type']} | {r['nodes_per_step']:.0f} | {_f(r['ms_per_step'])} | "
                 f"{_f(100 * (r['share_of_kernel_time'] or 0), 1)} % | {r['weight_bytes_per_step']:,.0f} | "
                 f"{_f(r['weight_read_GB_s'], 1)} |")
    L += ["", f"Prefill ({pf['runs']} run(s) of the prompt): model_run {_f(pf['model_run_ms_per_step'])} ms, "
          f"kernels {_f(pf['kernel_ms_per_step'])} ms.", "", "| op type | ms | share |", "|---|---|---|"]
    for o in pf["by_op_type"][:8]:
        L.append(f"| {o['op_type']} | {_f(o['ms_per_step'])} | {_f(100 * (o['share_of_kernel_time'] or 0), 1)} % |")
    L += ["", "Top decode nodes:", "", "| node | op | ms/step | weight bytes |", "|---|---|---|---|"]
    for t in d["top_nodes"][:top]:
        wb = t["weight_bytes"]
        L.append(f"| `{t['node']}` | {t['op_type'] or '?'} | {_f(t['ms_per_step'], 3)} | "
                 f"{'–' if not wb else f'{wb:,}'} |")
    return "\n".join(L) + "\n"


# ---- main --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="edge-llm child of the peer harness")
    ap.add_argument("--package", required=True, type=Path)
    add_run_options(ap)
    ap.add_argument("--mode", choices=["headline", "depth", "profile"], default="headline")
    ap.add_argument("--profile", action="store_const", const="profile", dest="mode",
                    help="same as --mode profile")
    ap.add_argument("--context-length", type=int, default=None,
                    help="headline: default prompt+gen; depth: default the package's context")
    ap.add_argument("--depths", default="64,1900", help="depth mode: context depths, comma-separated")
    ap.add_argument("--profile-steps", type=int, default=16)
    ap.add_argument("--warmup-steps", type=int, default=2, help="profile mode: decode steps left out of the summary")
    ap.add_argument("--profile-json", type=Path, default=None)
    ap.add_argument("--profile-md", type=Path, default=None)
    ap.add_argument("--profile-trace-prefix", default=None, help="where ORT writes its trace (default next to --profile-json)")
    ap.add_argument("--keep-trace", action="store_true", help="keep ORT's raw trace JSON")
    a = ap.parse_args(argv)
    check_run_options(ap, a)

    import edge_llm
    import onnxruntime as ort
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result = {"headline": run_headline, "depth": run_depth, "profile": run_profile}[a.mode](a)
    result.setdefault("schema", SCHEMA)
    result.update({"started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "versions": {"edge_llm": edge_llm.__version__, "onnxruntime": ort.__version__,
                                "numpy": np.__version__, "python": sys.version.split()[0]},
                   "pid": os.getpid(), "argv": sys.argv})
    result.setdefault("memory", {})["peak"] = memory_snapshot()
    if a.mode == "profile":
        write_json(result, a.profile_json or a.json)
        if a.json and a.profile_json and a.json != a.profile_json:
            write_json(result, a.json)
    else:
        write_json(result, a.json)
    m = result.get("median")
    if a.mode == "depth":
        print("edge-llm depth: " + " | ".join(f"decode@{k} {v['decode_tok_s']:.2f} tok/s"
                                              for k, v in result["depths"].items())
              + f" | ratio {result['ratio_deep_to_shallow']:.3f}", file=sys.stderr)
    elif a.mode == "profile":
        d = result["decode"]
        print(f"edge-llm profile: decode step {d['python_step_wall_ms']:.1f} ms wall, "
              f"{d['model_run_ms_per_step']:.1f} ms model_run, MatMulNBits "
              f"{d['matmulnbits_weight_read_GB_s']:.1f} GB/s", file=sys.stderr)
    elif m:
        print(f"edge-llm: load {result['load_s']:.2f} s | prefill {m['prefill_tok_s']:.1f} tok/s | "
              f"TTFT {m['ttft_s']:.3f} s | decode {m['decode_tok_s']:.2f} tok/s | "
              f"peak RSS {result['memory']['peak']['vmhwm_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
