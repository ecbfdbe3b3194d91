"""Known answers for the checkpoint readers (export/checkpoint.py) beyond tests/test_checkpoint.py: the
exact one-line error of each bad input, the boundaries of the header and storage checks, chunked and
compressed reads, a tensor file that shrinks after opening, and the restricted unpickler's argument
checks. Written from the surviving mutants of benchmarks/mutation/run_mutation.py."""
from __future__ import annotations

import hashlib
import json
import struct
import zipfile

import numpy as np
import pytest
from test_checkpoint import _folder, _i, _s, _tensor, _torch_zip, _write_safetensors

from edge_llm.errors import CheckpointError, UnsafePickleError
from edge_llm.export import checkpoint
from edge_llm.export.checkpoint import float32_to_bf16, open_checkpoint


def _st(tmp_path, raw: bytes):
    d = _folder(tmp_path)
    (d / "model.safetensors").write_bytes(raw)
    return d


def _header(h: dict, data: bytes = b"") -> bytes:
    text = json.dumps(h).encode()
    return struct.pack("<Q", len(text)) + text + data


# ---- safetensors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    (b"\x01\x00\x00", "model.safetensors: 3 bytes is too short for a safetensors file"),
    (struct.pack("<Q", 2**63 + 2) + b"{}", r"model.safetensors: header length 9223372036854775810 does not fit a "
                                           r"10-byte file"),
    (struct.pack("<Q", 4) + b"{}", "model.safetensors: header length 4 does not fit a 10-byte file"),
    (struct.pack("<Q", 2) + b"{,", r"model.safetensors: header is not valid JSON \("),
    (struct.pack("<Q", 2) + b"[]", "model.safetensors: header is not a JSON object"),
    (_header({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
     r"model.safetensors: tensor 'w': malformed header entry \{'dtype': 'F32', 'shape': \[-1\]"),
    (_header({"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]}}, bytes(4)),
     "model.safetensors: tensor 'w': malformed header entry"),
    (_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]}}, bytes(4)),
     "model.safetensors: tensor 'w': malformed header entry"),
    (_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": "04"}}, bytes(4)),
     "model.safetensors: tensor 'w': malformed header entry"),
    (_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 6]}}, bytes(6)),
     r"model.safetensors: tensor 'b': header gives 2 bytes but shape \[2\] of F32 needs 8"),
])
def test_safetensors_errors(tmp_path, raw, message):
    with pytest.raises(CheckpointError, match="^" + message):
        open_checkpoint(_st(tmp_path, raw))


def test_header_filling_the_file_exactly_is_fine(tmp_path):
    with open_checkpoint(_st(tmp_path, struct.pack("<Q", 2) + b"{}")) as ckpt:
        assert ckpt.names() == []


def test_tensor_info_and_checkpoint_know_their_files(tmp_path):
    d = _folder(tmp_path)
    _write_safetensors(d / "model.safetensors", {"w": np.ones((2, 2), np.float32)})
    with open_checkpoint(d) as ckpt:
        assert ckpt.path == d and ckpt.info("w").file == d / "model.safetensors"
        assert repr(ckpt) == f"Checkpoint({str(d)!r}, 1 tensors, {ckpt.weights_bytes} bytes)"
        assert ckpt.sha256() == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()


def test_source_hash_reads_in_bounded_chunks(tmp_path, monkeypatch):
    d = _folder(tmp_path)
    _write_safetensors(d / "model.safetensors", {"w": np.ones(64, np.float32)})
    sizes = []

    class Recording:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            sizes.append(n)
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    with open_checkpoint(d) as ckpt:
        monkeypatch.setattr(checkpoint, "open", lambda p, mode: Recording(open(p, mode)), raising=False)
        assert ckpt.sha256() == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert sizes and all(isinstance(n, int) and 0 < n <= 64 << 20 for n in sizes)    # never the whole file at once


