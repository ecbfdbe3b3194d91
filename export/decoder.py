"""The decoder graph every family shares, for onnxruntime's CPU kernels: int4 MatMulNBits,
GroupQueryAttention with fused rotary, fused RMSNorms. Family differences come from DecoderConfig hooks.

    input_ids ─ GatherBlockQuantized(int4 table) ─ [×embedding_scale] ─┐
                                                                        ▼
    ┌──────────── layer i (×L) ─────────────────────────────────────────────────────────────────┐
    │ [Skip]SimplifiedLayerNorm(input_layernorm) ─ MatMulNBits(q|k|v) [+bias]                      │
    │   [─ Split ─ per-head RMSNorm(q_norm, k_norm)] ─ GQA(rotary, KV) ─ MatMulNBits(o_proj · r)   │
    │   ─ SkipSimplifiedLayerNorm(post_attention_layernorm) ─ MatMulNBits(gate|up) ─ Split         │
    │   ─ silu(gate)·up ─ MatMulNBits(down_proj · r) ──────────────────────────────────────────────┤
    └─────────────────────────────────────────────────────────────────────────────────────────────┘
    SkipSimplifiedLayerNorm(norm / logit_divisor) ─ last `logits_to_keep` positions ─ MatMulNBits(head) ─ logits

Scales are exact: the embedding scale is a Mul after the lookup (a tied table is shared with the head,
so it cannot be folded); the residual scale r is folded into o_proj and down_proj (each branch ends in
a bias-free Linear); the logit divisor is folded into the final norm's weight (the head is bias-free).
Folding happens in float32 before quantization; hooks at their neutral value (1.0) emit nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from edge_llm.errors import ExportError
from edge_llm.manifest import KV_DTYPES, IOSpec

from .families import DecoderConfig
from .gguf_blocks import Carried, concat, dequantize_carried, scaled
from .onnx_writer import GraphBuilder
from .quant import QTensor, dequantize, pack_bits, quantize, split_6bit, unpack_bits
from .recipe import Recipe

MS = "com.microsoft"
KV_TYPES = {name: helper.np_dtype_to_tensor_dtype(np.dtype(name)) for name in KV_DTYPES}   # the manifest's, in ONNX
IO = asdict(IOSpec())   # the standard names (onnxruntime-genai's); recorded in the manifest


@dataclass(frozen=True)
class TablePlan:
    """A (V, d) table (tied embedding/head, untied head or embedding) before its values are stored."""
    name: str
    method: str
    block: int = 0                 # 0: not quantized (fp32)
    nb: int = 0
    bits: int = 0
    parts: list[tuple[str, int, list[str]]] = field(default_factory=list)   # (prefix, kernel bits, names): _part_names
    mins: str | None = None        # a carried GGUF table's per-block minimums: a float32 (V, nb) tensor


class QuantReport:
    """Per-tensor quantization error, for the export summary and the manifest."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, w: np.ndarray, q: QTensor) -> None:
        self.add_values(name, w, dequantize(q), q.block_size)

    def add_values(self, name: str, w: np.ndarray, stored: np.ndarray, block_size: int) -> None:
        err = stored - w
        rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) or 1.0
        self.rows.append({"tensor": name, "shape": list(w.shape), "block_size": block_size,
                          "max_abs_error": float(np.abs(err).max()),
                          "rel_rms_error": float(np.sqrt(np.mean(err.astype(np.float64) ** 2)) / rms)})

    def mean(self) -> float | None:
        return float(np.mean([r["rel_rms_error"] for r in self.rows])) if self.rows else None

    def worst(self) -> dict | None:
        return max(self.rows, key=lambda r: r["rel_rms_error"], default=None)


