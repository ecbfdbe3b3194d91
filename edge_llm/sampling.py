"""Token sampling: a small function outside the model, with an explicit RNG. Temperature 0 is argmax.

SamplingParams also carries the logits processors' settings (penalties, logit bias); the generator
builds them with edge_llm.logits.make_logits_processors and applies them before the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from .logits import repetition_penalty as _repetition_penalty


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0       # 0 = greedy
    top_k: int = 0                 # 0 = off
    top_p: float = 1.0             # 1 = off
    min_p: float = 0.0             # 0 = off; keep tokens with p >= min_p * p_max
    repetition_penalty: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI range -2..2, over the reply's own tokens
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)   # token id -> -100..100

    def __post_init__(self):
        for name, ok in (("temperature", self.temperature >= 0), ("top_k", self.top_k >= 0),
                         ("top_p", 0 < self.top_p <= 1), ("min_p", 0 <= self.min_p < 1),
                         ("repetition_penalty", self.repetition_penalty > 0),
                         ("presence_penalty", -2 <= self.presence_penalty <= 2),
                         ("frequency_penalty", -2 <= self.frequency_penalty <= 2),
                         ("logit_bias", all(-100 <= v <= 100 for v in self.logit_bias.values()))):
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)}")

    @classmethod
    def from_generation_config(cls, gen: dict, **overrides) -> "SamplingParams":
        base = cls(temperature=float(gen.get("temperature", 0.0)) if gen.get("do_sample", False) else 0.0,
                   top_k=int(gen.get("top_k", 0) or 0), top_p=float(gen.get("top_p", 1.0)),
                   repetition_penalty=float(gen.get("repetition_penalty", 1.0)))
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


NUCLEUS_CANDIDATES = 1024


def apply_repetition_penalty(logits: np.ndarray, history: Sequence[int], penalty: float) -> np.ndarray:
    """CTRL-style: divide positive logits of seen tokens by `penalty`, multiply negative ones (a copy)."""
    if penalty == 1.0 or not len(history):
        return logits
    return _repetition_penalty(penalty)(history, logits.copy())


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits - max) / T in float64: at most 0, so even a subnormal T gives -inf (p = 0), never +inf."""
    x = logits.astype(np.float64)
    with np.errstate(over="ignore"):
        return (x - x.max()) / temperature


def _filtered_probs(logits: np.ndarray, p: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """(candidate ids, probabilities) after temperature, top-k, min-p and top-p."""
    n = logits.shape[0]
    k = p.top_k if 0 < p.top_k < n else n
    # Only the best candidates can survive top-k/top-p: partition instead of sorting 100k+ logits.
    # top-k keeps exactly k candidates; top-p alone starts from NUCLEUS_CANDIDATES and widens if it must
    m = k if k < n else (min(n, NUCLEUS_CANDIDATES) if p.top_p < 1.0 else n)
    if m < n:
        cand = np.argpartition(-logits, m - 1)[:m]
    else:
        cand = np.arange(n)
    full = _scaled(logits, p.temperature)
    z = full[cand]
    order = np.argsort(-z, kind="stable")
    cand, z = cand[order], z[order]
    # softmax over the full vocabulary, so probabilities are the model's, not renormalised over m
    zmax = z[0]
    denom = np.exp(full - zmax).sum()
    probs = np.exp(z - zmax) / denom
    if p.top_p < 1.0 and m < n and probs.sum() < p.top_p and k == n:
        return _full_nucleus(logits, p)
    keep = np.ones(len(cand), bool)
    if p.min_p > 0:
        keep &= probs >= p.min_p * probs[0]
    if p.top_p < 1.0:
        cum = np.cumsum(probs)
        keep &= (cum - probs) < p.top_p      # smallest prefix whose mass reaches top_p
    cand, probs = cand[keep], probs[keep]
    return cand, probs / probs.sum()


def _full_nucleus(logits: np.ndarray, p: SamplingParams):
    """Fallback when the nucleus is wider than NUCLEUS_CANDIDATES tokens: sort everything."""
    z = _scaled(logits, p.temperature)
    order = np.argsort(-z, kind="stable")
    probs = np.exp(z[order] - z[order[0]])
    probs /= probs.sum()
    keep = (np.cumsum(probs) - probs) < p.top_p
    if p.min_p > 0:
        keep &= probs >= p.min_p * probs[0]
    return order[keep], probs[keep] / probs[keep].sum()


def make_sampler(params: SamplingParams) -> Callable[[np.ndarray, Sequence[int]], int]:
    rng = np.random.default_rng(params.seed)

    def sample(logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """`history` applies the repetition penalty here, for callers without logits processors;
        the generator applies every processor itself and passes none."""
        logits = apply_repetition_penalty(logits, history, params.repetition_penalty)
        if params.temperature == 0:
            return int(np.argmax(logits))
        cand, probs = _filtered_probs(logits, params)
        return int(cand[rng.choice(len(cand), p=probs)])

    return sample
