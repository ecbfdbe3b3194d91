"""Speculative decoding: guess a few tokens cheaply, check them all in one forward of the model, keep
the longest prefix the model agrees with and one token of the model's own. Decoding reads every
weight once per forward, so a forward of k+1 rows costs little more than one row where decoding is
bandwidth-bound; each accepted guess is a token without a weight read.

    last token t, drafts d1..dk ── forward_all([t, d1..dk]) ── logits L0..Lk      (one call)
    accept d1 if the rule accepts it at L0, d2 at L1, ... stop at the first rejection (a accepted)
    next token from L_a: the rejection's correction, or a bonus after k acceptances
    cache.truncate(past t, d1..da)    rows of rejected drafts stay in the buffer past `length`,
                                      where GroupQueryAttention never reads (it reads < seqlens_k)

Drafters:
    LookupDrafter  n-gram prompt lookup: the tokens that followed the latest earlier occurrence of
                   the context's last n tokens (n = 3, 2, 1), in the prompt or the reply so far
    ModelDrafter   a small model with the same tokenizer (its own session and KV cache), k single steps

The acceptance rule (lossless):
    deterministic drafts (lookup; a draft model when greedy): at L_{i-1}, after the reply's logits
              processors with d_1..d_{i-1} counted as generated, pick a token exactly as plain
              decoding does (argmax, or the plain sampler's draw) and accept d_i iff it is that token;
              else the pick is the next token. Greedy: the plain tokens. Sampling: accepted with
              probability p(d), else a draw from p without d — the speculative-sampling rule for a
              point-mass draft — and one draw per token as plain sampling, so a seed gives the same
              text with and without speculation.
    sampled drafts (a draft model when sampling): Leviathan et al. / Chen et al. (2023): accept
              d ~ q with probability min(1, p(d)/q(d)), on rejection draw from max(0, p - q)
              renormalised, after k acceptances draw from p(L_k). Each token keeps the plain
              distribution; a seed reproduces the run only if the same draft lengths are chosen.
    p is the distribution the plain sampler draws from (edge_llm.sampling's temperature, top-k,
    top-p, min-p).

Numerics: the k-row forward runs other kernels than the 1-row decode step (GroupQueryAttention's
multi-query path, MatMulNBits' M>1 path), so its logits differ from the 1-row ones by rounding; with
int8 activations (accuracy_level 4) a model with large activation outliers can amplify that to
~1 logit. The acceptance rule is exact with respect to the forward that verifies (the field's standard:
llama.cpp and vLLM verify in batched kernels too); greedy speculation then picks the argmax of slightly
different, equally good logits at near-ties, so its text can differ from plain decoding's there. Exact
where rows are (`rows_exact`: float32 activations and scales). "auto" is lookup on packages of at least
AUTO_MIN_PARAMETERS, drafting only while the measured acceptance and k-row cost say it pays (DraftPolicy);
smaller models are off (their steps are overhead-bound, so extra rows cost as much as steps, and their greedy
text stays reproducible). docs/speculative.md has the measurements, of the speed and of what the k-row path
changes (KL, top-1, where texts part).

How long to draft (`DraftPolicy`): from the measured cost of a forward by rows fed (relative to one
row) and the recent acceptance rate (per n-gram length for lookup), the draft length with the most
expected tokens per second; none when no length beats plain decoding (drafting switches itself off
and tries again later, as old evidence fades).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import PackageError
from .logits import apply_processors
from .manifest import AccuracySpec
from .sampling import SamplingParams, _filtered_probs

MAX_DRAFT = 10          # draft tokens checked per forward at most
# "auto" drafts on models of at least this many parameters. Below, a step is overhead-bound rather than a read
# of the weights: the bundled 15.7M model's 2-row forward costs 1.7 steps and some row counts 20x, and lookup
# measured 0.96x grounded / 0.98x chat there; SmolLM2-135M and Gemma 3 270M gain (docs/speculative.md).
AUTO_MIN_PARAMETERS = 100_000_000
NGRAM_MAX = 3           # longest n-gram looked up


# --------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Speculation:
    """What `--speculate` asked for: "off", "lookup" (n-gram prompt lookup) or "draft" (a draft
    package); `auto` marks lookup asked for by "auto" (the default)."""
    mode: str = "lookup"
    draft: Path | None = None
    max_draft: int = MAX_DRAFT
    auto: bool = False

    def __post_init__(self):
        if self.mode not in ("off", "lookup", "draft"):
            raise ValueError(f"speculation mode '{self.mode}' is not one of off, lookup, draft")
        if (self.mode == "draft") != (self.draft is not None):
            raise ValueError("a draft package goes with mode 'draft' only")
        if self.max_draft < 1:
            raise ValueError(f"max_draft must be >= 1, not {self.max_draft}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def resolve(self, manifest) -> "Speculation":
        """What runs on this package. "auto" is lookup everywhere: whether a forward checks drafts is the
        DraftPolicy's choice from measured acceptance and k-row cost, not the activation type (the k-row
        path's rounding is measured in docs/speculative.md: within int8 activation noise) — on models of at
        least AUTO_MIN_PARAMETERS; smaller ones decode plainly (module docstring)."""
        if self.auto and manifest.model.parameters < AUTO_MIN_PARAMETERS:
            return Speculation("off")
        return self


def rows_exact(manifest) -> bool:
    """True when the package computes in float32 throughout (fp32 weights, or int4 weights with
    float32 activations, accuracy_level 0 or 1, and float32 scales), so a forward of k rows gives each
    row the logits of a one-row forward to float32 rounding (~3e-5 on the bundled weights). int8
    activations (accuracy_level 4, the default recipes) quantise each row's activations and the k-row
    and 1-row kernels round differently (up to ~0.4 of a logit); float16 scales run the matmuls on
    float16 activations, whose k-row and 1-row kernels differ by ~0.02. See docs/speculative.md."""
    return AccuracySpec.of(manifest.quantization).float32_throughout


def parse_speculate(text: str | None) -> Speculation:
    """`auto` | `off` | `lookup` | `draft:PACKAGE_DIR` (None = auto)."""
    text = (text or "auto").strip()
    if text == "auto":
        return Speculation("lookup", auto=True)
    if text == "lookup":
        return Speculation("lookup")
    if text == "off":
        return Speculation("off")
    if text.startswith("draft:") and text[len("draft:"):]:
        return Speculation("draft", Path(text[len("draft:"):]))
    raise ValueError(f"'{text}' is not auto, off, lookup or draft:PACKAGE_DIR")


# ------------------------------------------------------------------------------------- draft policy
class DraftPolicy:
    """Chooses how many draft tokens to check, from measured forward costs and acceptance so far.

    Cost, in one-row steps (t1, an average of one-row forwards): a forward of r rows costs the median
    of its own recent observations when r has been seen, else 1 + slope * (r - 1), slope the median
    of what recent multi-row forwards showed per extra row (`slope_prior` standing in while there are
    fewer than three), and never less than a fewer-row forward was seen to cost (kernels can jump at
    some row count); a draft model adds `draft_cost` per draft token. Medians, because a shared
    machine gives outliers.
    Acceptance: per drafter key (the n-gram length, or "model"), the probability that a draft token
    is accepted when the ones before it were, from decayed counts with `alpha_prior` as two pseudo-
    trials, plus an optimism bonus that shrinks with evidence (so an untried key gets tried).
    Expected tokens for d drafts at acceptance a: 1 + a + ... + a^d; d maximises expected tokens per
    expected time and is 0 unless that beats plain decoding by `margin`. While nothing is drafted,
    the evidence fades — a key's counts by `forget` per chance, the oldest cost observations every
    `1 / forget` chances — so neither a bad stretch of text nor a slow moment turns drafting off for good.
    """

    def __init__(self, *, max_draft: int = MAX_DRAFT, slope_prior: float = 0.2, alpha_prior: float = 0.5,
                 margin: float = 0.03, decay: float = 0.95, forget: float = 0.03, bonus: float = 0.4):
        self.max_draft, self.margin, self.decay, self.forget, self.bonus = max_draft, margin, decay, forget, bonus
        self.alpha_prior = alpha_prior
        self.t1: float | None = None           # seconds of a one-row target forward (EMA)
        self.slope_prior = slope_prior
        self.slopes: deque[float] = deque(maxlen=9)           # recent (t_r / t1 - 1) / (r - 1)
        self.row_costs: dict[int, deque[float]] = {}          # r -> recent t_r / t1
        self.draft_costs: deque[float] = deque(maxlen=9)      # recent draft-model steps / t1
        self.declined = 0
        self.acc: dict = {}                    # key -> [accepted, trials] (decayed counts)

    def alpha(self, key, *, optimistic: bool = False) -> float:
        a, n = self.acc.get(key, (0.0, 0.0))
        est = (a + 2.0 * self.alpha_prior) / (n + 2.0)
        return min(1.0, est + self.bonus / (n + 2.0) ** 0.5) if optimistic else est

    @property
    def draft_cost(self) -> float:
        return median(self.draft_costs) if self.draft_costs else 0.0

    @property
    def slope(self) -> float:
        return median(list(self.slopes) + [self.slope_prior] * max(0, 3 - len(self.slopes)))

    def costs(self, max_rows: int) -> list[float]:
        """Predicted cost of a forward of 0..max_rows rows, in one-row steps."""
        slope, seen = self.slope, {r: median(v) for r, v in self.row_costs.items() if v}
        out, floor = [0.0, 1.0], 1.0
        for r in range(2, max_rows + 1):
            c = max(seen.get(r, 1.0 + slope * (r - 1)), floor)
            floor = max(floor, seen.get(r, 0.0))
            out.append(c)
        return out

    def expected_rate(self, d: int, alpha: float, cost: float) -> float:
        """Expected tokens per one-row step's time when checking d drafts in a forward of `cost`."""
        tokens = d + 1.0 if alpha >= 1.0 else (1.0 - alpha ** (d + 1)) / (1.0 - alpha)
        return tokens / (cost + self.draft_cost * d)

    def length(self, available: int, key) -> int:
        """How many of `available` draft tokens to check (0: decode one token plainly)."""
        if available <= 0 or self.t1 is None:          # the first step measures the one-row cost
            return 0
        top = min(available, self.max_draft)
        alpha, costs = self.alpha(key, optimistic=True), self.costs(top + 1)
        best, best_rate = 0, 1.0 + self.margin
        for d in range(1, top + 1):
            rate = self.expected_rate(d, alpha, costs[d + 1])
            if rate > best_rate:
                best, best_rate = d, rate
        if best == 0:                                  # not drafting: old evidence fades
            if key in self.acc:
                a, n = self.acc[key]
                self.acc[key] = [a * (1 - self.forget), n * (1 - self.forget)]
            self.declined += 1
            if self.declined % max(1, round(1 / self.forget)) == 0:
                for obs in (self.slopes, self.draft_costs, *self.row_costs.values()):
                    if obs:
                        obs.popleft()
        return best

    def new_reply(self) -> None:
        """Acceptance depends on the prompt: halve the evidence carried over from earlier replies."""
        for key, (a, n) in self.acc.items():
            self.acc[key] = [a / 2, n / 2]

    def forward(self, rows: int, seconds: float) -> None:
        """A target forward of `rows` rows took `seconds`."""
        if rows == 1:
            self.t1 = seconds if self.t1 is None else 0.8 * self.t1 + 0.2 * seconds
        elif self.t1:
            ratio = seconds / self.t1
            self.slopes.append(max(0.0, (ratio - 1.0) / (rows - 1)))
            self.row_costs.setdefault(rows, deque(maxlen=5)).append(ratio)

    def draft_step(self, seconds: float) -> None:
        """A one- or two-token draft-model step took `seconds` (its cost counts against drafting)."""
        if self.t1:
            self.draft_costs.append(seconds / self.t1)

    def accepted(self, key, drafted: int, accepted: int) -> None:
        a, n = self.acc.get(key, (0.0, 0.0))
        trials = accepted + (1 if accepted < drafted else 0)
        self.acc[key] = [a * self.decay + accepted, n * self.decay + trials]


