#!/usr/bin/env bash
# llama.cpp's own files for one Hugging Face checkpoint: F32 GGUF by convert_hf_to_gguf.py, then
# Q8_0, Q4_0, Q4_K_S, Q4_K_M (and Q4_0 --pure: every tensor Q4_0) by llama-quantize, from the F32 file.
#
# Usage: benchmarks/quality_peers/make_ggufs.sh CHECKPOINT_DIR OUT_DIR
# Env:   LLAMACPP_SRC  llama.cpp source tree (convert_hf_to_gguf.py, gguf-py)   [required]
#        LLAMACPP_BIN  folder with llama-quantize                               [required]
#        QUANT_PY      python with torch, numpy, sentencepiece, transformers,
#                      safetensors, protobuf (the converter's needs; never the project venv)
#                                                                              [default $WORK/quantvenv/bin/python]
#        TYPES         types to make [default "Q8_0 Q4_0 Q4_K_S Q4_K_M"]
# Existing files are kept. Logs go next to the GGUFs.
set -euo pipefail
CK="${1:?checkpoint folder}"
OUT="${2:?output folder}"
: "${LLAMACPP_SRC:?set LLAMACPP_SRC to the llama.cpp source tree}"
: "${LLAMACPP_BIN:?set LLAMACPP_BIN to the folder holding llama-quantize}"
PY="${QUANT_PY:-${WORK:?set WORK (scratch folder) or QUANT_PY}/quantvenv/bin/python}"
TYPES="${TYPES:-Q8_0 Q4_0 Q4_K_S Q4_K_M}"
mkdir -p "$OUT"

if [ ! -f "$OUT/F32.gguf" ]; then
    echo "convert_hf_to_gguf.py $CK -> $OUT/F32.gguf"
    nice -n 10 "$PY" "$LLAMACPP_SRC/convert_hf_to_gguf.py" "$CK" --outtype f32 --outfile "$OUT/F32.gguf" \
        > "$OUT/convert.log" 2>&1 || { tail -20 "$OUT/convert.log"; exit 1; }
fi
for t in $TYPES; do
    [ -f "$OUT/$t.gguf" ] || nice -n 10 "$LLAMACPP_BIN/llama-quantize" "$OUT/F32.gguf" "$OUT/$t.gguf" "$t" \
        > "$OUT/quantize-$t.log" 2>&1 || { tail -20 "$OUT/quantize-$t.log"; exit 1; }
done
[ -f "$OUT/Q4_0-pure.gguf" ] || nice -n 10 "$LLAMACPP_BIN/llama-quantize" --pure "$OUT/F32.gguf" "$OUT/Q4_0-pure.gguf" Q4_0 \
    > "$OUT/quantize-Q4_0-pure.log" 2>&1 || { tail -20 "$OUT/quantize-Q4_0-pure.log"; exit 1; }
ls -l "$OUT"/*.gguf
