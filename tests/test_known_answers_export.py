"""Known answers for the exporter's numerics: GPTQ against round-to-nearest on a seeded layer, the
calibrator's Hessians against the reference forward's own linear inputs, the validator's checks and
tolerances, and the quantizer's layout edges. Each test fails if its feature breaks (see
benchmarks/results/mutation-report.md)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

# ---- GPTQ against round to nearest ---------------------------------------------------------------

def _layer(seed: int = 0, n: int = 32, k: int = 256, rows: int = 1024):
    """A seeded weight and calibration inputs with correlated features (what GPTQ exploits)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    mix = rng.standard_normal((k, k)).astype(np.float32) / np.sqrt(k)
    x = (rng.standard_normal((rows, k)).astype(np.float32) @ (np.eye(k, dtype=np.float32) + 2 * mix))
    h = (x.T.astype(np.float64) @ x) / rows
    return w, x, h


def _output_error(x, w, wq) -> float:
    return float(np.square(x @ w.T - x @ wq.T).sum())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [32, 128])
def test_gptq_output_error_below_rtn(symmetric, block):
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import dequantize_int4, quantize_int4

    w, x, h = _layer()
    rtn = dequantize_int4(quantize_int4(w, block_size=block, symmetric=symmetric))
    clip = dequantize_int4(quantize_int4(w, block_size=block, symmetric=symmetric, clip_search=True))
    g = gptq_quantize(w, h, block_size=block, symmetric=symmetric, clip_search=False)
    gc = gptq_quantize(w, h, block_size=block, symmetric=symmetric, clip_search=True)
    assert g.shape == w.shape and g.codes.shape == (32, 256 // block, block // 2)
    e_rtn, e_gptq = _output_error(x, w, rtn), _output_error(x, w, dequantize_int4(g))
    e_clip, e_gptq_clip = _output_error(x, w, clip), _output_error(x, w, dequantize_int4(gc))
    # measured at seed 0: GPTQ's output error is 0.46-0.51x round-to-nearest's
    assert e_gptq < 0.7 * e_rtn, (e_gptq, e_rtn)
    assert e_gptq_clip < 0.7 * e_clip, (e_gptq_clip, e_clip)


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_with_identity_hessian_is_round_to_nearest(symmetric):
    """No correlation between inputs: nothing to compensate, so GPTQ must give RTN's codes exactly."""
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import quantize_int4

    w = np.random.default_rng(3).standard_normal((16, 100)).astype(np.float32)   # K padded to 128
    for clip in (False, True):
        a = quantize_int4(w, block_size=64, symmetric=symmetric, clip_search=clip)
        b = gptq_quantize(w, np.eye(100), block_size=64, symmetric=symmetric, clip_search=clip)
        np.testing.assert_array_equal(b.codes, a.codes)
        np.testing.assert_array_equal(b.scales, a.scales)
        if symmetric:
            assert b.zero_points is None
        else:
            np.testing.assert_array_equal(b.zero_points, a.zero_points)


def test_gptq_dead_inputs_are_zeroed_and_stay_exact():
    """An input feature that never fires (zero Hessian row) gets weight 0; the rest is still quantized."""
    from edge_llm.export.gptq import gptq_quantize
    from edge_llm.export.quant import dequantize_int4

    w, x, h = _layer(seed=1, k=64)
    x[:, 5] = 0.0
    h = (x.T.astype(np.float64) @ x) / len(x)
    d = dequantize_int4(gptq_quantize(w, h, block_size=32, symmetric=False))
    assert not d[:, 5].any()
    assert np.isfinite(d).all() and _output_error(x, w, d) < 0.05 * np.square(x @ w.T).sum()


# ---- the calibrator against the reference forward -----------------------------------------------

TINY_CFG = {"architectures": ["MiniCPMForCausalLM"], "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 96,
            "scale_emb": 12.0, "scale_depth": 1.4, "dim_model_base": 16, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 64, "rope_theta": 10000.0}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Recorded(np.ndarray):
    """A weight that records the left operand of every `x @ w.T` the forward makes with it."""

    def __array_finalize__(self, obj):
        self.log = getattr(obj, "log", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        plain = [np.asarray(i) if isinstance(i, _Recorded) else i for i in inputs]
        if ufunc is np.matmul and isinstance(inputs[1], _Recorded):
            inputs[1].log.append(np.array(plain[0], np.float64))
        return getattr(ufunc, method)(*plain, **kw)


def _tiny_weights(cfg, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in cfg.expected_shapes().items():
        scale = 1.0 if name.endswith("norm.weight") else 0.2
        base = 1.0 if name.endswith("norm.weight") else 0.0
        out[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def test_calibrator_hessians_equal_the_reference_forwards_inputs():
    from edge_llm.export.calibrate import Calibrator
    from edge_llm.export.config import config_for
    from edge_llm.export.reference import forward

    cfg = config_for(TINY_CFG)
    weights = _tiny_weights(cfg)
    ids = np.random.default_rng(1).integers(3, cfg.vocab_size, size=(3, 10))
    logs = {name: [] for name in weights if name.split(".")[-2] in LINEARS}

    def recorded_get(name):
        if name in logs:
            w = weights[name].view(_Recorded)
            w.log = logs[name]
            return w
        return weights[name]

    logits = np.concatenate([forward(cfg, recorded_get, seq) for seq in ids])       # (n_seq * T, vocab)
    cal = Calibrator(cfg, weights.__getitem__, ids)
    for i in range(cfg.num_layers):
        for lin in LINEARS:
            part = "self_attn" if lin.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            name = f"model.layers.{i}.{part}.{lin}.weight"
            x = np.concatenate(logs[name])                                           # the reference's inputs
            assert x.shape[0] == ids.size, name
            np.testing.assert_allclose(cal.hessian(name), x.T @ x / len(x), rtol=2e-4, atol=1e-4,
                                       err_msg=name)
    # the tied head: logits = x Eᵀ, so E H Eᵀ must be the logits' own Gram matrix
    emb = weights["model.embed_tokens.weight"].astype(np.float64)
    head = cal.hessian("model.embed_tokens.weight")
    np.testing.assert_allclose(emb @ head @ emb.T, logits.T.astype(np.float64) @ logits / len(logits),
                               rtol=2e-4, atol=2e-3)


# ---- export validation: each check raises its own error, at its own tolerance ---------------------

class _FakeIOSession:
    def __init__(self, inputs, outputs):
        self.sess = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(name=n) for n in inputs],
                                    get_overridable_initializers=lambda: [],
                                    get_outputs=lambda: [SimpleNamespace(name=n) for n in outputs])


def _io_manifest(layers=2):
    from edge_llm.manifest import IOSpec
    return SimpleNamespace(io=IOSpec(), kv=SimpleNamespace(num_layers=layers))


def test_validator_io_check():
    from edge_llm.export.validate import IOMismatchError, check_io
    io = _io_manifest().io
    inputs = [io.input_ids, io.attention_mask, io.logits_to_keep, *io.per_layer("past_key", 2),
              *io.per_layer("past_value", 2)]
    outputs = [io.logits, *io.per_layer("present_key", 2), *io.per_layer("present_value", 2)]
    check_io(_FakeIOSession(inputs, outputs), _io_manifest())
    with pytest.raises(IOMismatchError, match=r"inputs \['past_key_values.1.value'\], outputs \[\]"):
        check_io(_FakeIOSession(inputs[:-1], outputs), _io_manifest())
    with pytest.raises(IOMismatchError, match=r"outputs \['extra'\]"):
        check_io(_FakeIOSession(inputs, outputs + ["extra"]), _io_manifest())


@pytest.mark.parametrize("precision, kv_dtype, error, raises", [
    ("fp32", "float32", 5e-4, False), ("fp32", "float32", 2e-3, True),
    ("fp32", "float16", 5e-3, False), ("fp32", "float16", 5e-2, True),     # 1e-2 x max |ref| (= 2)
    ("int4", "float32", 0.5, False),                                      # int4: reported, not enforced
])
def test_validator_logits_tolerance(monkeypatch, precision, kv_dtype, error, raises):
    from edge_llm.export import reference
    from edge_llm.export.validate import LogitsMismatchError, check_logits
    ref = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, -1.0]], np.float32)
    monkeypatch.setattr(reference, "forward", lambda cfg, get, ids: ref)
    session = SimpleNamespace(logits_all=lambda ids: ref + np.float32(error) * np.array([[1, 0, 0], [0, 0, -1]]))
    if raises:
        with pytest.raises(LogitsMismatchError, match=f"fp32 logits differ .* by {error:.2e}"):
            check_logits(session, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)
    else:
        r = check_logits(session, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)
        assert r["max_abs_diff"] == pytest.approx(error, rel=1e-3) and r["top1_agreement"] == 1.0
    shapes = SimpleNamespace(logits_all=lambda ids: ref[:1])
    with pytest.raises(LogitsMismatchError, match=r"logits shape \(1, 3\), reference \(2, 3\)"):
        check_logits(shapes, None, None, ids=[1, 2], precision=precision, kv_dtype=kv_dtype)


