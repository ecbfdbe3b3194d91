"""Known answers for the sampler (edge_llm/sampling.py): top-p exactly at a cumulative boundary, min-p
at its threshold, top-k = 1 is greedy, temperature 0 is argmax, the repetition penalty, the candidate
window and its full-sort fallback, parameter ranges and generation_config defaults. Probabilities are
exact binary fractions (logits 0 and -ln 2), so the boundaries are exact. Each test fails if its
feature breaks (see benchmarks/results/mutation-report.md)."""
from __future__ import annotations

import numpy as np
import pytest

# ---- sampler boundaries ----------------------------------------------------------------------------
# Logits of 0 and -ln 2 give probabilities that are exact binary fractions (0.5, 0.25, 0.25), so a
# cumulative sum can land exactly on top_p and a probability exactly on min_p x p_max.
LN2 = float(np.log(2.0))
HALF_QUARTER_QUARTER = np.array([0.0, -LN2, -LN2])


def _kept(logits, **params):
    from edge_llm.sampling import SamplingParams, _filtered_probs
    ids, probs = _filtered_probs(np.asarray(logits), SamplingParams(**{"temperature": 1.0, **params}))
    assert probs.sum() == pytest.approx(1.0)
    return ids.tolist(), probs.tolist()


@pytest.mark.parametrize("top_p, kept", [(0.5, [0]), (0.5000001, [0, 1]), (0.75, [0, 1]),
                                         (0.7500001, [0, 1, 2]), (1.0, [0, 1, 2])])
def test_top_p_stops_at_the_smallest_prefix_reaching_it(top_p, kept):
    ids, probs = _kept(HALF_QUARTER_QUARTER, top_p=top_p)
    assert ids == kept
    full = np.array([0.5, 0.25, 0.25])[kept]
    np.testing.assert_allclose(probs, full / full.sum())            # renormalised over the nucleus


def test_top_p_boundary_past_the_candidate_window():
    """2048 equal logits: the first 1024 candidates hold exactly half the mass."""
    from edge_llm.sampling import NUCLEUS_CANDIDATES
    x = np.zeros(2 * NUCLEUS_CANDIDATES)
    assert len(_kept(x, top_p=0.5)[0]) == NUCLEUS_CANDIDATES
    assert len(_kept(x, top_p=0.5 + 1e-6)[0]) == NUCLEUS_CANDIDATES + 1       # needs the full sort
    assert len(_kept(x, top_p=0.25)[0]) == NUCLEUS_CANDIDATES // 2


@pytest.mark.parametrize("min_p, kept", [(0.5, [0, 1, 2]), (0.5000001, [0]), (0.0, [0, 1, 2]), (0.99, [0])])
def test_min_p_keeps_tokens_at_exactly_the_threshold(min_p, kept):
    assert _kept(HALF_QUARTER_QUARTER, min_p=min_p)[0] == kept


def test_min_p_applies_in_the_wide_nucleus_fallback_too():
    x = np.concatenate([np.zeros(1500), np.full(1500, -LN2)])         # two levels, 3000 tokens
    ids, _ = _kept(x, top_p=0.999, min_p=0.6)
    assert sorted(ids) == list(range(1500))


def test_temperature_scales_logits_before_softmax():
    # logits 0 and -2 ln 2 at temperature 2 are 0 and -ln 2: probabilities 2/3 and 1/3
    ids, probs = _kept([0.0, -2 * LN2], temperature=2.0)
    assert ids == [0, 1]
    np.testing.assert_allclose(probs, [2 / 3, 1 / 3])
    ids, probs = _kept([0.0, -2 * LN2], temperature=0.5)               # sharper: 16/17 and 1/17
    np.testing.assert_allclose(probs, [16 / 17, 1 / 17])


