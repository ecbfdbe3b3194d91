"""Batched decoding (edge_llm.slots, edge_llm.batch, the server's model loop): a reply decoded in one
forward with other replies — each row at its own length — says exactly what its lone run says on a
float32-activation package (tiny seeded checkpoints exported here with accuracy_level 0; no ../shared),
and only the kernels' rounding differs on an int8-activation one (the bundled package; docs/serve.md).
Also: memory accounted per slot (503 before a stream starts), and one request's failure or disconnect
leaving the others' replies intact."""
import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_llm import session as session_mod
from edge_llm.api import Model
from edge_llm.errors import ContextFullError, OutOfMemoryError
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.recipe import Recipe
from edge_llm.generate import ReplyStream
from edge_llm.paths import BUNDLED
from edge_llm.sampling import SamplingParams
from edge_llm.slots import SlotPool

DATA = Path(__file__).parent / "data" / "tiny-families"
NO_EOS = {2: -100.0}          # the tiny families' eos id: replies run to max_tokens
# different lengths (1 .. 90 tokens: past gemma3's 4-token window and several 16-token prefill pieces)
PROMPTS = [[5], [42, 17], [5, 9, 33, 7, 100], list(range(3, 16)), list(range(60, 100)),
           [int(x) for x in np.random.default_rng(0).integers(3, 400, 90)]]


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def exact(request, tmp_path_factory):
    """A float32-activation int4 package (accuracy_level 0, float32 scales) of a tiny seeded checkpoint."""
    out = tmp_path_factory.mktemp("batch") / request.param
    export_checkpoint(DATA / request.param, out, recipe=Recipe(accuracy_level=0))
    model = Model.load(out, threads=1, speculate="off")
    model.session.prefill_chunk = 16          # long prompts go in pieces, alone and batched alike
    return model


def lone_tokens(model, ids, params, n):
    return [r.token_id for r in model.stream(ids, params=params, max_new_tokens=n)]


@pytest.fixture
def rows_seen(monkeypatch):
    """The number of rows of every batched decode forward."""
    seen, decode = [], SlotPool.decode

    def counted(self, slots, tokens):
        seen.append(len(slots))
        return decode(self, slots, tokens)
    monkeypatch.setattr(SlotPool, "decode", counted)
    return seen


@pytest.mark.parametrize("params", [SamplingParams(logit_bias=NO_EOS),
                                    SamplingParams(temperature=0.8, top_k=40, seed=7, logit_bias=NO_EOS,
                                                   repetition_penalty=1.3)], ids=["greedy", "sampled"])
def test_a_batched_reply_equals_its_lone_run(exact, params, rows_seen):
    n = 24
    expected = [lone_tokens(exact, p, params, n) for p in PROMPTS]
    got = [[] for _ in PROMPTS]
    for i, rec in exact.stream_batch(PROMPTS, params=params, max_new_tokens=n, slots=3):
        got[i].append(rec.token_id)
    assert got == expected
    # they really decoded together: 3 rows per forward while 3 were in flight, slots reused as replies ended
    assert max(rows_seen) == 3 and sum(rows_seen) == len(PROMPTS) * (n - 1)
    assert exact.generate_batch([PROMPTS[2], PROMPTS[0]], params=params, max_new_tokens=5) == [
        exact.generate(PROMPTS[2], params=params, max_new_tokens=5), exact.generate(PROMPTS[0], params=params, max_new_tokens=5)]


def test_batch_records_stay_per_reply(exact):
    recs = {}
    for i, rec in exact.stream_batch(PROMPTS[:3], params=SamplingParams(logit_bias=NO_EOS), max_new_tokens=6, slots=3):
        recs.setdefault(i, []).append(rec)
    for i, rs in recs.items():
        assert [r.index for r in rs] == list(range(6)) and rs[-1].finish_reason == "length"
        assert [r.position for r in rs] == list(range(len(PROMPTS[i]), len(PROMPTS[i]) + 6))
        assert rs[0].prompt_tokens == len(PROMPTS[i]) and all(r.joules is not None for r in rs)
    # a decode forward's energy is split evenly over its rows
    assert recs[0][3].joules == recs[1][3].joules == recs[2][3].joules


