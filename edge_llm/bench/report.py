"""Bench reports: the versioned JSON, Markdown for humans, optional PNG plots, and cross-machine compare.

JSON layout (schema "edge-llm-bench", schema_version 1), top level:

    schema, schema_version, created, command, interrupted, notes, load_average (start, end)
    machine        edge_llm.metering.machine.detect_machine()
    package        shape, quantization, sizes on disk, compression vs the source checkpoint
    settings       threads, pp, tg, depths, reps, warmup, bandwidth_mib, seed
    energy         measured or estimated, the power model when estimated, counters used / skipped
    cost_settings  currency, price_per_kwh, device_price, lifetime_years, duty_cycle
    runs[]         one per thread count: load_seconds, memory, cores_used, cost,
                   tests[]: test, kind (pp|tg), n_tokens, depth, warmup_reps[], reps[] (raw figures),
                   tokens_per_s / ttft_ms / itl_ms / energy_per_token / efficiency (derived)
    bandwidth      numpy read bandwidth probe (None when disabled or interrupted before it)
    cost_example   the MiniCPM phone example recomputed (edge_llm.metering.cost)

A report with another schema_version is refused, never half-read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..errors import EdgeLLMError

SCHEMA = "edge-llm-bench"
SCHEMA_VERSION = 1
MiB = 2**20


class ReportError(EdgeLLMError):
    """A bench report is unreadable, of another schema, or not comparable with another."""


def write_json(report: dict, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_report(path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a readable JSON report ({e})") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ReportError(f"{path}: not an edge-llm bench report (schema is not '{SCHEMA}')")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ReportError(f"{path}: schema_version {data.get('schema_version')}; this edge-llm reads "
                          f"version {SCHEMA_VERSION}")
    return data


# ---- formatting ---------------------------------------------------------------------------------


def _num(x, fmt=".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _mean_std(s: dict | None, scale: float = 1.0, fmt=".2f") -> str:
    if not s:
        return "—"
    std = "n/a" if s["std"] is None else format(s["std"] * scale, fmt)
    return f"{s['mean'] * scale:{fmt}} ± {std}"


def _mib(n) -> str:
    return "—" if n is None else f"{n / MiB:.1f}"


def machine_name(m: dict) -> str:
    name = m.get("board_model") or m.get("soc_name") or m.get("cpu_model") or "unknown CPU"
    cpu = m.get("cpu_model")
    return f"{name} ({cpu})" if cpu and cpu not in name else name


def isa_summary(m: dict) -> str:
    return " ".join(k for k, v in (m.get("isa") or {}).items() if v) or "—"


def _energy_cell(e: dict | None) -> str:
    if not e or not e.get("joules"):
        return "—"
    value = _num(e["joules"]["mean"], ".4g")
    return value if e["measured"] else f"{value} *est.*"


# ---- Markdown -----------------------------------------------------------------------------------


def render_markdown(report: dict, *, plots: Sequence[str] = ()) -> str:
    m, pkg, s = report["machine"], report["package"], report["settings"]
    out = [f"# edge-llm bench: {pkg['name']} on {machine_name(m)}", ""]
    if report.get("interrupted"):
        out += ["**Interrupted: partial results.**", ""]
    out += [_machine_line(m), _package_line(pkg),
            f"**Settings**: pp {', '.join(map(str, s['pp'])) or '—'} · tg {s['tg']} at depths "
            f"{', '.join(map(str, s['depths'])) or '—'} · reps {s['reps']} after warm-up {s['warmup']} · "
            f"greedy, {s['prompt']} (seed {s['seed']})", ""]
    tests = [(run, t) for run in report["runs"] for t in run["tests"]]
    out += ["## Throughput", "", "| test | threads | t/s |", "|---|---:|---:|"]
    out += [f"| {t['test']} | {run['threads']} | {_mean_std(t.get('tokens_per_s'))} |" for run, t in tests]
    out += ["", "## Latency (ms)", "",
            "pp time includes the first greedy sample, so it is the time to first token (TTFT) of that prompt.", "",
            "| test | threads | TTFT | ITL p50 | ITL p90 | ITL p99 |", "|---|---:|---:|---:|---:|---:|"]
    for run, t in tests:
        itl = t.get("itl_ms") or {}
        out.append(f"| {t['test']} | {run['threads']} | {_mean_std(t.get('ttft_ms'))} | {_num(itl.get('p50'))} "
                   f"| {_num(itl.get('p90'))} | {_num(itl.get('p99'))} |")
    out += ["", "## Load and memory", "", "Load = `Model.load` (onnxruntime session and tokenizer). Peak RSS is "
            "the process's high-water mark, reset per thread count where Linux allows (see peak_rss_scope).", "",
            "| threads | load s | RSS after load MiB | peak RSS MiB | KV at full context MiB |",
            "|---:|---:|---:|---:|---:|"]
    for run in report["runs"]:
        mem = run.get("memory", {})
        out.append(f"| {run['threads']} | {_num(run.get('load_seconds'), '.3f')} "
                   f"| {_mib(mem.get('rss_after_load_bytes'))} | {_mib(mem.get('peak_rss_bytes'))} "
                   f"| {_mib(mem.get('kv_cache_bytes'))} |")
    out += ["", *_depth_memory_section(report, tests), *_bandwidth_section(report, tests),
            *_energy_section(report, tests), *_cost_section(report)]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    out += [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(out).rstrip() + "\n"


def _depth_memory_section(report: dict, tests) -> list[str]:
    """Resident memory against the context each decode test ended at: it should track package + KV(context)."""
    rows = [(run, t) for run, t in tests
            if t["kind"] == "tg" and t.get("reps") and "context_positions" in t["reps"][-1]]
    if not rows:
        return []
    pkg = report["package"]
    out = ["## Memory at depth", "",
           f"KV cache: {pkg['kv_cache'].get('dtype', 'float32')}, {pkg['kv_cache']['bytes_per_position']:,} bytes per "
           f"position. RSS is read at the last decode step of the last repetition, its cache still alive.", "",
           "| test | threads | context | KV(context) MiB | package MiB | RSS MiB | RSS ÷ (package + KV) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for run, t in rows:
        last = t["reps"][-1]
        kv = last["context_positions"] * pkg["kv_cache"]["bytes_per_position"]
        need = pkg["package_bytes"] + kv
        ratio = f"{last['rss_at_end_bytes'] / need:.2f}" if last.get("rss_at_end_bytes") else "—"
        out.append(f"| {t['test']} | {run['threads']} | {last['context_positions']} | {_mib(kv)} "
                   f"| {_mib(pkg['package_bytes'])} | {_mib(last.get('rss_at_end_bytes'))} | {ratio} |")
    return out + [""]


def _machine_line(m: dict) -> str:
    mem = m.get("memory_total_bytes")
    extra = [x for x in ("virtualized" if m.get("virtualized") else None,
                         "EMULATED: timings are not ARM performance" if m.get("emulated") else None) if x]
    return (f"**Machine**: {machine_name(m)} · {m.get('architecture')} · {m.get('logical_cores')} logical / "
            f"{m.get('physical_cores')} physical cores · {_num(mem and mem / 2**30, '.1f')} GiB · "
            f"ISA: {isa_summary(m)} · "
            f"{m.get('os')} {m.get('kernel') or ''} · Python {m.get('python')} · onnxruntime {m.get('onnxruntime')}"
            + (f" · {', '.join(extra)}" if extra else "") + "  ")


def _package_line(pkg: dict) -> str:
    sh, q = pkg["shape"], pkg["quantization"]
    params = pkg.get("parameters")
    comp = pkg.get("compression")
    return (f"**Package**: {pkg['name']} · {sh['architecture']} {sh['num_layers']} layers, hidden {sh['hidden_size']}"
            f"{f', {params / 1e6:.1f}M parameters' if params else ''} · "
            f"{q.get('precision')} block {q.get('block_size')}"
            f"{' symmetric' if q.get('symmetric') else ''} · {_mib(pkg['package_bytes'])} MiB on disk"
            + (f", {comp:.2f}× smaller than the source checkpoint ({_mib(pkg['source_weights_bytes'])} MiB)"
               if comp else "")
            + "  ")


def _bandwidth_section(report: dict, tests) -> list[str]:
    bw = report.get("bandwidth")
    out = ["## Decode efficiency against memory bandwidth", ""]
    if bw:
        per = ", ".join(f"{v['threads']} thread(s) {v['best_bytes_per_s'] / 1e9:.1f} GB/s"
                        for k, v in bw.items() if k.startswith("threads_"))
        out += [f"Read bandwidth: **{bw['best_bytes_per_s'] / 1e9:.1f} GB/s** ({bw['method']}, "
                f"{_mib(bw['array_bytes'])} MiB; {per}).", ""]
    else:
        out += ["Read bandwidth not measured (disabled or interrupted); efficiency left out.", ""]
    out += ["Bytes per token = weights file + KV cache read at the mean context of the timed steps. "
            "Efficiency above 100% means the weights are served partly from CPU caches.", "",
            "| test | threads | t/s | MiB/token | GB/s used | efficiency |", "|---|---:|---:|---:|---:|---:|"]
    for run, t in tests:
        e = t.get("efficiency")
        if t["kind"] != "tg" or not e:
            continue
        frac = e.get("fraction")
        out.append(f"| {t['test']} | {run['threads']} | {_num((t.get('tokens_per_s') or {}).get('mean'))} "
                   f"| {_mib(e['bytes_per_token'])} | {_num(e['bytes_per_s'] and e['bytes_per_s'] / 1e9)} "
                   f"| {'—' if frac is None else f'{frac:.0%}'} |")
    return out + [""]


def _energy_section(report: dict, tests) -> list[str]:
    e = report["energy"]
    how = (f"measured from {', '.join(e['counters'])}, idle power subtracted" if e["measured"]
           else f"*estimated* from the power model {e['model']}, model idle subtracted; no readable energy counter")
    out = ["## Energy" + ("" if e["measured"] else " (*estimated*)"), "", f"Energy per token is {how}.", ""]
    out += [f"- counter skipped: {s}" for s in e.get("skipped", [])]
    out += ["| test | threads | J/token | W | |", "|---|---:|---:|---:|---|"]
    for run, t in tests:
        ept = t.get("energy_per_token")
        if not ept:
            continue
        reps = t["reps"]
        watts = sum(r["energy"]["joules"] for r in reps) / max(sum(r["energy"]["seconds"] for r in reps), 1e-12)
        out.append(f"| {t['test']} | {run['threads']} | {_energy_cell(ept)} | {watts:.1f} | {ept['label']} |")
    return out + [""]


def _cost_section(report: dict) -> list[str]:
    cs = report["cost_settings"]
    cur = cs["currency"]
    price = "not given" if cs["device_price"] is None else f"{cs['device_price']:g} {cur}"
    out = ["## Cost", "",
           f"Assumptions: electricity {_num(cs['price_per_kwh'], 'g')} {cur}/kWh · device price {price} · "
           f"lifetime {cs['lifetime_years']:g} years · duty cycle {cs['duty_cycle']:.0%}. "
           "Decode speed and energy of the shallowest tg test.", "",
           f"| threads | test | t/s | J/token | electricity {cur}/Mtok | hardware {cur}/Mtok | total {cur}/Mtok "
           f"| tokens per {cur} |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    for run in report["runs"]:
        c = run.get("cost")
        if not c or "error" in c:
            if c:
                notes.append(f"threads {run['threads']}: {c['error']}")
            continue
        est = "" if c["assumptions"]["energy_measured"] else " *est.*"
        tpc = c.get("tokens_per_currency")
        jpt = _num(c["assumptions"]["joules_per_token"], ".4g")
        out.append(f"| {run['threads']} | {c['test']} | {c['tokens_per_s']:.2f} | {jpt}{est} "
                   f"| {_num(c['electricity_per_mtok'], '.4g')} | {_num(c['hardware_per_mtok'], '.4g')} "
                   f"| {_num(c['total_per_mtok'], '.4g')} | {'—' if tpc is None else f'{tpc:,.0f}'} |")
        notes += [n for n in c.get("notes", []) if n not in notes]
    out += [""] + [f"- {n}" for n in notes]
    ex = report.get("cost_example")
    if ex:
        need = ex["to_reproduce_claim"]
        out += ["", f"Worked example, {ex['device']}: {ex['arithmetic']} (hardware only). MiniCPM quotes "
                    f"{ex['claimed_tokens_per_currency'] / 1e6:.1f}M tokens/RMB, which would need e.g. a "
                    f"{need['duty_cycle']:.1%} duty cycle or {need['tokens_per_s']:.2f} tokens/s."]
    return out + [""]


# ---- plots --------------------------------------------------------------------------------------


def write_plots(report: dict, out_dir) -> tuple[list[str], str | None]:
    """PNG plots of t/s (mean, ± std bars) vs context depth and vs threads; ([paths], note). Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ("plots skipped: matplotlib is not installed (pip install matplotlib, or "
                    "pip install -e '.[bench]' in the edge-llm checkout)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    by_depth = {run["threads"]: [(t["depth"], t["tokens_per_s"]) for t in run["tests"]
                                 if t["kind"] == "tg" and t.get("tokens_per_s")] for run in report["runs"]}
    if any(len(v) > 1 for v in by_depth.values()):
        written.append(_plot(plt, out_dir / "tps_vs_depth.png", by_depth, "context depth (tokens)",
                             "decode tokens/s vs context depth", "threads {}"))
    else:
        skipped.append("tokens/s vs depth (one depth)")
    by_threads: dict[str, list] = {}
    for run in report["runs"]:
        for t in run["tests"]:
            if t.get("tokens_per_s"):
                by_threads.setdefault(t["test"], []).append((run["threads"], t["tokens_per_s"]))
    if any(len(v) > 1 for v in by_threads.values()):
        written.append(_plot(plt, out_dir / "tps_vs_threads.png", by_threads, "threads", "tokens/s vs threads", "{}"))
    else:
        skipped.append("tokens/s vs threads (one thread count)")
    return written, ("plots skipped: " + "; ".join(skipped)) if skipped else None