# ------------------------------------------------------------------------------------------ drafters
class Draft(NamedTuple):
    tokens: list[int]
    q: list[tuple[np.ndarray, np.ndarray]] | None   # per token (candidate ids, probs); None: deterministic
    key: object                                       # acceptance statistics bucket


class LookupDrafter:
    """n-gram prompt lookup over the whole context (prompt and reply). Keeps, for n = 1..NGRAM_MAX, the
    latest position that followed each n-gram; the draft is what followed the longest n-gram that
    ends the context. The index grows with the context (amortised O(NGRAM_MAX) per token)."""

    def __init__(self, *, ngram_max: int = NGRAM_MAX):
        self.ngram_max = ngram_max
        self.index: list[dict[tuple, int]] = [dict() for _ in range(ngram_max + 1)]
        self.indexed = 0          # positions i whose preceding n-grams are in the index

    def _extend(self, ctx: Sequence[int]) -> None:
        # position i is "what followed" the n-grams ending at i-1; the last position has no follower
        for i in range(max(self.indexed, 1), len(ctx)):
            for n in range(1, min(self.ngram_max, i) + 1):
                self.index[n][tuple(ctx[i - n:i])] = i
        self.indexed = max(self.indexed, len(ctx))

    def available(self, ctx: Sequence[int], limit: int) -> tuple[list[int], int]:
        """(continuation of the longest matching n-gram, up to `limit` tokens; n), or ([], 0)."""
        self._extend(ctx)
        for n in range(min(self.ngram_max, len(ctx) - 1), 0, -1):
            j = self.index[n].get(tuple(ctx[len(ctx) - n:]))
            if j is not None:
                return list(ctx[j:j + limit]), n
        return [], 0

    def propose(self, ctx: Sequence[int], policy: DraftPolicy, limit: int) -> Draft:
        tokens, n = self.available(ctx, min(limit, policy.max_draft))
        d = policy.length(len(tokens), ("ngram", n))
        return Draft(tokens[:d], None, ("ngram", n))


