"""Is decode speed a property of the process? Start fresh processes on one package, each measuring decode
tok/s several times at several depths; report per-process medians and the spread between processes, for
each setting compared (interleaved: process 1 of setting A, process 1 of setting B, process 2 of A, ...).

    python benchmarks/decode_modes.py PACKAGE [--processes 10] [--threads 2] [--depths 128,1024,2000]
        [--settings hugepages=1,hugepages=0] [--out benchmarks/results/decode-modes.md]

Settings: `hugepages=0|1` sets EDGE_LLM_HUGEPAGES (edge_llm.hugepages), `tunable=1` also starts the
process with GLIBC_TUNABLES=glibc.malloc.hugetlb=1; combine with `+` (`hugepages=0+tunable=1`).
Per process and depth: 6 runs of 24 one-token steps from the same cache (rolled back to the depth each
run); the process's figure is their median. Spread = slowest process ÷ fastest (issue 22: within 5%).
A timing benchmark: run it on a quiet machine and say what else ran.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality_peers"))
from portable import portable  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from edge_llm.api import Model
from edge_llm import hugepages
depths = [int(d) for d in sys.argv[3].split(",")]
m = Model.load(sys.argv[1], threads=int(sys.argv[2]), context_length=max(depths) + 64)
load = time.perf_counter() - t0
t1 = time.perf_counter()
hugepages.wait()                       # the background collapse, done before timing
collapse = time.perf_counter() - t1
c = m.cache()
out = {}
for d in depths:
    c.length = 0
    m.session.forward([5] * d, c)
    runs = []
    for _ in range(6):
        c.length = d
        t = time.perf_counter()
        for _ in range(24):
            m.session.forward([5], c)
        runs.append(24 / (time.perf_counter() - t))
    out[d] = runs
print(json.dumps({"runs": out, "load_s": load, "collapse_wait_s": collapse,
                  "anon_huge_mib": (hugepages.anon_huge_bytes() or 0) / 2**20}))
"""


def env_for(setting: str) -> dict:
    env = dict(os.environ)
    for part in setting.split("+"):
        key, _, val = part.partition("=")
        if key == "hugepages":
            env["EDGE_LLM_HUGEPAGES"] = val
        elif key == "tunable":
            if val == "1":
                env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
        else:
            raise SystemExit(f"--settings: unknown '{part}' (hugepages=0|1, tunable=1)")
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("package")
    ap.add_argument("--processes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", default="128")
    ap.add_argument("--settings", default="hugepages=1,hugepages=0")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/decode-modes.md"))
    args = ap.parse_args()
    settings = args.settings.split(",")
    depths = [int(d) for d in args.depths.split(",")]
    res: dict[str, list[dict]] = {s: [] for s in settings}
    load_before = os.getloadavg()
    for i in range(args.processes):
        for s in (settings if i % 2 == 0 else settings[::-1]):
            r = subprocess.run([sys.executable, "-c", CHILD, args.package, str(args.threads), args.depths],
                               capture_output=True, text=True, check=True, env=env_for(s))
            got = json.loads(r.stdout.strip().splitlines()[-1])
            res[s].append(got)
            meds = {d: statistics.median(v) for d, v in got["runs"].items()}
            print(f"{s} process {i}: " + ", ".join(f"depth {d} {v:.2f}" for d, v in meds.items())
                  + f" tok/s; load {got['load_s']:.1f} s; huge {got['anon_huge_mib']:.0f} MiB", flush=True)
    lines = [f"# Decode tok/s per fresh process ({portable(args.package)}, {args.threads} threads)", "",
             f"`python benchmarks/decode_modes.py {portable(' '.join(sys.argv[1:]))}` — "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} logical CPUs, load average before "
             f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}. Processes of the settings interleaved; "
             "per process and depth the median of 6 runs of 24 one-token steps.", "",
             "| setting | depth | median of processes | slowest | fastest | slowest ÷ fastest | load s (median) "
             "| AnonHugePages MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary = {}
    for s in settings:
        for d in depths:
            meds = [statistics.median(p["runs"][str(d)]) for p in res[s]]
            summary[f"{s}@{d}"] = meds
            lines.append(f"| {s} | {d} | {statistics.median(meds):.2f} | {min(meds):.2f} | {max(meds):.2f} | "
                         f"{min(meds) / max(meds):.3f} | {statistics.median(p['load_s'] for p in res[s]):.1f} | "
                         f"{statistics.median(p['anon_huge_mib'] for p in res[s]):.0f} |")
    lines += ["", "Per process (median tok/s by depth):", "", "| process | " + " | ".join(
        f"{s} @{d}" for s in settings for d in depths) + " |", "|---|" + "---:|" * (len(settings) * len(depths))]
    for i in range(args.processes):
        lines.append(f"| {i} | " + " | ".join(f"{statistics.median(res[s][i]['runs'][str(d)]):.2f}"
                                              for s in settings for d in depths) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"command": portable(" ".join(sys.argv)), "per_process": summary}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
