"""Record transformers references for the families added in issue 21 (one-off tool, as record_references.py).

Runs in the same separate venv as record_references.py (torch + transformers, never edge-llm dependencies):

    python3 -m venv $WORK/refvenv && $WORK/refvenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers jinja2
    nice $WORK/refvenv/bin/python benchmarks/references/record_new_families.py [--only gemma3,phi3]
    # recorded with torch 2.13.0+cpu, transformers 5.25.0

Writes tests/data/tiny-families/<name>/ as record_references.py does: a bf16 checkpoint with seeded random
weights, config.json in the released checkpoints' (transformers 4.x) form, reference.json and
reference_logits.npy (float32 logits of the bf16 weights upcast, eager attention, no cache) and 10 greedy
tokens from generate() (KV cache) checked against a no-cache argmax loop.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_references as rr  # noqa: E402

SLIDING = ["sliding_attention", "sliding_attention", "full_attention"]


def gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    # hidden 96: √96 = 9.798 rounds to 9.8125 in bf16 (the embedding scale transformers applies);
    # head_dim 32 ≠ 96/4 and query_pre_attn_scalar 24 ≠ head_dim, window 4 < the 12-token prompt
    kw = dict(hidden_size=96, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              head_dim=32, max_position_embeddings=256, rms_norm_eps=1e-6, query_pre_attn_scalar=24, sliding_window=4,
              layer_types=SLIDING, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True,
              rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    released = {"rope_theta": 1e6, "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0},
                "sliding_window_pattern": 3}
    return Gemma3TextConfig, Gemma3ForCausalLM, kw, released


def phi3():
    from transformers import Phi3Config, Phi3ForCausalLM
    # partial rotary 0.5 (Phi-4-mini: 0.75): 16 of 32 dims rotate (onnxruntime's GQA wants the rotated half-dim
    # a multiple of 8), so 8 short and 8 long factors; longrope with max 256 over an original 64: attention
    # factor sqrt(1 + ln 4 / ln 64); untied head (Phi-3-mini's)
    rope = {"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.7, 2.1, 2.9, 3.7, 5.0],
            "long_factor": [1.5, 2.0, 2.5, 4.0, 6.0, 8.0, 11.0, 16.0]}
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              max_position_embeddings=256, original_max_position_embeddings=64, partial_rotary_factor=0.5,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
              sliding_window=None, rope_parameters=rope | {"rope_theta": 10000.0})
    released = {"rope_theta": 10000.0, "rope_scaling": {"type": "longrope", "short_factor": rope["short_factor"],
                                                         "long_factor": rope["long_factor"]}}
    return Phi3Config, Phi3ForCausalLM, kw, released


def smollm3():
    from transformers import SmolLM3Config, SmolLM3ForCausalLM
    # 3 layers, the middle one without rotary (the releases: every 4th)
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
              tie_word_embeddings=True, no_rope_layers=[1, 0, 1], use_sliding_window=False, sliding_window=None,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return SmolLM3Config, SmolLM3ForCausalLM, kw, {"rope_theta": 10000.0, "rope_scaling": None}


NEW = {"gemma3": gemma3, "phi3": phi3, "smollm3": smollm3}


def init_weights(model, name: str) -> None:
    """rr.init_weights, except Gemma's RMSNorm weights w (it scales by 1 + w): 0.1 * randn, and its embedding
    std 1 / √hidden and its final norm 4 + 0.1 randn (the embedding is multiplied by √hidden; at std 0.5 the residual stream is the input token's row
    and greedy decoding repeats it)."""
    rr.init_weights(model)
    if name.startswith("gemma"):
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.copy_((4.0 if n == "model.norm.weight" else 0.0) + 0.1 * torch.randn_like(p))
                elif "embed_tokens" in n:
                    p.normal_(0.0, 1.0 / model.config.hidden_size ** 0.5)


def record(name: str, tok) -> dict:
    cfg_cls, model_cls, kw, released = NEW[name]()
    config = cfg_cls(vocab_size=len(tok), **kw)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = model_cls(config)
    init_weights(model, name)
    model = model.to(torch.bfloat16).eval()
    out = rr.FAMILIES / name
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.unlink()
    model.save_pretrained(str(out))
    saved = json.loads((out / "config.json").read_text())
    saved.pop("rope_parameters", None)
    saved |= released
    saved["torch_dtype"] = saved.pop("dtype", "bfloat16")
    (out / "config.json").write_text(json.dumps(dict(sorted(saved.items())), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / f).write_bytes((rr.TINY_TOK / f).read_bytes())

    ref = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16, attn_implementation="eager")
    assert type(ref) is model_cls, type(ref)
    loaded = {k: v for k, v in ref.config.rope_parameters.items() if k != "type"}    # the 4.x alias, kept on reload
    assert loaded == config.rope_parameters, (ref.config.rope_parameters, config.rope_parameters)
    assert getattr(ref.config, "layer_types", None) == getattr(config, "layer_types", None)
    for k, v in model.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v), k
    ref = ref.float().eval()
    extra = {}
    if hasattr(ref.model.embed_tokens, "embed_scale"):
        extra["embed_scale"] = float(ref.model.embed_tokens.embed_scale)
        print(f"  {name}: embed_scale used {extra['embed_scale']!r} (sqrt(hidden) = {config.hidden_size ** 0.5!r})")

    input_ids = tok.encode(rr.INPUT_TEXT, add_special_tokens=False)
    with torch.no_grad():
        logits = ref(torch.tensor([input_ids]), use_cache=False).logits[0].float().numpy()
    np.save(out / "reference_logits.npy", logits.astype(np.float32))
    gcfg = GenerationConfig(do_sample=False, max_new_tokens=rr.N_GREEDY, min_new_tokens=rr.N_GREEDY,
                            eos_token_id=None, pad_token_id=0, bos_token_id=1)
    with torch.no_grad():
        gen = ref.generate(torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
                           generation_config=gcfg)
    greedy = gen[0, len(input_ids):].tolist()
    assert greedy == rr.greedy_no_cache(ref, input_ids, rr.N_GREEDY), greedy
    p = torch.softmax(torch.from_numpy(logits), -1)
    reference = {
        "family": name, "architecture": model_cls.__name__, "input_text": rr.INPUT_TEXT, "input_ids": input_ids,
        "logits_file": "reference_logits.npy", "logits_shape": list(logits.shape),
        "logits_note": "float32 logits of every position of input_ids, from the saved bf16 weights upcast to "
                       "float32 (from_pretrained(dtype=bfloat16).float()), eager attention, no KV cache",
        "greedy_ids": greedy,
        "greedy_note": f"model.generate(do_sample=False, max_new_tokens={rr.N_GREEDY}, eos_token_id=None), equal to "
                       "a no-cache argmax loop",
        "argmax_per_position": [int(i) for i in logits.argmax(-1)],
        "logits_stats": {"std": round(float(logits.std()), 4), "mean_max_prob": round(float(p.max(-1).values.mean()), 4)},
        "config": kw | extra, "init": rr.INIT | {"gemma": "after torch.manual_seed(1): norms 0.1 * randn (scale 1 + w; the final "
                                                  "norm 4 + 0.1 * randn, so the tied head's logits are not flat), embed_tokens normal(0, 1 / sqrt(hidden))"},
        "checkpoint_dtype": "bfloat16", "versions": rr.VERSIONS,
    }
    rr.dump_json(out / "reference.json", reference)
    print(f"  {name}: greedy {greedy} stats {reference['logits_stats']}")
    return reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(NEW))
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(str(rr.TINY_TOK))
    for name in args.only.split(","):
        record(name, tok)


if __name__ == "__main__":
    main()
