"""Paths in committed results as the commands in README.md write them: `../shared/...` beside the checkout,
paths inside the checkout relative to it, and the scratch folder as `$WORK/...` (the `WORK` variable the
README exports; without it, scratch paths are left as they are). Nothing here names a machine."""
from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def portable(text: str, work: str | None = None) -> str:
    work = work or os.environ.get("WORK")
    pairs = [(f"{CHECKOUT.parent / 'shared'}/", "../shared/"), (f"{CHECKOUT}/", "")]
    if work:
        pairs.append((f"{Path(work).resolve()}/", "$WORK/"))
    for old, new in pairs:          # the shared folder and the checkout first: they may lie inside WORK
        text = text.replace(old, new)
    return text