def _plot(plt, path: Path, series: dict, xlabel: str, title: str, label_fmt: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    ticks = set()
    for key, points in series.items():
        points = sorted(points, key=lambda p: p[0])
        xs = [x for x, _ in points]
        ys = [st["mean"] for _, st in points]
        err = [st["std"] or 0.0 for _, st in points]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label_fmt.format(key))
        ticks.update(xs)
    ax.set_xticks(sorted(ticks))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tokens/s")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


# ---- compare ------------------------------------------------------------------------------------


def _compat_key(r: dict) -> dict:
    q = r["package"]["quantization"]
    return {"schema_version": r["schema_version"], "model shape": r["package"]["shape"],
            "quantization": {"precision": q.get("precision"), "block_size": q.get("block_size")},
            "test settings": {k: r["settings"][k] for k in ("pp", "tg", "depths")}}


def _difference(a: dict, b: dict) -> str:
    for key in a:
        if a[key] != b[key]:
            if isinstance(a[key], dict):
                diffs = [f"{k} {a[key].get(k)} vs {b[key].get(k)}" for k in a[key] if a[key].get(k) != b[key].get(k)]
                return f"different {key} ({'; '.join(diffs)})"
            return f"different {key} ({a[key]} vs {b[key]})"
    return ""


# what compare reads from each report; a report of the right schema without one of them is refused by name
_COMPARE_FIELDS = ("machine", "package.shape.architecture", "package.shape.num_layers", "package.shape.hidden_size",
                   "package.quantization", "settings.pp", "settings.tg", "settings.depths", "energy.measured", "runs")


