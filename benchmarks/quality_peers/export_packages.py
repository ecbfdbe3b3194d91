"""Export one checkpoint with every edge-llm recipe (or the ones named) into OUT/<recipe>/.

    python benchmarks/quality_peers/export_packages.py CHECKPOINT_DIR OUT [--recipes a,b,...] [--force]
        [--custom 'NAME={"block_size": 32, "symmetric": false, "head_bits": 8, ...}' ...]

--custom exports a Recipe built from the JSON fields (points off the registered recipes, e.g. to find
which byte budget matches a llama.cpp format).

OUT/fp32 is the reference for score.py. Packages that already exist are kept unless --force.
Export seconds are written to OUT/export_seconds.json (outside the packages, so sizes stay exact).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.recipe import RECIPES, Recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names [all]")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--custom", action="append", default=[], help='NAME=JSON of Recipe fields')
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plans = {name: RECIPES[name] for name in args.recipes.split(",") if name}
    for spec in args.custom:
        name, fields = spec.split("=", 1)
        plans[name] = Recipe(**json.loads(fields))
    for name, recipe in plans.items():
        dest = args.out / name
        if (dest / "manifest.json").is_file() and not args.force:
            print(f"{name}: kept {dest}", flush=True)
            continue
        t0 = time.perf_counter()
        res = export_checkpoint(args.checkpoint, dest, recipe=recipe, force=args.force, validate=False)
        seconds = time.perf_counter() - t0
        times_file = args.out / "export_seconds.json"
        times = json.loads(times_file.read_text()) if times_file.is_file() else {}
        times_file.write_text(json.dumps(times | {name: round(seconds, 1)}, indent=2))
        print(f"{name}: {res.package_bytes:,} B ({res.package_bytes / res.source_bytes:.1%} of the checkpoint), "
              f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