def test_generate_batch_refuses_bad_prompts_before_running(exact):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        exact.generate_batch([[5], []])
    with pytest.raises(ContextFullError, match="prompt 0 is 300 tokens"):
        exact.generate_batch([[5] * 300])


def test_int8_activation_rows_differ_only_by_kernel_rounding():
    """The bundled package (int8 activations, float16 scales): teacher-forced, a batched row's logits stay
    within the kernels' rounding of the lone forward's (docs/serve.md measures it); a wrong per-row length
    or a row reading another slot's cache would be off by whole logits."""
    model = Model.load(BUNDLED, threads=1, speculate="off")
    s = model.session
    prompts = [[1, 5, 9, 33, 7, 100], [1, 42, 17], [1] + list(range(200, 230)), [1, 8, 8, 8]]
    pool = SlotPool(s, len(prompts), 128)
    lone = [s.new_cache(128) for _ in prompts]
    worst = 0.0
    for j, p in enumerate(prompts):
        pool.acquire(64)
        np.testing.assert_array_equal(pool.prefill(j, p), s.forward(p, lone[j]))   # prefill runs alone: exact
    rng = np.random.default_rng(1)
    for _ in range(8):
        tokens = rng.integers(3, 8000, len(prompts))
        batched = pool.decode(range(len(prompts)), tokens)
        for j, t in enumerate(tokens):
            worst = max(worst, float(np.abs(batched[j] - s.forward([t], lone[j])).max()))
    assert 0 < worst < 1.0, worst


# ------------------------------------------------------------------------------------------- slot pool

def test_memory_is_accounted_per_slot(monkeypatch, exact):
    pool = SlotPool(exact.session, 3, 200)
    bpp = pool.bytes_per_position
    monkeypatch.setattr(session_mod, "available_memory", lambda: 150 * bpp)
    a = pool.acquire(100)
    with pytest.raises(OutOfMemoryError, match=r"not enough memory for the KV cache: 100 positions .* promised to "
                                               r"the 1 busy slot"):
        pool.acquire(100)                  # 100 more beside the 100 promised to slot a
    pool.prefill(a, list(range(3, 63)))    # slot a wrote 60 of its 100: 40 still to come
    assert pool.outstanding_bytes() == 40 * bpp and pool.resident_positions() == 60
    b = pool.acquire(100)                  # (the monkeypatched figure does not shrink as pages fill)
    assert (a, b) == (0, 1)
    pool.release(a)
    assert pool.acquire(20) == 0 and pool.lengths[0] == 0 and pool.high[0] == 0   # the lowest free slot


def test_released_slot_reads_as_new(exact):
    s = exact.session
    pool = SlotPool(s, 2, 64)
    slot = pool.acquire(32)
    first = pool.prefill(slot, [5, 9, 33])
    pool.decode([slot], [7])
    pool.release(slot)
    assert not pool.busy.any() and pool.lengths[slot] == 0
    if sys.platform == "linux":                          # its pages went back: they read as zeros
        assert not pool.arrays[0][0][slot].any()
    slot = pool.acquire(32)
    np.testing.assert_array_equal(pool.prefill(slot, [5, 9, 33]), first)


# ------------------------------------------------------------------------------------------- the server

def run_jobs(engine, specs, *, cancel_after=None):
    """Submit every (ids, params, max_new) at once; returns each job's token ids, or the JobFailed it raised."""
    from edge_llm.serve.engine import JobFailed

    async def one(job, k):
        out = []
        try:
            async for rec in job.stream():
                out.append(rec.token_id)
                if cancel_after and cancel_after.get(k) == len(out):
                    job.cancel()
        except JobFailed as e:
            return e
        return out

    async def main():
        jobs = [engine.submit(ids, params=p, max_new_tokens=n) for ids, p, n in specs]
        return await asyncio.gather(*(one(j, k) for k, j in enumerate(jobs)))
    return asyncio.run(main())


