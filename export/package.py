"""Atomic package folders: build beside the target, rename into place at the end.

A failed or interrupted export removes its temporary folder and never touches an existing package;
replacing one needs `force=True`, and even then the old folder is only removed after the new one
is complete.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from edge_llm.errors import ExportError


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool):
    target = Path(target).absolute()
    if target.exists() and not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is not a folder")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create output folder {parent}: {e.strerror}") from e
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output folder {parent} is not writable")
    tmp = parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise ExportError(f"disk full while writing {target} (needs more free space in {parent})") from e
        raise ExportError(f"writing {target} failed: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
