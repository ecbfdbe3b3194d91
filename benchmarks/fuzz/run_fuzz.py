"""The long Hypothesis campaign over the fuzz targets of tests/test_fuzz_*.py, and its report.

    nice -n 10 python benchmarks/fuzz/run_fuzz.py [--scale 40] [--deadline 2] [--out benchmarks/results/fuzz-report.md]

The default suite runs the same properties on a few hundred examples each (bounded, derandomized).
Here EDGE_LLM_FUZZ=campaign multiplies every property's example count by `--scale`, draws fresh
random examples, and gives each example a deadline (`--deadline` seconds): an example slower than
that is reported as a hang. Crashes already reported to their owners are pinned as xfail
reproducers and listed apart; examples that hit them again are discarded (tests/fuzz_settings.py
`known_crash`), so the properties keep looking for new ones. Per target the report gives the inputs
tried (Hypothesis' passing + failing + invalid examples over all phases), new crashes and hangs.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_fuzz_*.py"))
COUNTS = re.compile(r"(\d+) passing(?: examples?)?, (\d+) failing(?: examples?)?,? (?:and )?(\d+) invalid")


def run(scale: float, deadline: float, log: Path) -> tuple[str, Path, float]:
    junit = log.with_suffix(".xml")
    env = {**os.environ, "EDGE_LLM_FUZZ": "campaign", "EDGE_LLM_FUZZ_SCALE": str(scale),
           "EDGE_LLM_FUZZ_DEADLINE": str(deadline)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
           "--hypothesis-show-statistics", f"--junitxml={junit}", *TESTS]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout
    log.write_text(out)
    return out, junit, time.monotonic() - t0


def examples_per_test(output: str) -> dict[str, int]:
    """Sum Hypothesis' example counts over the phases listed under each test's statistics header."""
    counts: dict[str, int] = {}
    current = None
    for line in output.splitlines():
        m = re.match(r"^(tests/\S+::\S+):$", line.strip())
        if m:
            current = m.group(1).split("::")[-1]
            counts.setdefault(current, 0)
            continue
        m = COUNTS.search(line)
        if m and current:
            counts[current] += sum(int(x) for x in m.groups())
    return counts


def outcomes(junit: Path) -> dict[str, dict]:
    """Per test: status (passed | failed | xfailed | skipped), time, and the failure text."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        status, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, text = "failed", (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                status = "xfailed" if (child.get("type") or "").endswith("xfail") else "skipped"
                text = child.get("message") or ""
        out[name] = {"file": case.get("classname", "").split(".")[-1], "status": status,
                     "seconds": float(case.get("time") or 0), "text": text}
    return out


def classify(text: str) -> str:
    """hang: an example ran past the deadline; crash: anything else that failed."""
    return "hang" if ("DeadlineExceeded" in text or "Deadline exceeded" in text) else "crash"


def first_error(text: str) -> str:
    for pattern in (r"^E\s+(\w+(?:Error|Exception|Exceeded)\b.*)$", r"^\s*\|\s*(\w+Error: .*)$", r"^(\w+Error: .*)$"):
        m = re.search(pattern, text, re.M)
        if m:
            return m.group(1).strip()[:200]
    return text.strip().splitlines()[0][:200] if text.strip() else "?"


def report(args, output: str, junit: Path, wall: float) -> str:
    examples, results = examples_per_test(output), outcomes(junit)
    lines = ["# Fuzzing campaign (Hypothesis)", "",
             f"Command: `nice -n 10 python benchmarks/fuzz/run_fuzz.py --scale {args.scale:g} --deadline {args.deadline:g}` "
             f"({wall / 60:.1f} min wall on this machine, shared with other jobs; properties in "
             f"tests/test_fuzz_*.py, each example limited to {args.deadline:g} s).", "",
             "| target (test) | inputs tried | crashes | hangs | seconds | outcome |", "|---|---:|---:|---:|---:|---|"]
    totals = [0, 0, 0]
    failures, known = [], []
    for name, r in sorted(results.items(), key=lambda kv: (kv[1]["file"], kv[0])):
        where = f"{r['file']}::{name}"
        if r["status"] == "xfailed":            # a pinned reproducer of a crash reported earlier
            known.append((where, r["text"]))
            continue
        if r["status"] == "skipped":
            lines.append(f"| {where} | — | — | — | — | skipped: {r['text'][:80]} |")
            continue
        n = examples.get(name, 0)
        kind = classify(r["text"]) if r["status"] == "failed" else None
        crash, hang = int(kind == "crash"), int(kind == "hang")
        totals = [totals[0] + n, totals[1] + crash, totals[2] + hang]
        outcome = r["status"] + (f": {first_error(r['text'])}" if kind else "")
        lines.append(f"| {where} | {n:,} | {crash} | {hang} | {r['seconds']:.0f} | {outcome} |" if n else
                     f"| {where} | 1 (hand-written) | {crash} | {hang} | {r['seconds']:.0f} | {outcome} |")
        if kind:
            failures.append((where, r["text"]))
    lines += [f"| **total** | **{totals[0]:,}** | **{totals[1]}** | **{totals[2]}** | {wall:.0f} | |", "",
              "Inputs tried: Hypothesis' examples (passing + failing + invalid) over all its phases; an "
              "example that hits an already-reported crash is discarded and counts as invalid."]
    if known:
        lines += ["", "## Crashes found earlier by these fuzzers, reported to their owners (pinned as xfail "
                  "reproducers, still crashing)", ""]
        lines += [f"- `{where}`: {text.strip().splitlines()[0] if text.strip() else ''}" for where, text in known]
    if failures:
        lines += ["", "## New failures", ""]
        for where, text in failures:
            falsifying = re.findall(r"(?:Falsifying example|Failing test case): .*?(?=\n\S|\Z)", text, re.S)
            lines += [f"### {where}", "", "```", (falsifying[0] if falsifying else text)[:1500].rstrip(), "```", ""]
    notes = Path(__file__).resolve().parent / "notes.md"
    if notes.is_file():                      # what earlier runs found and what became of it, kept by hand
        lines += ["", notes.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=40.0, help="examples = the suite's count x scale")
    ap.add_argument("--deadline", type=float, default=2.0, help="seconds per example before it counts as a hang")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz-report.md")
    ap.add_argument("--log", type=Path, default=ROOT / "scratch" / "fuzz" / "campaign.log")
    a = ap.parse_args()
    a.log.parent.mkdir(parents=True, exist_ok=True)
    output, junit, wall = run(a.scale, a.deadline, a.log)
    a.out.write_text(report(a, output, junit, wall))
    print(f"wrote {a.out} (log: {a.log})")


if __name__ == "__main__":
    main()