@pytest.fixture
def engine(exact):
    from edge_llm.serve.engine import Engine
    e = Engine(exact, name="tiny", slots=4, prefill_chunk=16)
    e.start()
    yield e
    e.close()


def test_concurrent_server_requests_each_get_the_lone_text(exact, engine):
    params = SamplingParams(logit_bias=NO_EOS)
    specs = [(p, params, 20) for p in PROMPTS]
    got = run_jobs(engine, specs)
    assert got == [lone_tokens(exact, p, params, 20) for p in PROMPTS]
    m = engine.metrics
    assert m.forward_rows.get() > 1.5 * m.forwards.get(), "the requests were not decoded together"
    # every slot free; the pages still resident are the finished sequences parked for reuse, nothing else
    assert engine.pool.free == engine.slots and engine.parked
    assert engine.pool.resident_positions() == sum(p.ids.size for p in engine.parked.values())


def test_a_failing_row_does_not_fail_the_others(exact, engine, monkeypatch):
    sample = ReplyStream.sample

    def broken(self, logits):              # the reply asking for 17 tokens fails at its 4th
        if self.max_new_tokens == 17 and len(self.records) == 3:
            raise RuntimeError("simulated sampler failure")
        return sample(self, logits)
    monkeypatch.setattr(ReplyStream, "sample", broken)
    params = SamplingParams(logit_bias=NO_EOS)
    got = run_jobs(engine, [(PROMPTS[2], params, 20), (PROMPTS[3], params, 17), (PROMPTS[4], params, 20)])
    assert "simulated sampler failure" in str(got[1]) and got[1].status == 500
    assert got[0] == lone_tokens(exact, PROMPTS[2], params, 20) and got[2] == lone_tokens(exact, PROMPTS[4], params, 20)
    assert engine.pool.free == engine.slots


def test_a_failed_forward_fails_its_rows_and_the_server_goes_on(exact, engine, monkeypatch):
    decode = SlotPool.decode
    calls = []

    def broken(self, slots, tokens):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated onnxruntime failure")
        return decode(self, slots, tokens)
    monkeypatch.setattr(SlotPool, "decode", broken)
    params = SamplingParams(logit_bias=NO_EOS)
    got = run_jobs(engine, [(PROMPTS[2], params, 20), (PROMPTS[3], params, 20)])
    assert any("simulated onnxruntime failure" in str(g) for g in got)
    assert engine.pool.free == engine.slots and engine.thread.is_alive()
    assert run_jobs(engine, [(PROMPTS[1], params, 8)]) == [lone_tokens(exact, PROMPTS[1], params, 8)]


def test_a_disconnect_mid_stream_frees_its_slot_and_spares_the_others(exact, engine):
    params = SamplingParams(logit_bias=NO_EOS)
    got = run_jobs(engine, [(PROMPTS[2], params, 30), (PROMPTS[3], params, 200), (PROMPTS[4], params, 30)],
                   cancel_after={1: 3})
    assert 3 <= len(got[1]) < 200
    assert got[0] == lone_tokens(exact, PROMPTS[2], params, 30) and got[2] == lone_tokens(exact, PROMPTS[4], params, 30)
    assert engine.metrics.replies.get("cancelled") == 1 and engine.pool.free == engine.slots


