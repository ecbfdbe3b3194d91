"""A plain numpy forward pass of MiniCPM v1, full recompute (no cache): the oracle for exports.

Follows shared/reference/minicpm.md §2 line by line; float32 throughout.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import MiniCPMConfig


def rms_norm(x, w, eps):
    var = np.mean(x.astype(np.float32) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * w


def rope(x, positions, theta):
    # x: (T, n, hd) in rotate-half convention
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))
    freqs = positions[:, None].astype(np.float32) * inv[None, :]          # (T, hd/2)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
    return x * cos + rot * sin


def forward(cfg: MiniCPMConfig, get: Callable[[str], np.ndarray], ids) -> np.ndarray:
    """Logits (T, vocab) for token ids (T,); `get(name)` returns a float32 Hugging Face tensor."""
    ids = np.asarray(ids)
    T, H, KV, hd = len(ids), cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    emb = get("model.embed_tokens.weight")
    h = emb[ids] * np.float32(cfg.scale_emb)                                 # (T, d)
    pos = np.arange(T)
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    r = np.float32(cfg.residual_scale)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}"
        x = rms_norm(h, get(f"{p}.input_layernorm.weight"), cfg.rms_norm_eps)
        q = (x @ get(f"{p}.self_attn.q_proj.weight").T).reshape(T, H, hd)
        k = (x @ get(f"{p}.self_attn.k_proj.weight").T).reshape(T, KV, hd)
        v = (x @ get(f"{p}.self_attn.v_proj.weight").T).reshape(T, KV, hd)
        q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)   # (T, H, hd)
        att = np.einsum("thd,shd->hts", q, k) / np.float32(np.sqrt(hd)) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hd)
        h = h + (o @ get(f"{p}.self_attn.o_proj.weight").T) * r
        x = rms_norm(h, get(f"{p}.post_attention_layernorm.weight"), cfg.rms_norm_eps)
        g = x @ get(f"{p}.mlp.gate_proj.weight").T
        u = x @ get(f"{p}.mlp.up_proj.weight").T
        h = h + (((g / (1 + np.exp(-g))) * u) @ get(f"{p}.mlp.down_proj.weight").T) * r
    h = rms_norm(h, get("model.norm.weight"), cfg.rms_norm_eps) / np.float32(cfg.logit_divisor)
    head = emb if cfg.tie_word_embeddings else get("lm_head.weight")
    return (h @ head.T).astype(np.float32)
