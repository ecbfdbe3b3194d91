"""Known answers for the streaming generator (edge_llm/generate.py) on a scripted fake model: which
token comes out, at which position, with which text, timing, energy and finish reason, and that no
model step runs after the caller stops. No package needed, so these run on a fresh clone."""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_llm import generate as gen
from edge_llm.generate import StopMatcher, generate_tokens
from edge_llm.sampling import SamplingParams

VOCAB = 8
EOS = 2
PREFILL_S, STEP_S = 0.5, 0.125


class Clock:
    """perf_counter stand-in: a forward advances it by its known cost."""
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeSession:
    """Emits `script[i]` as the argmax of the i-th forward call; counts calls and fed ids."""

    def __init__(self, script, clock):
        self.script, self.clock, self.fed, self.calls = list(script), clock, [], 0

    def forward(self, ids, cache):
        assert ids.dtype == np.int64
        self.clock.now += PREFILL_S if self.calls == 0 else STEP_S
        self.fed.append(ids.tolist())
        cache.length += len(ids)
        logits = np.ones(VOCAB, np.float32)
        logits[self.script[self.calls]] = 5.0
        self.calls += 1
        return logits


class FakeCache:
    """The KVCache contract generate_tokens uses: length, max_len, check_memory (records its calls)."""

    def __init__(self, length: int, max_len: int):
        self.length, self.max_len, self.checked = length, max_len, []

    def check_memory(self, total: int) -> None:
        self.checked.append(total)


class FakeDecoder:
    def __init__(self):
        self.pending = ""

    def push(self, token):
        return "abcdefgh"[token]

    def flush(self):
        return ""


class FakeMeter:
    def describe(self):
        return "estimated: fake"

    def run(self, fn, *args):
        return fn(*args), SimpleNamespace(joules=0.25)


TOKENIZER = SimpleNamespace(eos_ids=(EOS,), stream=FakeDecoder)


@pytest.fixture()
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(gen.time, "perf_counter", c)
    return c


def _run(script, clock, *, prompt=(5, 6, 7), cache_len=0, max_len=64, **kw):
    session = FakeSession(script, clock)
    cache = FakeCache(cache_len, max_len)
    kw.setdefault("meter", FakeMeter())
    records = list(generate_tokens(session, TOKENIZER, cache, list(prompt), log=False, **kw))
    return records, session, cache


def test_records_carry_token_position_text_timing_and_energy(clock):
    records, session, cache = _run([3, 4, 5, EOS], clock, cache_len=10)
    assert [r.token_id for r in records] == [3, 4, 5, EOS]
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert [r.position for r in records] == [13, 14, 15, 16]           # after 10 cached + 3 prefilled
    assert [r.text for r in records] == ["d", "e", "f", ""]
    assert cache.checked == [10 + 3 + 256]      # memory for prompt + max_new_tokens, checked before any step
    assert [r.seconds for r in records] == [PREFILL_S, STEP_S, STEP_S, STEP_S]
    assert [r.finish_reason for r in records] == [None, None, None, "eos"]
    assert all(r.prompt_tokens == 3 and r.cached_tokens == 10 for r in records)
    assert all(r.joules == 0.25 and r.energy_source == "estimated: fake" for r in records)
    assert session.fed == [[5, 6, 7], [3], [4], [5]]                 # the eos token is never fed
    assert cache.length == 16


def test_length_limit_and_ignore_eos(clock):
    records, session, _ = _run([EOS, EOS, 3], clock, max_new_tokens=3, ignore_eos=True)
    assert [r.token_id for r in records] == [EOS, EOS, 3]
    assert [r.finish_reason for r in records] == [None, None, "length"]
    assert session.calls == 3                                        # prefill + 2 decode steps
    records, _, _ = _run([3, 4], clock, max_new_tokens=1)
    assert [(r.token_id, r.finish_reason) for r in records] == [(3, "length")]


def test_context_full_ends_the_reply(clock):
    records, session, cache = _run([3, 4, 5, 6], clock, max_len=5)   # 3 prompt ids + 2 decode steps fill it
    assert [r.finish_reason for r in records] == [None, None, "context"]
    assert cache.length == 5 and session.calls == 3


