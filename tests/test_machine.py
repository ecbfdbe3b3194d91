"""detect_machine() against recorded /proc and /sys samples (tests/data/cpuinfo/<machine>/)."""

import json
import os
import threading
from pathlib import Path

import pytest

from edge_llm.metering import machine
from edge_llm.metering.machine import (
    arm_core_name,
    cores_used,
    detect_machine,
    parse_cpuinfo,
    thread_affinity,
    threads_per_cluster,
)

SAMPLES = Path(__file__).parent / "data" / "cpuinfo"


def detect(name: str) -> dict:
    return detect_machine(proc_root=SAMPLES / name)


def test_rpi5():
    m = detect("rpi5")
    assert m["architecture"] == "aarch64"
    assert m["cpu_model"] == "4x Cortex-A76"
    assert m["cpu_vendor"] == "ARM"
    assert (m["logical_cores"], m["physical_cores"]) == (4, 4)
    got = [(c["core"], c["count"], c["part"]) for c in m["clusters"]]
    assert got == [("Cortex-A76", 4, "0xd0b")]
    assert m["clusters"][0]["max_mhz"] is None  # no cpufreq in this sample
    assert m["isa"] == {"neon": True, "dotprod": True, "i8mm": False, "bf16": False, "fp16": True,
                        "sve": False, "sve2": False, "sme": False}
    assert m["board_model"] == "Raspberry Pi 5 Model B Rev 1.0"  # device-tree model, NUL stripped
    assert m["soc"] == "brcm,bcm2712"
    assert m["memory_total_bytes"] == 8245888 * 1024
    assert m["kernel"] == "6.6.51+rpt-rpi-2712"


def test_snapdragon_855_clusters_by_part_and_max_freq():
    m = detect("snapdragon-termux")
    assert m["architecture"] == "aarch64"
    assert m["cpu_vendor"] == "Qualcomm"
    assert m["cpu_model"] == "4x Kryo 4xx Silver (Cortex-A55) + 4x Kryo 4xx Gold (Cortex-A76)"
    # prime and gold share part 0x804; max frequency separates them: 4 silver + 3 gold + 1 prime
    got = [(c["core"], c["based_on"], c["cpus"], c["max_mhz"]) for c in m["clusters"]]
    assert got == [
        ("Kryo 4xx Silver", "Cortex-A55", [0, 1, 2, 3], 1785.6),
        ("Kryo 4xx Gold", "Cortex-A76", [4, 5, 6], 2419.2),
        ("Kryo 4xx Gold", "Cortex-A76", [7], 2841.6),
    ]
    assert m["cpu_max_mhz"] == 2841.6
    assert m["isa"]["dotprod"] and not m["isa"]["i8mm"] and not m["isa"]["sve"]
    assert m["soc"] == "Qualcomm Technologies, Inc SM8150"
    assert m["soc_name"] == "Snapdragon 855/855+"
    assert m["board_model"] is None
    assert m["memory_total_bytes"] is None  # no meminfo in this sample


def test_apple_vm():
    m = detect("apple-vm")
    assert m["architecture"] == "aarch64"
    assert m["cpu_vendor"] == "Apple"
    got = [(c["implementer"], c["part"], c["count"]) for c in m["clusters"]]
    assert got == [("0x61", "0x000", 4)]
    assert m["isa"]["dotprod"] and m["isa"]["bf16"] and m["isa"]["fp16"]
    assert not m["isa"]["i8mm"] and not m["isa"]["sve"]  # the hypervisor does not expose them
    assert "fhm" in m["isa_features"]
    assert m["virtualized"] is True
    assert m["soc"] is None and m["board_model"] is None


def test_x86_zen4():
    m = detect("x86-zen4")
    assert m["architecture"] == "x86_64"
    assert m["cpu_vendor"] == "AMD"
    assert m["cpu_model"] == "AMD EPYC"
    assert m["isa"]["avx512_vnni"] and m["isa"]["avx2"] and m["isa"]["avx512f"]
    assert not m["isa"]["amx_int8"] and not m["isa"]["avx_vnni"]
    assert "sse3" in m["isa_features"] and "pni" not in m["isa_features"]
    assert m["isa_features"] == sorted(m["isa_features"])
    assert (m["logical_cores"], m["physical_cores"]) == (2, 2)
    assert m["virtualized"] is True  # "hypervisor" flag
    assert m["memory_total_bytes"] > 0


