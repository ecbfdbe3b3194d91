"""KV caches of recent requests, kept under a memory budget and reused by longest common token prefix.

Like llama-server's slots: a chat client that resends the whole history finds the previous turn's
cache (prompt + reply) and prefills only the new turn. A finished request puts its cache back with
the ids whose keys/values it holds; the least recently used entries are dropped when the total
allocated KV bytes would pass the budget.

`take` hands the caller a cache it owns alone: the stored entry itself when the new prompt continues
all of it (the usual chat case; the entry leaves the pool), otherwise a copy of the shared prefix
(the entry stays for whoever continues it). Used from one thread (the model loop); the lock only
keeps `stats()` readers from other threads consistent.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..session import KVCache

MIN_COPY = 16   # a shorter shared prefix is cheaper to recompute than to copy and track


@dataclass
class _Entry:
    ids: np.ndarray      # int64, exactly the cache's valid positions
    cache: KVCache
    used: int            # LRU clock


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
            return sum(e.cache.nbytes for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, ids: Sequence[int]) -> tuple[KVCache | None, int]:
        """(cache, reused positions) for a prompt `ids`; (None, 0) when nothing useful is stored.
        At most len(ids) - 1 positions are reused: the last prompt token must run to give logits."""
        want = np.asarray(ids, np.int64)
        with self._lock:
            best, best_n = None, 0
            for e in self.entries:
                n = min(common_prefix(e.ids, want), want.size - 1)
                if n > best_n:
                    best, best_n = e, n
            if best is None:
                self.misses += 1
                return None, 0
            if best_n == best.ids.size:
                self.entries.remove(best)
                cache = best.cache
            elif best_n >= MIN_COPY:
                cache = best.cache.copy(best_n)
                best.used = next(self._clock)
            else:
                self.misses += 1
                return None, 0
            cache.truncate(best_n)
            self.hits += 1
            self.reused_tokens += best_n
            return cache, best_n

    def put(self, ids: Sequence[int], cache: KVCache) -> bool:
        """Store `cache` holding the keys/values of `ids` (len(ids) == cache.length); False if it
        does not fit the budget at all (then it is simply dropped)."""
        ids = np.asarray(ids, np.int64)
        if ids.size != cache.length:
            raise ValueError(f"{ids.size} ids for a cache holding {cache.length} positions")
        if cache.nbytes > self.budget or not ids.size:
            return False
        with self._lock:
            # an entry this one extends is now redundant
            self.entries = [e for e in self.entries if common_prefix(e.ids, ids) < e.ids.size]
            self.entries.append(_Entry(ids, cache, next(self._clock)))
            total = sum(e.cache.nbytes for e in self.entries)
            while total > self.budget:
                old = min(self.entries, key=lambda e: e.used)
                self.entries.remove(old)
                total -= old.cache.nbytes
                self.evictions += 1
            return True

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self.entries), "bytes": sum(e.cache.nbytes for e in self.entries),
                    "budget_bytes": self.budget, "hits": self.hits, "misses": self.misses,
                    "evictions": self.evictions, "reused_tokens": self.reused_tokens}
