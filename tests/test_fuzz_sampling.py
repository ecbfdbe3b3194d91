"""Property-based fuzzing of the sampler (edge_llm/sampling.py) over its whole parameter space.

For any valid SamplingParams and any finite logits: a token id in range comes out, never an
exception; temperature 0 is the argmax of the penalised logits; the token is one the filters keep
(top-k rank, min-p threshold), and the kept probabilities are finite and sum to one.
"""
from __future__ import annotations

import numpy as np
import pytest
from fuzz_settings import fuzz
from hypothesis import assume, given
from hypothesis import strategies as st

from edge_llm.sampling import SamplingParams, _filtered_probs, apply_repetition_penalty, make_sampler

params = st.builds(
    SamplingParams,
    temperature=st.one_of(st.just(0.0), st.floats(0.05, 5.0), st.floats(1e-3, 0.05)),
    top_k=st.one_of(st.just(0), st.integers(1, 40)),
    top_p=st.one_of(st.just(1.0), st.floats(1e-6, 1.0)),
    min_p=st.one_of(st.just(0.0), st.floats(0.0, 0.999)),
    repetition_penalty=st.one_of(st.just(1.0), st.floats(0.1, 5.0)),
    seed=st.integers(0, 2**32 - 1),
)


@st.composite
def logits_and_history(draw, max_vocab=1500):
    n = draw(st.integers(1, max_vocab))
    kind = draw(st.sampled_from(["normal", "ties", "spiky"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "normal":
        x = rng.standard_normal(n) * draw(st.floats(0.01, 30.0))
    elif kind == "ties":
        x = rng.integers(-3, 3, n).astype(np.float64)
    else:
        x = np.full(n, -1e4)
        x[rng.integers(0, n, max(1, n // 50))] = rng.uniform(-50, 50)
    history = draw(st.lists(st.integers(0, n - 1), max_size=20))
    return x.astype(np.float32), history


@fuzz(200)
@given(p=params, lh=logits_and_history())
def test_sampler_returns_a_kept_token_for_any_parameters(p, lh):
    x, history = lh
    token = make_sampler(p)(x.copy(), history)
    assert isinstance(token, int) and 0 <= token < len(x)
    z = apply_repetition_penalty(x, history, p.repetition_penalty)
    if p.temperature == 0:
        assert token == int(np.argmax(z))
        return
    ids, probs = _filtered_probs(z, p)
    assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0) and (probs >= 0).all()
    assert token in set(ids.tolist())
    if p.top_k:
        assert (z > z[token]).sum() < p.top_k                      # within the top k (ties allowed)
    full = np.exp((z.astype(np.float64) - z.max()) / p.temperature)
    if p.min_p:
        assert full[token] >= p.min_p * full.max() * (1 - 1e-9)


@fuzz(60)
@given(p=params, lh=logits_and_history(max_vocab=300), calls=st.integers(2, 6))
def test_same_seed_same_tokens(p, lh, calls):
    x, history = lh
    a, b = make_sampler(p), make_sampler(p)
    assert [a(x, history) for _ in range(calls)] == [b(x, history) for _ in range(calls)]


@fuzz(100)
@given(lh=logits_and_history(), penalty=st.floats(0.1, 10.0))
def test_repetition_penalty_only_lowers_seen_tokens(lh, penalty):
    x, history = lh
    y = apply_repetition_penalty(x, history, penalty)
    seen = np.zeros(len(x), bool)
    seen[history] = True
    np.testing.assert_array_equal(y[~seen], x[~seen])
    if penalty >= 1:
        assert (y[seen] <= x[seen]).all()
    else:
        assert (y[seen] >= x[seen]).all()


@fuzz(100)
@given(temperature=st.floats(0.0, 10.0), top_k=st.integers(-3, 5), top_p=st.floats(-1.0, 2.0),
       min_p=st.floats(-1.0, 2.0), penalty=st.floats(-1.0, 3.0))
def test_params_are_valid_or_refused_with_value_error(temperature, top_k, top_p, min_p, penalty):
    try:
        p = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=penalty)
    except ValueError:
        assume(False)
        return
    assert p.temperature >= 0 and p.top_k >= 0 and 0 < p.top_p <= 1 and 0 <= p.min_p < 1 and p.repetition_penalty > 0
    x = np.linspace(-3, 3, 50, dtype=np.float32)
    assert 0 <= make_sampler(p)(x, [1, 2]) < 50


@fuzz(30)
@given(temperature=st.floats(1e-320, 1e-300))
def test_tiny_temperatures_do_not_crash(temperature):
    """Found by this fuzzer: a subnormal temperature used to overflow logits / T into NaN probabilities
    (fixed in sampling.py by scaling logits - max)."""
    x = np.linspace(-3, 3, 50, dtype=np.float32)
    assert make_sampler(SamplingParams(temperature=temperature))(x) == 49     # as good as greedy
