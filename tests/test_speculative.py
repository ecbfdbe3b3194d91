"""Speculative decoding (edge_llm/speculative.py): greedy output token for token equal to plain
decoding, the sampling rule keeps the distribution, the KV rollback leaks nothing, and the drafters,
policy, records and CLI option do what they say.

Exactness is tested on packages whose k-row forward rounds like the 1-row one (fp32 weights, or int4
with fp32 activations): with int8 activations (accuracy_level 4) the two forwards round differently
and greedy output can differ at near-ties (docs/speculative.md measures it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_SHARED, TINY

from edge_llm.api import Model
from edge_llm.errors import EdgeLLMError, PackageError
from edge_llm.generate import generate_tokens
from edge_llm.paths import BUNDLED
from edge_llm.records import format_record, reply_record
from edge_llm.sampling import SamplingParams, make_sampler
from edge_llm.speculative import (
    Draft,
    DraftPolicy,
    LookupDrafter,
    ModelDrafter,
    Speculation,
    Speculator,
    accept_matching,
    accept_sampled,
    load_draft_session,
    parse_speculate,
    target_probs,
)

FAMILIES = Path(__file__).parent / "data" / "tiny-families"


# ------------------------------------------------------------------------------------------ helpers
class ForcedPolicy(DraftPolicy):
    """Checks every draft token offered (no cost model), so every path of the rule runs."""

    def length(self, available: int, key) -> int:
        return min(available, self.max_draft)


class OracleDrafter:
    """Drafts the plain reply's next tokens, each replaced by a wrong one with probability `bad`:
    acceptance and rejection at every draft position, seeded."""

    def __init__(self, start: int, reference: list[int], *, vocab: int, bad: float = 0.3, k: int = 5, seed: int = 0):
        self.start, self.reference, self.vocab, self.bad, self.k = start, reference, vocab, bad, k
        self.rng = np.random.default_rng(seed)

    def propose(self, ctx, policy, limit):
        i = len(ctx) - self.start                     # tokens of the reply already in ctx
        tokens = list(self.reference[i:i + min(self.k, limit)])
        for j in range(len(tokens)):
            if self.rng.random() < self.bad:
                tokens[j] = int((tokens[j] + 1 + self.rng.integers(self.vocab - 1)) % self.vocab)
        return Draft(tokens, None, "oracle")


def forced(model: Model, drafter_factory=None, *, mode: str = "lookup") -> Speculator:
    """A speculator that drafts whenever it can, with the given drafter (default: the mode's own)."""
    sp = Speculator(Speculation(mode, model.manifest.path if mode == "draft" else None), model.session,
                    draft_session=model.session if mode == "draft" else None)
    sp.policy = ForcedPolicy(max_draft=6)
    if drafter_factory is not None:
        sp.make_drafter = lambda cache, params, processors, rng: drafter_factory()
    return sp


def plain_ids(model: Model, prompt: list[int], n: int, params=SamplingParams()) -> list[int]:
    model.speculator = None
    return [r.token_id for r in model.stream(prompt, params=params, max_new_tokens=n, ignore_eos=True)]


def spec_records(model: Model, speculator, prompt: list[int], n: int, params=SamplingParams()):
    model.speculator = speculator
    try:
        return list(model.stream(prompt, params=params, max_new_tokens=n, ignore_eos=True))
    finally:
        model.speculator = None


@pytest.fixture(scope="module")
def fp32_family(tmp_path_factory):
    """name -> Model of a tiny transformers-made checkpoint exported fp32 (row-invariant kernels)."""
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import Recipe
    root, out = tmp_path_factory.mktemp("spec"), {}
    for name in ("llama", "qwen2"):
        export_checkpoint(FAMILIES / name, root / name, recipe=Recipe(precision="fp32"))
        out[name] = Model.load(root / name, threads=1, speculate="off")
    return out


@pytest.fixture(scope="module")
def bundled():
    return Model.load(BUNDLED, threads=1, speculate="off")


# -------------------------------------------------------------------------------- greedy exactness
PROMPTS = ([5, 6, 7, 8, 5, 6, 7, 8, 5, 6], [100, 200, 300, 100, 200, 300, 100], [42, 17, 42, 17, 9])


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_identical_to_plain_with_drafts_right_and_wrong(fp32_family, name):
    model = fp32_family[name]
    vocab = model.manifest.model.vocab_size
    for seed, prompt in enumerate(PROMPTS):
        ref = plain_ids(model, prompt, 48)
        sp = forced(model, lambda: OracleDrafter(len(prompt), ref, vocab=vocab, seed=seed))
        recs = spec_records(model, sp, prompt, 48)
        assert [r.token_id for r in recs] == ref, f"{name} prompt {seed}"
        drafted, accepted = sum(r.drafted for r in recs), sum(r.accepted for r in recs)
        assert drafted > 20 and 0 < accepted < drafted       # both acceptance and rejection happened
        assert sum(r.forwards for r in recs[1:]) < len(recs) - 1


def test_seeded_sampling_gives_the_plain_text(fp32_family):
    """Deterministic drafts are checked by drawing each token as plain sampling does (one draw per
    token, same generator), so a seed gives the same tokens with and without speculation."""
    model = fp32_family["qwen2"]
    vocab = model.manifest.model.vocab_size
    for seed, prompt in enumerate(PROMPTS):
        params = SamplingParams(temperature=0.7, top_p=0.9, seed=seed)
        ref = plain_ids(model, prompt, 40, params)
        for sp in (forced(model), forced(model, lambda: OracleDrafter(len(prompt), ref, vocab=vocab, seed=seed))):
            recs = spec_records(model, sp, prompt, 40, params)
            assert [r.token_id for r in recs] == ref
        assert 0 < sum(r.accepted for r in recs) < sum(r.drafted for r in recs)   # the oracle's drafts


@pytest.mark.parametrize("penalties", [dict(repetition_penalty=3.0), dict(presence_penalty=1.5, frequency_penalty=1.0)])
def test_greedy_identical_with_logits_processors(fp32_family, penalties):
    """Each checked position sees the drafts before it as part of the reply (penalties depend on them)."""
    model = fp32_family["llama"]
    params = SamplingParams(**penalties)
    vocab = model.manifest.model.vocab_size
    for seed, prompt in enumerate(PROMPTS):
        ref = plain_ids(model, prompt, 40, params)
        for sp in (forced(model), forced(model, lambda: OracleDrafter(len(prompt), ref, vocab=vocab, bad=0.1, seed=seed))):
            recs = spec_records(model, sp, prompt, 40, params)
            assert [r.token_id for r in recs] == ref


def test_greedy_identical_with_a_draft_model(fp32_family):
    """The draft model path (its own session and cache, rolled back each round); here the target
    itself drafts, so nearly everything is accepted and the rollback runs at every mismatch."""
    model = fp32_family["qwen2"]
    for prompt in PROMPTS:
        ref = plain_ids(model, prompt, 40)
        recs = spec_records(model, forced(model, mode="draft"), prompt, 40)
        assert [r.token_id for r in recs] == ref
        assert sum(r.accepted for r in recs) > 0


@NEEDS_SHARED
def test_bundled_weights_greedy_chat_identical(tmp_path):
    """The bundled model's own checkpoint and recipe, exported with fp32 activations (accuracy
    level 0), chats token for token alike with and without speculation, over two turns."""
    from edge_llm.api import Conversation
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import RECIPES
    # float32 scales: float16-scale kernels round a k-row forward differently from a 1-row one (rows_exact)
    export_checkpoint(TINY, tmp_path / "pkg", recipe=dataclasses.replace(RECIPES["clip-asym-b128"], accuracy_level=0))
    model = Model.load(tmp_path / "pkg", threads=1, speculate="off")
    turns = ["Quote John 3:16.", "And God said, Let there be light: and there was light.", 'What does "lantern" mean?']
    replies = {}
    for mode in ("off", "on"):
        model.speculator = forced(model) if mode == "on" else None
        conv = Conversation(model)
        replies[mode] = ["".join(r.text for r in conv.send(t, params=SamplingParams(), max_new_tokens=60)) for t in turns]
        if mode == "on":
            assert conv.cache.length == len(conv.cached_ids)       # rolled back to what was fed
    assert replies["on"] == replies["off"]


# ----------------------------------------------------------------------------- KV cache and forward
def test_forward_all_rows_and_binding_restored(fp32_family):
    """forward_all gives every position's logits (as a forward from an empty context does), and
    forward() afterwards is unchanged: one row of logits, bit-identical to a cache that never ran it."""
    s = fp32_family["llama"].session
    ids = np.array([5, 9, 14, 3, 77, 8, 120, 41, 6, 7], np.int64)
    a, b = s.new_cache(), s.new_cache()
    s.forward(ids[:6], a)
    s.forward(ids[:6], b)
    rows = s.forward_all(ids[6:], a)
    assert rows.shape == (4, s.vocab) and a.length == 10
    np.testing.assert_allclose(rows, s.logits_all(ids)[6:], atol=1e-4)
    a.truncate(6)
    np.testing.assert_array_equal(s.forward([9, 10, 11], a), s.forward([9, 10, 11], b))   # a prefill too


def test_rolled_back_rows_never_leak(bundled):
    """Rows past `length` (rejected drafts) are poisoned with NaN and huge values: the next forward,
    one row or several, is bit-identical to a cache that never held them."""
    s = bundled.session
    prompt = bundled.tokenizer.encode("And God said, Let there be light", bos=True)
    cache = s.new_cache()
    s.forward(prompt, cache)
    s.forward_all([11, 305, 2000, 7, 99], cache)          # 1 accepted + 4 drafts to reject
    cache.truncate(len(prompt) + 2)
    assert cache.length == len(prompt) + 2 and cache.capacity > cache.length + 3
    clean = cache.copy()
    for k, v in cache.arrays:
        k[:, :, cache.length:] = np.nan
        v[:, :, cache.length:] = 1e30
    one = s.forward([42], cache)
    assert np.isfinite(one).all()
    np.testing.assert_array_equal(one, s.forward([42], clean))
    cache.truncate(cache.length - 1)
    clean.truncate(clean.length - 1)
    for k, v in cache.arrays:
        k[:, :, cache.length:] = np.nan
    np.testing.assert_array_equal(s.forward_all([42, 8, 9], cache), s.forward_all([42, 8, 9], clean))


def test_stopping_inside_an_accepted_burst_rolls_the_cache_back(fp32_family):
    model = fp32_family["llama"]
    prompt = PROMPTS[0]
    ref = plain_ids(model, prompt, 30)
    sp = forced(model, lambda: OracleDrafter(len(prompt), ref, vocab=model.manifest.model.vocab_size, bad=0.0))
    for stop_at in (5, 9, 14):                            # inside bursts of up to 6 accepted drafts
        cache = model.cache()
        gen = generate_tokens(model.session, model.tokenizer, cache, prompt, max_new_tokens=30,
                              stop_ids=[ref[stop_at]] if ref[stop_at] not in ref[:stop_at] else [], log=False,
                              speculator=sp)
        taken = []
        for rec in gen:
            taken.append(rec.token_id)
            if len(taken) == stop_at + 1:
                break
        gen.close()
        assert taken == ref[:stop_at + 1]
        assert cache.length == len(prompt) + stop_at      # every token but the last is fed, no more


# ---------------------------------------------------------------------------------- sampling rule
def _chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token outside the target distribution's support came out"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


@pytest.mark.parametrize("drafts", ["deterministic", "sampled"])
def test_sampling_rule_keeps_each_position_distribution(drafts):
    """accept_sampled on known logits: the first emitted token is distributed as p(L0), and the one
    after an accepted first draft as p(L1) (chi-square over 8,000 draws, seeded)."""
    rng = np.random.default_rng(1)
    vocab = 6
    rows = np.log(np.array([[0.05, 0.40, 0.25, 0.10, 0.15, 0.05],
                            [0.30, 0.05, 0.05, 0.30, 0.20, 0.10],
                            [0.10, 0.10, 0.60, 0.10, 0.05, 0.05]], np.float32))
    params = SamplingParams(temperature=1.0)
    p0, p1 = target_probs(rows[0].copy(), params), target_probs(rows[1].copy(), params)
    q0 = np.array([0.30, 0.10, 0.10, 0.20, 0.20, 0.10])
    q1 = np.array([0.05, 0.05, 0.10, 0.50, 0.10, 0.20])
    first, second, n, n2 = np.zeros(vocab), np.zeros(vocab), 8000, 0
    sample = make_sampler(dataclasses.replace(params, seed=2))
    for _ in range(n):
        if drafts == "deterministic":                 # lookup: pick as plain sampling does, match
            d = [2, 3]
            a, nxt = accept_matching(rows.copy(), d, [], [], sample)
        else:                                         # a draft model's own draws: the ratio rule
            d = [int(rng.choice(vocab, p=q0)), int(rng.choice(vocab, p=q1))]
            q = [(np.arange(vocab), q0), (np.arange(vocab), q1)]
            a, nxt = accept_sampled(rows.copy(), d, q, [], [], params, rng)
        out = d[:a] + [nxt]
        first[out[0]] += 1
        if len(out) > 1:                          # the first draft was accepted
            second[out[1]] += 1
            n2 += 1
    assert _chi2(first, n * p0) < 20.5            # chi-square, 5 df: 20.5 is the 0.1% critical value
    assert n2 > 500 and _chi2(second, n2 * p1) < 20.5    # given the first draft was accepted: p(L1)


@pytest.mark.slow
def test_sampling_with_drafts_keeps_the_bundled_models_distribution(bundled):
    """On the bundled model (temperature 1, top-k 6): the 2nd and 3rd generated tokens, which come
    from the draft check, have the frequencies plain sampling gives (two-sample chi-square, 600
    seeds each). The drafts are the model's own argmax (deterministic drafts, q = 1): accepted about
    as often as rejected, so both branches of the rule run."""
    model, n = bundled, 600
    prompt = model.tokenizer.encode("And God said, Let there be", bos=True)
    params = lambda seed: SamplingParams(temperature=1.0, top_k=6, seed=seed)   # noqa: E731
    argmax = lambda logits, history: (int(np.argmax(logits)), None)            # noqa: E731
    sp = forced(model, lambda: ModelDrafter(model.session, model.context_length, pick=argmax))
    sp.policy.max_draft = 2
    counts = {"plain": [{}, {}], "spec": [{}, {}]}
    base = model.session.new_cache()
    logits = model.session.forward(prompt, base)
    drafted = accepted = 0
    for mode in ("plain", "spec"):
        for seed in range(n):
            cache = base.copy()
            recs = list(generate_tokens(model.session, model.tokenizer, cache, [], logits=logits, history=prompt,
                                        params=params(seed), max_new_tokens=3, ignore_eos=True, log=False,
                                        speculator=sp if mode == "spec" else None))
            if mode == "spec":
                drafted += sum(r.drafted for r in recs)
                accepted += sum(r.accepted for r in recs)
            for pos in (1, 2):
                c = counts[mode][pos - 1]
                c[recs[pos].token_id] = c.get(recs[pos].token_id, 0) + 1
    assert drafted >= n and 0.2 < accepted / drafted < 0.8     # both branches of the rule ran
    for pos in (0, 1):
        a, b = counts["plain"][pos], counts["spec"][pos]
        keys = sorted(set(a) | set(b))
        table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]], float)
        big = table.sum(0) >= 10                          # pool rare tokens into one cell
        table = np.column_stack([table[:, big], table[:, ~big].sum(1)]) if (~big).any() else table[:, big]
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        stat = float(((table - expected) ** 2 / expected).sum())
        df = table.shape[1] - 1
        assert stat < df + 4.5 * np.sqrt(2 * df) + 6, f"token {pos + 2}: chi2 {stat:.1f} with {df} df"


