"""No absolute path of a development machine in the repository: commands, docs and results name
folders relative to the checkout (`../shared` beside it, `scratch/` inside it) or as placeholders
(`$WORK/...`, `$TMPDIR/...`), so nothing points into one person's machine or a folder shared by every
user of it (pyproject.toml once built into /tmp)."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.$~])/(?:work|home|tmp|root|Users)/")
MACHINE_PATH_BYTES = re.compile(rb"(?<![\w.$~])/(?:work|home|tmp|root|Users)/[\w./-]{0,60}")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / n for n in out.decode().split("\0") if n]


def test_no_machine_paths_in_tracked_files():
    found = []
    for path in tracked_text_files():
        try:
            data = path.read_bytes()
        except OSError:          # a file deleted in the working tree
            continue
        if b"\0" in data[:8192]:      # binary (a tokenizer.model's trainer_spec can name its corpus): bytes
            found += [f"{path.relative_to(ROOT)}: {m.group().decode('latin-1')}…" for m in MACHINE_PATH_BYTES.finditer(data)]
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not found, "absolute machine paths:\n" + "\n".join(found[:40])


def test_the_pattern():
    slash = "/"     # the examples are built, so this file passes its own grep
    assert MACHINE_PATH.search(f'"cmd": "{slash}work/main/.venv/bin/python"') and MACHINE_PATH.search(f"-o {slash}tmp/x")
    assert not MACHINE_PATH.search("$WORK/cache/x ../shared/fixtures scratch/tmp/x ~/.cache/x /proc/meminfo")