class DecoderGraph:
    def __init__(self, cfg: DecoderConfig, recipe: Recipe, g: GraphBuilder, *,
                 get: Callable[[str], np.ndarray], context_length: int | None = None, kv_dtype: str = "float32",
                 calibrator=None, importance: dict[str, np.ndarray] | None = None,
                 progress: Callable[[str], None] = lambda name: None,
                 carried: Callable[[str], Carried | None] = lambda name: None):
        self.cfg, self.recipe, self.g, self.get = cfg, recipe, g, get
        # a GGUF's quantized tensors exactly as stored (export/gguf_blocks.py); None: quantize get(name)
        self.carried = carried
        self._is_carried: dict[str, bool] = {}
        self._block_sums: dict[tuple[str, int], str] = {}
        if kv_dtype not in KV_TYPES:
            raise ValueError(f"kv dtype {kv_dtype!r}: expected one of {', '.join(KV_TYPES)}")
        self.kv_dtype = kv_dtype
        self.context_length = context_length or cfg.max_position_embeddings
        self.calibrator = calibrator
        self.importance = importance or {}     # HF weight name -> Σx² per input column (recipe.importance)
        self.progress = progress
        self.report = QuantReport()
        self._casts: dict[tuple[str, int], str] = {}      # (tensor, dtype) -> its Cast (float16-scale kernels)

    # -- weights -----------------------------------------------------------------------------
    def _quantize(self, name: str, w: np.ndarray, block: int, *, method: str, hf_name: str, bits: int = 4) -> QTensor:
        r = self.recipe
        if bits == 8:   # 8-bit: plain round to nearest, symmetric (a zero point buys nothing measurable here)
            q = quantize(w, bits=8, block_size=block, symmetric=True)
        elif method == "gptq" and bits == 4:
            from .gptq import gptq_quantize
            q = gptq_quantize(w, self.calibrator.hessian(hf_name), block_size=block, symmetric=r.symmetric,
                              clip_search=r.clip_search)
        else:
            imp = self.importance.get(hf_name) if r.importance else None
            q = quantize(w, bits=bits, block_size=block, symmetric=r.symmetric, clip_search=r.clip_search,
                         importance=imp, refine=r.refine_scale)
        self.report.add(name, w, q)
        return q

    @property
    def half_scales(self) -> bool:
        return self.recipe.scale_dtype == "float16"

    def _scales(self, name: str, q: QTensor) -> np.ndarray:
        if not self.half_scales:
            return q.scales
        if np.abs(q.scales).max(initial=0.0) > np.finfo(np.float16).max:
            raise ExportError(f"tensor '{name}': a block scale exceeds float16's range; export it with a recipe "
                              f"that keeps float32 scales")
        return q.scales.astype(np.float16)  # tiny blocks become fp16 subnormals: absolute error stays tiny

    def _cast(self, x: str, path: str, to: int) -> str:
        """Cast for the float16-scale kernels; matmuls that share an input (q|k and v apart) share its Cast."""
        if not self.half_scales:
            return x
        if (x, to) not in self._casts:
            self._casts[(x, to)] = self.g.op1("Cast", [x], path, to=to)
        return self._casts[(x, to)]

    @staticmethod
    def _part_names(name: str, bits: int, asymmetric: bool) -> list[tuple[str, int, list[str]]]:
        """How a `bits`-bit tensor is stored: (prefix, kernel bits, initializer names) per MatMulNBits /
        GatherBlockQuantized part. A 6-bit tensor is a 4-bit high part and a 2-bit low part whose outputs
        add up (quant.split_6bit); the low part always has zero points."""
        zp = [f"{name}.zero_points"] if asymmetric and bits != 8 else []
        if bits != 6:
            return [(name, bits, [f"{name}.q4", f"{name}.scales"] + zp)]
        lo = f"{name}.lo"
        return [(name, 4, [f"{name}.q4", f"{name}.scales"] + zp),
                (lo, 2, [f"{lo}.q2", f"{lo}.scales", f"{lo}.zero_points"])]

    def _store_q(self, name: str, q: QTensor) -> tuple[list[list[str]], list[int]]:
        """Writes a quantized tensor's initializers; returns (input names, kernel bits) per part."""
        parts = split_6bit(q) if q.bits == 6 else (q,)
        names = self._part_names(name, q.bits, q.zero_points is not None)
        inputs = []
        for part, (_, _, inits) in zip(parts, names):
            arrays = [part.codes, self._scales(name, part)] + ([] if part.zero_points is None else [part.zero_points])
            inputs.append([self.g.weight(n, a) for n, a in zip(inits, arrays)])
        return inputs, [bits for _, bits, _ in names]

    def linear(self, x: str, names: list[str], path: str, *, scale: float = 1.0, bias: bool = False) -> str:
        """y = x @ concat(W_names)^T [+ concat(b_names)], as one MatMulNBits (int4) or MatMul (fp32)."""
        y = self._matmul(x, names, path, scale=scale)
        if not bias:
            return y
        b = np.concatenate([self.get(n.replace(".weight", ".bias")) for n in names]).astype(np.float32)
        stored = "+".join(n.replace(".weight", ".bias") for n in names)
        return self.g.op1("Add", [y, self.g.weight(stored, b)], f"{path}/Add")

    def _carries(self, name: str) -> bool:
        if name not in self._is_carried:
            self._is_carried[name] = self.recipe.precision != "fp32" and self.carried(name) is not None
        return self._is_carried[name]

    def _carried_matmul(self, x: str, names: list[str], path: str, *, scale: float) -> str:
        """A GGUF tensor (or packed group) on MatMulNBits as stored, plus its min term where it has one:

            x ─ MatMulNBits(codes, d[, zp]) [+ the 2-bit part] ─────────────────┐
              └ Reshape(…, nb, bs) ─ ReduceSum ─ MatMul(mins^T: (nb, N)) ───────┴ Add
        """
        c = concat([self.carried(n) for n in names])
        if scale != 1.0:
            c = scaled(c, scale)
        stored = names[0] if len(names) == 1 else "+".join(names)
        for n in names:
            self.progress(n)
        w = np.concatenate([self.get(n) for n in names], axis=0) * np.float32(scale)
        self.report.add_values(stored, w, dequantize_carried(c), c.q.block_size)
        n_out, k = c.q.shape
        parts, kinds = self._store_q(stored, c.q)
        y = self._matmul_parts(self._cast(x, f"{path}/Cast", TensorProto.FLOAT16), parts, kinds, path, k=k, n=n_out,
                               block=c.q.block_size)
        y = self._cast(y, f"{path}/Cast_out", TensorProto.FLOAT)
        if c.mins is None:
            return y
        mins = self._mins_weight(f"{stored}.mins", np.ascontiguousarray(c.mins.T), path=path)   # (nb, N)
        m = self.g.op1("MatMul", [self._block_sum(x, block=c.q.block_size, k=k, path=path), mins],
                       f"{path}/mins/MatMul")
        return self.g.op1("Add", [y, m], f"{path}/mins/Add")

    def _mins_weight(self, name: str, mins: np.ndarray, *, path: str) -> str:
        """Block minimums as float32 for the graph; stored as float16 when that is exact (Q4_1/Q5_1's m is a
        float16; Q4_K's dmin·m may not be), the Cast folded by onnxruntime at load."""
        half = mins.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), mins):
            return self.g.weight(name, mins)
        return self.g.op1("Cast", [self.g.weight(name, half)], f"{path}/mins/Cast", to=TensorProto.FLOAT)

    def _block_sum(self, x: str, *, block: int, k: int, path: str) -> str:
        """(B, S, K) -> (B, S, K/block): Σ of x over each block, shared by the matmuls that read x."""
        if (x, block) not in self._block_sums:
            r = self.g.op1("Reshape", [x, self.g.const([0, 0, k // block, block])], f"{path}/block_sum/Reshape")
            self._block_sums[(x, block)] = self.g.op1("ReduceSum", [r, self.g.const([-1])],
                                                      f"{path}/block_sum/ReduceSum", keepdims=0)
        return self._block_sums[(x, block)]

    def _matmul(self, x: str, names: list[str], path: str, *, scale: float) -> str:
        if all(self._carries(n) for n in names):
            return self._carried_matmul(x, names, path, scale=scale)
        w = np.concatenate([self.get(n) for n in names], axis=0) if len(names) > 1 else self.get(names[0])
        if scale != 1.0:
            w = w * np.float32(scale)
        stored = names[0] if len(names) == 1 else "+".join(names)
        n_out, k = w.shape
        for n in names:
            self.progress(n)
        if self.recipe.precision == "fp32":
            return self.g.op1("MatMul", [x, self.g.weight(stored, np.ascontiguousarray(w.T))], f"{path}/MatMul")
        block = self.recipe.block_for(names[0], k)
        q = self._quantize(stored, w, block, method=self.recipe.method, hf_name=names[0],
                           bits=self.recipe.bits_for(names[0]))
        x = self._cast(x, f"{path}/Cast", TensorProto.FLOAT16)
        parts, kinds = self._store_q(stored, q)
        y = self._matmul_parts(x, parts, kinds, path, k=k, n=n_out, block=block)
        return self._cast(y, f"{path}/Cast_out", TensorProto.FLOAT)

    def _matmul_parts(self, x: str, parts: list[list[str]], kinds: list[int], path: str, *, k: int, n: int,
                      block: int) -> str:
        """One MatMulNBits per stored part (a 6-bit tensor: its 4-bit and 2-bit parts, summed)."""
        ys = [self.g.op1("MatMulNBits", [x] + inputs, f"{path}/MatMulNBits" + ("" if j == 0 else f"_{bits}bit"),
                         domain=MS, K=k, N=n, bits=bits, block_size=block, accuracy_level=self.recipe.accuracy_level)
              for j, (inputs, bits) in enumerate(zip(parts, kinds))]
        return ys[0] if len(ys) == 1 else self.g.op1("Add", ys, f"{path}/Add_parts")

    # -- graph ---------------------------------------------------------------------------------
    def build(self):
        cfg, g = self.cfg, self.g
        L = cfg.num_layers
        inputs = [
            helper.make_tensor_value_info(IO["input_ids"], TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info(IO["attention_mask"], TensorProto.INT64,
                                          ["batch_size", "total_sequence_length"]),
        ]
        outputs = [helper.make_tensor_value_info(IO["logits"], TensorProto.FLOAT, ["batch_size", 1, cfg.vocab_size])]
        kv_shape_in = ["batch_size", cfg.num_kv_heads, "past_sequence_length", cfg.head_dim]
        kv_shape_out = ["batch_size", cfg.num_kv_heads, "present_sequence_length", cfg.head_dim]
        for i in range(L):
            for kind in ("key", "value"):
                kv_type = KV_TYPES[self.kv_dtype]
                inputs.append(helper.make_tensor_value_info(IO[f"past_{kind}"].format(i=i), kv_type, kv_shape_in))
                outputs.append(helper.make_tensor_value_info(IO[f"present_{kind}"].format(i=i), kv_type, kv_shape_out))
        # An input with an initializer of the same name is optional: onnxruntime-genai never feeds it
        # and gets logits for the last position only; evaluation feeds a large value to get all of them.
        inputs.append(helper.make_tensor_value_info(IO["logits_to_keep"], TensorProto.INT64, [1]))
        g.initializers.append(helper.make_tensor(IO["logits_to_keep"], TensorProto.INT64, [1], [1]))

        seqlens_k, total_len = self._attention_lengths()
        rotary = {}                      # inv_freq bytes -> (cos, sin): one cache per distinct rotary base
        for i in range(L):
            inv = cfg.inv_freq(i)
            if inv.tobytes() not in rotary:
                suffix = f"_{len(rotary)}" if rotary else ""
                rotary[inv.tobytes()] = self._rotary_caches(inv, "/model/rotary" + suffix)
        head = self._head_plan()
        x = self._embedding(head)

        residual, pending = x, None      # `pending` = last branch output not yet added to the residual
        for i in range(L):
            p = f"model.layers.{i}"
            normed, residual = self._norm(pending, residual, f"{p}.input_layernorm.weight",
                                          f"/model/layers.{i}/input_layernorm")
            attn = self._branch_norm(self._attention(i, normed, seqlens_k, total_len,
                                                     *rotary[cfg.inv_freq(i).tobytes()]),
                                     f"{p}.attn_out_norm.weight", f"/model/layers.{i}/attn_out_norm")
            normed, residual = self._norm(attn, residual, f"{p}.post_attention_layernorm.weight",
                                          f"/model/layers.{i}/post_attention_layernorm")
            pending = self._branch_norm(self._mlp(i, normed), f"{p}.mlp_out_norm.weight",
                                        f"/model/layers.{i}/mlp_out_norm")
        final_w = self.get("model.norm.weight")
        if cfg.logit_divisor != 1.0:
            final_w = final_w / np.float32(cfg.logit_divisor)
        h, _ = self._norm(pending, residual, "model.norm.weight", "/model/norm", weight=final_w, need_residual=False)
        h = self._keep_last(h)
        logits = self._lm_head(h, head)
        self._store_head(head)
        g.nodes.append(helper.make_node("Identity", [logits], [IO["logits"]], name="/model/logits/Identity"))
        graph = helper.make_graph(g.nodes, cfg.family, inputs, outputs, initializer=g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)],
                                  producer_name="edge-llm")
        model.ir_version = 10
        return model

    def _attention_lengths(self):
        """GQA wants seqlens_k = total - 1 (int32, [B]) and total_sequence_length (int32 scalar)."""
        g = self.g
        mask = IO["attention_mask"]
        s = g.op1("ReduceSum", [mask, g.const([1])], "/model/attn_mask/ReduceSum", keepdims=0)
        s = g.op1("Sub", [s, g.const(1)], "/model/attn_mask/Sub")
        seqlens_k = g.op1("Cast", [s], "/model/attn_mask/seqlens_k/Cast", to=TensorProto.INT32)
        shape = g.op1("Shape", [mask], "/model/attn_mask/Shape")
        total = g.op1("Gather", [shape, g.const(1)], "/model/attn_mask/Gather", axis=0)
        total = g.op1("Cast", [total], "/model/attn_mask/total/Cast", to=TensorProto.INT32)
        return seqlens_k, total

    def _rotary_caches(self, inv_freq: np.ndarray, path: str):
        """cos/sin caches (max_pos, head_dim/2) computed in the graph from inv_freq and folded by
        onnxruntime at load: identical values to the reference's fp32 outer product, zero bytes on disk."""
        g = self.g
        inv = g.weight(f"{path}/inv_freq", inv_freq)                     # rope scaling already applied
        pos = g.op1("Range", [g.const(0.0, np.float32), g.const(float(self.context_length), np.float32),
                              g.const(1.0, np.float32)], f"{path}/Range")
        pos = g.op1("Unsqueeze", [pos, g.const([1])], f"{path}/Unsqueeze")
        freqs = g.op1("Mul", [pos, inv], f"{path}/Mul")                   # (max_pos, hd/2)
        cos, sin = g.op1("Cos", [freqs], f"{path}/Cos"), g.op1("Sin", [freqs], f"{path}/Sin")
        a = self.cfg.rope_scaling.attention_factor
        if a != 1.0:                     # longrope's attention factor scales cos and sin alike
            cos = g.op1("Mul", [cos, g.const(a, np.float32)], f"{path}/Cos/Mul")
            sin = g.op1("Mul", [sin, g.const(a, np.float32)], f"{path}/Sin/Mul")
        if self.kv_dtype == "float16":   # GQA takes cos/sin in its own (the cache's) type; folded at load too
            cos = g.op1("Cast", [cos], f"{path}/Cos/Cast", to=TensorProto.FLOAT16)
            sin = g.op1("Cast", [sin], f"{path}/Sin/Cast", to=TensorProto.FLOAT16)
        return cos, sin

    def _branch_norm(self, y: str, name: str, path: str) -> str:
        """Gemma's post-attention / post-MLP RMSNorm of a branch output, before its residual add."""
        if not self.cfg.branch_norms:
            return y
        w = self.g.weight(name, self.get(name).astype(np.float32))
        return self.g.op1("SimplifiedLayerNormalization", [y, w], f"{path}/SimplifiedLayerNorm",
                          axis=-1, epsilon=self.cfg.rms_norm_eps, stash_type=1)

    def _table_plan(self, name: str, method: str, bits: int | None = None) -> TablePlan:
        """Names and layout of a quantized (V, d) table read by MatMulNBits (head) and/or GatherBlockQuantized
        (embedding): the packed codes (V, nb, bs·bits/8) serve both as they are."""
        cfg, r = self.cfg, self.recipe
        if r.precision == "fp32":
            return TablePlan(name, method)
        if self._carries(name):
            c = self.carried(name)
            q = c.q
            mins = None if c.mins is None else self._mins_weight(f"{name}.mins", c.mins, path=f"/tables/{name}")
            return TablePlan(name, method, q.block_size, q.scales.shape[1], q.bits,
                             self._part_names(name, q.bits, q.zero_points is not None), mins=mins)
        block = r.table_block_for(name, cfg.hidden_size)
        bits = r.bits_for(name, bits)
        asym = not r.symmetric and bits != 8
        return TablePlan(name, method, block, -(-cfg.hidden_size // block), bits, self._part_names(name, bits, asym))

    def _head_plan(self) -> TablePlan:
        """The lm_head table; tied checkpoints also read their embedding from it. Its values are stored by
        _store_table after the layers, when GPTQ statistics for it exist."""
        name = "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"
        return self._table_plan(name, self.recipe.head_method, self.recipe.head_bits)

    def _store_table(self, plan: TablePlan, *, gather: bool) -> None:
        name, g = plan.name, self.g
        w = self.get(name)
        self.progress(name)
        if self.recipe.precision == "fp32":
            g.weight(name, w)
            return
        if self._carries(name):
            c = self.carried(name)
            q = c.q
            self.report.add_values(name, w, dequantize_carried(c), q.block_size)
        else:
            q = self._quantize(name, w, plan.block, method=plan.method, hf_name=name, bits=plan.bits)
        self._store_q(name, q)
        if not gather:
            return
        for part, (prefix, bits, inits) in zip(split_6bit(q) if q.bits == 6 else (q,), plan.parts):
            if part.zero_points is None:
                continue
            v, nb = part.scales.shape
            # GatherBlockQuantized's uint8 zero points pack along its own (last) block axis: one per row here
            zp = unpack_bits(part.zero_points, bits)[:, :nb].reshape(v, nb, 1)
            g.weight(f"{prefix}.embed_zero_points", pack_bits(np.pad(zp, ((0, 0), (0, 0), (0, 8 // bits - 1))), bits))

    def _store_head(self, head: TablePlan) -> None:
        self._store_table(head, gather=self.cfg.tie_word_embeddings)

    def _embedding(self, head: TablePlan) -> str:
        cfg, g = self.cfg, self.g
        ids = IO["input_ids"]
        if cfg.tie_word_embeddings:
            table = head
        else:                             # an untied embedding gets its own quantized table, stored now
            table = self._table_plan("model.embed_tokens.weight", "rtn")
            self._store_table(table, gather=True)
        if self.recipe.precision == "fp32":
            x = g.op1("Gather", [table.name, ids], "/model/embed_tokens/Gather")
        else:
            v, nb, bs = cfg.vocab_size, table.nb, table.block
            rows = []
            for j, (prefix, bits, inits) in enumerate(table.parts):
                path = "/model/embed_tokens" + ("" if j == 0 else f"/{bits}bit")
                scales = g.op1("Reshape", [inits[1], g.const([v, nb, 1])], f"{path}/scales/Reshape")
                gbq_in = [inits[0], ids, scales] + ([f"{prefix}.embed_zero_points"] if len(inits) > 2 else [])
                rows.append(g.op1("GatherBlockQuantized", gbq_in, f"{path}/GatherBlockQuantized", domain=MS,
                                  bits=bits, block_size=bs, gather_axis=0, quantize_axis=2))   # (B, S, nb, bs)
            x = rows[0] if len(rows) == 1 else g.op1("Add", rows, "/model/embed_tokens/Add_parts")
            if table.mins:     # + each block's minimum: (B, S, nb) -> (B, S, nb, 1), broadcast over the block
                x = self._cast(x, "/model/embed_tokens/Cast", TensorProto.FLOAT)
                m = g.op1("Gather", [table.mins, ids], "/model/embed_tokens/mins/Gather", axis=0)
                m = g.op1("Unsqueeze", [m, g.const([-1])], "/model/embed_tokens/mins/Unsqueeze")
                x = g.op1("Add", [x, m], "/model/embed_tokens/mins/Add")
            shape = g.op1("Concat", [g.op1("Slice", [g.op1("Shape", [ids], "/model/embed_tokens/Shape"),
                                                     g.const([0]), g.const([2])],
                                           "/model/embed_tokens/Slice"), g.const([nb * bs])],
                          "/model/embed_tokens/Concat", axis=0)
            x = g.op1("Reshape", [x, shape], "/model/embed_tokens/Reshape")
            if nb * bs != cfg.hidden_size:
                x = g.op1("Slice", [x, g.const([0]), g.const([cfg.hidden_size]), g.const([2])],
                          "/model/embed_tokens/Trim")
            if not table.mins:
                x = self._cast(x, "/model/embed_tokens/Cast", TensorProto.FLOAT)
        if cfg.embedding_scale == 1.0:
            return x
        return g.op1("Mul", [x, g.const(cfg.embedding_scale, np.float32)], "/model/embed_tokens/scale/Mul")

    def _norm(self, branch, residual, name, path, *, weight=None, need_residual=True):
        """RMSNorm of (residual + branch); returns (normed, new residual)."""
        g, eps = self.g, self.cfg.rms_norm_eps
        w = g.weight(name, (self.get(name) if weight is None else weight).astype(np.float32))
        if branch is None:
            return g.op1("SimplifiedLayerNormalization", [residual, w], f"{path}/SimplifiedLayerNorm",
                         axis=-1, epsilon=eps, stash_type=1), residual
        outs = [f"{path}/output_0", "", "", f"{path}/output_3" if need_residual else ""]
        outs = g.op("SkipSimplifiedLayerNormalization", [branch, residual, w], f"{path}/SkipLayerNorm",
                    outputs=outs, domain=MS, epsilon=eps)
        return outs[0], outs[3]

    def _attention(self, i, x, seqlens_k, total_len, cos, sin) -> str:
        cfg, g = self.cfg, self.g
        p, path = f"model.layers.{i}.self_attn", f"/model/layers.{i}/attn"
        parts = self._projections(x, [f"{p}.{n}_proj.weight" for n in "qkv"], path,
                                  [cfg.q_dim, cfg.kv_dim, cfg.kv_dim], bias=cfg.attention_bias)
        if cfg.qk_norm:
            q_k_v = self._qk_norm(p, path, parts)
        else:
            q_k_v = parts if len(parts) == 3 else [parts[0], "", ""]     # GQA takes packed q|k|v or q, k, v
        half = self.kv_dtype == "float16"
        if half:     # a float16 cache: attention runs in float16, the rest of the layer stays float32
            q_k_v = [g.op1("Cast", [t], f"{path}/{n}/Cast", to=TensorProto.FLOAT16) if t else ""
                     for t, n in zip(q_k_v, ("q", "k", "v"))]
        rotary = i not in cfg.nope_layers          # SmolLM3's no-rope layers: GQA without cos/sin
        attn = g.op("GroupQueryAttention",
                    q_k_v + [IO["past_key"].format(i=i), IO["past_value"].format(i=i), seqlens_k, total_len]
                    + ([cos, sin] if rotary else []),
                    f"{path}/GroupQueryAttention", domain=MS,
                    outputs=[f"{path}/GroupQueryAttention/output_0", IO["present_key"].format(i=i),
                             IO["present_value"].format(i=i)],
                    num_heads=cfg.num_heads, kv_num_heads=cfg.num_kv_heads, do_rotary=int(rotary), rotary_interleaved=0,
                    scale=cfg.softmax_scale, **self._window(i))[0]
        if half:
            attn = g.op1("Cast", [attn], f"{path}/GroupQueryAttention/Cast", to=TensorProto.FLOAT)
        return self.linear(attn, [f"{p}.o_proj.weight"], f"{path}/o_proj", scale=cfg.residual_scale)

    def _window(self, i: int) -> dict:
        """GQA's local_window_size counts the keys a query sees, its own included (as transformers' window)."""
        w = self.cfg.window(i)
        return {} if w is None else {"local_window_size": w}

    def _projections(self, x: str, names: list[str], path: str, dims: list[int], *, bias: bool = False) -> list[str]:
        """Linears that share an input: one packed matmul ([y]) when the recipe quantizes them alike, else one
        per run of alike neighbours, split back per name (e.g. q|k packed, v_proj 8-bit apart: [q, k, v])."""
        r, k = self.recipe, self.cfg.hidden_size          # every caller's input is the hidden state
        key = lambda n: None if r.precision == "fp32" else (r.bits_for(n), r.block_for(n, k), self._carries(n))
        runs: list[list[int]] = []
        for j, n in enumerate(names):
            if runs and key(names[runs[-1][0]]) == key(n):
                runs[-1].append(j)
            else:
                runs.append([j])

        def sub(js):      # path names: qkv_proj, qk_proj, v_proj, gate_up_proj, gate_proj ...
            short = [names[j].rsplit(".", 2)[-2].removesuffix("_proj") for j in js]
            return ("" if all(len(t) == 1 for t in short) else "_").join(short)
        if len(runs) == 1:
            return [self.linear(x, names, f"{path}/{sub(runs[0])}_proj", bias=bias)]
        out = []
        for js in runs:
            y = self.linear(x, [names[j] for j in js], f"{path}/{sub(js)}_proj", bias=bias)
            out += [y] if len(js) == 1 else self.g.op("Split", [y, self.g.const([dims[j] for j in js])],
                                                      f"{path}/{sub(js)}/Split", outputs=len(js), axis=-1)
        return out

    def _qk_norm(self, p: str, path: str, parts: list[str]) -> list[str]:
        """Split packed q|k|v (B, S, (H+2KV)·hd); RMSNorm each head of q and k over hd; GQA takes them apart.
        `parts` is [qkv] (packed) or [q, k, v] (quantized apart).

            qkv ─ Split ─ q ─ Reshape(B,S,H,hd) ─ SimplifiedLayerNorm(q_norm) ─ Reshape(B,S,H·hd) ─┐
                        ├ k ─ (the same with k_norm, KV heads) ───────────────────────────────────┤ GQA
                        └ v ──────────────────────────────────────────────────────────────────────┘
        """
        cfg, g = self.cfg, self.g
        if len(parts) == 1:
            q, k, v = g.op("Split", [parts[0], g.const([cfg.q_dim, cfg.kv_dim, cfg.kv_dim])], f"{path}/qkv/Split",
                           outputs=3, axis=-1)
        else:
            q, k, v = parts
        out = []
        for name, t, heads in (("q_norm", q, cfg.num_heads), ("k_norm", k, cfg.num_kv_heads)):
            t = g.op1("Reshape", [t, g.const([0, 0, heads, cfg.head_dim])], f"{path}/{name}/Reshape")
            w = g.weight(f"{p}.{name}.weight", self.get(f"{p}.{name}.weight").astype(np.float32))
            t = g.op1("SimplifiedLayerNormalization", [t, w], f"{path}/{name}/SimplifiedLayerNorm",
                      axis=-1, epsilon=cfg.rms_norm_eps, stash_type=1)
            out.append(g.op1("Reshape", [t, g.const([0, 0, heads * cfg.head_dim])], f"{path}/{name}/Reshape_out"))
        return out + [v]

    def _mlp(self, i, x) -> str:
        cfg, g = self.cfg, self.g
        p, path = f"model.layers.{i}.mlp", f"/model/layers.{i}/mlp"
        ff = cfg.intermediate_size
        parts = self._projections(x, [f"{p}.gate_proj.weight", f"{p}.up_proj.weight"], path, [ff, ff])
        gate, up = parts if len(parts) == 2 else g.op("Split", [parts[0], g.const([ff, ff])], f"{path}/Split",
                                                        outputs=2, axis=-1)
        if cfg.hidden_act == "gelu_tanh":
            act = g.op1("Gelu", [gate], f"{path}/act/Gelu", approximate="tanh")
        else:
            act = g.op1("Mul", [gate, g.op1("Sigmoid", [gate], f"{path}/act/Sigmoid")], f"{path}/act/Mul")
        h = g.op1("Mul", [act, up], f"{path}/Mul")
        return self.linear(h, [f"{p}.down_proj.weight"], f"{path}/down_proj", scale=cfg.residual_scale)

    def _keep_last(self, h: str) -> str:
        """h[:, -logits_to_keep:, :] so prefill never materialises (T, vocab) logits."""
        g = self.g
        start = g.op1("Neg", [IO["logits_to_keep"]], "/model/logits_to_keep/Neg")
        return g.op1("Slice", [h, start, g.const([np.iinfo(np.int64).max]), g.const([1])],
                     "/model/logits_to_keep/Slice")

    def _lm_head(self, h: str, head) -> str:
        cfg, g = self.cfg, self.g
        if self.recipe.precision == "fp32":
            wt = g.op1("Transpose", [head.name], "/lm_head/Transpose", perm=[1, 0])
            return g.op1("MatMul", [h, wt], "/lm_head/MatMul")
        h32, h = h, self._cast(h, "/lm_head/Cast", TensorProto.FLOAT16)
        y = self._matmul_parts(h, [inits for _, _, inits in head.parts], [b for _, b, _ in head.parts], "/lm_head",
                               k=cfg.hidden_size, n=cfg.vocab_size, block=head.block)
        y = self._cast(y, "/lm_head/Cast_out", TensorProto.FLOAT)
        if head.mins:
            mins = g.op1("Transpose", [head.mins], "/lm_head/mins/Transpose", perm=[1, 0])   # (nb, V)
            m = g.op1("MatMul", [self._block_sum(h32, block=head.block, k=cfg.hidden_size, path="/lm_head"), mins],
                      "/lm_head/mins/MatMul")
            y = g.op1("Add", [y, m], "/lm_head/mins/Add")
        return y
