"""Export the MiniCPM-2B shape on this machine and record time, peak RSS and package size.

    python benchmarks/export_2b.py --checkpoint scratch/ckpt-2b-bin --out benchmarks/results/export-2b [--recipe NAME]

Writes the synthetic checkpoint first if it is missing (`edge-llm synth --shape minicpm-2b`), runs
`edge-llm export` under /usr/bin/time -v in a child process (so peak RSS is the exporter's own),
and writes <out>.json / <out>.md. Weights are random: only time, memory and size mean anything.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from edge_llm.metering.probes import folder_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=Path("scratch/ckpt-2b-bin"))
    ap.add_argument("--package", type=Path, default=None)
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--shape", default="minicpm-2b")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/export-2b"))
    ap.add_argument("--time-log", type=Path, default=None,
                    help="use the `/usr/bin/time -v edge-llm export …` output of a run already made (stdout+stderr)")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "edge_llm.cli"]
    if not args.checkpoint.exists():
        subprocess.run(exe + ["synth", "--shape", args.shape, "-o", str(args.checkpoint)], check=True)
    pkg = args.package or args.checkpoint.parent / f"pkg-{args.shape}-{args.recipe or 'default'}"
    cmd = ["/usr/bin/time", "-v"] + exe + ["export", str(args.checkpoint), "-o", str(pkg), "--force"]
    if args.recipe:
        cmd += ["--recipe", args.recipe]
    if args.time_log:
        log = args.time_log.read_text()
        r = subprocess.CompletedProcess(cmd, 0, log.split("\tCommand being timed")[0], log)
        h, m, sec = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", log).groups()
        wall = int(h or 0) * 3600 + int(m) * 60 + float(sec)
    else:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            sys.exit(f"export failed:\n{r.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    manifest = json.loads((pkg / "manifest.json").read_text())
    src = manifest["sizes"]["source_weights_bytes"]
    size = folder_bytes(pkg)
    q = manifest["quantization"]
    result = {
        "command": " ".join(cmd[2:]), "machine": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(), "wall_seconds": round(wall, 1), "peak_rss_bytes": rss_kb * 1024,
        "source_bytes": src, "package_bytes": size, "package_fraction": size / src,
        "recipe": {k: q[k] for k in ("precision", "block_size", "symmetric", "accuracy_level", "method",
                                     "head_method", "clip_search", "calibration_seqs", "calibration_len")}
                  | {"scale_dtype": q.get("scale_dtype", "float32")},
        "worst_tensor": q.get("worst_tensor"), "exporter_summary": r.stdout.strip().splitlines(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = f"""# Export of the MiniCPM-2B shape on this machine

`{result['command']}` — synthetic checkpoint with the real MiniCPM-2B config and tokenizer and random bf16
weights ({', '.join(manifest['source']['files'])}), {result['cpus']} CPUs.

| recipe | wall time | peak RSS | source (bf16) | package | package / source |
|---|---|---|---|---|---|
| {q['method']}{' + clip search' if q['clip_search'] else ''} {'asym' if not q['symmetric'] else 'sym'} b{q['block_size']}{' f16 scales' if q.get('scale_dtype') == 'float16' else ''} | {wall / 60:.1f} min | {rss_kb / 2**20:.2f} GiB | {src / 1e9:.3f} GB | {size / 1e9:.3f} GB | **{size / src:.1%}** ({1 - size / src:.1%} smaller) |

Exporter summary:
```
{r.stdout.strip()}
```
Rerun: `python benchmarks/export_2b.py --checkpoint {args.checkpoint} --package {pkg}{' --recipe ' + args.recipe if args.recipe else ''}`
"""
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
