"""Calibration statistics for GPTQ, computed layer by layer so a 2B model never needs more than one
layer's weights and the calibration hidden states in memory.

For each linear layer the exporter asks for H = Σ xxᵀ over its calibration inputs. The forward pass
is the numpy reference (float weights, no quantization), advanced one decoder layer at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edge_llm.errors import ExportError

from .config import MiniCPMConfig
from .reference import rms_norm, rope

DEFAULT_CALIBRATION = Path(__file__).resolve().parents[1] / "edge_llm" / "data" / "calibration.txt"


def calibration_ids(tokenizer_model: Path, text_file: Path | None, *, n_seq: int, seq_len: int) -> np.ndarray:
    """(n_seq, seq_len) token ids from a text file: documents split on blank lines / U+001E, <s> each."""
    import sentencepiece as spm

    path = Path(text_file) if text_file else DEFAULT_CALIBRATION
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: cannot read calibration text ({e})") from e
    sp = spm.SentencePieceProcessor()
    sp.Load(str(tokenizer_model))
    docs = [d for d in text.replace("\x1e", "\n\n").split("\n\n") if d.strip()]
    ids: list[int] = []
    for d in docs:
        ids += [1] + sp.EncodeAsIds(d)
    need = n_seq * seq_len
    if len(ids) < seq_len:
        raise ExportError(f"{path}: only {len(ids)} calibration tokens, need at least {seq_len}")
    while len(ids) < need:          # a short file is repeated rather than refused
        ids += ids
    return np.asarray(ids[:need], np.int64).reshape(n_seq, seq_len)


class Calibrator:
    """Hands out H = XᵀX for each linear input, one decoder layer at a time, in export order."""

    def __init__(self, cfg: MiniCPMConfig, get: Callable[[str], np.ndarray], ids: np.ndarray):
        self.cfg, self.get = cfg, get
        emb = get("model.embed_tokens.weight")
        self.h = emb[ids] * np.float32(cfg.scale_emb)                       # (n_seq, T, d)
        del emb
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
        x = rms_norm(self.h, self.get("model.norm.weight"), self.cfg.rms_norm_eps) / np.float32(self.cfg.logit_divisor)
        return self._gram(x)

    def _advance(self) -> None:
        cfg, get = self.cfg, self.get
        i = self.layer = self.layer + 1
        p = f"model.layers.{i}"
        n_seq, T, _ = self.h.shape
        H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        r = np.float32(cfg.residual_scale)
        hs = {}
        x = rms_norm(self.h, get(f"{p}.input_layernorm.weight"), cfg.rms_norm_eps)
        hs["q_proj"] = hs["k_proj"] = hs["v_proj"] = self._gram(x)
        mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
        wq, wk, wv = (get(f"{p}.self_attn.{m}.weight") for m in ("q_proj", "k_proj", "v_proj"))
        attn = np.empty((n_seq, T, H * hd), np.float32)
        pos = np.arange(T)
        for s in range(n_seq):
            q = rope((x[s] @ wq.T).reshape(T, H, hd), pos, cfg.rope_theta)
            k = rope((x[s] @ wk.T).reshape(T, KV, hd), pos, cfg.rope_theta)
            v = (x[s] @ wv.T).reshape(T, KV, hd)
            k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
            a = np.einsum("thd,shd->hts", q, k) / np.float32(np.sqrt(hd)) + mask
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            attn[s] = np.einsum("hts,shd->thd", a, v).reshape(T, H * hd)
        del wq, wk, wv
        hs["o_proj"] = self._gram(attn)
        self.h = self.h + (attn @ get(f"{p}.self_attn.o_proj.weight").T) * r
        del attn
        x = rms_norm(self.h, get(f"{p}.post_attention_layernorm.weight"), cfg.rms_norm_eps)
        hs["gate_proj"] = hs["up_proj"] = self._gram(x)
        g = x @ get(f"{p}.mlp.gate_proj.weight").T
        u = x @ get(f"{p}.mlp.up_proj.weight").T
        m = (g / (1 + np.exp(-g))) * u
        del g, u
        hs["down_proj"] = self._gram(m)
        self.h = self.h + (m @ get(f"{p}.mlp.down_proj.weight").T) * r
        self.hessians = hs
