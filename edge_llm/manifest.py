"""The package manifest: the only contract between the exporter and the runtime.

The exporter builds the frozen dataclasses below and writes them (`to_json`); the runtime reads
`manifest.json` back into the same dataclasses (`load_manifest`) and uses their attributes, nothing
else about the model: one schema on both sides. It never branches on architecture: `model.architecture`
and `model.family` are recorded for people and reports only.

Format history: 1 = MiniCPM v1 only, sentencepiece, per-role chat prefixes; 2 = any decoder family,
tokenizer backend + chat template (jinja) + stop ids, file sizes and checksums.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import PackageError

MANIFEST_NAME = "manifest.json"
FORMAT = "edge-llm-package"
FORMAT_VERSION = 2
KV_ITEMSIZE = {"float32": 4, "float16": 2}   # the KV cache types a package may record, and their sizes
KV_DTYPES = tuple(KV_ITEMSIZE)               # ("float32", "float16"): every check and choice reads this
SAMPLE_CHUNK = 1 << 20   # bytes hashed at each of the start, middle and end of a file for the cheap check


@dataclass(frozen=True)
class IOSpec:
    """Graph input/output names; per-layer names carry `{i}`."""
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    logits_to_keep: str = "logits_to_keep"
    past_key: str = "past_key_values.{i}.key"
    past_value: str = "past_key_values.{i}.value"
    present_key: str = "present.{i}.key"
    present_value: str = "present.{i}.value"
    logits: str = "logits"

    def per_layer(self, kind: str, n_layers: int) -> list[str]:
        """kind: past_key | past_value | present_key | present_value."""
        return [getattr(self, kind).format(i=i) for i in range(n_layers)]


@dataclass(frozen=True)
class KVSpec:
    layout: str               # "BNSH": (batch, kv heads, sequence, head dim)
    dtype: str                # one of KV_DTYPES
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_length: int
    shared_past_present: bool = True

    @property
    def bytes_per_position(self) -> int:
        """Key + value bytes one context position takes over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * KV_ITEMSIZE[self.dtype]


@dataclass(frozen=True)
class ModelShape:
    """A decoder's shape, written once: the exporter's DecoderConfig and the manifest's ModelSpec extend it."""
    architecture: str         # for people and reports; the runtime never branches on it
    family: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int

    def shape(self) -> dict[str, Any]:
        """The ModelShape fields of this object (a DecoderConfig's, to build a ModelSpec from)."""
        return {f.name: getattr(self, f.name) for f in fields(ModelShape)}


@dataclass(frozen=True)
class ModelSpec(ModelShape):
    context_length: int
    parameters: int
    details: Mapping[str, Any] = field(default_factory=dict)   # family extras (rope, scales), informative


@dataclass(frozen=True)
class TokenizerSpec:
    backend: str              # "sentencepiece" (tokenizer.model) | "tokenizers" (tokenizer.json)
    file: str
    add_bos: bool
    add_eos: bool
    prepend_space: bool       # sentencepiece only: put "▁" before text (add_dummy_prefix / non-legacy)
    bos_id: int | None
    eos_ids: tuple[int, ...]
    bos_token: str | None = None
    eos_token: str | None = None


@dataclass(frozen=True)
class ChatSpec:
    template: str             # jinja2, rendered the way transformers' apply_chat_template does
    source: str               # where it came from: "tokenizer_config.json", "chat_template.jinja", "builtin:minicpm"
    stop_ids: tuple[int, ...]  # every end-of-turn id: generation stops on any of them
    stop_strings: tuple[str, ...] = ()
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False     # prepend BOS to the rendered conversation (MiniCPM's chat() does; templates
                              # that write their own BOS say no)


@dataclass(frozen=True)
class AccuracySpec:
    """The quantization settings that decide how a package computes (speculation acts on them); the
    rest of `quantization` is the exporter's recipe, recorded for people and reports."""
    precision: str = "int4"   # "int4" | "fp32"
    accuracy_level: int = 4   # MatMulNBits: 0/1 float32 activations, 4 int8 activations
    scale_dtype: str = "float32"   # "float16" scales run the matmuls on float16 activations

    @classmethod
    def of(cls, quantization: Mapping[str, Any] | None) -> "AccuracySpec":
        q = quantization or {}
        return cls(precision=q.get("precision", "int4"), accuracy_level=int(q.get("accuracy_level", 4)),
                   scale_dtype=q.get("scale_dtype", "float32"))

    @property
    def float32_throughout(self) -> bool:
        """fp32 weights, or int4 weights with float32 activations and float32 scales."""
        return self.precision == "fp32" or (self.accuracy_level <= 1 and self.scale_dtype == "float32")


@dataclass(frozen=True)
class FileEntry:
    name: str
    bytes: int
    sha256: str
    sample_sha256: str        # hash of (up to) the first, middle and last MiB: cheap enough for every load


@dataclass(frozen=True)
class Manifest:
    path: Path
    format_version: int
    model: ModelSpec
    io: IOSpec
    kv: KVSpec
    tokenizer: TokenizerSpec
    chat: ChatSpec | None
    files: Mapping[str, FileEntry]
    generation: Mapping[str, Any]
    quantization: Mapping[str, Any]
    data: Mapping[str, Any]   # the whole JSON, for reports (sizes, source, validation, exporter)

    def file(self, key: str) -> Path:
        return self.path / self.files[key].name

    def has_file(self, key: str) -> bool:
        return key in self.files

    @property
    def sizes(self) -> Mapping[str, Any]:
        return self.data.get("sizes") or {}

    @property
    def accuracy(self) -> AccuracySpec:
        return AccuracySpec.of(self.quantization)


