"""Quantization recipes: what the exporter does to each weight. Recorded verbatim in the manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edge_llm.errors import ExportError

from .quant import SUPPORTED_BLOCK_SIZES


@dataclass(frozen=True)
class Recipe:
    precision: str = "int4"          # int4 | fp32
    block_size: int = 32             # linear layers (MatMulNBits)
    head_block_size: int | None = None  # tied embedding / lm_head; None = block_size
    symmetric: bool = True
    accuracy_level: int = 4          # 4 = int8 activations (fast path on x86 and ARM); 0/1 = fp32
    clip_search: bool = False        # per-block range search minimising reconstruction error
    method: str = "rtn"              # rtn: round to nearest | gptq: error-compensating, from calibration text
    head_method: str = "rtn"         # the tied embedding/lm_head table (its rows are also read directly)
    calibration: str | None = None   # text file for GPTQ; None = the bundled edge_llm/data/calibration.txt
    calibration_seqs: int = 16       # calibration sequences of calibration_len tokens
    calibration_len: int = 512
    overrides: dict = field(default_factory=dict)  # tensor-name substring -> {"block_size": n}
    target: str = "any"              # "arm": keep every tensor on the KleidiAI fast path

    def __post_init__(self):
        if self.precision not in ("int4", "fp32"):
            raise ExportError(f"precision '{self.precision}' is not supported (int4 or fp32)")
        for bs in (self.block_size, self.head_block_size):
            if bs is not None and bs not in SUPPORTED_BLOCK_SIZES:
                raise ExportError(f"block size {bs} is not supported: onnxruntime's int4 fast path takes "
                                  f"{', '.join(map(str, SUPPORTED_BLOCK_SIZES))}")
        for m in (self.method, self.head_method):
            if m not in ("rtn", "gptq"):
                raise ExportError(f"quantization method '{m}' is not supported (rtn or gptq)")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ExportError(f"accuracy level {self.accuracy_level} must be 0..4")

    @property
    def lm_head_block(self) -> int:
        return self.head_block_size or self.block_size

    def block_for(self, name: str, k: int) -> int:
        """Block size for a tensor with K input features. On ARM the block must divide K."""
        bs = self.block_size
        for key, opts in self.overrides.items():
            if key in name and "block_size" in opts:
                bs = int(opts["block_size"])
        if self.target == "arm":
            bs = min(bs, 128)
            while bs > 32 and k % bs:
                bs //= 2
        return bs

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int4" and "gptq" in (self.method, self.head_method)

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    # name -> Recipe; `edge-llm export --recipe NAME`. The default is chosen in the README from measured quality.
    "rtn-b32": Recipe(block_size=32),
    "rtn-b128": Recipe(block_size=128),
    "clip-asym-b64": Recipe(block_size=64, symmetric=False, clip_search=True),
    "clip-asym-b128": Recipe(block_size=128, symmetric=False, clip_search=True),
    "gptq-b128": Recipe(block_size=128, clip_search=True, method="gptq"),
    "gptq-asym-b128": Recipe(block_size=128, symmetric=False, clip_search=True, method="gptq"),
    "gptq-asym-b64": Recipe(block_size=64, symmetric=False, clip_search=True, method="gptq"),
    "fp32": Recipe(precision="fp32"),
}
DEFAULT_RECIPE = "clip-asym-b128"
