"""sentencepiece tokenization, chat rendering and streaming detokenization."""
from __future__ import annotations

import sentencepiece as spm

from .errors import PackageError
from .manifest import Manifest


class Tokenizer:
    def __init__(self, manifest: Manifest):
        meta = manifest.tokenizer
        path = manifest.path / meta.get("file", "tokenizer.model")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise PackageError(f"{path}: not a sentencepiece model ({e})") from e
        self.bos_id = int(meta.get("bos_id", 1))
        self.eos_ids = tuple(meta.get("eos_ids", [2]))
        self.add_bos = bool(meta.get("add_bos", True))
        self.prepend_space = bool(meta.get("prepend_space", False))

    def encode(self, text: str, *, bos: bool = False) -> list[int]:
        if self.prepend_space and text:
            text = " " + text
        ids = self.sp.EncodeAsIds(text) if text else []
        return ([self.bos_id] if bos and self.add_bos else []) + ids

    def decode(self, ids) -> str:
        return self.sp.DecodeIds([int(i) for i in ids if int(i) not in self.eos_ids and int(i) != self.bos_id])

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Incremental detokenization that never emits half a character.

    Each step decodes a short window of recent tokens twice (with and without the new one) and emits
    the difference; text ending in U+FFFD (an incomplete UTF-8 sequence from byte-fallback pieces) is
    held back until the following bytes arrive. Decoding from the same window start keeps
    sentencepiece's leading-space handling identical to a full decode.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0   # window start
        self.read = 0     # tokens already turned into emitted text

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prev = self.tok.decode(self.ids[self.prefix:self.read])
        text = self.tok.decode(self.ids[self.prefix:])
        if text.endswith("\ufffd") or len(text) <= len(prev):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(prev):]

    def flush(self) -> str:
        """Whatever is left; an incomplete character at the very end (the reply was cut mid-character) is dropped."""
        prev = self.tok.decode(self.ids[self.prefix:self.read])
        text = self.tok.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(prev):].rstrip("\ufffd")


def render_chat(messages: list[dict], chat: dict | None, tokenizer: Tokenizer) -> list[int]:
    """Token ids for a conversation in the package's chat template, ready for the assistant's reply.

    Templates are concatenations of per-message pieces (MiniCPM: `<用户>{user}<AI>{assistant}`), so
    each message is tokenized on its own and appended: the ids of turn n are a prefix of the ids of
    turn n+1, which lets a conversation reuse its KV cache. After a finished assistant message the
    model's eos token is appended, as in OpenBMB's fine-tuning data.
    """
    if chat is None:
        raise PackageError("this package has no chat template; use `edge-llm generate` for plain completion")
    ids = [tokenizer.bos_id] if tokenizer.add_bos else []
    for m in messages:
        role = m["role"]
        if role not in chat["roles"]:
            raise ValueError(f"unknown chat role '{role}'")
        content = m["content"].strip() if chat.get("strip") else m["content"]
        r = chat["roles"][role]
        ids += tokenizer.encode(r["prefix"] + content + r["suffix"])
        if role == "assistant":
            ids.append(tokenizer.eos_ids[0])
    return ids