# ---- quantizer: the layout's dtypes, range edges, chunking, defaults ------------------------------

def test_quant_dtypes_and_defaults():
    from edge_llm.export.quant import dequantize_int4, quantize_int4, unpack_nibbles
    w = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    q = quantize_int4(w)                                   # default: symmetric, block 32
    assert q.block_size == 32 and q.codes.shape == (4, 2, 16) and q.zero_points is None
    assert q.codes.dtype == np.uint8 and q.scales.dtype == np.float32 and unpack_nibbles(q.codes).dtype == np.uint8
    assert dequantize_int4(q).dtype == np.float32
    a = quantize_int4(w, block_size=64, symmetric=False)
    assert a.zero_points.dtype == np.uint8 and dequantize_int4(a).dtype == np.float32


@pytest.mark.parametrize("values, scale, zp", [
    ([0.5, 1.0, 3.0], 0.2, 0),          # all positive: the range still starts at 0 (zeros stay exact)
    ([-3.0, -1.0, -0.5], 0.2, 15),      # all negative: the range still ends at 0
])
def test_asymmetric_range_always_contains_zero(values, scale, zp):
    from edge_llm.export.quant import dequantize_int4, quantize_int4, unpack_nibbles
    w = np.array([values + [values[1]] * 13], np.float32)
    q = quantize_int4(w, block_size=16, symmetric=False)
    assert q.scales[0, 0] == pytest.approx(scale) and unpack_nibbles(q.zero_points)[0, 0] == zp
    w0 = w.copy()
    w0[0, 1] = 0.0
    assert dequantize_int4(quantize_int4(w0, block_size=16, symmetric=False))[0, 1] == 0.0


