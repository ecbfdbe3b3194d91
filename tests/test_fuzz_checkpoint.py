"""Property-based fuzzing of the checkpoint readers (export/checkpoint.py).

Whatever the bytes, opening a checkpoint and loading every tensor either works or raises
CheckpointError (UnsafePickleError for a refused global): never another exception, never a hang,
never a forbidden global called. What opens is what the format promises: safetensors tensors tile
the data region exactly, every load returns its shape.
"""
from __future__ import annotations

import json
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzz_settings import fuzz
from hypothesis import given
from hypothesis import strategies as st
from test_checkpoint import _i, _s, _tensor  # the pickle-opcode builders of the reader's own tests

from edge_llm.errors import CheckpointError, UnsafePickleError
from edge_llm.export.checkpoint import ITEMSIZE, bf16_to_float32, float32_to_bf16, open_checkpoint

CONFIG = json.dumps({"architectures": ["MiniCPMForCausalLM"]})
ST_DTYPES = {"BF16": 2, "F16": 2, "F32": 4}


_TMP = tempfile.TemporaryDirectory(prefix="edge-llm-fuzz-ckpt-")


def _folder(kind: str = "st") -> Path:
    """One folder per weights format, reused: each example overwrites its file (no litter in /tmp)."""
    d = Path(_TMP.name) / kind
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(CONFIG)
    return d


def _safetensors(header: dict | bytes, data: bytes, *, length: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def _open_and_load_all(folder: Path) -> dict:
    """Open, load every tensor; returns {name: array}. Raises only what the reader may raise."""
    with open_checkpoint(folder) as ckpt:
        out = {}
        for name in ckpt.names():
            a = ckpt.load(name)
            assert a.dtype == np.float32 and a.shape == ckpt.shape(name), name
            out[name] = a
        return out


def _check_tiling(folder: Path) -> None:
    """What opened must tile the data region exactly (the safetensors rule)."""
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    with open_checkpoint(folder) as ckpt:
        spans = sorted((ckpt.info(k).offset - 8 - n, ckpt.info(k).offset - 8 - n
                        + int(np.prod(ckpt.shape(k))) * ITEMSIZE[ckpt.dtype(k)]) for k in ckpt.names())
    end = 0
    for begin, stop in spans:
        assert begin == end, spans
        end = stop
    assert end == len(raw) - 8 - n


# -- the tiling rule, by hand --------------------------------------------------------------------

def _two(b_offsets, data_len=16):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": b_offsets}}
    d = _folder()
    (d / "model.safetensors").write_bytes(_safetensors(header, bytes(data_len)))
    return d


def test_overlapping_offsets_are_refused_naming_the_tensor():
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'b': data_offsets \[4, 12\] overlap "
                                              r"tensor 'a'"):
        open_checkpoint(_two([4, 12]))
    with pytest.raises(CheckpointError, match=r"tensor 'b'.* overlap tensor 'a'"):   # the very same bytes
        open_checkpoint(_two([0, 8]))


def test_gapped_offsets_are_refused_naming_the_tensor():
    with pytest.raises(CheckpointError, match=r"tensor 'b': data_offsets start at 12, leaving bytes \[8, 12\)"):
        open_checkpoint(_two([12, 20], data_len=20))
    with pytest.raises(CheckpointError, match=r"tensor 'a': data_offsets start at 4"):
        d = _folder()
        (d / "model.safetensors").write_bytes(_safetensors(
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
        open_checkpoint(d)


def test_trailing_data_is_refused():
    with pytest.raises(CheckpointError, match=r"4 data bytes after the last tensor \('b', ending at 16\)"):
        open_checkpoint(_two([8, 16], data_len=20))
    d = _folder()
    (d / "model.safetensors").write_bytes(_safetensors({"__metadata__": {"format": "pt"}}, bytes(3)))
    with pytest.raises(CheckpointError, match=r"3 data bytes after the header \(no tensors\)"):
        open_checkpoint(d)


def test_tiled_in_any_order_with_empty_tensors_opens():
    header = {"z": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "e": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [8, 8]},
              "a": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},
              "__metadata__": {"format": "pt"}}
    data = np.array([1.5, -2.0], np.float32).tobytes() + float32_to_bf16(np.array([1, 2, 3], np.float32)).tobytes()
    d = _folder()
    (d / "model.safetensors").write_bytes(_safetensors(header, data))
    got = _open_and_load_all(d)
    assert got["z"].tolist() == [1.5, -2.0] and got["a"].tolist() == [1, 2, 3] and got["e"].shape == (0, 3)
    _check_tiling(d)


