"""MiniCPM v1 (MiniCPM-1B/2B) and MiniCPM4 (0.5B): Llama plus three muP scales (embedding, residual, logit) and a
tied head; MiniCPM4 adds longrope (the Phi-3 reading) and names head_dim `kv_channels`.

Its config.json has no `model_type`, `rope_theta` or `tie_word_embeddings`; the defaults below are
those of the release's configuration_minicpm.py (shared/reference/minicpm.md §1).
"""
from __future__ import annotations

import math
from dataclasses import replace

from .base import ChatDefaults, ConfigReader, DecoderConfig, Family, llama_like, longrope

# OpenBMB's own chat(): `<用户>{query}<AI>{reply}` rendered by this template and tokenized with the
# BOS token the tokenizer adds (tokenizer(history_str)), no EOS after assistant turns.
MINICPM_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}{{'<用户>' + message['content']"
                    ".strip() + '<AI>'}}{% else %}{{message['content'].strip()}}{% endif %}{% endfor %}")


def minicpm_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    r = ConfigReader(cfg, source)
    for key in ("scale_emb", "scale_depth", "dim_model_base"):
        if key not in cfg:
            raise r.fail(f"'{architecture}' without scale_emb/scale_depth/dim_model_base is not a MiniCPM v1 "
                         f"checkpoint this exporter supports (missing '{key}')")
    for key in ("sparse_config", "q_lora_rank"):
        if cfg.get(key) is not None:
            raise r.fail(f"'{key}' (a later MiniCPM variant) is not supported yet")
    if cfg.get("use_mup") is False:
        raise r.fail("use_mup false is not supported (the muP scales are how this family is exported)")
    rope = dict(cfg.get("rope_scaling") or {})
    kind = rope.get("rope_type", rope.get("type"))
    if rope and kind != "longrope":
        raise r.fail(f"rope_scaling {rope!r} is not supported for MiniCPM (v1 has none, MiniCPM4 longrope)")
    hidden, layers = int(r.need("hidden_size")), int(r.need("num_hidden_layers"))
    defaults = {"tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
    cfg = {**defaults, **{k: v for k, v in cfg.items() if v is not None and k != "rope_scaling"}}
    if cfg.get("kv_channels"):          # MiniCPM4's name for head_dim
        cfg.setdefault("head_dim", cfg["kv_channels"])
    c = llama_like(cfg, architecture=architecture, family="minicpm", source=source,
                   embedding_scale=float(cfg["scale_emb"]),
                   residual_scale=float(cfg["scale_depth"]) / math.sqrt(layers),
                   logit_divisor=hidden / float(cfg["dim_model_base"]))
    if not rope:
        return c
    rs = longrope(rope, cfg, r, c.rotary_dim)         # MiniCPM4: as Phi-3's, context capped where it is exact
    return replace(c, rope_scaling=rs,
                   max_position_embeddings=min(c.max_position_embeddings, rs.original_max_position_embeddings))


MINICPM = Family(name="minicpm", config_from_dict=minicpm_config, genai_type="llama",
                 chat=ChatDefaults(builtin_template=MINICPM_TEMPLATE, add_bos=True, stop_strings=("<AI>", "<用户>")))
