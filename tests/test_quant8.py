"""8-bit blocks (MatMulNBits / GatherBlockQuantized bits=8), per-tensor bits and fitted block sizes."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_llm.errors import ExportError
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.quant import dequantize, quantize_int4, quantize_int8
from edge_llm.export.recipe import RECIPES, Recipe

DATA = Path(__file__).parent / "data" / "tiny-families"


def test_int8_symmetric_known_block():
    # largest magnitude -1.0 maps to code 0: scale = -1/-128, zp 128
    w = np.array([[-1.0, 0.5, 0.25, 0.0] + [0.0] * 12], np.float32)
    q = quantize_int8(w, block_size=16)
    assert q.bits == 8 and q.zero_points is None and q.codes.shape == (1, 1, 16)
    assert q.scales[0, 0] == np.float32(1 / 128)
    assert list(q.codes[0, 0, :4]) == [0, 192, 160, 128]
    np.testing.assert_array_equal(dequantize(q), w)


def test_int8_asymmetric_known_block():
    w = np.array([[-1.0, 3.0] + [0.0] * 14], np.float32)
    q = quantize_int8(w, block_size=16, symmetric=False)
    scale = np.float32(4.0 / 255.0)
    assert q.scales[0, 0] == scale and q.zero_points[0, 0] == 64          # round(1 / (4/255)) = round(63.75)
    assert list(q.codes[0, 0, :3]) == [0, 255, 64]
    np.testing.assert_allclose(dequantize(q)[0, :3], [(0 - 64) * scale, (255 - 64) * scale, 0.0], rtol=1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_round_trip_error_is_at_most_half_a_step(symmetric):
    w = np.random.default_rng(0).standard_normal((24, 200)).astype(np.float32)      # K=200: a padded last block
    q = quantize_int8(w, block_size=64, symmetric=symmetric)
    err = np.abs(dequantize(q) - w).reshape(24, -1)
    step = np.repeat(np.abs(q.scales), 64, axis=1)[:, :200]
    bad = np.argwhere(err > step / 2 + 1e-7)
    assert bad.size == 0, f"row/col {bad[:3].tolist()} exceed half a step"
    e4 = np.abs(dequantize(quantize_int4(w, block_size=64, symmetric=symmetric)) - w).mean()
    assert err.mean() < e4 / 10


def test_recipe_bits_and_fitted_blocks():
    r = Recipe(block_size=128, head_bits=8, overrides={"down_proj": {"bits": 8}}, fit_block=True)
    assert r.bits_for("model.layers.3.mlp.down_proj.weight") == 8
    assert r.bits_for("model.layers.3.mlp.up_proj.weight") == 4
    assert r.block_for("model.layers.0.self_attn.q_proj.weight", 576) == 64      # 576 = 4.5 × 128
    assert r.block_for("model.layers.0.mlp.down_proj.weight", 1536) == 128
    assert Recipe(block_size=128).block_for("x", 576) == 128                         # without fit: padded
    with pytest.raises(ExportError, match="5-bit"):
        Recipe(head_bits=5)
    with pytest.raises(ExportError, match="3-bit"):
        Recipe(overrides={"v_proj": {"bits": 3}})


def test_all_8bit_export_equals_the_numpy_forward_of_the_dequantized_weights(tmp_path):
    """accuracy_level 0 (fp32 compute): onnxruntime's bits=8 kernels read exactly our codes and scales."""
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.config import config_for
    from edge_llm.export.reference import forward
    from edge_llm.session import ModelSession
    src = DATA / "llama"
    export_checkpoint(src, tmp_path / "pkg", recipe=Recipe(bits=8, head_bits=8, block_size=32, accuracy_level=0))
    ids = [1, 5, 17, 99, 250, 3, 42, 7]
    with open_checkpoint(src) as ck:
        cfg = config_for(ck.config)
        get = lambda n: dequantize(quantize_int8(ck.load(n), block_size=32)) if ck.load(n).ndim == 2 else ck.load(n)
        want = forward(cfg, get, ids)
    got = ModelSession(tmp_path / "pkg", threads=1).logits_all(ids)
    assert float(np.abs(got - want).max()) < 1e-4 * max(1.0, float(np.abs(want).max()))
    kinds = {(n.op_type, a.i) for n in onnx.load(str(tmp_path / "pkg" / "model.onnx"), load_external_data=False).graph.node
             for a in n.attribute if a.name == "bits"}
    assert kinds == {("MatMulNBits", 8), ("GatherBlockQuantized", 8)}


@pytest.mark.parametrize("family", ["llama", "llama-untied"])
def test_v8_head8_recipe_graph_and_quality(tmp_path, family):
    """The registered 8-bit head + v_proj recipe: head (and a tied embedding) and v_proj 8-bit, q|k and the
    rest int4, float16 scales; closer to fp32 than the int4-only recipe of the same block."""
    from edge_llm.session import ModelSession
    src = DATA / family
    export_checkpoint(src, tmp_path / "fp32", recipe=Recipe(precision="fp32"))
    export_checkpoint(src, tmp_path / "h8", recipe=RECIPES["clip-asym-b64-v8-head8-f16"])
    export_checkpoint(src, tmp_path / "b64", recipe=RECIPES["clip-asym-b64-f16"])
    g = onnx.load(str(tmp_path / "h8" / "model.onnx"), load_external_data=False).graph
    bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in g.node
            if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    assert bits.pop("/lm_head/MatMulNBits") == 8
    assert bits.pop("/model/embed_tokens/GatherBlockQuantized") == (8 if family == "llama" else 4)
    assert {k for k, v in bits.items() if v == 8} == {f"/model/layers.{i}/attn/v_proj/MatMulNBits" for i in range(2)}
    ids = list(range(3, 60))
    ref = ModelSession(tmp_path / "fp32", threads=1).logits_all(ids)
    err = {k: float(np.abs(ModelSession(tmp_path / k, threads=1).logits_all(ids) - ref).mean()) for k in ("h8", "b64")}
    assert err["h8"] < err["b64"], err


