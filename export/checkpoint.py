"""Read a Hugging Face checkpoint folder without PyTorch.

Weights formats, looked for in this order:
  model.safetensors                  one safetensors file (header parsed here; no safetensors package)
  model.safetensors.index.json       sharded safetensors: `weight_map` name -> shard file
  pytorch_model.bin                  PyTorch's zip-pickle format, unpickled with an allowlist
  pytorch_model.bin.index.json       sharded pytorch_model-0000x-of-0000y.bin

Opening parses only headers / data.pkl and checks every tensor's bytes lie inside its file;
`load(name)` then reads that one tensor's bytes and returns float32.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_llm.errors import CheckpointError, UnsafePickleError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
ITEMSIZE = {"bf16": 2, "fp16": 2, "fp32": 4}
_RAW_DTYPE = {"bf16": np.dtype("<u2"), "fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}
_READ_CHUNK = 1 << 22          # elements per read: converting in chunks keeps peak RAM ~ one float32 tensor
_MAX_HEADER = 100 << 20        # a safetensors header beyond 100 MB is corrupt, not a big model


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32: a bf16 is the top half of a float32."""
    out = np.asarray(bits, dtype=np.uint16).astype(np.uint32)
    out <<= 16
    return out.view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounding to nearest even; NaN stays a (quiet) NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    bits = ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():                                   # the add above can carry a NaN into inf
        bits[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return bits


def files_sha256(paths) -> str:
    """sha256 of the files' bytes, concatenated in order, read 16 MiB at a time."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are. `offset` is absolute (safetensors) or in elements into its
    storage (.bin); `stride` is None for contiguous data."""
    file: Path
    dtype: str                      # "bf16" | "fp16" | "fp32"
    shape: tuple[int, ...]
    offset: int
    storage: str = ""               # .bin only: the storage key, i.e. zip entry <prefix>/data/<key>
    stride: tuple[int, ...] | None = None


def _read_float32(fh, start: int, count: int, dtype: str, *, where: str) -> np.ndarray:
    """Read `count` elements of `dtype` at byte `start` of `fh` and return them as float32 (1-D)."""
    out = np.empty(count, np.float32)
    buf = np.empty(min(count, _READ_CHUNK), _RAW_DTYPE[dtype])
    fh.seek(start)
    for lo in range(0, count, _READ_CHUNK):
        raw = buf[:min(_READ_CHUNK, count - lo)]
        if fh.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise CheckpointError(f"{where}: file ends inside the tensor's data (truncated download?)")
        if dtype == "bf16":
            dst = out.view(np.uint32)[lo:lo + raw.size]
            dst[:] = raw
            dst <<= 16
        else:
            out[lo:lo + raw.size] = raw
    return out


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


# -- safetensors ----------------------------------------------------------------------------------

_ST_DTYPES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}


