"""Known answers for the numbers users read from `edge-llm bench`: tokens/s, TTFT, latency
percentiles, J/token, decode efficiency with KV bytes and cost, driven through `run_bench` by a fake
model whose clock and energy counter advance by known amounts; and the cost report field by field.
Each test fails if its feature breaks (checked by breaking the code on purpose; see
benchmarks/results/mutation-report.md). The exporter's and the sampler's known answers are in
test_known_answers_export.py and test_known_answers_sampling.py."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from edge_llm.bench import runner
from edge_llm.bench.report import render_markdown

# ---- the bench, end to end on a fake model ------------------------------------------------------

PP, TG, DEPTHS, REPS = 16, 8, (0, 100), 2
PREFILL_S_PER_TOKEN = 1 / 64          # pp16 takes 0.25 s: 64 tok/s, TTFT 250 ms
STEP_S = (0.04, 0.06)                 # decode steps alternate: mean 50 ms, 20 tok/s
PREFILL_UJ_PER_TOKEN = 2_000_000      # 2 J per prefilled token
DECODE_UJ_PER_TOKEN = 500_000         # 0.5 J per decoded token
WEIGHTS_BYTES = 1_000_000
KV = {"dtype": "float32", "num_layers": 4, "num_kv_heads": 4, "head_dim": 64}
KV_PER_POSITION = 2 * 4 * 4 * 64 * 4  # keys and values, float32: 8192 bytes
BANDWIDTH = 40e6                      # bytes/s
PRICE_KWH, DEVICE_PRICE, YEARS, DUTY = 0.15, 500.0, 5.0, 0.5


class _Spec(dict):
    """A manifest section readable both as a mapping and through attributes."""
    __getattr__ = dict.__getitem__


class _FakeModel:
    """Yields records whose `seconds` are known and, before each, adds known microjoules to a RAPL file."""

    def __init__(self, counter):
        self.counter, self.uj = counter, 1_000_000
        self.session = SimpleNamespace(threads=1)
        self.tokenizer = SimpleNamespace(vocab_size=64)

    def _spend(self, uj):
        self.uj += uj
        self.counter.write_text(f"{self.uj}\n")

    def cache(self):
        return SimpleNamespace(nbytes=12345)

    def stream(self, ids, *, params, max_new_tokens, ignore_eos):
        assert params.temperature == 0 and ignore_eos
        self._spend(PREFILL_UJ_PER_TOKEN * len(ids))
        yield SimpleNamespace(index=0, seconds=len(ids) * PREFILL_S_PER_TOKEN)
        for i in range(1, max_new_tokens):
            self._spend(DECODE_UJ_PER_TOKEN)
            yield SimpleNamespace(index=i, seconds=STEP_S[i % 2])


def _fake_package(manifest) -> dict:
    return {"path": "fake", "name": "fake", "format_version": 2, "exporter": None,
            "shape": {"architecture": "Fake", "num_layers": 4, "hidden_size": 256}, "parameters": None,
            "quantization": {"precision": "int4", "block_size": 128, "symmetric": False},
            "kv_cache": {**KV, "bytes_per_position": KV_PER_POSITION},
            "source": {}, "package_bytes": 2 * WEIGHTS_BYTES, "weights_file_bytes": WEIGHTS_BYTES,
            "source_weights_bytes": None, "compression": None}


@pytest.fixture()
def bench_report(tmp_path):
    """Function-scoped on purpose: each test re-runs the (fast, fake) bench, so a mutation tool sees
    which test reads which figure."""
    root = tmp_path
    rapl = root / "sys/class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "max_energy_range_uj").write_text("262143328850\n")
    counter = rapl / "energy_uj"
    counter.write_text("1000000\n")
    manifest = SimpleNamespace(model=_Spec(context_length=256, vocab_size=64),
                               kv=_Spec({**KV, "bytes_per_position": KV_PER_POSITION}), data={})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "load_manifest", lambda path: manifest)
        mp.setattr(runner, "package_summary", lambda path, m: _fake_package(m))
        mp.setattr(runner, "measure_read_bandwidth", lambda mib, threads: {
            "best_bytes_per_s": BANDWIDTH, "array_bytes": mib << 20, "method": "fake",
            "threads_1": {"threads": 1, "best_bytes_per_s": BANDWIDTH}})
        fake_api = SimpleNamespace(Model=SimpleNamespace(load=lambda path, threads=None, speculate=None: _FakeModel(counter)))
        mp.setitem(sys.modules, "edge_llm.api", fake_api)       # what `from ..api import Model` finds
        return runner.run_bench(root, threads_list=[1], pp=[PP], tg=TG, depths=DEPTHS, reps=REPS, warmup=1,
                                bandwidth_mib=8, idle_seconds=0.0, energy_root=root, price_per_kwh=PRICE_KWH,
                                device_price=DEVICE_PRICE, lifetime_years=YEARS, duty_cycle=DUTY,
                                command=["test"])


def _tests(report) -> dict:
    return {t["test"]: t for t in report["runs"][0]["tests"]}


def test_bench_prefill_tokens_per_s_and_ttft(bench_report):
    pp = _tests(bench_report)[f"pp{PP}"]
    assert [r["tokens_per_s"] for r in pp["reps"]] == [64.0] * REPS
    assert pp["tokens_per_s"]["mean"] == 64.0 and pp["tokens_per_s"]["n"] == REPS
    assert pp["ttft_ms"]["mean"] == pytest.approx(250.0)
    assert len(pp["warmup_reps"]) == 1


def test_bench_decode_tokens_per_s_and_latency_percentiles(bench_report):
    for name in (f"tg{TG}", f"tg{TG} @ d100"):
        tg = _tests(bench_report)[name]
        assert tg["tokens_per_s"]["mean"] == pytest.approx(TG / (TG * 0.05))          # 20 tok/s
        assert all(len(r["step_seconds"]) == TG for r in tg["reps"])
        assert tg["itl_ms"]["p50"] == pytest.approx(50.0) and tg["itl_ms"]["p99"] == pytest.approx(60.0)
        assert tg["itl_ms"]["mean"] == pytest.approx(50.0) and tg["itl_ms"]["n"] == TG * REPS


def test_bench_joules_per_token_measured(bench_report):
    t = _tests(bench_report)
    assert bench_report["energy"]["measured"] is True
    pp, tg = t[f"pp{PP}"]["energy_per_token"], t[f"tg{TG}"]["energy_per_token"]
    assert pp["joules"]["mean"] == pytest.approx(2.0) and pp["label"] == "measured"
    assert tg["joules"]["mean"] == pytest.approx(0.5) and tg["measured"] is True
    assert t[f"pp{PP}"]["reps"][0]["energy"]["joules"] == pytest.approx(2.0 * PP)


@pytest.mark.parametrize("depth", DEPTHS)
def test_bench_decode_efficiency_counts_weights_and_kv(bench_report, depth):
    tg = _tests(bench_report)[f"tg{TG}" + (f" @ d{depth}" if depth else "")]
    mean_context = max(depth, 1) + (TG + 1) / 2          # the context grows by one each timed step
    per_token = WEIGHTS_BYTES + KV_PER_POSITION * mean_context
    e = tg["efficiency"]
    assert e["mean_context"] == mean_context
    assert e["bytes_per_token"] == pytest.approx(per_token, rel=1e-12)
    assert e["bytes_per_s"] == pytest.approx(20.0 * per_token, rel=1e-12)
    assert e["fraction"] == pytest.approx(20.0 * per_token / BANDWIDTH, rel=1e-12)


def test_bench_run_cost_includes_energy_and_hardware(bench_report):
    c = bench_report["runs"][0]["cost"]
    assert c["test"] == f"tg{TG}"                       # the shallowest decode test
    electricity = 0.5 * 1e6 / 3.6e6 * PRICE_KWH          # J/token x 1e6 tokens / (J per kWh) x price
    tokens = 20.0 * 86_400 * 365 * YEARS * DUTY
    hardware = DEVICE_PRICE / tokens * 1e6
    assert c["electricity_per_mtok"] == pytest.approx(electricity, rel=1e-12)
    assert c["hardware_per_mtok"] == pytest.approx(hardware, rel=1e-12)
    assert c["total_per_mtok"] == pytest.approx(electricity + hardware, rel=1e-12)
    assert c["tokens_per_currency"] == pytest.approx(1e6 / (electricity + hardware), rel=1e-12)
    assert c["lifetime_tokens"] == pytest.approx(tokens)
    assert c["assumptions"]["energy_measured"] is True


def test_bench_markdown_shows_the_known_figures(bench_report):
    md = render_markdown(bench_report)
    assert f"| pp{PP} | 1 | 64.00 ± 0.00 |" in md
    assert f"| tg{TG} | 1 | 20.00 ± 0.00 |" in md
    assert f"| pp{PP} | 1 | 250.00 ± 0.00 | — | — | — |" in md
    assert f"| tg{TG} | 1 | 0.5 | " in md and f"| pp{PP} | 1 | 2 | " in md      # J/token (W is wall-clock)
    deep = WEIGHTS_BYTES + KV_PER_POSITION * (100 + 4.5)                   # 1,856,064 bytes per token
    assert f"| tg{TG} @ d100 | 1 | 20.00 | {deep / 2**20:.1f} | 0.04 | {20 * deep / BANDWIDTH:.0%} |" in md


# ---- cost: the whole report, so no field, note or default can drift unseen -------------------------

def test_cost_report_every_field():
    from edge_llm.metering.cost import cost_report
    r = cost_report(tokens_per_s=10.0, device_price=1000.0, lifetime_years=2.0, duty_cycle=0.5,
                    joules_per_token=3.6, price_per_kwh=0.6, energy_measured=True, days_per_year=360.0)
    tokens = 10.0 * 86_400 * 360 * 2 * 0.5                                # 311,040,000
    assert r == {
        "currency": "USD", "tokens_per_s": 10.0, "lifetime_tokens": pytest.approx(tokens),
        "hardware_per_mtok": pytest.approx(1000.0 / tokens * 1e6), "electricity_per_mtok": pytest.approx(0.6),
        "total_per_mtok": pytest.approx(1000.0 / tokens * 1e6 + 0.6),
        "tokens_per_currency": pytest.approx(1e6 / (1000.0 / tokens * 1e6 + 0.6)), "kwh_per_mtok": pytest.approx(1.0),
        "assumptions": {"device_price": 1000.0, "lifetime_years": 2.0, "duty_cycle": 0.5, "days_per_year": 360.0,
                        "joules_per_token": 3.6, "price_per_kwh": 0.6, "energy_measured": True},
        "notes": []}


def test_cost_report_says_what_it_left_out():
    from edge_llm.metering.cost import cost_report
    r = cost_report(tokens_per_s=7.5, device_price=600.0)                 # no lifetime, no energy
    assert r["hardware_per_mtok"] is None and r["lifetime_tokens"] is None and r["total_per_mtok"] is None
    assert r["assumptions"]["duty_cycle"] == 1.0 and r["currency"] == "USD"
    assert r["notes"] == ["hardware cost left out: needs device_price and lifetime_years",
                          "electricity left out: needs joules_per_token and price_per_kwh"]
    r = cost_report(tokens_per_s=7.5, lifetime_years=5.0, joules_per_token=1.0, energy_measured=False)
    assert r["hardware_per_mtok"] is None and r["electricity_per_mtok"] is None
    assert r["kwh_per_mtok"] == pytest.approx(1e6 / 3.6e6)
    assert r["notes"] == ["hardware cost left out: needs device_price and lifetime_years",
                          "energy per token is an estimate from a power model, not a measurement",
                          "electricity left out: needs joules_per_token and price_per_kwh"]
    full = cost_report(tokens_per_s=7.5, device_price=600.0, lifetime_years=5.0)   # duty cycle defaults to 1
    assert full["lifetime_tokens"] == pytest.approx(7.5 * 86_400 * 365 * 5)
    assert full["notes"] == ["electricity left out: needs joules_per_token and price_per_kwh"]


def test_cost_days_per_year_reaches_every_figure():
    from edge_llm.metering.cost import hardware_cost_per_mtok, lifetime_tokens, tokens_per_currency
    assert lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, days_per_year=100.0) == 8_640_000
    hw = hardware_cost_per_mtok(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                                days_per_year=100.0)
    assert hw == pytest.approx(10.0)
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0) == pytest.approx(1e5)
    # energy counts only when both its inputs are given
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0, joules_per_token=3.6) == pytest.approx(1e5)
    assert tokens_per_currency(device_price=86.4, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                               days_per_year=100.0, price_per_kwh=1.0) == pytest.approx(1e5)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.electricity_cost_per_mtok(-1.0, 0.1), "joules_per_token must be >= 0, got -1.0"),
    (lambda c: c.electricity_cost_per_mtok(1.0, -0.1), "price_per_kwh must be >= 0, got -0.1"),
    (lambda c: c.lifetime_tokens(tokens_per_s=0.0, lifetime_years=1.0), "tokens_per_s must be > 0, got 0.0"),
    (lambda c: c.lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, days_per_year=0.0),
     "days_per_year must be > 0, got 0.0"),
    (lambda c: c.lifetime_tokens(tokens_per_s=1.0, lifetime_years=1.0, duty_cycle=1.5),
     r"duty_cycle must be in \(0, 1\], got 1.5"),
    (lambda c: c.hardware_cost_per_mtok(device_price=-1.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0),
     "device_price must be >= 0, got -1.0"),
    (lambda c: c.tokens_per_currency(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0),
     "total cost is zero; tokens per currency unit is unbounded"),
])
def test_cost_input_errors_name_the_value(call, message):
    from edge_llm.metering import cost
    with pytest.raises(cost.CostInputError, match=f"^{message}$"):
        call(cost)


def test_cost_zero_prices_are_allowed_where_meaningful():
    from edge_llm.metering import cost
    assert cost.hardware_cost_per_mtok(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0) == 0
    # a total below one currency unit per Mtok is still a number, not "unbounded"
    assert cost.tokens_per_currency(device_price=0.0, lifetime_years=1.0, duty_cycle=1.0, tokens_per_s=1.0,
                                    joules_per_token=1.8, price_per_kwh=1.0) == pytest.approx(2e6)


def test_minicpm_phone_example_labels():
    from edge_llm.metering.cost import minicpm_phone_example
    ex = minicpm_phone_example()
    assert ex["device"] == "Snapdragon 855 phone (MiniCPM-2B, int4)"
    assert ex["claimed_tokens_per_currency"] == 1.7e6
    assert ex["assumptions"]["duty_cycle"] == 1.0 and ex["hardware_per_mtok"] == pytest.approx(1e6 / 1_971_000)
