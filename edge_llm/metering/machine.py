"""Describe the machine a benchmark ran on, so ARM phone, board and x86 results compare.

`detect_machine()` returns a JSON-serialisable dict. Every hardware field is read from files under
`proc_root` (`<root>/proc/cpuinfo`, `<root>/proc/meminfo`, `<root>/sys/devices/system/cpu/...`), so
tests point it at recorded samples; a missing or unreadable file gives None, never an exception.
Fields about the running interpreter (python, numpy, onnxruntime, os) always describe this process;
fields that only make sense for the live machine (affinity, Android props, emulation) are None when
`proc_root` is not "/".

ARM cores are named from MIDR ("CPU implementer" + "CPU part") and grouped into clusters by
(implementer, part, cpuinfo_max_freq, cpu_capacity). Grouping by max frequency as well as part is
deliberate: the Snapdragon 855's prime core and its three gold cores are the same part (0x804) but
run at 2.84 vs 2.42 GHz, so it reports three clusters (1 + 3 + 4), as the hardware is built.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

SCHEMA_VERSION = 1

_IMPLEMENTERS = {
    0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon",
    0x4E: "NVIDIA", 0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x56: "Marvell",
    0x61: "Apple", 0x69: "Intel", 0x6D: "Microsoft", 0xC0: "Ampere",
}

# (implementer, part) -> (core name, the Arm core it derives from or None).
# Sources: Linux arch/arm64/include/asm/cputype.h, util-linux lscpu-arm.c, Asahi m1n1 midr.h.
_PARTS: dict[tuple[int, int], tuple[str, str | None]] = {
    **{(0x41, p): (n, None) for p, n in {
        0xC07: "Cortex-A7", 0xC09: "Cortex-A9", 0xC0F: "Cortex-A15", 0xC0E: "Cortex-A17",
        0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
        0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
        0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD0E: "Cortex-A76AE", 0xD40: "Neoverse-V1",
        0xD41: "Cortex-A78", 0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510",
        0xD47: "Cortex-A710", 0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C",
        0xD4C: "Cortex-X1C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3", 0xD4F: "Neoverse-V2",
        0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4", 0xD84: "Neoverse-V3",
        0xD85: "Cortex-X925", 0xD87: "Cortex-A725", 0xD8E: "Neoverse-N3",
    }.items()},
    # Qualcomm Kryo 2xx-4xx are "built on Arm Cortex technology" derivatives of stock cores.
    (0x51, 0x800): ("Kryo 2xx Gold", "Cortex-A73"),
    (0x51, 0x801): ("Kryo 2xx Silver", "Cortex-A53"),
    (0x51, 0x802): ("Kryo 3xx Gold", "Cortex-A75"),
    (0x51, 0x803): ("Kryo 3xx Silver", "Cortex-A55"),
    (0x51, 0x804): ("Kryo 4xx Gold", "Cortex-A76"),
    (0x51, 0x805): ("Kryo 4xx Silver", "Cortex-A55"),
    (0x51, 0xC00): ("Falkor", None), (0x51, 0xC01): ("Saphira", None),
    (0x51, 0x001): ("Oryon", None),
    (0x61, 0x000): ("Apple vCPU (part hidden by hypervisor)", None),
    **{(0x61, p): (n, None) for p, n in {
        0x022: "M1 Icestorm", 0x023: "M1 Firestorm", 0x024: "M1 Pro Icestorm",
        0x025: "M1 Pro Firestorm", 0x028: "M1 Max Icestorm", 0x029: "M1 Max Firestorm",
        0x032: "M2 Blizzard", 0x033: "M2 Avalanche", 0x034: "M2 Pro Blizzard",
        0x035: "M2 Pro Avalanche", 0x038: "M2 Max Blizzard", 0x039: "M2 Max Avalanche",
        0x042: "M3 Sawtooth", 0x043: "M3 Everest", 0x044: "M3 Pro Sawtooth",
        0x045: "M3 Pro Everest", 0x048: "M3 Max Sawtooth", 0x049: "M3 Max Everest",
        0x052: "M4 E-core", 0x053: "M4 P-core",
    }.items()},
    (0x48, 0xD01): ("Kunpeng-920 (TaiShan v110)", None), (0x4E, 0x004): ("Carmel", None),
    (0xC0, 0xAC3): ("Ampere-1", None), (0xC0, 0xAC4): ("Ampere-1a", None),
}

# Qualcomm part numbers -> marketing names, for the SoCs people run edge LLMs on.
_QCOM_SOCS = {
    "SM8150": "Snapdragon 855/855+", "SM8250": "Snapdragon 865/865+/870",
    "SM8350": "Snapdragon 888/888+", "SM8450": "Snapdragon 8 Gen 1",
    "SM8475": "Snapdragon 8+ Gen 1",
    "SM8550": "Snapdragon 8 Gen 2", "SM8650": "Snapdragon 8 Gen 3", "SM8750": "Snapdragon 8 Elite",
    "SM7325": "Snapdragon 778G", "SM7150": "Snapdragon 730/730G",
}

# Kernel feature name -> normalised name; only features that matter to int4/int8 GEMM kernels.
_ARM_FEATURES = {
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16",
    "fphp": "fp16", "asimdhp": "fp16", "asimdfhm": "fhm", "sve": "sve", "sve2": "sve2",
    "svei8mm": "sve_i8mm", "svebf16": "sve_bf16", "sme": "sme", "sme2": "sme2",
}
_ARM_KEY = ("neon", "dotprod", "i8mm", "bf16", "fp16", "sve", "sve2", "sme")
_X86_FEATURES = {
    "pni": "sse3", "ssse3": "ssse3", "sse4_1": "sse4_1", "sse4_2": "sse4_2", "avx": "avx",
    "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16", "avx_vnni": "avx_vnni",
    "avx_vnni_int8": "avx_vnni_int8", "amx_tile": "amx_tile", "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
_X86_KEY = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
            "avx512_bf16", "amx_tile", "amx_int8")
_X86_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon",
                "CentaurHauls": "Centaur", "Shanghai": "Zhaoxin"}
_MACHINE_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
_ANDROID_PROPS = {"ro.soc.manufacturer": "soc_manufacturer", "ro.soc.model": "soc_model",
                  "ro.board.platform": "board_platform", "ro.product.model": "product_model",
                  "ro.build.version.release": "release"}


def detect_machine(*, proc_root: str | os.PathLike = "/", include_hostname: bool = False,
                   query_android: bool = True) -> dict:
    """Describe CPU, ISA features, clusters, memory and software; see the module docstring.

    Keys: schema, architecture, python_machine, cpu_model, cpu_vendor, isa_features (sorted
    normalised names), isa (booleans for the key features of this architecture), logical_cores,
    physical_cores, usable_cores, clusters (cpus, count, max_mhz, capacity, core, based_on,
    vendor, implementer, part, label), cpu_max_mhz, board_model, soc, soc_name, android,
    memory_total_bytes, memory_available_bytes, os, kernel, python, python_implementation, numpy,
    onnxruntime, onnxruntime_providers, virtualized, emulated, emulation_note; hostname only
    with include_hostname=True.
    """
    root = Path(proc_root)
    live = _is_live(root)
    cpus, extra = parse_cpuinfo(_read(root / "proc/cpuinfo") or "")
    arch = _arch_from_cpuinfo(cpus)
    python_machine = normalise_machine(platform.machine()) if live else None
    isa_features, isa = _isa(cpus, extra, arch)
    clusters = _clusters(root, cpus, extra, arch)
    android = _android_props() if live and query_android else None
    dt_model = _read_dt(root, "model")
    dt_compat = [s for s in (_read_dt(root, "compatible", raw=True) or "").split("\0") if s]
    soc = ((android or {}).get("soc_model") or extra.get("Hardware")
           or (dt_compat[-1] if dt_compat else None))
    emulated, emulation_note = _emulation(arch, python_machine)
    info = {
        "schema": SCHEMA_VERSION,
        "architecture": arch or python_machine,
        "python_machine": python_machine,
        "cpu_model": _cpu_model(cpus, clusters, arch),
        "cpu_vendor": _cpu_vendor(cpus, clusters, arch),
        "isa_features": isa_features,
        "isa": isa,
        "logical_cores": len(cpus) or (os.cpu_count() if live else None),
        "physical_cores": _physical_cores(root, cpus, arch, live),
        "usable_cores": len(thread_affinity()) if live else None,
        "clusters": clusters,
        "cpu_max_mhz": max((c["max_mhz"] for c in clusters if c["max_mhz"]), default=None),
        "board_model": dt_model or extra.get("Model"),
        "soc": soc,
        "soc_name": _soc_name(soc),
        "android": android,
        "memory_total_bytes": _meminfo(root, "MemTotal", live),
        "memory_available_bytes": _meminfo(root, "MemAvailable", live),
        "os": _os_name(android),
        "kernel": (_read(root / "proc/sys/kernel/osrelease")
                   or (platform.release() if live else None)),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": _module_version("numpy"),
        "onnxruntime": _module_version("onnxruntime"),
        "onnxruntime_providers": _ort_providers(),
        "virtualized": _virtualized(root, cpus, clusters, arch, dt_model),
        "emulated": emulated,
        "emulation_note": emulation_note,
    }
    if include_hostname:
        info["hostname"] = platform.node() if live else None
    return info


def parse_cpuinfo(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Split /proc/cpuinfo into per-CPU records (blocks with a numeric "processor") and the rest.

    Android and Raspberry Pi kernels append "Hardware"/"Revision"/"Model" lines in their own block;
    old 32-bit ARM kernels put "Features"/"CPU part" there too. Those land in the second dict.
    """
    cpus, extra = [], {}
    for block in re.split(r"\n[ \t]*\n", text):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields.get("processor", "").isdigit():
            cpus.append(fields)
        else:
            extra.update(fields)
    for cpu in cpus:  # per-CPU values win; shared values fill the gaps
        for key in ("Features", "CPU implementer", "CPU part", "CPU architecture"):
            if key not in cpu and key in extra:
                cpu[key] = extra[key]
    return cpus, extra