def test_stop_ids_replace_eos(clock):
    records, _, _ = _run([EOS, 6], clock, stop_ids=[6])
    assert [(r.token_id, r.finish_reason) for r in records] == [(EOS, None), (6, "eos")]


def test_stop_string_cuts_the_text(clock):
    records, _, _ = _run([3, 4, 5, 6, 7], clock, stop_strings=["ef"])   # d e f ... : "ef" stops
    assert [r.text for r in records] == ["d", "", ""]
    assert records[-1].finish_reason == "stop"


def test_repetition_penalty_sees_history_and_prompt(clock):
    # the scripted id has logit 5, the others 1: a huge penalty makes it lose only if it was seen
    params = SamplingParams(repetition_penalty=1e6)
    records, _, _ = _run([6, 6], clock, prompt=(6,), params=params, max_new_tokens=2)
    assert records[0].token_id != 6                                   # 6 is in the prompt
    records, _, _ = _run([3, 3], clock, prompt=(5,), history=[3], params=params, max_new_tokens=1)
    assert records[0].token_id != 3                                   # 3 is in the cached history
    records, _, _ = _run([3, 3], clock, prompt=(5,), params=SamplingParams(), max_new_tokens=1)
    assert records[0].token_id == 3


def test_no_model_step_after_the_caller_stops(clock):
    session = FakeSession([3, 4, 5, 6, 7], clock)
    cache = FakeCache(0, 64)
    stream = generate_tokens(session, TOKENIZER, cache, [5], meter=FakeMeter(), log=False)
    assert next(stream).token_id == 3
    assert next(stream).token_id == 4
    stream.close()
    assert session.calls == 2


@pytest.mark.parametrize("stops, chunks, out", [
    (["</s>"], ["ab", "c<", "/s", ">x"], [("ab", False), ("c", False), ("", False), ("", True)]),
    (["<|im_end|>", "ab"], ["xa", "b"], [("x", False), ("", True)]),
    (["stop"], ["st", "x"], [("", False), ("stx", False)]),
    ([""], ["abc"], [("abc", False)]),
])
def test_stop_matcher_holds_back_only_possible_starts(stops, chunks, out):
    m = StopMatcher(stops)
    assert [m.feed(c) for c in chunks] == out


def test_stop_matcher_flush_releases_the_held_tail():
    m = StopMatcher(["END"])
    assert m.feed("abcEN") == ("abc", False)
    assert m.flush() == "EN" and m.flush() == ""


def test_last_token_text_is_kept_at_the_length_and_context_limits(clock):
    records, _, _ = _run([3, 4, 5], clock, max_new_tokens=2)
    assert [r.text for r in records] == ["d", "e"]
    records, _, _ = _run([3, 4, 5, 6], clock, max_len=5)
    assert [r.text for r in records] == ["d", "e", "f"]


def test_plain_steps_count_one_forward_each(clock):
    records, _, _ = _run([3, 4, EOS], clock)
    assert [(r.drafted, r.accepted, r.forwards) for r in records] == [(0, 0, 1)] * 3


def test_prompt_already_in_the_cache(clock):
    """The server passes the prompt's last logits instead of ids: no prefill step, no energy for it."""
    session = FakeSession([4, EOS], clock)
    session.calls = 1                                        # the prompt's forward happened elsewhere
    session.script = [3, 4, EOS]
    cache = FakeCache(7, 64)
    logits = np.ones(VOCAB, np.float32)
    logits[3] = 5.0
    records = list(generate_tokens(session, TOKENIZER, cache, [], logits=logits, meter=FakeMeter(), log=False))
    assert [r.token_id for r in records] == [3, 4, EOS]
    assert records[0].joules is None and records[1].joules == 0.25
    assert [r.position for r in records] == [7, 8, 9] and records[0].prompt_tokens == 0
    assert logits[3] == 5.0                                  # the caller's array is not modified
    with pytest.raises(ValueError, match="^pass either new_ids to prefill or the logits of a prompt already in "
                                         "the cache$"):
        next(generate_tokens(session, TOKENIZER, cache, [1], logits=logits, meter=FakeMeter(), log=False))


