"""Measurement probes shared by `edge-llm bench`, the exporter and the benchmark scripts: bytes on disk,
this process's resident memory (now and peak), and memory read bandwidth. One copy of each; numpy and
the standard library only, so the peer harness's llama.cpp venv can import them too.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def folder_bytes(path) -> int:
    """Bytes of every file under `path` (a package's size on disk)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def proc_kb_bytes(path: str, key: str) -> int | None:
    """A `Key:  N kB` line of a /proc file (status, meminfo, smaps_rollup) in bytes; None where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def proc_status_bytes(key: str) -> int | None:
    """A `kB` line of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None where there is none."""
    return proc_kb_bytes("/proc/self/status", key)


def ru_maxrss_bytes() -> int | None:
    """Lifetime peak resident memory from getrusage (bytes on macOS, KiB elsewhere); None on Windows."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int | None:
    """Resident memory of this process now (psutil when installed, else /proc/self/statm)."""
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_bytes() -> dict:
    """Peak resident memory: Linux VmHWM (since the last `reset_peak_rss`) and the lifetime ru_maxrss."""
    ru = ru_maxrss_bytes()
    hwm = proc_status_bytes("VmHWM")
    return {"peak_rss_bytes": hwm if hwm is not None else ru, "ru_maxrss_bytes": ru}


def memory_snapshot() -> dict:
    """Current and peak resident memory of this process, in bytes (the peer harness's record)."""
    return {"rss_bytes": proc_status_bytes("VmRSS"), "vmhwm_bytes": proc_status_bytes("VmHWM"),
            "ru_maxrss_bytes": ru_maxrss_bytes()}


def reset_peak_rss() -> bool:
    """Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each measurement gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_read_bandwidth(mib: int = 512, *, threads: int = 1, repeats: int = 5) -> dict:
    """Best read bandwidth of numpy sums over `mib` MiB, on 1 and on `threads` threads (numpy
    releases the GIL in reductions). The array is written first so every page is resident."""
    a = np.ones(mib * 2**20 // 8, np.float64)
    out = {"array_bytes": a.nbytes, "repeats": repeats, "method": "numpy float64 sum, best of repeats"}
    for n in sorted({1, max(1, threads)}):
        chunks = np.array_split(a, n)
        rates = []
        with ThreadPoolExecutor(n) as pool:
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(np.sum, chunks))
                rates.append(a.nbytes / (time.perf_counter() - t0))
        out[f"threads_{n}"] = {"threads": n, "bytes_per_s": rates, "best_bytes_per_s": max(rates)}
    out["best_bytes_per_s"] = max(v["best_bytes_per_s"] for k, v in out.items() if k.startswith("threads_"))
    del a
    return out
