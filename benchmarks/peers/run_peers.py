#!/usr/bin/env python3
"""Side-by-side peer benchmark in ONE run: edge-llm vs onnxruntime-genai (same package) vs llama.cpp
(bindings + llama-bench, Q4_0 GGUF of the same shape), interleaved rounds, one subprocess per
runtime per round. Run from the repository root with the project venv:

    python benchmarks/peers/run_peers.py --package scratch/pkg-2b-default \
        --gguf scratch/gguf/minicpm2b-shape-Q4_0.gguf --rounds 3 \
        --out benchmarks/results/peers-HOST.json --markdown benchmarks/results/peers-HOST.md

Each round, in this order (peers.md's interleaving, so host noise hits every runtime alike):

  1. membw      numpy sum over a 1 GiB float64 array on one thread, best of 6 (peers.md membw.py;
                edge_llm.metering.probes.measure_read_bandwidth)
  2. edge-llm   bench_edgellm.py --mode headline       (project venv)
  3. genai      bench_ortgenai.py                       (project venv, same package)
  4. llama.cpp  bench_llamacpp.py --flash-attn on       (the llama.cpp venv, setup_llamacpp.sh)
  5. llama-bench bench_llamacpp.py --no-bindings --llama-bench auto (-p P -n N -r reps -fa auto)
  6. depth      bench_edgellm.py --mode depth (decode after 64 vs ~1900 tokens of context)

then once, after the rounds, ``bench_edgellm.py --profile`` (ORT per-node profile of decode steps).
Every child writes JSON; this parent keeps all of it, plus each child's process-tree peak RSS from
``os.wait4``, load average and /proc/stat CPU accounting (how much CPU other processes took during
the run), the machine (``edge_llm.metering.machine.detect_machine``), versions and exact commands.
Figures: each child reports the median of ``reps`` repetitions after ``warmup``; the report gives
the median across rounds with the range, and edge-llm/peer ratios both as ratio of medians and as
per-round paired ratios. A runtime whose venv/model is missing is skipped with a note.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from common import add_run_options, check_run_options, median, run_options_argv
from edge_llm.metering.probes import measure_read_bandwidth

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_PEERS_VENV = Path(os.environ.get("PEERS_VENV") or Path.home() / ".cache" / "edge-llm-peers" / "venv")
SCHEMA = "edge-llm/peers/run/v1"
RUNTIMES = ("edge-llm", "genai", "llama.cpp", "llama-bench")
LABELS = {"edge-llm": "edge-llm", "genai": "onnxruntime-genai",
          "llama.cpp": "llama.cpp bindings (llama-cpp-python)", "llama-bench": "llama.cpp llama-bench"}
TARGETS = {"decode_vs_llama_bench": 1.2, "decode_efficiency": 0.90, "prefill_vs_llama_bench": 1.1,
           "ttft_vs_bindings": 0.9, "depth_ratio": 0.9, "rss_factor": 1.15}


# ---- process plumbing --------------------------------------------------------------------------

def cpu_stat() -> dict[str, float] | None:
    """Aggregate CPU seconds from /proc/stat (busy = user+nice+system+irq+softirq; steal apart)."""
    try:
        f = open("/proc/stat").readline().split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    v = [int(x) / hz for x in f[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return {"busy_s": user + nice + system + irq + softirq, "idle_s": idle + iowait, "steal_s": steal,
            "t": time.time()}


def loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def top_processes(n: int = 5) -> list[dict[str, Any]]:
    """The processes (not this run) with the most CPU time so far -- to name a noisy neighbour."""
    out = []
    me = {os.getpid()}
    hz = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in me:
            continue
        try:
            stat = (d / "stat").read_text()
            rest = stat[stat.rindex(")") + 2:].split()
            cpu = (int(rest[11]) + int(rest[12])) / hz
            state = rest[0]
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
        except (OSError, ValueError, IndexError):
            continue
        if cmd:
            out.append({"pid": int(d.name), "state": state, "cpu_s": round(cpu, 1), "cmd": cmd})
    return sorted(out, key=lambda p: -p["cpu_s"])[:n]


def run_child(name: str, argv: list[str], json_path: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    """Run one child in its own session; collect its JSON and its process-tree rusage via wait4."""
    rec: dict[str, Any] = {"name": name, "argv": argv, "cmd": shlex.join(argv), "json": str(json_path),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_before": loadavg()}
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd(), start_new_session=True)
        deadline = t0 + timeout
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(p.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(p.pid, 0)
                    break
                time.sleep(0.2)
        except BaseException:
            try:
                os.killpg(p.pid, signal.SIGKILL)
                os.wait4(p.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            p.returncode = -9
            raise
    p.returncode = os.waitstatus_to_exitcode(status)
    rec.update({"wall_s": time.perf_counter() - t0, "returncode": p.returncode, "timed_out": timed_out,
                "loadavg_after": loadavg(),
                "rusage": {"tree_maxrss_bytes": ru.ru_maxrss * (1 if sys.platform == "darwin" else 1024),
                           "utime_s": ru.ru_utime, "stime_s": ru.ru_stime}})
    text = log_path.read_text(errors="replace")
    rec["log_tail"] = text[-4000:]
    rec["result"] = None
    if p.returncode == 0 and json_path.exists():
        try:
            rec["result"] = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            rec["error"] = f"bad JSON: {e}"
    else:
        rec["error"] = "timed out" if timed_out else f"exit status {p.returncode}"
    return rec


# ---- normalising child results -----------------------------------------------------------------

def figures(rt: str, rec: dict[str, Any], prompt_len: int) -> dict[str, Any] | None:
    """One round's figures of one runtime, in common units (None where not measured)."""
    r = rec.get("result")
    if not r:
        return None
    tree = rec["rusage"]["tree_maxrss_bytes"]
    if rt in ("edge-llm", "genai"):
        m, mem = r["median"], r["memory"]
        return {"prefill_tok_s": m["prefill_tok_s"], "ttft_s": m["ttft_s"], "decode_tok_s": m["decode_tok_s"],
                "load_s": r["load_s"], "peak_rss_bytes": mem["peak"]["vmhwm_bytes"],
                "ru_maxrss_bytes": mem["peak"]["ru_maxrss_bytes"], "tree_maxrss_bytes": tree,
                "load_peak_rss_bytes": mem["after_load"]["vmhwm_bytes"],
                "size_bytes": r["package_bytes"], "bytes_per_token": r["weights_file_bytes"],
                "kv_cache_bytes": r.get("kv_cache_bytes_allocated"),
                "python_overhead_ms_per_tok": m.get("python_overhead_ms_per_tok"),
                "first_tokens": r["runs"][-1]["first_tokens"]}
    if rt == "llama.cpp":
        if not r.get("bindings"):
            return None
        b = r["bindings"][0]
        m = b["median"]
        peak = (b["rss_mb"].get("peak_process") or 0) * 2**20 or None
        return {"prefill_tok_s": m["prefill_tok_s"], "ttft_s": m["ttft_s"], "decode_tok_s": m["decode_tok_s"],
                "load_s": b["load_s"], "peak_rss_bytes": tree, "ru_maxrss_bytes": peak, "tree_maxrss_bytes": tree,
                "load_peak_rss_bytes": None, "size_bytes": b["gguf_size_bytes"],
                "bytes_per_token": b["gguf_size_bytes"], "flash_attn": b["settings"]["flash_attn"],
                "first_tokens": b["runs"][-1]["first_tokens"]}
    if rt == "llama-bench":
        lb = r.get("llama_bench") or {}
        pp, tg = (lb.get("pp") or {}).get("tok_s"), (lb.get("tg") or {}).get("tok_s")
        size = Path(lb.get("gguf", "")).stat().st_size if lb.get("gguf") and Path(lb["gguf"]).exists() else None
        return {"prefill_tok_s": pp, "ttft_s": prompt_len / pp if pp else None, "ttft_estimated": True,
                "decode_tok_s": tg, "load_s": None, "peak_rss_bytes": tree, "ru_maxrss_bytes": None,
                "tree_maxrss_bytes": tree, "load_peak_rss_bytes": None, "size_bytes": size,
                "bytes_per_token": size, "pp_stddev": (lb.get("pp") or {}).get("stddev_tok_s"),
                "tg_stddev": (lb.get("tg") or {}).get("stddev_tok_s"), "build": lb.get("build")}
    return None


