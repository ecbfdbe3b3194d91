"""Python API: load a package, then generate / stream / chat. All three run edge_llm.generate."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from .chat_template import chat_ids
from .errors import ContextFullError, EdgeLLMError, PackageError
from .generate import generate_tokens
from .records import TokenRecord
from .sampling import SamplingParams
from .session import KVCache, ModelSession
from .speculative import Speculator, parse_speculate
from .tokenizer import Tokenizer

DEFAULT_SPECULATE = "auto"  # edge_llm.speculative: lookup where it pays (docs/speculative.md)


class Model:
    def __init__(self, session: ModelSession, *, context_length: int | None = None,
                 speculate: str | None = DEFAULT_SPECULATE):
        self.session = session
        self.manifest = session.manifest
        self.tokenizer = Tokenizer.from_manifest(self.manifest)
        self.context_length = min(context_length or session.context_length, session.context_length)
        self.speculate(speculate)

    def speculate(self, how: str | None = DEFAULT_SPECULATE) -> None:
        """Speculative decoding for later replies: "auto" | "off" | "lookup" | "draft:PACKAGE_DIR"
        (edge_llm.speculative; greedy replies keep their tokens, sampled ones their distribution)."""
        try:
            spec = parse_speculate(how).resolve(self.manifest)
        except ValueError as e:
            raise EdgeLLMError(f"--speculate: {e}") from e
        self.speculator = Speculator(spec, self.session) if spec.enabled else None

    def speculation_label(self) -> str:
        """What decoding runs: "off", "lookup" or "draft:FOLDER" (after "auto" was resolved)."""
        spec = self.speculator.spec if self.speculator else None
        if spec is None:
            return "off"
        return f"draft:{spec.draft.name}" if spec.mode == "draft" else spec.mode

    @classmethod
    def load(cls, package_dir=None, *, threads: int | None = None, context_length: int | None = None,
             spinning: bool = True, speculate: str | None = DEFAULT_SPECULATE) -> "Model":
        """Load a package folder; without one, the bundled tiny model."""
        if package_dir is None:
            from .paths import BUNDLED
            package_dir = BUNDLED
        return cls(ModelSession(Path(package_dir), threads=threads, spinning=spinning), context_length=context_length,
                   speculate=speculate)

    def cache(self) -> KVCache:
        """A new, empty KV cache for one request (it grows as it fills, up to the context length)."""
        return self.session.new_cache(self.context_length)

    def sampling(self, **overrides) -> SamplingParams:
        """Defaults from the checkpoint's generation_config.json, overridden by explicit values."""
        return SamplingParams.from_generation_config(self.manifest.generation, **overrides)

    @property
    def stop_strings(self) -> list[str]:
        chat = self.manifest.chat
        return list(chat.stop_strings) if chat else []

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """End-of-turn ids for chat replies (every eos id and end-of-turn token the model defines)."""
        chat = self.manifest.chat
        return tuple(chat.stop_ids) if chat else self.tokenizer.eos_ids

    def chat_ids(self, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` in the package's own chat template, ready for the assistant's reply."""
        if self.manifest.chat is None:
            raise PackageError(f"{self.manifest.path}: this package has no chat template; use `edge-llm generate` "
                               f"for plain completion")
        return chat_ids(self.manifest.chat, self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def stream(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None, max_new_tokens: int = 256,
               stop_strings: Sequence[str] = (), ignore_eos: bool = False) -> Iterator[TokenRecord]:
        """Plain completion of `prompt` (text, or token ids used as given) without the chat template."""
        ids = self.tokenizer.encode(prompt, bos=True) if isinstance(prompt, str) else list(prompt)
        cache = self.cache()
        _check_fits(len(ids), cache.max_len)
        return generate_tokens(self.session, self.tokenizer, cache, ids, params=params or SamplingParams(),
                               max_new_tokens=min(max_new_tokens, cache.max_len - len(ids)),
                               stop_strings=stop_strings, ignore_eos=ignore_eos, speculator=self.speculator)

    def generate(self, prompt: str | Sequence[int], **kw) -> str:
        return "".join(r.text for r in self.stream(prompt, **kw))

    def stream_batch(self, prompts: Sequence[str | Sequence[int]], *, params: SamplingParams | None = None,
                     max_new_tokens: int = 256, slots: int = 8, stop_strings: Sequence[str] = (),
                     ignore_eos: bool = False) -> Iterator[tuple[int, TokenRecord]]:
        """Plain completions of many prompts decoded together, `slots` at a time (one forward per step
        with a row per reply; edge_llm.batch): (prompt index, TokenRecord) as tokens are made. Each reply
        is its lone `stream` run's — token for token on float32-activation packages, to the kernels'
        rounding on int8-activation ones (docs/serve.md). No speculative decoding here."""
        from .batch import generate_batch
        ids = [self.tokenizer.encode(p, bos=True) if isinstance(p, str) else list(p) for p in prompts]
        return generate_batch(self.session, self.tokenizer, ids, params=params or SamplingParams(),
                              max_new_tokens=max_new_tokens, slots=slots, max_len=self.context_length,
                              stop_strings=stop_strings, ignore_eos=ignore_eos)

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], **kw) -> list[str]:
        """The completion of every prompt, in order (see `stream_batch`): for scripts that score many prompts."""
        texts: list[list[str]] = [[] for _ in prompts]
        for i, rec in self.stream_batch(prompts, **kw):
            texts[i].append(rec.text)
        return ["".join(t) for t in texts]

    def chat(self, messages: list[dict], *, params: SamplingParams | None = None,
             max_new_tokens: int = 256) -> Iterator[TokenRecord]:
        """One assistant reply to `messages` ([{"role": "user", "content": ...}, ...]), streamed."""
        conv = Conversation(self)
        conv.messages = list(messages[:-1])
        return conv.send(messages[-1]["content"], params=params, max_new_tokens=max_new_tokens)


def _check_fits(n: int, max_len: int) -> None:
    if n >= max_len:
        raise ContextFullError(f"the prompt is {n} tokens; the context holds {max_len} (including the reply)")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Conversation:
    """Multi-turn chat that keeps its KV cache between turns and drops the oldest turns when full."""

    model: Model
    messages: list[dict] = field(default_factory=list)
    dropped_turns: int = 0
    system: str | None = None       # a system prompt: first in every prompt, kept by reset() and when full

    def __post_init__(self):
        self.cache = self.model.session.new_cache(self.model.context_length)
        self.cached_ids: list[int] = []   # ids whose keys/values are valid in the cache, in order
        if self.system is not None and not self.messages:
            self.messages.append({"role": "system", "content": self.system})

    def reset(self) -> None:
        self.messages[:] = [{"role": "system", "content": self.system}] if self.system is not None else []
        self.cached_ids = []
        self.cache.length = 0

    def _ids(self, messages) -> list[int]:
        return self.model.chat_ids(messages)

    def send(self, text: str, *, params: SamplingParams | None = None,
             max_new_tokens: int = 256) -> Iterator[TokenRecord]:
        msgs = self.messages + [{"role": "user", "content": text}]
        ids = self._ids(msgs)
        max_len = self.cache.max_len
        reserve = min(max_new_tokens, max_len // 4)
        keep = 1 if msgs and msgs[0]["role"] == "system" else 0     # the system prompt always stays
        while len(ids) + reserve > max_len and len(msgs) > keep + 1:
            # drop the oldest exchange (a user message and what follows it up to the next user message)
            rest = msgs[keep:]
            cut = next((i for i in range(1, len(rest)) if rest[i]["role"] == "user"), len(rest) - 1)
            msgs = msgs[:keep] + rest[cut:]
            self.dropped_turns += 1
            ids = self._ids(msgs)
        _check_fits(len(ids), max_len)
        self.messages = msgs
        reuse = min(_common_prefix(self.cached_ids, ids), len(ids) - 1)
        self.cache.length = reuse
        reply: list[int] = []
        parts: list[str] = []
        gen = generate_tokens(self.model.session, self.model.tokenizer, self.cache, ids[reuse:],
                              params=params or SamplingParams(), history=ids[:reuse],
                              max_new_tokens=min(max_new_tokens, max_len - len(ids)),
                              stop_strings=self.model.stop_strings, stop_ids=self.model.stop_ids,
                              speculator=self.model.speculator)
        try:
            for rec in gen:
                reply.append(rec.token_id)
                parts.append(rec.text)
                yield rec
        finally:
            # also on Ctrl-C or an abandoned iterator: keep what was said, and which ids are cached
            fed = ids + reply[:-1]
            self.cached_ids = fed[: self.cache.length]
            self.messages.append({"role": "assistant", "content": "".join(parts)})
