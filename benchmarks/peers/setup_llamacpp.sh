#!/usr/bin/env bash
# Build llama-cpp-python 0.3.36 from its PyPI sdist, and llama-bench, llama-quantize,
# llama-perplexity and llama-simple from the llama.cpp vendored in that same sdist, into a separate,
# benchmark-only venv.  Nothing here touches the project's own env, and nothing is written inside
# the checkout.
#
# Usage:  benchmarks/peers/setup_llamacpp.sh [VENV_DIR]
#           VENV_DIR default: $PEERS_VENV, else ~/.cache/edge-llm-peers/venv (run_peers.py's default too)
# Env:    PEERS_CMAKE_FLAGS  cmake flags instead of the native ones below.  On a guest whose CPU reports AMX
#                         but faults on it (SIGILL in tinygemm_kernel_amx: an Intel Xeon VM here, Dec 2026),
#                         build without -march=native and name the AVX-512 set instead:
#                         PEERS_CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON
#                           -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON
#                           -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_OPENMP=ON
#                           -DGGML_CPU_REPACK=ON -DGGML_LLAMAFILE=ON -DLLAVA_BUILD=OFF"
#         PEERS_SRC_DIR   where the sdist is downloaded, extracted and built
#                         (default ~/.cache/edge-llm-peers/src; about 1.5 GB once built)
#         PEERS_JOBS      compile jobs (default 2)      PEERS_NICE   nice level for compiles (default 10)
#         PEERS_SKIP_TOOLS=1   do not build the llama.cpp tools (bindings only)
#         PEERS_FORCE=1   rebuild even if the venv already has llama_cpp 0.3.36 and every tool
#
# Idempotent: every step checks whether its result already exists.  The cmake build dir is kept
# ($PEERS_SRC_DIR/build), so a forced rerun recompiles incrementally.
#
# Build flags match what peers.md measured on this machine: -march=native (GGML_NATIVE), OpenMP,
# CPU_REPACK (Q4_0 -> q4_0_8x8 repack at load) and llamafile sgemm, Release.  LLAVA_BUILD=OFF skips
# libmtmd (multimodal only; llama_cpp imports it lazily), which the benchmark never uses.
#
# The tools are built from the SAME cmake build dir as the Python wheel, in one cmake step (tools and
# examples are switched on for those four targets only, and switched off again), so they link the very
# libllama/libggml that were compiled for the bindings: "same llama.cpp build" in every row.
set -euo pipefail

LCPP_PY_VERSION=0.3.36
GGUF_VERSION=0.19.0
TOOLS="llama-bench llama-quantize llama-perplexity llama-simple llama-server"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/edge-llm-peers"
VENV="${1:-${PEERS_VENV:-$CACHE/venv}}"
SRC_ROOT="${PEERS_SRC_DIR:-$CACHE/src}"
JOBS="${PEERS_JOBS:-2}"
NICE="${PEERS_NICE:-10}"
SDIST="$SRC_ROOT/llama_cpp_python-$LCPP_PY_VERSION.tar.gz"
SRC="$SRC_ROOT/llama_cpp_python-$LCPP_PY_VERSION"
BUILD="$SRC_ROOT/build"
CMAKE_FLAGS="${PEERS_CMAKE_FLAGS:--DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_CPU_REPACK=ON -DGGML_LLAMAFILE=ON -DLLAVA_BUILD=OFF}"

log() { printf '[setup_llamacpp %(%H:%M:%S)T] %s\n' -1 "$*"; }

# 1. venv + pure-Python deps (numpy for the harness, gguf + sentencepiece for make_gguf.py), and
#    edge-llm itself without its dependencies: the harness's memory probes (edge_llm.metering.probes)
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import numpy, sentencepiece, gguf, importlib.metadata as m; assert m.version('gguf') == '$GGUF_VERSION'" 2>/dev/null; then
    log "installing numpy gguf==$GGUF_VERSION sentencepiece"
    "$PY" -m pip install -q numpy "gguf==$GGUF_VERSION" sentencepiece
fi
if ! "$PY" -c "import edge_llm.metering.probes" 2>/dev/null; then
    log "installing edge-llm (editable, no dependencies) from $REPO"
    "$PY" -m pip install -q --no-deps -e "$REPO"
fi

have_bindings() {
    "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama_cpp_python') != '$LCPP_PY_VERSION')" 2>/dev/null \
        && "$PY" -c "import llama_cpp" 2>/dev/null
}
# The tools are linked into the venv's bin/ (the real files live in the cmake build dir, next to
# the libllama/libggml they were linked against).
need_tools() {
    [ "${PEERS_SKIP_TOOLS:-0}" = 1 ] && return 1
    for t in $TOOLS; do [ -x "$VENV/bin/$t" ] || return 0; done
    return 1
}