def test_missing_files_give_none(tmp_path):
    m = detect_machine(proc_root=tmp_path)
    for key in ("architecture", "cpu_model", "cpu_vendor", "logical_cores", "physical_cores",
                "board_model", "soc", "memory_total_bytes", "kernel", "virtualized", "emulated"):
        assert m[key] is None, key
    assert m["clusters"] == [] and m["isa"] == {}
    assert m["python"]  # interpreter facts are still reported


def test_result_is_json_and_private_by_default():
    m = detect("snapdragon-termux")
    assert json.loads(json.dumps(m)) == m
    assert "hostname" not in m
    assert "hostname" in detect_machine(proc_root=SAMPLES / "rpi5", include_hostname=True)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc")
def test_live_machine_smoke():
    m = detect_machine(query_android=False)
    assert m["python_machine"] and m["architecture"]
    assert m["emulated"] in (True, False)
    assert m["usable_cores"] == len(thread_affinity())


def test_sysfs_siblings_count_physical_cores(tmp_path):
    (tmp_path / "proc").mkdir()
    blocks = [f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: fpu lm avx2\n"
              for i in range(4)]
    (tmp_path / "proc/cpuinfo").write_text("\n".join(blocks))
    for i, siblings in enumerate(["0-1", "0-1", "2-3", "2-3"]):
        topo = tmp_path / f"sys/devices/system/cpu/cpu{i}/topology"
        topo.mkdir(parents=True)
        (topo / "thread_siblings_list").write_text(siblings + "\n")
    m = detect_machine(proc_root=tmp_path)
    assert (m["logical_cores"], m["physical_cores"], m["cpu_vendor"]) == (4, 2, "Intel")


def test_arm32_shared_features_block():
    text = ("Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\nBogoMIPS\t: 38.40\n\n"
            "processor\t: 1\nBogoMIPS\t: 38.40\n\nFeatures\t: half thumb vfp neon vfpv4\n"
            "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xc07\n\nHardware\t: X\n")
    cpus, extra = parse_cpuinfo(text)
    assert len(cpus) == 2 and cpus[1]["CPU part"] == "0xc07" and extra["Hardware"] == "X"


def test_core_name_table():
    assert arm_core_name(0x41, 0xD46) == ("Cortex-A510", None)
    assert arm_core_name(0x41, 0xD4F) == ("Neoverse-V2", None)
    assert arm_core_name(0x51, 0x805) == ("Kryo 4xx Silver", "Cortex-A55")
    assert arm_core_name(0x61, 0x033) == ("M2 Avalanche", None)
    assert arm_core_name(0x41, 0xFFF) == ("ARM part 0xfff", None)


def test_emulation_detected_from_arch_mismatch():
    assert machine._emulation("aarch64", "x86_64")[0] is True
    assert machine._emulation("aarch64", "armv7l") == (False, None)  # 32-bit userland, native
    assert machine._emulation(None, "x86_64") == (None, None)


def test_cores_used_reads_field_39(tmp_path):
    task = tmp_path / "proc/4242/task"
    fields = ["0"] * 52
    for tid, cpu, state in ((4242, 7, "S"), (4243, 2, "R")):
        rest = [state] + fields[:35] + [str(cpu)] + fields[:10]
        (task / str(tid)).mkdir(parents=True)
        (task / str(tid) / "stat").write_text(f"{tid} (onnx) runner) " + " ".join(rest) + "\n")
    assert cores_used(4242, proc_root=tmp_path) == {4242: 7, 4243: 2}
    assert cores_used(4242, proc_root=tmp_path, running_only=True) == {4243: 2}
    clusters = detect("snapdragon-termux")["clusters"]
    assert threads_per_cluster([7, 2, 99], clusters) == {
        "Kryo 4xx Gold @ 2842 MHz": 1, "Kryo 4xx Silver @ 1786 MHz": 1, "other": 1}


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_cores_used_live_sees_own_threads():
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    try:
        used = cores_used()
    finally:
        done.set()
        worker.join()
    assert len(used) >= 2
    assert set(used.values()) <= set(range(os.cpu_count() or 1))