def test_file_that_shrinks_after_opening(tmp_path):
    d = _folder(tmp_path)
    _write_safetensors(d / "model.safetensors", {"w": np.ones(50_000, np.float32)})   # beyond read buffering
    with open_checkpoint(d) as ckpt:
        raw = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(raw[:-4])
        with pytest.raises(CheckpointError, match=r"^model.safetensors: tensor 'w': file ends inside the tensor's "
                                                  r"data \(truncated download\?\)$"):
            ckpt.load("w")


def test_reads_in_chunks_are_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "_READ_CHUNK", 3)
    x = np.arange(10, dtype=np.float32) - 4.5
    d = _folder(tmp_path)
    _write_safetensors(d / "model.safetensors", {"w": x})
    with open_checkpoint(d) as ckpt:
        np.testing.assert_array_equal(ckpt.load("w"), x)


# ---- pytorch_model.bin -----------------------------------------------------------------------------

def _bin(tmp_path, pkl: bytes, storages: dict, name: str = "ckpt", **zip_kw):
    d = _folder(tmp_path, name)
    if zip_kw:
        with zipfile.ZipFile(d / "pytorch_model.bin", "w", **zip_kw) as zf:
            zf.writestr("archive/data.pkl", pkl)
            for key, raw in storages.items():
                zf.writestr(f"archive/data/{key}", raw)
    else:
        _torch_zip(d / "pytorch_model.bin", pkl, storages)
    return d


def _state(*entries: bytes) -> bytes:
    return b"\x80\x02}(" + b"".join(entries) + b"u."


BASE = np.arange(6, dtype=np.float32).reshape(2, 3)
STORE = {"0": float32_to_bf16(BASE).tobytes()}


def test_compressed_entries_are_read_whole(tmp_path):
    pkl = _state(_s("w"), _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1)),
                 _s("t"), _tensor("BFloat16Storage", "0", 6, 0, (3, 2), (1, 3)))
    d = _bin(tmp_path, pkl, STORE, compression=zipfile.ZIP_DEFLATED)
    with open_checkpoint(d) as ckpt:
        assert ckpt.info("w").file == d / "pytorch_model.bin"
        np.testing.assert_array_equal(ckpt.load("w"), BASE)
        np.testing.assert_array_equal(ckpt.load("t"), BASE.T)


def test_small_transposes_are_not_taken_for_contiguous(tmp_path):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    pkl = _state(_s("t"), _tensor("FloatStorage", "0", 4, 0, (2, 2), (1, 2)))
    with open_checkpoint(_bin(tmp_path, pkl, {"0": x.tobytes()})) as ckpt:
        np.testing.assert_array_equal(ckpt.load("t"), x.T)


@pytest.mark.parametrize("offset, ok", [(0, True), (1, False)])
def test_storage_end_boundary(tmp_path, offset, ok):
    pkl = _state(_s("w"), _tensor("BFloat16Storage", "0", 6, offset, (2, 3), (3, 1)))
    d = _bin(tmp_path, pkl, STORE)
    if ok:
        open_checkpoint(d).close()
    else:
        with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: tensor 'w': shape \[2, 3\] at offset 1 runs "
                                                  r"past the end of storage 0$"):
            open_checkpoint(d)


def test_parameters_unwrap_to_their_tensor(tmp_path):
    param = (b"ctorch._utils\n_rebuild_parameter\n(" + _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1))
             + b"\x89ccollections\nOrderedDict\n)RtR")
    with open_checkpoint(_bin(tmp_path, _state(_s("w"), param), STORE)) as ckpt:
        np.testing.assert_array_equal(ckpt.load("w"), BASE)
    bad = b"ctorch._utils\n_rebuild_parameter\n(" + _i(3) + b"\x89ccollections\nOrderedDict\n)RtR"
    with pytest.raises(CheckpointError, match=r"data.pkl is corrupt or not a state dict \(malformed "
                                              r"_rebuild_parameter arguments\)"):
        open_checkpoint(_bin(tmp_path, _state(_s("w"), bad), STORE, name="b"))


def _rebuild(storage: bytes, offset: bytes, size: bytes, stride: bytes) -> bytes:
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + offset + size + stride
            + b"\x89ccollections\nOrderedDict\n)RtR")


