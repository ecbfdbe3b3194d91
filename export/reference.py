"""A plain numpy forward pass of the decoder, full recompute (no cache): the oracle for exports.

One copy of the decoder maths, driven by the DecoderConfig hooks. The calibrator advances the same
`decoder_layer` one layer at a time and reads the inputs of each linear layer through `taps`.
float32 throughout.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .families import DecoderConfig

Getter = Callable[[str], np.ndarray]


def rms_norm(x, w, eps):
    var = np.mean(x.astype(np.float32) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * w


def rope(x, positions, inv_freq, attention_factor: float = 1.0):
    """x: (T, n, hd), rotate-half convention on the first rd = 2 * len(inv_freq) dims (the rest pass through);
    inv_freq: (rd/2,) with any rope scaling applied; cos and sin scaled by longrope's attention factor."""
    rd = 2 * inv_freq.shape[0]
    freqs = positions[:, None].astype(np.float32) * inv_freq[None, :]          # (T, rd/2)
    emb = np.concatenate([freqs, freqs], axis=-1)
    a = np.float32(attention_factor)
    cos, sin = (np.cos(emb) * a)[:, None, :], (np.sin(emb) * a)[:, None, :]
    xr, rest = x[..., :rd], x[..., rd:]
    rot = np.concatenate([-xr[..., rd // 2:], xr[..., : rd // 2]], axis=-1)
    return np.concatenate([xr * cos + rot * sin, rest], axis=-1)


def embed(cfg: DecoderConfig, get: Getter, ids) -> np.ndarray:
    h = get("model.embed_tokens.weight")[np.asarray(ids)]                      # (..., T, d)
    return h * np.float32(cfg.embedding_scale) if cfg.embedding_scale != 1.0 else h


def _proj(cfg: DecoderConfig, get: Getter, x, p: str, name: str):
    y = x @ get(f"{p}.self_attn.{name}.weight").T
    return y + get(f"{p}.self_attn.{name}.bias") if cfg.attention_bias else y


def attention(cfg: DecoderConfig, get: Getter, i: int, x: np.ndarray) -> np.ndarray:
    """Causal self-attention of one sequence x (T, d) → (T, H*hd), before o_proj."""
    T, H, KV, hd = x.shape[0], cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    p = f"model.layers.{i}"
    q = _proj(cfg, get, x, p, "q_proj").reshape(T, H, hd)
    k = _proj(cfg, get, x, p, "k_proj").reshape(T, KV, hd)
    v = _proj(cfg, get, x, p, "v_proj").reshape(T, KV, hd)
    if cfg.qk_norm:
        q = rms_norm(q, get(f"{p}.self_attn.q_norm.weight"), cfg.rms_norm_eps)
        k = rms_norm(k, get(f"{p}.self_attn.k_norm.weight"), cfg.rms_norm_eps)
    pos, inv, a = np.arange(T), cfg.inv_freq(i), cfg.rope_scaling.attention_factor
    if i not in cfg.nope_layers:
        q, k = rope(q, pos, inv, a), rope(k, pos, inv, a)
    k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)       # (T, H, hd)
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    if cfg.window(i) is not None:               # a sliding layer sees its last `window` keys, its own included
        mask += np.tril(np.full((T, T), -np.inf, np.float32), -cfg.window(i))
    att = np.matmul(q.transpose(1, 0, 2), k.transpose(1, 2, 0)) * np.float32(cfg.softmax_scale) + mask   # (H, T, T)
    att = np.exp(att - att.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    return np.matmul(att, v.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(T, H * hd)


def activation(cfg: DecoderConfig, g: np.ndarray) -> np.ndarray:
    if cfg.hidden_act == "gelu_tanh":          # transformers' gelu_pytorch_tanh
        return 0.5 * g * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (g + np.float32(0.044715) * g ** 3)))
    return g / (1 + np.exp(-g))


def decoder_layer(cfg: DecoderConfig, get: Getter, i: int, h: np.ndarray,
                  taps: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """h (..., T, d) → h after layer i. `taps`, when given, receives the input of every linear layer
    by its short name (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)."""
    p, r = f"model.layers.{i}", np.float32(cfg.residual_scale)
    x = rms_norm(h, get(f"{p}.input_layernorm.weight"), cfg.rms_norm_eps)
    seqs = x.reshape(-1, *x.shape[-2:])
    attn = np.stack([attention(cfg, get, i, s) for s in seqs]).reshape(*x.shape[:-1], cfg.q_dim)
    h = h + _branch_norm(cfg, get, f"{p}.attn_out_norm.weight", (attn @ get(f"{p}.self_attn.o_proj.weight").T) * r)
    x2 = rms_norm(h, get(f"{p}.post_attention_layernorm.weight"), cfg.rms_norm_eps)
    g = x2 @ get(f"{p}.mlp.gate_proj.weight").T
    u = x2 @ get(f"{p}.mlp.up_proj.weight").T
    m = activation(cfg, g) * u
    if taps is not None:
        taps.update(q_proj=x, k_proj=x, v_proj=x, o_proj=attn, gate_proj=x2, up_proj=x2, down_proj=m)
    return h + _branch_norm(cfg, get, f"{p}.mlp_out_norm.weight", (m @ get(f"{p}.mlp.down_proj.weight").T) * r)


def _branch_norm(cfg: DecoderConfig, get: Getter, name: str, y: np.ndarray) -> np.ndarray:
    return rms_norm(y, get(name), cfg.rms_norm_eps) if cfg.branch_norms else y


def final_hidden(cfg: DecoderConfig, get: Getter, h: np.ndarray) -> np.ndarray:
    """The lm_head's input: the final norm with the logit divisor applied."""
    out = rms_norm(h, get("model.norm.weight"), cfg.rms_norm_eps)
    return out / np.float32(cfg.logit_divisor) if cfg.logit_divisor != 1.0 else out


def head_weight_name(cfg: DecoderConfig) -> str:
    return "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"


def forward(cfg: DecoderConfig, get: Getter, ids) -> np.ndarray:
    """Logits (T, vocab) for token ids (T,); `get(name)` returns a float32 Hugging Face tensor."""
    h = embed(cfg, get, ids)                                                   # (T, d)
    for i in range(cfg.num_layers):
        h = decoder_layer(cfg, get, i, h)
    return (final_hidden(cfg, get, h) @ get(head_weight_name(cfg)).T).astype(np.float32)
