"""Energy counters on fake powercap/hwmon trees, and the labelled estimate when there are none."""

from pathlib import Path

import pytest

from edge_llm.metering import energy
from edge_llm.metering.energy import (
    EnergyMeter,
    PowerModel,
    counter_delta,
    default_power_model,
    find_energy_counters,
)

MAX_RANGE = 262_143_328_850  # a real package-0 max_energy_range_uj


def rapl_domain(root: Path, name: str, label: str, uj: int) -> Path:
    d = root / "sys/class/powercap" / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    return d / "energy_uj"


def fake_rapl(root: Path) -> dict[str, Path]:
    (root / "sys/class/powercap/intel-rapl").mkdir(parents=True)  # the control type itself
    return {
        "pkg0": rapl_domain(root, "intel-rapl:0", "package-0", 1_000_000),
        "core0": rapl_domain(root, "intel-rapl:0:0", "core", 500_000),
        "dram0": rapl_domain(root, "intel-rapl:0:1", "dram", 200_000),
        "pkg1": rapl_domain(root, "intel-rapl:1", "package-1", 3_000_000),
        "psys": rapl_domain(root, "intel-rapl:2", "psys", 9_000_000),
        "mmio": rapl_domain(root, "intel-rapl-mmio:0", "package-0", 1_000_000),
    }


class Clock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_only_top_level_packages_are_counted(tmp_path):
    files = fake_rapl(tmp_path)
    counters = find_energy_counters(tmp_path)
    assert [c.name for c in counters] == ["RAPL package-0", "RAPL package-1"]
    assert all(c.max_range_uj == MAX_RANGE and c.error is None for c in counters)

    meter = EnergyMeter(root=tmp_path, clock=Clock(0.0, 2.0), cpu_clock=Clock(0.0, 1.0))
    meter.start()
    files["pkg0"].write_text("3000000\n")  # +2 J
    files["pkg1"].write_text("4000000\n")  # +1 J
    files["core0"].write_text("99000000\n")  # a child: must not be added
    reading = meter.stop()
    assert reading.measured is True
    assert reading.joules == pytest.approx(3.0)
    assert reading.watts == pytest.approx(1.5)
    assert reading.source == "measured: RAPL package-0 + RAPL package-1"


def test_wraparound(tmp_path):
    files = fake_rapl(tmp_path)
    files["pkg0"].write_text(f"{MAX_RANGE - 1_000_000}\n")
    meter = EnergyMeter(counters=[c for c in find_energy_counters(tmp_path) if "0" in c.name],
                        clock=Clock(0.0, 1.0), cpu_clock=Clock(0.0, 0.0))
    meter.start()
    files["pkg0"].write_text("500000\n")  # wrapped: 1 J to the top + 0.5 J after
    assert meter.stop().joules == pytest.approx(1.5)
    assert counter_delta(10, 4, 20) == 14
    assert counter_delta(4, 10, None) == 6
    assert counter_delta(10, 4, None) is None


def test_poll_sees_each_wrap(tmp_path):
    files = fake_rapl(tmp_path)
    meter = EnergyMeter(counters=find_energy_counters(tmp_path)[:1],
                        clock=Clock(0.0, 10.0), cpu_clock=Clock(0.0, 0.0))
    meter.start()  # at 1 J
    files["pkg0"].write_text(f"{MAX_RANGE - 1}\n")
    meter.poll()
    files["pkg0"].write_text("1000000\n")
    # (MAX - 1 - 1e6) before the poll, then (1 + 1e6) across the wrap: one full range in total
    assert meter.stop().joules * 1e6 == pytest.approx(MAX_RANGE)


def test_unreadable_counter_is_absent_with_reason(tmp_path, monkeypatch):
    files = fake_rapl(tmp_path)
    real_read = energy._read_text

    def deny_pkg1(path):
        if Path(path) == files["pkg1"]:
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(energy, "_read_text", deny_pkg1)
    counters = find_energy_counters(tmp_path)
    pkg1 = next(c for c in counters if c.name == "RAPL package-1")
    assert pkg1.error and "permission denied" in pkg1.error and "root" in pkg1.error
    meter = EnergyMeter(counters=counters, clock=Clock(0.0, 1.0), cpu_clock=Clock(0.0, 0.0))
    assert [c.name for c in meter.counters] == ["RAPL package-0"]
    reading = meter.measure_idle(1.0, sleep=lambda s: None)
    assert reading.measured and "package-1 skipped: permission denied" in reading.note


