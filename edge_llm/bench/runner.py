"""`edge-llm bench` measurements, llama-bench style, through the same generator chat and generate use.

    pp N           prefill of N random token ids into an emptied cache; t/s = N / time. The time is
                   that of the stream's first record (prefill + one greedy sample, microseconds), so
                   it is also the time to first token (TTFT).
    tg N @ d       prefill max(d, 1) random ids (not timed), then N decode steps (ignore_eos);
                   t/s = N / sum(step times); every step time is kept for the latency percentiles.

Each test runs `warmup` unrecorded-in-the-statistics repetitions, then `reps` measured ones; every
raw figure is kept in the report. Each thread count is a fresh `Model.load`. Energy per repetition
comes from `EnergyMeter` (measured when a counter is readable, else a labelled estimate). Derived
figures (mean ± std, percentiles, efficiency against memory bandwidth, J/token, cost) are computed
by `summarize`, also on the partial results of an interrupted run.
"""
from __future__ import annotations

import gc
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import EdgeLLMError
from ..manifest import load_manifest
from ..metering import cost as cost_mod
from ..metering.energy import EnergyMeter
from ..metering.machine import cores_used, detect_machine, threads_per_cluster
from ..metering.probes import folder_bytes, measure_read_bandwidth, peak_rss_bytes, reset_peak_rss, rss_bytes
from ..sampling import SamplingParams
from .report import SCHEMA, SCHEMA_VERSION

ProgressFn = Callable[[str, int, int], None]

DEFAULT_PRICE_PER_KWH = 0.15   # USD; a stated assumption, printed with every cost figure
DEFAULT_LIFETIME_YEARS = 5.0
FIRST_ID = 3                   # skip <unk>, <s>, </s>
GREEDY = SamplingParams(temperature=0.0)


class BenchSettingsError(EdgeLLMError):
    """The requested test sizes do not fit the model or make no sense."""


def run_bench(package_dir, *, threads_list: Sequence[int | None] = (None,), pp: Sequence[int] = (128, 512),
              tg: int = 128, depths: Sequence[int] = (0,), reps: int = 3, warmup: int = 1,
              bandwidth_mib: int = 512, seed: int = 0, progress: ProgressFn | None = None,
              cpu_watts: float | None = None, price_per_kwh: float | None = DEFAULT_PRICE_PER_KWH,
              device_price: float | None = None, lifetime_years: float = DEFAULT_LIFETIME_YEARS,
              duty_cycle: float = 1.0, currency: str = "USD", command: Sequence[str] | None = None,
              energy_root: str | os.PathLike = "/", idle_seconds: float = 2.0) -> dict:
    """Measure `package_dir` and return the report dict (see edge_llm.bench.report for its schema).

    Ctrl-C stops measuring; what was measured is returned with `"interrupted": true`.
    """
    package_dir = Path(package_dir)
    manifest = load_manifest(package_dir)
    settings = {"threads": list(threads_list), "pp": list(pp), "tg": tg, "depths": list(depths), "reps": reps,
                "warmup": warmup, "bandwidth_mib": bandwidth_mib, "seed": seed, "sampling": "greedy",
                "prompt": f"random token ids in [{FIRST_ID}, vocab)"}
    costs = {"currency": currency, "price_per_kwh": price_per_kwh, "device_price": device_price,
             "lifetime_years": lifetime_years, "duty_cycle": duty_cycle}
    _check_settings(settings, costs, manifest.model.context_length)
    # process_time has ns resolution; the meter's default os.times() ticks at 10 ms, too coarse for short tests
    meter = EnergyMeter(root=energy_root, tdp_watts=cpu_watts, cpu_clock=time.process_time)
    report = _new_report(package_dir, manifest, settings, costs, meter, cpu_watts=cpu_watts,
                         command=list(command) if command is not None else list(sys.argv))
    total = len(threads_list) * (len(pp) + len(depths)) * (warmup + reps) + (1 if bandwidth_mib else 0)
    step = _Progress(progress, total)
    try:
        if meter.counters:
            idle = meter.measure_idle(idle_seconds)
            report["energy"]["idle_watts"] = idle.watts
        meter.subtract_idle = True
        for threads in threads_list:
            run: dict = {"threads": threads, "tests": []}
            report["runs"].append(run)
            _bench_threads(run, package_dir, manifest, settings, meter, step, report["machine"])
        if bandwidth_mib:
            step(f"memory bandwidth ({bandwidth_mib} MiB)")
            report["bandwidth"] = measure_read_bandwidth(
                bandwidth_mib, threads=max([t or _default_threads() for t in threads_list]))
        step.done()
    except KeyboardInterrupt:
        report["interrupted"] = True
        report["notes"].append("interrupted with Ctrl-C: partial results")
    report["load_average"]["end"] = _load_average()
    summarize(report)
    return report