def rng(xs) -> list[float] | None:
    xs = [x for x in xs if x is not None]
    return [min(xs), max(xs)] if xs else None


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    rounds = report["rounds"]
    P = report["settings"]["prompt_len"]
    bw_rounds = [r["membw"]["result"]["best_bytes_per_s"] for r in rounds
                 if r.get("membw") and r["membw"].get("result")]
    bandwidth = median(bw_rounds)
    per_rt: dict[str, Any] = {}
    for rt in RUNTIMES:
        rows = [f for f in (figures(rt, r[rt], P) for r in rounds if r.get(rt)) if f]
        if not rows:
            continue
        keys = ("prefill_tok_s", "ttft_s", "decode_tok_s", "load_s")
        s = {k: median(x[k] for x in rows) for k in keys}
        s.update({f"{k}_range": rng(x[k] for x in rows) for k in keys})
        s["rounds"] = len(rows)
        s["peak_rss_bytes"] = max((x["peak_rss_bytes"] for x in rows if x["peak_rss_bytes"]), default=None)
        s["tree_maxrss_bytes"] = max((x["tree_maxrss_bytes"] for x in rows if x["tree_maxrss_bytes"]), default=None)
        s["load_peak_rss_bytes"] = max((x["load_peak_rss_bytes"] for x in rows if x["load_peak_rss_bytes"]),
                                       default=None)
        s["size_bytes"] = rows[0]["size_bytes"]
        s["bytes_per_token"] = rows[0]["bytes_per_token"]
        s["kv_cache_bytes"] = rows[0].get("kv_cache_bytes")
        s["ttft_estimated"] = bool(rows[0].get("ttft_estimated"))
        if rt == "edge-llm":
            s["python_overhead_ms_per_tok"] = median(x.get("python_overhead_ms_per_tok") for x in rows)
        s["first_tokens"] = rows[-1].get("first_tokens")
        s["per_round"] = rows
        eff_rounds = []
        for r, x in zip([r for r in rounds if r.get(rt) and figures(rt, r[rt], P)], rows):
            bw = (r.get("membw") or {}).get("result", {}) if r.get("membw") else {}
            b = (bw or {}).get("best_bytes_per_s")
            eff_rounds.append(x["decode_tok_s"] * x["bytes_per_token"] / b
                              if b and x["decode_tok_s"] and x["bytes_per_token"] else None)
        s["decode_efficiency"] = (s["decode_tok_s"] * s["bytes_per_token"] / bandwidth
                                  if bandwidth and s["decode_tok_s"] and s["bytes_per_token"] else None)
        s["decode_efficiency_per_round"] = eff_rounds
        per_rt[rt] = s

    ratios: dict[str, Any] = {}
    e = per_rt.get("edge-llm")
    if e:
        for peer in ("llama-bench", "llama.cpp", "genai"):
            p = per_rt.get(peer)
            if not p:
                continue
            rr = {}
            for k in ("decode_tok_s", "prefill_tok_s", "ttft_s"):
                paired = []
                for r in rounds:
                    fe = figures("edge-llm", r["edge-llm"], P) if r.get("edge-llm") else None
                    fp = figures(peer, r[peer], P) if r.get(peer) else None
                    if fe and fp and fe[k] and fp[k]:
                        paired.append(fe[k] / fp[k])
                rr[k] = {"ratio_of_medians": e[k] / p[k] if e[k] and p[k] else None,
                         "per_round": paired, "median_per_round": median(paired)}
            ratios[peer] = rr

    depth = None
    drows = [r["depth"]["result"] for r in rounds if r.get("depth") and r["depth"].get("result")]
    if drows:
        ds = drows[0]["settings"]["depths"]
        lo, hi = str(ds[0]), str(ds[-1])
        depth = {"depths": ds,
                 "decode_tok_s": {d: median(x["depths"][str(d)]["decode_tok_s"] for x in drows) for d in map(str, ds)},
                 "decode_tok_s_range": {d: rng(x["depths"][str(d)]["decode_tok_s"] for x in drows)
                                        for d in map(str, ds)},
                 "context_prefill_tok_s": {d: median(x["depths"][str(d)]["context_prefill"]["tok_s"] for x in drows)
                                           for d in map(str, ds)},
                 "ratio_per_round": [x["ratio_deep_to_shallow"] for x in drows]}
        depth["ratio"] = (depth["decode_tok_s"][hi] / depth["decode_tok_s"][lo]
                          if depth["decode_tok_s"][lo] and depth["decode_tok_s"][hi] else None)
        depth["peak_rss_bytes"] = max(x["memory"]["peak"]["vmhwm_bytes"] for x in drows)
        depth["package_bytes"] = drows[0]["package_bytes"]
        depth["kv_cache_bytes"] = drows[0]["kv_cache_bytes_allocated"]

    return {"bandwidth_bytes_per_s": bandwidth, "bandwidth_per_round": bw_rounds, "runtimes": per_rt,
            "ratios": ratios, "depth": depth, "targets": targets(per_rt, ratios, depth)}


