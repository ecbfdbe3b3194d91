"""Regenerate the README's chat transcript and the bundled package's size from what the commands print.

    python scripts/readme_transcript.py          # rewrites README.md in place
    python scripts/readme_transcript.py --check  # exit 1 if README.md is stale (tests/test_readme.py)

The transcript is the output of the README's own command (the `printf … | edge-llm chat …` line above
the block), split into replies with `--separator '\\0'` and shown with the prompts a terminal adds.
The size is the bundled package's files in bytes, in decimal MB (`du -cb edge_llm/bundled/minicpm-tiny-int4/*`).
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUNDLED = ROOT / "edge_llm" / "bundled" / "minicpm-tiny-int4"
COMMAND = re.compile(r"`(printf '(.*?)' \| edge-llm chat ([^`]*))`")
BLOCK = re.compile(r"(babbles — recognisably:\n\n```\n)(.*?)(```\n)", re.S)
SIZE = re.compile(r"(trained fixture `minicpm-tiny`, )([\d.]+ MB)")


def questions_and_args(readme: str) -> tuple[list[str], list[str]]:
    m = COMMAND.search(readme)
    if not m:
        raise SystemExit("README.md: the transcript's `printf ... | edge-llm chat ...` command is missing")
    lines = m.group(2).encode().decode("unicode_escape").encode("latin-1").decode("utf-8")
    return [q for q in lines.split("\n") if q], shlex.split(m.group(3))


def replies(questions: list[str], args: list[str]) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "edge_llm", "chat", *args, "--separator", r"\0"],
                       input="".join(q + "\n" for q in questions), capture_output=True, text=True, timeout=300,
                       check=True)
    out = r.stdout.split("\0")
    assert out[-1] == "" and len(out) == len(questions) + 1, r.stdout
    return out[:-1]


def transcript(questions: list[str], answers: list[str]) -> str:
    return "".join(f"you> {q}\nai> {a}\n" for q, a in zip(questions, answers))


def package_mb() -> str:
    return f"{sum(f.stat().st_size for f in BUNDLED.iterdir() if f.is_file()) / 1e6:.1f} MB"


def regenerate(readme: str) -> str:
    questions, args = questions_and_args(readme)
    text = transcript(questions, replies(questions, args))
    readme = BLOCK.sub(lambda m: m.group(1) + text + m.group(3), readme, count=1)
    return SIZE.sub(lambda m: m.group(1) + package_mb(), readme, count=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="Only check; exit 1 when README.md is stale.")
    a = ap.parse_args()
    old = README.read_text(encoding="utf-8")
    new = regenerate(old)
    if a.check:
        if new != old:
            print("README.md is stale: run python scripts/readme_transcript.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    print("README.md " + ("updated" if new != old else "already current"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
