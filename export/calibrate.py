"""Calibration statistics for GPTQ, computed layer by layer so a 2B model never needs more than one
layer's weights and the calibration hidden states in memory.

For each linear layer the exporter asks for H = Σ xxᵀ over its calibration inputs. The forward pass is
the numpy reference's own `decoder_layer` (float weights, no quantization), advanced one layer at a time,
with `taps` collecting each linear layer's input: one copy of the decoder maths.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_llm import paths
from edge_llm.errors import ExportError

from .families import DecoderConfig
from .reference import decoder_layer, embed, final_hidden

DEFAULT_CALIBRATION = paths.CALIBRATION_TEXT      # inside the installed package (works from a wheel)


def calibration_ids(encode: Callable[[str], Sequence[int]], bos_id: int | None, text_file: Path | None, *,
                    n_seq: int, seq_len: int) -> np.ndarray:
    """(n_seq, seq_len) token ids from a text file: documents split on blank lines / U+001E, BOS before each."""
    path = Path(text_file) if text_file else DEFAULT_CALIBRATION
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: cannot read calibration text ({e})") from e
    docs = [d for d in text.replace("\x1e", "\n\n").split("\n\n") if d.strip()]
    ids: list[int] = []
    for d in docs:
        ids += ([bos_id] if bos_id is not None else []) + list(encode(d))
    need = n_seq * seq_len
    if len(ids) < seq_len:
        raise ExportError(f"{path}: only {len(ids)} calibration tokens, need at least {seq_len}")
    while len(ids) < need:          # a short file is repeated rather than refused
        ids += ids
    return np.asarray(ids[:need], np.int64).reshape(n_seq, seq_len)


class Calibrator:
    """Hands out H = XᵀX for each linear input, one decoder layer at a time, in export order."""

    def __init__(self, cfg: DecoderConfig, get: Callable[[str], np.ndarray], ids: np.ndarray):
        self.cfg, self.get = cfg, get
        self.h = embed(cfg, get, ids)                                          # (n_seq, T, d)
        self.layer = -1
        self.hessians: dict[str, np.ndarray] = {}

    @staticmethod
    def _gram(x: np.ndarray) -> np.ndarray:
        x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
        return (x2.T @ x2).astype(np.float64) / len(x2)

    def hessian(self, name: str) -> np.ndarray:
        """`name` is a Hugging Face weight name; layers must be requested in order."""
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            return self._head_hessian()
        layer = int(name.split(".")[2])
        while self.layer < layer:
            self._advance()
        return self.hessians[name.rsplit(".", 2)[-2]]

    def _head_hessian(self) -> np.ndarray:
        while self.layer < self.cfg.num_layers - 1:
            self._advance()
        return self._gram(final_hidden(self.cfg, self.get, self.h))

    def _advance(self) -> None:
        self.layer += 1
        taps: dict[str, np.ndarray] = {}
        self.h = decoder_layer(self.cfg, self.get, self.layer, self.h, taps)
        grams = {}                       # q/k/v and gate/up share their input: one Gram each
        self.hessians = {}
        for short, x in taps.items():
            key = id(x)
            if key not in grams:
                grams[key] = self._gram(x)
            self.hessians[short] = grams[key]


def collect_importance(cfg: DecoderConfig, get: Callable[[str], np.ndarray], ids: np.ndarray,
                       progress: Callable[[int], None] = lambda layer: None) -> dict[str, np.ndarray]:
    """Σx² per input column of every linear layer (and of the head) over the calibration tokens, in one
    reference forward, one layer at a time: llama.cpp's imatrix, keyed by Hugging Face weight name.
    Only the diagonal is kept (K floats a tensor), so a 2B model needs no Gram matrices."""
    mlp = ("gate_proj", "up_proj", "down_proj")
    h, out = embed(cfg, get, ids), {}
    for i in range(cfg.num_layers):
        taps: dict[str, np.ndarray] = {}
        h = decoder_layer(cfg, get, i, h, taps)
        for short, x in taps.items():
            x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
            out[f"model.layers.{i}.{'mlp' if short in mlp else 'self_attn'}.{short}.weight"] = \
                np.einsum("tk,tk->k", x2, x2).astype(np.float32) / len(x2)
        progress(i)
    f = final_hidden(cfg, get, h).reshape(-1, cfg.hidden_size).astype(np.float64)
    head = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
    out[head] = np.einsum("tk,tk->k", f, f).astype(np.float32) / len(f)
    return out
