"""Gemma 3 text (Gemma3ForCausalLM: 270M, 1B): Llama plus a √hidden embedding scale, (1 + w) RMSNorms (four
per layer, and q/k), a query_pre_attn_scalar softmax scale, a GELU-tanh gated MLP, and sliding-window layers
with their own rotary base. The (1 + w) lives in the tensor map (as llama.cpp's converter does); the rest
are DecoderConfig hooks the builder and the reference read.
"""
from __future__ import annotations

import math

import numpy as np

from .base import ChatDefaults, ConfigReader, DecoderConfig, Family, RopeScaling, TensorSource, llama_like

# The text part of the gemma-3-*-it release's chat template: a system message is folded into the first user
# turn, the assistant's role is written `model`.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")


def in_dtype(x: float, dtype: str | None) -> float:
    """x rounded to the checkpoint's dtype (round to nearest even), as transformers multiplies by
    `embed_scale.to(weight.dtype)`."""
    if dtype == "bfloat16":
        u = int(np.float32(x).view(np.uint32))
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
        return float(np.uint32(u).view(np.float32))
    return float(np.float16(x)) if dtype == "float16" else float(np.float32(x))


def sliding_layers(cfg: dict, r: ConfigReader, n: int) -> tuple[int, ...]:
    types = cfg.get("layer_types")
    if types is not None:
        if len(types) != n or set(types) - {"sliding_attention", "full_attention"}:
            raise r.fail(f"layer_types {types!r} is not {n} of sliding_attention / full_attention")
        return tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    pattern = int(r.get("sliding_window_pattern", r.get("_sliding_window_pattern", 6)))
    return tuple(i for i in range(n) if (i + 1) % pattern)


def gemma3_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    r = ConfigReader(cfg, source)
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key) is not None:
            raise r.fail(f"{key} {cfg[key]} is not supported (Gemma 3 releases have none)")
    if cfg.get("use_bidirectional_attention"):
        raise r.fail("use_bidirectional_attention true is not supported")
    if cfg.get("attention_bias"):
        raise r.fail("attention_bias true is not supported for Gemma 3 checkpoints")
    rp = cfg.get("rope_parameters") or {}
    if "full_attention" in rp:       # transformers 5: one rope entry per layer type
        glob, local = rp["full_attention"], rp.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise r.fail(f"sliding-layer rope {local!r} is not supported (only default)")
        theta, local_theta = glob.get("rope_theta", 1e6), local.get("rope_theta", 10000.0)
        rope = glob
    else:
        theta, local_theta = r.get("rope_theta", 1e6), r.get("rope_local_base_freq", 10000.0)
        rope = cfg.get("rope_scaling")
    n = int(r.need("num_hidden_layers"))
    plain = {k: v for k, v in cfg.items() if k not in ("rope_parameters", "rope_scaling", "hidden_act")}
    plain |= {"hidden_act": r.get("hidden_activation", "gelu_pytorch_tanh"), "rope_theta": theta,
              "tie_word_embeddings": r.get("tie_word_embeddings", True), "head_dim": r.get("head_dim", 256)}
    hidden = int(r.need("hidden_size"))
    return llama_like(plain, architecture=architecture, family="gemma3", source=source, qk_norm=True,
                      branch_norms=True, rope_scaling=RopeScaling.from_dict(rope, source=source),
                      embedding_scale=in_dtype(math.sqrt(hidden), cfg.get("torch_dtype") or cfg.get("dtype")),
                      attn_scale=float(r.get("query_pre_attn_scalar", 256)) ** -0.5,
                      sliding_window=int(r.need("sliding_window")), sliding_layers=sliding_layers(cfg, r, n),
                      local_rope_theta=float(local_theta))


def gemma3_tensors(cfg: DecoderConfig) -> dict[str, TensorSource]:
    """Every RMSNorm scales by (1 + w); Gemma's four layer norms map onto the canonical roles:
    pre_feedforward_layernorm is the pre-MLP norm Llama calls post_attention_layernorm."""
    out = {"model.norm.weight": TensorSource("model.norm.weight", offset=1.0)}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}"
        for canon, theirs in (("input_layernorm", "input_layernorm"),
                              ("post_attention_layernorm", "pre_feedforward_layernorm"),
                              ("attn_out_norm", "post_attention_layernorm"),
                              ("mlp_out_norm", "post_feedforward_layernorm"),
                              ("self_attn.q_norm", "self_attn.q_norm"), ("self_attn.k_norm", "self_attn.k_norm")):
            out[f"{p}.{canon}.weight"] = TensorSource(f"{p}.{theirs}.weight", offset=1.0)
    return out


GEMMA3 = Family(name="gemma3", config_from_dict=gemma3_config, genai_type="gemma3_text", tensors=gemma3_tensors,
                chat=ChatDefaults(builtin_template=GEMMA3_TEMPLATE, stop_strings=("<end_of_turn>",)))