# ------------------------------------------------------------------------------- drafters, policy
def test_lookup_drafts_what_followed_the_latest_longest_match():
    d = LookupDrafter()
    assert d.available([1, 2, 3, 4, 9, 1, 2, 3], 3) == ([4, 9, 1], 3)
    d = LookupDrafter()
    assert d.available([1, 2, 7, 1, 2, 8, 5, 1, 2], 4) == ([8, 5, 1, 2], 2)   # latest (1, 2), not the first
    d = LookupDrafter()
    assert d.available([1, 2, 3], 4) == ([], 0)
    ctx = [1, 2, 3]
    d.available(ctx, 4)
    ctx += [4, 1, 2]                                      # the index grows with the context
    assert d.available(ctx, 2) == ([3, 4], 2)


def test_policy_drafts_only_when_it_pays_and_tries_again_later():
    p = DraftPolicy(max_draft=8)
    assert p.length(5, "k") == 0                          # the one-row cost is not known yet
    p.forward(1, 0.010)
    for _ in range(8):                                    # each extra row costs a fifth of a forward
        p.forward(6, 0.020)
    assert p.length(8, "untried") > 0                     # an untried key is tried
    for _ in range(40):
        p.accepted("good", 8, 8)
        p.accepted("bad", 4, 0)
    assert p.length(8, "good") == 8
    assert p.length(8, "bad") == 0
    cheap = DraftPolicy(max_draft=8)
    cheap.forward(1, 0.010)
    for _ in range(8):
        cheap.forward(3, 0.040)                           # each extra row costs more than a forward
        cheap.accepted("good", 8, 7)
    assert cheap.length(8, "good") == 0
    for _ in range(200):                                  # nothing drafted: the estimate drifts back up
        p.length(8, "bad")
    assert p.length(8, "bad") > 0
    p.forward(6, 0.200)                                   # one slow moment (a shared machine) changes nothing
    assert p.length(8, "good") == 8
    for _ in range(400):                                  # off for cost: the cost evidence fades too,
        cheap.length(8, "good")                           # and drafting is measured again
    assert cheap.length(8, "good") > 0
    cliff = DraftPolicy(max_draft=8)                      # a kernel that jumps at 5 rows (seen on the tiny model)
    cliff.forward(1, 0.001)
    for rows, sec in ((2, 0.0012), (3, 0.0014), (5, 0.019)) * 3:
        cliff.forward(rows, sec)
    for _ in range(10):
        cliff.accepted("good", 8, 8)
    assert cliff.costs(6)[5] > 15 and cliff.costs(6)[6] > 15      # no cheaper past the jump
    assert cliff.length(8, "good") == 3
    for _ in range(5):                                    # a draft model as slow as the target never pays
        p.draft_step(0.010)
    assert p.length(8, "good") == 0
    for _ in range(9):
        p.draft_step(0.001)                               # a tenth of it does, at this acceptance
    assert p.length(8, "good") > 2


