"""Atomic package folders: build beside the target, swap into place at the end.

Guarantees (tests/test_safety.py):
- `force` replaces only a folder whose manifest.json says `"format": "edge-llm-package"`; never the
  checkpoint (`source`), a folder containing it or inside it (refused even without `force`), and
  never a folder of other files or a symlink.
- A failed, interrupted (Ctrl-C) or terminated (SIGTERM) export removes its temporary folder and
  never touches the existing package. SIGINT/SIGTERM are deferred during the swap, so the target is
  the old package or the new one, whole, never neither.
- Temporary folders are `.NAME.partial-PID` / `.NAME.old-PID` beside the target; those left by dead
  processes (SIGKILL, power loss) are removed by the next export to the same target, and an old
  package left half-swapped is put back.
- One export per target at a time: `.NAME.lock` (flock) beside it; a second one is refused.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

from edge_llm.errors import ExportError, Terminated

PACKAGE_FORMAT = "edge-llm-package"
_MANIFEST = "manifest.json"
_HANDLED = (signal.SIGINT, signal.SIGTERM)


def is_package(folder: Path) -> bool:
    """True if `folder` holds a manifest.json with "format": "edge-llm-package" (any format_version)."""
    try:
        data = json.loads((Path(folder) / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == PACKAGE_FORMAT


def _inside(a: Path, b: Path) -> bool:
    """a == b or a lies inside b (both resolved)."""
    return a == b or b in a.parents


def check_target(target: Path, *, force: bool, source: Path | None = None) -> None:
    """Refuse any target an export must not write: the checkpoint, anything around or in it, an
    existing folder without --force, and with --force anything that is not an edge-llm package."""
    real = Path(os.path.realpath(target))
    if source is not None:
        src = Path(os.path.realpath(source))
        if _inside(real, src):
            where = "is" if real == src else "is inside"
            raise ExportError(f"refusing to write the package to '{target}': it {where} the checkpoint folder {source}")
        if _inside(src, real):
            raise ExportError(f"refusing to write the package to '{target}': it contains the checkpoint folder "
                              f"{source}")
    if not (target.exists() or target.is_symlink()):
        return
    if not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    if target.is_symlink():
        raise ExportError(f"{target} is a symbolic link; --force replaces only a real package folder")
    if not target.is_dir():
        raise ExportError(f"{target} exists and is not a folder; --force replaces only an edge-llm package")
    if not is_package(target):
        raise ExportError(f"{target} is not an edge-llm package (no manifest.json with \"format\": "
                          f"\"{PACKAGE_FORMAT}\"); --force replaces only packages, so nothing was touched")


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool, source: Path | None = None):
    """Yield an empty temporary folder; on success it replaces `target` (see the module docstring)."""
    given = Path(target)                # messages name the path as the user wrote it
    target = given.absolute()
    check_target(given, force=force, source=source)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create output folder {parent}: {e.strerror}") from e
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output folder {parent} is not writable")
    with _target_lock(target), _sigterm_raises():
        clean_stale(target)                                   # may put back a package a killed export left aside
        check_target(given, force=force, source=source)      # again: the target may have changed meanwhile
        tmp = parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            try:
                yield tmp
                check_target(given, force=force, source=source)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise ExportError(f"disk full while writing {target} (needs more free space in {parent})") from e
                raise ExportError(f"writing {target} failed: {e.strerror or e}") from e
            _swap(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)      # gone already after a successful swap


def _swap(tmp: Path, target: Path) -> None:
    """rename old aside → rename new in → delete old, with SIGINT/SIGTERM deferred throughout."""
    with _deferred_signals() as got:
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        try:
            tmp.rename(target)
        except OSError as e:
            if old is not None:
                old.rename(target)
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(f"could not move the new package into {target}: {e.strerror or e}") from e
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    if signal.SIGINT in got:
        # the new package is complete and in place: finish normally rather than claim an interruption
        print("edge-llm: Ctrl-C arrived during the final rename; the export had completed", file=sys.stderr)
    if signal.SIGTERM in got:
        print("edge-llm: SIGTERM arrived during the final rename; the export had completed", file=sys.stderr)
        raise Terminated(signal.SIGTERM)


def stale_folders(target: Path) -> list[tuple[Path, str, int]]:
    """(path, kind, pid) of `.NAME.partial-PID` / `.NAME.old-PID` beside `target`, any PID."""
    pat = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-([0-9]+)")
    out = []
    with contextlib.suppress(OSError):
        for p in target.parent.iterdir():
            m = pat.fullmatch(p.name)
            if m and p.is_dir() and not p.is_symlink():
                out.append((p, m.group(1), int(m.group(2))))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True                      # exists, owned by another user
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove temporary folders of dead exports to `target` (called with the target's lock held).

    A `.old-PID` while the target is missing means a process died between its two renames: that
    folder is the previous package, so it is put back instead of deleted."""
    removed = []
    stale = [(p, kind, pid) for p, kind, pid in stale_folders(target) if pid == os.getpid() or not _alive(pid)]
    for p, kind, pid in sorted(stale, key=lambda s: s[1] != "old"):
        if kind == "old" and not target.exists() and is_package(p):
            p.rename(target)
            print(f"edge-llm: restored {target} from an interrupted export (pid {pid})", file=sys.stderr)
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def _target_lock(target: Path):
    """flock on `.NAME.lock` beside the target; refuse (one line) if another export holds it."""
    path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ExportError(f"another export to {target.name} is running (pid {holder})") from None
        # the holder before us may have unlinked the file after we opened it: lock the file that is there
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated (a BaseException), so the temporary folder is cleaned like on Ctrl-C."""
    if not _main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _deferred_signals():
    """Record SIGINT/SIGTERM instead of acting on them; yields the set of signals that arrived."""
    got: set[int] = set()
    if not _main_thread():
        yield got
        return
    previous = {s: signal.signal(s, lambda signum, frame: got.add(signum)) for s in _HANDLED}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
