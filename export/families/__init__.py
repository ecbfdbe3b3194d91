"""Architecture registry: `config.json`'s `architectures[0]` → the family module that reads it.

One small module per family; adding one is a new module and a line here. The runtime never sees this
registry: it reads only the package manifest.
"""
from __future__ import annotations

from edge_llm.errors import CheckpointError

from .base import ChatDefaults, DecoderConfig, Family, RopeScaling
from .gemma3 import GEMMA3
from .llama import LLAMA, MISTRAL
from .minicpm import MINICPM
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3
from .smollm3 import SMOLLM3

REGISTRY: dict[str, Family] = {
    "Gemma3ForCausalLM": GEMMA3,
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": MISTRAL,
    "Phi3ForCausalLM": PHI3,
    "MiniCPMForCausalLM": MINICPM,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
    "SmolLM3ForCausalLM": SMOLLM3,
}


# architectures a registered family's checkpoints come in, refused with what to export instead
REFUSED: dict[str, str] = {
    "Gemma3ForConditionalGeneration": "Gemma3ForConditionalGeneration (vision + text) is not supported; export a "
                                      "Gemma3ForCausalLM text checkpoint (gemma-3-270m, gemma-3-1b)",
}


def family_for(cfg: dict, *, source: str = "config.json") -> tuple[Family, DecoderConfig]:
    archs = cfg.get("architectures") or []
    supported = ", ".join(sorted(REGISTRY))
    if not archs or not isinstance(archs, list):
        raise CheckpointError(f"{source}: no 'architectures' entry; supported: {supported}")
    arch = archs[0]
    if arch in REFUSED:
        raise CheckpointError(f"{source}: {REFUSED[arch]}")
    if arch not in REGISTRY:
        raise CheckpointError(f"{source}: unsupported architecture '{arch}'; supported: {supported}")
    family = REGISTRY[arch]
    return family, family.config_from_dict(cfg, arch, source)


__all__ = ["REGISTRY", "family_for", "Family", "DecoderConfig", "RopeScaling", "ChatDefaults"]
