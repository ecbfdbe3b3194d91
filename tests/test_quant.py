"""Known-answer and round-trip tests for the MatMulNBits int4 layout."""
import numpy as np
import pytest

from edge_llm.export.quant import dequantize_int4, pack_nibbles, quantize_int4, unpack_nibbles


def test_pack_nibbles_low_first():
    q = np.array([[1, 2, 15, 0]], np.uint8)
    assert pack_nibbles(q).tolist() == [[0x21, 0x0F]]
    assert unpack_nibbles(pack_nibbles(q)).tolist() == q.tolist()


def test_symmetric_block_known_answer():
    # one block of 16: the largest magnitude (-4.0) maps to code 0 (i.e. -8), scale = -4/-8 = 0.5
    w = np.array([[-4.0, 0.0, 0.5, 1.0, 3.5, -1.2] + [0.0] * 10], np.float32)
    q = quantize_int4(w, block_size=16)
    assert q.scales.tolist() == [[0.5]]
    codes = unpack_nibbles(q.codes)[0, 0]
    # code = round(w / 0.5) + 8 ; -1.2/0.5 = -2.4 -> -2
    assert codes[:6].tolist() == [0, 8, 9, 10, 15, 6]
    assert q.zero_points is None
    np.testing.assert_allclose(dequantize_int4(q)[0, :6], [-4.0, 0.0, 0.5, 1.0, 3.5, -1.0])


def test_signed_scale_when_positive_extreme():
    # positive extreme: scale is negative (MLAS range2scale), 4.0 -> code 0 again
    w = np.array([[4.0, -1.0] + [0.0] * 14], np.float32)
    q = quantize_int4(w, block_size=16)
    assert q.scales[0, 0] == pytest.approx(-0.5)
    np.testing.assert_allclose(dequantize_int4(q)[0, :2], [4.0, -1.0])


def test_asymmetric_block_known_answer():
    w = np.array([[0.0, 1.5, 3.0] + [1.0] * 13], np.float32)
    q = quantize_int4(w, block_size=16, symmetric=False)
    # range [0, 3] -> scale 0.2, zp 0
    assert q.scales[0, 0] == pytest.approx(0.2)
    assert unpack_nibbles(q.zero_points)[0, 0] == 0
    np.testing.assert_allclose(dequantize_int4(q)[0, :3], [0.0, 1.6, 3.0], atol=1e-6)


@pytest.mark.parametrize("block", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_bounded(block, symmetric):
    rng = np.random.default_rng(block)
    w = rng.standard_normal((24, 384)).astype(np.float32)
    q = quantize_int4(w, block_size=block, symmetric=symmetric)
    d = dequantize_int4(q)
    nb = -(-384 // block)
    assert q.codes.shape == (24, nb, block // 2) and q.scales.shape == (24, nb)
    # round-to-nearest errs by at most half a step; symmetric blocks clip the side opposite the
    # extreme at +7 steps, so there the error can reach one step
    step = np.abs(q.scales).repeat(block, axis=1)[:, :384]
    bound = step * (1.0 if symmetric else 0.5) + 1e-5
    bad = np.argwhere(np.abs(d - w) > bound)
    assert bad.size == 0, f"row/col {bad[:3].tolist()} exceed half a quantization step"


def test_k_not_multiple_of_block_is_padded():
    w = np.random.default_rng(0).standard_normal((4, 40)).astype(np.float32)
    q = quantize_int4(w, block_size=32)
    assert q.codes.shape == (4, 2, 16)
    assert dequantize_int4(q).shape == (4, 40)


def test_clip_search_never_worse():
    rng = np.random.default_rng(1)
    w = rng.standard_t(3, (64, 256)).astype(np.float32)   # heavy tails, where clipping helps
    for sym in (True, False):
        plain = np.square(dequantize_int4(quantize_int4(w, block_size=64, symmetric=sym)) - w).sum()
        clip = np.square(dequantize_int4(quantize_int4(w, block_size=64, symmetric=sym, clip_search=True)) - w).sum()
        assert clip <= plain
    assert clip < 0.95 * plain


def test_zero_block_stays_zero():
    w = np.zeros((2, 32), np.float32)
    for sym in (True, False):
        assert not dequantize_int4(quantize_int4(w, block_size=32, symmetric=sym)).any()


def test_unsupported_block_size():
    with pytest.raises(ValueError, match="block size 48"):
        quantize_int4(np.zeros((1, 48), np.float32), block_size=48)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block", [32, 128])
def test_layout_matches_onnxruntime_matmulnbits(symmetric, block):
    """onnxruntime reads our packed codes/scales/zero points as we mean them: A @ dequant(W)^T."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    n, k = 48, 256
    w = rng.standard_normal((n, k)).astype(np.float32)
    a = rng.standard_normal((3, k)).astype(np.float32)
    q = quantize_int4(w, block_size=block, symmetric=symmetric)
    inits = [numpy_helper.from_array(q.codes, "B"), numpy_helper.from_array(q.scales, "S")]
    inputs = ["A", "B", "S"]
    if q.zero_points is not None:
        inits.append(numpy_helper.from_array(q.zero_points, "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=block, accuracy_level=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"A": a})[0]
    np.testing.assert_allclose(got, a @ dequantize_int4(q).T, rtol=1e-4, atol=1e-4)