# -- properties ---------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
tensor_specs = st.lists(st.tuples(names, st.sampled_from(sorted(ST_DTYPES)),
                                  st.lists(st.integers(0, 4), max_size=3)),
                        max_size=5, unique_by=lambda t: t[0])


@fuzz(80)
@given(specs=tensor_specs, order=st.randoms(use_true_random=False))
def test_valid_files_open_and_read_back_exactly(specs, order):
    specs = [s for s in specs if s[0] != "__metadata__"]
    rng = np.random.default_rng(0)
    header, blobs, off, want = {}, [], 0, {}
    layout = list(specs)
    order.shuffle(layout)                      # the data order need not be the header order
    for name, dtype, shape in layout:
        x = rng.standard_normal(int(np.prod(shape))).astype(np.float32)
        raw = {"BF16": float32_to_bf16(x).tobytes(), "F16": x.astype(np.float16).tobytes(), "F32": x.tobytes()}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        want[name] = (dtype, x)
        blobs.append(raw)
        off += len(raw)
    header = dict(sorted(header.items(), key=lambda kv: order.random()))
    d = _folder()
    (d / "model.safetensors").write_bytes(_safetensors(header, b"".join(blobs)))
    got = _open_and_load_all(d)
    assert sorted(got) == sorted(want)
    for name, (dtype, x) in want.items():
        expect = {"BF16": lambda: bf16_to_float32(float32_to_bf16(x)),
                  "F16": lambda: x.astype(np.float16).astype(np.float32), "F32": lambda: x}[dtype]()
        np.testing.assert_array_equal(got[name].ravel(), expect, err_msg=name)
    _check_tiling(d)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                          max_size=3), max_leaves=6)
offsets = st.integers(-3, 40)
entries = st.one_of(
    st.fixed_dictionaries({"dtype": st.sampled_from(["BF16", "F16", "F32", "I64", "bf16", ""]),
                           "shape": st.lists(st.integers(-1, 5), max_size=3),
                           "data_offsets": st.lists(offsets, min_size=2, max_size=2)}),
    st.fixed_dictionaries({}, optional={"dtype": json_values, "shape": json_values, "data_offsets": json_values}),
    json_values,
)


@fuzz(150)
@given(header=st.dictionaries(names, entries, max_size=4), data_len=st.integers(0, 40))
def test_random_headers_open_or_raise_checkpoint_error(header, data_len):
    d = _folder()
    (d / "model.safetensors").write_bytes(_safetensors(header, bytes(range(data_len))))
    try:
        _open_and_load_all(d)
    except CheckpointError:
        return
    _check_tiling(d)


def _valid_file() -> bytes:
    x = np.arange(6, dtype=np.float32)
    header = {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}
    return _safetensors(header, float32_to_bf16(x).tobytes() + np.ones(2, np.float32).tobytes())


@fuzz(300)
@given(edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 200)), extra=st.binary(max_size=8))
def test_mutated_bytes_open_or_raise_checkpoint_error(edits, cut, extra):
    raw = bytearray(_valid_file())
    for at, value in edits:
        raw[at % len(raw)] = value
    raw = bytes(raw[:cut]) + extra if cut is not None else bytes(raw) + extra
    d = _folder()
    (d / "model.safetensors").write_bytes(raw)
    try:
        _open_and_load_all(d)
    except CheckpointError:
        return
    _check_tiling(d)


# -- pytorch_model.bin: the restricted unpickler -----------------------------------------------------

VALID_PKL = b"\x80\x02}(" + _s("w") + _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1)) + b"u."