def test_penalties_and_bias_reach_the_sampler(clock):
    # scripted id logit 5, others 1: frequency 2 per earlier occurrence in the REPLY (not the prompt)
    records, _, _ = _run([3, 3, 3], clock, prompt=(3,), params=SamplingParams(frequency_penalty=2.0),
                         max_new_tokens=3)
    assert [r.token_id for r in records] == [3, 3, 0]        # 5, 5-2, 5-4 = 1 ties with id 0
    presence = SamplingParams(presence_penalty=2.0, logit_bias={3: -2.5})     # 3 starts at 2.5 > 1
    records, _, _ = _run([3, 3, 3], clock, prompt=(5,), params=presence, max_new_tokens=3)
    assert [r.token_id for r in records] == [3, 0, 1]        # seen once: 2.5 - 2 = 0.5 < 1; then 0 is penalised too
    records, _, _ = _run([3, 3], clock, params=SamplingParams(logit_bias={3: -100.0}), max_new_tokens=2)
    assert 3 not in [r.token_id for r in records]


def test_the_speculator_gets_the_generators_state(clock):
    from edge_llm.speculative import Step
    got = {}

    class FakeSpeculator:
        def steps(self, session, cache, logits, energy, t0, **kw):
            got.update(session=session, cache=cache, logits=logits.copy(), energy=energy, t0=t0, **kw)
            yield Step(3, 0.5, 1.0, drafted=4, accepted=2, forwards=1)
            yield Step(EOS, 0.0, 0.0, drafted=0, accepted=0, forwards=0)

    session = FakeSession([6], clock)
    cache = FakeCache(0, 64)
    meter, params = FakeMeter(), SamplingParams(repetition_penalty=1.5)
    records = list(generate_tokens(session, TOKENIZER, cache, [5, 7], params=params, meter=meter, log=False,
                                   history=[1], max_new_tokens=9, speculator=FakeSpeculator()))
    assert [(r.token_id, r.drafted, r.accepted, r.forwards) for r in records] == [(3, 4, 2, 1), (EOS, 0, 0, 0)]
    assert got["session"] is session and got["cache"] is cache and got["meter"] is meter and got["params"] is params
    assert int(np.argmax(got["logits"])) == 6 and got["energy"].joules == 0.25 and got["t0"] == 100.0
    assert got["seen"] == [1, 5, 7] and got["budget"] == 9 and callable(got["sample"])
    assert len(got["processors"]) == 1                        # the repetition penalty


def test_every_reply_is_logged_with_its_counts(clock, caplog):
    assert inspect.signature(generate_tokens).parameters["max_new_tokens"].default == 256
    session = FakeSession([3, 4, EOS], clock)
    session.manifest = SimpleNamespace(path=Path("/packages/tiny-int4"))
    cache = FakeCache(4, 64)
    with caplog.at_level("INFO", logger="edge_llm.replies"):
        stream = generate_tokens(session, TOKENIZER, cache, [5, 6], meter=FakeMeter())     # log defaults to on
        next(stream)
        stream.close()                                          # stopped early: still logged
    (rec,) = [r.reply for r in caplog.records if r.name == "edge_llm.replies"]
    assert (rec.model, rec.prompt_tokens, rec.cached_tokens, rec.generated_tokens) == ("tiny-int4", 6, 4, 1)


def test_stop_matcher_cuts_at_the_first_stop_and_starts_clean():
    m = StopMatcher(["X"])
    assert m.feed("aXbXc") == ("a", True)
    assert m.flush() == "" and m.feed("de") == ("de", False)


def test_reply_that_fails_before_its_first_token_is_still_logged(clock, caplog):
    class Broken(FakeSession):
        def forward(self, ids, cache):
            raise RuntimeError("onnxruntime failed")

    session = Broken([3], clock)                                # no manifest: the model name is ""
    cache = FakeCache(4, 64)
    with caplog.at_level("INFO", logger="edge_llm.replies"):
        with pytest.raises(RuntimeError, match="onnxruntime failed"):
            next(generate_tokens(session, TOKENIZER, cache, [5, 6, 7], meter=FakeMeter()))
    (rec,) = [r.reply for r in caplog.records if r.name == "edge_llm.replies"]
    assert (rec.model, rec.prompt_tokens, rec.cached_tokens, rec.generated_tokens) == ("", 7, 4, 0)


def test_default_length_limit_is_256_tokens(clock):
    records, _, _ = _run([3] * 300, clock, max_len=4096)
    assert len(records) == 256 and records[-1].finish_reason == "length"
