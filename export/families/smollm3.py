"""SmolLM3 (SmolLM3ForCausalLM): Llama with rotary switched off in some layers (`no_rope_layers`: 1 = rope,
0 = none; every 4th layer by default) and a tied head."""
from __future__ import annotations

from .base import ConfigReader, DecoderConfig, Family, llama_like


def smollm3_config(cfg: dict, architecture: str, source: str) -> DecoderConfig:
    r = ConfigReader(cfg, source)
    if cfg.get("use_sliding_window"):
        raise r.fail("use_sliding_window true is not supported")
    if cfg.get("attention_bias"):
        raise r.fail("attention_bias true is not supported for SmolLM3 checkpoints")
    n = int(r.need("num_hidden_layers"))
    flags = cfg.get("no_rope_layers")
    if flags is None:
        every = int(r.get("no_rope_layer_interval", 4))
        flags = [int((i + 1) % every != 0) for i in range(n)]
    if len(flags) != n:
        raise r.fail(f"no_rope_layers has {len(flags)} entries for {n} layers")
    return llama_like({**cfg, "tie_word_embeddings": r.get("tie_word_embeddings", True)}, architecture=architecture,
                      family="smollm3", source=source, nope_layers=tuple(i for i, f in enumerate(flags) if not f))


# onnxruntime-genai has no SmolLM3 type; the graph carries the no-rope layers, so its Llama decoder runs it
SMOLLM3 = Family(name="smollm3", config_from_dict=smollm3_config, genai_type="llama")
