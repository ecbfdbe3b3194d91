"""export/checkpoint.py: reading HF checkpoint folders without torch, and refusing bad ones."""
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_llm.errors import CheckpointError, UnsafePickleError
from edge_llm.export.checkpoint import bf16_to_float32, float32_to_bf16, open_checkpoint
from edge_llm.export.synth import resolve_shape, synthetic_tensor, tensor_shapes, write_synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY = SHARED / "fixtures" / "minicpm-tiny"
needs_tiny = pytest.mark.skipif(not (TINY / "pytorch_model.bin").is_file(),
                                reason=f"real fixture {TINY} not present (../shared is absent)")
SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 48, "vocab_size": 64}


def _folder(tmp_path, name="ckpt", config=None) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config or {"architectures": ["MiniCPMForCausalLM"]}))
    return d


def _write_safetensors(path: Path, tensors: dict, *, header_patch=None) -> None:
    """Minimal safetensors writer for tests: float32 arrays stored as BF16."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        raw = float32_to_bf16(a).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if header_patch:
        header_patch(header)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# -- pickle opcodes, to build data.pkl files torch would write (or an attacker would) -----------------

def _s(v: str) -> bytes:
    return b"X" + struct.pack("<I", len(v.encode())) + v.encode()


def _i(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def _tensor(storage_type: str, key: str, numel: int, offset: int, shape, stride) -> bytes:
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(" + _s("storage") + f"ctorch\n{storage_type}\n".encode()
            + _s(key) + _s("cpu") + _i(numel) + b"tQ" + _i(offset) + b"(" + b"".join(map(_i, shape)) + b"t"
            + b"(" + b"".join(map(_i, stride)) + b"t" + b"\x89ccollections\nOrderedDict\n)RtR")


def _torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", b"3\n")


# -- the real fixture -------------------------------------------------------------------------------

@needs_tiny
def test_real_fixture_loads():
    with open_checkpoint(TINY) as ckpt:
        names = ckpt.names()
        assert len(names) == 2 + 9 * 8 and names == sorted(names)
        assert ckpt.config["hidden_size"] == 384
        assert ckpt.weight_files == [TINY / "pytorch_model.bin"]
        assert ckpt.weights_bytes == (TINY / "pytorch_model.bin").stat().st_size
        emb = ckpt.load("model.embed_tokens.weight")
        assert ckpt.shape("model.embed_tokens.weight") == emb.shape == (8192, 384)
        assert all(ckpt.dtype(n) == "bf16" for n in names)
        assert emb.dtype == np.float32 and np.isfinite(emb).all() and 0.01 < emb.std() < 1.0
        q = ckpt.load("model.layers.3.self_attn.k_proj.weight")
        assert q.shape == (128, 384) and np.isfinite(q).all() and 0.005 < q.std() < 1.0
        norm = ckpt.load("model.norm.weight")
        assert norm.shape == (384,) and 0.1 < norm.mean() < 10
        assert "model.norm.weight" in ckpt and "lm_head.weight" not in ckpt
        digest = ckpt.sha256()
        assert len(digest) == 64 and ckpt.sha256() == digest


# -- round trips ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_synthetic_round_trip(tmp_path, fmt):
    d = write_synthetic(tmp_path / fmt, shape=SMALL, weight_format=fmt, seed=5)
    shapes = tensor_shapes(resolve_shape(SMALL))
    with open_checkpoint(d) as ckpt:
        assert ckpt.names() == sorted(shapes)
        assert [p.name for p in ckpt.weight_files] == ["pytorch_model.bin" if fmt == "bin" else "model.safetensors"]
        for name, shape in shapes.items():
            assert ckpt.shape(name) == shape and ckpt.dtype(name) == "bf16"
            np.testing.assert_array_equal(ckpt.load(name), synthetic_tensor(name, shape, seed=5), err_msg=name)


def test_sharded_safetensors(tmp_path):
    d = _folder(tmp_path)
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2)])
    _write_safetensors(d / "model-00001-of-00002.safetensors", {"a": a, "b": b})
    _write_safetensors(d / "model-00002-of-00002.safetensors", {"c": c})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}))
    with open_checkpoint(d) as ckpt:
        assert ckpt.names() == ["a", "b", "c"] and len(ckpt.weight_files) == 2
        for name, x in {"a": a, "b": b, "c": c}.items():
            np.testing.assert_array_equal(ckpt.load(name), bf16_to_float32(float32_to_bf16(x)))


def test_bin_alias_offset_and_strides(tmp_path):
    """Tied names sharing one storage, a slice at an offset, a transposed view, fp16 and fp32."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8             # exact in bf16
    half = np.linspace(-2, 2, 6, dtype=np.float16)
    single = np.array([1.5, -3.25e-3, 7e5], dtype=np.float32)
    pkl = (b"\x80\x02}(" + _s("emb") + _tensor("BFloat16Storage", "0", 24, 0, (4, 6), (6, 1))
           + _s("lm_head") + _tensor("BFloat16Storage", "0", 24, 0, (4, 6), (6, 1))
           + _s("rows") + _tensor("BFloat16Storage", "0", 24, 12, (2, 6), (6, 1))
           + _s("t") + _tensor("BFloat16Storage", "0", 24, 0, (6, 4), (1, 6))
           + _s("h") + _tensor("HalfStorage", "1", 6, 0, (2, 3), (3, 1))
           + _s("f") + _tensor("FloatStorage", "2", 3, 0, (3,), (1,)) + b"u.")
    d = _folder(tmp_path)
    _torch_zip(d / "pytorch_model.bin", pkl, {"0": float32_to_bf16(base).tobytes(),
                                              "1": half.astype("<f2").tobytes(), "2": single.tobytes()})
    with open_checkpoint(d) as ckpt:
        np.testing.assert_array_equal(ckpt.load("emb"), base)
        np.testing.assert_array_equal(ckpt.load("lm_head"), base)
        np.testing.assert_array_equal(ckpt.load("rows"), base[2:])
        np.testing.assert_array_equal(ckpt.load("t"), base.T)
        np.testing.assert_array_equal(ckpt.load("h"), half.astype(np.float32).reshape(2, 3))
        np.testing.assert_array_equal(ckpt.load("f"), single)
        assert [ckpt.dtype(n) for n in ("t", "h", "f")] == ["bf16", "fp16", "fp32"]