@pytest.mark.parametrize("family", ["llama", "llama-untied"])
def test_float16_scales_halve_scale_bytes_and_keep_the_logits(tmp_path, family):
    """scale_dtype float16: MatMulNBits/GatherBlockQuantized take float16 scales and run between Casts."""
    from edge_llm.session import ModelSession
    src = DATA / family
    base = dict(block_size=32, symmetric=False, clip_search=True, head_bits=8, accuracy_level=0)
    export_checkpoint(src, tmp_path / "f32", recipe=Recipe(**base))
    export_checkpoint(src, tmp_path / "f16", recipe=Recipe(**base, scale_dtype="float16"))
    g = onnx.load(str(tmp_path / "f16" / "model.onnx"), load_external_data=False).graph
    scales = {i.name: i.data_type for i in g.initializer if i.name.endswith(".scales")}
    assert scales and set(scales.values()) == {onnx.TensorProto.FLOAT16}
    n_mm = sum(n.op_type == "MatMulNBits" for n in g.node)
    to16 = [n for n in g.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    assert len(to16) == n_mm                                   # one per MatMulNBits input (q|k|v share one)
    assert sum(n.op_type == "Cast" and n.name.endswith("/Cast_out") for n in g.node) == n_mm
    size = lambda k: (tmp_path / k / "model.onnx.data").stat().st_size
    assert size("f16") < size("f32")
    ids = list(range(3, 60))
    a = ModelSession(tmp_path / "f32", threads=1).logits_all(ids)
    b = ModelSession(tmp_path / "f16", threads=1).logits_all(ids)
    assert float(np.abs(a - b).max()) < 2e-2 * max(1.0, float(np.abs(a).max()))
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.95


def test_float16_scale_overflow_names_the_tensor():
    from edge_llm.export.decoder import DecoderGraph
    from edge_llm.export.quant import quantize_int4
    q = quantize_int4(np.full((2, 32), 1e6, np.float32), block_size=32)
    graph = DecoderGraph.__new__(DecoderGraph)
    graph.recipe = Recipe(scale_dtype="float16")
    with pytest.raises(ExportError, match="model.layers.0.mlp.down_proj.weight"):
        graph._scales("model.layers.0.mlp.down_proj.weight", q)


@pytest.mark.parametrize("family,overrides,present,absent", [
    ("llama", {"v_proj": {"block_size": 16}}, ["attn/qk_proj", "attn/v_proj"], ["attn/qkv_proj"]),
    ("qwen2", {"v_proj": {"block_size": 16}}, ["attn/qk_proj", "attn/v_proj"], ["attn/qkv_proj"]),
    ("qwen3", {"v_proj": {"block_size": 16}}, ["attn/qk_proj", "attn/v_proj"], ["attn/qkv_proj"]),
    ("qwen3", {"k_proj": {"block_size": 16}, "v_proj": {"block_size": 16}}, ["attn/q_proj", "attn/kv_proj"], ["attn/qk_proj"]),
    ("qwen2", {"k_proj": {"block_size": 16}}, ["attn/q_proj", "attn/k_proj", "attn/v_proj"], ["attn/qkv_proj"]),
    ("llama", {"up_proj": {"block_size": 16}}, ["mlp/gate_proj", "mlp/up_proj", "attn/qkv_proj"], ["mlp/gate_up_proj"]),
])
def test_projections_apart_when_their_bits_or_block_differ(tmp_path, family, overrides, present, absent):
    """Runs of alike q/k/v (gate/up) stay packed, the rest get their own matmul (qwen2: bias, qwen3: q/k
    norms): exact against the numpy forward of the same dequantized weights."""
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.config import config_for
    from edge_llm.export.reference import forward
    from edge_llm.session import ModelSession
    src = DATA / family
    r = Recipe(bits=8, head_bits=8, block_size=32, accuracy_level=0, overrides=overrides)
    export_checkpoint(src, tmp_path / "pkg", recipe=r)
    g = onnx.load(str(tmp_path / "pkg" / "model.onnx"), load_external_data=False).graph
    names = {n.name for n in g.node}
    assert all(f"/model/layers.0/{x}/MatMulNBits" in names for x in present), sorted(names)
    assert not any(f"/model/layers.0/{x}/MatMulNBits" in names for x in absent)
    ids = [1, 5, 17, 99, 250, 3, 42, 7]
    with open_checkpoint(src) as ck:
        cfg = config_for(ck.config)

        def get(n):
            w = ck.load(n)
            bs = 16 if any(key in n for key in overrides) else 32
            return dequantize(quantize_int8(w, block_size=bs)) if w.ndim == 2 else w
        want = forward(cfg, get, ids)
    got = ModelSession(tmp_path / "pkg", threads=1).logits_all(ids)
    assert float(np.abs(got - want).max()) < 1e-4 * max(1.0, float(np.abs(want).max()))
