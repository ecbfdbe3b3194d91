"""export/synth.py: synthetic checkpoints in the release's exact layout, written without torch."""
import hashlib
import json
import math
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge_llm.export.checkpoint import open_checkpoint
from edge_llm.export.synth import (
    SHAPES,
    TOKENIZER_2B,
    release_config,
    resolve_shape,
    state_dict_pickle,
    synthetic_tensor,
    tensor_shapes,
    write_synthetic,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 48, "vocab_size": 64}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shape, n_tensors, nbytes", [("minicpm-2b", 2 + 9 * 40, 5_449_761_792),
                                                      ("minicpm-1b", 2 + 9 * 52, 2_720_492_544)])
def test_release_sizes(shape, n_tensors, nbytes):
    """Tensor count and bf16 byte total equal the HF pytorch_model.bin sizes (minicpm.md §1.3)."""
    shapes = tensor_shapes(resolve_shape(shape))
    assert len(shapes) == n_tensors
    assert sum(2 * math.prod(s) for s in shapes.values()) == nbytes
    assert "lm_head.weight" not in shapes


def test_2b_config_looks_like_the_release():
    cfg = release_config(resolve_shape("minicpm-2b"), name="x")
    assert cfg["architectures"] == ["MiniCPMForCausalLM"] and cfg["torch_dtype"] == "bfloat16"
    assert not {"model_type", "rope_theta", "tie_word_embeddings"} & set(cfg)
    want = {"hidden_size": 2304, "num_hidden_layers": 40, "num_attention_heads": 36, "num_key_value_heads": 36,
            "intermediate_size": 5760, "vocab_size": 122753, "max_position_embeddings": 2048,
            "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 256, "rms_norm_eps": 1e-5}
    assert {k: cfg[k] for k in want} == want
    real = SHARED / "fixtures" / "minicpm-2b-tokenizer" / "config.json"
    if real.is_file():      # same values as the real file for every architecture field
        real_cfg = json.loads(real.read_text())
        assert {k: real_cfg[k] for k in want} == want


def test_1b_shape():
    shapes = tensor_shapes(resolve_shape("minicpm-1b"))
    assert shapes["model.layers.51.self_attn.k_proj.weight"] == (512, 1536)
    assert shapes["model.embed_tokens.weight"] == (73440, 1536)


def test_resolve_shape_errors_and_defaults():
    with pytest.raises(ValueError, match="unknown shape 'minicpm-7b'"):
        resolve_shape("minicpm-7b")
    with pytest.raises(ValueError, match="lacks vocab_size"):
        resolve_shape({k: v for k, v in SMALL.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="heads % kv == 0"):
        resolve_shape({**SMALL, "num_key_value_heads": 3})
    f = resolve_shape({k: v for k, v in SMALL.items() if k != "num_key_value_heads"}, layers=1)
    assert f["num_key_value_heads"] == 4 and f["num_hidden_layers"] == 1 and f["scale_emb"] == 12
    assert resolve_shape("minicpm-2b", layers=1)["num_hidden_layers"] == 1
    assert SHAPES["minicpm-2b"]["num_hidden_layers"] == 40          # not mutated by the override


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_write_and_read_back(tmp_path, fmt):
    calls = []
    d = write_synthetic(tmp_path / "c", shape=SMALL, weight_format=fmt, seed=7,
                        progress=lambda name, i, n: calls.append((name, i, n)))
    shapes = tensor_shapes(resolve_shape(SMALL))
    assert [c[1] for c in calls] == list(range(1, len(shapes) + 1)) and calls[-1][2] == len(shapes)
    assert [c[0] for c in calls] == list(shapes)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["config.json", "generation_config.json", "pytorch_model.bin" if fmt == "bin" else "model.safetensors"])
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["vocab_size"] == 64
    with open_checkpoint(d) as ckpt:
        assert ckpt.names() == sorted(shapes)
        for name, shape in shapes.items():
            assert ckpt.dtype(name) == "bf16" and ckpt.shape(name) == shape
            np.testing.assert_array_equal(ckpt.load(name), synthetic_tensor(name, shape, seed=7), err_msg=name)


def test_statistics():
    w = synthetic_tensor("model.layers.0.mlp.up_proj.weight", (256, 512), seed=0)
    n = synthetic_tensor("model.layers.0.input_layernorm.weight", (2304,), seed=0)
    assert abs(w.mean()) < 1e-3 and 0.019 < w.std() < 0.021
    assert 0.99 < n.mean() < 1.01 and 0.01 < n.std() < 0.03
    # bf16-rounded: the low 16 bits of every float32 are zero
    assert not (w.view(np.uint32) & 0xFFFF).any()
    other = synthetic_tensor("model.layers.1.mlp.up_proj.weight", (256, 512), seed=0)
    assert not np.array_equal(w, other)          # each tensor has its own stream


def test_deterministic_bytes(tmp_path):
    a = write_synthetic(tmp_path / "a", shape=SMALL, seed=1) / "pytorch_model.bin"
    b = write_synthetic(tmp_path / "b", shape=SMALL, seed=1) / "pytorch_model.bin"
    c = write_synthetic(tmp_path / "c", shape=SMALL, seed=2) / "pytorch_model.bin"
    assert _sha(a) == _sha(b) != _sha(c)


def test_bin_layout_like_torch(tmp_path):
    path = write_synthetic(tmp_path / "c", shape=SMALL) / "pytorch_model.bin"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[:2] == ["archive/data.pkl", "archive/byteorder"] and names[-1] == "archive/version"
        assert zf.read("archive/version") == b"3\n" and zf.read("archive/byteorder") == b"little"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert zf.testzip() is None                                       # CRCs are right
        globals_ = {arg for op, arg, _ in pickletools.genops(zf.read("archive/data.pkl")) if op.name == "GLOBAL"}
        assert globals_ == {"torch._utils _rebuild_tensor_v2", "torch BFloat16Storage", "collections OrderedDict"}
        with open(path, "rb") as f:                                       # data starts on 64-byte boundaries
            for info in zf.infolist():
                if info.filename.startswith("archive/data/"):
                    f.seek(info.header_offset + 26)
                    n, m = np.frombuffer(f.read(4), "<u2")
                    assert (info.header_offset + 30 + n + m) % 64 == 0, info.filename


def test_pickle_handles_big_numbers():
    pkl = state_dict_pickle({"w": (2**31 + 1,), "v": (70000, 40000)})
    assert pkl.startswith(b"\x80\x02") and pkl.endswith(b"u.")
    ops = [op.name for op, _, _ in pickletools.genops(pkl)]
    assert "LONG1" in ops                                                 # numel 2**31 + 1


def test_tokenizer_files(tmp_path):
    d = write_synthetic(tmp_path / "none", shape=SMALL)                   # vocab 64: no tokenizer by default
    assert not (d / "tokenizer.model").exists()
    with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
        write_synthetic(tmp_path / "bad", shape=SMALL, tokenizer_dir=tmp_path)
    tiny = SHARED / "fixtures" / "minicpm-tiny"
    if not TOKENIZER_2B.is_dir() or not tiny.is_dir():
        pytest.skip(f"{SHARED} is absent")
    d = write_synthetic(tmp_path / "tiny", shape=SMALL, tokenizer_dir=tiny)
    assert (d / "tokenizer.model").read_bytes() == (tiny / "tokenizer.model").read_bytes()
    big_vocab = {**SMALL, "hidden_size": 8, "num_attention_heads": 1, "num_key_value_heads": 1,
                 "num_hidden_layers": 1, "vocab_size": 122753}            # the 2B vocab: real 2B tokenizer
    d = write_synthetic(tmp_path / "2b", shape=big_vocab, weight_format="safetensors")
    for fname in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (d / fname).read_bytes() == (TOKENIZER_2B / fname).read_bytes()


def test_switching_format_leaves_one_weights_file(tmp_path):
    write_synthetic(tmp_path / "c", shape=SMALL, weight_format="bin")
    d = write_synthetic(tmp_path / "c", shape=SMALL, weight_format="safetensors")
    assert not (d / "pytorch_model.bin").exists() and (d / "model.safetensors").exists()
    with pytest.raises(ValueError, match="weight_format"):
        write_synthetic(tmp_path / "x", shape=SMALL, weight_format="gguf")


def test_torch_loads_synthetic_bin(tmp_path):
    torch = pytest.importorskip("torch")
    d = write_synthetic(tmp_path / "c", shape=SMALL, seed=3)
    for mmap in (False, True):
        sd = torch.load(d / "pytorch_model.bin", weights_only=True, map_location="cpu", mmap=mmap)
        assert list(sd) == list(tensor_shapes(resolve_shape(SMALL)))
        for name, t in sd.items():
            assert t.dtype == torch.bfloat16 and t.is_contiguous()
            np.testing.assert_array_equal(t.float().numpy(), synthetic_tensor(name, tuple(t.shape), seed=3))
