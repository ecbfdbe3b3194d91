"""A checkpoint seen through its family's tensor map: the canonical (Llama) names every reader uses.

The graph builder, the numpy reference, the calibrator and the budget planner read tensors only through
`CanonicalTensors.load`, so a family whose checkpoint fuses, renames or offsets tensors (Phi-3's qkv_proj,
Gemma's (1 + w) norms) is described once, in its own module's map.
"""
from __future__ import annotations

import numpy as np

from edge_llm.errors import CheckpointError

from .base import DecoderConfig, Family, TensorSource


class CanonicalTensors:
    """`load`, `shape` and `in` under canonical names; everything else is the checkpoint's own."""

    def __init__(self, ckpt, family: Family, cfg: DecoderConfig):
        self._ckpt = ckpt
        self.sources: dict[str, TensorSource] = family.tensors(cfg) if family.tensors else {}
        self._last: tuple[str, np.ndarray] | None = None    # a fused tensor is read once for its consecutive parts

    def __getattr__(self, attr):
        return getattr(self._ckpt, attr)

    def __contains__(self, name: str) -> bool:
        src = self.sources.get(name)
        return (src.name if src else name) in self._ckpt

    def shape(self, name: str) -> tuple[int, ...]:
        src = self.sources.get(name)
        if src is None:
            return tuple(self._ckpt.shape(name))
        shape = tuple(self._ckpt.shape(src.name))
        if src.rows is None:
            return shape
        lo, hi = src.rows
        if hi > shape[0]:
            raise CheckpointError(f"{self._ckpt.path}: tensor '{src.name}' has {shape[0]} rows; '{name}' needs "
                                  f"rows {lo}:{hi}")
        return (hi - lo,) + shape[1:]

    def load(self, name: str) -> np.ndarray:
        src = self.sources.get(name)
        if src is None:
            return self._ckpt.load(name)
        if self._last is None or self._last[0] != src.name:
            self._last = (src.name, self._ckpt.load(src.name))
        w = self._last[1]
        if src.rows is not None:
            w = w[src.rows[0]:src.rows[1]]
        if src.offset:
            w = w + np.float32(src.offset)      # float32, as transformers' Gemma RMSNorm computes 1 + w
        return np.ascontiguousarray(w, dtype=np.float32)