def check_compare_fields(path: Path, r: dict) -> None:
    """ReportError naming the file and the first missing field compare needs."""
    fields = list(_COMPARE_FIELDS)
    if isinstance(r.get("runs"), list):
        for i, run in enumerate(r["runs"]):
            fields += [f"runs.{i}.threads", f"runs.{i}.tests"]
            tests = run.get("tests") if isinstance(run, dict) else None
            fields += [f"runs.{i}.tests.{j}.test" for j in range(len(tests) if isinstance(tests, list) else 0)]
    for f in fields:
        obj, ok = r, True
        for key in f.split("."):
            if isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
                obj = obj[int(key)]
            elif isinstance(obj, dict) and key in obj:
                obj = obj[key]
            else:
                ok = False
                break
        if not ok:
            raise ReportError(f"{path}: missing field '{f}' (a bench report needs it to compare)")


def compare_reports(paths: Sequence) -> str:
    """One Markdown table across machines; ReportError (one line) if the reports do not compare."""
    if not paths:
        raise ReportError("compare needs at least one report")
    reports = [(Path(p), load_report(p)) for p in paths]
    for path, r in reports:
        check_compare_fields(path, r)
    first_path, first = reports[0]
    key0 = _read(first_path, _compat_key, first)
    for path, r in reports[1:]:
        why = _difference(key0, _read(path, _compat_key, r))
        if why:
            raise ReportError(f"cannot compare {first_path.name} with {path.name}: {why}")
    out, pp_cols, tg_cols, ttft_col = _read(first_path, _compare_header, first)
    for path, r in reports:
        out += _read(path, _compare_rows, path, r, pp_cols, tg_cols, ttft_col)
    if any(not r["energy"]["measured"] for _, r in reports):
        out += ["", "*est.* = estimated from a power model, not measured (see each report's energy section)."]
    if any(r["machine"].get("emulated") for _, r in reports):
        out += ["", "Reports marked emulated were timed under emulation: not real performance."]
    return "\n".join(out) + "\n"


