"""Where do speculative greedy replies part from plain ones? For each prompt of a `benchmarks/speculative.py`
JSON whose texts differ: the token position of the first difference and the one-row logit margin there
between the plain reply's token and the speculative reply's (a near-tie when small).

    python benchmarks/speculative_ties.py RESULT.json --package PKG [--markdown OUT.md]

Not a timing benchmark.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from edge_llm.api import Model

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality_peers"))
from portable import portable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result", type=Path)
    ap.add_argument("--package", required=True)
    ap.add_argument("--markdown", type=Path, default=None)
    a = ap.parse_args()
    res = json.loads(a.result.read_text(encoding="utf-8"))
    m = Model.load(a.package, threads=2, speculate="off")
    rows = []
    for p in res["prompts"]:
        if p["identical"]:
            continue
        k = p["first_difference"]
        plain, spec = p["plain_ids"], p["spec_ids"]
        if k >= min(len(plain), len(spec)):
            rows.append((p["set"], p["i"], k, None, None))
            continue
        cache = m.cache()                  # the path plain decoding took: the prompt, then one token a step
        logits = m.session.forward(np.asarray(p["prompt_ids"], np.int64), cache)
        for t in plain[:k]:
            logits = m.session.forward(np.asarray([t], np.int64), cache)
        top = np.sort(logits)[::-1]
        rows.append((p["set"], p["i"], k, float(logits[plain[k]] - logits[spec[k]]), float(top[0] - top[1])))
    margins = [r[3] for r in rows if r[3] is not None]
    firsts = [r[2] for r in rows]
    lines = ["# Where speculative greedy replies part from plain ones", "",
             f"`python benchmarks/speculative_ties.py {portable(' '.join(sys.argv[1:]))}`: {len(rows)} of "
             f"{len(res['prompts'])} replies differ; first difference at token {statistics.median(firsts):.0f} "
             f"(median; range {min(firsts)}–{max(firsts)}); one-row logit margin of the plain token over the "
             f"speculative one there: median {statistics.median(margins):.3f}, largest {max(margins):.3f} "
             f"({sum(x < 0.5 for x in margins)} of {len(margins)} below 0.5).", "",
             "| set | prompt | first different token | plain − speculative logit (one-row) | top-2 gap |",
             "|---|---:|---:|---:|---:|"]
    for s, i, k, d, gap in rows:
        lines.append(f"| {s} | {i} | {k} | {'-' if d is None else f'{d:.3f}'} | {'-' if gap is None else f'{gap:.3f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        a.markdown.write_text(text)


if __name__ == "__main__":
    main()