def test_bf16_conversion_known_answers():
    bits = np.array([0x3F80, 0xBF80, 0x0000, 0x7F80, 0x4049, 0x0001], dtype=np.uint16)
    out = bf16_to_float32(bits)
    assert out[0] == 1.0 and out[1] == -1.0 and out[2] == 0.0 and np.isinf(out[3])
    assert out[4] == np.float32(3.140625) and out[5] == np.float32(2.0 ** -133)
    # round to nearest, ties to even: 0x3F808000 is exactly halfway between 0x3F80 and 0x3F81
    words = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0x7FC00001, 0xFFC00000],
                     dtype=np.uint32)
    got = float32_to_bf16(words.view(np.float32))
    assert list(got[:4]) == [0x3F80, 0x3F82, 0x3F81, 0x7F80]
    assert np.isnan(bf16_to_float32(got[4:])).all()


def test_bf16_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(1).standard_normal(10000).astype(np.float32) * 10.0 ** np.arange(-20, 20, 0.004)[:10000]
    want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16(x), want)


# -- pickles that must not run ----------------------------------------------------------------------

class _Payload:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "nested"])
def test_malicious_pickle_is_refused(tmp_path, attack):
    marker = tmp_path / "pwned"
    if attack == "os.system":
        pkl = pickle.dumps({"w": _Payload(os.system, f"touch {marker}")}, protocol=2)
    elif attack == "builtins.eval":
        pkl = pickle.dumps(_Payload(eval, f"open({str(marker)!r}, 'w')"), protocol=2)
    else:   # a real-looking tensor first, the payload where the backward_hooks would be
        pkl = (b"\x80\x02}(" + _s("ok") + _tensor("BFloat16Storage", "0", 2, 0, (2,), (1,))
               + _s("bad") + b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"cposix\nsystem\n"
               + _s(f"touch {marker}") + b"\x85RtRu.")
    d = _folder(tmp_path)
    _torch_zip(d / "pytorch_model.bin", pkl, {"0": b"\0" * 4})
    with pytest.raises(UnsafePickleError, match=r"pytorch_model\.bin: refused to unpickle global "
                                                r"'(posix|os|builtins|__builtin__)\.(system|eval)'.*nothing was executed"):
        open_checkpoint(d)
    assert not marker.exists()


def test_unsupported_storage_type(tmp_path):
    d = _folder(tmp_path)
    _torch_zip(d / "pytorch_model.bin",
               b"\x80\x02}(" + _s("ids") + _tensor("LongStorage", "0", 1, 0, (1,), (1,)) + b"u.", {"0": b"\0" * 8})
    with pytest.raises(CheckpointError, match="pytorch_model.bin: .*LongStorage"):
        open_checkpoint(d)


# -- bad inputs: one CheckpointError each, naming the file --------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="nope: checkpoint folder not found"):
        open_checkpoint(tmp_path / "nope")


def test_folder_without_weights(tmp_path):
    with pytest.raises(CheckpointError, match="no weights found; looked for model.safetensors, "
                                              "model.safetensors.index.json, pytorch_model.bin"):
        open_checkpoint(_folder(tmp_path))


def test_missing_or_invalid_config(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(CheckpointError, match=r"a/config.json: not found"):
        open_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"a/config.json: invalid JSON"):
        open_checkpoint(tmp_path / "a")


@needs_tiny
def test_truncated_bin(tmp_path):
    d = _folder(tmp_path)
    data = (TINY / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="pytorch_model.bin: not a readable PyTorch zip"):
        open_checkpoint(d)