def targets(per_rt: dict, ratios: dict, depth: dict | None) -> list[dict[str, Any]]:
    T = TARGETS
    out = []

    def add(name, measured, goal, ok, detail=""):
        out.append({"target": name, "measured": measured, "goal": goal,
                    "status": "n/a" if ok is None else ("pass" if ok else "FAIL"), "detail": detail})

    lb = ratios.get("llama-bench", {})
    dec = (lb.get("decode_tok_s") or {}).get("ratio_of_medians")
    add("decode tok/s ≥ 1.2× llama-bench tg", dec, f"≥ {T['decode_vs_llama_bench']}",
        None if dec is None else dec >= T["decode_vs_llama_bench"],
        f"per round {_fmt_list((lb.get('decode_tok_s') or {}).get('per_round'))}")
    eff = (per_rt.get("edge-llm") or {}).get("decode_efficiency")
    add("decode ≥ 90 % of the bandwidth roofline (weights file bytes per token)", eff,
        f"≥ {T['decode_efficiency']:.2f}", None if eff is None else eff >= T["decode_efficiency"])
    pre = (lb.get("prefill_tok_s") or {}).get("ratio_of_medians")
    add("prefill tok/s ≥ 1.1× llama-bench pp", pre, f"≥ {T['prefill_vs_llama_bench']}",
        None if pre is None else pre >= T["prefill_vs_llama_bench"],
        f"per round {_fmt_list((lb.get('prefill_tok_s') or {}).get('per_round'))}")
    tt = ((ratios.get("llama.cpp") or {}).get("ttft_s") or {}).get("ratio_of_medians")
    add("TTFT ≤ 0.9× the bindings' TTFT", tt, f"≤ {T['ttft_vs_bindings']}",
        None if tt is None else tt <= T["ttft_vs_bindings"],
        f"per round {_fmt_list(((ratios.get('llama.cpp') or {}).get('ttft_s') or {}).get('per_round'))}")
    dr = (depth or {}).get("ratio")
    ds = (depth or {}).get("depths") or ["?", "?"]
    add(f"decode at {ds[-1]} tokens of context ≥ 0.9× decode at {ds[0]}", dr, f"≥ {T['depth_ratio']}",
        None if dr is None else dr >= T["depth_ratio"], f"per round {_fmt_list((depth or {}).get('ratio_per_round'))}")
    e = per_rt.get("edge-llm")
    if e and e.get("peak_rss_bytes") and e.get("kv_cache_bytes") is not None:
        budget = e["size_bytes"] + e["kv_cache_bytes"]
        f = e["peak_rss_bytes"] / budget
        add("peak RSS ≤ 1.15 × (package + KV cache), headline run incl. load", f, f"≤ {T['rss_factor']}",
            f <= T["rss_factor"], f"peak {e['peak_rss_bytes']:,} B (load peak {e['load_peak_rss_bytes'] or 0:,} B) "
            f"vs package {e['size_bytes']:,} + KV {e['kv_cache_bytes']:,} B")
    else:
        add("peak RSS ≤ 1.15 × (package + KV cache), headline run incl. load", None, "≤ 1.15", None)
    if depth and depth.get("peak_rss_bytes"):
        budget = depth["package_bytes"] + depth["kv_cache_bytes"]
        f = depth["peak_rss_bytes"] / budget
        add(f"peak RSS ≤ 1.15 × (package + KV cache), depth run ({ds[-1]}-token context)", f,
            f"≤ {T['rss_factor']}", f <= T["rss_factor"],
            f"peak {depth['peak_rss_bytes']:,} B vs package {depth['package_bytes']:,} + KV {depth['kv_cache_bytes']:,} B")
    return out