# ------------------------------------------------------------------------------------------- writing
def to_json(spec) -> dict:
    """One section of manifest.json from its dataclass (tuples as lists, mappings as objects): what
    load_manifest reads back into the same dataclass."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v
    return {f.name: plain(getattr(spec, f.name)) for f in fields(spec)}


def file_entry(folder: Path, name: str) -> dict:
    """Size and checksums of one package file, as the manifest records them."""
    path = Path(folder) / name
    full = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            full.update(chunk)
    return {"name": name, "bytes": path.stat().st_size, "sha256": full.hexdigest(),
            "sample_sha256": sample_sha256(path)}


def sample_sha256(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for start in sorted({0, max(0, size // 2 - SAMPLE_CHUNK // 2), max(0, size - SAMPLE_CHUNK)}):
            f.seek(start)
            h.update(f.read(SAMPLE_CHUNK))
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- reading
def _build(cls, section: Any, where: str):
    if not isinstance(section, dict):
        raise PackageError(f"{where}: expected an object")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(section))
    if missing:
        raise PackageError(f"{where}: missing field(s) {', '.join(missing)}")
    kw = {k: v for k, v in section.items() if k in names}
    types = {f.name: f.type for f in fields(cls)}
    for k, v in kw.items():
        if not _type_ok(v, types[k]):
            raise PackageError(f"{where}.{k}: {type(v).__name__} {v!r:.40} is not a valid {types[k]}")
        if isinstance(v, list):
            kw[k] = tuple(v)
        elif isinstance(v, dict):
            kw[k] = MappingProxyType(v)
    try:
        return cls(**kw)
    except TypeError as e:
        raise PackageError(f"{where}: {e}") from e


_SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "Path": (str,)}


def _type_ok(v: Any, annotation: str) -> bool:
    """Does a JSON value fit a field annotation of these dataclasses (str, int | None, tuple[int, ...]…)?"""
    options = [a.strip() for a in annotation.split("|")]
    if v is None:
        return "None" in options
    for a in options:
        if a.startswith("tuple[") and isinstance(v, list):
            item = _SCALARS[a[6:].split(",")[0].strip()]
            if all(isinstance(x, item) and not (isinstance(x, bool) and bool not in item) for x in v):
                return True
        elif a.startswith("Mapping") and isinstance(v, dict):
            return True
        elif a in _SCALARS and isinstance(v, _SCALARS[a]) and not (isinstance(v, bool) and a != "bool"):
            return True
    return False


def load_manifest(package_dir, *, check_files: bool = True) -> Manifest:
    folder = Path(package_dir)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise PackageError(f"{folder}: package folder not found")
    if not path.is_file():
        raise PackageError(f"{path}: missing; is {folder} a package written by `edge-llm export`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PackageError(f"{path}: not an edge-llm package manifest")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(f"{path}: package format {version} is not supported by this runtime (it reads format "
                           f"{FORMAT_VERSION}); re-export the checkpoint with this version of edge-llm")
    missing = [k for k in ("model", "files", "io", "kv_cache", "tokenizer") if k not in data]
    if missing:
        raise PackageError(f"{path}: missing section(s) {', '.join(missing)}")
    for key in ("files", "model", "io", "kv_cache", "tokenizer", "generation", "quantization", "chat"):
        optional = key in ("generation", "quantization", "chat")
        if key in data and not isinstance(data[key], dict) and not (optional and data[key] is None):
            raise PackageError(f"{path}: {key}: expected an object")
    kv = _build(KVSpec, data["kv_cache"], f"{path}: kv_cache")
    if kv.dtype not in KV_DTYPES:
        raise PackageError(f"{path}: kv_cache.dtype '{kv.dtype}' is not supported ({', '.join(KV_DTYPES)})")
    q = data.get("quantization") or {}
    _build(AccuracySpec, {k: q[k] for k in ("precision", "accuracy_level", "scale_dtype") if k in q},
           f"{path}: quantization")      # typed as the runtime reads them
    m = Manifest(
        path=folder, format_version=version,
        model=_build(ModelSpec, data["model"], f"{path}: model"),
        io=_build(IOSpec, data["io"], f"{path}: io"),
        kv=kv,
        tokenizer=_build(TokenizerSpec, data["tokenizer"], f"{path}: tokenizer"),
        chat=_build(ChatSpec, data["chat"], f"{path}: chat") if data.get("chat") else None,
        files=MappingProxyType({k: _build(FileEntry, v, f"{path}: files.{k}") for k, v in data["files"].items()}),
        generation=MappingProxyType(dict(data.get("generation") or {})),
        quantization=MappingProxyType(dict(data.get("quantization") or {})),
        data=MappingProxyType(data),
    )
    if check_files:
        verify_files(m, full=False)
    return m


def verify_files(m: Manifest, *, full: bool = False) -> None:
    """Every recorded file exists with its recorded size and sampled checksum (`full`: whole-file sha256).
    Catches truncated, replaced or zeroed files with one line naming the file."""
    for key, entry in m.files.items():
        p = m.path / entry.name
        if not p.is_file():
            raise PackageError(f"{p}: missing from the package")
        size = p.stat().st_size
        if size != entry.bytes:
            raise PackageError(f"{p}: {size:,} bytes, the manifest records {entry.bytes:,} (truncated or replaced; "
                               f"re-export or copy the package again)")
        if sample_sha256(p) != entry.sample_sha256:
            raise PackageError(f"{p}: contents differ from the manifest's checksum (corrupted; re-export or copy "
                               f"again)")
        if full:
            if file_entry(m.path, entry.name)["sha256"] != entry.sha256:
                raise PackageError(f"{p}: sha256 differs from the manifest (corrupted; re-export or copy again)")
