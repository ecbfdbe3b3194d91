"""The one streaming generator behind chat, generate, bench and eval: prefill, then one token at a time.

Every produced token comes out as a TokenRecord, carrying its text (whole characters only) and its
timing, so the CLI, the Python API, the server and the benchmark all read the same numbers
(edge_llm.records sums them into one record per reply).

State is passed, not owned: the KV cache is the caller's (one per conversation or request), so any
number of generators may be interleaved on one session. Stopping early is closing the generator
(or just no longer iterating it): no model step runs after the last record taken.
"""
from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np

from .logits import apply_processors, make_logits_processors
from .metering.step import StepMeter, default_step_meter
from .records import TokenRecord, log_reply, reply_record
from .sampling import SamplingParams, make_sampler
from .session import KVCache, ModelSession
from .speculative import Speculator, Step
from .tokenizer import Tokenizer


def prefill(session: ModelSession, cache: KVCache, ids: Sequence[int]) -> np.ndarray:
    """Run the prompt after the cache's valid positions; logits of the last position."""
    return session.forward(np.asarray(ids, np.int64), cache)


def decode_one_token(session: ModelSession, cache: KVCache, token: int) -> np.ndarray:
    return session.forward(np.array([token], np.int64), cache)


def _plain_steps(session, cache, logits, energy, t0: float, *, sample, processors, seen: list[int],
                 meter) -> Iterator[Step]:
    """Plain decoding: sample from `logits`, feed the token, repeat (one forward per token)."""
    while True:
        token = sample(apply_processors(processors, seen, logits))
        seen.append(token)
        yield Step(token, time.perf_counter() - t0, None if energy is None else energy.joules)
        t0 = time.perf_counter()
        logits, energy = meter.run(decode_one_token, session, cache, token)


class StopMatcher:
    """Finds stop strings in streamed text and holds back any tail that could still start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.pending + text
        for s in self.stops:
            at = buf.find(s)
            if at >= 0:
                self.pending = ""
                return buf[:at], True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def _model_name(session) -> str:
    manifest = getattr(session, "manifest", None)
    return manifest.path.name if manifest is not None else ""


class ReplyStream:
    """One reply's side of decoding, with no model step in it: logits in, a token out (penalties and
    the sampler, `sample`), then that token's TokenRecord (its text, stop strings, finish reason,
    `record`). generate_tokens feeds it one forward at a time; the server's batched loop and
    edge_llm.batch feed it one row of a batched forward.

    `history`: every id before the reply (for the penalties); `start`: the first generated token's
    position; `max_len`: the context (a token at max_len or past it ends the reply: "context")."""

    def __init__(self, tokenizer: Tokenizer, *, params: SamplingParams = SamplingParams(), max_new_tokens: int,
                 history: Sequence[int] = (), start: int, max_len: int, stop_strings: Sequence[str] = (),
                 stop_ids: Sequence[int] | None = None, ignore_eos: bool = False, prompt_tokens: int = 0,
                 cached_tokens: int = 0, energy_source: str | None = None):
        self.sampler = make_sampler(params)
        self.seen = list(history)
        self.processors = make_logits_processors(repetition=params.repetition_penalty, presence=params.presence_penalty,
                                                 frequency=params.frequency_penalty, bias=params.logit_bias,
                                                 reply_start=len(self.seen))
        self.max_new_tokens, self.start, self.max_len = max_new_tokens, start, max_len
        self.stop_ids = set(tokenizer.eos_ids if stop_ids is None else stop_ids)
        self.ignore_eos = ignore_eos
        self.decoder = tokenizer.stream()
        self.stops = StopMatcher(stop_strings)
        self.prompt_tokens, self.cached_tokens, self.energy_source = prompt_tokens, cached_tokens, energy_source
        self.records: list[TokenRecord] = []

    @property
    def finished(self) -> bool:
        return bool(self.records) and self.records[-1].finish_reason is not None

    def sample(self, logits: np.ndarray) -> int:
        """The next token from this reply's logits (penalties, then the sampler); counted as seen."""
        token = self.sampler(apply_processors(self.processors, self.seen, logits))
        self.seen.append(token)
        return token

    def record(self, token: int, *, seconds: float, joules: float | None = None, drafted: int = 0,
               accepted: int = 0, forwards: int = 1) -> TokenRecord:
        """The TokenRecord of the reply's next token (kept in `records`)."""
        index = len(self.records)
        position = self.start + index
        finish = None
        stops, decoder = self.stops, self.decoder
        if token in self.stop_ids and not self.ignore_eos:
            text, finish = decoder.flush(), "eos"
            text = stops.feed(text)[0] + stops.flush()
        else:
            text, hit = stops.feed(decoder.push(token))
            if hit:
                finish = "stop"
        if finish is None and index >= self.max_new_tokens - 1:
            finish = "length"
            text += stops.feed(decoder.flush())[0] + stops.flush()
        if finish is None and position >= self.max_len:
            finish = "context"
            text += stops.feed(decoder.flush())[0] + stops.flush()
        rec = TokenRecord(token, text, index, position, seconds, self.prompt_tokens, finish, self.cached_tokens,
                          joules, self.energy_source, drafted, accepted, forwards)
        self.records.append(rec)
        return rec


