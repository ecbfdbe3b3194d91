"""One GroupQueryAttention decode step with a float32, float16 or int8 KV cache (issue 14: does
onnxruntime's CPU attention have a quantized KV path that keeps decode fast?).

    python benchmarks/experiments/kv_int8_attention.py [--heads 36 --kv-heads 36 --head-dim 64] [--threads 2]
        [--depths 64,1024,1900] [--reps 200] [--out OUT]

A single GQA node (past and present bound to one buffer of max length 2048, as the runtime binds them, one query token, rotary off) per
cache type; per depth the median of `reps` runs in one process, cache types interleaved per rep block.
int8: kv_cache_bit_width 8, k/v_quant_type PER_TENSOR or PER_CHANNEL with static scales (the node's
k_scale / v_scale inputs), query and output float32 as the operator requires. Also reports the
int8 result's max |difference| from the float32 one on the same random cache (a sanity check that the
quantized path computes the same attention).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

MAX = 2048


def build(heads: int, kv_heads: int, d: int, cache: str, quant: str | None) -> bytes:
    act = TensorProto.FLOAT16 if cache == "float16" else TensorProto.FLOAT
    cache_t = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int8": TensorProto.INT8}[cache]
    inputs = [helper.make_tensor_value_info("q", act, [1, 1, heads * d]),
              helper.make_tensor_value_info("k", act, [1, 1, kv_heads * d]),
              helper.make_tensor_value_info("v", act, [1, 1, kv_heads * d]),
              helper.make_tensor_value_info("past_k", cache_t, [1, kv_heads, MAX, d]),
              helper.make_tensor_value_info("past_v", cache_t, [1, kv_heads, MAX, d]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("total", TensorProto.INT32, [1])]
    names = ["q", "k", "v", "past_k", "past_v", "seqlens_k", "total"]
    attrs = dict(num_heads=heads, kv_num_heads=kv_heads)
    if cache == "int8":
        names += ["", "", "", "", "", "k_scale", "v_scale"]
        shape = [1] if quant == "PER_TENSOR" else [1, kv_heads, 1, d]
        inputs += [helper.make_tensor_value_info("k_scale", TensorProto.FLOAT, shape),
                   helper.make_tensor_value_info("v_scale", TensorProto.FLOAT, shape)]
        attrs |= dict(k_quant_type=quant, v_quant_type=quant, kv_cache_bit_width=8)
    node = helper.make_node("GroupQueryAttention", names, ["out", "present_k", "present_v"], domain="com.microsoft",
                            **attrs)
    outputs = [helper.make_tensor_value_info("out", act, [1, 1, heads * d]),
               helper.make_tensor_value_info("present_k", cache_t, [1, kv_heads, MAX, d]),
               helper.make_tensor_value_info("present_v", cache_t, [1, kv_heads, MAX, d])]
    g = helper.make_graph([node], "gqa", inputs, outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return m.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=36)
    ap.add_argument("--kv-heads", type=int, default=36)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depths", default="64,1024,1900")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    h, kvh, d = a.heads, a.kv_heads, a.head_dim
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3
    kinds = [("float32", None), ("float16", None), ("int8", "PER_TENSOR"), ("int8", "PER_CHANNEL")]
    sessions, errors = {}, {}
    for cache, quant in kinds:
        name = cache if quant is None else f"{cache}-{quant.lower().replace('_', '-')}"
        try:
            sessions[name] = (ort.InferenceSession(build(h, kvh, d, cache, quant), so, providers=["CPUExecutionProvider"]),
                              cache, quant)
        except Exception as e:  # noqa: BLE001 (an unsupported combination is a result)
            errors[name] = str(e).splitlines()[0][:200]
    rng = np.random.default_rng(0)
    kf = rng.standard_normal((1, kvh, MAX, d)).astype(np.float32)
    vf = rng.standard_normal((1, kvh, MAX, d)).astype(np.float32)
    q = rng.standard_normal((1, 1, h * d)).astype(np.float32)
    k1 = rng.standard_normal((1, 1, kvh * d)).astype(np.float32)
    v1 = rng.standard_normal((1, 1, kvh * d)).astype(np.float32)
    results = {}
    for depth in [int(x) for x in a.depths.split(",")]:
        feeds, times, outs = {}, {}, {}
        for name, (sess, cache, quant) in sessions.items():
            f = {"q": q, "k": k1, "v": v1, "seqlens_k": np.array([depth], np.int32),
                 "total": np.array([depth + 1], np.int32)}
            if cache == "float16":
                f |= {"q": q.astype(np.float16), "k": k1.astype(np.float16), "v": v1.astype(np.float16),
                      "past_k": kf.astype(np.float16), "past_v": vf.astype(np.float16)}
            elif cache == "int8":
                if quant == "PER_TENSOR":
                    ks, vs = np.array([np.abs(kf).max() / 127], np.float32), np.array([np.abs(vf).max() / 127], np.float32)
                else:
                    ks = (np.abs(kf).max(axis=2, keepdims=True) / 127).astype(np.float32)
                    vs = (np.abs(vf).max(axis=2, keepdims=True) / 127).astype(np.float32)
                f |= {"past_k": np.clip(np.round(kf / ks), -127, 127).astype(np.int8),
                      "past_v": np.clip(np.round(vf / vs), -127, 127).astype(np.int8), "k_scale": ks, "v_scale": vs}
            else:
                f |= {"past_k": kf, "past_v": vf}
            feeds[name] = f
            times[name] = []
        bindings = {}
        for name, (sess, _, _) in sessions.items():
            # past and present share one buffer, as edge-llm binds them: a step writes one row in place
            b, f = sess.io_binding(), feeds[name]
            for key, arr in f.items():
                if key not in ("past_k", "past_v"):
                    b.bind_cpu_input(key, arr)
            for past, present in (("past_k", "present_k"), ("past_v", "present_v")):
                buf = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(f[past]))
                b.bind_ortvalue_input(past, buf)
                b.bind_ortvalue_output(present, buf)
                f["_" + past] = buf                       # keep it alive
            b.bind_output("out", "cpu")
            bindings[name] = b
        for _ in range(a.reps // 10):
            for name, (sess, _, _) in sessions.items():
                for _ in range(10):
                    t = time.perf_counter()
                    sess.run_with_iobinding(bindings[name])
                    times[name].append(time.perf_counter() - t)
                outs[name] = bindings[name].get_outputs()[0].numpy().astype(np.float32)
        ref = outs.get("float32")
        results[depth] = {n: {"ms": 1000 * statistics.median(ts),
                              "max_abs_diff_vs_float32": None if ref is None else float(np.abs(outs[n] - ref).max())}
                          for n, ts in times.items()}
    lines = [f"# GroupQueryAttention decode step by KV cache type ({h} heads, {kvh} KV heads, head {d}, "
             f"{a.threads} threads, onnxruntime {ort.__version__})", "",
             f"`python benchmarks/experiments/kv_int8_attention.py --heads {h} --kv-heads {kvh} --head-dim {d} --threads {a.threads} "
             f"--depths {a.depths} --reps {a.reps}`: one GQA node, median ms per call ({a.reps} calls per type and depth, "
             f"types interleaved in blocks of 10).", "",
             "| depth | " + " | ".join(sessions) + " |", "|---:|" + "---:|" * len(sessions)]
    for depth, r in results.items():
        lines.append(f"| {depth} | " + " | ".join(f"{r[n]['ms']:.3f}" for n in sessions) + " |")
    lines += ["", "max |output − float32 output| at the deepest depth: " +
              ", ".join(f"{n} {results[depth][n]['max_abs_diff_vs_float32']:.2e}" for n in sessions)]
    if errors:
        lines += ["", "Not runnable here: " + "; ".join(f"{n}: {e}" for n, e in errors.items())]
    md = "\n".join(lines) + "\n"
    print(md)
    if a.out:
        a.out.with_suffix(".md").write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps({"results": results, "errors": errors}, indent=2))


if __name__ == "__main__":
    main()
