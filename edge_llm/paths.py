"""Files edge-llm ships inside its own package (found the same way from a checkout or a wheel)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUNDLED = ROOT / "bundled" / "minicpm-tiny-int4"        # the tiny trained model `chat`/`bench` default to
DATA = ROOT / "data"
CALIBRATION_TEXT = DATA / "calibration.txt"             # default text for the GPTQ recipes
TOKENIZER_2B = DATA / "minicpm-2b-tokenizer"            # MiniCPM-2B's tokenizer, for `synth --shape minicpm-2b`
