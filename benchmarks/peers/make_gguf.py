#!/usr/bin/env python3
"""Write a 4-bit (Q4_0) GGUF of the exact MiniCPM-2B shape, with random weights, for llama.cpp.

Peer-benchmark input only: the weights are random, so only speed means anything.  The file is
written directly with the ``gguf`` package (numpy only: no torch, no f16 intermediate GGUF), one
tensor at a time, so peak memory stays near one tensor (~0.5 GB for token_embd) instead of the
~11 GB a float32 copy of all 2.7 B parameters would need.

What is written, and how it relates to llama.cpp's own ``convert_hf_to_gguf.py`` + ``llama-quantize
Q4_0`` (the path peers.md measured):

* arch ``minicpm``: block_count 40, context_length 2048, embedding_length 2304,
  feed_forward_length 5760, head_count 36, head_count_kv 36, rms eps 1e-5, and the muP trio as
  metadata (``embedding_scale`` 12, ``residual_scale`` 1.4/sqrt(40), ``logit_scale`` 2304/256 = 9;
  minicpm.md section 5.1).  No rope keys (the converter writes none for MiniCPM-2B either:
  n_rot = 64 and freq_base = 10000 are llama.cpp's defaults).
* tied head: no ``output.weight``; llama.cpp creates ``output`` from ``token_embd``
  (TENSOR_DUPLICATED).
* tensor types = llama-quantize's default Q4_0 mix: every 2-D matrix Q4_0, ``token_embd`` Q6_K
  (it also serves as the output matrix), 1-D norms F32.  gguf-py 0.19 can quantize Q4_0 (bit-exact
  with ggml's reference) but has no Q6_K quantizer, so Q6_K is done here in numpy with ggml's
  ``quantize_row_q6_K_ref`` scheme minus its rmse search (``make_qx_quants`` refinement); the
  layout is checked against gguf-py's Q6_K dequantizer.  ``--embd-type Q4_0`` gives the
  ``--pure`` variant, ``Q8_0`` is also accepted.
* tokenizer: the real MiniCPM-2B sentencepiece model (122,753 pieces = vocab size), written as
  ``tokenizer.ggml.model = "llama"`` with tokens/scores/types, bos 1, eos 2, unk 0,
  add_bos true, add_eos false, and the chat template.  Piece types come from the model proto
  (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6), cross-checked against the
  sentencepiece API.  Differences from the converter, none of which matter when token ids are fed
  directly (as both benchmark harnesses do): the converter marks the 1,086 user-defined pieces
  (ids 3-1088) NORMAL and ``<unk>`` CONTROL (from tokenizer_config's added_tokens_decoder).

Usage (inside the peers venv, which has numpy, gguf==0.19.0, sentencepiece):
    ~/.cache/edge-llm-peers/venv/bin/python benchmarks/peers/make_gguf.py \
        [--out scratch/gguf/minicpm2b-shape-Q4_0.gguf] [--embd-type Q6_K] [--seed 0] [--verify]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "scratch" / "gguf" / "minicpm2b-shape-Q4_0.gguf"
DEFAULT_TOKENIZER_DIR = REPO / "edge_llm" / "data" / "minicpm-2b-tokenizer"   # shipped with edge-llm

# MiniCPM-2B-sft config.json (minicpm.md section 1)
MINICPM_2B = dict(
    vocab_size=122753, hidden_size=2304, num_hidden_layers=40, num_attention_heads=36,
    num_key_value_heads=36, intermediate_size=5760, max_position_embeddings=2048,
    rms_norm_eps=1e-5, scale_emb=12.0, scale_depth=1.4, dim_model_base=256,
    bos_token_id=1, eos_token_id=2,
)

# SentencePiece ModelProto.SentencePiece.Type == llama.cpp / gguf TokenType values
SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED, SPM_UNUSED, SPM_BYTE = 1, 2, 3, 4, 5, 6

QK_K = 256


# ----------------------------------------------------------------------------------- tokenizer
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _skip(buf: bytes, i: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, i)[1]
    if wire == 1:
        return i + 8
    if wire == 2:
        n, i = _varint(buf, i)
        return i + n
    if wire == 5:
        return i + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def read_spm_pieces(path: Path) -> list[tuple[bytes, float, int]]:
    """(piece, score, type) for every piece of a sentencepiece ModelProto, without protobuf.

    ModelProto field 1 = repeated SentencePiece {1: piece (string), 2: score (float),
    3: type (enum, default NORMAL)}.  The Python sentencepiece API has no is_user_defined(),
    which is why the proto is read directly.
    """
    buf = Path(path).read_bytes()
    pieces: list[tuple[bytes, float, int]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            n, i = _varint(buf, i)
            end = i + n
            piece, score, ptype = b"", 0.0, SPM_NORMAL
            while i < end:
                k, i = _varint(buf, i)
                f, w = k >> 3, k & 7
                if f == 1 and w == 2:
                    m, i = _varint(buf, i)
                    piece = buf[i:i + m]
                    i += m
                elif f == 2 and w == 5:
                    score = struct.unpack_from("<f", buf, i)[0]
                    i += 4
                elif f == 3 and w == 0:
                    ptype, i = _varint(buf, i)
                else:
                    i = _skip(buf, i, w)
            pieces.append((piece, score, ptype))
        else:
            i = _skip(buf, i, wire)
    return pieces


def load_vocab(tokenizer_model: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromFile(str(tokenizer_model))
    n = sp.get_piece_size()
    proto = read_spm_pieces(tokenizer_model)
    if len(proto) != n:
        raise RuntimeError(f"proto has {len(proto)} pieces, sentencepiece says {n}")
    if n > vocab_size:
        raise RuntimeError(f"tokenizer has {n} pieces > vocab_size {vocab_size}")

    # same padding rule as convert_hf_to_gguf's _create_vocab_sentencepiece (no-op for MiniCPM-2B)
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [SPM_UNUSED] * vocab_size
    for tid in range(n):
        piece = sp.id_to_piece(tid)
        if sp.is_unknown(tid):
            t = SPM_UNKNOWN
        elif sp.is_control(tid):
            t = SPM_CONTROL
        elif sp.is_unused(tid):
            t = SPM_UNUSED
        elif sp.is_byte(tid):
            t = SPM_BYTE
        elif proto[tid][2] == SPM_USER_DEFINED:
            t = SPM_USER_DEFINED
        else:
            t = SPM_NORMAL
        # cross-check the hand-rolled proto reader against the sentencepiece API
        if proto[tid][0] != piece.encode("utf-8") or proto[tid][2] != t:
            raise RuntimeError(f"piece {tid}: proto {proto[tid]!r} vs sentencepiece {piece!r}/{t}")
        tokens[tid] = piece.encode("utf-8")
        scores[tid] = float(sp.get_score(tid))
        types[tid] = t
    return tokens, scores, types


# ---------------------------------------------------------------------------------- quantizers
def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """ggml block_q6_K (210 B per 256 weights: ql[128], qh[64], int8 scales[16], fp16 d).

    Scheme of ggml's quantize_row_q6_K_ref: per 16-weight sub-block a signed scale that maps the
    largest-magnitude weight to -32, an fp16 super-scale d = max_scale/-128 and int8 sub-scales,
    then q = clamp(round(x / (d*sc)), -32, 31) + 32.  (ggml additionally refines each sub-scale by
    an rmse search; that changes values slightly, not the format or the speed.)
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    assert x.shape[-1] % QK_K == 0, x.shape
    out_shape = (*x.shape[:-1], x.shape[-1] // QK_K * 210)
    nb = x.size // QK_K
    b = x.reshape(nb, 16, 16)

    imax = np.abs(b).argmax(axis=-1)[..., None]
    sub_max = np.take_along_axis(b, imax, axis=-1)[..., 0]           # (nb, 16) signed
    sub_scale = sub_max / np.float32(-32.0)
    j = np.abs(sub_scale).argmax(axis=-1)[:, None]
    max_scale = np.take_along_axis(sub_scale, j, axis=-1)              # (nb, 1) signed
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(max_scale == 0, 0, np.float32(-128.0) / max_scale).astype(np.float32)
        d = np.where(iscale == 0, 0, 1.0 / iscale).astype(np.float16)  # (nb, 1)
    sc = np.minimum(127, np.round(iscale * sub_scale)).astype(np.int8)  # (nb, 16)
    dd = d.astype(np.float32) * sc.astype(np.float32)                  # (nb, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(dd[..., None] == 0, 0, np.round(b / dd[..., None]))
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(nb, QK_K)

    lo = (q & 0x0F).reshape(nb, 2, 2, 64)
    ql = (lo[:, :, 0, :] | (lo[:, :, 1, :] << 4)).reshape(nb, 128)
    hi = (q >> 4).reshape(nb, 2, 4, 32)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8)], axis=-1)
    return blocks.reshape(out_shape)