if [ "${PEERS_FORCE:-0}" != 1 ] && have_bindings && ! need_tools; then
    log "already set up: $("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)') in $VENV; tools: $TOOLS in $VENV/bin"
    exit 0
fi

# 2. the sdist (the exact PyPI artefact), extracted once
mkdir -p "$SRC_ROOT"
if [ ! -f "$SDIST" ]; then
    log "downloading sdist llama-cpp-python==$LCPP_PY_VERSION"
    "$PY" -m pip download -q --no-binary :all: --no-deps -d "$SRC_ROOT" "llama-cpp-python==$LCPP_PY_VERSION"
fi
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    log "extracting $SDIST"
    tar -xzf "$SDIST" -C "$SRC_ROOT"
fi
sha256sum "$SDIST"

# cmake >= 3.21 and ninja must be on PATH *outside* pip's isolated build env: otherwise
# scikit-build-core downloads throwaway copies, and the kept build dir (step 4) points at deleted
# binaries.  Use the system ones when they are new enough (this machine: Debian cmake 3.25.1,
# ninja 1.11.1), else install them into the venv.
cmake_ok() {
    command -v cmake >/dev/null || return 1
    printf '3.21\n%s\n' "$(cmake --version | head -1 | awk '{print $3}')" | sort -V -C
}
if ! cmake_ok || ! command -v ninja >/dev/null; then
    log "installing cmake/ninja into $VENV (system ones missing or too old)"
    "$PY" -m pip install -q "cmake>=3.21" ninja
    export PATH="$VENV/bin:$PATH"
fi
log "cmake: $(command -v cmake) ($(cmake --version | head -1)); ninja: $(command -v ninja); $(gcc --version 2>/dev/null | head -1)"

# 3. the bindings: pip builds the local sdist tree (in-tree, so the cmake build dir stays valid for
#    step 4) with scikit-build-core; build-dir keeps the objects for incremental reruns.
if [ "${PEERS_FORCE:-0}" = 1 ] || ! have_bindings; then
    log "building llama-cpp-python $LCPP_PY_VERSION (CMAKE_ARGS=$CMAKE_FLAGS, -j$JOBS, nice $NICE)"
    t0=$(date +%s)
    CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
        nice -n "$NICE" "$PY" -m pip install -v --no-cache-dir \
            --config-settings=build-dir="$BUILD" \
            --config-settings=cmake.build-type=Release \
            "$SRC" > "$SRC_ROOT/pip-build.log" 2>&1 \
        || { tail -40 "$SRC_ROOT/pip-build.log"; exit 1; }
    log "bindings built in $(( $(date +%s) - t0 )) s (log: $SRC_ROOT/pip-build.log)"
fi

# 4. the tools from the same build dir, in one cmake step.  Switch the tools and examples trees on,
#    build only these targets, switch them off again so a later `pip install` of the bindings does
#    not build every tool.
if [ "${PEERS_SKIP_TOOLS:-0}" != 1 ] && { [ "${PEERS_FORCE:-0}" = 1 ] || need_tools; }; then
    log "building $TOOLS in $BUILD"
    t0=$(date +%s)
    cmake -S "$SRC" -B "$BUILD" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON > "$SRC_ROOT/tools-configure.log" 2>&1 \
        || { tail -40 "$SRC_ROOT/tools-configure.log"; exit 1; }
    # shellcheck disable=SC2086  # TOOLS is a list of target names
    nice -n "$NICE" cmake --build "$BUILD" -j "$JOBS" --target $TOOLS > "$SRC_ROOT/tools-build.log" 2>&1 \
        || { tail -40 "$SRC_ROOT/tools-build.log"; exit 1; }
    cmake -S "$SRC" -B "$BUILD" -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >> "$SRC_ROOT/tools-configure.log" 2>&1
    for t in $TOOLS; do
        built="$(find "$BUILD" -name "$t" -type f -perm -u+x | head -1)"
        [ -n "$built" ] || { echo "$t binary not found under $BUILD" >&2; exit 1; }
        ln -sf "$built" "$VENV/bin/$t"
    done
    log "tools built in $(( $(date +%s) - t0 )) s"
fi

"$PY" - <<PYEOF
import llama_cpp
print("llama_cpp", llama_cpp.__version__, "from", llama_cpp.__file__)
print(llama_cpp.llama_print_system_info().decode())
PYEOF
for t in $TOOLS; do
    if [ -x "$VENV/bin/$t" ]; then log "$t: $VENV/bin/$t -> $(readlink -f "$VENV/bin/$t")"; else log "$t: not built"; fi
done
log "llama.cpp's converter (needs torch + transformers, see benchmarks/peers/README.md): $SRC/vendor/llama.cpp/convert_hf_to_gguf.py"