def test_bin_without_data_pkl_or_storage(tmp_path):
    d = _folder(tmp_path)
    with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/version", b"3\n")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: expected one <folder>/data.pkl"):
        open_checkpoint(d)
    pkl = b"\x80\x02}(" + _s("w") + _tensor("BFloat16Storage", "0", 4, 0, (4,), (1,)) + b"u."
    _torch_zip(d / "pytorch_model.bin", pkl, {})
    with pytest.raises(CheckpointError, match="pytorch_model.bin: tensor 'w': storage entry archive/data/0 is missing"):
        open_checkpoint(d)
    _torch_zip(d / "pytorch_model.bin", pkl, {"0": b"\0" * 6})          # 3 of 4 elements
    with pytest.raises(CheckpointError, match="pytorch_model.bin: tensor 'w': storage 0 holds 6 bytes, expected 8"):
        open_checkpoint(d)
    _torch_zip(d / "pytorch_model.bin", pkl[:-10], {"0": b"\0" * 8})    # data.pkl cut short
    with pytest.raises(CheckpointError, match="pytorch_model.bin: data.pkl is corrupt"):
        open_checkpoint(d)


def test_safetensors_header_longer_than_file(tmp_path):
    d = _folder(tmp_path)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CheckpointError, match="model.safetensors: header length 10000 does not fit"):
        open_checkpoint(d)


def test_safetensors_sizes_that_lie(tmp_path):
    d = _folder(tmp_path)
    x = np.ones((4, 4), np.float32)
    _write_safetensors(d / "model.safetensors", {"w": x},
                       header_patch=lambda h: h["w"].update(data_offsets=[0, 320], shape=[10, 16]))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'w': data_offsets \[0, 320\] lie outside"):
        open_checkpoint(d)
    _write_safetensors(d / "model.safetensors", {"w": x}, header_patch=lambda h: h["w"].update(shape=[4, 5]))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'w': header gives 32 bytes but shape "
                                              r"\[4, 5\] of BF16 needs 40"):
        open_checkpoint(d)


@pytest.mark.parametrize("dtype", ["I8", "F8_E4M3", "Q4_K"])
def test_safetensors_unknown_dtype(tmp_path, dtype):
    d = _folder(tmp_path)
    _write_safetensors(d / "model.safetensors", {"w": np.ones(4, np.float32)},
                       header_patch=lambda h: h["w"].update(dtype=dtype))
    with pytest.raises(CheckpointError, match=f"model.safetensors: tensor 'w' has dtype '{dtype}'"):
        open_checkpoint(d)


def test_missing_shard(tmp_path):
    d = _folder(tmp_path)
    _write_safetensors(d / "model-00001-of-00002.safetensors", {"a": np.ones(2, np.float32)})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors: shard listed in "
                                              "model.safetensors.index.json is missing"):
        open_checkpoint(d)


def test_shard_name_outside_folder(tmp_path):
    d = _folder(tmp_path)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a file name in the checkpoint folder"):
        open_checkpoint(d)


def test_unknown_tensor_name(tmp_path):
    d = write_synthetic(tmp_path / "s", shape=SMALL, weight_format="safetensors")
    with open_checkpoint(d) as ckpt, pytest.raises(CheckpointError, match="no tensor named 'lm_head.weight'"):
        ckpt.load("lm_head.weight")


# -- against the real thing, when torch happens to be installed --------------------------------------

def test_reads_what_torch_saves(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(10, 6, generator=g).bfloat16()
    sd = {"emb": emb, "lm_head.weight": emb, "t": torch.randn(6, 4, generator=g).bfloat16().t(),
          "rows": emb[2:5], "h": torch.randn(3, 5, generator=g).half(), "f": torch.randn(7, generator=g),
          "p": torch.nn.Parameter(torch.randn(2, 3, generator=g))}
    d = _folder(tmp_path)
    torch.save(sd, d / "pytorch_model.bin")
    with open_checkpoint(d) as ckpt:
        for name, t in sd.items():
            np.testing.assert_array_equal(ckpt.load(name), t.detach().float().numpy(), err_msg=name)


def test_sharded_bin(tmp_path):
    d = _folder(tmp_path)
    one = np.array([1.0, -2.0], np.float32)
    for i, name in enumerate(["a", "b"]):
        pkl = b"\x80\x02}(" + _s(name) + _tensor("BFloat16Storage", "0", 2, 0, (2,), (1,)) + b"u."
        _torch_zip(d / f"pytorch_model-0000{i + 1}-of-00002.bin", pkl, {"0": float32_to_bf16(one * (i + 1)).tobytes()})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        "a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}))
    with open_checkpoint(d) as ckpt:
        assert ckpt.names() == ["a", "b"]
        np.testing.assert_array_equal(ckpt.load("b"), one * 2)
        assert ckpt.weights_bytes == sum(p.stat().st_size for p in ckpt.weight_files)
