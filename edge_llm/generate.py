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
    sample = make_sampler(params)
    meter = meter or default_step_meter()
    seen = list(history) + list(new_ids)
    processors = make_logits_processors(repetition=params.repetition_penalty, presence=params.presence_penalty,
                                        frequency=params.frequency_penalty, bias=params.logit_bias,
                                        reply_start=len(seen))
    stop_ids = set(tokenizer.eos_ids if stop_ids is None else stop_ids)
    decoder = tokenizer.stream()
    stops = StopMatcher(stop_strings)
    cached, source = cache.length, meter.describe()
    out: list[TokenRecord] = []
    steps = None
    try:
        t0 = time.perf_counter()
        if logits is None:
            logits, energy = meter.run(prefill, session, cache, new_ids)
        else:
            logits, energy = logits.copy(), None
        start = cache.length
        if speculator is None:
            steps = _plain_steps(session, cache, logits, energy, t0, sample=sample, processors=processors,
                                 seen=seen, meter=meter)
        else:
            steps = speculator.steps(session, cache, logits, energy, t0, sample=sample, params=params,
                                     processors=processors, seen=seen, meter=meter, budget=max_new_tokens)
        for index in range(max_new_tokens):
            step = next(steps)
            token, elapsed = step.token, step.seconds
            position = start + index
            finish = None
            if token in stop_ids and not ignore_eos:
                text, finish = decoder.flush(), "eos"
                text = stops.feed(text)[0] + stops.flush()
            else:
                text, hit = stops.feed(decoder.push(token))
                if hit:
                    finish = "stop"
            if finish is None and index == max_new_tokens - 1:
                finish = "length"
                text += stops.feed(decoder.flush())[0] + stops.flush()
            if finish is None and position >= cache.max_len:
                finish = "context"
                text += stops.feed(decoder.flush())[0] + stops.flush()
            out.append(TokenRecord(token, text, index, position, elapsed, len(new_ids), finish, cached,
                                   step.joules, source, step.drafted, step.accepted, step.forwards))
            yield out[-1]
            if finish is not None:
                return
    finally:
        if steps is not None:
            steps.close()      # a speculative stepper rolls back the KV of tokens not yet taken
        if log:
            log_reply(reply_record(out, model=_model_name(session), prompt_tokens=cached + len(new_ids),
                                   cached_tokens=cached))
