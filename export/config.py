"""Model configs built from a checkpoint's config.json, and the architecture registry.

MiniCPM v1 ships a config.json without `model_type`, `rope_theta` or `tie_word_embeddings`; the
defaults below are those of the release's `configuration_minicpm.py` (see shared/reference/minicpm.md §1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edge_llm.errors import CheckpointError


@dataclass(frozen=True)
class MiniCPMConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    scale_emb: float
    scale_depth: float
    dim_model_base: float
    tie_word_embeddings: bool
    bos_token_id: int
    eos_token_ids: tuple[int, ...]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def residual_scale(self) -> float:
        return self.scale_depth / math.sqrt(self.num_layers)

    @property
    def logit_divisor(self) -> float:
        return self.hidden_size / self.dim_model_base

    @classmethod
    def from_dict(cls, cfg: dict, *, source: str = "config.json") -> "MiniCPMConfig":
        def need(key):
            if key not in cfg:
                raise CheckpointError(f"{source}: missing required key '{key}'")
            return cfg[key]

        if cfg.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: hidden_act '{cfg['hidden_act']}' is not supported (only 'silu')")
        if cfg.get("rope_scaling") not in (None, {}):
            raise CheckpointError(f"{source}: rope_scaling {cfg['rope_scaling']!r} is not supported yet (MiniCPM v1 has none)")
        if cfg.get("pretraining_tp", 1) not in (None, 1):
            raise CheckpointError(f"{source}: pretraining_tp {cfg['pretraining_tp']} is not supported")
        for key in ("sparse_config", "q_lora_rank"):
            if cfg.get(key) is not None:
                raise CheckpointError(f"{source}: '{key}' (a later MiniCPM variant) is not supported yet")
        hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
        if hidden % heads:
            raise CheckpointError(f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        kv = int(cfg.get("num_key_value_heads") or heads)
        if heads % kv:
            raise CheckpointError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
        eos = cfg.get("eos_token_id", 2)
        eos = tuple(eos) if isinstance(eos, list) else (int(eos),)
        return cls(
            hidden_size=hidden,
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=kv,
            intermediate_size=int(need("intermediate_size")),
            vocab_size=int(need("vocab_size")),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            scale_emb=float(need("scale_emb")),
            scale_depth=float(need("scale_depth")),
            dim_model_base=float(need("dim_model_base")),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            bos_token_id=int(cfg.get("bos_token_id", 1)),
            eos_token_ids=eos,
        )

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the checkpoint must hold, with its Hugging Face name and shape."""
        d, kvd, ff = self.hidden_size, self.num_kv_heads * self.head_dim, self.intermediate_size
        shapes = {"model.embed_tokens.weight": (self.vocab_size, d), "model.norm.weight": (d,)}
        for i in range(self.num_layers):
            p = f"model.layers.{i}"
            shapes |= {
                f"{p}.input_layernorm.weight": (d,),
                f"{p}.self_attn.q_proj.weight": (d, d),
                f"{p}.self_attn.k_proj.weight": (kvd, d),
                f"{p}.self_attn.v_proj.weight": (kvd, d),
                f"{p}.self_attn.o_proj.weight": (d, d),
                f"{p}.post_attention_layernorm.weight": (d,),
                f"{p}.mlp.gate_proj.weight": (ff, d),
                f"{p}.mlp.up_proj.weight": (ff, d),
                f"{p}.mlp.down_proj.weight": (d, ff),
            }
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, d)
        return shapes


def _is_minicpm_v1(cfg: dict) -> bool:
    return all(k in cfg for k in ("scale_emb", "scale_depth", "dim_model_base"))


# architecture name -> (config class, extra predicate). One entry per supported architecture;
# the runtime never sees this: it reads only the package manifest.
REGISTRY: dict[str, tuple[type, object]] = {
    "MiniCPMForCausalLM": (MiniCPMConfig, _is_minicpm_v1),
}


def config_for(cfg: dict, *, source: str = "config.json") -> MiniCPMConfig:
    archs = cfg.get("architectures") or []
    supported = ", ".join(sorted(REGISTRY))
    if not archs:
        raise CheckpointError(f"{source}: no 'architectures' entry; supported: {supported}")
    arch = archs[0]
    if arch not in REGISTRY:
        raise CheckpointError(f"{source}: unsupported architecture '{arch}'; supported: {supported}")
    config_cls, predicate = REGISTRY[arch]
    if not predicate(cfg):
        raise CheckpointError(f"{source}: '{arch}' without scale_emb/scale_depth/dim_model_base is not a MiniCPM v1 "
                              f"checkpoint this exporter supports")
    return config_cls.from_dict(cfg, source=source)
