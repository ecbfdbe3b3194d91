"""KV caches of recent requests, kept under a memory budget and reused by longest common token prefix.

Like llama-server's slots: a chat client that resends the whole history finds the previous turn's
cache (prompt + reply) and prefills only the new turn. A finished request puts its cache back with
the ids whose keys/values it holds, and the logits its prompt ended with; the least recently used
entries are dropped when the total would pass the budget.

`take` hands the caller a cache it owns alone: the stored entry itself when the new prompt continues
all of it (the usual chat case; the entry leaves the pool), otherwise a copy of the shared prefix
(the entry stays for whoever continues it). At least the last prompt token is recomputed, for its
logits — unless the new prompt is exactly a stored prompt, whose logits were kept: then nothing is.

Numerics: int4 kernels do not give bit-identical results for a position computed in a prefill batch
and one computed by a decode step (or in a batch of another size), so a reply that reuses a cached
prefix can differ from the same request on an empty cache (llama-server documents the same for its
`cache_prompt`). An identical prompt is exact (its stored positions and logits are what a cold run
computes); a request can opt out with `"cache_prompt": false`.

Used from one thread (the model loop); the lock keeps `stats()` readers on other threads consistent.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..session import KVCache

MIN_COPY = 16   # a shorter shared prefix is cheaper to recompute than to copy and track


@dataclass(eq=False)     # entries are compared by identity (list.remove)
class _Entry:
    ids: np.ndarray                 # int64, exactly the cache's valid positions
    cache: KVCache
    used: int                       # LRU clock
    prompt_len: int = 0             # the ids[:prompt_len] prompt ended with `logits` (0: not kept)
    logits: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes + (self.logits.nbytes if self.logits is not None else 0)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


class PromptCache:
    def __init__(self, budget_bytes: int):
        self.budget = max(0, int(budget_bytes))
        self.entries: list[_Entry] = []
        self._clock = itertools.count()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0
        self.reused_tokens = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, ids: Sequence[int]) -> tuple[KVCache | None, int, np.ndarray | None]:
        """(cache, reused positions, logits) for a prompt `ids`; (None, 0, None) when nothing useful
        is stored. `logits` is not None only when the whole prompt was found with its logits."""
        want = np.asarray(ids, np.int64)
        with self._lock:
            best, best_n, exact = None, 0, False
            for e in self.entries:
                n = common_prefix(e.ids, want)
                whole = n == want.size == e.prompt_len and e.logits is not None
                n = n if whole else min(n, want.size - 1)
                if (whole, n) > (exact, best_n):
                    best, best_n, exact = e, n, whole
            if best is None or (best_n < best.ids.size and best_n < MIN_COPY and not exact):
                self.misses += 1
                return None, 0, None
            if best_n == best.ids.size:
                self.entries.remove(best)
                cache = best.cache
            else:
                cache = best.cache.copy(best_n)
                best.used = next(self._clock)
            cache.truncate(best_n)
            self.hits += 1
            self.reused_tokens += best_n
            return cache, best_n, (best.logits.copy() if exact else None)

    def put(self, ids: Sequence[int], cache: KVCache, *, prompt_len: int = 0,
            logits: np.ndarray | None = None) -> bool:
        """Store `cache` holding the keys/values of `ids` (len(ids) == cache.length), and the logits
        after its first `prompt_len` ids if known. False when it is not stored: larger than the whole
        budget, or already contained in a stored entry."""
        ids = np.asarray(ids, np.int64)
        if ids.size != cache.length:
            raise ValueError(f"{ids.size} ids for a cache holding {cache.length} positions")
        if not 0 < prompt_len <= ids.size:
            prompt_len, logits = 0, None
        entry = _Entry(ids, cache, next(self._clock), prompt_len, logits)
        if entry.nbytes > self.budget or not ids.size:
            return False
        with self._lock:
            for e in self.entries:
                if common_prefix(e.ids, ids) == ids.size and (logits is None or e.prompt_len == prompt_len):
                    e.used = next(self._clock)
                    return False          # a stored entry already holds all of this (a cut-short reply)
            # an entry this one extends is now redundant, unless it keeps logits this one does not
            self.entries = [e for e in self.entries if common_prefix(e.ids, ids) < e.ids.size
                            or (e.logits is not None and (logits is None or e.prompt_len != prompt_len))]
            self.entries.append(entry)
            total = sum(e.nbytes for e in self.entries)
            while total > self.budget:
                old = min(self.entries, key=lambda e: e.used)
                self.entries.remove(old)
                total -= old.nbytes
                self.evictions += 1
            return True

    def count_hit(self, reused: int) -> None:
        """A hit found outside the stored entries (the server's parked slots), counted with these."""
        with self._lock:
            self.hits += 1
            self.reused_tokens += reused

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self.entries), "bytes": sum(e.nbytes for e in self.entries),
                    "budget_bytes": self.budget, "hits": self.hits, "misses": self.misses,
                    "evictions": self.evictions, "reused_tokens": self.reused_tokens}