def test_a_stream_that_does_not_fit_gets_503_before_it_starts(monkeypatch):
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from serve_helpers import ServerThread
    with ServerThread(slots=2) as srv:
        assert srv.engine.batched
        bpp = srv.model.manifest.kv.bytes_per_position
        monkeypatch.setattr(session_mod, "available_memory", lambda: 50 * bpp)
        body = {"model": "tiny", "prompt": "In the beginning", "max_tokens": 400, "temperature": 0, "stream": True}
        r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
        err = r.json()["error"]
        assert err["code"] == "insufficient_memory" and err["type"] == "server_error"
        assert "not enough memory for the KV cache" in err["message"]
        monkeypatch.setattr(session_mod, "available_memory", lambda: 10 ** 12)
        r = httpx.post(srv.url + "/v1/completions", json=body | {"max_tokens": 5}, timeout=60)
        assert r.status_code == 200 and "data: [DONE]" in r.text


def test_a_long_prompt_comes_in_pieces_between_the_running_streams_steps(exact, engine, monkeypatch):
    """prefill_chunk 16: a 90-token prompt is 6 pieces, and a stream already decoding gets a token
    between any two of them (its step waits for one piece at most)."""
    calls, prefill, decode = [], SlotPool.prefill, SlotPool.decode
    monkeypatch.setattr(SlotPool, "prefill", lambda self, slot, ids: calls.append(("p", slot)) or prefill(self, slot, ids))
    monkeypatch.setattr(SlotPool, "decode", lambda self, slots, tokens: calls.append(("d", tuple(slots)))
                        or decode(self, slots, tokens))
    params = SamplingParams(logit_bias=NO_EOS)

    async def main():
        first = engine.submit(PROMPTS[1], params=params, max_new_tokens=40)
        tokens = [(await first.events.get())[1].token_id]          # it is decoding now
        second = engine.submit(PROMPTS[5], params=params, max_new_tokens=5)
        tokens += [r.token_id async for r in first.stream()]
        return tokens, [r.token_id async for r in second.stream()]
    a, b = asyncio.run(main())
    assert a == lone_tokens(exact, PROMPTS[1], params, 40) and b == lone_tokens(exact, PROMPTS[5], params, 5)
    pieces = [k for k, c in enumerate(calls) if c == ("p", 1)]
    assert len(pieces) == 6
    for x, y in zip(pieces, pieces[1:]):
        assert ("d", (0,)) in calls[x + 1:y], calls        # slot 0's stream stepped between the pieces


def test_a_reply_whose_cache_cannot_be_kept_still_completes(exact, engine, monkeypatch):
    def no_memory(self, slot, n=None):
        raise OutOfMemoryError("not enough memory for the KV cache: simulated")
    monkeypatch.setattr(SlotPool, "to_cache", no_memory)
    params = SamplingParams(logit_bias=NO_EOS)
    assert run_jobs(engine, [(PROMPTS[3], params, 6)]) == [lone_tokens(exact, PROMPTS[3], params, 6)]
    assert list(engine.parked) == [0]
    # another request wants slot 0: the parked sequence would move to the prompt cache, and cannot
    assert run_jobs(engine, [(PROMPTS[4], params, 6)]) == [lone_tokens(exact, PROMPTS[4], params, 6)]
    assert len(engine.prompt_cache) == 0 and list(engine.parked) == [0] and engine.pool.free == engine.slots


def test_a_continuation_reuses_its_parked_slot_in_place(exact, engine, monkeypatch):
    copies = []
    for name in ("to_cache", "load"):
        real = getattr(SlotPool, name)
        monkeypatch.setattr(SlotPool, name, lambda self, *a, _r=real, _n=name: copies.append(_n) or _r(self, *a))
    params = SamplingParams(logit_bias=NO_EOS)
    first = run_jobs(engine, [(PROMPTS[4], params, 10)])[0]
    turn2 = PROMPTS[4] + first + [7, 8, 9]
    assert run_jobs(engine, [(turn2, params, 10)]) == [lone_tokens(exact, turn2, params, 10)]
    assert copies == [] and engine.prompt_cache.reused_tokens == len(PROMPTS[4]) + 9   # the last reply token was never fed
    assert list(engine.parked) == [0]


