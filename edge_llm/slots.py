"""A KV slot pool: the caches of several sequences in one buffer per layer, so one forward decodes a
row for each of them (batched decoding: `edge-llm serve --slots N`, `Model.generate_batch`).

    past_key_values.{i}.key   (slots, n_kv, capacity, head_dim)   one buffer per layer and kind,
                               └ row j = slot j's cache          bound as past and present alike

GroupQueryAttention takes each row's own length from the attention mask (seqlens_k = Σ mask − 1 per
row) and writes a row's new keys/values at that row's own positions, in place, so sequences of
different lengths decode together with no padding in the cache and no copy. A decode forward runs
rows 0..B-1, B = the highest slot taking part + 1: a slot sitting the step out (free, or between
prefill pieces) gets a dummy token written at its first unused position, which its next forward
overwrites; the one spare position per slot (capacity = max_len + 1) keeps that in bounds. A prefill
runs on one slot alone (a batch-1 view of its row), exactly as a lone `KVCache` would.

Memory: every buffer is its own anonymous mapping, reserved but not resident: a page becomes
resident when a forward writes it, and `release(slot)` hands a finished slot's pages back to the
operating system, so resident memory follows the positions in use, slot by slot.

Numerics: a row of a B-row forward equals the 1-row forward to float32 rounding on packages that
compute in float32 (`rows_exact`: float32 activations and scales): greedy tokens are identical. On
int8-activation packages (accuracy_level 4, the default recipes) onnxruntime's B-row and 1-row int4
kernels round differently (docs/serve.md, "Batched decoding"), so a batched greedy reply can take
the other branch at a near-tie.
"""
from __future__ import annotations

import mmap
import platform
import sys
from typing import Sequence

import numpy as np
import onnxruntime as ort

from . import session as _session
from .errors import ContextFullError, OutOfMemoryError
from .session import KV_DTYPES, KVCache, ModelSession

# MAP_NORESERVE: reserve address space without committing swap for it (Python's mmap module has no
# constant for it before 3.12; 0x4000 is its value on Linux for x86 and ARM)
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" and platform.machine() in
                     ("x86_64", "AMD64", "aarch64", "arm64", "armv7l", "i686") else 0)


