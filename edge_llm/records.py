"""One record per reply: tokens, speed, energy and cost, the same figures `bench` reports.

`MeteredSession` wraps a ModelSession for one reply and meters every model step with bench's
EnergyMeter (a RAPL/hwmon counter where one is readable, else bench's stated power model, labelled
"estimated"; idle power subtracted as in bench). Metering each step rather than the whole reply keeps
replies that share the machine from counting each other's work when their steps are serialised (the
server's `lock`). `reply_record` turns the reply's TokenRecords and that energy into a `ReplyRecord`;
cost is bench's cost model: electricity for the reply's joules plus, when a device price is given,
the device's price amortised over the seconds the reply took.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .bench import cost as cost_mod
from .bench.energy import EnergyMeter, EnergyReading
from .generate import TokenRecord

DEFAULT_PRICE_PER_KWH = 0.15   # USD, the same stated assumption as bench
DEFAULT_LIFETIME_YEARS = 5.0


@dataclass(frozen=True)
class CostSettings:
    price_per_kwh: float | None = DEFAULT_PRICE_PER_KWH
    currency: str = "USD"
    device_price: float | None = None
    lifetime_years: float = DEFAULT_LIFETIME_YEARS
    duty_cycle: float = 1.0


def new_energy_meter(*, cpu_watts: float | None = None) -> EnergyMeter:
    """bench's meter with bench's settings: process_time (ns resolution) and idle power subtracted."""
    return EnergyMeter(tdp_watts=cpu_watts, subtract_idle=True, cpu_clock=time.process_time)


class MeteredSession:
    """A ModelSession's `forward` for one reply, timed and metered step by step.

    `lock` (any context manager) is held around each step together with its meter window; a shared
    `meter` must only be used under such a lock.
    """

    def __init__(self, session, *, meter: EnergyMeter, lock=None):
        self.session = session
        self.meter = meter
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.joules = 0.0
        self.seconds = 0.0
        self.measured: bool | None = None
        self.source: str | None = None
        self.steps = 0

    def forward(self, ids, cache):
        with self.lock:
            self.meter.start()
            try:
                return self.session.forward(ids, cache)
            finally:
                self._add(self.meter.stop())

    def _add(self, r: EnergyReading) -> None:
        self.joules += r.joules
        self.seconds += r.seconds
        self.steps += 1
        self.measured = r.measured if self.measured is None else (self.measured and r.measured)
        self.source = r.source


@dataclass(frozen=True)
class ReplyRecord:
    prompt_tokens: int          # the whole prompt: cached + prefilled
    cached_tokens: int          # prompt positions reused from a cache (no compute)
    prefill_tokens: int         # prompt positions computed for this reply
    generated_tokens: int
    finish_reason: str | None
    ttft_s: float               # prefill + first sample (the server adds queue_s on top)
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    total_s: float              # prefill start to last token
    joules: float | None
    energy: str                 # "measured" | "estimated" | "none"
    energy_source: str | None   # bench's label: the counters read, or the power model
    cost: float | None          # currency units for this reply
    currency: str
    cost_electricity: float | None
    cost_hardware: float | None
    queue_s: float = 0.0        # time waiting for a free slot (server)
    model: str = ""
    created: float = 0.0        # unix time the reply ended

    def as_dict(self) -> dict:
        return asdict(self)


def reply_record(records: Sequence[TokenRecord], *, metered: MeteredSession | None = None,
                 costs: CostSettings = CostSettings(), queue_s: float = 0.0, model: str = "",
                 prompt_tokens: int | None = None, cached_tokens: int | None = None) -> ReplyRecord:
    """Sum one reply's TokenRecords (and its metered energy) into a ReplyRecord. With no records
    (cancelled before the first token) the prompt counts come from the arguments."""
    first = records[0] if records else None
    cached = first.cached_tokens if first else (cached_tokens or 0)
    prefilled = first.prompt_tokens if first else max((prompt_tokens or 0) - cached, 0)
    ttft = first.seconds if first else 0.0
    decode = list(records[1:])
    dsec = sum(r.seconds for r in decode)
    total_s = ttft + dsec
    joules = metered.joules if metered and metered.steps else None
    label = "none" if joules is None else ("measured" if metered.measured else "estimated")
    elec, hw, cost = _reply_cost(costs, joules=joules, seconds=total_s, measured=label == "measured",
                                 tokens=len(records))
    return ReplyRecord(
        prompt_tokens=cached + prefilled, cached_tokens=cached, prefill_tokens=prefilled,
        generated_tokens=len(records), finish_reason=records[-1].finish_reason if records else "cancelled",
        ttft_s=ttft, prefill_tokens_per_s=prefilled / ttft if first and ttft > 0 else None,
        decode_tokens_per_s=len(decode) / dsec if dsec > 0 else None, total_s=total_s,
        joules=joules, energy=label, energy_source=metered.source if metered else None,
        cost=cost, currency=costs.currency, cost_electricity=elec, cost_hardware=hw,
        queue_s=queue_s, model=model, created=time.time())


def _reply_cost(c: CostSettings, *, joules: float | None, seconds: float, measured: bool,
                tokens: int) -> tuple[float | None, float | None, float | None]:
    """(electricity, hardware, total) for one reply, through bench's per-million-token cost model."""
    if not tokens or seconds <= 0:
        return None, None, None
    per = tokens / cost_mod.TOKENS_PER_MTOK
    try:
        rep = cost_mod.cost_report(
            tokens_per_s=tokens / seconds, currency=c.currency, device_price=c.device_price,
            lifetime_years=c.lifetime_years, duty_cycle=c.duty_cycle,
            joules_per_token=None if joules is None else max(joules, 0.0) / tokens,
            price_per_kwh=c.price_per_kwh, energy_measured=measured)
    except cost_mod.CostInputError:
        return None, None, None
    elec = rep["electricity_per_mtok"]
    hw = rep["hardware_per_mtok"]
    total = rep["total_per_mtok"]
    return (None if elec is None else elec * per, None if hw is None else hw * per,
            None if total is None else total * per)


def format_record(r: ReplyRecord) -> str:
    """One line for `chat --stats`."""
    def tps(x):
        return f"{x:.1f} tok/s" if x else "-"
    parts = [f"prompt {r.prompt_tokens} tok ({r.cached_tokens} cached), {tps(r.prefill_tokens_per_s)}",
             f"first token {r.ttft_s * 1000:.0f} ms",
             f"decode {max(r.generated_tokens - 1, 0)} tok, {tps(r.decode_tokens_per_s)}"]
    if r.joules is not None:
        parts.append(f"{r.joules:.3g} J {r.energy}")
    if r.cost is not None:
        parts.append(f"{r.cost:.3g} {r.currency}")
    return "[" + " | ".join(parts) + f" | stop: {r.finish_reason}]"


class MetricsLog:
    """Appends one JSON line per reply to a file (thread-safe; the file is opened per write so a
    rotated or deleted log is simply recreated)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, record: ReplyRecord, **extra) -> None:
        line = json.dumps({**record.as_dict(), **extra}, ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

