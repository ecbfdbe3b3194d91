"""Energy per benchmark window, labelled honestly as measured or estimated.

Measured: Linux powercap RAPL package domains (Intel, and AMD since Linux 5.8, both under
`/sys/class/powercap/intel-rapl:N`), else hwmon energy sensors (`energyN_input`, microjoules).
Package counters cover the whole CPU package (every process, cores + uncore), not DRAM, board or
display. Only top-level `package-*` domains are summed: `core`, `uncore` and `dram` are children
of a package (`intel-rapl:0:0`), and `psys` / `intel-rapl-mmio:*` repeat what the package counts.

Estimated (no readable counter, the usual case on phones, Macs and VMs, and on Linux since 5.10
where `energy_uj` is root-only after CVE-2020-8694): a stated linear model of this process's load,

    watts = idle_watts + watts_per_busy_core * busy_cores,   busy_cores = process CPU s / wall s

which equals `idle + (tdp - idle) * utilization` with `tdp = idle + watts_per_busy_core * logical
cores` and `utilization = CPU s / (wall s * logical cores)`. Defaults (SoC/package level, rough):

    x86_64   idle 10 W, 10 W per busy core   desktop/laptop core at all-core turbo + uncore share
    aarch64  idle 1 W, 1.5 W per busy core   phone/SBC: A76 ~1.5-2 W at 2.4-2.8 GHz, A55 ~0.3 W

Pass `tdp_watts` / `idle_watts` (or a `PowerModel`) for the machine at hand; every estimated reading
has `measured=False` and a `source` that starts with "estimated:" and spells out the model.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

_PERMISSION_HINT = ("permission denied (energy_uj is root-only since Linux 5.10, CVE-2020-8694; "
                    "run as root or `sudo chmod o+r` the file)")


@dataclass(frozen=True)
class EnergyCounter:
    """One cumulative energy counter; `error` says why it cannot be used (None when usable)."""

    name: str
    path: str
    kind: str  # "rapl" or "hwmon"
    max_range_uj: int | None = None
    error: str | None = None

    def read_uj(self) -> int:
        return int(_read_text(Path(self.path)).strip())


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    seconds: float
    source: str  # "measured: RAPL package-0" or "estimated: <model>"
    measured: bool
    note: str = ""
    cpu_seconds: float | None = None  # this process's CPU time in the window
    idle_watts_subtracted: float | None = None

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "watts": self.watts}


@dataclass(frozen=True)
class PowerModel:
    """Linear CPU power model used when nothing can be measured."""

    idle_watts: float
    watts_per_busy_core: float
    label: str

    @classmethod
    def from_tdp(cls, *, tdp_watts: float, idle_watts: float, logical_cores: int,
                 label: str = "user-supplied tdp_watts") -> PowerModel:
        """Full load of every logical core draws `tdp_watts`; power rises linearly from idle."""
        per_core = max(tdp_watts - idle_watts, 0.0) / max(logical_cores, 1)
        return cls(idle_watts=idle_watts, watts_per_busy_core=per_core, label=label)

    def watts(self, busy_cores: float) -> float:
        return self.idle_watts + self.watts_per_busy_core * busy_cores

    def describe(self) -> str:
        return (f"{self.idle_watts:g} W idle + {self.watts_per_busy_core:g} W per busy core "
                f"({self.label})")


def default_power_model(arch: str | None = None) -> PowerModel:
    """The documented default for an architecture (platform.machine() when None)."""
    arch = (arch or platform.machine()).lower()
    if arch.startswith(("aarch64", "arm")):
        return PowerModel(1.0, 1.5, f"{arch} phone/SBC default")
    return PowerModel(10.0, 10.0, f"{arch} desktop/laptop default")


def find_energy_counters(root: str | os.PathLike = "/") -> list[EnergyCounter]:
    """RAPL package domains and hwmon energy sensors under `root`, usable or not (see `error`)."""
    base = Path(root)
    counters = []
    for domain in sorted(base.glob("sys/class/powercap/intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", domain.name):
            continue  # intel-rapl:0:0 etc. are core/uncore/dram inside package 0
        name = _try_read(domain / "name") or ""
        if not name.startswith("package-"):
            continue  # psys spans the platform and would double-count the package
        counters.append(_probe(f"RAPL {name}", domain / "energy_uj", "rapl",
                               _try_int(domain / "max_energy_range_uj")))
    counters.extend(_hwmon_counters(base))
    return counters


def select_counters(counters: list[EnergyCounter]) -> list[EnergyCounter]:
    """Usable counters that do not overlap: RAPL packages if any, else hwmon sensors."""
    usable = [c for c in counters if c.error is None]
    rapl = [c for c in usable if c.kind == "rapl"]
    return rapl or [c for c in usable if c.kind == "hwmon"]


def counter_delta(start_uj: int, end_uj: int, max_range_uj: int | None) -> int | None:
    """Microjoules between two reads, across at most one wraparound; None if it cannot be known."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    if max_range_uj:
        return max_range_uj - start_uj + end_uj
    return None


