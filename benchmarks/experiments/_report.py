"""What every experiment does last: print its Markdown and, when asked, write it to a file."""
from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: Path | None) -> int:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)
    return 0
