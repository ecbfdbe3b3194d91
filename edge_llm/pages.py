"""Give back the package file's pages that loading touched but decoding does not need.

onnxruntime maps the weights file (one private mapping per initializer) and reads all of it while it
prepacks the int4 matrices into its own memory. Afterwards most of those file pages are never read
again (the prepacked copies are), but they stay in the process's resident set — for a tied model the
whole embedding table, 141 MB on MiniCPM-2B, which the embedding lookup reads a few rows of per token.
`release_clean_pages` drops them with madvise(MADV_DONTNEED): a page read later comes back from the file
(the page cache, usually). Only mappings with no private (copy-on-write) pages are touched, so nothing
onnxruntime might have written is ever discarded. Linux only; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

MADV_DONTNEED = 4


def _file_mappings(path: Path) -> list[tuple[int, int, int, int]]:
    """(start, end, rss_kb, anonymous_kb) of every mapping of `path` in this process."""
    target = os.path.realpath(path)
    out, cur = [], None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if "-" in head[0] and not head[0].endswith(":"):
                    cur = None
                    if len(head) == 6 and head[5].strip() == target:
                        start, end = (int(x, 16) for x in head[0].split("-"))
                        cur = [start, end, 0, 0]
                        out.append(cur)
                elif cur is not None and head[0] == "Rss:":
                    cur[2] = int(head[1])
                elif cur is not None and head[0] == "Anonymous:":
                    cur[3] = int(head[1])
    except OSError:
        return []
    return [tuple(m) for m in out]


def resident_file_kb(path: Path) -> int:
    """KiB of `path` resident in this process's mappings (0 where /proc is unavailable)."""
    return sum(m[2] for m in _file_mappings(path))


def release_clean_pages(path: Path) -> int:
    """Drop this process's resident, unmodified pages of `path`; returns the KiB released."""
    if not sys.platform.startswith("linux"):
        return 0
    maps = [m for m in _file_mappings(path) if m[2] and not m[3]]
    if not maps:
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for start, end, rss_kb, _ in maps:
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += rss_kb
    return released
