"""A GGUF file (llama.cpp, Ollama, LM Studio) opened as a checkpoint: Hugging Face names, float32 loads,
and each quantized tensor's exact form for the exporter (export/gguf_blocks.py).

    model.gguf ─ GGUFReader (checked: magic, version 3, types, data bounds)
              ├ metadata ─ ARCHS ─ config.json-like dict ─ the family registry (as for HF folders)
              ├ tokenizer.ggml.* ─ tokenizer.json + tokenizer_config.json in a scratch folder (gguf_tokenizer)
              └ tensors ─ HF names, q/k rows un-permuted where llama.cpp's converter permuted them
                        ├ load(name): float32, dequantized by gguf (the reference's weights)
                        └ carried(name): the same values on MatMulNBits' grid, or None (float: the recipe)
"""
from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_llm.errors import CheckpointError, ExportError

from .checkpoint import files_sha256
from .gguf_blocks import CARRIED, FORM, Carried, carry, take_rows

FLOAT_TYPES = ("F32", "F16", "BF16")
FP16_SCALED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")    # block scale = the stored float16 d
MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufArch:
    """How one llama.cpp architecture maps onto this exporter's family registry."""
    hf_architecture: str
    permute_qk: bool                 # convert_hf_to_gguf.py's LlamaModel.permute on q/k rows
                                     # (rotate-half → interleaved)
    extra: tuple[tuple[str, str], ...] = ()   # (HF config key, how it is derived) for family-specific keys
    names: tuple[tuple[str, str], ...] = ()   # per-layer GGUF -> HF names that differ from LAYER_NAMES
    norm_shift: float = 0.0          # the converter stored RMSNorm weights as w + shift (Gemma's (1 + w))


