"""Cost per token: hardware amortised over the device's life plus electricity. Pure arithmetic.

Prices are in whatever currency the caller names (`currency` is only a label). "mtok" is one
million tokens; one kWh is 3.6e6 J.
"""

from __future__ import annotations

from edge_llm.errors import EdgeLLMError

SECONDS_PER_DAY = 86_400
JOULES_PER_KWH = 3.6e6
TOKENS_PER_MTOK = 1e6


class CostInputError(EdgeLLMError, ValueError):
    """A cost parameter is outside its meaningful range (e.g. a duty cycle above 1)."""


def electricity_cost_per_mtok(joules_per_token: float, price_per_kwh: float) -> float:
    """Electricity cost of one million tokens: J/token x 1e6 / 3.6e6 J/kWh x price/kWh."""
    _check(joules_per_token=joules_per_token, price_per_kwh=price_per_kwh, allow_zero=True)
    return joules_per_token * TOKENS_PER_MTOK / JOULES_PER_KWH * price_per_kwh


def lifetime_tokens(*, tokens_per_s: float, lifetime_years: float, duty_cycle: float = 1.0,
                    days_per_year: float = 365.0) -> float:
    """Tokens generated over the device's life: tok/s x 86400 s x days/yr x years x duty cycle."""
    _check(tokens_per_s=tokens_per_s, lifetime_years=lifetime_years, days_per_year=days_per_year)
    _check_duty(duty_cycle)
    return tokens_per_s * SECONDS_PER_DAY * days_per_year * lifetime_years * duty_cycle


def hardware_cost_per_mtok(*, device_price: float, lifetime_years: float, duty_cycle: float,
                           tokens_per_s: float, days_per_year: float = 365.0) -> float:
    """Device price spread over every token it generates in its life, per million tokens."""
    _check(device_price=device_price, allow_zero=True)
    tokens = lifetime_tokens(tokens_per_s=tokens_per_s, lifetime_years=lifetime_years,
                             duty_cycle=duty_cycle, days_per_year=days_per_year)
    return device_price / tokens * TOKENS_PER_MTOK


def tokens_per_currency(*, device_price: float, lifetime_years: float, duty_cycle: float,
                        tokens_per_s: float, joules_per_token: float | None = None,
                        price_per_kwh: float | None = None, days_per_year: float = 365.0) -> float:
    """Tokens per unit of currency: hardware alone, plus electricity when both energy arguments
    are given."""
    per_mtok = hardware_cost_per_mtok(device_price=device_price, lifetime_years=lifetime_years,
                                      duty_cycle=duty_cycle, tokens_per_s=tokens_per_s,
                                      days_per_year=days_per_year)
    if joules_per_token is not None and price_per_kwh is not None:
        per_mtok += electricity_cost_per_mtok(joules_per_token, price_per_kwh)
    if per_mtok <= 0:
        raise CostInputError("total cost is zero; tokens per currency unit is unbounded")
    return TOKENS_PER_MTOK / per_mtok


