"""Tokenization with the backend the manifest names, and streaming detokenization.

Two backends, chosen by `manifest.tokenizer.backend`:
- `sentencepiece` (`tokenizer.model`): plain text is encoded as sentencepiece does, with the model's own
  dummy-prefix setting (plus one leading "▁" when the manifest's `prepend_space` says transformers'
  non-legacy tokenizer adds it). Text that contains `<s>`, `</s>`, `<unk>` is kept as plain text in
  `encode` (a user typing "</s>" does not end their own prompt); only a rendered chat template, whose
  control tokens come from the template itself, has them parsed (`encode_chat`).
- `tokenizers` (`tokenizer.json`): Hugging Face's own byte-level BPE implementation; special tokens in
  the text are parsed as transformers does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .errors import PackageError
from .manifest import Manifest, TokenizerSpec


class _SentencePiece:
    def __init__(self, path: Path, prepend_space: bool):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise PackageError(f"{path}: not a sentencepiece model ({str(e).splitlines()[0]})") from e
        self.prepend_space = prepend_space
        n = self.sp.GetPieceSize()
        self.special = {self.sp.IdToPiece(i): i for i in range(n) if self.sp.IsControl(i) or self.sp.IsUnknown(i)}
        self.special_ids = {i for i in range(n) if self.sp.IsControl(i)}
        alternatives = "|".join(re.escape(p) for p in sorted(self.special, key=len, reverse=True) if p)
        self._split = re.compile(f"({alternatives})") if alternatives else None

    def encode(self, text: str) -> list[int]:
        if self.prepend_space and text:
            text = " " + text
        return self.sp.EncodeAsIds(text) if text else []

    def encode_special(self, text: str) -> list[int]:
        if self._split is None:
            return self.encode(text)
        ids: list[int] = []
        first = True
        for part in self._split.split(text):
            if part in self.special:
                ids.append(self.special[part])
            elif part:
                ids += self.encode(part) if first else self.sp.EncodeAsIds(part)
            first = first and not part
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.DecodeIds([i for i in ids if i not in self.special_ids])

    def token_id(self, piece: str) -> int | None:
        i = self.sp.PieceToId(piece)
        return None if self.sp.IsUnknown(i) and piece != self.sp.IdToPiece(i) else i

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()


class _HFTokenizers:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer
        try:
            self.tk = HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception for malformed files
            raise PackageError(f"{path}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0]})") from e

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids if text else []

    encode_special = encode

    def decode(self, ids: Sequence[int]) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=True)

    def token_id(self, piece: str) -> int | None:
        return self.tk.token_to_id(piece)

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)


def open_backend(spec: TokenizerSpec, folder: Path):
    path = Path(folder) / spec.file
    if not path.is_file():
        raise PackageError(f"{path}: tokenizer file missing")
    if spec.backend == "sentencepiece":
        return _SentencePiece(path, spec.prepend_space)
    if spec.backend == "tokenizers":
        return _HFTokenizers(path)
    raise PackageError(f"{path}: tokenizer backend '{spec.backend}' is not supported (sentencepiece, tokenizers)")


class Tokenizer:
    def __init__(self, spec: TokenizerSpec, folder: Path):
        self.spec = spec
        self.backend = open_backend(spec, folder)
        self.bos_id = spec.bos_id
        self.eos_ids = tuple(spec.eos_ids)
        self.add_bos = spec.add_bos and spec.bos_id is not None
        self.vocab_size = self.backend.vocab_size

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "Tokenizer":
        return cls(manifest.tokenizer, manifest.path)

    def encode(self, text: str, *, bos: bool = False) -> list[int]:
        """Plain text → ids; `bos` prepends BOS where the model's tokenizer adds one."""
        return ([self.bos_id] if bos and self.add_bos else []) + self.backend.encode(text)

    def encode_chat(self, text: str) -> list[int]:
        """A rendered chat template → ids, its special-token strings parsed as tokens."""
        return self.backend.encode_special(text)

    def decode(self, ids) -> str:
        """Text of `ids`; ids past the tokenizer's vocabulary (a model's padded embedding rows) decode to nothing."""
        n = self.vocab_size
        return self.backend.decode([int(i) for i in ids if 0 <= int(i) < n])

    def token_id(self, piece: str) -> int | None:
        return self.backend.token_id(piece)

    def stream(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Incremental detokenization that never emits half a character.

    Each step decodes a short window of recent tokens twice (with and without the new one) and emits
    the difference; text ending in U+FFFD (an incomplete UTF-8 sequence from byte pieces) is held back
    until the following bytes arrive. Decoding from the same window start keeps the backends'
    leading-space handling identical to a full decode.
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
