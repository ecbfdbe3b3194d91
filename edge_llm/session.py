"""One onnxruntime session per package (weights in memory once), and per-request KV caches.

A `KVCache` belongs to one conversation or request: its own per-layer buffers, its own IOBinding and
its own logits buffer. GroupQueryAttention sees past_key and present_key share memory and writes only
the new rows in place, so a decode step copies no cache. Caches start small and grow in `chunk`
positions (copying the valid rows once per growth) up to their `max_len`, so resident memory follows
the context actually used: each buffer is its own anonymous memory map, so a buffer dropped on growth
goes back to the operating system at once (a malloc'd one may stay in the allocator's heap), and rows
not yet written are not resident. Any number of caches run on one `ModelSession`; onnxruntime's `Run` is
thread-safe, so different caches may even step at the same time (the same cache must not).
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import hugepages
from .errors import ContextFullError, OutOfMemoryError, PackageError
from .manifest import KV_ITEMSIZE, Manifest, load_manifest
from .metering.probes import proc_kb_bytes

KV_CHUNK = 256   # positions a cache grows by; also its first size
KV_DTYPES = {name: np.dtype(name).type for name in KV_ITEMSIZE}   # the manifest's KV types as numpy types
_KEEP_ONE = np.ones(1, np.int64)   # logits_to_keep as forward() runs it (the graph's default)


def kv_buffer(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zeroed array in its own anonymous mapping: pages become resident when written, and the whole
    mapping is unmapped when the last reference goes (numpy keeps the mmap object alive)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):      # (Windows: a plain array)
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    hugepages.advise(buf)                          # 2 MiB pages where the kernel has them (edge_llm.hugepages)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), None where unknown."""
    return proc_kb_bytes("/proc/meminfo", "MemAvailable")


def physical_cores() -> int:
    """Physical cores available to this process (decode is bandwidth-bound: SMT siblings rarely help)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = set(range(os.cpu_count() or 1))
    seen = set()
    for c in cpus:
        try:
            sib = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            sib = str(c)
        seen.add(sib)
    return max(1, len(seen))


def session_options(threads: int | None = None, *, spinning: bool = True) -> ort.SessionOptions:
    """Latency-first settings: all graph optimisations, one intra-op pool sized to the physical cores,
    no inter-op parallelism (a decoder is one chain of ops), spinning workers between the ~hundreds of
    small ops per token (turn off with spinning=False when sharing the machine)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


