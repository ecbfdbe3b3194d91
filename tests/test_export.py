"""Exporter: fixture logits, package contents, and every bad input named in issue #2."""
import errno
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import NEEDS_SHARED, TINY

from edge_llm.errors import CheckpointError, ExportError
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.recipe import Recipe
from edge_llm.session import ModelSession


@NEEDS_SHARED
def test_fp32_export_reproduces_reference_logits(tiny_fp32, reference):
    ref, logits = reference
    sess = ModelSession(tiny_fp32, threads=1)
    for i, case in enumerate(ref["cases"]):
        got = sess.logits_all(case["input_ids"])
        want = logits[f"logits_{i}"]
        assert got.shape == want.shape
        worst = np.abs(got - want).max()
        assert worst < 1e-3, f"prompt {i} ({case['prompt']!r}): max |diff| {worst:.2e}"


@NEEDS_SHARED
def test_int4_export_agrees_on_top1(tiny_int4, reference):
    ref, logits = reference
    sess = ModelSession(tiny_int4, threads=1)
    agree = [(sess.logits_all(c["input_ids"]).argmax(-1) == logits[f"logits_{i}"].argmax(-1)) for i, c in enumerate(ref["cases"])]
    rate = np.concatenate(agree).mean()
    # measured 83.8% with the default recipe (clip-asym-b128), 93.2% with rtn-b32; corpus-level figures in
    # benchmarks/results/quality-fixture.md
    assert rate >= 0.80, f"int4 top-1 agreement {rate:.1%}"


