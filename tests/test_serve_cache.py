"""The server's prompt cache: longest common prefix, move vs copy, exact prompts, the memory budget."""
import numpy as np
import pytest

from edge_llm.api import Model
from edge_llm.paths import BUNDLED
from edge_llm.serve.prompt_cache import MIN_COPY, PromptCache


@pytest.fixture(scope="module")
def session():
    return Model.load(BUNDLED, threads=1).session


def filled(session, ids):
    cache = session.new_cache(chunk=32)
    logits = session.forward(ids, cache)
    return cache, logits


def test_a_continuation_takes_the_entry_itself(session):
    pc = PromptCache(1 << 30)
    ids = list(range(10, 60))
    cache, _ = filled(session, ids)
    assert pc.put(ids, cache)
    got, n, logits = pc.take(ids + [7, 8, 9])
    assert got is cache and n == 50 and logits is None and len(pc) == 0


def test_a_shared_prefix_is_copied_and_the_entry_stays(session):
    pc = PromptCache(1 << 30)
    ids = list(range(10, 60))
    cache, _ = filled(session, ids)
    pc.put(ids, cache)
    other = ids[:30] + [5, 6, 7]
    got, n, _ = pc.take(other)
    assert got is not cache and n == 30 and got.length == 30 and len(pc) == 1
    # the copy continues exactly like a cache that computed the same prefix
    ref, _ = filled(session, ids[:30])
    np.testing.assert_array_equal(session.forward(other[30:], got), session.forward(other[30:], ref))


def test_short_prefixes_and_strangers_miss(session):
    pc = PromptCache(1 << 30)
    ids = list(range(10, 60))
    pc.put(ids, filled(session, ids)[0])
    assert pc.take(ids[:MIN_COPY - 1] + [3, 4])[0] is None
    assert pc.take([1, 2, 3])[0] is None
    assert pc.misses == 2 and pc.hits == 0


def test_at_least_the_last_token_runs_unless_its_logits_were_kept(session):
    pc = PromptCache(1 << 30)
    prompt = list(range(10, 40))
    cache, logits = filled(session, prompt)
    session.forward([5, 6], cache)                       # a reply after the prompt
    pc.put(prompt + [5, 6], cache)
    got, n, lg = pc.take(prompt)
    assert n == len(prompt) - 1 and lg is None           # no logits kept: recompute the last token
    cache2, logits2 = filled(session, prompt)
    session.forward([5, 6], cache2)
    pc.put(prompt + [5, 6], cache2, prompt_len=len(prompt), logits=logits2)
    got, n, lg = pc.take(prompt)
    assert n == len(prompt) and got.length == len(prompt)
    np.testing.assert_array_equal(lg, logits2)


def test_budget_evicts_least_recently_used(session):
    per = filled(session, list(range(10, 35)))[0].nbytes
    pc = PromptCache(2 * per)
    a, b, c = ([i] * 5 + list(range(100 + i, 120 + i)) for i in (3, 4, 5))
    for ids in (a, b):
        pc.put(ids, filled(session, ids)[0])
    pc.take(a[:-2] + [1, 1])                             # a copied from: now the most recently used
    pc.put(c, filled(session, c)[0])
    assert [e.ids[0] for e in pc.entries] == [3, 5] and pc.evictions == 1
    assert pc.nbytes <= 2 * per
    assert not PromptCache(per // 2).put(a, filled(session, a)[0])   # larger than the whole budget


def test_an_extended_entry_replaces_its_prefix(session):
    pc = PromptCache(1 << 30)
    ids = list(range(10, 40))
    pc.put(ids, filled(session, ids)[0])
    longer = ids + [1, 2, 3]
    pc.put(longer, filled(session, longer)[0])
    assert len(pc) == 1 and pc.entries[0].ids.size == 33


def test_a_cut_short_reply_inside_a_stored_entry_is_not_stored_twice(session):
    pc = PromptCache(1 << 30)
    ids = list(range(10, 40))
    pc.put(ids, filled(session, ids)[0])
    assert not pc.put(ids[:25], filled(session, ids[:25])[0])
    assert len(pc) == 1