class _SafetensorsFile:
    """One .safetensors file: 8-byte little-endian header length, JSON header, raw data."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.fh = open(path, "rb")
        try:
            self.tensors = self._parse_header()
        except CheckpointError:
            self.fh.close()
            raise

    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path.name}: {what}")

    def _parse_header(self) -> dict[str, TensorInfo]:
        head = self.fh.read(8)
        if len(head) < 8:
            raise self._fail(f"{self.size} bytes is too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > min(self.size - 8, _MAX_HEADER):
            raise self._fail(f"header length {n} does not fit a {self.size}-byte file (corrupt or truncated)")
        try:
            header = json.loads(self.fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        base, data_size = 8 + n, self.size - 8 - n
        tensors, spans = {}, []
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if not (isinstance(meta, dict) and isinstance(meta.get("shape"), list)
                    and all(type(d) is int and d >= 0 for d in meta["shape"])
                    and isinstance(meta.get("data_offsets"), list) and len(meta["data_offsets"]) == 2
                    and all(type(o) is int for o in meta["data_offsets"])):
                raise self._fail(f"tensor '{name}': malformed header entry {str(meta)[:120]}")
            raw_dtype = meta.get("dtype")
            if raw_dtype not in _ST_DTYPES:
                raise self._fail(f"tensor '{name}' has dtype {raw_dtype!r}; only BF16, F16 and F32 "
                                 f"weights are supported")
            dtype, shape = _ST_DTYPES[raw_dtype], tuple(meta["shape"])
            begin, end = meta["data_offsets"]
            want = math.prod(shape) * ITEMSIZE[dtype]
            if not 0 <= begin <= end <= data_size:
                raise self._fail(f"tensor '{name}': data_offsets [{begin}, {end}] lie outside the "
                                 f"{data_size} data bytes of the file (corrupt or truncated)")
            if end - begin != want:
                raise self._fail(f"tensor '{name}': header gives {end - begin} bytes but shape "
                                 f"{list(shape)} of {raw_dtype} needs {want}")
            tensors[name] = TensorInfo(self.path, dtype, shape, base + begin)
            spans.append((begin, end, name))
        self._check_tiling(spans, data_size)
        return tensors

    def _check_tiling(self, spans: list[tuple[int, int, str]], data_size: int) -> None:
        """The format requires the tensors to cover the data region exactly, in any order: an overlap
        or a gap means some tensor's bytes are not its own (and validation would read the same bytes)."""
        end, last = 0, None
        for begin, stop, name in sorted(spans):
            if begin < end:
                raise self._fail(f"tensor '{name}': data_offsets [{begin}, {stop}] overlap tensor '{last}', "
                                 f"which ends at {end} (corrupt header)")
            if begin > end:
                raise self._fail(f"tensor '{name}': data_offsets start at {begin}, leaving bytes "
                                 f"[{end}, {begin}) that belong to no tensor (corrupt header)")
            end, last = stop, name
        if end != data_size:
            after = f"the last tensor ('{last}', ending at {end})" if last else "the header (no tensors)"
            raise self._fail(f"{data_size - end} data bytes after {after} belong to no tensor "
                             f"(corrupt header or appended data)")

    def load(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        out = _read_float32(self.fh, t.offset, math.prod(t.shape), t.dtype,
                            where=f"{self.path.name}: tensor '{name}'")
        return out.reshape(t.shape)

    def close(self) -> None:
        self.fh.close()


# -- pytorch_model.bin ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _StorageType:
    """Stands in for torch.BFloat16Storage & co. in the unpickled data: only the dtype matters."""
    dtype: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


class _BadPickle(ValueError):
    pass


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor is, reads nothing."""
    ints = lambda t: isinstance(t, tuple) and all(type(v) is int and v >= 0 for v in t)
    if not (isinstance(storage, _Storage) and type(storage_offset) is int and storage_offset >= 0
            and ints(size) and ints(stride) and len(size) == len(stride)):
        raise _BadPickle("malformed _rebuild_tensor_v2 arguments")
    return _TorchTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stands in for torch._utils._rebuild_parameter: an nn.Parameter is just its data here."""
    if not isinstance(data, _TorchTensor):
        raise _BadPickle("malformed _rebuild_parameter arguments")
    return data


@dataclass(frozen=True)
class _TorchTensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


# Everything a torch.save'd state dict of bf16/fp16/fp32 tensors needs, and nothing else. Any other
# global (os.system, builtins.eval, ...) is refused before it is looked up, so nothing runs.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,       # the state dict; empty backward_hooks
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,    # one call per tensor
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,    # state dicts holding nn.Parameter
    ("torch", "BFloat16Storage"): _StorageType("bf16"),
    ("torch", "HalfStorage"): _StorageType("fp16"),
    ("torch", "FloatStorage"): _StorageType("fp32"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, filename: str):
        super().__init__(io.BytesIO(data))
        self.filename = filename

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            raise CheckpointError(f"{self.filename}: tensors stored as torch.{name} are not supported "
                                  f"(only BFloat16Storage, HalfStorage, FloatStorage)")
        raise UnsafePickleError(f"{self.filename}: refused to unpickle global '{module}.{name}' "
                                f"(only weights-file globals are allowed); nothing was executed")

    def persistent_load(self, pid):
        # torch.save writes ('storage', storage_type, key, location, numel) for every storage.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise _BadPickle(f"unexpected persistent id {str(pid)[:80]}")
        return _Storage(pid[2], pid[1].dtype, pid[4])


class _TorchZipFile:
    """One pytorch_model.bin: zip of <prefix>/data.pkl and one raw entry <prefix>/data/<key> per storage."""

    def __init__(self, path: Path):
        self.path, self.name = path, path.name
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as e:    # NotImplementedError: zip version
            raise CheckpointError(f"{self.name}: not a readable PyTorch zip archive ({e}); the file is "
                                  f"truncated, corrupt, or in the pre-1.6 format (re-save it)") from None
        self.fh = open(path, "rb")
        self._data_start: dict[str, int] = {}
        try:
            self.tensors = self._open()
        except CheckpointError:
            self.close()
            raise

    def _open(self) -> dict[str, TensorInfo]:
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{self.name}: expected one <folder>/data.pkl in the archive, found "
                                  f"{len(pkls)}; not a torch.save file")
        self.prefix = pkls[0][:-len("/data.pkl")]
        byteorder = f"{self.prefix}/byteorder"
        if byteorder in self.zip.namelist() and self._read_entry(byteorder).strip() != b"little":
            raise CheckpointError(f"{self.name}: big-endian checkpoints are not supported")
        return self._index(self._unpickle(self._read_entry(pkls[0])))

    def _read_entry(self, entry: str) -> bytes:
        try:
            return self.zip.read(entry)
        # zlib.error: a corrupt deflated entry; NotImplementedError: an unknown compression method;
        # RuntimeError: zipfile's "encrypted, password required"
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
            raise CheckpointError(f"{self.name}: cannot read {entry} ({e})") from None

    def _unpickle(self, data: bytes):
        try:
            return _RestrictedUnpickler(data, self.name).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RecursionError, OverflowError, MemoryError) as e:   # MemoryError: a memo index of 2^32
            raise CheckpointError(f"{self.name}: data.pkl is corrupt or not a state dict "
                                  f"({str(e) or type(e).__name__})") from None

    def _index(self, state) -> dict[str, TensorInfo]:
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.name}: data.pkl holds a {type(state).__name__}, not a state dict")
        entries = {i.filename: i for i in self.zip.infolist()}
        tensors = {}
        for name, t in state.items():
            if not isinstance(name, str) or not isinstance(t, _TorchTensor):
                raise CheckpointError(f"{self.name}: entry {str(name)[:80]!r} of the state dict is not a tensor")
            s = t.storage
            entry = entries.get(f"{self.prefix}/data/{s.key}")
            if entry is None:
                raise CheckpointError(f"{self.name}: tensor '{name}': storage entry "
                                      f"{self.prefix}/data/{s.key} is missing from the archive")
            if entry.file_size != s.numel * ITEMSIZE[s.dtype]:
                raise CheckpointError(f"{self.name}: tensor '{name}': storage {s.key} holds {entry.file_size} "
                                      f"bytes, expected {s.numel * ITEMSIZE[s.dtype]} (truncated?)")
            last = t.offset + sum((n - 1) * st for n, st in zip(t.shape, t.stride))
            if math.prod(t.shape) and last >= s.numel:
                raise CheckpointError(f"{self.name}: tensor '{name}': shape {list(t.shape)} at offset "
                                      f"{t.offset} runs past the end of storage {s.key}")
            contiguous = all(st == want for n, st, want in zip(t.shape, t.stride,
                                                               _contiguous_strides(t.shape)) if n > 1)
            tensors[name] = TensorInfo(self.path, s.dtype, t.shape, t.offset, s.key,
                                       None if contiguous else t.stride)
        return tensors

    def _entry_start(self, entry: zipfile.ZipInfo, where: str) -> int:
        """Absolute file offset of a stored entry's data (the local header's extra field varies)."""
        self.fh.seek(entry.header_offset)
        local = self.fh.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{where}: bad zip local header (corrupt file)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        return entry.header_offset + 30 + name_len + extra_len

    def load(self, name: str) -> np.ndarray:
        t, where = self.tensors[name], f"{self.name}: tensor '{name}'"
        entry = self.zip.getinfo(f"{self.prefix}/data/{t.storage}")
        count = math.prod(t.shape)
        first, span = t.offset, count
        if t.stride is not None and count:                     # read every element the view touches
            span = sum((n - 1) * s for n, s in zip(t.shape, t.stride)) + 1
        if entry.compress_type == zipfile.ZIP_STORED:          # what torch writes: read just the range
            if t.storage not in self._data_start:
                self._data_start[t.storage] = self._entry_start(entry, where)
            flat = _read_float32(self.fh, self._data_start[t.storage] + first * ITEMSIZE[t.dtype], span,
                                 t.dtype, where=where)
        else:                                                  # other zip writers may compress
            raw = np.frombuffer(self._read_entry(entry.filename), _RAW_DTYPE[t.dtype])[first:first + span]
            flat = bf16_to_float32(raw) if t.dtype == "bf16" else raw.astype(np.float32)
        if t.stride is None:
            return flat.reshape(t.shape)
        view = np.lib.stride_tricks.as_strided(flat, t.shape, [s * 4 for s in t.stride], writeable=False)
        return view.copy()

    def close(self) -> None:
        self.fh.close()
        self.zip.close()