GOOD_STORAGE = b"(" + _s("storage") + b"ctorch\nBFloat16Storage\n" + _s("0") + _s("cpu") + _i(6) + b"tQ"


@pytest.mark.parametrize("args", [
    (_s("not a storage"), _i(0), b"(" + _i(6) + b"t", b"(" + _i(1) + b"t"),
    (GOOD_STORAGE, _i(-1), b"(" + _i(6) + b"t", b"(" + _i(1) + b"t"),                # negative offset
    (GOOD_STORAGE, _s("0"), b"(" + _i(6) + b"t", b"(" + _i(1) + b"t"),               # offset not an int
    (GOOD_STORAGE, _i(0), b"(" + _i(-6) + b"t", b"(" + _i(1) + b"t"),                # negative size
    (GOOD_STORAGE, _i(0), b"(" + _i(6) + b"t", b"(" + _i(-1) + b"t"),                # negative stride
    (GOOD_STORAGE, _i(0), b"]" + _i(6) + b"a", b"(" + _i(1) + b"t"),                 # size not a tuple
    (GOOD_STORAGE, _i(0), b"(" + _i(2) + _i(3) + b"t", b"(" + _i(1) + b"t"),         # size and stride lengths
])
def test_malformed_rebuild_arguments(tmp_path, args):
    with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: data.pkl is corrupt or not a state dict "
                                              r"\(malformed _rebuild_tensor_v2 arguments\)$"):
        open_checkpoint(_bin(tmp_path, _state(_s("w"), _rebuild(*args)), STORE))


def test_zero_sized_dimensions_and_empty_storages_are_fine(tmp_path):
    empty = _rebuild(b"(" + _s("storage") + b"ctorch\nFloatStorage\n" + _s("1") + _s("cpu") + _i(0) + b"tQ",
                     _i(0), b"(" + _i(0) + _i(3) + b"t", b"(" + _i(3) + _i(1) + b"t")
    with open_checkpoint(_bin(tmp_path, _state(_s("e"), empty), {"1": b""})) as ckpt:
        assert ckpt.load("e").shape == (0, 3)


@pytest.mark.parametrize("pid", [
    b"(" + _s("storage") + b"ctorch\nBFloat16Storage\n" + _s("0") + _s("cpu") + _i(-6) + b"tQ",   # numel < 0
    b"(" + _s("storage") + b"ctorch\nBFloat16Storage\n" + _i(0) + _s("cpu") + _i(6) + b"tQ",      # key not str
    b"(" + _s("storage") + _s("BFloat16Storage") + _s("0") + _s("cpu") + _i(6) + b"tQ",           # type not a storage
    b"(" + _s("blob") + b"ctorch\nBFloat16Storage\n" + _s("0") + _s("cpu") + _i(6) + b"tQ",       # not 'storage'
    b"(" + _s("storage") + b"ctorch\nBFloat16Storage\n" + _s("0") + _i(6) + b"tQ",                # 4 fields
    _s("storage") + b"Q",                                                                          # not a tuple
])
def test_malformed_persistent_ids(tmp_path, pid):
    tensor = _rebuild(pid, _i(0), b"(" + _i(6) + b"t", b"(" + _i(1) + b"t")
    with pytest.raises(CheckpointError, match=r"data.pkl is corrupt or not a state dict \(unexpected persistent id"):
        open_checkpoint(_bin(tmp_path, _state(_s("w"), tensor), STORE))


@pytest.mark.parametrize("glob, error, message", [
    (b"ctorch\nload\n", UnsafePickleError, r"refused to unpickle global 'torch.load' \(only weights-file globals"),
    (b"cnumpy\nFloatStorage\n", UnsafePickleError, r"refused to unpickle global 'numpy.FloatStorage'"),
    (b"ctorch\nLongStorage\n", CheckpointError, r"^pytorch_model.bin: tensors stored as torch.LongStorage are not "
                                                r"supported \(only BFloat16Storage, HalfStorage, FloatStorage\)$"),
    (b"ctorch\nIntStorage\n", CheckpointError, "tensors stored as torch.IntStorage are not supported"),
])
def test_global_refusals_name_the_global(tmp_path, glob, error, message):
    with pytest.raises(error, match=message) as info:
        open_checkpoint(_bin(tmp_path, b"\x80\x02" + glob + b".", STORE))
    assert (type(info.value) is UnsafePickleError) == (error is UnsafePickleError)