def _fmt_list(xs, nd=2) -> str:
    return "–" if not xs else "[" + ", ".join("–" if x is None else f"{x:.{nd}f}" for x in xs) + "]"


# ---- markdown ----------------------------------------------------------------------------------

def _n(x, nd=1, unit=""):
    return "–" if x is None else f"{x:,.{nd}f}{unit}"


def _rg(r, nd=1):
    return "" if not r or r[0] == r[1] else f" [{r[0]:.{nd}f}–{r[1]:.{nd}f}]"


def _gib(b):
    return "–" if not b else f"{b / 2**30:.2f} GiB"


def markdown(rep: dict[str, Any]) -> str:
    s, S, m = rep["settings"], rep["summary"], rep["machine"]
    P, G = s["prompt_len"], s["gen_len"]
    L = [f"# Peer comparison: edge-llm vs onnxruntime-genai vs llama.cpp ({rep['host']})", "",
         f"{rep['started']} → {rep['finished']}{' (INTERRUPTED: partial)' if rep.get('interrupted') else ''}. "
         f"{m.get('cpu_model')}, {m.get('architecture')}, {m.get('logical_cores')} logical / "
         f"{m.get('physical_cores')} physical cores, {_gib(m.get('memory_total_bytes'))} RAM"
         f"{', virtualised' if m.get('virtualized') else ''}; ISA: "
         f"{', '.join(k for k, v in (m.get('isa') or {}).items() if v) or '–'}.", "",
         f"Settings: {s['threads']} threads, prompt {P} tokens (BOS + random ids in [3, 8192), seed {s['seed']}), "
         f"{G} generated tokens (EOS ignored, greedy), per round the median of {s['reps']} repetitions after "
         f"{s['warmup']} warm-up, each runtime in its own process; the table gives the median across "
         f"{s['rounds']} interleaved round(s) with the range across rounds in brackets. Synthetic random "
         "weights: only speed means anything.", "",
         f"Package: `{s['package']}`; GGUF: `{s['gguf']}`.", "",
         "| runtime | size on disk | prefill tok/s @%d | decode tok/s (%d new) | TTFT | load | peak RSS | decode efficiency |" % (P, G),
         "|---|---|---|---|---|---|---|---|"]
    for rt in RUNTIMES:
        x = S["runtimes"].get(rt)
        if not x:
            L.append(f"| {LABELS[rt]} | skipped | | | | | | |")
            continue
        name = LABELS[rt] + (" (fa on)" if rt == "llama.cpp" else "")
        ttft = ("≈" if x["ttft_estimated"] else "") + _n(x["ttft_s"], 2, " s") + ("" if x["ttft_estimated"] else _rg(x["ttft_s_range"], 2))
        L.append(f"| {name} | {x['size_bytes']:,} B ({_gib(x['size_bytes'])}) | **{_n(x['prefill_tok_s'])}**"
                 f"{_rg(x['prefill_tok_s_range'])} | **{_n(x['decode_tok_s'], 2)}**{_rg(x['decode_tok_s_range'], 2)} | "
                 f"{ttft} | {_n(x['load_s'], 2, ' s')} | {_gib(x['peak_rss_bytes'])} | "
                 f"{_n(100 * x['decode_efficiency'] if x['decode_efficiency'] else None, 0, ' %')} |")
    bw = S["bandwidth_bytes_per_s"]
    L += ["", "- prefill: edge-llm = the prefill `session.forward` call; genai = `append_tokens`; bindings = "
          "`llm.eval(prompt)`; llama-bench = pp. TTFT = prefill + the first greedy pick (llama-bench: ≈ prompt/pp). "
          "Decode = (gen − 1) ÷ time of the remaining steps (llama-bench: tg from an EMPTY context; the others "
          f"decode at positions {P}..{P + G - 2}).",
          "- peak RSS: edge-llm and genai: VmHWM of the child (includes load); llama.cpp rows: the process "
          "tree's ru_maxrss from `wait4` (llama-bench runs under a Python parent).",
          f"- decode efficiency = decode tok/s × bytes per token ÷ bandwidth ({_n(bw / 1e9 if bw else None, 1, ' GB/s')}, "
          "median of the rounds' best-of-6 numpy sums); bytes per token = the weights file (model.onnx.data) for "
          "edge-llm and genai, the GGUF file for llama.cpp. KV-cache reads are not counted.", ""]

    L += ["## Ratios (edge-llm ÷ peer)", "",
          "Ratio of the medians; in brackets the paired per-round ratios. Decode and prefill: higher is better "
          "for edge-llm; TTFT: lower is better.", "",
          "| edge-llm ÷ | decode | prefill | TTFT |", "|---|---|---|---|"]
    for peer in ("llama-bench", "llama.cpp", "genai"):
        r = S["ratios"].get(peer)
        if not r:
            L.append(f"| {LABELS[peer]} | skipped | | |")
            continue
        cells = [f"{_n(r[k]['ratio_of_medians'], 2)}× {_fmt_list(r[k]['per_round'])}"
                 for k in ("decode_tok_s", "prefill_tok_s", "ttft_s")]
        L.append(f"| {LABELS[peer]}{' tg/pp' if peer == 'llama-bench' else ''} | " + " | ".join(cells) + " |")

    L += ["", "## Issue 7 targets", "", "| target | measured | goal | status | detail |", "|---|---|---|---|---|"]
    for t in S["targets"]:
        L.append(f"| {t['target']} | {_n(t['measured'], 3)} | {t['goal']} | **{t['status']}** | {t['detail']} |")

    d = S.get("depth")
    if d:
        L += ["", "## edge-llm decode against context depth", "",
              f"Own process per round; package context {rep['rounds'][0]['depth']['result']['settings']['context_length']}; "
              f"each depth has its KV cache prefilled once, then {s['reps']} repetitions (after {s['warmup']} warm-up) "
              f"decode {G - 1} timed steps from that depth.", "",
              "| context depth | decode tok/s | prefill of the context, tok/s |", "|---|---|---|"]
        for k in map(str, d["depths"]):
            L.append(f"| {k} | {_n(d['decode_tok_s'][k], 2)}{_rg(d['decode_tok_s_range'][k], 2)} | "
                     f"{_n(d['context_prefill_tok_s'][k])} |")
        L.append(f"\nratio deep ÷ shallow: {_n(d['ratio'], 3)} (per round {_fmt_list(d['ratio_per_round'], 3)}); "
                 f"peak RSS of that process {_gib(d['peak_rss_bytes'])}.")

    L += ["", "## Memory bandwidth", "",
          f"numpy `a.sum()` over 1 GiB float64, best of {s['membw_repeats']}, once per round before the runtimes: "
          f"{', '.join(_n(b / 1e9, 1) for b in S['bandwidth_per_round']) or '–'} GB/s → median "
          f"{_n(bw / 1e9 if bw else None, 1)} GB/s."]

    n = rep["noise"]
    L += ["", "## Noise", "",
          f"- load average (1, 5, 15 min) before: {_fmt_list(n['loadavg_before'])}, after: {_fmt_list(n['loadavg_after'])}.",
          f"- CPU time taken by other processes during the run: {_n(n.get('others_cpu_s'), 1, ' s')} "
          f"({_n(100 * n['others_cpu_fraction'] if n.get('others_cpu_fraction') is not None else None, 1, ' %')} of "
          f"the machine's CPU capacity over {_n(n.get('wall_s'), 0, ' s')}); steal {_n(n.get('steal_s'), 1, ' s')}.",
          "- spread across rounds (max − min) ÷ median, decode: "
          + ", ".join(f"{LABELS[k]} {_n(100 * v, 1, ' %')}" for k, v in n["decode_spread"].items()) + "."]
    for note in rep["notes"]:
        L.append(f"- {note}")
    L += ["- Compare runtimes within one run only (peers.md \"Noise caveat\": decode moved ±10 % over an hour on "
          "this shared VM). The per-round paired ratios show how stable each comparison is."]

    L += ["", "## Per round", "", "| round | runtime | prefill tok/s | decode tok/s | TTFT s | load s | peak RSS | first tokens |",
          "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rep["rounds"]):
        for rt in RUNTIMES:
            if not r.get(rt):
                continue
            f = figures(rt, r[rt], P)
            if not f:
                L.append(f"| {i + 1} | {LABELS[rt]} | failed: {r[rt].get('error')} | | | | | |")
                continue
            L.append(f"| {i + 1} | {LABELS[rt]} | {_n(f['prefill_tok_s'])} | {_n(f['decode_tok_s'], 2)} | "
                     f"{_n(f['ttft_s'], 3)} | {_n(f['load_s'], 2)} | {_gib(f['peak_rss_bytes'])} | "
                     f"{f.get('first_tokens') or ''} |")

    prof = rep.get("profile")
    if prof and prof.get("result"):
        L += ["", "## Profile (edge-llm decode)", "",
              f"Full summary: `{s.get('profile_md')}` / `{s.get('profile_json')}`.", ""]
        p = prof["result"]["decode"]
        L += [f"Per decode step: Python wall {_n(p['python_step_wall_ms'], 2)} ms, ORT model_run "
              f"{_n(p['model_run_ms_per_step'], 2)} ms, kernels {_n(p['kernel_ms_per_step'], 2)} ms; all MatMulNBits "
              f"read weights at {_n(p['matmulnbits_weight_read_GB_s'], 1)} GB/s.", "",
              "| op type | ms/step | share |", "|---|---|---|"]
        for o in p["by_op_type"][:6]:
            L.append(f"| {o['op_type']} | {_n(o['ms_per_step'], 2)} | {_n(100 * (o['share_of_kernel_time'] or 0), 1)} % |")

    v = rep["versions"]
    L += ["", "## Versions", "", "- " + ", ".join(f"{k} {v[k]}" for k in v if v[k]), "", "## Commands", "",
          "```sh", rep["command"], "```", "", "Children of round 1 (the other rounds repeat them with their own JSON paths):", "",
          "```sh"]
    r0 = rep["rounds"][0] if rep["rounds"] else {}
    for k in ("membw", *RUNTIMES, "depth"):
        if r0.get(k):
            L.append(r0[k]["cmd"])
    if prof:
        L.append(prof["cmd"])
    L += ["```", ""]
    return "\n".join(L)


# ---- main --------------------------------------------------------------------------------------

def versions() -> dict[str, Any]:
    def ver(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    v = {"python": platform.python_version(), "edge-llm": ver("edge-llm") or ver("edge_llm"),
         "onnxruntime": ver("onnxruntime"), "onnxruntime-genai": ver("onnxruntime-genai"), "numpy": ver("numpy"),
         "llama-cpp-python": None, "llama.cpp build": None}
    try:
        v["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                  cwd=REPO, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["git"] = None
    return v


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    host = socket.gethostname().split(".")[0]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=Path("scratch/pkg-2b-default"))
    ap.add_argument("--gguf", type=Path, default=Path("scratch/gguf/minicpm2b-shape-Q4_0.gguf"))
    ap.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_VENV / "bin" / "python",
                    help="interpreter of the llama.cpp venv (benchmarks/peers/setup_llamacpp.sh; default "
                         "$PEERS_VENV or ~/.cache/edge-llm-peers/venv)")
    ap.add_argument("--python", type=Path, default=Path(sys.executable), help="project venv interpreter")
    ap.add_argument("--rounds", type=int, default=3)
    add_run_options(ap, json_help=argparse.SUPPRESS)        # --json is the membw child's output
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="subset of " + ",".join(RUNTIMES))
    ap.add_argument("--llamacpp-fa", choices=["on", "off"], default="on", help="bindings flash attention (peers.md: on)")
    ap.add_argument("--depths", default="auto",
                    help="edge-llm depth run: 'auto' = 64,(context - gen - 20) i.e. 64,1900; 'off' to skip")
    ap.add_argument("--no-profile", action="store_true", help="skip the ORT per-node profile after the rounds")
    ap.add_argument("--profile-steps", type=int, default=16)
    ap.add_argument("--membw-gib", type=float, default=1.0)
    ap.add_argument("--membw-repeats", type=int, default=6)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of sleep between children")
    ap.add_argument("--timeout", type=float, default=1800, help="per child, seconds")
    ap.add_argument("--out", type=Path, default=Path(f"benchmarks/results/peers-{host}.json"))
    ap.add_argument("--markdown", type=Path, default=None, help="default: --out with .md")
    ap.add_argument("--work-dir", type=Path, default=None, help="children's JSON and logs (default: a temp dir, kept)")
    ap.add_argument("--membw-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.membw_child:
        return a
    check_run_options(ap, a)
    a.wanted = [r.strip() for r in a.runtimes.split(",") if r.strip()]
    bad = [r for r in a.wanted if r not in RUNTIMES]
    if bad:
        ap.error(f"unknown runtimes {bad}; choose from {RUNTIMES}")
    if a.rounds < 1:
        ap.error("need rounds >= 1")
    if not (a.package / "manifest.json").exists():
        ap.error(f"{a.package}: not an edge-llm package (no manifest.json)")
    a.context = json.loads((a.package / "manifest.json").read_text())["model"]["context_length"]
    if a.prompt_len + a.gen_len > a.context:
        ap.error(f"prompt + gen exceeds the package context {a.context}")
    a.host, a.markdown = host, a.markdown or a.out.with_suffix(".md")
    a.profile_json = a.out.with_name(a.out.stem + ".profile.json")
    a.profile_md = a.out.with_name(a.out.stem + ".profile.md")
    a.depths = (None if a.depths == "off" else f"64,{a.context - a.gen_len - 20}" if a.depths == "auto"
                else a.depths)
    return a


def plan_runtimes(a: argparse.Namespace) -> tuple[dict[str, bool], list[str]]:
    """Which runtimes can run here; a note for each one that cannot, or was not asked for."""
    notes: list[str] = []
    plan = {rt: rt in a.wanted for rt in RUNTIMES}
    if plan["genai"]:
        if importlib.util.find_spec("onnxruntime_genai") is None:
            plan["genai"] = False
            notes.append("onnxruntime-genai skipped: not installed in this venv")
        elif not (a.package / "genai_config.json").exists():
            plan["genai"] = False
            notes.append(f"onnxruntime-genai skipped: {a.package}/genai_config.json missing")
    for rt in ("llama.cpp", "llama-bench"):
        if not plan[rt]:
            continue
        if not a.peers_python.exists():
            plan[rt] = False
            notes.append(f"{LABELS[rt]} skipped: {a.peers_python} missing (run benchmarks/peers/setup_llamacpp.sh)")
        elif not a.gguf.exists():
            plan[rt] = False
            notes.append(f"{LABELS[rt]} skipped: {a.gguf} missing (see benchmarks/peers/README.md, step 3)")
        elif rt == "llama-bench" and not (a.peers_python.parent / "llama-bench").exists():
            plan[rt] = False
            notes.append(f"llama-bench skipped: not found next to {a.peers_python}")
    if a.prompt_len + a.gen_len > 1024 and plan["llama.cpp"]:
        plan["llama.cpp"] = False
        notes.append("llama.cpp bindings skipped: bench_llamacpp.py uses n_ctx 1024 < prompt + gen")
    notes += [f"{LABELS[rt]} not requested (--runtimes)" for rt in RUNTIMES if rt not in a.wanted]
    return plan, notes


def child_argv(kind: str, a: argparse.Namespace, j: Path, work: Path) -> list[str]:
    """The exact command of one child; `j` is where it writes its JSON."""
    py, ppy = str(a.python), str(a.peers_python)
    run, sizes = run_options_argv(a, sizes=False), run_options_argv(a)[4:]
    if kind == "membw":
        return [py, str(HERE / "run_peers.py"), "--membw-child", "--json", str(j),
                "--membw-gib", str(a.membw_gib), "--membw-repeats", str(a.membw_repeats)]
    if kind in ("edge-llm", "genai"):
        script = "bench_edgellm.py" if kind == "edge-llm" else "bench_ortgenai.py"
        return [py, str(HERE / script), "--package", str(a.package), "--json", str(j), *run, *sizes]
    if kind == "llama.cpp":
        return [ppy, str(HERE / "bench_llamacpp.py"), "--gguf", str(a.gguf), "--json", str(j), *run, *sizes,
                "--flash-attn", a.llamacpp_fa]
    if kind == "llama-bench":
        return [ppy, str(HERE / "bench_llamacpp.py"), "--gguf", str(a.gguf), "--json", str(j), *run, *sizes,
                "--no-bindings", "--llama-bench", "auto"]
    if kind == "depth":
        return [py, str(HERE / "bench_edgellm.py"), "--mode", "depth", "--package", str(a.package),
                "--json", str(j), *run, "--gen-len", str(a.gen_len), "--reps", str(a.reps),
                "--warmup", str(a.warmup), "--depths", a.depths]
    if kind == "profile":
        return [py, str(HERE / "bench_edgellm.py"), "--profile", "--package", str(a.package), "--json", str(j),
                *run, "--prompt-len", str(a.prompt_len), "--profile-steps", str(a.profile_steps),
                "--profile-json", str(a.profile_json), "--profile-md", str(a.profile_md),
                "--profile-trace-prefix", str(work / "ort-profile")]
    raise ValueError(kind)


def new_report(a: argparse.Namespace, plan: dict[str, bool], notes: list[str], work: Path,
               argv: Sequence[str] | None) -> dict[str, Any]:
    try:
        from edge_llm.metering.machine import detect_machine
        machine = detect_machine()
    except Exception as e:  # noqa: BLE001 - the report is still useful without it
        machine = {"error": repr(e)}
    report: dict[str, Any] = {
        "schema": SCHEMA, "host": a.host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None,
        "interrupted": False,
        "command": shlex.join([sys.executable, *(sys.argv if argv is None else [sys.argv[0], *argv])]),
        "cwd": os.getcwd(), "work_dir": str(work),
        "settings": {"package": str(a.package), "gguf": str(a.gguf), "peers_python": str(a.peers_python),
                     "python": str(a.python), "rounds": a.rounds, "threads": a.threads, "prompt_len": a.prompt_len,
                     "gen_len": a.gen_len, "reps": a.reps, "warmup": a.warmup, "seed": a.seed, "runtimes": plan,
                     "llamacpp_flash_attn": a.llamacpp_fa, "depths": a.depths, "profile_steps": a.profile_steps,
                     "profile": not a.no_profile, "profile_json": None if a.no_profile else str(a.profile_json),
                     "profile_md": None if a.no_profile else str(a.profile_md),
                     "membw_gib": a.membw_gib, "membw_repeats": a.membw_repeats, "settle_s": a.settle,
                     "order": ["membw", *[r for r in RUNTIMES if plan[r]], *(["depth"] if a.depths else [])]},
        "machine": machine, "versions": versions(), "notes": notes,
        "noise": {"loadavg_before": loadavg(), "top_processes_before": top_processes()},
        "rounds": [], "profile": None, "summary": None,
    }
    if (a.prompt_len, a.gen_len, a.threads) != (128, 128, 2) or a.rounds < 3 or a.reps < 3:
        notes.append(f"settings differ from issue 7's (2 threads, prompt 128, gen 128, 3 rounds of 3 reps): "
                     f"{a.threads} threads, prompt {a.prompt_len}, gen {a.gen_len}, {a.rounds} round(s) of "
                     f"{a.reps} rep(s); the target verdicts below do not apply")
    cores = machine.get("usable_cores") or os.cpu_count() or 1
    la, top = report["noise"]["loadavg_before"], report["noise"]["top_processes_before"]
    if la and la[0] > 0.25 * cores:
        notes.append(f"the machine was not idle at the start (1-minute load average {la[0]:.2f} on {cores} "
                     f"cores; busiest: {top[0]['cmd'][:80] if top else '?'}): timings are disturbed")
    return report


class Accounting:
    """CPU time of the whole machine, of this harness and of its children, from the start of the run:
    what is left over was taken by other processes."""

    def __init__(self):
        self.stat0, self.t0 = cpu_stat(), time.perf_counter()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.child_cpu = 0.0

    def noise(self) -> dict[str, Any]:
        stat1, wall = cpu_stat(), time.perf_counter() - self.t0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        mine = self.child_cpu + (self1.ru_utime - self.self0.ru_utime) + (self1.ru_stime - self.self0.ru_stime)
        out = {"loadavg_after": loadavg(), "wall_s": wall}
        if self.stat0 and stat1:
            busy = stat1["busy_s"] - self.stat0["busy_s"]
            out.update({"busy_cpu_s": busy, "harness_cpu_s": mine, "others_cpu_s": max(0.0, busy - mine),
                        "others_cpu_fraction": max(0.0, busy - mine) / (wall * (os.cpu_count() or 1)) if wall else None,
                        "steal_s": stat1["steal_s"] - self.stat0["steal_s"]})
        return out


def save(report: dict[str, Any], a: argparse.Namespace, acct: Accounting) -> None:
    """Summarise what has been measured so far and write the JSON and the Markdown."""
    report["noise"].update(acct.noise())
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["summary"] = summarise(report)
    report["noise"]["decode_spread"] = {rt: (x["decode_tok_s_range"][1] - x["decode_tok_s_range"][0]) / x["decode_tok_s"]
                                        for rt, x in report["summary"]["runtimes"].items()
                                        if x["decode_tok_s_range"] and x["decode_tok_s"]}
    for r in report["rounds"]:
        for k in ("llama.cpp", "llama-bench"):
            res = (r.get(k) or {}).get("result") or {}
            if res.get("bindings"):
                report["versions"]["llama-cpp-python"] = res["bindings"][0].get("llama_cpp_python_version")
            if res.get("llama_bench") and res["llama_bench"].get("build"):
                report["versions"]["llama.cpp build"] = res["llama_bench"]["build"].get("build_commit")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    a.markdown.parent.mkdir(parents=True, exist_ok=True)
    a.markdown.write_text(markdown(report))


def step(kind: str, tag: str, a: argparse.Namespace, work: Path, acct: Accounting, notes: list[str]) -> dict[str, Any]:
    """Run one child, print a line about it, note a failure, then let the machine settle."""
    j, log = work / f"{tag}-{kind}.json", work / f"{tag}-{kind}.log"
    j.unlink(missing_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {tag} {kind} ...", file=sys.stderr, flush=True)
    rec = run_child(kind, child_argv(kind, a, j, work), j, log, a.timeout)
    acct.child_cpu += rec["rusage"]["utime_s"] + rec["rusage"]["stime_s"]
    tail = rec["log_tail"].strip().splitlines()
    print(f"[{time.strftime('%H:%M:%S')}]   {rec['wall_s']:.0f} s, rc {rec['returncode']}: {(tail[-1] if tail else '')[:200]}",
          file=sys.stderr, flush=True)
    if rec.get("error"):
        notes.append(f"{tag} {kind} failed ({rec['error']}); log {log}")
    time.sleep(a.settle)
    return rec


def membw_child(a: argparse.Namespace) -> int:
    res = measure_read_bandwidth(int(a.membw_gib * 1024), threads=1, repeats=a.membw_repeats)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"membw: best {res['best_bytes_per_s'] / 1e9:.1f} GB/s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.membw_child:
        return membw_child(a)
    plan, notes = plan_runtimes(a)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="peers-run-"))
    work.mkdir(parents=True, exist_ok=True)
    report = new_report(a, plan, notes, work, argv)
    acct = Accounting()
    try:
        for i in range(a.rounds):
            rnd: dict[str, Any] = {"round": i + 1}
            report["rounds"].append(rnd)
            for kind in report["settings"]["order"]:
                rnd[kind] = step(kind, f"r{i + 1}", a, work, acct, notes)
                save(report, a, acct)
        if not a.no_profile:
            report["profile"] = step("profile", "p", a, work, acct, notes)
    except KeyboardInterrupt:
        report["interrupted"] = True
        notes.append("interrupted with Ctrl-C: partial results")
    save(report, a, acct)
    for t in report["summary"]["targets"]:
        print(f"  {t['status']:>4}  {t['target']}: {_n(t['measured'], 3)} (goal {t['goal']})", file=sys.stderr)
    print(f"wrote {a.out} and {a.markdown}" + ("" if a.no_profile else f" (+ {a.profile_json.name}, "
          f"{a.profile_md.name})") + f"; children's files in {work}", file=sys.stderr)
    return 130 if report["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
