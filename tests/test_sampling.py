"""The sampler: greedy is argmax, filters keep exactly the tokens they should, seeds reproduce."""
import numpy as np
import pytest

from edge_llm.sampling import SamplingParams, _filtered_probs, apply_repetition_penalty, make_sampler


def logits_from_probs(p):
    return np.log(np.asarray(p, np.float64)).astype(np.float32)


def test_greedy_is_argmax():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert make_sampler(SamplingParams())(x) == int(np.argmax(x))


def test_top_k_and_top_p_and_min_p_sets():
    x = logits_from_probs([0.5, 0.2, 0.15, 0.1, 0.05])
    ids, p = _filtered_probs(x, SamplingParams(temperature=1.0, top_k=2))
    assert sorted(ids.tolist()) == [0, 1]
    np.testing.assert_allclose(p, [0.5 / 0.7, 0.2 / 0.7], rtol=1e-6)
    ids, _ = _filtered_probs(x, SamplingParams(temperature=1.0, top_p=0.8))
    assert ids.tolist() == [0, 1, 2]        # 0.5 + 0.2 < 0.8 <= 0.85
    ids, _ = _filtered_probs(x, SamplingParams(temperature=1.0, min_p=0.3))
    assert ids.tolist() == [0, 1]           # p >= 0.3 * 0.5


def test_wide_nucleus_falls_back_to_full_sort():
    x = np.zeros(5000, np.float32)          # uniform: the nucleus needs 4500 tokens
    ids, p = _filtered_probs(x, SamplingParams(temperature=1.0, top_p=0.9))
    assert 4500 <= len(ids) <= 4501 and p.sum() == pytest.approx(1.0)


def test_sampling_frequencies_follow_probabilities():
    x = logits_from_probs([0.6, 0.3, 0.1])
    s = make_sampler(SamplingParams(temperature=1.0, seed=0))
    counts = np.bincount([s(x) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.6, 0.3, 0.1], atol=0.03)


def test_seed_reproduces():
    x = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    a = [make_sampler(SamplingParams(temperature=1.0, seed=5))(x) for _ in range(3)]
    s = make_sampler(SamplingParams(temperature=1.0, seed=5))
    assert [s(x) for _ in range(1)] == a[:1]
    s1, s2 = make_sampler(SamplingParams(temperature=1.0, seed=5)), make_sampler(SamplingParams(temperature=1.0, seed=5))
    assert [s1(x) for _ in range(20)] == [s2(x) for _ in range(20)]


def test_repetition_penalty():
    x = np.array([2.0, -2.0, 1.0], np.float32)
    y = apply_repetition_penalty(x, [0, 1], 2.0)
    assert y.tolist() == [1.0, -4.0, 1.0]


def test_defaults_from_generation_config():
    p = SamplingParams.from_generation_config({"do_sample": True, "temperature": 0.8, "top_p": 0.8}, seed=3)
    assert (p.temperature, p.top_p, p.seed) == (0.8, 0.8, 3)
    assert SamplingParams.from_generation_config({"do_sample": True, "temperature": 0.8}, temperature=0).temperature == 0


def test_invalid_params():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