class ModelDrafter:
    """A small model with the same tokenizer drafts k tokens one step at a time on its own KV cache,
    which follows the target's context (rolled back to the common prefix before each draft)."""

    def __init__(self, session, max_len: int, *, pick: Callable):
        self.session = session
        self.cache = session.new_cache(max_len)
        self.fed: list[int] = []          # ids whose KV is in self.cache, in order
        self.pick = pick                  # (logits, history) -> (token, q or None)

    def propose(self, ctx: Sequence[int], policy: DraftPolicy, limit: int) -> Draft:
        d = policy.length(min(limit, self.cache.max_len - len(ctx)), "model")
        if d <= 0:
            return Draft([], None, "model")
        n = 0
        for a, b in zip(self.fed, ctx):
            if a != b:
                break
            n += 1
        n = min(n, len(ctx) - 1)          # feed at least one token to get logits for the next one
        self.cache.truncate(n)
        t0 = time.perf_counter()
        logits = self.session.forward(np.asarray(ctx[n:], np.int64), self.cache)
        if len(ctx) - n <= 2:                      # not the draft's prefill of the prompt
            policy.draft_step(time.perf_counter() - t0)
        self.fed = list(ctx)
        tokens, qs, history = [], [], list(ctx)
        for i in range(d):
            token, q = self.pick(logits, history)
            tokens.append(token)
            qs.append(q)
            history.append(token)
            if i < d - 1:
                t0 = time.perf_counter()
                logits = self.session.forward(np.array([token], np.int64), self.cache)
                policy.draft_step(time.perf_counter() - t0)
                self.fed.append(token)
        return Draft(tokens, qs if qs[0] is not None else None, "model")


