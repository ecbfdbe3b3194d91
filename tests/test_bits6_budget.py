"""6-bit tensors as a 4-bit + 2-bit MatMulNBits pair, and the --bpw byte budget (issue 19)."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_llm.errors import ExportError
from edge_llm.export.exporter import export_checkpoint
from edge_llm.export.quant import dequantize, quantize, split_6bit
from edge_llm.export.recipe import Recipe

DATA = Path(__file__).parent / "data" / "tiny-families"


@pytest.mark.parametrize("symmetric", [True, False])
def test_6bit_codes_split_exactly_into_4_and_2_bit_parts(symmetric):
    w = np.random.default_rng(0).standard_normal((24, 200)).astype(np.float32)      # a padded last block
    q = quantize(w, bits=6, block_size=64, symmetric=symmetric, clip_search=True)
    assert q.codes.max() <= 63
    hi, lo = split_6bit(q)
    assert (hi.bits, lo.bits) == (4, 2) and lo.zero_points is not None
    assert (hi.zero_points is None) == symmetric
    np.testing.assert_allclose(dequantize(hi) + dequantize(lo), dequantize(q), rtol=0, atol=1e-6)
    # a 6-bit grid is four times finer than int4's
    e4 = np.abs(dequantize(quantize(w, bits=4, block_size=64, symmetric=symmetric)) - w).mean()
    assert np.abs(dequantize(q) - w).mean() < e4 / 3


@pytest.mark.parametrize("family,symmetric", [("llama", False), ("llama-untied", True)])
def test_all_6bit_export_equals_the_numpy_forward_of_the_dequantized_weights(tmp_path, family, symmetric):
    """accuracy_level 0: the summed bits=4 and bits=2 kernels reproduce the 6-bit weights (tables included)."""
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.config import config_for
    from edge_llm.export.reference import forward
    from edge_llm.session import ModelSession
    src = DATA / family
    recipe = Recipe(bits=6, head_bits=6, block_size=32, symmetric=symmetric, accuracy_level=0)
    export_checkpoint(src, tmp_path / "pkg", recipe=recipe)
    ids = [1, 5, 17, 99, 250, 3, 42, 7]
    with open_checkpoint(src) as ck:
        cfg = config_for(ck.config)
        six = lambda w: dequantize(quantize(w, bits=6, block_size=32, symmetric=symmetric))
        want = forward(cfg, lambda n: six(ck.load(n)) if ck.load(n).ndim == 2 else ck.load(n), ids)
    got = ModelSession(tmp_path / "pkg", threads=1).logits_all(ids)
    assert float(np.abs(got - want).max()) < 1e-4 * max(1.0, float(np.abs(want).max()))
    kinds = {(n.op_type, a.i) for n in onnx.load(str(tmp_path / "pkg" / "model.onnx"), load_external_data=False).graph.node
             for a in n.attribute if a.name == "bits"}
    assert kinds == {("MatMulNBits", 4), ("MatMulNBits", 2), ("GatherBlockQuantized", 4), ("GatherBlockQuantized", 2)}


@pytest.mark.parametrize("family", ["llama", "llama-untied"])
def test_bpw_budget_bounds_the_weight_file_and_its_accounting_is_exact(tmp_path, family):
    from edge_llm.export import budget
    from edge_llm.export.checkpoint import open_checkpoint
    from edge_llm.export.config import config_for
    src = DATA / family
    with open_checkpoint(src) as ck:
        cfg = config_for(ck.config)
    params = sum(int(np.prod(s)) for s in cfg.expected_shapes().values())
    sizes = {}
    for bpw in (8.0, 12.0):
        out = tmp_path / f"b{bpw}"
        res = export_checkpoint(src, out, bpw=bpw)
        q = res.manifest["quantization"]
        data = (out / "model.onnx.data").stat().st_size
        assert data <= bpw * params / 8, (bpw, data)
        assert q["bpw"] == bpw and q["importance"] and q["tensors"]
        recipe = Recipe(**{k: v for k, v in q.items() if k in Recipe.__dataclass_fields__})
        # the planner's byte count: an upper bound of the file by at most its alignment padding allowance
        fixed = budget.FIXED_MARGIN + sum(4 * int(np.prod(s)) + budget.SMALL_ALIGN
                                          for s in cfg.expected_shapes().values() if len(s) != 2)
        predicted = fixed + sum(
            budget.tensor_bytes(n, k, bits=q["tensors"][name]["bits"], block=q["tensors"][name]["block_size"],
                                recipe=recipe, gather=gather)
            for name, ((n, k), gather) in budget.quantized_tensors(cfg).items())
        assert data <= predicted
        written = res.manifest["sizes"]["weights_bytes"]     # tensor bytes without padding
        assert predicted - written <= fixed + 8 * budget.ALIGN * len(q["tensors"])      # ≤ 8 arrays a tensor
        sizes[bpw] = (data, sorted({o["bits"] for o in q["tensors"].values()}))
    assert sizes[8.0][0] < sizes[12.0][0]
    assert 8 in sizes[12.0][1]


def test_bpw_below_what_the_model_can_take_is_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match=r"--bpw 2 is below the smallest package"):
        export_checkpoint(DATA / "llama", tmp_path / "pkg", bpw=2.0)
    assert not (tmp_path / "pkg").exists()


def test_recipe_accepts_6_and_2_bits_and_refuses_others():
    assert Recipe(bits=6).bits_for("model.layers.0.mlp.up_proj.weight") == 6
    r = Recipe(tensors={"model.layers.1.mlp.up_proj.weight": {"bits": 6, "block_size": 64}})
    assert r.bits_for("model.layers.1.mlp.up_proj.weight") == 6 and r.bits_for("model.layers.11.mlp.up_proj.weight") == 4
    assert r.block_for("model.layers.1.mlp.up_proj.weight", 256) == 64
    with pytest.raises(ExportError, match="5-bit"):
        Recipe(tensors={"x": {"bits": 5}})


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_budget_byte_count_equals_the_stored_arrays(bits, symmetric):
    """quant.stored_bytes (the --bpw accounting) counts exactly the arrays a tensor is stored as."""
    from edge_llm.export.quant import stored_bytes
    for n, k, block in ((48, 200, 64), (7, 96, 32), (5, 384, 128)):
        q = quantize(np.random.default_rng(1).standard_normal((n, k)).astype(np.float32), bits=bits,
                     block_size=block, symmetric=symmetric or bits == 8)      # 8-bit is stored symmetric
        assert stored_bytes(n, k, bits=bits, block=block, symmetric=symmetric or bits == 8) == q.nbytes


def test_the_default_plans_a_margin_over_the_smallest_package_and_presets_fit_small_models(tmp_path):
    """`edge-llm export DIR` plans within the model's smallest package + 0.1 bit a weight (recorded as its
    bpw; the weight file within it). A preset above what a model can take (this one's smallest package is
    6 bits a weight) gives its smallest package, where the same explicit --bpw is refused. `--block-size 64`
    alone asks for one uniform layout (the base recipe at that block), not a plan."""
    from click.testing import CliRunner

    from edge_llm.cli import main
    from edge_llm.export.recipe import DEFAULT_RECIPE, RECIPES
    assert RECIPES[DEFAULT_RECIPE].bpw_margin == 0.1
    run = lambda *a: CliRunner().invoke(main, ["export", str(DATA / "llama"), "-o", *map(str, a)])
    r = run(tmp_path / "d")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    q, params = m["quantization"], m["model"]["parameters"]
    assert q["bpw_margin"] == 0.1 and q["tensors"] and 6.0 < q["bpw"] < 6.2
    assert (tmp_path / "d" / "model.onnx.data").stat().st_size <= q["bpw"] * params / 8
    r = run(tmp_path / "p", "--recipe", "bpw4.3")
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "p" / "manifest.json").read_text())["quantization"]
    assert {o["bits"] for o in q["tensors"].values()} == {4}        # the smallest: all 4-bit
    r = run(tmp_path / "e", "--bpw", "4.3")
    assert r.exit_code == 1 and "is below the smallest package" in r.output
    r = run(tmp_path / "u", "--block-size", "64")
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "u" / "manifest.json").read_text())["quantization"]
    assert q["bpw"] is None and not q["tensors"] and q["block_size"] == 64