# Opcode snippets an attacker or a broken writer could string together: globals allowed and not,
# REDUCE/BUILD/INST/OBJ/NEWOBJ/STACK_GLOBAL, persistent ids, memo ops, containers, stop.
SNIPPETS = [
    b"ctorch._utils\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_parameter\n", b"ccollections\nOrderedDict\n",
    b"ctorch\nBFloat16Storage\n", b"ctorch\nLongStorage\n", b"cos\nsystem\n", b"cbuiltins\neval\n",
    b"cbuiltins\ngetattr\n", b"csubprocess\nPopen\n", b"(" + _s("storage") + b"ctorch\nFloatStorage\n" + _s("0")
    + _s("cpu") + _i(2) + b"tQ", _s("torch._utils") + _s("_rebuild_tensor_v2") + b"\x93", _s("os") + _s("system")
    + b"\x93", b"R", b"b", b"\x81", b"\x92", b"i__builtin__\neval\n", b"o", b"(", b")", b"t", b"}", b"]", b"e",
    b"u", b"s", b"a", b"\x85", b"\x86", b"\x87", b"N", b"\x88", b"\x89", b"q\x00", b"h\x00", b"r\x00\x00\x00\x00",
    b"j\x00\x00\x00\x00", b"0", b"1", b"2", b"P0\n", b"Q", _i(0), _i(-1), _i(2**31 - 1), b"K\x05", b"M\xff\xff",
    _s("w"), _s(""), b"\x8c\x01w", b"\x95" + bytes(8), b"\x80\x05", b".",
]


def _run_unpickle(pkl: bytes, storages: dict[str, bytes]) -> None:
    d = _folder("bin")
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
    try:
        _open_and_load_all(d)
    except CheckpointError:       # UnsafePickleError is one
        pass


@fuzz(300)
@given(parts=st.lists(st.sampled_from(SNIPPETS), max_size=24), proto=st.sampled_from([b"", b"\x80\x02", b"\x80\x04"]))
def test_random_opcode_streams_are_refused_or_read(parts, proto):
    with pytest.MonkeyPatch.context() as mp:
        import builtins
        import os
        import subprocess

        def boom(*a, **k):
            raise AssertionError(f"a forbidden global ran with {a!r}")
        for mod, name in ((os, "system"), (subprocess, "Popen"), (builtins, "eval")):
            mp.setattr(mod, name, boom)
        _run_unpickle(proto + b"".join(parts) + b".", {"0": bytes(12)})


@fuzz(150)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_PKL) - 1), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(1, len(VALID_PKL))), storage=st.integers(0, 16))
def test_mutated_state_dict_pickles_are_refused_or_read(edits, cut, storage):
    pkl = bytearray(VALID_PKL)
    for at, value in edits:
        pkl[at] = value
    _run_unpickle(bytes(pkl[:cut]), {"0": bytes(storage)})


def test_valid_pickle_reads_and_forbidden_global_is_refused():
    d = _folder("bin")
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", VALID_PKL)
        zf.writestr("archive/data/0", float32_to_bf16(np.arange(6, dtype=np.float32)).tobytes())
    assert _open_and_load_all(d)["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    bad = VALID_PKL.replace(b"ccollections\nOrderedDict\n", b"cos\nsystem\n")
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", bad)
    with pytest.raises(UnsafePickleError, match="refused to unpickle global 'os.system'"):
        open_checkpoint(d)
    assert pickle.loads(b"\x80\x02K\x05.") == 5      # the real pickle module is untouched


def _valid_bin(compression: int) -> bytes:
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        zf.writestr("archive/data.pkl", VALID_PKL)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/data/0", float32_to_bf16(np.arange(6, dtype=np.float32)).tobytes() * 50)
    return buf.getvalue()


VALID_BINS = {c: _valid_bin(c) for c in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)}


@fuzz(150)
@given(compression=st.sampled_from(sorted(VALID_BINS)), data=st.data())
def test_corrupted_bin_archives_are_refused_or_read(compression, data):
    """Flipped bytes anywhere in a pytorch_model.bin (zip headers, the pickle, a deflated storage)."""
    raw = bytearray(VALID_BINS[compression])
    for at, value in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                                        min_size=1, max_size=4)):
        raw[at] = value
    d = _folder("bin")
    (d / "pytorch_model.bin").write_bytes(bytes(raw))
    try:
        _open_and_load_all(d)
    except CheckpointError:
        pass
