#!/usr/bin/env bash
# Build an arm64 (aarch64) Debian bookworm sysroot that runs edge-llm's runtime under QEMU user-mode
# emulation, without binfmt_misc and without chroot:
#
#   benchmarks/arm/setup_sysroot.sh [DIR]        (default DIR: <repo>/scratch/arm64-sysroot)
#
# Steps (each skipped when already done, so the script is safe to rerun):
#   1. apt-get install qemu-user-static debootstrap (host, x86; needs root) if missing
#   2. debootstrap --foreign --variant=minbase --arch=arm64 bookworm with python3, then unpack every
#      downloaded .deb with `dpkg-deb -x` (the second stage needs binfmt, which this host lacks)
#   3. write DIR/proc/cpuinfo from benchmarks/arm/cpuinfo-neoverse-v1.txt: onnxruntime's CPU probe
#      segfaults on the host's x86 /proc/cpuinfo; QEMU's -L makes the emulated process read this one
#   4. pip download (host pip) the cp311 aarch64 wheels pinned in requirements-aarch64.txt into
#      DIR/opt/edge-llm-arm/wheels, then install them with the *emulated* pip into
#      DIR/opt/edge-llm-arm/site (`pip install --no-index --target`)
#
# Environment: DEBIAN_MIRROR (default: the Debian mirror configured in /etc/apt/sources.list*),
#              HOST_PYTHON (the x86 python whose pip downloads wheels; default: <repo>/.venv/bin/python
#              if present, else python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SYSROOT="${1:-$REPO/scratch/arm64-sysroot}"
mkdir -p "$SYSROOT"
SYSROOT="$(cd "$SYSROOT" && pwd)"
SUITE=bookworm
TARGET="$SYSROOT/opt/edge-llm-arm/site"
WHEELS="$SYSROOT/opt/edge-llm-arm/wheels"
REQS="$HERE/requirements-aarch64.txt"
NICE=(nice -n 10)
T_START=$(date +%s)

log() { printf '[setup_sysroot %3ds] %s\n' "$(( $(date +%s) - T_START ))" "$*"; }

# ---- 1. host tools ---------------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing qemu-user-static and debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap debian-archive-keyring
fi
log "$(qemu-aarch64-static --version | head -1)"

# ---- 2. arm64 root filesystem ------------------------------------------------------------------------
find_mirror() {
    # first Debian archive URI in the apt configuration (deb822 .sources or one-line format), not -security
    local uri
    uri=$( { grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{for (i=2;i<=NF;i++) print $i}';
             grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
               | sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } \
           | grep -E '/debian/?$' | grep -v -- '-security' | head -1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(find_mirror)}"

PY="$SYSROOT/usr/bin/python3.11"
if [ -x "$PY" ] && [ -f "$SYSROOT/.edge-llm-debs-unpacked" ]; then
    log "sysroot already unpacked: $SYSROOT"
else
    if [ ! -f "$SYSROOT/debootstrap/debootstrap" ] && [ ! -f "$SYSROOT/.edge-llm-first-stage" ]; then
        log "debootstrap --foreign arm64 $SUITE minbase from $MIRROR into $SYSROOT"
        "${NICE[@]}" debootstrap --arch=arm64 --foreign --variant=minbase \
            --include=python3,python3-venv,python3-pip "$SUITE" "$SYSROOT" "$MIRROR"
        touch "$SYSROOT/.edge-llm-first-stage"
    fi
    debs=("$SYSROOT"/var/cache/apt/archives/*.deb)
    log "unpacking ${#debs[@]} .deb files with dpkg-deb -x"
    for deb in "${debs[@]}"; do
        "${NICE[@]}" dpkg-deb -x "$deb" "$SYSROOT"
    done
    touch "$SYSROOT/.edge-llm-debs-unpacked"
fi
[ -x "$PY" ] || { echo "setup_sysroot: $PY missing after unpacking" >&2; exit 1; }

# ---- 3. an ARM /proc/cpuinfo --------------------------------------------------------------------------
# QEMU 7.2 passes /proc/cpuinfo through from the host (it fakes it for aarch64 only from QEMU 8.2);
# onnxruntime (pytorch cpuinfo) then sees an x86 file and crashes at import. With -L SYSROOT, QEMU opens
# SYSROOT/proc/cpuinfo instead when that file exists. The sample is an Arm Neoverse-V1 (AWS Graviton3:
# implementer 0x41, part 0xd40), 2 cores like this host, with asimddp, i8mm, bf16 and sve among its
# Features. The emulated CPU is QEMU's "max" model, which implements all of those, and the kernels read
# the actual feature bits from the auxiliary vector (HWCAP) QEMU provides.
mkdir -p "$SYSROOT/proc"
if ! cmp -s "$HERE/cpuinfo-neoverse-v1.txt" "$SYSROOT/proc/cpuinfo"; then
    cp "$HERE/cpuinfo-neoverse-v1.txt" "$SYSROOT/proc/cpuinfo"
    log "wrote $SYSROOT/proc/cpuinfo (Neoverse-V1 sample)"
fi

# ---- 4. aarch64 wheels ------------------------------------------------------------------------------
HOST_PYTHON="${HOST_PYTHON:-}"
if [ -z "$HOST_PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then HOST_PYTHON="$REPO/.venv/bin/python"; else HOST_PYTHON=python3; fi
fi
REQS_HASH="$(sha256sum "$REQS" | cut -c1-16)"
if [ "$(cat "$WHEELS/.reqs-hash" 2>/dev/null)" != "$REQS_HASH" ]; then
    log "pip download aarch64 cp311 wheels -> $WHEELS"
    rm -rf "$WHEELS"; mkdir -p "$WHEELS"
    "${NICE[@]}" "$HOST_PYTHON" -m pip download --quiet --disable-pip-version-check \
        --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux2014_aarch64 --platform any \
        -r "$REQS" -d "$WHEELS"
    echo "$REQS_HASH" > "$WHEELS/.reqs-hash"
fi
log "wheels: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"

if [ "$(cat "$TARGET/.reqs-hash" 2>/dev/null)" != "$REQS_HASH" ]; then
    log "installing the wheels with the emulated pip (python3.11 -m pip install --no-index --target)"
    rm -rf "$TARGET"; mkdir -p "$TARGET"
    # keep the host's pip configuration (index mirrors, find-links, constraints) out of the emulated pip
    env -u PIP_FIND_LINKS -u PIP_CERT -u PIP_DEFAULT_TIMEOUT -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL \
        -u PIP_CONSTRAINT -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV \
        PIP_CONFIG_FILE=/dev/null PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "${NICE[@]}" qemu-aarch64-static -L "$SYSROOT" "$PY" -m pip install --quiet --no-index --no-deps \
        --no-compile --target "$TARGET" "$WHEELS"/*.whl
    echo "$REQS_HASH" > "$TARGET/.reqs-hash"
fi

log "checking: emulated python imports onnxruntime"
env -u PYTHONHOME -u VIRTUAL_ENV PYTHONPATH="$TARGET" qemu-aarch64-static -L "$SYSROOT" "$PY" -c \
    'import platform, onnxruntime as ort, numpy; print(platform.machine(), "python", platform.python_version(), "onnxruntime", ort.__version__, "numpy", numpy.__version__, ort.get_available_providers())'
log "done: SYSROOT=$SYSROOT  (site-packages: $TARGET)"