@NEEDS_SHARED
def test_package_contents(tiny_int4):
    m = json.loads((tiny_int4 / "manifest.json").read_text(encoding="utf-8"))
    assert m["format_version"] == 2
    assert m["model"]["num_layers"] == 8 and m["model"]["num_kv_heads"] == 2 and m["model"]["vocab_size"] == 8192
    assert m["model"]["architecture"] == "MiniCPMForCausalLM" and m["model"]["family"] == "minicpm"
    assert m["tokenizer"]["backend"] == "sentencepiece" and m["tokenizer"]["prepend_space"] is False
    assert m["tokenizer"]["eos_ids"] == [2] and m["tokenizer"]["add_bos"] is True
    assert m["chat"]["source"] == "tokenizer_config.json" and "<用户>" in m["chat"]["template"]
    assert m["chat"]["add_bos"] is True and m["chat"]["stop_ids"] == [2]
    for key, entry in m["files"].items():
        assert (tiny_int4 / entry["name"]).stat().st_size == entry["bytes"] and len(entry["sha256"]) == 64
    assert m["source"]["sha256"] and len(m["source"]["sha256"]) == 64
    assert m["sizes"]["package_bytes"] == sum(p.stat().st_size for p in tiny_int4.iterdir())
    for name in ("model.onnx", "model.onnx.data", "tokenizer.model", "genai_config.json"):
        assert (tiny_int4 / name).is_file()
    genai = json.loads((tiny_int4 / "genai_config.json").read_text())
    assert genai["model"]["type"] == "llama" and genai["search"]["past_present_share_buffer"] is True
    # tied embedding: the table's codes are stored once, shared by GatherBlockQuantized and the lm_head
    import onnx
    model = onnx.load(str(tiny_int4 / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMulNBits", "GroupQueryAttention", "GatherBlockQuantized", "SkipSimplifiedLayerNormalization"} <= ops
    assert sum(1 for t in model.graph.initializer if t.name.startswith("model.embed_tokens.weight.q4")) == 1
    assert all(n.name.startswith("/") for n in model.graph.node), "node names are paths"
    names = {t.name for t in model.graph.initializer}
    assert "model.layers.0.mlp.down_proj.weight.q4" in names, "initializers keep Hugging Face names"


@NEEDS_SHARED
def test_onnxruntime_genai_runs_the_package(tiny_int4, int4_model, reference):
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai not installed (pip install onnxruntime-genai)")
    ref, _ = reference
    model = og.Model(str(tiny_int4))
    for case in ref["cases"][:3]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(case["input_ids"]) + 16, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(case["input_ids"])
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        ours = [r.token_id for r in int4_model.stream(case["input_ids"], max_new_tokens=16)]
        assert out == ours[: len(out)]


# ---------------------------------------------------------------- bad input, atomic output

def _copy_fixture(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(TINY, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def _fail_on_nth_write(monkeypatch, n: int, exc: BaseException) -> None:
    """Make the exporter's n-th external-data write raise `exc` (the earlier ones really write)."""
    from edge_llm.export import onnx_writer
    real, calls = onnx_writer.ExternalDataWriter.add, {"n": 0}

    def add(self, name, array):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, name, array)

    monkeypatch.setattr(onnx_writer.ExternalDataWriter, "add", add)


@NEEDS_SHARED
def test_existing_package_needs_force_and_survives_failure(tmp_path, tiny_int4, monkeypatch):
    out = tmp_path / "pkg"
    shutil.copytree(tiny_int4, out)
    before = (out / "model.onnx.data").read_bytes()
    with pytest.raises(ExportError, match="--force"):
        export_checkpoint(TINY, out, validate=False)
    _fail_on_nth_write(monkeypatch, 10, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(ExportError, match="writing .*pkg failed"):
        export_checkpoint(TINY, out, force=True, validate=False)
    assert (out / "model.onnx.data").read_bytes() == before, "a failed export must not touch the old package"
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"], "no partial folder left"


@NEEDS_SHARED
def test_shapes_that_disagree_with_config(tmp_path):
    src = _copy_fixture(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 1000
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"gate_proj.weight' has shape \(1024, 384\), config.json implies \(1000, 384\)"):
        export_checkpoint(src, tmp_path / "pkg")


@NEEDS_SHARED
def test_interrupt_leaves_nothing(tmp_path, monkeypatch):
    _fail_on_nth_write(monkeypatch, 5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(TINY, tmp_path / "pkg", validate=False)
    assert list(tmp_path.iterdir()) == []


@NEEDS_SHARED
def test_disk_full_is_one_clear_error(tmp_path, monkeypatch):
    _fail_on_nth_write(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(ExportError, match="disk full"):
        export_checkpoint(TINY, tmp_path / "pkg", validate=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        export_checkpoint(tmp_path / "nope", tmp_path / "pkg")


@NEEDS_SHARED
def test_missing_tokenizer(tmp_path):
    src = _copy_fixture(tmp_path)
    (src / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        export_checkpoint(src, tmp_path / "pkg")


@NEEDS_SHARED
def test_unsupported_architecture_lists_supported(tmp_path):
    src = _copy_fixture(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"GPT2LMHeadModel.*supported: Gemma3ForCausalLM, LlamaForCausalLM, MiniCPMForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, SmolLM3ForCausalLM"):
        export_checkpoint(src, tmp_path / "pkg")


@NEEDS_SHARED
def test_missing_tensor_is_named(tmp_path):
    src = _copy_fixture(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = 9
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.layers\.8\.[a-z_.]+ is missing|'model\.layers\.8\..*' is missing"):
        export_checkpoint(src, tmp_path / "pkg")


@NEEDS_SHARED
def test_output_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if __import__("os").access(ro, __import__("os").W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(ExportError, match="not writable"):
            export_checkpoint(TINY, ro / "pkg")
    finally:
        ro.chmod(0o700)


def test_bad_block_size():
    with pytest.raises(ExportError, match="block size 48"):
        Recipe(block_size=48)


@NEEDS_SHARED
def test_cli_error_is_one_line_and_nonzero(tmp_path):
    src = _copy_fixture(tmp_path)
    (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")
    r = subprocess.run([sys.executable, "-m", "edge_llm.cli", "export", str(src), "-o", str(tmp_path / "pkg")],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "pytorch_model.bin" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pkg").exists()


@NEEDS_SHARED
def test_target_arm_stays_on_kleidiai_path(tmp_path):
    """--target arm: symmetric int4, block a multiple of 32, at most 128 and a divisor of K, for every matmul."""
    import onnx

    from edge_llm.export.cli_support import make_recipe
    recipe = make_recipe(recipe_name="clip-asym-b128", block_size=256, target="arm")
    out = tmp_path / "arm"
    export_checkpoint(TINY, out, recipe=recipe, validate=False)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    mm = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert mm
    for n in mm:
        a = {x.name: x.i for x in n.attribute}
        assert a["block_size"] % 32 == 0 and a["block_size"] <= 128 and a["K"] % a["block_size"] == 0, n.name
        assert len(n.input) == 3, f"{n.name} has zero points"
