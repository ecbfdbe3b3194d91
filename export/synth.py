"""Synthetic checkpoints at real scale: random bf16 weights in a release's exact layout (MiniCPM-2B/1B,
and the GQA shape of Qwen2.5-1.5B through the same registry the exporter uses).

Writes a folder a user could have downloaded (config.json, generation_config.json, tokenizer files,
pytorch_model.bin or model.safetensors), one tensor at a time in chunks, so peak RAM stays at a few
tens of MB whatever the model size. No PyTorch: the .bin is torch.save's zip format, pickle written
by hand. Every tensor is seeded from (seed, its name), so `synthetic_tensor` regenerates any one of
them exactly and the same arguments always give byte-identical files.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edge_llm import paths

from .checkpoint import float32_to_bf16

# The MiniCPM v1 releases (../shared/reference/minicpm.md §1). 2B keeps max_position_embeddings
# 2048, as in the real tokenizer folder's config (the current HF release says 4096).
SHAPES = {
    "minicpm-2b": {"hidden_size": 2304, "num_hidden_layers": 40, "num_attention_heads": 36,
                   "num_key_value_heads": 36, "intermediate_size": 5760, "vocab_size": 122753,
                   "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
                   "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4},
    "minicpm-1b": {"hidden_size": 1536, "num_hidden_layers": 52, "num_attention_heads": 24,
                   "num_key_value_heads": 8, "intermediate_size": 3840, "vocab_size": 73440,
                   "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
                   "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4},
    # Qwen2.5-1.5B's shapes (q/k/v bias, 12 heads over 2 KV heads, tied head). Its tokenizer is not
    # available offline: MiniCPM-2B's (122,753 ids < 151,936) stands in; only speed and memory mean anything.
    "qwen2.5-1.5b": {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "intermediate_size": 8960,
                     "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
                     "rope_theta": 1000000.0, "tie_word_embeddings": True},
}
_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
_DEFAULTS = {"max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
             "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4}

# Real MiniCPM-2B tokenizer files, shipped in edge_llm/data. Used by default only when the vocab is 122753:
# the real 1B has its own 73440-piece tokenizer (not available here), and 2B ids >= 73440 would
# index past a 1B embedding. For 1B pass tokenizer_dir, e.g. the 8192-piece minicpm-tiny fixture.
TOKENIZER_2B = paths.TOKENIZER_2B       # shipped inside the package: works from a wheel too
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
GENERATION_CONFIG = {"do_sample": True, "top_p": 0.8, "temperature": 0.8, "bos_token_id": 1, "eos_token_id": 2}

MATRIX_STD = 0.02               # linear and embedding weights ~ N(0, 0.02²), an initialisation's scale
NORM_MEAN, NORM_STD = 1.0, 0.02  # RMSNorm weights ~ 1
_CHUNK = 1 << 23                # elements generated and written at a time (32 MB of float32)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: same arguments, same bytes

Progress = Callable[[str, int, int], None]


def resolve_shape(shape: str | dict = "minicpm-2b", *, layers: int | None = None) -> dict:
    """Shape fields for a SHAPES name, or a dict of config fields (missing scales/eps take defaults)."""
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)} or pass a dict")
        fields = dict(SHAPES[shape])
    else:
        missing = [k for k in _REQUIRED if k not in shape]
        if missing:
            raise ValueError(f"shape dict lacks {', '.join(missing)}")
        fields = {**_DEFAULTS, "num_key_value_heads": shape["num_attention_heads"], **shape}
    if layers is not None:
        fields["num_hidden_layers"] = layers
    d, h, kv = fields["hidden_size"], fields["num_attention_heads"], fields["num_key_value_heads"]
    if d % h or h % kv:
        raise ValueError(f"hidden_size {d}, heads {h}, kv heads {kv}: need d % heads == 0 and heads % kv == 0")
    return fields


def release_config(fields: dict, *, name: str) -> dict:
    """config.json as the release ships it (MiniCPM: no model_type, rope_theta or tie_word_embeddings keys)."""
    if "architectures" in fields and fields["architectures"] != ["MiniCPMForCausalLM"]:
        return {"_name_or_path": name, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
                "torch_dtype": "bfloat16", "use_cache": True, "rope_scaling": None, **fields}
    return {
        "_name_or_path": name,
        "architectures": ["MiniCPMForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_minicpm.MiniCPMConfig",
                     "AutoModel": "modeling_minicpm.MiniCPMModel",
                     "AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM",
                     "AutoModelForSeq2SeqLM": "modeling_minicpm.MiniCPMForCausalLM",
                     "AutoModelForSequenceClassification": "modeling_minicpm.MiniCPMForSequenceClassification"},
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": fields["hidden_size"], "initializer_range": 0.1,
        "intermediate_size": fields["intermediate_size"],
        "max_position_embeddings": fields["max_position_embeddings"],
        "num_attention_heads": fields["num_attention_heads"],
        "num_hidden_layers": fields["num_hidden_layers"],
        "num_key_value_heads": fields["num_key_value_heads"],
        "rms_norm_eps": fields["rms_norm_eps"], "rope_scaling": None, "torch_dtype": "bfloat16",
        "transformers_version": "4.36.0", "use_cache": True, "vocab_size": fields["vocab_size"],
        "scale_emb": fields["scale_emb"], "dim_model_base": fields["dim_model_base"],
        "scale_depth": fields["scale_depth"],
    }


def tensor_shapes(fields: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the release in its state-dict order (no lm_head.weight: tied to the embedding)."""
    if "architectures" in fields and fields["architectures"] != ["MiniCPMForCausalLM"]:
        from .families import family_for  # the exporter's own expectations: one source of truth
        return dict(family_for(release_config(fields, name="synthetic"))[1].expected_shapes())
    d, ff = fields["hidden_size"], fields["intermediate_size"]
    kvd = fields["num_key_value_heads"] * (d // fields["num_attention_heads"])
    shapes = {"model.embed_tokens.weight": (fields["vocab_size"], d)}
    for i in range(fields["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes |= {f"{p}.input_layernorm.weight": (d,), f"{p}.post_attention_layernorm.weight": (d,),
                   f"{p}.self_attn.q_proj.weight": (d, d), f"{p}.self_attn.k_proj.weight": (kvd, d),
                   f"{p}.self_attn.v_proj.weight": (kvd, d), f"{p}.self_attn.o_proj.weight": (d, d),
                   f"{p}.mlp.gate_proj.weight": (ff, d), f"{p}.mlp.up_proj.weight": (ff, d),
                   f"{p}.mlp.down_proj.weight": (d, ff)}
    shapes["model.norm.weight"] = (d,)
    return shapes


def _bf16_chunks(name: str, numel: int, seed: int) -> Iterator[np.ndarray]:
    """The tensor's bf16 bits (little-endian uint16), flat, in chunks of at most _CHUNK."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    mean, std = (NORM_MEAN, NORM_STD) if name.endswith("norm.weight") else (0.0, MATRIX_STD)
    for lo in range(0, numel, _CHUNK):
        x = rng.standard_normal(min(_CHUNK, numel - lo), dtype=np.float32)
        x *= std
        x += mean
        yield float32_to_bf16(x).astype("<u2", copy=False)


def synthetic_tensor(name: str, shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    """Exactly the values write_synthetic stores for `name` (bf16-rounded), as float32."""
    bits = np.concatenate(list(_bf16_chunks(name, math.prod(shape), seed)) or [np.empty(0, "<u2")])
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


# -- pytorch_model.bin ---------------------------------------------------------------------------

def _pkl_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])                                  # BININT1
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)                        # BININT2
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)                        # BININT
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw                      # LONG1


def _pkl_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw               # BINUNICODE


def _pkl_tuple(items) -> bytes:
    return b"(" + b"".join(_pkl_int(v) for v in items) + b"t"     # MARK ... TUPLE


def state_dict_pickle(shapes: dict[str, tuple[int, ...]]) -> bytes:
    """data.pkl for bf16 tensors, storage key i for the i-th tensor, as torch.save writes it:
        {name: torch._utils._rebuild_tensor_v2(
                   persistent_id('storage', torch.BFloat16Storage, key, 'cpu', numel),
                   0, shape, stride, False, collections.OrderedDict())}
    Written opcode by opcode (protocol 2) because pickling a GLOBAL by reference needs torch."""
    out = bytearray(b"\x80\x02}(")                                # PROTO 2, EMPTY_DICT, MARK
    for key, (name, shape) in enumerate(shapes.items()):
        strides, step = [], 1
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
        out += _pkl_str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("       # GLOBAL, MARK (args)
        out += (b"(" + _pkl_str("storage") + b"ctorch\nBFloat16Storage\n" + _pkl_str(str(key))
                + _pkl_str("cpu") + _pkl_int(math.prod(shape)) + b"tQ")       # TUPLE, BINPERSID
        out += _pkl_int(0) + _pkl_tuple(shape) + _pkl_tuple(strides) + b"\x89"  # NEWFALSE
        out += b"ccollections\nOrderedDict\n)R"                               # OrderedDict()
        out += b"tR"                                                          # TUPLE, REDUCE
    out += b"u."                                                              # SETITEMS, STOP
    return bytes(out)


def _aligned_info(zf: zipfile.ZipFile, name: str, align: int = 64) -> zipfile.ZipInfo:
    """A ZipInfo whose data will start on an `align`-byte boundary, padding the local header's
    extra field as torch does (its "FB" record), for a force_zip64 write."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    header = 30 + len(name.encode()) + 20                     # fixed part + name + zip64 extra
    pad = -(zf.start_dir + header + 4) % align                # start_dir: where the next header goes
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    return info


def _write_bin(path: Path, shapes: dict, seed: int, progress: Progress | None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        def small(entry: str, data: bytes) -> None:
            zf.writestr(zipfile.ZipInfo(f"archive/{entry}", date_time=_ZIP_EPOCH), data)
        small("data.pkl", state_dict_pickle(shapes))
        small("byteorder", b"little")
        for key, (name, shape) in enumerate(shapes.items()):
            with zf.open(_aligned_info(zf, f"archive/data/{key}"), "w", force_zip64=True) as f:
                for chunk in _bf16_chunks(name, math.prod(shape), seed):
                    f.write(chunk)
            if progress:
                progress(name, key + 1, len(shapes))
        small("version", b"3\n")


# -- model.safetensors ---------------------------------------------------------------------------

def _write_safetensors(path: Path, shapes: dict, seed: int, progress: Progress | None) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        nbytes = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)                             # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for i, (name, shape) in enumerate(shapes.items()):
            for chunk in _bf16_chunks(name, math.prod(shape), seed):
                f.write(chunk)
            if progress:
                progress(name, i + 1, len(shapes))


# -- the folder ----------------------------------------------------------------------------------

def write_synthetic(out_dir, *, shape: str | dict = "minicpm-2b", weight_format: str = "bin",
                    seed: int = 0, tokenizer_dir=None, layers: int | None = None,
                    progress: Progress | None = None) -> Path:
    """Write a synthetic checkpoint folder and return its path.

    shape: a SHAPES name or a dict of config fields; layers overrides num_hidden_layers.
    weight_format: "bin" (pytorch_model.bin, like the release) or "safetensors".
    tokenizer_dir: folder whose tokenizer files are copied; None copies TOKENIZER_2B when the vocab
    is the 2B's and that folder exists, else writes no tokenizer. progress(name, i, n) is called
    after each of the n tensors is written (i = 1..n).
    """
    if weight_format not in ("bin", "safetensors"):
        raise ValueError(f"weight_format must be 'bin' or 'safetensors', not {weight_format!r}")
    fields = resolve_shape(shape, layers=layers)
    if tokenizer_dir is None and fields["vocab_size"] >= SHAPES["minicpm-2b"]["vocab_size"] \
            and TOKENIZER_2B.is_dir():
        tokenizer_dir = TOKENIZER_2B
    if tokenizer_dir is not None and not (Path(tokenizer_dir) / "tokenizer.model").is_file() \
            and not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer_dir}: no tokenizer.model or tokenizer.json to copy")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = shape if isinstance(shape, str) else "custom"
    config = release_config(fields, name=f"edge-llm/synthetic-{label}")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    if tokenizer_dir is not None:
        for fname in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / fname).is_file():
                shutil.copyfile(Path(tokenizer_dir) / fname, out / fname)

    # Only one weights format in the folder: a stale file of the other kind would win detection.
    for stale in ("pytorch_model.bin", "model.safetensors", "pytorch_model.bin.index.json",
                  "model.safetensors.index.json"):
        (out / stale).unlink(missing_ok=True)
    final = out / ("pytorch_model.bin" if weight_format == "bin" else "model.safetensors")
    partial = final.with_name(final.name + ".partial")        # never leave a plausible half-written file
    writer = _write_bin if weight_format == "bin" else _write_safetensors
    writer(partial, tensor_shapes(fields), seed, progress)
    os.replace(partial, final)
    return out
