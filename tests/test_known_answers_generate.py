"""Known answers for the streaming generator (edge_llm/generate.py) on a scripted fake model: which
token comes out, at which position, with which text, timing, energy and finish reason, and that no
model step runs after the caller stops. No package needed, so these run on a fresh clone."""
from __future__ import annotations

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
    cache = SimpleNamespace(length=cache_len, max_len=max_len)
    kw.setdefault("meter", FakeMeter())
    records = list(generate_tokens(session, TOKENIZER, cache, list(prompt), log=False, **kw))
    return records, session, cache


def test_records_carry_token_position_text_timing_and_energy(clock):
    records, session, cache = _run([3, 4, 5, EOS], clock, cache_len=10)
    assert [r.token_id for r in records] == [3, 4, 5, EOS]
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert [r.position for r in records] == [13, 14, 15, 16]           # after 10 cached + 3 prefilled
    assert [r.text for r in records] == ["d", "e", "f", ""]
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
    cache = SimpleNamespace(length=0, max_len=64)
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
