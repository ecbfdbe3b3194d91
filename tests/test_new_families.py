"""Families added with the per-family tensor map (issue 21): Gemma 3 text (and the hooks it brought).

tests/test_families.py already runs every tiny-families folder against its transformers references (fp32
logits within 1e-3, KV-cached greedy tokens, int4); this file checks what those cannot see: decode steps past
the sliding window against full recompute, the config forms the releases use, and refusals.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_llm.errors import CheckpointError
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.families import family_for
from edge_llm.export.recipe import Recipe

DATA = Path(__file__).parent / "data" / "tiny-families"


def _cfg(name: str) -> dict:
    return json.loads((DATA / name / "config.json").read_text())


@pytest.fixture(scope="module")
def gemma_fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("gemma3") / "fp32"
    export_checkpoint(DATA / "gemma3", out, recipe=Recipe(precision="fp32"))
    return out


def test_gemma3_decode_steps_past_the_window_match_full_recompute(gemma_fp32):
    """Each KV-cached step's logits equal the no-cache logits of the same prefix: the sliding window (4 keys)
    holds in decode as in prefill, over 3x the window."""
    from edge_llm.session import ModelSession
    ref = json.loads((DATA / "gemma3" / "reference.json").read_text())
    ids = ref["input_ids"][:3] + list(range(20, 30))
    s = ModelSession(gemma_fp32, threads=1)
    full = s.logits_all(ids)
    cache = s.new_cache()
    steps = np.stack([s.forward([t], cache) for t in ids])
    worst = float(np.abs(steps - full).max())
    assert worst < 1e-4, f"cached decode differs from full recompute by {worst:.2e}"


def test_gemma3_config_hooks():
    _, c = family_for(_cfg("gemma3"))
    assert c.embedding_scale == 9.8125            # √96 = 9.798 rounded to bfloat16, as transformers multiplies
    assert c.softmax_scale == 24 ** -0.5 and c.head_dim == 32 and c.hidden_act == "gelu_tanh"
    assert c.sliding_window == 4 and c.sliding_layers == (0, 1) and c.window(2) is None
    assert c.tie_word_embeddings and c.qk_norm and c.branch_norms
    assert c.rope_scaling.type == "linear" and c.rope_theta == 1e6 and c.local_rope_theta == 1e4
    # sliding layers: local base, no scaling; the global layer: rope_theta with its linear factor
    hd = np.arange(0, 32, 2) / 32
    assert np.allclose(c.inv_freq(0), 1e4 ** -hd) and np.allclose(c.inv_freq(2), 1e6 ** -hd / 2)


def test_gemma3_config_forms_agree():
    """transformers 5's rope_parameters per layer type and layer_types read as the released 4.x keys do."""
    old = _cfg("gemma3")
    new = {k: v for k, v in old.items() if k not in ("rope_theta", "rope_local_base_freq", "rope_scaling",
                                                    "sliding_window_pattern", "torch_dtype")}
    new |= {"dtype": "bfloat16", "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}
    assert family_for(new)[1] == family_for(old)[1]
    no_types = {k: v for k, v in old.items() if k != "layer_types"}   # sliding_window_pattern 3: layers 0, 1
    assert family_for(no_types)[1].sliding_layers == (0, 1)


def test_gemma3_refusals_are_one_line(tmp_path):
    cfg = _cfg("gemma3") | {"architectures": ["Gemma3ForConditionalGeneration"]}
    with pytest.raises(CheckpointError, match="Gemma3ForConditionalGeneration .* not supported; export a Gemma3ForCausalLM"):
        family_for(cfg)
    with pytest.raises(CheckpointError, match="final_logit_softcapping 30.0 is not supported"):
        family_for(_cfg("gemma3") | {"final_logit_softcapping": 30.0})
    with pytest.raises(CheckpointError, match="rope_scaling type 'yarn' is not supported"):
        family_for(_cfg("gemma3") | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_gemma3_chat_template_and_stop(tmp_path):
    """The -it release's template (the checkpoint folder has none here) with <end_of_turn> as a stop string."""
    from edge_llm.chat_template import render
    from edge_llm.export.families.gemma3 import GEMMA3
    from edge_llm.manifest import ChatSpec
    spec = ChatSpec(template=GEMMA3.chat.builtin_template, source="builtin", stop_ids=(1,), bos_token="<bos>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi "},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]
    assert render(spec, msgs) == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
                                  "Hello.<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n")
    assert "<end_of_turn>" in GEMMA3.chat.stop_strings


def test_tensor_map_renames_and_offsets(tmp_path):
    """Gemma's norms reach the builder as canonical names holding 1 + w; unmapped tensors pass through as they are."""
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.families.tensors import CanonicalTensors
    with open_checkpoint(DATA / "gemma3") as ck:
        fam, cfg = family_for(ck.config)
        view = CanonicalTensors(ck, fam, cfg)
        pre_mlp = view.load("model.layers.1.post_attention_layernorm.weight")
        assert np.array_equal(pre_mlp, ck.load("model.layers.1.pre_feedforward_layernorm.weight") + 1)
        assert np.array_equal(view.load("model.layers.1.attn_out_norm.weight"),
                              ck.load("model.layers.1.post_attention_layernorm.weight") + 1)
        assert view.shape("model.layers.0.mlp_out_norm.weight") == (96,)
        assert np.array_equal(view.load("model.layers.0.mlp.up_proj.weight"), ck.load("model.layers.0.mlp.up_proj.weight"))