def cost_report(*, tokens_per_s: float, currency: str = "USD", device_price: float | None = None,
                lifetime_years: float | None = None, duty_cycle: float = 1.0,
                joules_per_token: float | None = None, price_per_kwh: float | None = None,
                energy_measured: bool | None = None, days_per_year: float = 365.0) -> dict:
    """Everything the inputs allow: per-million-token costs, lifetime tokens, tokens per currency.

    A part whose inputs are missing is None; `notes` says what was left out and whether the
    energy figure was measured or estimated.
    """
    notes = []
    hardware = tokens = None
    if device_price is not None and lifetime_years is not None:
        tokens = lifetime_tokens(tokens_per_s=tokens_per_s, lifetime_years=lifetime_years,
                                 duty_cycle=duty_cycle, days_per_year=days_per_year)
        hardware = hardware_cost_per_mtok(device_price=device_price, lifetime_years=lifetime_years,
                                          duty_cycle=duty_cycle, tokens_per_s=tokens_per_s,
                                          days_per_year=days_per_year)
    else:
        notes.append("hardware cost left out: needs device_price and lifetime_years")
    electricity = kwh = None
    if joules_per_token is not None:
        kwh = joules_per_token * TOKENS_PER_MTOK / JOULES_PER_KWH
        if price_per_kwh is not None:
            electricity = electricity_cost_per_mtok(joules_per_token, price_per_kwh)
        if energy_measured is False:
            notes.append("energy per token is an estimate from a power model, not a measurement")
    if electricity is None:
        notes.append("electricity left out: needs joules_per_token and price_per_kwh")
    parts = [p for p in (hardware, electricity) if p is not None]
    total = sum(parts) if parts else None
    return {
        "currency": currency,
        "tokens_per_s": tokens_per_s,
        "lifetime_tokens": tokens,
        "hardware_per_mtok": hardware,
        "electricity_per_mtok": electricity,
        "total_per_mtok": total,
        "tokens_per_currency": TOKENS_PER_MTOK / total if total else None,
        "kwh_per_mtok": kwh,
        "assumptions": {
            "device_price": device_price, "lifetime_years": lifetime_years,
            "duty_cycle": duty_cycle, "days_per_year": days_per_year,
            "joules_per_token": joules_per_token, "price_per_kwh": price_per_kwh,
            "energy_measured": energy_measured,
        },
        "notes": notes,
    }


def minicpm_phone_example() -> dict:
    """The MiniCPM cost example, recomputed: a 600 RMB Snapdragon 855 phone running MiniCPM-2B at
    7.5 tokens/s for 5 years, 100% of the time, hardware cost only.

        tokens    = 7.5 tok/s x 86,400 s/day x 365 day/yr x 5 yr = 1,182,600,000  (1.18e9)
        per RMB   = 1,182,600,000 / 600 RMB                      = 1,971,000 tokens/RMB (1.97M)

    MiniCPM's material is quoted as "1.7M tokens per RMB". No calendar convention reproduces that:
    365.25 days/yr gives 1,972,350 and 360 days/yr gives 1,944,000. The claim is 14% below the
    arithmetic; it would follow from any ONE of (computed in `to_reproduce_claim`): a 86.3% duty
    cycle (~20.7 h/day), 6.47 tokens/s, a 4.31-year life, or 695.6 RMB of total cost (600 RMB plus
    ~96 RMB of something else, e.g. electricity). Which assumption, if any, they used is not stated
    in the figures we have; we report 1.97M from the stated inputs and leave the gap visible.
    """
    claimed = 1.7e6
    report = cost_report(tokens_per_s=7.5, currency="RMB", device_price=600.0, lifetime_years=5.0,
                         duty_cycle=1.0)
    tokens = report["lifetime_tokens"]
    needed_tokens = claimed * 600.0
    report.update(
        device="Snapdragon 855 phone (MiniCPM-2B, int4)",
        claimed_tokens_per_currency=claimed,
        arithmetic=(f"7.5 tok/s x 86400 s/day x 365 day/yr x 5 yr = {tokens:,.0f} tokens; "
                    f"/ 600 RMB = {tokens / 600:,.0f} tokens/RMB"),
        tokens_per_currency_365_25_days=lifetime_tokens(
            tokens_per_s=7.5, lifetime_years=5.0, days_per_year=365.25) / 600.0,
        to_reproduce_claim={
            "duty_cycle": needed_tokens / tokens,
            "tokens_per_s": 7.5 * needed_tokens / tokens,
            "lifetime_years": 5.0 * needed_tokens / tokens,
            "device_price": tokens / claimed,
        },
    )
    return report


def _check(*, allow_zero: bool = False, **values: float) -> None:
    for name, value in values.items():
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise CostInputError(f"{name} must be {bound}, got {value}")


def _check_duty(duty_cycle: float) -> None:
    if not 0 < duty_cycle <= 1:
        raise CostInputError(f"duty_cycle must be in (0, 1], got {duty_cycle}")
