#!/usr/bin/env bash
# Run edge-llm's runtime on aarch64 Linux under QEMU user-mode emulation (no ARM hardware needed):
#
#   benchmarks/arm/run_emulated.sh [--log FILE]
#
# Uses the sysroot from benchmarks/arm/setup_sysroot.sh (built first when missing) and runs, as
#   qemu-aarch64-static -L $SYSROOT $SYSROOT/usr/bin/python3.11
# with PYTHONPATH = the aarch64 wheels + the repository root (edge_llm from source, not installed):
#   (a) platform.machine() and `import onnxruntime`
#   (b) pytest benchmarks/arm/test_emulated_runtime.py (fp32 + int4 packages vs the fixture references)
#   (c) `edge-llm bench --fast`, when the bench command exists
# The packages are exported on the host (x86 venv with the exporter) when missing; the emulated side
# only loads them.
#
# Environment: SYSROOT (default <repo>/scratch/arm64-sysroot), HOST_PYTHON (x86 python with edge-llm's
# exporter, default <repo>/.venv/bin/python), EDGE_LLM_ARM_FP32_PKG / EDGE_LLM_ARM_INT4_PKG (packages),
# EDGE_LLM_ARM_THREADS (default 1), PYTEST_ARGS (extra pytest arguments).
#
# Every time printed here is the time of an emulator on an x86 host: emulated — not ARM performance.
set -euo pipefail

if [ "${1:-}" = "--log" ]; then
    LOGFILE="$2"; shift 2
    exec > >(tee "$LOGFILE") 2>&1
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SYSROOT="${SYSROOT:-$REPO/scratch/arm64-sysroot}"
SITE="$SYSROOT/opt/edge-llm-arm/site"
PY="$SYSROOT/usr/bin/python3.11"
HOST_PYTHON="${HOST_PYTHON:-$REPO/.venv/bin/python}"
BUNDLED="$REPO/edge_llm/bundled/minicpm-tiny-int4"
FIXTURE="$REPO/../shared/fixtures/minicpm-tiny"
export EDGE_LLM_ARM_FP32_PKG="${EDGE_LLM_ARM_FP32_PKG:-$REPO/scratch/tiny-fp32-arm}"
if [ -z "${EDGE_LLM_ARM_INT4_PKG:-}" ]; then
    if [ -f "$BUNDLED/manifest.json" ]; then EDGE_LLM_ARM_INT4_PKG="$BUNDLED"; else EDGE_LLM_ARM_INT4_PKG="$REPO/scratch/tiny-int4"; fi
fi
export EDGE_LLM_ARM_INT4_PKG
export EDGE_LLM_ARM_THREADS="${EDGE_LLM_ARM_THREADS:-1}"
LABEL="emulated — not ARM performance"
T0=$(date +%s)
FAILED=()

step() { printf '\n==== %s\n' "$*"; }
elapsed() { printf -- '---- %s: %d s (%s)\n' "$1" "$2" "${3:-$LABEL}"; }

step "host and versions"
echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:        $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "repo:        $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), uncommitted changes may be present)"

if [ ! -x "$PY" ] || [ ! -f "$SITE/.reqs-hash" ]; then
    step "sysroot missing: running setup_sysroot.sh"
    t=$(date +%s); "$HERE/setup_sysroot.sh" "$SYSROOT"; elapsed "setup_sysroot.sh" $(( $(date +%s) - t )) "host wall time: downloads, unpacking, emulated pip"
fi
echo "qemu:        $(qemu-aarch64-static --version | head -1) (user mode, default CPU model 'max')"
echo "sysroot:     $SYSROOT, Debian $(cat "$SYSROOT/etc/debian_version") arm64 ($(. "$SYSROOT/etc/os-release"; echo "$VERSION_CODENAME"))"
echo "wheels:      $(cd "$SYSROOT/opt/edge-llm-arm/wheels" && ls onnxruntime-*.whl numpy-*.whl sentencepiece-*.whl | tr '\n' ' ')"
echo "cpuinfo:     $SYSROOT/proc/cpuinfo = benchmarks/arm/cpuinfo-neoverse-v1.txt (Neoverse-V1 sample, for onnxruntime's CPU probe)"

