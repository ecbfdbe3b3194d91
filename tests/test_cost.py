"""Cost arithmetic on hand-computed values, and the MiniCPM phone example."""

import pytest

from edge_llm.errors import EdgeLLMError
from edge_llm.metering.cost import (
    CostInputError,
    cost_report,
    electricity_cost_per_mtok,
    hardware_cost_per_mtok,
    lifetime_tokens,
    minicpm_phone_example,
    tokens_per_currency,
)


def test_minicpm_phone_example():
    ex = minicpm_phone_example()
    assert ex["lifetime_tokens"] == pytest.approx(7.5 * 5 * 365 * 86400)  # 1,182,600,000
    assert ex["lifetime_tokens"] == pytest.approx(1.1826e9)
    assert ex["tokens_per_currency"] == pytest.approx(1.97e6, abs=0.01e6)
    assert ex["tokens_per_currency"] == pytest.approx(1_971_000)
    assert ex["currency"] == "RMB"
    # the 1.7M claim is not a calendar convention: 365.25 days changes almost nothing
    assert ex["tokens_per_currency_365_25_days"] == pytest.approx(1_972_350)
    need = ex["to_reproduce_claim"]
    assert need["duty_cycle"] == pytest.approx(0.8625, abs=1e-4)
    assert need["tokens_per_s"] == pytest.approx(6.469, abs=1e-3)
    assert need["lifetime_years"] == pytest.approx(4.3126, abs=1e-4)
    assert need["device_price"] == pytest.approx(695.65, abs=0.01)
    assert "1,971,000 tokens/RMB" in ex["arithmetic"]


def test_electricity_hand_computed():
    # 3.6 J/token -> 3.6e6 J = 1 kWh per million tokens; at 0.6/kWh that is 0.6
    assert electricity_cost_per_mtok(3.6, 0.6) == pytest.approx(0.6)
    # 0.5 J/token, 0.15/kWh: 0.5e6 J = 0.13889 kWh -> 0.0208333
    assert electricity_cost_per_mtok(0.5, 0.15) == pytest.approx(0.5e6 / 3.6e6 * 0.15)
    assert electricity_cost_per_mtok(0.0, 0.15) == 0.0


def test_hardware_and_combined():
    # 1000 over 2 years at 50% duty, 10 tok/s: 10 * 86400 * 365 * 2 * 0.5 = 315,360,000 tokens
    assert lifetime_tokens(tokens_per_s=10, lifetime_years=2, duty_cycle=0.5) == 315_360_000
    hw = hardware_cost_per_mtok(device_price=1000, lifetime_years=2, duty_cycle=0.5,
                                tokens_per_s=10)
    assert hw == pytest.approx(1000 / 315.36)
    both = tokens_per_currency(device_price=1000, lifetime_years=2, duty_cycle=0.5, tokens_per_s=10,
                               joules_per_token=3.6, price_per_kwh=0.6)
    assert both == pytest.approx(1e6 / (1000 / 315.36 + 0.6))


def test_cost_report_partial_inputs():
    r = cost_report(tokens_per_s=7.5, currency="EUR", joules_per_token=3.6, price_per_kwh=0.3,
                    energy_measured=False)
    assert r["hardware_per_mtok"] is None and r["lifetime_tokens"] is None
    assert r["electricity_per_mtok"] == pytest.approx(0.3)
    assert r["kwh_per_mtok"] == pytest.approx(1.0)
    assert r["tokens_per_currency"] == pytest.approx(1e6 / 0.3)
    assert any("estimate" in n for n in r["notes"])
    assert any("hardware cost left out" in n for n in r["notes"])
    empty = cost_report(tokens_per_s=1.0)
    assert empty["total_per_mtok"] is None and empty["tokens_per_currency"] is None


@pytest.mark.parametrize("kwargs", [
    {"duty_cycle": 1.5}, {"duty_cycle": 0.0}, {"tokens_per_s": 0.0}, {"lifetime_years": -1.0},
])
def test_bad_inputs_raise_domain_error(kwargs):
    args = {"device_price": 600.0, "lifetime_years": 5.0, "duty_cycle": 1.0, "tokens_per_s": 7.5}
    with pytest.raises(CostInputError) as info:
        hardware_cost_per_mtok(**{**args, **kwargs})
    assert isinstance(info.value, EdgeLLMError) and isinstance(info.value, ValueError)
