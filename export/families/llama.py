"""Llama (Llama 2/3.x, SmolLM2, TinyLlama…) and Mistral: the baseline decoder, no extra hooks."""
from __future__ import annotations

from .base import ConfigReader, DecoderConfig, Family, llama_like


def llama_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    if cfg.get("attention_bias"):
        # Llama configs may ask for q/k/v/o biases; o_proj bias is not supported by this builder
        raise ConfigReader(cfg, source).fail("attention_bias true is not supported for Llama checkpoints")
    return llama_like(cfg, architecture=architecture, family="llama", source=source)


def mistral_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    c = llama_like(cfg, architecture=architecture, family="mistral", source=source)
    window = cfg.get("sliding_window")
    if window is not None and int(window) < c.max_position_embeddings:
        # positions never outrun the window when the context is capped at it: attention stays exact
        from dataclasses import replace
        c = replace(c, max_position_embeddings=int(window))
    return c


LLAMA = Family(name="llama", config_from_dict=llama_config, genai_type="llama")
MISTRAL = Family(name="mistral", config_from_dict=mistral_config, genai_type="mistral")
