"""tokenizer.ggml.* -> tokenizer.json (Hugging Face `tokenizers`) + tokenizer_config.json.

Two vocabulary kinds, as llama.cpp reads them:
- "gpt2": byte-level BPE with merges; the pre-tokenizer is the regex that `tokenizer.ggml.pre` names in
  llama.cpp (llama-vocab.cpp), applied before the byte-level mapping.
- "llama": sentencepiece BPE (tokens, scores, token types, <0xNN> byte pieces): a BPE whose merges are
  ranked by the merged piece's score (sentencepiece's own priority, as transformers' GGUF loader does),
  byte fallback, "▁" for spaces and a leading "▁" when `tokenizer.ggml.add_space_prefix`.
Token types (GGUF): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
"""
from __future__ import annotations

import json
from pathlib import Path

from edge_llm.errors import CheckpointError

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the regexes llama.cpp splits with, in order (llama-vocab.cpp)
PRE_TOKENIZERS = {
    "default": [GPT2_REGEX], "gpt-2": [GPT2_REGEX],
    "smollm": [r"\p{N}", GPT2_REGEX], "starcoder": [r"\p{N}", GPT2_REGEX], "refact": [r"\p{N}", GPT2_REGEX],
    "llama3": [LLAMA3_REGEX], "llama-v3": [LLAMA3_REGEX], "llama-bpe": [LLAMA3_REGEX], "smaug-bpe": [LLAMA3_REGEX],
    "qwen2": [QWEN2_REGEX], "deepseek-r1-qwen": [QWEN2_REGEX],
}


def _need(meta: dict, key: str, source: Path):
    if key not in meta:
        raise CheckpointError(f"{source}: tokenizer metadata key '{key}' is missing")
    return meta[key]


def _added_tokens(tk, tokens: list[str], types: list[int]) -> list[str]:
    """Control and unknown pieces become special tokens, user-defined ones plain added tokens."""
    from tokenizers import AddedToken
    special = [tokens[i] for i, t in enumerate(types) if t in (2, 3)]
    user = [tokens[i] for i, t in enumerate(types) if t == 4]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if user:
        tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    return special


def _bos_post_processor(bos: str | None, bos_id: int | None, *, add_bos: bool, fallback):
    from tokenizers import processors
    if add_bos and bos is not None:
        return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                             special_tokens=[(bos, bos_id)])
    return fallback


def gpt2_tokenizer(meta: dict, source: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    tokens = list(_need(meta, "tokenizer.ggml.tokens", source))
    merges = [tuple(m.split(" ", 1)) for m in _need(meta, "tokenizer.ggml.merges", source)]
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise CheckpointError(f"{source}: tokenizer.ggml.pre '{pre}' is not supported; supported: "
                              f"{', '.join(sorted(PRE_TOKENIZERS))}")
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                              byte_fallback=False))
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_TOKENIZERS[pre]]
    tk.pre_tokenizer = pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                  use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    return tk, tokens, processors.ByteLevel(trim_offsets=False)


def _score_merges(tokens: list[str], scores: list[float], *, usable: set[str]) -> list[tuple[str, str]]:
    """Every split of a piece into two vocabulary pieces, ranked by the piece's score (higher first)."""
    rank = {t: i for i, t in enumerate(tokens)}
    found = []
    for piece in usable:
        for j in range(1, len(piece)):
            a, b = piece[:j], piece[j:]
            if a in usable and b in usable:
                found.append((-scores[rank[piece]], rank[a], rank[b], a, b))
    found.sort()
    return [(a, b) for _, _, _, a, b in found]


def llama_tokenizer(meta: dict, source: Path):
    from tokenizers import Tokenizer, decoders, models, normalizers
    tokens = list(_need(meta, "tokenizer.ggml.tokens", source))
    scores = [float(s) for s in _need(meta, "tokenizer.ggml.scores", source)]
    types = list(_need(meta, "tokenizer.ggml.token_type", source))
    usable = {t for t, ty in zip(tokens, types) if ty in (1, 4)}        # normal and user pieces merge
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                              merges=_score_merges(tokens, scores, usable=usable),
                              unk_token=unk, fuse_unk=True, byte_fallback=True))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # llama.cpp puts the space prefix before every text fragment after a special token (and the first one),
    # even one that already starts with spaces: a normalizer does the same per fragment (Metaspace would not)
    tk.normalizer = normalizers.Sequence(([normalizers.Prepend("▁")] if prefix else [])
                                         + [normalizers.Replace(" ", "▁")])
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tk.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    return tk, tokens, None


KINDS = {"gpt2": gpt2_tokenizer, "llama": llama_tokenizer}
ADD_BOS_DEFAULT = {"gpt2": False, "llama": True}    # llama.cpp's defaults when add_bos_token is absent


def write_tokenizer(meta: dict, folder: Path, *, source: Path) -> None:
    """tokenizer.json and tokenizer_config.json (special tokens, add-BOS, chat template) into `folder`."""
    kind = _need(meta, "tokenizer.ggml.model", source)
    if kind not in KINDS:
        raise CheckpointError(f"{source}: tokenizer.ggml.model '{kind}' is not supported; supported: "
                              f"{', '.join(sorted(KINDS))}")
    try:
        tk, tokens, fallback = KINDS[kind](meta, source)
        types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
        if len(types) != len(tokens):
            raise CheckpointError(f"{source}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} "
                                  f"tokens")
        _added_tokens(tk, tokens, types)
    except CheckpointError:
        raise
    except Exception as e:     # `tokenizers` raises plain Exception for a vocabulary it cannot build
        raise CheckpointError(f"{source}: tokenizer.ggml.* does not make a {kind} tokenizer ({e})") from None

    def piece(key):
        i = meta.get(key)
        if i is None:
            return None
        if not 0 <= int(i) < len(tokens):
            raise CheckpointError(f"{source}: {key} {int(i)} is outside the vocabulary of {len(tokens)}")
        return tokens[int(i)]
    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", ADD_BOS_DEFAULT[kind]))
    post = _bos_post_processor(piece("tokenizer.ggml.bos_token_id"), None if bos_id is None else int(bos_id),
                               add_bos=add_bos, fallback=fallback)
    if post is not None:
        tk.post_processor = post
    tk.save(str(folder / "tokenizer.json"))
    tc = {"bos_token": piece("tokenizer.ggml.bos_token_id"), "eos_token": piece("tokenizer.ggml.eos_token_id"),
          "unk_token": piece("tokenizer.ggml.unknown_token_id"), "pad_token": piece("tokenizer.ggml.padding_token_id"),
          "add_bos_token": add_bos, "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
          "tokenizer_class": "PreTrainedTokenizerFast"}
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        tc["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False), encoding="utf-8")