def test_top_k_keeps_exactly_k_and_top_k_1_is_greedy():
    from edge_llm.sampling import SamplingParams, make_sampler
    x = np.random.default_rng(2).standard_normal(3000).astype(np.float32)
    assert sorted(_kept(x, top_k=5)[0]) == sorted(np.argsort(-x)[:5].tolist())
    for seed in range(20):
        for params in ({"top_k": 1}, {"top_p": 1e-9}, {"min_p": 0.999}):
            s = make_sampler(SamplingParams(temperature=1.5, seed=seed, **params))
            assert s(x) == int(np.argmax(x)), (seed, params)


def test_temperature_zero_is_argmax_whatever_the_filters():
    from edge_llm.sampling import SamplingParams, make_sampler
    x = np.random.default_rng(4).standard_normal(500).astype(np.float32)
    for params in ({}, {"top_k": 3}, {"top_p": 0.1}, {"min_p": 0.5}, {"seed": 9}):
        assert make_sampler(SamplingParams(temperature=0.0, **params))(x) == int(np.argmax(x))


@pytest.mark.parametrize("logits, history, penalty, greedy", [
    ([2.0, 1.9], [0], 1.2, 1),            # positive logit divided: 2.0 / 1.2 = 1.67 < 1.9
    ([2.0, 1.9], [0], 1.0, 0),            # penalty 1 is off
    ([2.0, 1.9], [0], 1.05, 0),           # 2.0 / 1.05 = 1.905 > 1.9
    ([-1.0, -1.1], [0], 1.2, 1),          # negative logit multiplied: -1.2 < -1.1
    ([-1.0, -1.1], [0, 1, 1], 1.2, 0),    # both seen (repeats count once): -1.2 vs -1.32
    ([2.0, 1.9], [], 5.0, 0),             # nothing seen yet
])
def test_repetition_penalty_moves_the_greedy_choice(logits, history, penalty, greedy):
    from edge_llm.sampling import SamplingParams, apply_repetition_penalty, make_sampler
    x = np.asarray(logits, np.float32)
    assert make_sampler(SamplingParams(repetition_penalty=penalty))(x, history) == greedy
    before = x.copy()
    apply_repetition_penalty(x, history, penalty)
    np.testing.assert_array_equal(x, before)                         # the caller's logits are untouched


def test_repetition_penalty_values():
    from edge_llm.sampling import apply_repetition_penalty
    y = apply_repetition_penalty(np.array([3.0, -3.0, 0.0, 1.0], np.float32), [0, 1, 2, 0], 1.5)
    np.testing.assert_allclose(y, [2.0, -4.5, 0.0, 1.0])


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.01},
                                 {"min_p": -0.1}, {"min_p": 1.0}, {"repetition_penalty": 0.0}])
def test_sampling_params_refuse_out_of_range_values(bad):
    from edge_llm.sampling import SamplingParams
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


def test_top_k_above_the_candidate_window_keeps_k_tokens():
    assert len(_kept(np.zeros(5000), top_k=2000)[0]) == 2000


# ---- sampler: the candidate window, the wide-nucleus fallback, parameters from generation_config ----

def test_no_filter_keeps_the_whole_vocabulary():
    """Without top-k/top-p every token stays a candidate, however large the vocabulary."""
    assert len(_kept(np.zeros(3000))[0]) == 3000
    assert len(_kept(np.zeros(3000), min_p=0.5)[0]) == 3000


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_top_k_is_exactly_the_k_best_on_many_draws(k):
    for seed in range(40):
        x = np.random.default_rng(seed).standard_normal(2000).astype(np.float32)
        assert sorted(_kept(x, top_k=k)[0]) == sorted(np.argsort(-x)[:k].tolist()), seed


def test_top_k_near_the_vocabulary_size_and_at_the_window():
    x = np.random.default_rng(8).standard_normal(50).astype(np.float32)
    assert sorted(_kept(x, top_k=49)[0]) == sorted(np.argsort(-x)[:49].tolist())
    x = np.random.default_rng(9).standard_normal(2000).astype(np.float32)
    assert sorted(_kept(x, top_k=1000)[0]) == sorted(np.argsort(-x)[:1000].tolist())