# ------------------------------------------------------------------------------------------ Phi-3

def test_phi3_longrope_and_partial_rotary_config():
    import math
    _, c = family_for(_cfg("phi3"))
    rs = c.rope_scaling
    assert rs.type == "longrope" and rs.factors == (1.0, 1.1, 1.3, 1.7, 2.1, 2.9, 3.7, 5.0)    # short_factor
    assert math.isclose(rs.attention_factor, math.sqrt(1 + math.log(4) / math.log(64)))
    assert c.rotary_dim == 16 and c.head_dim == 32 and c.inv_freq().shape == (8,)
    assert c.max_position_embeddings == 64      # capped where short_factor holds (transformers switches past it)


def test_phi3_fused_tensors_split_by_rows():
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.families.tensors import CanonicalTensors
    with open_checkpoint(DATA / "phi3") as ck:
        fam, cfg = family_for(ck.config)
        view = CanonicalTensors(ck, fam, cfg)
        qkv = ck.load("model.layers.1.self_attn.qkv_proj.weight")
        parts = [view.load(f"model.layers.1.self_attn.{n}_proj.weight") for n in "qkv"]
        assert [p.shape for p in parts] == [(64, 64), (32, 64), (32, 64)]
        assert np.array_equal(np.concatenate(parts), qkv)
        gu = ck.load("model.layers.0.mlp.gate_up_proj.weight")
        assert np.array_equal(view.load("model.layers.0.mlp.up_proj.weight"), gu[128:])
        assert "model.layers.0.mlp.gate_proj.weight" in view and view.shape("model.layers.0.mlp.gate_proj.weight") == (128, 64)


def test_phi3_refusals_are_one_line():
    with pytest.raises(CheckpointError, match="rotates 8 of 32 dims; onnxruntime's GroupQueryAttention needs a multiple of 16"):
        family_for(_cfg("phi3") | {"partial_rotary_factor": 0.25, "rope_scaling": None})
    with pytest.raises(CheckpointError, match="longrope needs short_factor and long_factor lists of 8 values"):
        family_for(_cfg("phi3") | {"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}})
    with pytest.raises(CheckpointError, match="rope_scaling type 'yarn' is not supported"):
        family_for(_cfg("phi3") | {"rope_scaling": {"type": "yarn", "factor": 4.0}})


# ------------------------------------------------------------------------------------------ SmolLM3

def test_smollm3_no_rope_layers():
    _, c = family_for(_cfg("smollm3"))
    assert c.nope_layers == (1,) and c.tie_word_embeddings
    every4 = {k: v for k, v in _cfg("smollm3").items() if k != "no_rope_layers"} | {"num_hidden_layers": 8}
    assert family_for(every4)[1].nope_layers == (3, 7)       # no_rope_layer_interval 4, as the releases
    with pytest.raises(CheckpointError, match="no_rope_layers has 3 entries for 8 layers"):
        family_for(_cfg("smollm3") | {"num_hidden_layers": 8})


# ------------------------------------------------------------------------------------------ MiniCPM4

def test_minicpm4_longrope_exported_as_the_reference_computes(tmp_path, monkeypatch):
    """MiniCPM4's newer keys (longrope, kv_channels, use_mup) on a synthetic MiniCPM: graph equals the numpy
    reference, whose longrope maths the Phi-3 tiny checkpoint checks against transformers. No transformers
    class exists for MiniCPM (remote code), so there is no independent reference here."""
    from edge_llm.export import synth
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.reference import forward
    from edge_llm.export.synth import write_synthetic
    from edge_llm.session import ModelSession
    monkeypatch.setattr(synth, "MATRIX_STD", 0.3)    # at 0.02 attention is flat and rotary barely shows
    rope = {"rope_type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0, 2.6, 3.3, 4.1, 5.0],
            "long_factor": [2.0] * 8, "original_max_position_embeddings": 64}
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 400, "max_position_embeddings": 256}
    src = write_synthetic(tmp_path / "ck", shape=shape, weight_format="safetensors", seed=3,
                          tokenizer_dir=Path(__file__).parent / "data" / "tiny-tokenizer")
    cfg_json = json.loads((src / "config.json").read_text()) | {"rope_scaling": rope, "use_mup": True, "kv_channels": 16}
    (src / "config.json").write_text(json.dumps(cfg_json))
    _, cfg = family_for(cfg_json)
    assert cfg.rope_scaling.type == "longrope" and cfg.max_position_embeddings == 64 and cfg.embedding_scale == 12
    export_checkpoint(src, tmp_path / "pkg", recipe=Recipe(precision="fp32"))
    ids = [5, 17, 99, 250, 3, 42, 7, 300, 11, 64]
    with open_checkpoint(src) as ck:
        want = forward(cfg, ck.load, ids)
        plain = forward(family_for({**cfg_json, "rope_scaling": None})[1], ck.load, ids)
    got = ModelSession(tmp_path / "pkg", threads=1).logits_all(ids)
    assert float(np.abs(got - want).max()) < 1e-3 * max(1.0, float(np.abs(want).max()))
    assert float(np.abs(want - plain).max()) > 0.05 * float(np.abs(want).max()), "longrope has no visible effect"
    with pytest.raises(CheckpointError, match="use_mup false is not supported"):
        family_for(cfg_json | {"use_mup": False})
