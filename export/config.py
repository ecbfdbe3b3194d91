"""config.json → a frozen DecoderConfig through the architecture registry (export/families/)."""
from __future__ import annotations

from .families import REGISTRY, DecoderConfig, family_for


def config_for(cfg: dict, *, source: str = "config.json") -> DecoderConfig:
    return family_for(cfg, source=source)[1]


__all__ = ["REGISTRY", "DecoderConfig", "config_for", "family_for"]