@pytest.mark.parametrize("pkl, message", [
    (b"\x80\x02]q\x00.", r"^pytorch_model.bin: data.pkl holds a list, not a state dict$"),
    (_state(_i(5), _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1))),
     r"^pytorch_model.bin: entry '5' of the state dict is not a tensor$"),
    (_state(_s("w"), _i(5)), r"^pytorch_model.bin: entry 'w' of the state dict is not a tensor$"),
])
def test_state_dict_shape_errors(tmp_path, pkl, message):
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(_bin(tmp_path, pkl, STORE))


def test_big_endian_and_corrupt_local_headers(tmp_path):
    pkl = _state(_s("w"), _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1)))
    d = _folder(tmp_path)
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"big")
        zf.writestr("archive/data/0", STORE["0"])
    with pytest.raises(CheckpointError, match="^pytorch_model.bin: big-endian checkpoints are not supported$"):
        open_checkpoint(d)
    d = _bin(tmp_path, pkl, STORE, name="c")
    raw = bytearray((d / "pytorch_model.bin").read_bytes())
    with zipfile.ZipFile(d / "pytorch_model.bin") as zf:
        at = zf.getinfo("archive/data/0").header_offset
    raw[at:at + 4] = b"XXXX"
    (d / "pytorch_model.bin").write_bytes(bytes(raw))
    with open_checkpoint(d) as ckpt:
        with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: tensor 'w': bad zip local header \(corrupt "
                                                  r"file\)$"):
            ckpt.load("w")


# ---- the folder ------------------------------------------------------------------------------------

def test_folder_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="file: not a folder; give the checkpoint folder$"):
        open_checkpoint(tmp_path / "file")
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"cfg/config.json: expected a JSON object, got list$"):
        open_checkpoint(d)


