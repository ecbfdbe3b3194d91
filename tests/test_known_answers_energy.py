"""Known answers for the energy meter (edge_llm/metering/energy.py) beyond tests/test_energy.py: the power
model defaults and their labels, counter discovery and selection edge cases, counters that break in
the middle of a window, idle subtraction only when asked, and the exact notes a reading carries.
Written from the surviving mutants of benchmarks/mutation/run_mutation.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_llm.metering import energy
from edge_llm.metering.energy import (
    EnergyMeter,
    PowerModel,
    default_power_model,
    find_energy_counters,
    process_cpu_seconds,
    select_counters,
)

MEASURED_NOTE = "whole-package counter: includes every process on the machine, not DRAM, board or display"


class Clock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def rapl(root: Path, name: str, label: str | None, uj: int | str, max_range: str | None = "1000000000") -> Path:
    d = root / "sys/class/powercap" / name
    d.mkdir(parents=True)
    if label is not None:
        (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    if max_range is not None:
        (d / "max_energy_range_uj").write_text(max_range + "\n")
    return d / "energy_uj"


def hwmon(root: Path, label: str, uj: int) -> Path:
    d = root / "sys/class/hwmon/hwmon0"
    d.mkdir(parents=True)
    (d / "name").write_text("amd_energy\n")
    (d / "energy1_input").write_text("5\n")                  # a per-core sensor: left out beside the socket
    (d / "energy1_label").write_text("Ecore000\n")
    (d / "energy2_input").write_text(f"{uj}\n")
    (d / "energy2_label").write_text(label + "\n")
    return d / "energy2_input"


# ---- the power model ------------------------------------------------------------------------------

def test_default_power_models_and_labels():
    assert default_power_model("x86_64") == PowerModel(10.0, 10.0, "x86_64 desktop/laptop default")
    assert default_power_model("aarch64") == PowerModel(1.0, 1.5, "aarch64 phone/SBC default")
    assert default_power_model("armv7l") == PowerModel(1.0, 1.5, "armv7l phone/SBC default")


def test_power_model_from_tdp_edges():
    assert PowerModel.from_tdp(tdp_watts=20.0, idle_watts=10.0, logical_cores=1) == \
        PowerModel(10.0, 10.0, "user-supplied tdp_watts")
    assert PowerModel.from_tdp(tdp_watts=5.0, idle_watts=5.5, logical_cores=4).watts_per_busy_core == 0.0
    assert PowerModel.from_tdp(tdp_watts=9.0, idle_watts=1.0, logical_cores=0).watts_per_busy_core == 8.0


def test_meter_resolves_the_model_from_its_arguments(monkeypatch):
    monkeypatch.setattr(energy.os, "cpu_count", lambda: 6)
    assert EnergyMeter(counters=[], arch="aarch64").power_model == default_power_model("aarch64")
    m = EnergyMeter(counters=[], arch="x86_64", idle_watts=3.0)
    assert m.power_model == PowerModel(3.0, 10.0, "x86_64 desktop/laptop default")
    m = EnergyMeter(counters=[], arch="x86_64", tdp_watts=70.0)              # idle from the default: 10 W
    assert (m.power_model.idle_watts, m.power_model.watts_per_busy_core) == (10.0, 10.0)   # (70 - 10) / 6
    assert EnergyMeter(counters=[]).logical_cores == 6
    assert EnergyMeter(counters=[], logical_cores=4).logical_cores == 4
    monkeypatch.setattr(energy.os, "cpu_count", lambda: None)
    assert EnergyMeter(counters=[]).logical_cores == 1


def test_defaults_read_the_real_machine(monkeypatch):
    roots = []
    monkeypatch.setattr(energy, "Path", lambda root: roots.append(root) or Path("/nonexistent-root"))
    find_energy_counters()
    EnergyMeter()
    assert roots == ["/", "/"]


def test_process_cpu_seconds_is_user_plus_system(monkeypatch):
    monkeypatch.setattr(energy.os, "times", lambda: os.times_result((1.5, 0.25, 0.0, 0.0, 0.0)))
    assert process_cpu_seconds() == 1.75


# ---- counters -------------------------------------------------------------------------------------

def test_psys_before_a_package_does_not_hide_it(tmp_path):
    rapl(tmp_path, "intel-rapl:0", "psys", 5)
    rapl(tmp_path, "intel-rapl:1", "package-0", 7)
    rapl(tmp_path, "intel-rapl:2", None, 9)                                  # no name file: skipped
    assert [c.name for c in find_energy_counters(tmp_path)] == ["RAPL package-0"]


def test_counter_files_that_cannot_be_parsed(tmp_path):
    rapl(tmp_path, "intel-rapl:0", "package-0", "n/a", max_range=None)
    rapl(tmp_path, "intel-rapl:1", "package-1", 5, max_range="unknown")
    a, b = find_energy_counters(tmp_path)
    assert a.error and a.error.startswith("unreadable: ") and a.max_range_uj is None
    assert b.error is None and b.max_range_uj is None


def test_hwmon_only_machines_are_measured(tmp_path):
    f = hwmon(tmp_path, "Package", 1_000_000)                               # label case does not matter
    counters = find_energy_counters(tmp_path)
    assert [(c.name, c.kind) for c in counters] == [("hwmon amd_energy Package", "hwmon")]
    assert select_counters(counters) == counters
    meter = EnergyMeter(root=tmp_path, clock=Clock(0.0, 2.0), cpu_clock=Clock(0.0, 0.0))
    meter.start()
    f.write_text("4000000\n")
    r = meter.stop()
    assert r.measured and r.joules == pytest.approx(3.0) and r.source == "measured: hwmon amd_energy Package"


def test_counters_that_break_during_a_window(tmp_path):
    a = rapl(tmp_path, "intel-rapl:0", "package-0", 5_000_000, max_range=None)
    b = rapl(tmp_path, "intel-rapl:1", "package-1", 1_000_000)
    meter = EnergyMeter(root=tmp_path, clock=Clock(0.0, 1.0), cpu_clock=Clock(0.0, 0.0))
    meter.start()
    a.write_text("4000000\n")                                               # backwards, no known range
    b.write_text("3000000\n")
    meter.poll()
    b.write_text("4000000\n")
    r = meter.stop()                                                        # package-1 kept counting
    assert r.measured and r.joules == pytest.approx(3.0) and r.source == "measured: RAPL package-1"
    assert r.note == f"{MEASURED_NOTE}; RAPL package-0 went backwards with no known range; dropped"
    meter = EnergyMeter(root=tmp_path, clock=Clock(0.0, 1.0), cpu_clock=Clock(0.0, 0.0))
    meter.start()
    a.write_text("garbage\n")                                               # unreadable in the window
    b.write_text("5000000\n")
    r = meter.stop()
    assert r.joules == pytest.approx(1.0)
    assert r.note.startswith(f"{MEASURED_NOTE}; RAPL package-0 unreadable (") and r.note.endswith("); dropped")


def test_a_counter_unreadable_at_start_is_left_out(tmp_path):
    a = rapl(tmp_path, "intel-rapl:0", "package-0", 1)
    b = rapl(tmp_path, "intel-rapl:1", "package-1", 1_000_000)
    meter = EnergyMeter(root=tmp_path, clock=Clock(0.0, 1.0), cpu_clock=Clock(0.0, 0.0))
    a.write_text("garbage\n")
    meter.start()
    a.write_text("9000000\n")
    b.write_text("2000000\n")
    assert meter.stop().joules == pytest.approx(1.0)


# ---- readings -------------------------------------------------------------------------------------

def test_measured_reading_fields_and_idle_only_when_asked(tmp_path):
    f = rapl(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = EnergyMeter(root=tmp_path, idle_watts=2.0, clock=Clock(0.0, 1.0, 0.0, 1.0, 0.0, 1.0),
                        cpu_clock=Clock(0.0, 0.5, 0.0, 0.0, 0.0, 0.0))
    assert meter.reading is None
    meter.start()
    f.write_text("5000000\n")
    r = meter.stop()                                                        # subtract_idle is off
    assert (r.joules, r.cpu_seconds, r.idle_watts_subtracted, r.note) == (5.0, 0.5, None, MEASURED_NOTE)
    meter.subtract_idle = True                                              # idle_watts given: used
    meter.start()
    f.write_text("6000000\n")
    r = meter.stop()
    assert (r.joules, r.idle_watts_subtracted) == (0.0, 2.0)                # 1 J - 2 W x 1 s, floored at 0
    assert r.note == f"{MEASURED_NOTE}; minus idle 2.00 W x 1.00 s" and r.cpu_seconds == 0.0
    meter.idle_watts = None
    meter.start()
    r = meter.stop()
    assert r.note == f"{MEASURED_NOTE}; subtract_idle requested but no idle_watts; call measure_idle() first"


def test_measure_idle_is_never_itself_idle_subtracted(tmp_path):
    f = rapl(tmp_path, "intel-rapl:0", "package-0", 0)
    slept = []
    meter = EnergyMeter(root=tmp_path, subtract_idle=True, idle_watts=100.0,
                        clock=Clock(0.0, 2.0), cpu_clock=Clock(0.0, 0.0))
    r = meter.measure_idle(sleep=lambda s: slept.append(s) or f.write_text("6000000\n"))
    assert slept == [2.0] and r.joules == 6.0 and meter.idle_watts == 3.0 and meter.subtract_idle is True


def test_stop_twice_is_an_error():
    meter = EnergyMeter(counters=[], clock=Clock(0.0, 1.0, 2.0), cpu_clock=Clock(0.0, 0.0, 0.0))
    with pytest.raises(RuntimeError, match=r"^EnergyMeter.stop\(\) called before start\(\)$"):
        meter.stop()
    meter.start()
    meter.stop()
    with pytest.raises(RuntimeError, match="called before start"):
        meter.stop()


@pytest.mark.parametrize("seconds, cpu, joules", [(0.5, 0.25, 7.5), (0.0, 0.0, 0.0), (4.0, 0.0, 40.0)])
def test_estimate_for_short_and_idle_windows(seconds, cpu, joules):
    meter = EnergyMeter(counters=[], arch="x86_64", logical_cores=2, clock=Clock(0.0, seconds),
                        cpu_clock=Clock(0.0, cpu))
    meter.start()
    r = meter.stop()
    assert r.joules == pytest.approx(joules) and r.cpu_seconds == cpu and r.idle_watts_subtracted is None
    busy = cpu / seconds if seconds else 0.0
    assert r.note == (f"{busy:.2f} busy cores of 2 over {seconds:.2f} s; only this process's CPU time is "
                      "modelled; no RAPL or hwmon energy counter found")


def test_estimate_when_counters_exist_but_are_unreadable(tmp_path, monkeypatch):
    rapl(tmp_path, "intel-rapl:0", "package-0", 1)
    real = energy._read_text
    monkeypatch.setattr(energy, "_read_text", lambda p: (_ for _ in ()).throw(PermissionError(13, "denied"))
                        if p.name == "energy_uj" else real(p))
    meter = EnergyMeter(root=tmp_path, arch="x86_64", logical_cores=2, clock=Clock(0.0, 1.0),
                        cpu_clock=Clock(0.0, 0.0))
    meter.start()
    r = meter.stop()
    assert not r.measured and "no RAPL or hwmon" not in r.note
    assert r.note.endswith("RAPL package-0 skipped: " + energy._PERMISSION_HINT)