def test_top_k_still_applies_with_top_p():
    x = np.random.default_rng(7).standard_normal(2000).astype(np.float32) * 0.01   # flat: top-p wants many
    ids, _ = _kept(x, top_k=3, top_p=0.99)
    assert sorted(ids) == sorted(np.argsort(-x)[:3].tolist())


def test_min_p_and_top_p_together_keep_the_intersection():
    assert _kept(HALF_QUARTER_QUARTER, min_p=0.6, top_p=0.99)[0] == [0]        # min-p alone: [0]
    assert _kept(HALF_QUARTER_QUARTER, min_p=0.1, top_p=0.5)[0] == [0]         # top-p alone: [0]
    x = np.zeros(3000)                                                        # the wide-nucleus path
    assert len(_kept(x, top_p=0.5, min_p=0.5)[0]) == 1500


def test_wide_nucleus_fallback_exact_boundary_and_temperature():
    assert len(_kept(np.zeros(4096), top_p=0.5)[0]) == 2048                   # cumulative mass exactly 0.5
    two_levels = np.concatenate([np.zeros(1500), np.full(1500, -2 * LN2)])
    ids, probs = _kept(two_levels, top_p=0.9999, temperature=2.0)             # at T=2 the levels are 0, -ln 2
    assert len(ids) == 3000 and probs[0] / probs[-1] == pytest.approx(2.0)
    ids, probs = _kept(two_levels + 400.0, top_p=0.9999)                       # large logits must not overflow
    assert np.isfinite(probs).all() and probs[0] / probs[-1] == pytest.approx(4.0)


def test_wide_nucleus_min_p_is_relative_to_the_best_token():
    one_then_halves = np.concatenate([[0.0], np.full(2999, -LN2)])
    assert _kept(one_then_halves, top_p=0.9, min_p=0.75)[0] == [0]
    two_levels = np.concatenate([np.zeros(1500), np.full(1500, -LN2)])
    assert len(_kept(two_levels, top_p=0.9999, min_p=0.5)[0]) == 3000           # exactly at the threshold: kept


@pytest.mark.parametrize("name, lo, hi", [("presence_penalty", -2, 2), ("frequency_penalty", -2, 2)])
def test_presence_and_frequency_penalty_ranges(name, lo, hi):
    from edge_llm.sampling import SamplingParams
    SamplingParams(**{name: lo}), SamplingParams(**{name: hi})
    for bad in (lo - 1e-6, hi + 1e-6):
        with pytest.raises(ValueError, match=f"^invalid {name}: "):
            SamplingParams(**{name: bad})


def test_logit_bias_range():
    from edge_llm.sampling import SamplingParams
    SamplingParams(logit_bias={1: -100, 2: 100})
    for bad in (-100.5, 100.5):
        with pytest.raises(ValueError, match="^invalid logit_bias: "):
            SamplingParams(logit_bias={1: bad})


def test_sampling_params_from_generation_config():
    from edge_llm.sampling import SamplingParams
    gen = {"do_sample": True, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}
    assert SamplingParams.from_generation_config(gen) == SamplingParams(temperature=0.7, top_k=40, top_p=0.9,
                                                                      repetition_penalty=1.1)
    assert SamplingParams.from_generation_config({}) == SamplingParams()
    assert SamplingParams.from_generation_config({"do_sample": False, "temperature": 0.7}).temperature == 0.0
    assert SamplingParams.from_generation_config({"temperature": 0.7}).temperature == 0.0   # greedy unless do_sample
    assert SamplingParams.from_generation_config({"top_k": None}).top_k == 0
    p = SamplingParams.from_generation_config(gen, top_k=5, temperature=None)   # None overrides nothing
    assert (p.top_k, p.temperature) == (5, 0.7)
