"""Per-request runtime state: every request owns its KV cache (growing in chunks), binding and logits,
so generators interleaved on one Model (or run from two threads) give exactly what each gives alone."""
import threading

import numpy as np
import pytest

from edge_llm.api import Model
from edge_llm.errors import ContextFullError
from edge_llm.paths import BUNDLED
from edge_llm.sampling import SamplingParams

PROMPTS = ["In the beginning", "lantern: ", "The Lord is my shepherd", "请背诵"]


@pytest.fixture(scope="module")
def model():
    return Model.load(BUNDLED, threads=1)


def _params(i):
    # greedy and seeded sampling alternate: both must be unaffected by the other streams
    return SamplingParams() if i % 2 == 0 else SamplingParams(temperature=0.9, top_p=0.9, seed=i)


def _alone(model, i, n=48):
    return [r.token_id for r in model.stream(PROMPTS[i], params=_params(i), max_new_tokens=n, ignore_eos=True)]


def test_interleaved_generators_equal_each_alone(model):
    alone = [_alone(model, i) for i in range(len(PROMPTS))]
    gens = [model.stream(p, params=_params(i), max_new_tokens=48, ignore_eos=True) for i, p in enumerate(PROMPTS)]
    got = [[] for _ in gens]
    live = list(range(len(gens)))
    step = 0
    while live:                       # uneven interleaving: stream i advances on every (i+1)-th round
        step += 1
        for i in list(live):
            if step % (i + 1):
                continue
            rec = next(gens[i], None)
            if rec is None:
                live.remove(i)
            else:
                got[i].append(rec.token_id)
    assert got == alone


def _round_robin(gens):
    """Advance each generator in turn until all are done; the token ids of each."""
    got, live = [[] for _ in gens], list(range(len(gens)))
    while live:
        for i in list(live):
            rec = next(gens[i], None)
            if rec is None:
                live.remove(i)
            else:
                got[i].append(rec.token_id)
    return got


def test_conversations_interleaved_equal_each_alone(model):
    from edge_llm.api import Conversation
    texts = [["Quote John 3:16.", "And then?"], ["What does \"lantern\" mean?", "More."]]
    greedy = SamplingParams()

    def alone(turns):
        conv = Conversation(model)
        return [[r.token_id for r in conv.send(t, params=greedy, max_new_tokens=24)] for t in turns]
    expected = [alone(t) for t in texts]
    convs = [Conversation(model), Conversation(model)]
    got = [[], []]
    for turn in range(2):
        ids = _round_robin([c.send(t[turn], params=greedy, max_new_tokens=24) for c, t in zip(convs, texts)])
        for i in range(2):
            got[i].append(ids[i])
    assert got == expected


def test_threads_on_one_session_equal_each_alone(model):
    alone = [_alone(model, i, 32) for i in range(len(PROMPTS))]
    got = [None] * len(PROMPTS)

    def run(i):
        got[i] = _alone(model, i, 32)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone


def test_cache_grows_in_chunks_and_matches_a_full_size_cache(model):
    s = model.session
    ids = np.random.default_rng(0).integers(3, s.vocab, 300).tolist()
    small, big = s.new_cache(chunk=64), s.new_cache(chunk=4096)
    assert small.capacity == 64 and big.capacity == s.context_length
    assert small.nbytes == 64 * model.manifest.kv.bytes_per_position
    out_small = [s.forward(ids[:50], small)] + [s.forward([t], small) for t in ids[50:]]
    out_big = [s.forward(ids[:50], big)] + [s.forward([t], big) for t in ids[50:]]
    assert small.length == 300 and small.capacity == 320          # grew 64 → 128 → … → 320
    np.testing.assert_array_equal(np.stack(out_small), np.stack(out_big))


def test_growth_releases_the_old_buffers_and_keeps_only_written_rows_resident(model):
    """Growing drops every old buffer (nothing but the cache may hold them: they were the only cache)
    and the buffers are anonymous maps, so their memory goes back to the OS and unwritten rows cost none."""
    import gc
    import mmap
    import weakref
    s = model.session
    cache = s.new_cache(chunk=64)
    s.forward(list(range(3, 50)), cache)
    def owner(a):
        while isinstance(a, np.ndarray):
            a = a.base
        return a.obj if isinstance(a, memoryview) else a
    old = [weakref.ref(owner(a)) for pair in cache.arrays for a in pair]    # the mmap objects
    assert all(isinstance(r(), mmap.mmap) for r in old)
    s.forward(list(range(3, 40)), cache)                                  # 86 positions: grows to 128
    gc.collect()
    assert cache.capacity == 128 and all(r() is None for r in old)
    # the rows written so far survived the move
    fresh = s.new_cache(chunk=4096)
    s.forward(list(range(3, 50)), fresh)
    s.forward(list(range(3, 40)), fresh)
    for (k, v), (k2, v2) in zip(cache.arrays, fresh.arrays):
        np.testing.assert_array_equal(k[:, :, :86], k2[:, :, :86])
        np.testing.assert_array_equal(v[:, :, :86], v2[:, :, :86])


def test_growth_stops_at_max_len(model):
    s = model.session
    cache = s.new_cache(100, chunk=64)
    s.forward(list(range(3, 99)), cache)
    assert cache.capacity == 100
    with pytest.raises(ContextFullError):
        s.forward([5, 6, 7, 8, 9], cache)


def test_forward_returns_a_fresh_array(model):
    s = model.session
    cache = s.new_cache()
    a = s.forward([1, 5, 6], cache)
    keep = a.copy()
    b = s.forward([7], cache)
    s.forward([8], s.new_cache())                       # another cache's step
    assert a is not b and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, keep)


def test_copy_and_truncate_continue_like_the_original(model):
    s = model.session
    ids = list(range(10, 70))
    c = s.new_cache(chunk=16)
    s.forward(ids, c)
    twin = c.copy(40)
    assert twin.length == 40 and c.length == 60
    from_copy = s.forward(ids[40:], twin)
    c.truncate(40)
    from_trunc = s.forward(ids[40:], c)
    np.testing.assert_array_equal(from_copy, from_trunc)
    with pytest.raises(ValueError):
        c.truncate(61)


def test_model_cache_is_new_each_time(model):
    assert model.cache() is not model.cache()