# -- the folder -----------------------------------------------------------------------------------

class Checkpoint:
    """An open checkpoint folder. Tensor names are Hugging Face's; `load` returns float32."""

    def __init__(self, path: Path, config: dict, files: list, index: dict):
        self.path = path
        self.config = config
        self._files = files                      # _SafetensorsFile | _TorchZipFile, one per weights file
        self._index = index                      # tensor name -> the file that holds it
        self.weight_files = [f.path for f in files]
        self.weights_bytes = sum(p.stat().st_size for p in self.weight_files)
        self._sha256: str | None = None

    @property
    def meta_dir(self) -> Path:
        """Where the tokenizer and generation files are: the folder itself (a GGUF rebuilds them elsewhere)."""
        return self.path

    def carried(self, name: str):
        """Safetensors weights are floats: every tensor goes through the recipe's quantizer."""
        return None

    def names(self) -> list[str]:
        return sorted(self._index)

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def info(self, name: str) -> TensorInfo:
        if name not in self._index:
            raise CheckpointError(f"{self.path}: no tensor named '{name}' in the weights")
        return self._index[name].tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.info(name).shape

    def dtype(self, name: str) -> str:
        return self.info(name).dtype

    def load(self, name: str) -> np.ndarray:
        """The tensor as float32; reads only its own bytes."""
        self.info(name)
        return self._index[name].load(name)

    def sha256(self) -> str:
        """sha256 of the weight files' bytes, concatenated in `weight_files` order (cached)."""
        if self._sha256 is None:
            self._sha256 = files_sha256(self.weight_files)
        return self._sha256

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {len(self._index)} tensors, {self.weights_bytes} bytes)"