def load_draft_session(draft_dir, target_session, *, threads: int | None = None):
    """The draft package's session; refused unless it shares the target's tokenizer."""
    from .session import ModelSession
    draft = ModelSession(Path(draft_dir), threads=threads or target_session.threads)
    mine, theirs = target_session.manifest, draft.manifest
    same = (mine.model.vocab_size == theirs.model.vocab_size and mine.tokenizer.backend == theirs.tokenizer.backend
            and mine.files["tokenizer"].sha256 == theirs.files["tokenizer"].sha256)
    if not same:
        raise PackageError(f"{theirs.path}: the draft model's tokenizer differs from {mine.path.name}'s; "
                           f"a draft model must use the same tokenizer and vocabulary")
    return draft


# ---------------------------------------------------------------------------------------- acceptance
def target_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The plain sampler's distribution over the vocabulary (dense), for temperature > 0."""
    cand, probs = _filtered_probs(logits, params)
    p = np.zeros(logits.shape[0], np.float64)
    p[cand] = probs
    return p


def accept_matching(rows: np.ndarray, drafts: Sequence[int], seen: list[int], processors, sample) -> tuple[int, int]:
    """(accepted drafts, next token) for deterministic drafts: at each row, pick a token exactly as
    plain decoding would (`sample`: argmax, or the plain sampler with its own random stream) and
    accept the draft iff it is that token; else the pick is the next token. rows[i] are the logits
    after drafts[:i]. Each pick is a plain pick and takes one draw, as plain decoding's would, so
    the output is plain decoding's: the same tokens for greedy, the same distribution (and, with a
    seed, the same draws) for sampling. For a deterministic draft (q = 1 at d) this is the
    speculative-sampling rule: accepted with probability p(d), else a draw from p without d."""
    history = list(seen)
    for i, d in enumerate(drafts):
        pick = sample(apply_processors(processors, history, rows[i]))
        if pick != d:
            return i, pick
        history.append(d)
    return len(drafts), sample(apply_processors(processors, history, rows[len(drafts)]))