def process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class EnergyMeter:
    """Measure (or estimate) the energy of a window: `start()`, work, `stop() -> EnergyReading`.

    Also a context manager (`with EnergyMeter() as m: ...; m.reading`). Call `poll()` at least
    once per counter range (~an hour for RAPL at 70 W) in long runs so each wrap is seen.
    """

    def __init__(self, *, root: str | os.PathLike = "/",
                 counters: list[EnergyCounter] | None = None,
                 power_model: PowerModel | None = None, tdp_watts: float | None = None,
                 idle_watts: float | None = None, subtract_idle: bool = False,
                 arch: str | None = None, logical_cores: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = process_cpu_seconds):
        found = find_energy_counters(root) if counters is None else counters
        self.counters = select_counters(found)
        self.skipped = [c for c in found if c.error is not None]
        self.logical_cores = logical_cores or os.cpu_count() or 1
        self.power_model = power_model or _resolve_model(arch, tdp_watts, idle_watts,
                                                         self.logical_cores)
        self.idle_watts = idle_watts  # baseline for subtract_idle on measured counters
        self.subtract_idle = subtract_idle
        self.reading: EnergyReading | None = None
        self._clock, self._cpu_clock = clock, cpu_clock
        self._t0: float | None = None

    def start(self) -> None:
        self._notes: list[str] = []
        self._last, self._acc = {}, {}
        for c in self.counters:
            value = self._read(c)
            if value is not None:
                self._last[c.path], self._acc[c.path] = value, 0
        self._t0, self._cpu0 = self._clock(), self._cpu_clock()

    def poll(self) -> None:
        """Fold the counters' progress since the last read into the running total."""
        for c in self.counters:
            if c.path not in self._last:
                continue
            value = self._read(c)
            delta = None if value is None else counter_delta(self._last[c.path], value,
                                                             c.max_range_uj)
            if delta is None:
                if value is not None:
                    self._notes.append(f"{c.name} went backwards with no known range; dropped")
                del self._last[c.path], self._acc[c.path]
                continue
            self._acc[c.path] += delta
            self._last[c.path] = value

    def stop(self) -> EnergyReading:
        if self._t0 is None:
            raise RuntimeError("EnergyMeter.stop() called before start()")
        self.poll()
        seconds = self._clock() - self._t0
        cpu_seconds = max(self._cpu_clock() - self._cpu0, 0.0)
        self._t0 = None
        if self._acc:
            self.reading = self._measured(seconds, cpu_seconds)
        else:
            self.reading = self._estimated(seconds, cpu_seconds)
        return self.reading

    def measure_idle(self, seconds: float = 2.0, *,
                     sleep: Callable[[float], None] = time.sleep) -> EnergyReading:
        """Read the counters over an idle window; when measured, later subtractions use it."""
        subtract, self.subtract_idle = self.subtract_idle, False
        try:
            self.start()
            sleep(seconds)
            reading = self.stop()
        finally:
            self.subtract_idle = subtract
        if reading.measured:
            self.idle_watts = reading.watts
        return reading

    def __enter__(self) -> EnergyMeter:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read(self, counter: EnergyCounter) -> int | None:
        try:
            return counter.read_uj()
        except (OSError, ValueError) as err:
            self._notes.append(f"{counter.name} unreadable ({err}); dropped")
            return None

    def _measured(self, seconds: float, cpu_seconds: float) -> EnergyReading:
        names = [c.name for c in self.counters if c.path in self._acc]
        joules = sum(self._acc.values()) / 1e6
        notes = ["whole-package counter: includes every process on the machine, not DRAM, "
                 "board or display"] + self._notes + self._skip_notes()
        idle = None
        if self.subtract_idle and self.idle_watts is not None:
            idle = self.idle_watts
            joules = max(joules - idle * seconds, 0.0)
            notes.append(f"minus idle {idle:.2f} W x {seconds:.2f} s")
        elif self.subtract_idle:
            notes.append("subtract_idle requested but no idle_watts; call measure_idle() first")
        return EnergyReading(joules, seconds, "measured: " + " + ".join(names), True,
                             "; ".join(notes), cpu_seconds, idle)

    def _estimated(self, seconds: float, cpu_seconds: float) -> EnergyReading:
        model = self.power_model
        busy = min(cpu_seconds / seconds, self.logical_cores) if seconds > 0 else 0.0
        joules = model.watts(busy) * seconds
        notes = [f"{busy:.2f} busy cores of {self.logical_cores} over {seconds:.2f} s; only this "
                 "process's CPU time is modelled"] + self._notes + self._skip_notes()
        idle = None
        if self.subtract_idle:
            idle = model.idle_watts
            joules -= idle * seconds
            notes.append(f"minus model idle {idle:g} W")
        if not self.counters and not self.skipped:
            notes.append("no RAPL or hwmon energy counter found")
        return EnergyReading(joules, seconds, "estimated: " + model.describe(), False,
                             "; ".join(notes), cpu_seconds, idle)

    def _skip_notes(self) -> list[str]:
        return [f"{c.name} skipped: {c.error}" for c in self.skipped]


