"""Logits processors: small functions applied to the next-token logits before the sampler.

Each processor is `fn(tokens, logits) -> logits`: `tokens` is the whole context so far (earlier turns,
the prompt, then the generated tokens), `logits` the model's (vocab,) float32 scores, which the
processor may change in place (the generator owns them). `make_logits_processors` builds the list for
one reply from its SamplingParams, the way mlx-lm's function of the same name does.

    repetition_penalty   CTRL / Hugging Face: seen tokens' positive logits / p, negative ones * p
                         (over the whole context, prompt included)
    presence_penalty     OpenAI: minus p once for every token generated at least once in this reply
    frequency_penalty    OpenAI: minus p times how often the token was generated in this reply
    logit_bias           OpenAI: add a fixed bias per token id (-100 bans, +100 forces)

Presence and frequency count the reply's own tokens only (as vLLM does), so a long prompt does not
push the model away from the words it is asked about.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

Processor = Callable[[Sequence[int], np.ndarray], np.ndarray]


def repetition_penalty(penalty: float) -> Processor:
    def process(tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
        if not len(tokens):
            return logits
        ids = np.unique(np.asarray(tokens, dtype=np.int64))
        vals = logits[ids]
        with np.errstate(over="ignore", divide="ignore"):    # an absurd penalty saturates, it does not make inf
            out = np.where(vals > 0, vals / penalty, vals * penalty)
        limit = np.finfo(logits.dtype).max
        logits[ids] = np.clip(out, -limit, limit)
        return logits
    return process


def presence_frequency_penalty(presence: float, frequency: float, *, start: int) -> Processor:
    """Penalise tokens in `tokens[start:]` (the reply): `presence` once each, `frequency` per occurrence."""
    def process(tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
        reply = np.asarray(tokens[start:], dtype=np.int64)
        if reply.size:
            ids, counts = np.unique(reply, return_counts=True)
            logits[ids] -= presence + frequency * counts
        return logits
    return process


def logit_bias(bias: Mapping[int, float]) -> Processor:
    ids = np.fromiter(bias.keys(), np.int64, len(bias))
    vals = np.fromiter(bias.values(), np.float32, len(bias))

    def process(tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
        logits[ids] += vals
        return logits
    return process


def make_logits_processors(*, repetition: float = 1.0, presence: float = 0.0, frequency: float = 0.0,
                           bias: Mapping[int, float] | None = None, reply_start: int = 0) -> list[Processor]:
    """The processors these settings need, in a fixed order (bias last, so -100 always bans);
    `reply_start` is where the reply begins in the `tokens` the processors will see."""
    out: list[Processor] = []
    if repetition != 1.0:
        out.append(repetition_penalty(repetition))
    if presence or frequency:
        out.append(presence_frequency_penalty(presence, frequency, start=reply_start))
    if bias:
        out.append(logit_bias(bias))
    return out


def apply_processors(processors: Sequence[Processor], tokens: Sequence[int], logits: np.ndarray) -> np.ndarray:
    for p in processors:
        logits = p(tokens, logits)
    return logits