def test_settings_records_and_refusals(bundled, fp32_family):
    assert parse_speculate(None) == parse_speculate("auto") == Speculation("lookup", auto=True)
    assert parse_speculate("lookup") == Speculation("lookup")
    # auto: lookup on models of at least AUTO_MIN_PARAMETERS whatever their activations, off on smaller ones
    assert Model(fp32_family["llama"].session, speculate="auto").speculator is None
    assert Model(bundled.session, speculate="auto").speculator is None
    assert Model(bundled.session, speculate="lookup").speculator is not None
    assert parse_speculate("off").enabled is False
    assert parse_speculate("draft:/x/y").draft == Path("/x/y")
    for bad in ("draft:", "fast", "lookup:3"):
        with pytest.raises(ValueError):
            parse_speculate(bad)
    with pytest.raises(EdgeLLMError):
        bundled.speculate("fast")
    with pytest.raises(PackageError, match="tokenizer"):
        load_draft_session(BUNDLED, fp32_family["llama"].session)
    model = fp32_family["llama"]
    recs = spec_records(model, forced(model), PROMPTS[0], 30)
    r = reply_record(recs)
    assert r.draft_tokens == sum(x.drafted for x in recs) > 0
    assert r.acceptance_rate == pytest.approx(r.accepted_tokens / r.draft_tokens)
    assert r.tokens_per_forward == pytest.approx(29 / sum(x.forwards for x in recs[1:])) and r.tokens_per_forward > 1
    assert "drafts accepted" in format_record(r) and "tok/forward" in format_record(r)
    plain = reply_record(list(model.stream(PROMPTS[0], max_new_tokens=10, ignore_eos=True)))
    assert plain.draft_tokens == 0 and plain.tokens_per_forward == 1.0 and "speculative" not in format_record(plain)