def _read(path: Path, fn, *args):
    """fn(*args), with a malformed value in the report at `path` turned into a one-line ReportError."""
    try:
        return fn(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ReportError(f"{path}: malformed bench report ({type(e).__name__}: {e})") from None


def _compare_header(first: dict):
    s = first["settings"]
    pp_cols = [f"pp{n}" for n in s["pp"]]
    tg_cols = [f"tg{s['tg']}" + (f" @ d{d}" if d else "") for d in s["depths"]]
    ttft_col = pp_cols[0] if pp_cols else None
    head = (["report", "machine", "arch", "ISA", "threads"] + [f"{c} t/s" for c in pp_cols + tg_cols]
            + ([f"TTFT {ttft_col} ms"] if ttft_col else []) + ["decode J/token"])
    sh = first["package"]["shape"]
    out = [f"# edge-llm bench compare: {sh['architecture']} {sh['num_layers']} layers, hidden {sh['hidden_size']}", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    return out, pp_cols, tg_cols, ttft_col


def _compare_rows(path: Path, r: dict, pp_cols, tg_cols, ttft_col) -> list[str]:
    m, rows = r["machine"], []
    for run in r["runs"]:
        tests = {t["test"]: t for t in run["tests"]}
        cells = [path.stem + (" (interrupted)" if r.get("interrupted") else ""), machine_name(m),
                 str(m.get("architecture")), isa_summary(m), str(run["threads"])]
        cells += [_mean_std((tests.get(c) or {}).get("tokens_per_s")) for c in pp_cols + tg_cols]
        if ttft_col:
            cells.append(_mean_std((tests.get(ttft_col) or {}).get("ttft_ms")))
        decode = tests.get(tg_cols[0]) if tg_cols else None
        cells.append(_energy_cell((decode or {}).get("energy_per_token")))
        rows.append("| " + " | ".join(cells) + " |")
    return rows
