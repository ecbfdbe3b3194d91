"""One onnxruntime session per package, and a KV cache bound as the same buffer for past and present.

GroupQueryAttention detects that past_key and present_key share memory and then writes only the new
rows in place, so a decode step copies no cache and its cost does not grow with copying.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ContextFullError, PackageError
from .manifest import Manifest, load_manifest


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
    """Per-layer (1, n_kv, max_len, head_dim) float32 buffers; `length` positions are valid."""

    def __init__(self, manifest: Manifest, max_len: int):
        kv = manifest.kv
        shape = (1, kv["num_kv_heads"], max_len, kv["head_dim"])
        # np.zeros maps untouched pages lazily: resident memory grows with the context actually used.
        self.arrays = [(np.zeros(shape, np.float32), np.zeros(shape, np.float32)) for _ in range(kv["num_layers"])]
        self.values = [(ort.OrtValue.ortvalue_from_numpy(k), ort.OrtValue.ortvalue_from_numpy(v)) for k, v in self.arrays]
        self.max_len = max_len
        self.length = 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.arrays)


class ModelSession:
    def __init__(self, package_dir, *, threads: int | None = None, spinning: bool = True,
                 prefill_chunk: int = 512):
        self.manifest = load_manifest(package_dir)
        self.threads = threads or physical_cores()
        try:
            self.sess = ort.InferenceSession(str(self.manifest.file("model")),
                                             session_options(self.threads, spinning=spinning),
                                             providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types without a common base
            raise PackageError(f"{self.manifest.file('model')}: onnxruntime could not load it: {str(e).splitlines()[0]}") from e
        io = self.manifest.io
        self.n_layers = self.manifest.kv["num_layers"]
        self.vocab = self.manifest.model["vocab_size"]
        self.context_length = self.manifest.model["context_length"]
        self.prefill_chunk = prefill_chunk
        self._names = {k: [io[k].format(i=i) for i in range(self.n_layers)]
                       for k in ("past_key", "past_value", "present_key", "present_value")}
        self._ones = np.ones((1, self.context_length), np.int64)
        self._logits1 = np.zeros((1, 1, self.vocab), np.float32)
        self._logits1_ort = ort.OrtValue.ortvalue_from_numpy(self._logits1)
        self._binding = None
        self._bound_cache = None

    def new_cache(self, max_len: int | None = None) -> KVCache:
        max_len = min(max_len or self.context_length, self.context_length)
        return KVCache(self.manifest, max_len)

    def _bind_cache(self, cache: KVCache):
        if self._bound_cache is cache:
            return self._binding
        b = self.sess.io_binding()
        for i, (k, v) in enumerate(cache.values):
            b.bind_ortvalue_input(self._names["past_key"][i], k)
            b.bind_ortvalue_input(self._names["past_value"][i], v)
            b.bind_ortvalue_output(self._names["present_key"][i], k)
            b.bind_ortvalue_output(self._names["present_value"][i], v)
        self._binding, self._bound_cache = b, cache
        return b

    def _run(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        total = cache.length + ids.shape[0]
        b = self._bind_cache(cache)
        b.bind_cpu_input("input_ids", ids.reshape(1, -1))
        b.bind_cpu_input("attention_mask", self._ones[:, :total])
        # logits_to_keep is left at its default of 1 (IOBinding cannot bind an overridable initializer)
        b.bind_ortvalue_output("logits", self._logits1_ort)
        self.sess.run_with_iobinding(b)
        cache.length = total
        return self._logits1[0, 0]

    def forward(self, ids, cache: KVCache) -> np.ndarray:
        """Run `ids` after the cache's valid positions; returns the last position's logits (vocab,).
        Long prompts go in chunks of `prefill_chunk` tokens."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward() needs at least one token")
        if cache.length + ids.size > cache.max_len:
            raise ContextFullError(f"{cache.length + ids.size} tokens do not fit the context of {cache.max_len}")
        for start in range(0, ids.size, self.prefill_chunk):
            logits = self._run(ids[start:start + self.prefill_chunk], cache)
        return logits

    def logits_all(self, ids) -> np.ndarray:
        """Logits (T, vocab) for every position of `ids`, from an empty context (perplexity, validation)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        kv = self.manifest.kv
        empty = np.zeros((1, kv["num_kv_heads"], 0, kv["head_dim"]), np.float32)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "logits_to_keep": np.array([ids.shape[1]], np.int64)}
        for i in range(self.n_layers):
            feeds[self._names["past_key"][i]] = empty
            feeds[self._names["past_value"][i]] = empty
        return self.sess.run([self.manifest.io["logits"]], feeds)[0][0]