def _resolve_model(arch, tdp_watts, idle_watts, logical_cores) -> PowerModel:
    base = default_power_model(arch)
    idle = base.idle_watts if idle_watts is None else idle_watts
    if tdp_watts is not None:
        return PowerModel.from_tdp(tdp_watts=tdp_watts, idle_watts=idle,
                                   logical_cores=logical_cores)
    return replace(base, idle_watts=idle) if idle_watts is not None else base


def _hwmon_counters(base: Path) -> list[EnergyCounter]:
    counters = []
    for dev in sorted(base.glob("sys/class/hwmon/hwmon*")):
        driver = _try_read(dev / "name") or dev.name
        inputs = []
        for path in sorted(dev.glob("energy*_input")):
            label = _try_read(path.with_name(path.name.replace("_input", "_label")))
            inputs.append((path, label or path.name))
        # amd_energy-style devices list per-core and per-socket sensors: keep sockets only
        sockets = [i for i in inputs if re.search(r"socket|package|pkg", i[1], re.I)]
        for path, label in sockets or inputs:
            counters.append(_probe(f"hwmon {driver} {label}", path, "hwmon", None))
    return counters


def _probe(name: str, path: Path, kind: str, max_range: int | None) -> EnergyCounter:
    try:
        int(_read_text(path).strip())
        error = None
    except PermissionError:
        error = _PERMISSION_HINT
    except (OSError, ValueError) as err:
        error = f"unreadable: {err}"
    return EnergyCounter(name=name, path=str(path), kind=kind, max_range_uj=max_range, error=error)


def _read_text(path: Path) -> str:
    return path.read_text()


def _try_read(path: Path) -> str | None:
    try:
        return _read_text(path).strip()
    except OSError:
        return None


def _try_int(path: Path) -> int | None:
    text = _try_read(path)
    return int(text) if text and text.isdigit() else None