def test_parked_sequences_give_their_memory_back_when_a_request_needs_it(exact, engine, monkeypatch):
    bpp = engine.pool.bytes_per_position
    limit = [10 ** 9]        # positions the "machine" holds; what the slots wrote is not available
    monkeypatch.setattr(session_mod, "available_memory", lambda: (limit[0] - engine.pool.resident_positions()) * bpp)
    params = SamplingParams(logit_bias=NO_EOS)
    run_jobs(engine, [(PROMPTS[3], params, 20), (PROMPTS[4], params, 20)])
    assert sorted(engine.parked) == [0, 1]
    expected = lone_tokens(exact, PROMPTS[1], params, 40)
    limit[0] = 80            # slot 1's 59 parked positions leave 21: too few for 2 + 40 ...
    assert run_jobs(engine, [(PROMPTS[1], params, 40)]) == [expected]
    assert list(engine.parked) == [0]          # ... so slot 1 gave its pages back (slot 0 went to the prompt cache)
    assert len(engine.prompt_cache) == 1


class UnitMeter:
    """Every model step costs exactly 1 J (a stand-in for the energy meter)."""

    def __init__(self):
        self.steps = 0

    def describe(self):
        return "estimated: 1 J per step (test)"

    def run(self, fn, *args):
        self.steps += 1
        return fn(*args), type("Reading", (), {"joules": 1.0})()


def test_energy_is_split_by_rows_and_adds_up(exact):
    from edge_llm.serve.engine import Engine
    meter = UnitMeter()
    engine = Engine(exact, name="tiny", slots=4, prefill_chunk=16, meter=meter)
    engine.start()
    try:
        async def main():
            jobs = [engine.submit(p, params=SamplingParams(logit_bias=NO_EOS), max_new_tokens=12) for p in PROMPTS[:4]]
            async def drain(job):
                return [r async for r in job.stream()]
            recs = [await drain(j) for j in jobs]
            return recs, [j.record for j in jobs]
        recs, replies = asyncio.run(main())
    finally:
        engine.close()
    # every step's joule is in exactly one reply: prefill pieces whole, decode forwards split over their rows
    assert sum(r.joules for r in replies) == pytest.approx(meter.steps)
    assert any(0 < t.joules < 1 for rs in recs for t in rs[1:]), "no decode forward was shared"
    assert all(t.joules == pytest.approx(1 / round(1 / t.joules)) for rs in recs for t in rs[1:])


@pytest.mark.parametrize("args, says", [(["--slots", "3"], "3 slot(s) decoding together"),
                                        (["--slots", "2", "--speculate", "lookup"], "2 slot(s) taking turns")])
def test_serve_says_whether_its_slots_decode_together(exact, args, says):
    """On a float32-activation package `--speculate auto` would be lookup; beside other slots it is off."""
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from serve_helpers import Serve
    with Serve(str(exact.manifest.path), *args) as s:
        health = httpx.get(f"http://127.0.0.1:{s.port}/health", timeout=5).json()
    assert says in s.stderr and health["batched"] == ("lookup" not in args)
    assert ("speculation lookup" if "lookup" in args else "speculation off") in s.stderr


def test_auto_speculation_gives_way_to_batching(exact, monkeypatch):
    """`auto` lookup (here on a tiny package, the size floor lowered) decodes several slots together and says
    speculation off; asked for by name, or with one slot, it is kept and requests take turns."""
    from edge_llm import speculative
    from edge_llm.api import Model
    from edge_llm.serve.engine import Engine
    monkeypatch.setattr(speculative, "AUTO_MIN_PARAMETERS", 0)
    for speculate, slots, batched in (("auto", 3, True), ("auto", 1, False), ("lookup", 3, False)):
        model = Model(exact.session, speculate=speculate)
        assert model.speculator is not None
        engine = Engine(model, name="tiny", slots=slots)
        assert engine.batched is batched and engine.speculation_label == ("off" if batched else "lookup")
