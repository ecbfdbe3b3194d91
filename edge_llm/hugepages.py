"""Transparent huge pages for the memory decode reads on every token: the weights onnxruntime prepacks
when a session loads (anonymous memory from its allocator) and the KV buffers (edge_llm.session.kv_buffer).

Decoding streams every weight once per token; with 4 KiB pages that is ~370,000 page-table entries for
a 1.5 GB package, far past the TLB, and whether glibc's and onnxruntime's big allocations happen to be
2 MiB-backed depends on the kernel's THP mode (`madvise` on many distributions and this development VM:
nothing is, unless asked). Two calls ask:
* `advise(buffer)`: MADV_HUGEPAGE on a mapping of ours before it is written (the KV buffers), so its
  pages fault in as 2 MiB pages where the kernel has them;
* `collapse_loaded()`: after onnxruntime has built a session, MADV_HUGEPAGE + MADV_COLLAPSE (Linux 6.1+)
  on every large anonymous private mapping of the process, which rebuilds their already-written pages
  as huge pages synchronously (khugepaged would take minutes). Contents are unchanged; a mapping the
  kernel cannot collapse (no free huge pages, an old kernel) simply stays as it was.

The collapse copies every page it rebuilds (~4 s for the 2B shape's 1.4 GB here), so a session starts it
on a background thread (`collapse_in_background`) and loading returns at once: the first seconds of a
reply may run beside it, every later token reads 2 MiB pages. `wait()` joins it (benchmarks do, before
timing). Linux only; a no-op elsewhere and with EDGE_LLM_HUGEPAGES=0, synchronous with =sync (for
measuring what it changes: benchmarks/decode_modes.py). Measured in benchmarks/results/decode-modes-2b.md:
decode +15% on the 2B shape.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
import threading

from .metering.probes import proc_kb_bytes

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE = 2 << 20
MIN_MAPPING = 8 << 20          # smaller anonymous mappings are left alone (Python's own arenas, stacks)


def enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("EDGE_LLM_HUGEPAGES", "1") != "0"


def advise(buf: mmap.mmap) -> None:
    """Ask for huge pages on one of our anonymous mappings (before it is written)."""
    if enabled() and hasattr(mmap, "MADV_HUGEPAGE") and len(buf) >= HUGE:
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


def anonymous_mappings(min_bytes: int = MIN_MAPPING) -> list[tuple[int, int]]:
    """(start, end) of the process's private, writable, anonymous mappings of at least `min_bytes`."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 5 or parts[1] != "rw-p":
                    continue
                path = parts[5] if len(parts) > 5 else ""
                if path and path != "[heap]":
                    continue
                start, end = (int(x, 16) for x in parts[0].split("-"))
                if end - start >= min_bytes:
                    out.append((start, end))
    except OSError:
        return []
    return out


def collapse_loaded(min_bytes: int = MIN_MAPPING) -> int:
    """MADV_HUGEPAGE + MADV_COLLAPSE on the 2 MiB-aligned inside of every large anonymous mapping;
    returns the bytes the kernel accepted to collapse (0 where it cannot or this is off)."""
    if not enabled():
        return 0
    libc = _libc()
    if libc is None:
        return 0
    done = 0
    for start, end in anonymous_mappings(min_bytes):
        lo, hi = -(-start // HUGE) * HUGE, end // HUGE * HUGE
        if hi <= lo:
            continue
        libc.madvise(ctypes.c_void_p(lo), hi - lo, MADV_HUGEPAGE)
        if libc.madvise(ctypes.c_void_p(lo), hi - lo, MADV_COLLAPSE) == 0:
            done += hi - lo
    return done


_threads: list[threading.Thread] = []


def collapse_in_background() -> None:
    """`collapse_loaded` on a daemon thread (synchronously with EDGE_LLM_HUGEPAGES=sync)."""
    if not enabled():
        return
    if os.environ.get("EDGE_LLM_HUGEPAGES") == "sync":
        collapse_loaded()
        return
    t = threading.Thread(target=collapse_loaded, name="edge-llm-hugepages", daemon=True)
    t.start()
    _threads.append(t)


def wait(timeout: float | None = None) -> None:
    """Until every collapse started so far has finished."""
    for t in list(_threads):
        t.join(timeout)
        if not t.is_alive():
            _threads.remove(t)


def anon_huge_bytes() -> int | None:
    """AnonHugePages of this process (/proc/self/smaps_rollup), None where unknown."""
    return proc_kb_bytes("/proc/self/smaps_rollup", "AnonHugePages")
