"""Logits processors and per-reply records (energy with bench's model, cost with bench's cost model)."""
import json

import numpy as np
import pytest

from edge_llm.logits import (
    apply_processors,
    logit_bias,
    make_logits_processors,
    presence_frequency_penalty,
    repetition_penalty,
)
from edge_llm.metering.step import StepMeter
from edge_llm.records import CostSettings, TokenRecord, format_record, log_replies_to, reply_record
from edge_llm.sampling import SamplingParams

# ------------------------------------------------------------------------------------------- logits


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    x = np.array([2.0, -2.0, 1.0, 3.0], np.float32)
    y = repetition_penalty(2.0)([0, 1, 0], x.copy())
    assert y.tolist() == [1.0, -4.0, 1.0, 3.0]


def test_presence_and_frequency_count_only_the_reply():
    x = np.zeros(5, np.float32)
    tokens = [1, 1, 1] + [2, 2, 3]             # prompt 1,1,1 then the reply 2,2,3
    y = presence_frequency_penalty(0.5, 0.25, start=3)(tokens, x.copy())
    assert y.tolist() == [0.0, 0.0, -(0.5 + 2 * 0.25), -(0.5 + 0.25), 0.0]


def test_logit_bias_bans_and_forces():
    x = np.array([5.0, 1.0, 0.0], np.float32)
    y = logit_bias({0: -100, 2: 100})([], x.copy())
    assert int(np.argmax(y)) == 2 and y[0] == -95


def test_processors_compose_in_order_and_only_when_needed():
    assert make_logits_processors() == []
    procs = make_logits_processors(repetition=2.0, presence=1.0, frequency=0.0, bias={1: 3.0}, reply_start=1)
    assert len(procs) == 3
    x = np.array([4.0, 1.0, 2.0], np.float32)
    # repetition over [0, 2]: 4→2, 2→1; presence on the reply [2]: 1→0; bias: index 1 + 3
    assert apply_processors(procs, [0, 2], x.copy()).tolist() == [2.0, 4.0, 0.0]


@pytest.mark.parametrize("bad", [dict(presence_penalty=2.5), dict(frequency_penalty=-3), dict(logit_bias={1: 101})])
def test_sampling_params_reject_out_of_range(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_generator_applies_logit_bias():
    from edge_llm.api import Model
    from edge_llm.paths import BUNDLED
    m = Model.load(BUNDLED, threads=1)
    plain = [r.token_id for r in m.stream("In the beginning", max_new_tokens=8)]
    banned = [r.token_id for r in m.stream("In the beginning", max_new_tokens=8,
                                           params=SamplingParams(logit_bias={plain[0]: -100}))]
    assert banned[0] != plain[0]
    forced = [r.token_id for r in m.stream("In the beginning", max_new_tokens=4,
                                           params=SamplingParams(logit_bias={77: 100}))]
    assert forced == [77] * 4


# ------------------------------------------------------------------------------------------- records


def _recs(n=5, *, prompt=10, cached=4, first_s=0.5, step_s=0.1, joules=2.0):
    out = []
    for i in range(n):
        out.append(TokenRecord(100 + i, "x", i, cached + prompt + i, first_s if i == 0 else step_s, prompt,
                               "eos" if i == n - 1 else None, cached, joules, "estimated: test model"))
    return out


def test_reply_record_sums_tokens_speed_energy_and_cost():
    r = reply_record(_recs(), costs=CostSettings(price_per_kwh=0.36, currency="EUR"))
    assert (r.prompt_tokens, r.cached_tokens, r.prefill_tokens, r.generated_tokens) == (14, 4, 10, 5)
    assert r.ttft_s == 0.5 and r.prefill_tokens_per_s == pytest.approx(20.0)
    assert r.decode_tokens_per_s == pytest.approx(4 / 0.4)
    assert r.joules == pytest.approx(10.0) and r.energy == "estimated"
    # 10 J at 0.36 EUR per 3.6e6 J
    assert r.cost_electricity == pytest.approx(10.0 / 3.6e6 * 0.36) and r.cost == pytest.approx(r.cost_electricity)
    assert r.currency == "EUR" and r.cost_hardware is None and r.finish_reason == "eos"


def test_reply_record_hardware_amortisation_uses_reply_seconds():
    r = reply_record(_recs(), costs=CostSettings(price_per_kwh=None, device_price=600.0, lifetime_years=5.0))
    seconds = 0.5 + 4 * 0.1
    assert r.cost_hardware == pytest.approx(600.0 * seconds / (5 * 365 * 86400))
    assert r.cost == pytest.approx(r.cost_hardware) and r.cost_electricity is None


def test_measured_label_follows_the_source():
    recs = [TokenRecord(1, "", 0, 0, 0.1, 3, "eos", 0, 1.5, "measured: RAPL package-0")]
    assert reply_record(recs).energy == "measured"


def test_cancelled_before_the_first_token():
    r = reply_record([], prompt_tokens=30, cached_tokens=20, joules=0.5, energy_source="estimated: m")
    assert (r.prompt_tokens, r.cached_tokens, r.prefill_tokens, r.generated_tokens) == (30, 20, 10, 0)
    assert r.finish_reason == "cancelled" and r.joules == 0.5 and r.cost is None


def test_step_meter_estimates_with_bench_model_when_no_counter(monkeypatch):
    meter = StepMeter(cpu_watts=None)
    meter.counters = []                       # this machine might have a readable counter: force the model
    _, reading = meter.run(lambda: sum(i * i for i in range(200_000)))
    assert not reading.measured and reading.source.startswith("estimated:")
    assert meter.describe() == reading.source
    assert reading.joules > 0                 # busy CPU above the subtracted idle


def test_format_record_line():
    line = format_record(reply_record(_recs()))
    assert "prompt 14 tok (4 cached)" in line and "10 J estimated" in line and "USD" in line


def test_metrics_log_appends_one_json_line_per_reply(tmp_path):
    from edge_llm.api import Model
    from edge_llm.paths import BUNDLED
    from edge_llm.records import REPLY_LOGGER
    path = tmp_path / "replies.jsonl"
    handler = log_replies_to(path)
    try:
        m = Model.load(BUNDLED, threads=1)
        m.generate("In the beginning", max_new_tokens=6)
        gen = m.stream("lantern: ", max_new_tokens=50, ignore_eos=True)
        next(gen), next(gen)
        gen.close()                             # stopped early: still one line
    finally:
        REPLY_LOGGER.removeHandler(handler)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["generated_tokens"] <= 6 and lines[0]["energy"] in ("estimated", "measured")
    assert lines[0]["joules"] is not None and lines[0]["cost"] is not None
    assert lines[1]["generated_tokens"] == 2 and lines[1]["finish_reason"] == "cancelled"