def accept_sampled(rows: np.ndarray, drafts: Sequence[int], q, seen: list[int], processors,
                   params: SamplingParams, rng: np.random.Generator) -> tuple[int, int]:
    """(accepted drafts, next token) by the speculative-sampling rule for sampled drafts: `q[i]` is
    the draft model's (candidates, probs) that drafts[i] was drawn from."""
    history = list(seen)
    for i, d in enumerate(drafts):
        p = target_probs(apply_processors(processors, history, rows[i]), params)
        qd = np.zeros_like(p)
        qd[q[i][0]] = q[i][1]
        if qd[d] > 0 and rng.random() * qd[d] < p[d]:          # accept with probability min(1, p/q)
            history.append(d)
            continue
        resid = np.maximum(p - qd, 0.0)
        total = resid.sum()
        if total <= 0.0:                                        # p == q: any residual draw is from p
            resid, total = p, p.sum()
        return i, int(rng.choice(resid.size, p=resid / total))
    p = target_probs(apply_processors(processors, history, rows[len(drafts)]), params)
    return len(drafts), int(rng.choice(p.size, p=p))


# ------------------------------------------------------------------------------------------- decoding
class Step(NamedTuple):
    """One generated token as the generator sees it: the model time and energy behind it (a forward
    that produced several tokens is split evenly among them), and speculation counts on the first
    token of each forward (`forwards` = 1 there, 0 on the others)."""
    token: int
    seconds: float
    joules: float | None
    drafted: int = 0
    accepted: int = 0
    forwards: int = 1


def _draft_picker(params: SamplingParams, processors, rng):
    """(logits, history) -> (token, q): the draft model's argmax, or a draw from its own filtered
    distribution q (same temperature, top-k, top-p, min-p) for the sampling rule."""
    def pick(logits, history):
        z = apply_processors(processors, history, logits)
        if params.temperature == 0:
            return int(np.argmax(z)), None
        cand, probs = _filtered_probs(z, params)
        return int(cand[rng.choice(len(cand), p=probs)]), (cand, probs)
    return pick