@pytest.mark.parametrize("index, message", [
    ("{", r"^model.safetensors.index.json: not a valid index with a weight_map \("),
    (json.dumps({"weight_map": [1]}), "^model.safetensors.index.json: weight_map is not a JSON object$"),
    (json.dumps({"weight_map": {"a": ""}}), "tensor 'a' maps to '', which is not a file name in the checkpoint folder"),
    (json.dumps({"weight_map": {"a": ".."}}), "tensor 'a' maps to '..', which is not a file name"),
    (json.dumps({"weight_map": {"zz": "s.safetensors"}}), "^s.safetensors: tensor 'zz' listed in "
                                                           "model.safetensors.index.json is not in this shard$"),
])
def test_sharded_index_errors(tmp_path, index, message):
    d = _folder(tmp_path)
    _write_safetensors(d / "s.safetensors", {"a": np.ones(2, np.float32)})
    (d / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(d)


def test_compressed_fp16_and_fp32_entries(tmp_path):
    half = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    single = np.array([1.5, -2.25, 3e5, 7.0], np.float32)
    pkl = _state(_s("h"), _tensor("HalfStorage", "1", 6, 0, (3, 2), (1, 3)),
                 _s("f"), _tensor("FloatStorage", "2", 4, 0, (2, 2), (2, 1)))
    d = _bin(tmp_path, pkl, {"1": half.tobytes(), "2": single.tobytes()}, compression=zipfile.ZIP_DEFLATED)
    with open_checkpoint(d) as ckpt:
        np.testing.assert_array_equal(ckpt.load("h"), half.T.astype(np.float32))
        np.testing.assert_array_equal(ckpt.load("f"), single.reshape(2, 2))


def test_unreadable_entries_and_truncated_bins_name_the_tensor(tmp_path):
    pkl = _state(_s("w"), _tensor("FloatStorage", "0", 4096, 0, (4096,), (1,)))
    data = np.arange(4096, dtype=np.float32)
    d = _bin(tmp_path, pkl, {"0": data.tobytes()}, compression=zipfile.ZIP_DEFLATED)
    raw = bytearray((d / "pytorch_model.bin").read_bytes())
    with zipfile.ZipFile(d / "pytorch_model.bin") as zf:
        info = zf.getinfo("archive/data/0")
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + 20
    raw[at:at + 8] = bytes(8)                                          # corrupt the deflated stream
    (d / "pytorch_model.bin").write_bytes(bytes(raw))
    with open_checkpoint(d) as ckpt:
        with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: cannot read archive/data/0 \("):
            ckpt.load("w")
    d = _bin(tmp_path, pkl, {"0": data.tobytes()}, name="stored")
    with open_checkpoint(d) as ckpt:
        full = (d / "pytorch_model.bin").read_bytes()
        start = full.index(data.tobytes()[:64])
        (d / "pytorch_model.bin").write_bytes(full[:start + 100])         # shrinks after opening
        with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: tensor 'w': file ends inside the tensor's "
                                                  r"data"):
            ckpt.load("w")


def test_stored_entries_are_read_by_range_not_whole(tmp_path):
    """A stored .bin entry is read from its own offset, one tensor's bytes: never the rest of a 5 GB file."""
    pkl = _state(_s("a"), _tensor("FloatStorage", "0", 2048, 0, (2048,), (1,)),
                 _s("b"), _tensor("FloatStorage", "1", 2048, 0, (2048,), (1,)))
    d = _bin(tmp_path, pkl, {"0": bytes(8192), "1": bytes(8192)})
    with open_checkpoint(d) as ckpt:
        reader = ckpt._index["a"]
        real, sizes = reader.fh, []

        class Recording:
            def seek(self, *a):
                return real.seek(*a)

            def read(self, n=-1):
                sizes.append(n)
                return real.read(n)

            def readinto(self, b):
                sizes.append(len(b))
                return real.readinto(b)

        reader.fh = Recording()
        ckpt.load("a"), ckpt.load("b")
        reader.fh = real
    assert sizes and all(n is not None and 0 <= n <= 8192 for n in sizes), sizes


def test_persistent_id_errors_quote_the_id(tmp_path):
    tensor = _rebuild(_s("storage") + b"Q", _i(0), b"(" + _i(6) + b"t", b"(" + _i(1) + b"t")
    with pytest.raises(CheckpointError, match=r"\(unexpected persistent id storage\)$"):
        open_checkpoint(_bin(tmp_path, _state(_s("w"), tensor), STORE))


@pytest.mark.parametrize("field, offset, value, message", [
    ("flags", 8, b"\x01\x00", r"cannot read archive/data.pkl \(File 'archive/data.pkl' is encrypted"),
    ("method", 10, b"\x63\x00", r"cannot read archive/data.pkl \(That compression method is not supported\)"),
    ("version", 6, b"\x40\x00", r"not a readable PyTorch zip archive \(zip file version 6.4\)"),
])
def test_zip_features_we_cannot_read_are_one_line_errors(tmp_path, field, offset, value, message):
    """Found by tests/test_fuzz_checkpoint.py: these used to escape as zlib/NotImplemented/RuntimeError."""
    pkl = _state(_s("w"), _tensor("BFloat16Storage", "0", 6, 0, (2, 3), (3, 1)))
    d = _bin(tmp_path, pkl, STORE)
    raw = bytearray((d / "pytorch_model.bin").read_bytes())
    at = raw.index(b"PK\x01\x02")                                  # the central directory entry of data.pkl
    raw[at + offset:at + offset + 2] = value
    (d / "pytorch_model.bin").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(d)


def test_pickle_that_exhausts_memory_is_a_corrupt_file(tmp_path):
    """Found by the fuzz campaign: a LONG_BINPUT memo index near 2^32 made the unpickler raise MemoryError."""
    pkl = b"\x80\x02}(" + _s("w") + b"r\xff\xff\xff\xff" + b"u."
    with pytest.raises(CheckpointError, match=r"^pytorch_model.bin: data.pkl is corrupt or not a state dict "
                                              r"\((MemoryError|.+)\)$"):
        open_checkpoint(_bin(tmp_path, pkl, STORE))
