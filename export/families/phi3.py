"""Phi-3 / Phi-3.5-mini / Phi-4-mini (Phi3ForCausalLM): Llama with fused qkv_proj and gate_up_proj (split by the
tensor map), longrope scaling and partial rotary (Phi-4-mini rotates 3/4 of each head).

longrope switches transformers' rotary from short_factor to long_factor once a sequence passes
original_max_position_embeddings, so a cache written before the switch would be wrong after it. The export
uses short_factor and the attention factor and caps the context at original_max_position_embeddings
(4096 for the releases): exact there, as Mistral's window cap is; longer contexts are not offered.
"""
from __future__ import annotations

from dataclasses import replace

from .base import ChatDefaults, ConfigReader, DecoderConfig, Family, TensorSource, llama_like, longrope


def phi3_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    r = ConfigReader(cfg, source)
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    plain = {k: v for k, v in cfg.items() if k not in ("rope_parameters", "rope_scaling")}
    plain["rope_theta"] = rope.get("rope_theta", r.get("rope_theta", 10000.0))
    if kind != "longrope":
        plain["rope_scaling"] = rope or None        # default/linear/llama3, or refused by name
    c = llama_like(plain, architecture=architecture, family="phi3", source=source,
                   partial_rotary_factor=float(r.get("partial_rotary_factor", 1.0)))
    if c.rotary_dim < c.head_dim and (c.rotary_dim <= 0 or c.rotary_dim % 16):
        raise r.fail(f"partial_rotary_factor {c.partial_rotary_factor} rotates {c.rotary_dim} of {c.head_dim} dims; "
                     f"onnxruntime's GroupQueryAttention needs a multiple of 16")
    if kind == "longrope":
        rs = longrope(rope, cfg, r, c.rotary_dim)
        c = replace(c, rope_scaling=rs,
                    max_position_embeddings=min(c.max_position_embeddings, rs.original_max_position_embeddings))
    window = cfg.get("sliding_window")
    if window is not None and int(window) < c.max_position_embeddings:   # every layer slides (Phi-3-mini: 2047)
        c = replace(c, sliding_window=int(window), sliding_layers=tuple(range(c.num_layers)))
    return c


def phi3_tensors(cfg: DecoderConfig) -> dict[str, TensorSource]:
    """q|k|v and gate|up are stored fused, rows in that order."""
    q, kv, ff, out = cfg.q_dim, cfg.kv_dim, cfg.intermediate_size, {}
    for i in range(cfg.num_layers):
        a, m = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        out |= {f"{a}.q_proj.weight": TensorSource(f"{a}.qkv_proj.weight", rows=(0, q)),
                f"{a}.k_proj.weight": TensorSource(f"{a}.qkv_proj.weight", rows=(q, q + kv)),
                f"{a}.v_proj.weight": TensorSource(f"{a}.qkv_proj.weight", rows=(q + kv, q + 2 * kv)),
                f"{m}.gate_proj.weight": TensorSource(f"{m}.gate_up_proj.weight", rows=(0, ff)),
                f"{m}.up_proj.weight": TensorSource(f"{m}.gate_up_proj.weight", rows=(ff, 2 * ff))}
    return out


PHI3 = Family(name="phi3", config_from_dict=phi3_config, genai_type="phi3", tensors=phi3_tensors,
              chat=ChatDefaults(stop_strings=("<|end|>",)))