@pytest.mark.parametrize("quantization, exact", [
    ({"precision": "fp32"}, True),
    ({"precision": "int4", "accuracy_level": 0, "scale_dtype": "float32"}, True),
    ({"precision": "int4", "accuracy_level": 1}, True),                    # format-2 packages before scale_dtype
    ({"precision": "int4", "accuracy_level": 0, "scale_dtype": "float16"}, False),
    ({"precision": "int4", "accuracy_level": 4, "scale_dtype": "float32"}, False),
])
def test_rows_exact_only_where_k_rows_round_like_one(quantization, exact):
    from types import SimpleNamespace

    from edge_llm.speculative import AUTO_MIN_PARAMETERS, rows_exact
    big = SimpleNamespace(quantization=quantization, model=SimpleNamespace(parameters=AUTO_MIN_PARAMETERS))
    small = SimpleNamespace(quantization=quantization, model=SimpleNamespace(parameters=AUTO_MIN_PARAMETERS - 1))
    assert rows_exact(big) is exact
    assert parse_speculate("auto").resolve(big).mode == "lookup"      # whatever the activations
    assert parse_speculate("auto").resolve(small).mode == "off"
    assert parse_speculate("lookup").resolve(small).mode == "lookup"  # asked for by name: kept


def test_cli_option(tmp_path):
    from click.testing import CliRunner

    from edge_llm.cli import main
    r = CliRunner().invoke(main, ["generate", "--prompt", "And God said", "--max-new-tokens", "12",
                                  "--temperature", "0", "--speculate", "lookup", "--stats"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["generate", "--prompt", "x", "--speculate", "turbo"])
    assert r.exit_code == 2 and "--speculate" in r.output


# ------------------------------------------------------------------------------------------ server
def test_server_speculates_with_plain_greedy_text(fp32_family):
    """`serve` decodes with the model's speculator: two concurrent greedy requests (taking turns in the
    model loop) get the plain replies' text, and usage and /metrics count the drafts."""
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    import concurrent.futures

    from serve_helpers import ServerThread
    model = fp32_family["llama"]
    prompts = ["1 2 3 4 1 2 3 4 1 2 3", "a b a b a b a b c a b"]

    def ask(url, prompt):
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 24, "temperature": 0, "logit_bias": {"2": -100}}
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    out = {}
    for mode in ("off", "on"):
        model.speculator = forced(model) if mode == "on" else None
        try:
            with ServerThread(model, slots=2) as srv:
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    out[mode] = list(pool.map(lambda p: ask(srv.url, p), prompts))
                metrics = httpx.get(srv.url + "/metrics", timeout=10).text
        finally:
            model.speculator = None
    assert [r["choices"][0]["text"] for r in out["on"]] == [r["choices"][0]["text"] for r in out["off"]]
    drafted = sum(r["usage"]["edge_llm"]["draft_tokens"] for r in out["on"])
    assert drafted > 0 and all(r["usage"]["edge_llm"]["draft_tokens"] == 0 for r in out["off"])
    line = next(ln for ln in metrics.splitlines() if ln.startswith("edge_llm_draft_tokens_total"))
    assert float(line.split()[-1]) == drafted
