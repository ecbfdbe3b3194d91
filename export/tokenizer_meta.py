"""Tokenizer and chat facts for the manifest, decided at export time from the checkpoint folder.

Backend: `tokenizer.model` (sentencepiece, the model's original tokenizer: transformers' slow tokenizer
is the reference) when present, else `tokenizer.json` (Hugging Face tokenizers). Both are loaded here
with the runtime's own Tokenizer, so a folder whose tokenizer does not load is refused before anything
is written.
"""
from __future__ import annotations

import json
from pathlib import Path

from edge_llm.chat_template import render
from edge_llm.errors import ChatTemplateError, CheckpointError, PackageError
from edge_llm.manifest import ChatSpec, TokenizerSpec, to_json
from edge_llm.tokenizer import Tokenizer

from .families import DecoderConfig, Family

# end-of-turn tokens of the common chat formats: generation stops on any of them that the vocabulary has
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>", "<end_of_turn>")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _token_str(v) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as {"content": ...} objects."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _sp_prepend_space(model: Path, tc: dict) -> bool:
    """transformers' LlamaTokenizer: legacy (the default) encodes with sentencepiece's own dummy-prefix
    setting; non-legacy disables it and prepends one "▁" itself when add_prefix_space (default true)."""
    if tc.get("legacy", True) is not False or tc.get("add_prefix_space", True) is False:
        return False
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(model.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise CheckpointError(f"{model}: not a sentencepiece model ({e})") from e
    return not proto.normalizer_spec.add_dummy_prefix


def tokenizer_spec(src: Path, cfg: DecoderConfig) -> tuple[dict, Tokenizer]:
    """The manifest's tokenizer section, and the loaded tokenizer (which proves the files work)."""
    tc = _read_json(src / "tokenizer_config.json")
    gen = _read_json(src / "generation_config.json")
    if (src / "tokenizer.model").is_file():
        backend, file = "sentencepiece", "tokenizer.model"
        prepend = _sp_prepend_space(src / file, tc)
    elif (src / "tokenizer.json").is_file():
        backend, file, prepend = "tokenizers", "tokenizer.json", False
    else:
        raise CheckpointError(f"{src}: no tokenizer (tokenizer.model or tokenizer.json is required)")
    bos_token, eos_token = _token_str(tc.get("bos_token")), _token_str(tc.get("eos_token"))
    probe = TokenizerSpec(backend=backend, file=file, add_bos=False, add_eos=False, prepend_space=prepend,
                          bos_id=None, eos_ids=())
    try:
        tok = Tokenizer(probe, src)
        tok.encode("Hello, world! 你好")
    except PackageError as e:
        raise CheckpointError(str(e)) from e
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{src / file}: {tok.vocab_size} tokens, more than the model's vocab_size "
                              f"{cfg.vocab_size}")
    bos_id = cfg.bos_token_id if cfg.bos_token_id is not None else (tok.token_id(bos_token) if bos_token else None)
    if bos_token is None and bos_id is not None and backend == "sentencepiece":
        bos_token = tok.backend.sp.IdToPiece(bos_id)
    if backend == "sentencepiece":
        add_bos = bool(tc.get("add_bos_token", True))
    else:   # does the tokenizer's own post-processor put BOS in front (Llama 3), or not (ChatML models)?
        with_special = tok.backend.tk.encode("a", add_special_tokens=True).ids
        add_bos = bos_id is not None and len(with_special) > 1 and with_special[0] == bos_id
    eos = list(cfg.eos_token_ids)
    gen_eos = gen.get("eos_token_id")
    for e in (gen_eos if isinstance(gen_eos, list) else [gen_eos]):
        if isinstance(e, int) and e not in eos:
            eos.append(e)
    if eos_token and tok.token_id(eos_token) is not None and tok.token_id(eos_token) not in eos:
        eos.append(tok.token_id(eos_token))
    if not eos:
        raise CheckpointError(f"{src}: no end-of-sequence token id (config.json / generation_config.json eos_token_id)")
    spec = TokenizerSpec(backend=backend, file=file, add_bos=add_bos, add_eos=bool(tc.get("add_eos_token", False)),
                         prepend_space=prepend, bos_id=bos_id, eos_ids=tuple(eos), bos_token=bos_token,
                         eos_token=eos_token)
    return to_json(spec), Tokenizer(spec, src)


def _template(src: Path, tc: dict, family: Family) -> tuple[str | None, str]:
    t = tc.get("chat_template")
    if isinstance(t, list):          # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    if isinstance(t, str) and t.strip():
        return t, "tokenizer_config.json"
    if (src / "chat_template.jinja").is_file():
        return (src / "chat_template.jinja").read_text(encoding="utf-8"), "chat_template.jinja"
    if family.chat.builtin_template:
        return family.chat.builtin_template, f"builtin:{family.name}"
    return None, ""


def chat_spec(src: Path, family: Family, tok: Tokenizer, tok_spec: dict) -> dict | None:
    """The manifest's chat section, or None for a model without a chat template (generate only)."""
    tc = _read_json(src / "tokenizer_config.json")
    template, source = _template(src, tc, family)
    if template is None:
        return None
    stop = list(tok_spec["eos_ids"])
    for piece in END_OF_TURN:
        i = tok.token_id(piece)
        if i is not None and i not in stop:
            stop.append(i)
    spec = ChatSpec(template=template, source=source, stop_ids=tuple(stop), stop_strings=family.chat.stop_strings,
                    bos_token=tok_spec["bos_token"] or "", eos_token=tok_spec["eos_token"] or "",
                    add_bos=family.chat.add_bos)
    probe = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
             {"role": "user", "content": "How are you?"}]
    try:
        render(spec, probe, add_generation_prompt=True)
    except ChatTemplateError as e:
        raise CheckpointError(f"{src}: chat template ({source}): {e}") from e
    return to_json(spec)