class Speculator:
    """Speculation for one model: the settings, the draft model's session (loaded once) and the draft
    policy, whose cost measurements carry over between replies (acceptance evidence is halved per reply)."""

    def __init__(self, spec: Speculation, session, *, draft_session=None, threads: int | None = None):
        self.spec = spec
        self.policy = DraftPolicy(max_draft=spec.max_draft)
        self.draft_session = draft_session
        if spec.mode == "draft" and draft_session is None:
            self.draft_session = load_draft_session(spec.draft, session, threads=threads)

    def make_drafter(self, cache, params: SamplingParams, processors, rng):
        """A drafter for one reply (tests substitute their own)."""
        if self.spec.mode == "draft":
            ds = self.draft_session
            return ModelDrafter(ds, min(cache.max_len, ds.context_length), pick=_draft_picker(params, processors, rng))
        return LookupDrafter()

    def steps(self, session, cache, logits, energy, t0: float, *, sample, params: SamplingParams, processors,
              seen: list[int], meter, budget: int) -> Iterator[Step]:
        self.policy.new_reply()
        rng = np.random.default_rng(None if params.seed is None else [params.seed, 0x5EC])
        return speculative_steps(session, cache, logits, energy, t0, sample=sample, params=params,
                                 processors=processors, seen=seen, meter=meter, budget=budget,
                                 drafter=self.make_drafter(cache, params, processors, rng), policy=self.policy, rng=rng)


def speculative_steps(session, cache, logits: np.ndarray, energy, t0: float, *, sample, params: SamplingParams,
                      processors, seen: list[int], meter, budget: int, drafter, policy: DraftPolicy,
                      rng: np.random.Generator) -> Iterator[Step]:
    """Tokens after a prefill whose last logits are `logits`, as `Step`s, drafting and checking
    several per forward. Appends each token to `seen` before yielding it. When the caller stops, the
    cache holds every yielded token but the last (as plain decoding leaves it). `budget`: tokens the
    caller may take (no drafting past it). `rng` draws the ratio rule's tests and corrections (a draft
    model's sampled drafts); deterministic drafts are checked with `sample`, plain decoding's sampler."""
    valid = cache.length                      # what the cache must hold if the caller stops now
    try:
        token = sample(apply_processors(processors, seen, logits))
        seen.append(token)
        emitted = 1
        yield Step(token, time.perf_counter() - t0, None if energy is None else energy.joules)
        while True:
            t0 = time.perf_counter()
            base = cache.length
            room = min(budget - emitted - 1, cache.max_len - base - 1)   # drafts that can be used and fit
            draft = drafter.propose(seen, policy, room) if room > 0 else Draft([], None, None)
            if not draft.tokens:                                   # plain decoding: one row
                t1 = time.perf_counter()
                logits, energy = meter.run(session.forward, np.array([token], np.int64), cache)
                policy.forward(1, time.perf_counter() - t1)
                valid = cache.length
                token = sample(apply_processors(processors, seen, logits))
                seen.append(token)
                emitted += 1
                yield Step(token, time.perf_counter() - t0, None if energy is None else energy.joules)
                continue
            d = len(draft.tokens)
            t1 = time.perf_counter()
            rows, energy = meter.run(session.forward_all, np.array([token] + draft.tokens, np.int64), cache)
            policy.forward(d + 1, time.perf_counter() - t1)
            if draft.q is None:
                a, nxt = accept_matching(rows, draft.tokens, seen, processors, sample)
            else:
                a, nxt = accept_sampled(rows, draft.tokens, draft.q, seen, processors, params, rng)
            policy.accepted(draft.key, d, a)
            cache.truncate(base + 1 + a)                           # roll back the rejected drafts
            out = draft.tokens[:a] + [nxt]
            seconds = (time.perf_counter() - t0) / len(out)
            joules = None if energy is None else energy.joules / len(out)
            for j, tok in enumerate(out):
                valid = base + 1 + j
                seen.append(tok)
                emitted += 1
                yield Step(tok, seconds, joules, d if j == 0 else 0, a if j == 0 else 0, 1 if j == 0 else 0)
            token = nxt
    finally:
        if cache.length > valid:
            cache.truncate(valid)