def test_hwmon_prefers_socket_sensors(tmp_path):
    dev = tmp_path / "sys/class/hwmon/hwmon3"
    dev.mkdir(parents=True)
    (dev / "name").write_text("amd_energy\n")
    for i, (label, uj) in enumerate([("Ecore000", 5), ("Ecore001", 6), ("Esocket0", 100)], 1):
        (dev / f"energy{i}_input").write_text(f"{uj}\n")
        (dev / f"energy{i}_label").write_text(label + "\n")
    assert [c.name for c in find_energy_counters(tmp_path)] == ["hwmon amd_energy Esocket0"]


def test_no_counters_gives_labelled_estimate(tmp_path):
    meter = EnergyMeter(root=tmp_path, arch="x86_64", logical_cores=4,
                        clock=Clock(100.0, 102.0), cpu_clock=Clock(5.0, 8.0))
    with meter:
        pass
    r = meter.reading
    assert r.measured is False
    assert r.source.startswith("estimated:") and "per busy core" in r.source
    # 3 CPU-s in 2 s -> 1.5 busy cores; 10 W + 10 W x 1.5 = 25 W for 2 s
    assert r.joules == pytest.approx(50.0)
    assert r.cpu_seconds == pytest.approx(3.0)
    assert "no RAPL or hwmon" in r.note
    assert set(r.as_dict()) == {"joules", "seconds", "source", "measured", "note", "cpu_seconds",
                                "idle_watts_subtracted", "watts"}


def test_estimate_with_user_tdp_and_idle_subtraction():
    # 2 logical cores, 6 W idle, 26 W flat out -> 10 W per busy core
    meter = EnergyMeter(counters=[], tdp_watts=26.0, idle_watts=6.0, logical_cores=2,
                        subtract_idle=True, clock=Clock(0.0, 4.0), cpu_clock=Clock(0.0, 4.0))
    meter.start()
    r = meter.stop()
    assert r.measured is False and "user-supplied tdp_watts" in r.source
    assert r.joules == pytest.approx(10.0 * 1.0 * 4.0)  # 1 busy core, idle removed
    assert r.idle_watts_subtracted == 6.0


def test_measured_idle_subtraction(tmp_path):
    files = fake_rapl(tmp_path)
    meter = EnergyMeter(counters=find_energy_counters(tmp_path)[:1], subtract_idle=True,
                        clock=Clock(0.0, 1.0, 10.0, 12.0), cpu_clock=Clock(0.0, 0.0, 0.0, 2.0))

    def idle_sleep(seconds):
        files["pkg0"].write_text("3000000\n")  # 2 J over the 1 s idle window

    idle = meter.measure_idle(1.0, sleep=idle_sleep)
    assert idle.measured and idle.joules == pytest.approx(2.0)
    assert meter.idle_watts == pytest.approx(2.0)
    meter.start()
    files["pkg0"].write_text("13000000\n")  # 10 J in 2 s, 4 J of it idle
    r = meter.stop()
    assert r.joules == pytest.approx(6.0) and r.idle_watts_subtracted == pytest.approx(2.0)


def test_default_models_and_equivalence():
    assert default_power_model("aarch64").idle_watts < default_power_model("x86_64").idle_watts
    m = PowerModel.from_tdp(tdp_watts=45.0, idle_watts=5.0, logical_cores=8)
    # idle + (tdp - idle) * utilization, utilization = busy / logical
    assert m.watts(2.0) == pytest.approx(5.0 + 40.0 * 2.0 / 8)


def test_stop_before_start_is_an_error():
    with pytest.raises(RuntimeError):
        EnergyMeter(counters=[]).stop()