def _new_report(package_dir: Path, manifest, settings: dict, costs: dict, meter: EnergyMeter, *,
                cpu_watts: float | None, command: list[str]) -> dict:
    report = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "interrupted": False,
        "machine": detect_machine(),
        "package": package_summary(package_dir, manifest),
        "settings": settings,
        "energy": {"measured": bool(meter.counters), "idle_subtracted": True, "cpu_watts": cpu_watts,
                   "model": None if meter.counters else meter.power_model.describe(),
                   "counters": [c.name for c in meter.counters],
                   "skipped": [f"{c.name}: {c.error}" for c in meter.skipped]},
        "cost_settings": costs,
        "runs": [],
        "bandwidth": None,
        "notes": [],
        "load_average": {"start": _load_average(), "end": None},
    }
    load, cores = report["load_average"]["start"], report["machine"].get("usable_cores") or os.cpu_count() or 1
    if load is not None and load > max(1.0, cores / 2):
        report["notes"].append(f"the machine was busy at the start (1-minute load average {load:.2f}): "
                               "other processes compete for cores and memory bandwidth")
    return report


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows
        return None


def _check_settings(s: dict, costs: dict, context_length: int) -> None:
    if s["reps"] < 1 or s["warmup"] < 0 or s["tg"] < 1 or any(n < 1 for n in s["pp"]):
        raise BenchSettingsError("need reps >= 1, warmup >= 0, tg >= 1 and pp sizes >= 1")
    if any(t is not None and t < 1 for t in s["threads"]) or not s["threads"]:
        raise BenchSettingsError("thread counts must be >= 1")
    if any(d < 0 for d in s["depths"]) or not (s["pp"] or s["depths"]):
        raise BenchSettingsError("depths must be >= 0, and at least one pp size or depth is needed")
    if s["pp"] and max(s["pp"]) >= context_length:  # one more position is needed for the sampled token
        raise BenchSettingsError(f"pp {max(s['pp'])} exceeds the model's context of {context_length}")
    deepest = max(s["depths"], default=0)
    if s["depths"] and max(deepest, 1) + s["tg"] + 1 > context_length:
        raise BenchSettingsError(f"depth {deepest} + tg {s['tg']} exceeds the model's context of {context_length}")
    if not 0 < costs["duty_cycle"] <= 1 or costs["lifetime_years"] <= 0:
        raise BenchSettingsError("need 0 < duty cycle <= 1 and lifetime years > 0")
    if any(costs[k] is not None and costs[k] < 0 for k in ("price_per_kwh", "device_price")):
        raise BenchSettingsError("prices must be >= 0")


class _Progress:
    def __init__(self, fn: ProgressFn | None, total: int):
        self.fn, self.total, self.count = fn, total, 0

    def __call__(self, label: str) -> None:
        if self.fn:
            self.fn(label, self.count, self.total)
        self.count += 1

    def done(self) -> None:
        if self.fn:
            self.fn("done", self.total, self.total)