class SlotPool:
    """`slots` KV caches of up to `max_len` positions each, decoded together. Not thread-safe: one
    thread (the server's model loop, or generate_batch) drives it."""

    def __init__(self, session: ModelSession, slots: int, max_len: int | None = None):
        if slots < 1:
            raise ValueError(f"a slot pool needs at least one slot, not {slots}")
        self.session = session
        self.slots = slots
        self.max_len = min(max_len or session.context_length, session.context_length)
        self.capacity = self.max_len + 1            # + the spare position a sitting-out row writes
        self.lengths = np.zeros(slots, np.int64)    # valid positions per slot
        self.high = np.zeros(slots, np.int64)       # positions written since the slot was released
        self.reserved = np.zeros(slots, np.int64)   # positions each busy slot's sequence may reach
        self.busy = np.zeros(slots, bool)
        kv = session.manifest.kv
        self.shape = (slots, kv.num_kv_heads, self.capacity, kv.head_dim)
        self.dtype = np.dtype(KV_DTYPES[kv.dtype])
        self._maps: list[mmap.mmap] = []
        self.arrays = [(self._buffer(), self._buffer()) for _ in range(kv.num_layers)]
        self.logits = np.zeros((slots, 1, session.vocab), session.logits_dtype)
        self._bindings: dict[tuple[str, int], ort.IOBinding] = {}

    # -- memory ------------------------------------------------------------------------------
    def _buffer(self) -> np.ndarray:
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        if not hasattr(mmap, "MAP_ANONYMOUS"):                     # (Windows: a plain array)
            return np.zeros(self.shape, self.dtype)
        try:
            m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE)
        except OSError as e:
            raise OutOfMemoryError(f"not enough memory for the KV cache: cannot reserve {nbytes / 2 ** 20:,.0f} MiB "
                                   f"of address space for {self.slots} slot(s) of {self.max_len:,} positions "
                                   f"({e.strerror}); use fewer --slots or a shorter --context") from None
        self._maps.append(m)
        return np.frombuffer(m, dtype=self.dtype).reshape(self.shape)

    @property
    def bytes_per_position(self) -> int:
        return self.session.manifest.kv.bytes_per_position

    def resident_positions(self) -> int:
        """Positions written and not released, over all slots (what the pool holds in memory, to a page)."""
        return int(self.high.sum())

    def outstanding_bytes(self) -> int:
        """Memory the busy slots may still make resident: positions reserved and not yet written."""
        return int(np.maximum(self.reserved - self.high, 0).sum()) * self.bytes_per_position

    def check_memory(self, positions: int, *, reclaim: bool = False) -> None:
        """Raise OutOfMemoryError, before anything runs, when a new sequence of `positions` positions,
        on top of what the busy slots may still grow to, needs more memory than the machine has available
        (pages are resident only once written, so without this a pool too big for the machine would fail
        later, mid-reply, with the kernel's out-of-memory killer). `reclaim`: count the pages of free slots
        that still hold a sequence (parked) as available: they can be given back."""
        avail = _session.available_memory()
        if avail is None:
            return
        if reclaim:
            avail += int(self.high[~self.busy].sum()) * self.bytes_per_position
        need, others = positions * self.bytes_per_position, self.outstanding_bytes()
        if need + others > avail:
            mib = 2 ** 20
            held = (f" ({others / mib:,.0f} MiB more are promised to the {int(self.busy.sum())} busy slot(s))"
                    if others else "")
            raise OutOfMemoryError(
                f"not enough memory for the KV cache: {positions:,} positions need {need / mib:,.0f} MiB, "
                f"{avail / mib:,.0f} MiB available{held}; ask for fewer max_tokens, or use a shorter --context, "
                f"fewer --slots, or a package exported with --kv-dtype float16")

    @property
    def free(self) -> int:
        return int((~self.busy).sum())

    def acquire(self, positions: int, *, slot: int | None = None, keep: int = 0) -> int:
        """A free slot (default: the lowest), reserved for a sequence of up to `positions` positions
        (checked against the memory available: OutOfMemoryError), holding the first `keep` positions it
        holds now (a parked sequence continued in place; default: empty). The lowest, so busy slots stay
        packed at the front and a decode forward runs few sitting-out rows."""
        if positions > self.max_len:
            raise ContextFullError(f"{positions} tokens do not fit the context of {self.max_len}")
        if slot is None:
            free = np.flatnonzero(~self.busy)
            if not free.size:
                raise RuntimeError(f"all {self.slots} slots are busy")
            slot = int(free[0])
        elif self.busy[slot]:
            raise RuntimeError(f"slot {slot} is busy")
        if not 0 <= keep <= min(self.lengths[slot], positions):
            raise ValueError(f"cannot keep {keep} positions of a slot holding {self.lengths[slot]}")
        self.check_memory(max(positions - int(self.high[slot]), 0) if keep else positions)
        self.busy[slot], self.reserved[slot], self.lengths[slot] = True, positions, keep
        return slot

    def park(self, slot: int) -> None:
        """Free slot `slot` but keep its sequence (and its pages) for a later `acquire(slot=…, keep=…)`."""
        self.busy[slot], self.reserved[slot] = False, 0

    def release(self, slot: int) -> None:
        """Free slot `slot`: forget its sequence and return its written pages to the operating system."""
        self.busy[slot], self.reserved[slot], self.lengths[slot] = False, 0, 0
        if self.high[slot] and self._maps:
            page = mmap.PAGESIZE
            row = int(np.prod(self.shape[1:])) * self.dtype.itemsize
            start, end = slot * row, (slot + 1) * row
            start, end = -(-start // page) * page, end // page * page   # whole pages inside this row only
            if end > start:
                for m in self._maps:
                    m.madvise(mmap.MADV_DONTNEED, start, end - start)
        self.high[slot] = 0

    # -- bindings: a batch-1 view per slot (prefill), the first B rows per B (decode) ---------------
    def _binding(self, kind: str, n: int) -> ort.IOBinding:
        key = (kind, n)
        if key not in self._bindings:
            rows = slice(n, n + 1) if kind == "slot" else slice(0, n)
            s = self.session
            b = s.sess.io_binding()
            for i, (k, v) in enumerate(self.arrays):
                ko, vo = ort.OrtValue.ortvalue_from_numpy(k[rows]), ort.OrtValue.ortvalue_from_numpy(v[rows])
                b.bind_ortvalue_input(s.names["past_key"][i], ko)
                b.bind_ortvalue_input(s.names["past_value"][i], vo)
                b.bind_ortvalue_output(s.names["present_key"][i], ko)
                b.bind_ortvalue_output(s.names["present_value"][i], vo)
            b.bind_ortvalue_output(s.manifest.io.logits, ort.OrtValue.ortvalue_from_numpy(self.logits[rows]))
            self._bindings[key] = b
        return self._bindings[key]

    # -- forwards ----------------------------------------------------------------------------
    def prefill(self, slot: int, ids) -> np.ndarray:
        """Run `ids` after slot `slot`'s valid positions, on that slot alone (in pieces of the session's
        prefill_chunk); returns a new float32 array with the last position's logits (vocab,)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("prefill() needs at least one token")
        if self.lengths[slot] + ids.size > self.max_len:
            raise ContextFullError(f"{self.lengths[slot] + ids.size} tokens do not fit the context of {self.max_len}")
        s, io = self.session, self.session.manifest.io
        b = self._binding("slot", slot)
        for start in range(0, ids.size, s.prefill_chunk):
            piece = ids[start:start + s.prefill_chunk]
            total = int(self.lengths[slot]) + piece.size
            b.bind_cpu_input(io.input_ids, piece.reshape(1, -1))
            b.bind_cpu_input(io.attention_mask, s._ones[:, :total])
            s.sess.run_with_iobinding(b)
            self.lengths[slot] = total
            self.high[slot] = max(self.high[slot], total)
        return self.logits[slot, 0].astype(np.float32, copy=True)

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """One forward: token `tokens[r]` after slot `slots[r]`'s valid positions, for every r at once;
        returns a new float32 array (len(slots), vocab) with each row's next-token logits."""
        rows = np.asarray(slots, np.int64).reshape(-1)
        if rows.size == 0 or rows.size != len(tokens):
            raise ValueError(f"decode() takes one token per slot ({rows.size} slots, {len(tokens)} tokens)")
        if np.unique(rows).size != rows.size or rows.min() < 0 or rows.max() >= self.slots:
            raise ValueError(f"decode() takes distinct slots in 0..{self.slots - 1}, not {rows.tolist()}")
        if (self.lengths[rows] >= self.max_len).any():
            full = int(rows[self.lengths[rows] >= self.max_len][0])
            raise ContextFullError(f"slot {full} holds {self.max_len} positions: its context is full")
        n = int(rows.max()) + 1
        ids = np.zeros((n, 1), np.int64)                   # sitting-out rows: token 0 at their first free position
        ids[rows, 0] = np.asarray(tokens, np.int64)
        # each row's length after this step: its own length + 1 (per-row seqlens_k for GroupQueryAttention)
        after = self.lengths[:n] + 1                        # (B,)
        mask = (np.arange(int(after.max()))[None, :] < after[:, None]).astype(np.int64)   # (B, total)
        s, io = self.session, self.session.manifest.io
        b = self._binding("rows", n)
        b.bind_cpu_input(io.input_ids, ids)
        b.bind_cpu_input(io.attention_mask, mask)
        s.sess.run_with_iobinding(b)
        self.lengths[rows] += 1
        self.high[rows] = np.maximum(self.high[rows], self.lengths[rows])
        return self.logits[rows, 0].astype(np.float32)       # fancy indexing: a new array

    # -- moving caches in and out (the server's prompt cache keeps lone KVCaches) ----------------
    def load(self, slot: int, cache: KVCache, n: int | None = None) -> None:
        """Slot `slot` takes `cache`'s first `n` positions (default: all valid ones)."""
        n = cache.length if n is None else n
        if not 0 <= n <= min(cache.length, self.max_len):
            raise ValueError(f"cannot load {n} positions of a cache holding {cache.length}")
        for (k, v), (ck, cv) in zip(self.arrays, cache.arrays):
            k[slot, :, :n] = ck[0, :, :n]
            v[slot, :, :n] = cv[0, :, :n]
        self.lengths[slot] = n
        self.high[slot] = max(self.high[slot], n)

    def to_cache(self, slot: int, n: int | None = None) -> KVCache:
        """A new lone KVCache holding slot `slot`'s first `n` positions (default: all valid ones)."""
        n = int(self.lengths[slot]) if n is None else n
        if not 0 <= n <= self.lengths[slot]:
            raise ValueError(f"cannot copy {n} positions of a slot holding {self.lengths[slot]}")
        out = self.session.new_cache(self.max_len)
        out.reserve(max(n, 1))
        for (k, v), (ck, cv) in zip(self.arrays, out.arrays):
            ck[0, :, :n] = k[slot, :, :n]
            cv[0, :, :n] = v[slot, :, :n]
        out.length = n
        return out
