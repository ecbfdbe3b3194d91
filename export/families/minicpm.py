"""MiniCPM v1 (MiniCPM-1B/2B): Llama plus three scales (embedding, residual, logit) and a tied head.

Its config.json has no `model_type`, `rope_theta` or `tie_word_embeddings`; the defaults below are
those of the release's configuration_minicpm.py (shared/reference/minicpm.md §1).
"""
from __future__ import annotations

import math

from .base import ChatDefaults, ConfigReader, DecoderConfig, Family, llama_like

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
    if cfg.get("rope_scaling") not in (None, {}):
        raise r.fail(f"rope_scaling {cfg['rope_scaling']!r} is not supported for MiniCPM v1 (it has none)")
    hidden, layers = int(r.need("hidden_size")), int(r.need("num_hidden_layers"))
    defaults = {"tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
    cfg = {**defaults, **{k: v for k, v in cfg.items() if v is not None}}
    return llama_like(cfg, architecture=architecture, family="minicpm", source=source,
                      embedding_scale=float(cfg["scale_emb"]),
                      residual_scale=float(cfg["scale_depth"]) / math.sqrt(layers),
                      logit_divisor=hidden / float(cfg["dim_model_base"]))


MINICPM = Family(name="minicpm", config_from_dict=minicpm_config, genai_type="llama",
                 chat=ChatDefaults(builtin_template=MINICPM_TEMPLATE, add_bos=True, stop_strings=("<AI>", "<用户>")))