def _bench_threads(run: dict, package_dir: Path, manifest, settings: dict, meter: EnergyMeter,
                   step: _Progress, machine: dict) -> None:
    from ..api import Model

    scope = "since this thread count's load" if reset_peak_rss() else "process lifetime"
    run["memory"] = {"rss_before_load_bytes": rss_bytes(), "peak_rss_scope": scope}
    gc.collect()
    t0 = time.perf_counter()
    model = Model.load(package_dir, threads=run["threads"], speculate="off")   # plain decoding: one token a step
    run["load_seconds"] = time.perf_counter() - t0
    run["threads_requested"], run["threads"] = run["threads"], model.session.threads
    run["memory"]["rss_after_load_bytes"] = rss_bytes()
    rng = np.random.default_rng(settings["seed"])
    hi = min(manifest.model.vocab_size, model.tokenizer.vocab_size)
    label = f"threads {model.session.threads}"
    try:  # also on Ctrl-C: record memory and free the session (pyflakes reads the `del model` below as F821)
        tg = settings["tg"]
        for n in settings["pp"]:
            test = _new_test(run, f"pp{n}", "pp", n, 0)
            _repeat(test, settings, step, label, lambda n=n: _measure_pp(model, _ids(rng, hi, n), meter))  # noqa: F821
        for d in settings["depths"]:
            test = _new_test(run, f"tg{tg}" + (f" @ d{d}" if d else ""), "tg", tg, d)
            _repeat(test, settings, step, label,
                    lambda d=d: _measure_tg(model, _ids(rng, hi, max(d, 1)), tg, meter))  # noqa: F821
        used = cores_used()
        run["cores_used"] = {"cpu_ids": sorted(set(used.values())),
                             "threads_per_cluster": threads_per_cluster(used.values(), machine.get("clusters") or [])}
    finally:
        run["memory"].update(peak_rss_bytes())
        # the cache grows with the context: its size at the model's full context is what a long chat reaches
        run["memory"]["kv_cache_bytes"] = manifest.kv.bytes_per_position * manifest.model.context_length
        run["energy_source"] = meter.reading.source if meter.reading else None
        del model
        gc.collect()


def _ids(rng: np.random.Generator, hi: int, n: int) -> list[int]:
    return rng.integers(FIRST_ID, hi, size=n).tolist()


def _new_test(run: dict, name: str, kind: str, n_tokens: int, depth: int) -> dict:
    test = {"test": name, "kind": kind, "n_tokens": n_tokens, "depth": depth, "warmup_reps": [], "reps": []}
    run["tests"].append(test)
    return test


def _repeat(test: dict, settings: dict, step: _Progress, label: str, measure: Callable[[], dict]) -> None:
    """Warm-up repetitions, then measured ones; each raw result is stored as soon as it exists."""
    for i in range(settings["warmup"] + settings["reps"]):
        warm = i < settings["warmup"]
        phase = "warm-up" if warm else f"rep {i - settings['warmup'] + 1}/{settings['reps']}"
        step(f"{label} · {test['test']} · {phase}")
        test["warmup_reps" if warm else "reps"].append(measure())


def _energy(reading) -> dict:
    return {"joules": reading.joules, "seconds": reading.seconds, "cpu_seconds": reading.cpu_seconds,
            "measured": reading.measured}


def _measure_pp(model, ids: list[int], meter: EnergyMeter) -> dict:
    """One prefill of `ids` from an empty cache; its time includes the first greedy sample (TTFT)."""
    meter.start()
    first = next(iter(model.stream(ids, params=GREEDY, max_new_tokens=1, ignore_eos=True)))
    reading = meter.stop()
    return {"seconds": first.seconds, "tokens_per_s": len(ids) / first.seconds, "energy": _energy(reading)}


def _measure_tg(model, ids: list[int], n: int, meter: EnergyMeter) -> dict:
    """Prefill `ids` (untimed context), then time `n` decode steps."""
    steps: list[float] = []
    prefill_s = rss_end = None
    for rec in model.stream(ids, params=GREEDY, max_new_tokens=n + 1, ignore_eos=True):
        if rec.index == 0:
            prefill_s = rec.seconds
            meter.start()
        else:
            steps.append(rec.seconds)
        if rec.index == n:
            rss_end = rss_bytes()       # resident memory at the last step, this context's cache still alive
    reading = meter.stop()
    positions = len(ids) + n
    total = sum(steps)
    return {"seconds": total, "tokens_per_s": len(steps) / total, "context_prefill_seconds": prefill_s,
            "context_positions": positions, "rss_at_end_bytes": rss_end,
            "step_seconds": steps, "energy": _energy(reading)}


# ---- package ----------------------------------------------------------------------------------