def quantize(x: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype == QT.F32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if qtype == QT.Q6_K:
        return quantize_q6_k(x)
    return gguf.quants.quantize(np.ascontiguousarray(x, dtype=np.float32), qtype)


def byte_shape(shape: tuple[int, ...], qtype: QT) -> tuple[int, ...]:
    if qtype == QT.F32:
        return shape
    return tuple(gguf.quant_shape_to_byte_shape(shape, qtype))


# ------------------------------------------------------------------------------------- writer
def tensor_plan(cfg: dict, embd_type: QT, mat_type: QT) -> list[tuple[str, tuple[int, ...], QT]]:
    """(gguf name, numpy shape [rows=out, cols=in], type), in the converter's per-layer order."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    kv = hd * cfg["num_key_value_heads"]
    plan = [("token_embd.weight", (v, d), embd_type)]
    for i in range(cfg["num_hidden_layers"]):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (d,), QT.F32),
            (p + "attn_q.weight", (d, d), mat_type),
            (p + "attn_k.weight", (kv, d), mat_type),
            (p + "attn_v.weight", (kv, d), mat_type),
            (p + "attn_output.weight", (d, d), mat_type),
            (p + "ffn_norm.weight", (d,), QT.F32),
            (p + "ffn_gate.weight", (f, d), mat_type),
            (p + "ffn_up.weight", (f, d), mat_type),
            (p + "ffn_down.weight", (d, f), mat_type),
        ]
    plan.append(("output_norm.weight", (d,), QT.F32))
    return plan


def hf_tensor(ckpt, cfg: dict, gguf_name: str) -> np.ndarray:
    """The checkpoint's tensor for a GGUF name (the importer's own name map, hf_name), q/k rows permuted
    as conversion/minicpm.py (LlamaModel.permute) does: per head, rotate-half pairs interleaved."""
    from edge_llm.export.gguf_import import hf_name
    w = ckpt.load(hf_name(gguf_name))
    if gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = cfg["num_attention_heads"] if "attn_q" in gguf_name else cfg["num_key_value_heads"]
        w = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return w


def make_tensor(shape: tuple[int, ...], qtype: QT, rng: np.random.Generator, std: float,
                chunk_elems: int = 1 << 24, source: np.ndarray | None = None) -> np.ndarray:
    """Random N(0, std^2) weights (norm weights = 1), or `source`'s, quantized in row chunks of ~16M weights."""
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32) if source is None else np.asarray(source, np.float32)
    rows, cols = shape
    out = np.empty(byte_shape(shape, qtype), dtype=np.uint8)
    step = max(1, chunk_elems // cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        if source is None:
            w = rng.standard_normal((r1 - r0, cols), dtype=np.float32)
            w *= np.float32(std)
        else:
            w = np.asarray(source[r0:r1], np.float32)
        out[r0:r1] = quantize(w, qtype)
    return out


def write_gguf(out: Path, tokenizer_dir: Path, *, embd_type: QT = QT.Q6_K, mat_type: QT = QT.Q4_0,
               seed: int = 0, std: float = 0.02, n_layers: int | None = None, log=print, checkpoint=None) -> Path:
    """`checkpoint` (an opened HF MiniCPM checkpoint, export/checkpoint.py): its config and weights instead of
    the 2B shape's random ones; a matrix whose rows are not a multiple of 256 gets Q8_0 where Q6_K is asked
    for, as llama-quantize's fallback does."""
    cfg = dict(MINICPM_2B) if checkpoint is None else {**MINICPM_2B, **checkpoint.config}
    if n_layers is not None:
        cfg["num_hidden_layers"] = n_layers
    L = cfg["num_hidden_layers"]
    tokens, scores, types = load_vocab(tokenizer_dir / "tokenizer.model", cfg["vocab_size"])
    chat_template = None
    tc = tokenizer_dir / "tokenizer_config.json"
    if tc.is_file():
        chat_template = json.loads(tc.read_text()).get("chat_template")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(tmp, "minicpm")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"MiniCPM-2B shape, random weights ({mat_type.name}, token_embd {embd_type.name})" if checkpoint is None
               else f"{Path(checkpoint.path).name} ({mat_type.name}, token_embd {embd_type.name})")
    w.add_block_count(L)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    ftype = {QT.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0, QT.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
             QT.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K}[mat_type]
    w.add_file_type(ftype)
    # muP trio, exactly as conversion/minicpm.py computes it from config.json
    w.add_embedding_scale(float(cfg["scale_emb"]))
    w.add_residual_scale(cfg["scale_depth"] / L ** 0.5)
    w.add_logit_scale(cfg["hidden_size"] / cfg["dim_model_base"])
    # tokenizer (as _set_vocab_sentencepiece + SpecialVocab would write it)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    plan = tensor_plan(cfg, embd_type, mat_type)
    plan = [(n, s, QT.Q8_0 if qt == QT.Q6_K and s[-1] % QK_K else qt) for n, s, qt in plan]
    for name, shape, qt in plan:
        bshape = byte_shape(shape, qt)
        dtype = np.float32 if qt == QT.F32 else np.uint8
        nbytes = int(np.prod(bshape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, bshape, np.dtype(dtype), nbytes, raw_dtype=None if qt == QT.F32 else qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    t0 = time.perf_counter()
    ss = np.random.SeedSequence(seed)
    for k, ((name, shape, qt), child) in enumerate(zip(plan, ss.spawn(len(plan)))):
        src = None if checkpoint is None else hf_tensor(checkpoint, cfg, name)
        arr = make_tensor(shape, qt, np.random.default_rng(child), std, source=src)
        w.write_tensor_data(arr)
        if len(shape) == 2 and (k < 3 or name.endswith("ffn_down.weight")):
            log(f"  [{time.perf_counter() - t0:7.1f} s] {name} {shape} {qt.name}")
    w.close()
    os.replace(tmp, out)
    log(f"wrote {out} ({out.stat().st_size:,} B) in {time.perf_counter() - t0:.1f} s")
    return out


def summarize(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    by_type: dict[str, dict] = {}
    for t in r.tensors:
        e = by_type.setdefault(t.tensor_type.name, {"tensors": 0, "params": 0, "bytes": 0})
        e["tensors"] += 1
        e["params"] += int(t.n_elements)
        e["bytes"] += int(t.n_bytes)
    kv = {}
    for key in ("general.architecture", "minicpm.block_count", "minicpm.embedding_length",
                "minicpm.feed_forward_length", "minicpm.attention.head_count",
                "minicpm.attention.head_count_kv", "minicpm.context_length",
                "minicpm.embedding_scale", "minicpm.residual_scale", "minicpm.logit_scale",
                "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"):
        f = r.fields.get(key)
        if f is not None:
            kv[key] = f.contents()
    f = r.fields.get("tokenizer.ggml.token_type")
    if f is not None:
        tt = np.asarray(f.contents())
        kv["token_type_counts"] = {int(k): int(c) for k, c in zip(*np.unique(tt, return_counts=True))}
    kv["n_tokens"] = len(r.fields["tokenizer.ggml.tokens"].data)
    return {"path": str(path), "size_bytes": path.stat().st_size, "n_tensors": len(r.tensors),
            "has_output_tensor": any(t.name == "output.weight" for t in r.tensors),
            "tensor_types": by_type, "metadata": kv}


def verify_load(path: Path, n_tokens: int = 8, threads: int = 2) -> dict:
    """Load with llama-cpp-python and greedily generate a few tokens from fed ids."""
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:
        # Llama.eval() no longer copies logits into llm.scores unless logits_all=True (0.3.x),
        # so read llama.cpp's output buffer for the last token directly.
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    prompt = [1] + list(range(1345, 1345 + 15))
    t0 = time.perf_counter()
    llm.eval(prompt)
    out = []
    for _ in range(n_tokens):
        logits = last_logits()
        if not np.isfinite(logits).all() or not logits.any():
            raise RuntimeError("non-finite logits")
        tok = int(np.argmax(logits))
        out.append(tok)
        llm.eval([tok])
    gen_s = time.perf_counter() - t0
    res = {"load_s": round(load_s, 2), "prompt_len": len(prompt), "generated": out,
           "eval_s": round(gen_s, 2), "n_vocab": n_vocab, "n_ctx": llm.n_ctx(),
           "last_logits_std": float(np.std(last_logits()))}
    llm.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--tokenizer-dir", type=Path, default=DEFAULT_TOKENIZER_DIR,
                    help="dir with tokenizer.model (+ tokenizer_config.json for the chat template)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="a MiniCPM HF folder (e.g. ../shared/fixtures/minicpm-tiny): its weights, config and "
                         "tokenizer instead of the 2B shape's random ones (needs edge-llm importable)")
    ap.add_argument("--mat-type", choices=["Q4_0", "Q8_0", "Q6_K"], default="Q4_0", help="the matrices' type")
    ap.add_argument("--embd-type", choices=["Q6_K", "Q8_0", "Q4_0"], default="Q6_K",
                    help="token_embd (= tied output) type; Q6_K is llama-quantize's default Q4_0 mix, "
                         "Q4_0 is its --pure variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="std of the random weights")
    ap.add_argument("--layers", type=int, default=None, help="override layer count (tests only)")
    ap.add_argument("--force", action="store_true", help="rewrite even if --out exists")
    ap.add_argument("--verify", action="store_true",
                    help="load it with llama_cpp and generate a few tokens (needs llama-cpp-python)")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    a = ap.parse_args(argv)

    if a.out.exists() and not a.force:
        print(f"{a.out} exists ({a.out.stat().st_size:,} B); --force to rewrite", file=sys.stderr)
    else:
        ckpt = None
        if a.checkpoint:
            from edge_llm.export.checkpoint import open_checkpoint
            ckpt = open_checkpoint(a.checkpoint)
        write_gguf(a.out, a.checkpoint or a.tokenizer_dir, embd_type=QT[a.embd_type], mat_type=QT[a.mat_type],
                   seed=a.seed, std=a.std, n_layers=a.layers, checkpoint=ckpt)
    summary = summarize(a.out)
    if a.verify:
        summary["verify"] = verify_load(a.out)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
