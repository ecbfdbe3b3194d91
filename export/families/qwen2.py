"""Qwen2 / Qwen2.5: Llama plus a bias on the q, k and v projections."""
from __future__ import annotations

from .base import ConfigReader, DecoderConfig, Family, llama_like


def qwen2_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    if cfg.get("use_sliding_window"):
        raise ConfigReader(cfg, source).fail("use_sliding_window true is not supported")
    return llama_like(cfg, architecture=architecture, family="qwen2", source=source, attention_bias=True)


QWEN2 = Family(name="qwen2", config_from_dict=qwen2_config, genai_type="qwen2")