def generate_tokens(session: ModelSession, tokenizer: Tokenizer, cache: KVCache, new_ids: Sequence[int], *,
                    params: SamplingParams = SamplingParams(), max_new_tokens: int = 256,
                    stop_strings: Sequence[str] = (), history: Sequence[int] = (),
                    stop_ids: Sequence[int] | None = None, ignore_eos: bool = False,
                    meter: StepMeter | None = None, log: bool = True,
                    logits: np.ndarray | None = None, speculator: Speculator | None = None) -> Iterator[TokenRecord]:
    """Prefill `new_ids` after the cache's valid positions, then sample until a stop condition.

    The cache ends holding every fed token; the last generated token is not fed (its KV is written
    when the next turn starts with it). `history` are the ids already in the cache (for the
    repetition penalty). `stop_ids` end the reply (default: the tokenizer's eos ids). `meter`
    measures each step's energy (default: bench's model); `log` sends the finished reply's record to
    the `edge_llm.replies` logger (see edge_llm.records), also when the caller stops early.
    `logits`: the caller already ran the prompt (e.g. the server, in pieces, or from its prompt cache);
    these are the last position's, `new_ids` is then empty and no prefill step runs.
    `speculator`: decode with speculative decoding (edge_llm.speculative); same tokens, fewer forwards.
    """
    if logits is not None and len(new_ids):
        raise ValueError("pass either new_ids to prefill or the logits of a prompt already in the cache")
    cache.check_memory(cache.length + len(new_ids) + max_new_tokens)   # a clear error now, not the OOM killer later
    meter = meter or default_step_meter()
    cached, source = cache.length, meter.describe()
    reply: ReplyStream | None = None
    steps = None
    try:
        t0 = time.perf_counter()
        if logits is None:
            logits, energy = meter.run(prefill, session, cache, new_ids)
        else:
            logits, energy = logits.copy(), None
        reply = ReplyStream(tokenizer, params=params, max_new_tokens=max_new_tokens,
                            history=list(history) + list(new_ids), start=cache.length, max_len=cache.max_len,
                            stop_strings=stop_strings, stop_ids=stop_ids, ignore_eos=ignore_eos,
                            prompt_tokens=len(new_ids), cached_tokens=cached, energy_source=source)
        if speculator is None:
            steps = _plain_steps(session, cache, logits, energy, t0, sample=reply.sampler,
                                 processors=reply.processors, seen=reply.seen, meter=meter)
        else:
            steps = speculator.steps(session, cache, logits, energy, t0, sample=reply.sampler, params=params,
                                     processors=reply.processors, seen=reply.seen, meter=meter,
                                     budget=max_new_tokens)
        for _ in range(max_new_tokens):
            step = next(steps)
            rec = reply.record(step.token, seconds=step.seconds, joules=step.joules, drafted=step.drafted,
                               accepted=step.accepted, forwards=step.forwards)
            yield rec
            if rec.finish_reason is not None:
                return
    finally:
        if steps is not None:
            steps.close()      # a speculative stepper rolls back the KV of tokens not yet taken
        if log:
            log_reply(reply_record(reply.records if reply else [], model=_model_name(session),
                                   prompt_tokens=cached + len(new_ids), cached_tokens=cached))