def package_summary(package_dir: Path, manifest) -> dict:
    m, q = manifest.model, manifest.quantization
    on_disk = folder_bytes(package_dir)
    sizes = manifest.data.get("sizes") or {}
    source = sizes.get("source_weights_bytes")
    weights = manifest.file("weights") if manifest.has_file("weights") else manifest.file("model")
    kv = manifest.kv
    return {
        "path": str(package_dir),
        "name": package_dir.resolve().name,
        "format_version": manifest.data.get("format_version"),
        "exporter": manifest.data.get("exporter"),
        "shape": {k: getattr(m, k) for k in ("architecture", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                             "head_dim", "intermediate_size", "vocab_size", "context_length")},
        "parameters": m.parameters,
        "quantization": {k: q.get(k) for k in ("precision", "block_size", "symmetric", "accuracy_level", "target")},
        "kv_cache": {"dtype": kv.dtype, "num_layers": kv.num_layers, "num_kv_heads": kv.num_kv_heads,
                     "head_dim": kv.head_dim, "bytes_per_position": kv.bytes_per_position},
        "source": {k: (manifest.data.get("source") or {}).get(k) for k in ("format", "sha256")},
        "package_bytes": on_disk,
        "weights_file_bytes": weights.stat().st_size,
        "source_weights_bytes": source,
        "compression": source / on_disk if source else None,
    }


def _default_threads() -> int:
    from ..session import physical_cores
    return physical_cores()


# ---- derived figures ---------------------------------------------------------------------------


def stats(values: Sequence[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def summarize(report: dict) -> dict:
    """Fill every test's derived figures from its raw repetitions; safe on partial results."""
    bandwidth = (report.get("bandwidth") or {}).get("best_bytes_per_s")
    pkg = report["package"]
    for run in report["runs"]:
        for test in run["tests"]:
            reps = test["reps"]
            test["tokens_per_s"] = stats([r["tokens_per_s"] for r in reps])
            test["seconds"] = stats([r["seconds"] for r in reps])
            joules = [r["energy"]["joules"] / test["n_tokens"] for r in reps]
            test["energy_per_token"] = None if not reps else {
                "joules": stats(joules), "measured": all(r["energy"]["measured"] for r in reps),
                "label": "measured" if all(r["energy"]["measured"] for r in reps) else "estimated"}
            if test["kind"] == "pp":
                test["ttft_ms"] = stats([r["seconds"] * 1e3 for r in reps])
            else:
                _summarize_decode(test, pkg, bandwidth)
        run["cost"] = _run_cost(run, report)
    report["cost_example"] = cost_mod.minicpm_phone_example()
    return report


def _summarize_decode(test: dict, pkg: dict, bandwidth: float | None) -> None:
    steps = np.asarray([s for r in test["reps"] for s in r["step_seconds"]], np.float64) * 1e3
    test["itl_ms"] = None if not steps.size else {
        **{f"p{q}": float(np.percentile(steps, q)) for q in (50, 90, 99)},
        "mean": float(steps.mean()), "n": int(steps.size)}
    # attention reads every cached position: average over the timed steps (context grows by one each)
    mean_context = max(test["depth"], 1) + (test["n_tokens"] + 1) / 2
    per_token = pkg["weights_file_bytes"] + pkg["kv_cache"]["bytes_per_position"] * mean_context
    tps = (test["tokens_per_s"] or {}).get("mean")
    used = tps * per_token if tps else None
    test["efficiency"] = {
        "bytes_per_token": per_token, "weights_bytes": pkg["weights_file_bytes"], "mean_context": mean_context,
        "bytes_per_s": used, "bandwidth_bytes_per_s": bandwidth,
        "fraction": used / bandwidth if used and bandwidth else None}


def _run_cost(run: dict, report: dict) -> dict | None:
    decode = [t for t in run["tests"] if t["kind"] == "tg" and t["tokens_per_s"]]
    if not decode:
        return None
    t = min(decode, key=lambda x: x["depth"])
    cs = report["cost_settings"]
    energy = t["energy_per_token"]
    try:
        out = cost_mod.cost_report(
            tokens_per_s=t["tokens_per_s"]["mean"], currency=cs["currency"], device_price=cs["device_price"],
            lifetime_years=cs["lifetime_years"], duty_cycle=cs["duty_cycle"],
            joules_per_token=energy["joules"]["mean"], price_per_kwh=cs["price_per_kwh"],
            energy_measured=energy["measured"])
    except cost_mod.CostInputError as e:
        return {"error": str(e)}
    out["test"] = t["test"]
    return out