def test_symmetric_scale_of_exactly_one():
    from edge_llm.export.quant import dequantize_int4, quantize_int4
    w = np.array([[-8.0, 1.0, 2.0, -3.0, 7.0] + [0.0] * 11], np.float32)       # extreme -8: scale exactly 1
    q = quantize_int4(w, block_size=16)
    assert q.scales[0, 0] == 1.0
    np.testing.assert_array_equal(dequantize_int4(q), w)


def test_symmetric_clip_search_pays_on_heavy_tails():
    from edge_llm.export.quant import dequantize_int4, quantize_int4
    w = np.random.default_rng(1).standard_t(3, (64, 256)).astype(np.float32)
    plain = np.square(dequantize_int4(quantize_int4(w, block_size=64)) - w).sum()
    clip = np.square(dequantize_int4(quantize_int4(w, block_size=64, clip_search=True)) - w).sum()
    assert clip < 0.95 * plain


def test_quantize_in_row_chunks_equals_one_chunk(monkeypatch):
    from edge_llm.export import quant
    w = np.random.default_rng(2).standard_normal((10, 64)).astype(np.float32)
    whole = quant.quantize_int4(w, block_size=32, symmetric=False, clip_search=True)
    calls = []
    real = quant._blocks
    monkeypatch.setattr(quant, "_blocks", lambda x, bs: calls.append(len(x)) or real(x, bs))
    parts = quant.quantize_int4(w, block_size=32, symmetric=False, clip_search=True, chunk_rows=3)
    assert calls == [3, 3, 3, 1]                                              # each row once, in chunks
    for a, b in ((whole.codes, parts.codes), (whole.scales, parts.scales), (whole.zero_points, parts.zero_points)):
        np.testing.assert_array_equal(a, b)
