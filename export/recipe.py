"""Quantization recipes: what the exporter does to each weight. Recorded verbatim in the manifest."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from edge_llm.errors import ExportError

from .quant import SUPPORTED_BITS, SUPPORTED_BLOCK_SIZES

ARM_MAX_BLOCK = 128   # onnxruntime's ARM (KleidiAI) int4 kernels take blocks of at most this


def arm_block(bs: int) -> int:
    """The largest block the ARM kernels take for a wanted one (the one place the rule lives)."""
    return min(bs, ARM_MAX_BLOCK)


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
    overrides: dict = field(default_factory=dict)  # tensor-name substring -> {"block_size": n, "bits": 4|8}
    target: str = "any"              # "arm": keep every tensor on the KleidiAI fast path
    bits: int = 4                    # linear layers: 4, or 8 (MatMulNBits bits=8, also on the fast path);
    head_bits: int | None = None     # tied embedding / lm_head table; None = bits. 8-bit is always symmetric
    fit_block: bool = False          # halve a tensor's block until it divides K: no zero-padded last block
    scale_dtype: str = "float32"     # "float16": half the scale bytes; MatMulNBits/GatherBlockQuantized then run
                                     # on float16 activations, cast from/to the float32 residual stream around them
    importance: bool = False         # weight the clip/scale search by Σx² per input column from calibration text
    refine_scale: bool = False       # after the clip search, refit each block's scale by least squares
    tensors: dict = field(default_factory=dict)  # exact weight name -> {"bits", "block_size"}: a --bpw plan; wins
    bpw: float | None = None         # the budget the plan was chosen for (bits per parameter), recorded
    bpw_margin: float | None = None  # the default's budget: this model's smallest package (every tensor at its
                                     # fewest bytes) plus this many bits per parameter, planned like --bpw
    strict_budget: bool = True       # a budget below the model's smallest package is an error (--bpw B); False
                                     # (the presets and the default): that model takes its smallest package

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
        opts = list(self.overrides.values()) + list(self.tensors.values())
        for b in [self.bits, self.head_bits] + [o.get("bits") for o in opts]:
            if b is not None and b not in SUPPORTED_BITS:
                raise ExportError(f"{b}-bit weights are not supported ({', '.join(map(str, SUPPORTED_BITS))}; "
                                  f"6 = a 4-bit and a 2-bit kernel summed)")
        for o in opts:
            if o.get("block_size") is not None and o["block_size"] not in SUPPORTED_BLOCK_SIZES:
                raise ExportError(f"block size {o['block_size']} is not supported: onnxruntime's fast path takes "
                                  f"{', '.join(map(str, SUPPORTED_BLOCK_SIZES))}")
        if self.scale_dtype not in ("float32", "float16"):
            raise ExportError(f"scale dtype '{self.scale_dtype}' is not supported (float32 or float16)")
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
        bs = int(self.tensors.get(name, {}).get("block_size", bs))
        return self.block_for_target(bs, k)

    def block_for_target(self, bs: int, k: int) -> int:
        """The block a tensor with K inputs takes for a wanted block: on ARM at most 128 and dividing K."""
        if self.target == "arm":
            bs = arm_block(bs)
            while bs > 32 and k % bs:
                bs //= 2
        return self.fit(bs, k)

    def fit(self, bs: int, k: int) -> int:
        """With fit_block, the largest block <= bs (halving, down to 16) that divides K: e.g. K=576 takes 64
        instead of padding 4.5 blocks of 128 to 5 (11% more bytes for the same values)."""
        while self.fit_block and bs > 16 and k % bs:
            bs //= 2
        return bs

    def table_block_for(self, name: str, k: int) -> int:
        """Block of a (V, d) table: a plan's, else head_block_size, else the linear layers' rule."""
        if "block_size" in self.tensors.get(name, {}) or self.head_block_size is None:
            return self.block_for(name, k)
        return self.fit(self.lm_head_block, k)

    def bits_for(self, name: str, table_bits: int | None = None) -> int:
        """Bits of a weight: a --bpw plan's, else the table's (head_bits, when given), else overrides, else bits."""
        if "bits" in self.tensors.get(name, {}):
            return int(self.tensors[name]["bits"])
        if table_bits:
            return table_bits
        bits = self.bits
        for key, opts in self.overrides.items():
            if key in name and "bits" in opts:
                bits = int(opts["bits"])
        return bits

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int4" and ("gptq" in (self.method, self.head_method) or self.importance)

    def with_budget(self, bpw: float) -> "Recipe":
        """This recipe under a --bpw budget: per-tensor bits and blocks planned on importance-weighted error."""
        if not 2.0 <= bpw <= 16.0:
            raise ExportError(f"--bpw {bpw:g}: expected bits per weight between 2 and 16")
        return replace(self, bpw=float(bpw), bpw_margin=None, strict_budget=True, importance=True, clip_search=True,
                       refine_scale=True, tensors={}, calibration_seqs=min(self.calibration_seqs, 6))

    def above_smallest(self, margin: float) -> "Recipe":
        """This recipe planned within its model's smallest package + `margin` bits per parameter: the same
        plan as --bpw, with a budget every model can take (a 576-wide model's smallest is 4.32, a 2304-wide
        one's 4.16)."""
        return replace(self.with_budget(16.0), bpw=None, bpw_margin=float(margin))

    @property
    def planned(self) -> bool:
        """Does the exporter plan bits and blocks per tensor (a budget given, no plan yet)?"""
        budget = self.bpw is not None or self.bpw_margin is not None
        return self.precision == "int4" and not self.tensors and budget

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
    # float16 scales (half the scale bytes; benchmarks/quality_peers, docs/quality-peers.md). fit_block: a K the
    # block does not divide (SmolLM2's 576 with 128) takes a smaller block instead of a zero-padded one.
    # b64 f16: the default's bytes on the MiniCPM-2B shape (26.95% of bf16) with block-64 quality.
    "clip-asym-b64-f16": Recipe(block_size=64, head_block_size=128, symmetric=False, clip_search=True,
                                scale_dtype="float16", fit_block=True),
    "clip-asym-b128-f16": Recipe(block_size=128, symmetric=False, clip_search=True, scale_dtype="float16",
                                 fit_block=True),
    # about llama.cpp Q4_0's bytes: 8-bit tied embedding/lm_head and v_proj (the tensors llama.cpp also
    # keeps wider), int4 block 64 elsewhere
    "clip-asym-b64-v8-head8-f16": Recipe(block_size=64, head_bits=8, head_block_size=128, symmetric=False,
                                         clip_search=True, scale_dtype="float16", fit_block=True,
                                         overrides={"v_proj": {"bits": 8, "block_size": 128}}),
    "fp32": Recipe(precision="fp32"),
}
# The uniform recipe every budget plans on: also what a GGUF import's float tensors take, the bundled
# package's recipe, and the fast export (no sensitivity pass).
BASE_RECIPE = "clip-asym-b128-f16"
# Budget presets: `--recipe bpw6.1` is `--bpw 6.1` on the base recipe (README, "Quantization quality"):
# bpw4.3 keeps the MiniCPM-2B package at least 73% smaller than bf16; the others sit at llama.cpp's sizes
# (Q4_0 --pure, Q4_0, Q4_K_M, Q8_0), each with its measured quality.
PRESET_BUDGETS = {"bpw4.3": 4.3, "bpw4.5": 4.5, "bpw5.3": 5.3, "bpw6.1": 6.1, "bpw8.5": 8.5}
RECIPES.update({name: replace(RECIPES[BASE_RECIPE].with_budget(b), strict_budget=False)
                for name, b in PRESET_BUDGETS.items()})
# The default: mostly 4-bit, 0.1 bit a weight above the smallest package spent where the measured
# sensitivity buys the most (README, "Quantization quality": on the MiniCPM-2B shape 26.7% of bf16).
RECIPES["q4-plan"] = RECIPES[BASE_RECIPE].above_smallest(0.1)
DEFAULT_RECIPE = "q4-plan"