# ---- packages, exported on the host --------------------------------------------------------------------
host_export() {  # host_export OUT PRECISION
    [ -f "$1/manifest.json" ] && return 0
    [ -x "$HOST_PYTHON" ] || { echo "no package at $1 and no host python ($HOST_PYTHON) to export it" >&2; return 1; }
    echo "exporting $2 package on the host (x86) -> $1"
    nice -n 10 "$HOST_PYTHON" -c 'from edge_llm.cli import main; main(prog_name="edge-llm")' \
        export "$FIXTURE" -o "$1" --precision "$2" --force
}
step "packages (exported on the x86 host when missing)"
t=$(date +%s)
host_export "$EDGE_LLM_ARM_FP32_PKG" fp32
host_export "$EDGE_LLM_ARM_INT4_PKG" int4
echo "fp32 package: $EDGE_LLM_ARM_FP32_PKG"
echo "int4 package: $EDGE_LLM_ARM_INT4_PKG$([ "$EDGE_LLM_ARM_INT4_PKG" = "$BUNDLED" ] && echo ' (bundled)')"
elapsed "packages" $(( $(date +%s) - t )) "host wall time, x86"

emu() {  # run the aarch64 python under QEMU (each call limited to EMU_TIMEOUT seconds)
    env -u PYTHONHOME -u VIRTUAL_ENV -u PYTHONSTARTUP \
        PYTHONPATH="$SITE:$REPO" PYTHONPYCACHEPREFIX="$SYSROOT/var/cache/edge-llm-pycache" \
        EDGE_LLM_EXPECT_ARCH=aarch64 \
        timeout "${EMU_TIMEOUT:-1800}" nice -n 10 qemu-aarch64-static -L "$SYSROOT" "$PY" "$@"
}

# ---- (a) architecture and onnxruntime import -------------------------------------------------------------
step "(a) emulated python: platform.machine() and import onnxruntime"
t=$(date +%s)
if emu -c 'import platform, sys, onnxruntime as ort, numpy, sentencepiece, edge_llm
print("platform.machine():", platform.machine())
print("python:", sys.version.split()[0], "onnxruntime:", ort.__version__, "numpy:", numpy.__version__,
      "sentencepiece:", sentencepiece.__version__)
print("providers:", ort.get_available_providers())
print("edge_llm from:", edge_llm.__file__)
assert platform.machine() == "aarch64", platform.machine()'; then :; else FAILED+=("(a) arch/import"); fi
elapsed "(a)" $(( $(date +%s) - t ))

# ---- (b) runtime tests -------------------------------------------------------------------------------------
step "(b) pytest benchmarks/arm/test_emulated_runtime.py under emulation"
t=$(date +%s)
# shellcheck disable=SC2086
if (cd "$REPO" && emu -m pytest -p no:cacheprovider -v -s benchmarks/arm/test_emulated_runtime.py ${PYTEST_ARGS:-}); then :
else FAILED+=("(b) pytest"); fi
elapsed "(b)" $(( $(date +%s) - t ))

# ---- (c) bench ---------------------------------------------------------------------------------------------
step "(c) edge-llm bench --fast under emulation"
t=$(date +%s)
if emu -c 'import sys; from edge_llm.cli import main; sys.exit(0 if "bench" in main.commands else 3)'; then
    BENCH_OUT="$REPO/scratch/arm-bench"; mkdir -p "$BENCH_OUT"
    pkg_arg=()
    [ "$EDGE_LLM_ARM_INT4_PKG" = "$BUNDLED" ] || pkg_arg=("$EDGE_LLM_ARM_INT4_PKG")
    # The report's machine line comes from the sysroot's sample /proc/cpuinfo, and its numbers from an
    # emulator: every line is prefixed so that none of it is quoted as an ARM result.
    echo "(every line prefixed 'EMULATED|' below: $LABEL; the CPU name is the sample cpuinfo's)"
    if (cd "$BENCH_OUT" && EMU_TIMEOUT=900 emu -c 'from edge_llm.cli import main; main(prog_name="edge-llm")' \
            bench --fast "${pkg_arg[@]}" 2>&1 | sed 's/^/EMULATED| /'); then :
    else FAILED+=("(c) bench --fast"); fi
else
    echo "SKIPPED: this checkout's CLI has no 'bench' command yet"
fi
elapsed "(c)" $(( $(date +%s) - t ))

step "summary"
elapsed "total" $(( $(date +%s) - T0 )) "wall time of this script on the x86 host; the emulated parts are not ARM performance"
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "RESULT: all steps passed on emulated aarch64"
else
    echo "RESULT: FAILED: ${FAILED[*]}"
    exit 1
fi