def arm_core_name(implementer: int, part: int) -> tuple[str, str | None]:
    """(core name, Arm core it derives from) for a MIDR implementer/part; unknown parts stay
    explicit ("ARM part 0xfff")."""
    if (implementer, part) in _PARTS:
        return _PARTS[(implementer, part)]
    vendor = _IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
    return f"{vendor} part 0x{part:03x}", None


def normalise_machine(machine: str) -> str:
    m = machine.lower()
    return _MACHINE_ALIASES.get(m, m)


def thread_affinity(pid: int = 0) -> list[int]:
    """CPUs this process may run on (containers and `taskset` shrink it); all CPUs if unknowable."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return sorted(getaffinity(pid))
        except OSError:
            pass
    return list(range(os.cpu_count() or 1))


def cores_used(pid: int | None = None, *, proc_root: str | os.PathLike = "/",
               running_only: bool = False) -> dict[int, int]:
    """Thread id -> CPU it last ran on, from field 39 ("processor") of /proc/<pid>/task/*/stat.

    A snapshot: sample it a few times while the benchmark generates and feed the CPU ids to
    `threads_per_cluster` to see whether the work landed on big or little cores.
    """
    task_dir = Path(proc_root) / "proc" / (str(pid) if pid else "self") / "task"
    try:
        tids = [t for t in os.listdir(task_dir) if t.isdigit()]
    except OSError:
        return {}
    used = {}
    for tid in tids:
        stat = _read(task_dir / tid / "stat")
        if not stat or ")" not in stat:
            continue
        rest = stat.rsplit(")", 1)[1].split()  # comm may hold spaces or ")"; rest starts at field 3
        if len(rest) > 36 and rest[36].lstrip("-").isdigit():
            if running_only and rest[0] != "R":
                continue
            used[int(tid)] = int(rest[36])
    return used


def threads_per_cluster(cpu_ids: Iterable[int], clusters: list[dict]) -> dict[str, int]:
    """Count CPU ids (e.g. `cores_used().values()`) per cluster label; unknown ones as "other"."""
    counts: dict[str, int] = {}
    for cpu in cpu_ids:
        label = next((c["label"] for c in clusters if cpu in c["cpus"]), "other")
        counts[label] = counts.get(label, 0) + 1
    return counts


def _arch_from_cpuinfo(cpus: list[dict[str, str]]) -> str | None:
    if not cpus:
        return None
    first = cpus[0]
    if "vendor_id" in first or "flags" in first:
        return "x86_64" if "lm" in first.get("flags", "").split() else "i686"
    model = first.get("model name", "")
    if model.endswith("(v7l)") or first.get("CPU architecture") == "7":
        return "armv7l"
    if model.endswith("(v8l)"):
        return "armv8l"  # 32-bit kernel on a 64-bit core
    if "CPU implementer" in first:
        return "aarch64"
    return None


def _isa(cpus, extra, arch) -> tuple[list[str], dict[str, bool]]:
    if not arch:
        return [], {}
    x86 = arch in ("x86_64", "i686")
    raw_key = "flags" if x86 else "Features"
    per_cpu = [set(c.get(raw_key, "").split()) for c in cpus]
    raw = set.intersection(*per_cpu) if per_cpu else set(extra.get(raw_key, "").split())
    table, key = (_X86_FEATURES, _X86_KEY) if x86 else (_ARM_FEATURES, _ARM_KEY)
    names = sorted({table[f] for f in raw if f in table})
    return names, {k: k in names for k in key}


def _clusters(root: Path, cpus, extra, arch) -> list[dict]:
    hybrid = _intel_hybrid(root)
    groups: dict[tuple, list[int]] = {}
    for cpu in cpus:
        idx = int(cpu["processor"])
        sysdir = root / f"sys/devices/system/cpu/cpu{idx}"
        khz = _read_int(sysdir / "cpufreq/cpuinfo_max_freq")
        capacity = _read_int(sysdir / "cpu_capacity")
        midr = (_hex(cpu.get("CPU implementer", "")), _hex(cpu.get("CPU part", "")))
        if None not in midr:
            ident: tuple = midr
        else:
            ident = (hybrid.get(idx) or cpu.get("model name") or arch or "unknown",)
        groups.setdefault((ident, khz, capacity), []).append(idx)
    clusters = []
    for (ident, khz, capacity), ids in groups.items():
        entry: dict = {"cpus": ids, "count": len(ids),
                       "max_mhz": khz / 1000 if khz else None, "capacity": capacity}
        if len(ident) == 2:
            core, based_on = arm_core_name(*ident)
            entry.update(core=core, based_on=based_on, vendor=_IMPLEMENTERS.get(ident[0]),
                         implementer=f"0x{ident[0]:02x}", part=f"0x{ident[1]:03x}")
        else:
            entry.update(core=ident[0], based_on=None, vendor=None, implementer=None, part=None)
        clusters.append(entry)
    clusters.sort(key=lambda c: c["cpus"][0])
    labels = [f"{c['core']} @ {c['max_mhz']:.0f} MHz" if c["max_mhz"] else c["core"]
              for c in clusters]
    for i, (c, label) in enumerate(zip(clusters, labels)):
        c["label"] = label if labels.count(label) == 1 else f"{label} #{i}"
    return clusters


def _intel_hybrid(root: Path) -> dict[int, str]:
    """Intel P/E cores from /sys/devices/cpu_core/cpus and cpu_atom/cpus (hybrid parts only)."""
    kinds = {}
    for name, label in (("cpu_core", "P-core"), ("cpu_atom", "E-core")):
        for cpu in _parse_cpu_list(_read(root / f"sys/devices/{name}/cpus") or ""):
            kinds[cpu] = label
    return kinds


def _cpu_model(cpus, clusters, arch) -> str | None:
    if cpus and "model name" in cpus[0] and arch in ("x86_64", "i686"):
        return cpus[0]["model name"]
    counts: dict[str, int] = {}
    for c in clusters:
        name = c["core"] + (f" ({c['based_on']})" if c["based_on"] else "")
        counts[name] = counts.get(name, 0) + c["count"]
    return " + ".join(f"{n}x {name}" for name, n in counts.items()) or None


def _cpu_vendor(cpus, clusters, arch) -> str | None:
    if cpus and "vendor_id" in cpus[0]:
        vid = cpus[0]["vendor_id"]
        return _X86_VENDORS.get(vid.strip(), vid)
    vendors = list(dict.fromkeys(c["vendor"] for c in clusters if c["vendor"]))
    return "/".join(vendors) or None


def _physical_cores(root: Path, cpus, arch, live) -> int | None:
    if live and (root / "sys/devices/system/cpu").is_dir():
        from ..session import physical_cores  # what the runtime sizes its thread pool by
        return physical_cores()
    sibling_sets = set()                       # a recorded tree (tests/data/cpuinfo): count its sibling lists
    for d in root.glob("sys/devices/system/cpu/cpu[0-9]*"):
        s = _read(d / "topology/core_cpus_list") or _read(d / "topology/thread_siblings_list")
        if s:
            sibling_sets.add(s)
    if sibling_sets:
        return len(sibling_sets)
    core_ids = {(c.get("physical id"), c["core id"]) for c in cpus if "core id" in c}
    if core_ids:
        return len(core_ids)
    if cpus and arch and arch.startswith(("aarch64", "arm")):
        return len(cpus)  # no SMT on the phone/board/Apple cores we target
    if live:
        psutil = _optional_psutil()
        return psutil.cpu_count(logical=False) if psutil else None
    return None


def _meminfo(root: Path, key: str, live: bool) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        name, _, value = line.partition(":")
        if name == key and value.split() and value.split()[0].isdigit():
            return int(value.split()[0]) * 1024  # the kernel prints kB (KiB)
    psutil = _optional_psutil() if live else None
    if psutil is not None:
        vm = psutil.virtual_memory()
        return vm.total if key == "MemTotal" else vm.available
    return None


def _virtualized(root: Path, cpus, clusters, arch, dt_model) -> bool | None:
    if cpus and "flags" in cpus[0]:
        return "hypervisor" in cpus[0]["flags"].split()  # CPUID bit every mainstream VMM sets
    if _read(root / "sys/hypervisor/type") or (dt_model or "").startswith("linux,dummy-virt"):
        return True
    if any(c["implementer"] == "0x61" and c["part"] == "0x000" for c in clusters):
        return True  # Apple Hypervisor.framework zeroes the MIDR part number
    return None


def _emulation(arch: str | None, python_machine: str | None) -> tuple[bool | None, str | None]:
    """The kernel's cpuinfo names the real CPU; an interpreter built for another arch is emulated
    (Rosetta, FEX, box64, qemu-user)."""
    if not arch or not python_machine:
        return None, None
    family = {"x86_64": "x86", "i686": "x86", "aarch64": "arm", "armv7l": "arm", "armv8l": "arm"}
    if family.get(arch, arch) == family.get(python_machine, python_machine):
        return False, None
    return True, f"python is built for {python_machine} but the kernel reports a {arch} CPU"


def _android_props() -> dict | None:
    if not shutil.which("getprop"):
        return None
    try:
        out = subprocess.run(["getprop"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    props = dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]", out, flags=re.M))
    found = {ours: props[key] for key, ours in _ANDROID_PROPS.items() if props.get(key)}
    return found or None


def _os_name(android) -> str:
    if android is not None or sys.platform == "android" or "ANDROID_ROOT" in os.environ:
        return "Android"
    return platform.system()


def _soc_name(soc: str | None) -> str | None:
    match = re.search(r"\bSM\d{4}\b", soc or "", flags=re.I)
    return _QCOM_SOCS.get(match.group(0).upper()) if match else None


def _module_version(name: str) -> str | None:
    try:
        module = __import__(name)  # lazy: onnxruntime takes ~0.2 s to import
    except (ImportError, OSError):
        return None
    return getattr(module, "__version__", None)


def _ort_providers() -> list[str] | None:
    ort = sys.modules.get("onnxruntime")
    try:
        return list(ort.get_available_providers()) if ort else None
    except (AttributeError, RuntimeError):
        return None


def _optional_psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _is_live(root: Path) -> bool:
    try:
        return root.resolve() == Path("/").resolve()
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:  # missing, permission, or a directory
        return None


def _read_dt(root: Path, name: str, raw: bool = False) -> str | None:
    for base in ("proc/device-tree", "sys/firmware/devicetree/base"):
        text = _read(root / base / name)
        if text:
            return text if raw else text.split("\0")[0].strip() or None
    return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    return int(text) if text and text.isdigit() else None


def _hex(value: str) -> int | None:
    try:
        return int(value, 0)
    except ValueError:
        return None


def _parse_cpu_list(text: str) -> list[int]:
    """Kernel CPU list syntax: "0-3,6,8-9"."""
    cpus = []
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus
