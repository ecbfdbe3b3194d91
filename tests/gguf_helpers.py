"""Tiny GGUF files written with gguf's own writer, for the GGUF import tests (no network, no ../shared).

Block bytes come from gguf.quants' numpy quantizers where it has one (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and
are drawn at random otherwise (Q4_K, Q5_K, Q6_K: any bytes are a valid block once d and dmin are sane).
q/k rows are permuted as convert_hf_to_gguf.py does for llama-family architectures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HIDDEN, HEADS, KV_HEADS, FF, LAYERS = 256, 4, 2, 512, 2
HEAD_DIM = HIDDEN // HEADS
CHATML = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")
D_OFFSETS = {"Q6_K": [(208, 1e-4)], "Q3_K": [(108, 1e-3)], "Q4_K": [(0, 2e-3), (2, 2e-3)], "Q5_K": [(0, 1e-3), (2, 2e-3)]}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def block_bytes(rng, qtype: str, *, rows: int, k: int, scale: float = 0.05) -> np.ndarray:
    """(rows, row bytes) uint8 of a `qtype` tensor of (rows, k) values."""
    import gguf
    from gguf.quants import quantize
    t = getattr(gguf.GGMLQuantizationType, qtype)
    if qtype in D_OFFSETS:
        per, size = gguf.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, (rows, k // per, size), dtype=np.uint8)
        for off, mag in D_OFFSETS[qtype]:
            d = (rng.uniform(0.5, 1.5, (rows, k // per)) * mag * scale / 0.05).astype(np.float16)
            raw[..., off:off + 2] = d.view(np.uint8).reshape(rows, k // per, 2)
        return raw.reshape(rows, -1)
    w = (rng.standard_normal((rows, k)) * scale).astype(np.float32)
    if qtype == "F32":
        return w
    if qtype == "F16":
        return w.astype(np.float16)
    return quantize(w, t)


@dataclass
class TinyGguf:
    arch: str = "llama"
    types: dict = field(default_factory=dict)   # GGUF short name ("attn_q", "token_embd", "output") -> type
    default: str = "Q4_0"
    tokenizer: str = "gpt2"
    tied: bool = True
    seed: int = 0


def gpt2_vocab():
    from tokenizers import pre_tokenizers
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "a n", "2 0"]     # "20" never forms where digits are split
    tokens = chars + [m.replace(" ", "") for m in merges] + ["<|im_start|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, types, merges


def spm_vocab(tmp: Path):
    """A small sentencepiece BPE model trained here, as llama.cpp's converter reads it into GGUF fields."""
    import sentencepiece as spm
    text = ["the quick brown fox jumps over the lazy dog", "hello world, hello there", "in the beginning",
            "numbers 12345 and 67890", "the theme of the thesis", "another line with other words"] * 20
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(tmp / "sp"), vocab_size=320,
                                   model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2, hard_vocab_limit=False,
                                   remove_extra_whitespaces=False)   # as Llama's own tokenizer.model
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "sp.model"))
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [float(sp.get_score(i)) for i in range(sp.get_piece_size())]
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
             for i in range(sp.get_piece_size())]
    return sp, tokens, scores, types