def _read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: not found; a Hugging Face checkpoint folder needs config.json")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    return config


def _open_sharded(index_path: Path, reader) -> tuple[list, dict]:
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path.name}: not a valid index with a weight_map ({e})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path.name}: weight_map is not a JSON object")
    shards: dict[str, object] = {}
    index = {}
    try:
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
                raise CheckpointError(f"{index_path.name}: tensor '{name}' maps to {shard!r}, "
                                      f"which is not a file name in the checkpoint folder")
            if shard not in shards:
                shard_path = index_path.parent / shard
                if not shard_path.is_file():
                    raise CheckpointError(f"{shard_path}: shard listed in {index_path.name} is missing")
                shards[shard] = reader(shard_path)
            if name not in shards[shard].tensors:
                raise CheckpointError(f"{shard}: tensor '{name}' listed in {index_path.name} is not in this shard")
            index[name] = shards[shard]
    except CheckpointError:
        for f in shards.values():
            f.close()
        raise
    return [shards[s] for s in sorted(shards)], index


def open_checkpoint(path) -> Checkpoint:
    """Open a Hugging Face checkpoint folder: config.json plus one of WEIGHT_FILES."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder not found" if not path.exists()
                              else f"{path}: not a folder; give the checkpoint folder")
    config = _read_config(path)
    for fname in WEIGHT_FILES:
        p = path / fname
        if not p.is_file():
            continue
        reader = _SafetensorsFile if "safetensors" in fname else _TorchZipFile
        if fname.endswith(".index.json"):
            files, index = _open_sharded(p, reader)
        else:
            files = [reader(p)]
            index = {name: files[0] for name in files[0].tensors}
        return Checkpoint(path, config, files, index)
    raise CheckpointError(f"{path}: no weights found; looked for {', '.join(WEIGHT_FILES)}")