class KVCache:
    """One request's KV cache: per-layer (1, n_kv, capacity, head_dim) key/value buffers, bound as both
    past and present in this cache's own IOBinding, plus its own logits buffer.

    `length` positions are valid; lowering it (`truncate`) rewinds the cache. `capacity` grows in
    `chunk` steps up to `max_len` (never past it) when a forward needs more room.
    """

    def __init__(self, session: "ModelSession", max_len: int, *, chunk: int = KV_CHUNK):
        self.session = session
        self.max_len = max_len
        self.chunk = max(1, chunk)
        self.length = 0
        self.capacity = 0
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.logits = np.zeros((1, 1, session.vocab), session.logits_dtype)
        self._logits_ort = ort.OrtValue.ortvalue_from_numpy(self.logits)
        self.binding = None
        self._allocate(min(self.chunk, max_len))

    @property
    def nbytes(self) -> int:
        """Bytes allocated now (capacity positions)."""
        return self.capacity * self.session.manifest.kv.bytes_per_position

    @property
    def max_nbytes(self) -> int:
        """Bytes it would take at `max_len` positions."""
        return self.max_len * self.session.manifest.kv.bytes_per_position

    def truncate(self, n: int) -> None:
        """Keep only the first `n` positions (the rest is overwritten by later forwards)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {n}")
        self.length = n

    def reserve(self, total: int) -> None:
        """Make room for `total` positions, growing to the next multiple of `chunk` (at most max_len)."""
        if total > self.max_len:
            raise ContextFullError(f"{total} tokens do not fit the context of {self.max_len}")
        if total > self.capacity:
            self.check_memory(total)
            self._allocate(min(self.max_len, -(-total // self.chunk) * self.chunk))

    def check_memory(self, total: int) -> None:
        """Raise OutOfMemoryError, before anything runs, when growing to `total` positions needs more
        memory than the machine has available (the rows past `length` are the new resident memory;
        buffers are allocated lazily, so without this check a cache too big would fail later, mid-reply,
        with the kernel's out-of-memory killer instead of an error)."""
        total = min(total, self.max_len)
        need = (total - self.length) * self.session.manifest.kv.bytes_per_position
        if need <= 0:
            return
        avail = available_memory()
        if avail is not None and need > avail:
            mib = 2 ** 20
            raise OutOfMemoryError(
                f"not enough memory for the KV cache: {total:,} positions need {need / mib:,.0f} MiB more, "
                f"{avail / mib:,.0f} MiB available; use a shorter --context or --max-new-tokens, or a package "
                f"exported with --kv-dtype float16")

    def copy(self, n: int | None = None) -> "KVCache":
        """A new cache holding this one's first `n` positions (default: all valid ones)."""
        n = self.length if n is None else n
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot copy {n} positions of a cache holding {self.length}")
        out = KVCache(self.session, self.max_len, chunk=self.chunk)
        out.reserve(max(n, 1))
        for (k, v), (k2, v2) in zip(self.arrays, out.arrays):
            k2[:, :, :n] = k[:, :, :n]
            v2[:, :, :n] = v[:, :, :n]
        out.length = n
        return out

    def _allocate(self, capacity: int) -> None:
        """New buffers of `capacity` positions holding the valid rows of the old ones, and a new binding.
        Layer by layer, each old buffer is released as soon as its rows are copied, so growing costs
        one layer's buffers on top of the cache, not a second cache."""
        kv, s = self.session.manifest.kv, self.session
        shape = (1, kv.num_kv_heads, capacity, kv.head_dim)
        dtype = KV_DTYPES[kv.dtype]
        old, self.arrays, self.binding = self.arrays, [], None   # the binding's OrtValues hold old buffers too
        new = []
        for i in range(kv.num_layers):
            k, v = kv_buffer(shape, dtype), kv_buffer(shape, dtype)
            if self.length:
                k[:, :, :self.length] = old[i][0][:, :, :self.length]
                v[:, :, :self.length] = old[i][1][:, :, :self.length]
                old[i] = None
            new.append((k, v))
        b = s.sess.io_binding()
        for i, (k, v) in enumerate(new):
            ko, vo = ort.OrtValue.ortvalue_from_numpy(k), ort.OrtValue.ortvalue_from_numpy(v)
            b.bind_ortvalue_input(s.names["past_key"][i], ko)
            b.bind_ortvalue_input(s.names["past_value"][i], vo)
            b.bind_ortvalue_output(s.names["present_key"][i], ko)
            b.bind_ortvalue_output(s.names["present_value"][i], vo)
        b.bind_ortvalue_output(s.manifest.io.logits, self._logits_ort)
        self.arrays, self.binding, self.capacity = new, b, capacity


class ModelSession:
    """The loaded graph. Stateless between calls: every forward takes the cache it runs on."""

    def __init__(self, package_dir, *, threads: int | None = None, spinning: bool = True,
                 prefill_chunk: int = 512):
        self.manifest: Manifest = load_manifest(package_dir)
        self.threads = threads or physical_cores()
        try:
            self.sess = ort.InferenceSession(str(self.manifest.file("model")),
                                             session_options(self.threads, spinning=spinning),
                                             providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types without a common base
            raise PackageError(f"{self.manifest.file('model')}: onnxruntime could not load it: "
                               f"{str(e).splitlines()[0]}") from e
        hugepages.collapse_in_background()   # the prepacked weights onto 2 MiB pages (edge_llm.hugepages)
        io, kv = self.manifest.io, self.manifest.kv
        self.n_layers = kv.num_layers
        self.vocab = self.manifest.model.vocab_size
        self.context_length = self.manifest.model.context_length
        self.prefill_chunk = prefill_chunk
        self.names = {k: io.per_layer(k, self.n_layers)
                      for k in ("past_key", "past_value", "present_key", "present_value")}
        out_types = {o.name: o.type for o in self.sess.get_outputs()}
        self.logits_dtype = np.float16 if out_types.get(io.logits) == "tensor(float16)" else np.float32
        self._ones = np.ones((1, self.context_length), np.int64)   # read-only, shared by every cache

    def new_cache(self, max_len: int | None = None, *, chunk: int = KV_CHUNK) -> KVCache:
        """An empty cache for one request; `max_len` (default: the model's context) bounds its growth."""
        max_len = min(max_len or self.context_length, self.context_length)
        return KVCache(self, max_len, chunk=chunk)

    def _run(self, ids: np.ndarray, cache: KVCache) -> None:
        total = cache.length + ids.shape[0]
        b = cache.binding
        b.bind_cpu_input(self.manifest.io.input_ids, ids.reshape(1, -1))
        b.bind_cpu_input(self.manifest.io.attention_mask, self._ones[:, :total])
        # logits_to_keep is left at its default of 1 (IOBinding cannot bind an overridable initializer)
        self.sess.run_with_iobinding(b)
        cache.length = total

    def forward(self, ids, cache: KVCache) -> np.ndarray:
        """Run `ids` after the cache's valid positions; returns a new float32 array with the last
        position's logits (vocab,). Long prompts go in chunks of `prefill_chunk` tokens."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward() needs at least one token")
        cache.reserve(cache.length + ids.size)
        for start in range(0, ids.size, self.prefill_chunk):
            self._run(ids[start:start + self.prefill_chunk], cache)
        return cache.logits[0, 0].astype(np.float32, copy=True)

    def forward_all(self, ids, cache: KVCache) -> np.ndarray:
        """Run `ids` after the cache's valid positions in one call; returns a new float32 array
        (len(ids), vocab) with every position's logits (speculative decoding checks drafts this way).

        Only for this call, logits_to_keep is bound as an OrtValue (onnxruntime 1.32 takes an
        overridable initializer through bind_ortvalue_input, not bind_cpu_input) and the logits are
        left to onnxruntime to allocate (the graph declares one position, so a preallocated
        (1, k, vocab) buffer is refused); both go back to forward()'s settings afterwards."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not 0 < ids.size <= self.prefill_chunk:
            raise ValueError(f"forward_all() takes 1..{self.prefill_chunk} tokens, not {ids.size}")
        io = self.manifest.io
        cache.reserve(cache.length + ids.size)
        b = cache.binding
        keep = ort.OrtValue.ortvalue_from_numpy(np.array([ids.size], np.int64))   # alive until the run ends
        b.bind_ortvalue_input(io.logits_to_keep, keep)
        b.bind_output(io.logits, "cpu")
        try:
            self._run(ids, cache)
            out = b.get_outputs()[-1]          # logits were bound last (KVCache._allocate)
            if out.shape() != [1, ids.size, self.vocab]:
                raise RuntimeError(f"forward_all: unexpected logits shape {out.shape()}")
            return np.array(out.numpy()[0], dtype=np.float32)
        finally:
            b.bind_ortvalue_input(io.logits_to_keep, ort.OrtValue.ortvalue_from_numpy(_KEEP_ONE))
            b.bind_ortvalue_output(io.logits, cache._logits_ort)

    def logits_all(self, ids) -> np.ndarray:
        """Logits (T, vocab) for every position of `ids`, from an empty context (perplexity, validation)."""
        io, kv = self.manifest.io, self.manifest.kv
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        empty = np.zeros((1, kv.num_kv_heads, 0, kv.head_dim), KV_DTYPES[kv.dtype])
        feeds = {io.input_ids: ids, io.attention_mask: np.ones_like(ids),
                 io.logits_to_keep: np.array([ids.shape[1]], np.int64)}
        for i in range(self.n_layers):
            feeds[self.names["past_key"][i]] = empty
            feeds[self.names["past_value"][i]] = empty
        return self.sess.run([io.logits], feeds)[0][0]