ARCHS = {
    "llama": GgufArch("LlamaForCausalLM", permute_qk=True),
    "minicpm": GgufArch("MiniCPMForCausalLM", permute_qk=True,
                        extra=(("scale_emb", "embedding_scale"), ("scale_depth", "residual_scale"),
                               ("dim_model_base", "logit_scale"))),
    "qwen2": GgufArch("Qwen2ForCausalLM", permute_qk=False),
    "qwen3": GgufArch("Qwen3ForCausalLM", permute_qk=False),
    # conversion/gemma.py's Gemma3Model: norms stored as 1 + w; the four layer norms named by position
    "gemma3": GgufArch("Gemma3ForCausalLM", permute_qk=False, norm_shift=1.0,
                       names=(("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
                              ("post_attention_norm.weight", "post_attention_layernorm.weight"),
                              ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"))),
}

LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<n>\d{5})\.gguf$")


def hf_name(gguf_name: str, arch: GgufArch | None = None) -> str | None:
    if gguf_name in TOP_NAMES:
        return TOP_NAMES[gguf_name]
    layer_names = LAYER_NAMES | dict(arch.names) if arch else LAYER_NAMES
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in layer_names:
        return f"model.layers.{int(m.group(1))}.{layer_names[m.group(2)]}"
    return None


def unpermute_rows(rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes convert_hf_to_gguf.py's permute(w, n_head) (q: n_head, k: n_head_kv)."""
    return np.arange(rows).reshape(n_head, rows // n_head // 2, 2).swapaxes(1, 2).reshape(rows)


def _reader(path: Path):
    """gguf's reader with the checks it lacks: each failure names the tensor."""
    try:
        import gguf
        from gguf.gguf_reader import GGUFReader
    except ImportError:
        raise CheckpointError(f"{path}: reading GGUF files needs the gguf package "
                              f"(pip install -e '.[gguf]' in the edge-llm checkout)") from None

    size = path.stat().st_size

    class CheckedReader(GGUFReader):
        def _build_tensors(self, start_offs, fields):
            for f in fields:
                name = bytes(f.parts[1]).decode("utf-8", "replace")
                raw = int(f.parts[4][0])
                try:
                    qtype = gguf.GGMLQuantizationType(raw)
                except ValueError:
                    raise CheckpointError(f"{path}: tensor '{name}' has unknown GGML type {raw}") from None
                per, nbytes = gguf.GGML_QUANT_SIZES[qtype]
                n = int(np.prod(f.parts[3].astype(np.int64))) if len(f.parts[3]) else 1
                if n % per:
                    raise CheckpointError(f"{path}: tensor '{name}' has {n} values, not whole {qtype.name} blocks")
                end = int(start_offs + f.parts[5][0]) + n // per * nbytes
                if end > size:
                    raise CheckpointError(f"{path}: tensor '{name}' ({qtype.name}) runs past the end of the file "
                                          f"(needs {end:,} bytes, the file has {size:,})")
            super()._build_tensors(start_offs, fields)

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] != MAGIC:
        raise CheckpointError(f"{path}: not a GGUF file (no 'GGUF' magic)")
    if len(head) < 8:
        raise CheckpointError(f"{path}: truncated GGUF header")
    version = int.from_bytes(head[4:8], "little")
    if version != 3:
        raise CheckpointError(f"{path}: GGUF version {version} is not supported (only version 3; re-convert it "
                              f"with a current llama.cpp)")
    try:
        return CheckedReader(str(path))
    except CheckpointError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupt header: {e})") from None


def _split_files(path: Path) -> list[Path]:
    """model-00001-of-00003.gguf -> all three parts (each must exist); any other name -> [path]."""
    m = SPLIT_RE.match(path.name)
    if not m:
        return [path]
    if int(m.group("no")) != 1:
        raise CheckpointError(f"{path}: part {int(m.group('no'))} of a split GGUF; give the first part (-00001-of-)")
    n = int(m.group("n"))
    files = [path.with_name(f"{m.group('stem')}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: part of the split GGUF {path.name} is missing")
    return files


def _fields(reader) -> dict:
    out = {}
    for k, f in reader.fields.items():
        if k.startswith("GGUF."):
            continue
        try:
            out[k] = f.contents()
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise CheckpointError(f"metadata key '{k}' is unreadable ({e})") from None
    return out


@dataclass
class GgufTensor:
    gguf_name: str
    gguf_type: str
    shape: tuple[int, ...]           # HF order (rows, cols)
    raw: np.ndarray                  # gguf's view: float array or (rows, bytes) uint8
    rows: np.ndarray | None = None   # un-permutation of the output rows, if any
    shift: float = 0.0               # subtracted on load (GgufArch.norm_shift, for norm weights)


@dataclass
class GgufCheckpoint:
    """Quacks like export/checkpoint.py's Checkpoint (path, config, load, shape, names, sha256, weight files),
    plus `meta_dir` (tokenizer files) and `carried` (exact quantized forms)."""
    path: Path
    config: dict
    tensors: dict[str, GgufTensor]
    weight_files: list[Path]
    meta_dir: Path
    metadata: dict = field(repr=False, default_factory=dict)
    _sha256: str | None = None

    @property
    def weights_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)

    def names(self) -> list[str]:
        return sorted(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def _t(self, name: str) -> GgufTensor:
        if name not in self.tensors:
            raise CheckpointError(f"{self.path}: no tensor named '{name}' in the GGUF")
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._t(name).shape

    def dtype(self, name: str) -> str:
        return self._t(name).gguf_type

    def load(self, name: str) -> np.ndarray:
        """float32, dequantized by gguf (its own numpy code: the exact reference values)."""
        import gguf.quants
        t = self._t(name)
        try:
            w = np.asarray(gguf.quants.dequantize(t.raw, getattr(gguf.GGMLQuantizationType, t.gguf_type)),
                           dtype=np.float32).reshape(t.shape)
        except NotImplementedError:
            raise CheckpointError(f"{self.path}: tensor '{t.gguf_name}' is {t.gguf_type}, which gguf cannot "
                                  f"dequantize") from None
        if t.shift:
            w = w - np.float32(t.shift)
        return np.ascontiguousarray(w if t.rows is None else w[t.rows])

    def carried(self, name: str) -> Carried | None:
        """The tensor on MatMulNBits' grid with no rounding at all, or None (a float or re-quantized type)."""
        t = self._t(name)
        if t.gguf_type not in CARRIED or len(t.shape) != 2:
            return None
        c = carry(t.raw, t.gguf_type, shape=t.shape)
        return c if t.rows is None else take_rows(c, t.rows)

    def gguf_types(self) -> dict[str, list[str]]:
        """GGUF type -> HF tensor names."""
        out: dict[str, list[str]] = {}
        for n, t in sorted(self.tensors.items()):
            out.setdefault(t.gguf_type, []).append(n)
        return out

    def gguf_bits(self) -> float:
        """Bits per weight of the GGUF's 2-D tensors (the ones a package quantizes)."""
        two_d = [t for t in self.tensors.values() if len(t.shape) == 2]
        return 8 * sum(t.raw.nbytes for t in two_d) / sum(math.prod(t.shape) for t in two_d)

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = files_sha256(self.weight_files)
        return self._sha256

    def close(self) -> None:
        shutil.rmtree(self.meta_dir, ignore_errors=True)

    def __enter__(self) -> "GgufCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _need(meta: dict, key: str, path: Path):
    if key not in meta:
        raise CheckpointError(f"{path}: metadata key '{key}' is missing")
    return meta[key]


def _f32(v) -> float:
    """A float32 metadata value as the shortest decimal that round-trips (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(v)))


def hf_config(meta: dict, path: Path, *, tied: bool) -> dict:
    """GGUF metadata -> the config.json keys the family registry reads."""
    arch = _need(meta, "general.architecture", path)
    if arch not in ARCHS:
        raise CheckpointError(f"{path}: general.architecture '{arch}' is not supported; supported: "
                              f"{', '.join(sorted(ARCHS))}")
    a = ARCHS[arch]
    A = lambda k: _need(meta, f"{arch}.{k}", path)
    hidden, heads, layers = int(A("embedding_length")), int(A("attention.head_count")), int(A("block_count"))
    n_vocab = meta.get(f"{arch}.vocab_size", len(_need(meta, "tokenizer.ggml.tokens", path)))
    cfg = {
        "architectures": [a.hf_architecture], "hidden_act": "silu", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
        "intermediate_size": int(A("feed_forward_length")), "vocab_size": int(n_vocab),
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 2048)),
        "rms_norm_eps": _f32(A("attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": tied,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": [int(meta[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
                         if k in meta],
    }
    rope_dims = meta.get(f"{arch}.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != cfg["head_dim"]:
        raise CheckpointError(f"{path}: {arch}.rope.dimension_count {rope_dims} != head dim {cfg['head_dim']} "
                              f"(partial rotary is not supported)")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(A("rope.scaling.factor"))}
    elif scaling not in ("none",):
        raise CheckpointError(f"{path}: {arch}.rope.scaling.type '{scaling}' is not supported (none or linear)")
    if arch == "gemma3":    # llama.cpp's GEMMA3 graph (llama-model.cpp): what the GGUF leaves implicit
        head_dim = cfg["head_dim"]
        cfg |= {"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
                "sliding_window": int(A("attention.sliding_window")), "sliding_window_pattern": 6,
                "rope_local_base_freq": 10000.0,
                # softmax scale 1/sqrt(head_dim), except the 62-layer 27B: 1/sqrt(hidden / heads)
                "query_pre_attn_scalar": hidden / heads if layers == 62 else head_dim}
        if f"{arch}.final_logit_softcapping" in meta:
            cfg["final_logit_softcapping"] = float(meta[f"{arch}.final_logit_softcapping"])
    if arch == "minicpm":   # llama.cpp stores the derived scales (convert_hf_to_gguf.py's MiniCPMModel)
        cfg["scale_emb"] = float(A("embedding_scale"))
        cfg["scale_depth"] = float(A("residual_scale")) * math.sqrt(layers)
        cfg["dim_model_base"] = hidden / float(A("logit_scale"))
    return cfg


def _tensors(readers, path: Path, *, cfg: dict, arch: GgufArch) -> dict[str, GgufTensor]:
    out: dict[str, GgufTensor] = {}
    for r in readers:
        for t in r.tensors:
            if t.name == "rope_freqs.weight":
                raise CheckpointError(f"{path}: tensor 'rope_freqs.weight' (llama 3 rope scaling as frequency "
                                      f"factors) is not supported yet")
            name = hf_name(t.name, arch)
            if name is None:
                raise CheckpointError(f"{path}: tensor '{t.name}' has no counterpart in this exporter's decoder")
            if name in out:
                raise CheckpointError(f"{path}: tensor '{t.name}' appears twice")
            shape = tuple(int(d) for d in reversed(list(t.shape)))
            rows = None
            if arch.permute_qk and name.endswith(("q_proj.weight", "k_proj.weight")):
                heads = cfg["num_attention_heads"] if "q_proj" in name else cfg["num_key_value_heads"]
                if shape[0] % (2 * heads):
                    raise CheckpointError(f"{path}: tensor '{t.name}' has {shape[0]} rows, not a multiple of "
                                          f"2 x {heads} heads")
                rows = unpermute_rows(shape[0], heads)
            shift = arch.norm_shift if name.endswith("norm.weight") else 0.0
            out[name] = GgufTensor(t.name, t.tensor_type.name, shape, t.data, rows, shift)
    return out


def open_gguf(path: Path) -> GgufCheckpoint:
    """Open a .gguf (or the first part of a split one): checked, mapped, tokenizer rebuilt."""
    from .gguf_tokenizer import write_tokenizer
    path = Path(path)
    files = _split_files(path)
    readers = [_reader(f) for f in files]
    try:
        meta = _fields(readers[0])
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    arch = ARCHS.get(meta.get("general.architecture"))
    tied = not any(t.name == "output.weight" for r in readers for t in r.tensors)
    cfg = hf_config(meta, path, tied=tied)
    tensors = _tensors(readers, path, cfg=cfg, arch=arch)
    meta_dir = Path(tempfile.mkdtemp(prefix="edge-llm-gguf-"))
    try:
        write_tokenizer(meta, meta_dir, source=path)
    except BaseException:
        shutil.rmtree(meta_dir, ignore_errors=True)
        raise
    return GgufCheckpoint(path, cfg, tensors, files, meta_dir, meta)


def _half_exact(ckpt: GgufCheckpoint, names: list[str]) -> bool:
    """Are all these tensors' carried scales float16 values? (Q4_0/Q4_1/Q5_*/Q8_0's d always is; the
    K-quants' d·sc may not be.)"""
    for n in names:
        if ckpt.tensors[n].gguf_type in FP16_SCALED:
            continue
        s = ckpt.carried(n).q.scales
        if not np.array_equal(s.astype(np.float16).astype(np.float32), s):
            return False
    return True


def carried_recipe(ckpt: GgufCheckpoint, recipe):
    """The user's recipe for the float tensors, with every exactly carried tensor pinned to its own bits and
    block (so packing and the manifest see them). Scales: float32 with float32 activations (accuracy level
    0-3: the kernels then see the exact weights and unrounded inputs); with int8 activations (level 4) the
    recipe's float16 scales: the GGUF's own bytes for Q4_0/Q4_1/Q5_*/Q8_0, and for the K-quants' d·sc a
    rounding to float16 (relative 2^-11 per block, far below what rounding the activations to 8 bits
    costs; carriage_report says which types). One Q6_K embedding no longer doubles every Q4_0 tensor's
    scale bytes, as float32 scales for all did."""
    if recipe.precision == "fp32":
        return recipe
    pinned = {}
    for name, t in ckpt.tensors.items():
        if t.gguf_type in CARRIED and len(t.shape) == 2:
            bits, block = FORM[t.gguf_type]
            pinned[name] = {"bits": bits, "block_size": block}
    if recipe.bpw is not None and pinned:
        kinds = ", ".join(sorted({ckpt.tensors[n].gguf_type for n in pinned}))
        raise ExportError(f"{ckpt.path}: --bpw chooses each tensor's bits, but {len(pinned)} tensors here are already "
                          f"quantized ({kinds}) and are carried as they are; --bpw applies to F32/F16/BF16 GGUFs")
    if pinned:
        recipe = replace(recipe, bpw_margin=None)      # the default's margin plans float models only
    half = recipe.scale_dtype == "float16" and recipe.accuracy_level == 4
    return replace(recipe, scale_dtype="float16" if half else "float32", tensors={**recipe.tensors, **pinned})


def carriage_report(ckpt: GgufCheckpoint, recipe) -> dict:
    """Per GGUF type: how its tensors reached the package (the manifest's quantization.gguf)."""
    types = {}
    for ty, names in ckpt.gguf_types().items():
        two_d = [n for n in names if len(ckpt.shape(n)) == 2]
        if not two_d:
            how = "float32 (norms, biases)"
        elif recipe.precision == "fp32":
            how = "dequantized to float32"
        elif ty in CARRIED:
            how = ckpt.carried(two_d[0]).describe()
            if recipe.scale_dtype == "float16" and not _half_exact(ckpt, two_d):
                how = how.replace("exact: ", "codes exact, scales rounded to float16: ", 1)
        elif ty in FLOAT_TYPES:
            how = "quantized by the recipe"
        else:
            how = "dequantized and re-quantized by the recipe"
        types[ty] = {"tensors": len(names), "carried": how}
    return {"file": ckpt.path.name, "files": [p.name for p in ckpt.weight_files], "types": types,
            "gguf_bits_per_weight": round(ckpt.gguf_bits(), 4)}


def requantized_note(ckpt: GgufCheckpoint, recipe) -> str | None:
    """One line naming the tensors whose GGUF type is neither carried nor float, or None."""
    if recipe.precision == "fp32":
        return None
    odd = {ty: names for ty, names in ckpt.gguf_types().items() if ty not in CARRIED + FLOAT_TYPES
           and any(len(ckpt.shape(n)) == 2 for n in names)}
    if not odd:
        return None
    parts = [f"{ty}: {len(ns)} tensors ({ns[0]}{', …' if len(ns) > 1 else ''})" for ty, ns in sorted(odd.items())]
    return "note: dequantized and re-quantized (no exact kernel form): " + "; ".join(parts)
