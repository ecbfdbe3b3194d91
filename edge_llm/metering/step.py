"""Energy of single model steps: the meter the generator runs every prefill and decode step through.

bench's EnergyMeter with bench's settings: a RAPL/hwmon package counter where one is readable
("measured"), else bench's stated power model ("estimated"), idle power subtracted as in bench.
Each step gets its own EnergyMeter window, so replies that take turns on one machine (the server's
model loop) do not count each other's work.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from .energy import EnergyMeter, EnergyReading

T = TypeVar("T")


class StepMeter:
    """Energy of single model steps, with bench's EnergyMeter and bench's settings (process_time,
    idle subtracted). Counters are found once; each step gets its own EnergyMeter window, so
    concurrent callers never share window state."""

    def __init__(self, *, cpu_watts: float | None = None, idle_watts: float | None = None):
        probe = EnergyMeter(tdp_watts=cpu_watts, subtract_idle=True, cpu_clock=time.process_time)
        self.counters = probe.counters
        self.power_model = probe.power_model
        self.idle_watts = idle_watts   # measured idle power of the counters (measure_idle), if any

    @property
    def measured(self) -> bool:
        return bool(self.counters)

    def describe(self) -> str:
        if self.counters:
            return "measured: " + " + ".join(c.name for c in self.counters)
        return "estimated: " + self.power_model.describe()

    def _meter(self) -> EnergyMeter:
        return EnergyMeter(counters=self.counters, power_model=self.power_model, idle_watts=self.idle_watts,
                           subtract_idle=True, cpu_clock=time.process_time)

    def measure_idle(self, seconds: float = 2.0) -> float | None:
        """With a counter, read idle power over `seconds` (subtracted from later steps, as bench does)."""
        if not self.counters:
            return None
        self.idle_watts = self._meter().measure_idle(seconds).watts
        return self.idle_watts

    def run(self, fn: Callable[..., T], *args) -> tuple[T, EnergyReading]:
        m = self._meter()
        m.start()
        try:
            out = fn(*args)
        finally:
            reading = m.stop()
        return out, reading


_default_meter: StepMeter | None = None
_default_lock = threading.Lock()


def default_step_meter() -> StepMeter:
    """The process's meter with bench's default power model (the CLI's; the server builds its own)."""
    global _default_meter
    with _default_lock:
        if _default_meter is None:
            _default_meter = StepMeter()
        return _default_meter
