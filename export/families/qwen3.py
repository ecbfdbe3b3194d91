"""Qwen3 (dense): Llama plus a per-head RMSNorm of q and k before rotary; head_dim is given separately."""
from __future__ import annotations

from .base import ConfigReader, DecoderConfig, Family, llama_like


def qwen3_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    r = ConfigReader(cfg, source)
    if cfg.get("use_sliding_window"):
        raise r.fail("use_sliding_window true is not supported")
    if cfg.get("attention_bias"):
        raise r.fail("attention_bias true is not supported for Qwen3 checkpoints")
    return llama_like(cfg, architecture=architecture, family="qwen3", source=source, qk_norm=True)


QWEN3 = Family(name="qwen3", config_from_dict=qwen3_config, genai_type="qwen3")
