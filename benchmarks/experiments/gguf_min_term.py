#!/usr/bin/env python3
"""Question: how should a GGUF block format with a per-block minimum (Q4_1, Q5_1, Q4_K, Q5_K: d·q + m) reach
MatMulNBits — carried exactly with a min term (block sums of x times m), or re-quantized?

Micro-benchmark, one matrix at a time, onnxruntime CPU, 2 threads; on a shared machine the times are
NOISY (median of repeats, nothing else running is not guaranteed): read them as rough ratios only.
  exact+min   MatMulNBits 4-bit (d, zero point 0) + ReduceSum over blocks + MatMul(mins): exact
  q4-requant  MatMulNBits 4-bit asymmetric block 32 re-quantized from the dequantized values: lossy
  q8-requant  MatMulNBits 8-bit block 32 re-quantized: nearly lossless, twice the code bytes
Error: relative RMS error of the stored weights against the GGUF's dequantized ones.

usage: python benchmarks/experiments/gguf_min_term.py [--shape 1536x576] [--rows 1,128]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_llm.export.gguf_blocks import carry, dequantize_carried
from edge_llm.export.quant import dequantize, quantize

MS = "com.microsoft"


def graph(k: int, n: int, inits: dict, *, bits: int, mins: np.ndarray | None, level: int) -> bytes:
    ins = ["x", "codes", "scales"] + (["zp"] if "zp" in inits else [])
    nodes = [helper.make_node("MatMulNBits", ins, ["y0"], domain=MS, K=k, N=n, bits=bits, block_size=32,
                              accuracy_level=level)]
    out = "y0"
    if mins is not None:
        inits = {**inits, "mins": np.ascontiguousarray(mins.T), "shape": np.array([0, 0, k // 32, 32], np.int64),
                 "axes": np.array([-1], np.int64)}
        nodes += [helper.make_node("Reshape", ["x", "shape"], ["xr"]),
                  helper.make_node("ReduceSum", ["xr", "axes"], ["xs"], keepdims=0),
                  helper.make_node("MatMul", ["xs", "mins"], ["ym"]), helper.make_node("Add", ["y0", "ym"], ["y"])]
        out = "y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, k])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, None, n])],
                          initializer=[numpy_helper.from_array(v, name) for name, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m.SerializeToString()


def timed(model: bytes, x: np.ndarray, reps: int = 50) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(5):
        s.run(None, {"x": x})
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        s.run(None, {"x": x})
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) * 1e3


def main() -> None:
    import gguf
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1536x576")
    ap.add_argument("--rows", default="1,128")
    a = ap.parse_args()
    n, k = map(int, a.shape.split("x"))
    rng = np.random.default_rng(0)
    raw = gguf.quants.quantize((rng.standard_normal((n, k)) * 0.05).astype(np.float32), gguf.GGMLQuantizationType.Q4_1)
    c = carry(raw, "Q4_1", shape=(n, k))
    w = dequantize_carried(c)
    rms = float(np.sqrt(np.mean(w ** 2)))
    q4 = quantize(w, bits=4, block_size=32, symmetric=False, clip_search=True)
    q8 = quantize(w, bits=8, block_size=32, symmetric=True)
    variants = {
        "exact+min": (dict(codes=c.q.codes, scales=c.q.scales, zp=c.q.zero_points), 4, c.mins, w),
        "q4-requant": (dict(codes=q4.codes, scales=q4.scales, zp=q4.zero_points), 4, None, dequantize(q4)),
        "q8-requant": (dict(codes=q8.codes, scales=q8.scales), 8, None, dequantize(q8)),
    }
    print(f"shape N={n} K={k}, Q4_1 source ({raw.nbytes * 8 / (n * k):.2f} bits/weight); times in ms, NOISY (shared machine)")
    print(f"{'variant':<12} {'bits/w (f32 scales)':>20} {'rel RMS err':>12} " + " ".join(
        f"{'acc' + str(lv) + ' x' + r:>12}" for lv in (1, 4) for r in a.rows.split(",")))
    for name, (inits, bits, mins, stored) in variants.items():
        inits = {k: v for k, v in inits.items() if v is not None}
        half_ok = mins is not None and np.array_equal(mins.astype(np.float16).astype(np.float32), mins)
        nbytes = sum(v.nbytes for v in inits.values()) + (0 if mins is None else mins.size * (2 if half_ok else 4))
        err = float(np.sqrt(np.mean((stored - w) ** 2))) / rms
        times = [timed(graph(k, n, inits, bits=bits, mins=mins, level=lv), rng.standard_normal((1, int(r), k)).astype(np.float32))
                 for lv in (1, 4) for r in a.rows.split(",")]
        print(f"{name:<12} {nbytes * 8 / (n * k):>20.3f} {err:>12.2e} " + " ".join(f"{t:>12.3f}" for t in times))


if __name__ == "__main__":
    main()