def write_tiny(path: Path, spec: TinyGguf, *, skip_keys: tuple[str, ...] = (), split_max_tensors: int = 0) -> Path:
    """A two-layer model of `spec.arch` whose tensors have the GGUF types `spec.types` asks for (split into
    `STEM-0000i-of-0000N.gguf` parts of at most `split_max_tensors` tensors when given; returns the first)."""
    import gguf
    rng = np.random.default_rng(spec.seed)
    w = gguf.GGUFWriter(str(path), spec.arch, split_max_tensors=split_max_tensors)
    keys = []

    def kv(name, fn, *a):
        if name not in skip_keys:
            keys.append(name)
            fn(*a)
    if spec.tokenizer == "gpt2":
        tokens, types, merges = gpt2_vocab()
        kv("tokenizer.ggml.model", w.add_tokenizer_model, "gpt2")
        w.add_tokenizer_pre("smollm")
        kv("tokenizer.ggml.merges", w.add_token_merges, merges)
        bos, eos = tokens.index("<|im_start|>"), tokens.index("<|im_end|>")
        w.add_add_bos_token(False)
    else:
        _, tokens, scores, types = spm_vocab(path.parent)
        kv("tokenizer.ggml.model", w.add_tokenizer_model, "llama")
        w.add_token_scores(scores)
        bos, eos = 1, 2
        w.add_add_bos_token(True)
    kv("tokenizer.ggml.tokens", w.add_token_list, tokens)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_chat_template(CHATML)
    vocab = len(tokens)
    w.add_block_count(LAYERS)
    w.add_context_length(256)
    kv("embedding_length", w.add_embedding_length, HIDDEN)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HEAD_DIM)
    if spec.arch in ("qwen3", "gemma3"):
        w.add_key_length(HEAD_DIM)
    if spec.arch == "gemma3":
        w.add_sliding_window(8)      # below the tests' 24 tokens: the window is exercised
    if spec.arch == "minicpm":
        w.add_embedding_scale(12.0)
        w.add_residual_scale(1.4 / LAYERS ** 0.5)
        w.add_logit_scale(HIDDEN / 64)
    permuted = spec.arch in ("llama", "minicpm")

    def tensor(name, short, rows, k, *, scale=0.05, heads=None):
        qtype = spec.types.get(short, spec.default)
        raw = block_bytes(rng, qtype, rows=rows, k=k, scale=scale)
        if permuted and heads:
            raw = permute(raw, heads)
        raw_dtype = None if qtype in ("F32", "F16") else getattr(gguf.GGMLQuantizationType, qtype)
        w.add_tensor(name, raw, raw_dtype=raw_dtype)

    def norm(name, n):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))
    tensor("token_embd.weight", "token_embd", vocab, HIDDEN, scale=0.5)
    norm("output_norm.weight", HIDDEN)
    if not spec.tied:
        tensor("output.weight", "output", vocab, HIDDEN, scale=0.2)
    for i in range(LAYERS):
        p = f"blk.{i}"
        norm(f"{p}.attn_norm.weight", HIDDEN)
        norm(f"{p}.ffn_norm.weight", HIDDEN)
        tensor(f"{p}.attn_q.weight", "attn_q", HIDDEN, HIDDEN, heads=HEADS)
        tensor(f"{p}.attn_k.weight", "attn_k", KV_HEADS * HEAD_DIM, HIDDEN, heads=KV_HEADS)
        tensor(f"{p}.attn_v.weight", "attn_v", KV_HEADS * HEAD_DIM, HIDDEN)
        tensor(f"{p}.attn_output.weight", "attn_output", HIDDEN, HIDDEN)
        tensor(f"{p}.ffn_gate.weight", "ffn_gate", FF, HIDDEN)
        tensor(f"{p}.ffn_up.weight", "ffn_up", FF, HIDDEN)
        tensor(f"{p}.ffn_down.weight", "ffn_down", HIDDEN, FF)
        if spec.arch == "qwen2":
            for n, rows in (("attn_q", HIDDEN), ("attn_k", KV_HEADS * HEAD_DIM), ("attn_v", KV_HEADS * HEAD_DIM)):
                w.add_tensor(f"{p}.{n}.bias", (0.1 * rng.standard_normal(rows)).astype(np.float32))
        if spec.arch in ("qwen3", "gemma3"):
            norm(f"{p}.attn_q_norm.weight", HEAD_DIM)
            norm(f"{p}.attn_k_norm.weight", HEAD_DIM)
        if spec.arch == "gemma3":
            norm(f"{p}.post_attention_norm.weight", HIDDEN)
            norm(f"{p}.post_ffw_norm.weight", HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    parts = sorted(path.parent.glob(f"{path.stem}-0*-of-*.gguf"))
    return parts[0] if split_max_tensors and parts else path
