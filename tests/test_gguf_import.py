"""`edge-llm export FILE.gguf`: every carried block format is exact, each family maps, both tokenizer kinds
rebuild, and bad files fail in one line with nothing written. Tiny GGUFs are written here (tests/gguf_helpers.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from gguf_helpers import CHATML, HIDDEN, TinyGguf, spm_vocab, write_tiny  # noqa: E402

from edge_llm.errors import CheckpointError  # noqa: E402
from edge_llm.export.gguf_blocks import CARRIED, FORM, carry, dequantize_carried  # noqa: E402
from edge_llm.export.quant import split_6bit  # noqa: E402

MIX = {"attn_q": "Q4_K", "attn_k": "Q4_1", "attn_v": "Q6_K", "attn_output": "Q5_0", "ffn_gate": "Q5_1",
       "ffn_up": "Q5_K", "ffn_down": "Q8_0", "token_embd": "Q8_0"}


@pytest.mark.parametrize("qtype", CARRIED)
def test_block_formats_carry_exactly(qtype):
    """Each format's codes, scales, zero points and minimums give gguf's own dequantization bit for bit, and
    a 6-bit (4+2) form splits into parts whose sum is the same tensor."""
    from gguf_helpers import block_bytes

    from edge_llm.export.quant import dequantize
    raw = block_bytes(np.random.default_rng(1), qtype, rows=8, k=512)
    want = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qtype)).reshape(8, 512)
    c = carry(raw, qtype, shape=(8, 512))
    assert (c.q.bits, c.q.block_size) == FORM[qtype]          # the form the exporter pins the tensor to
    got = dequantize_carried(c)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{qtype}: first differing value at (row, col) {tuple(bad[0])}: {got[tuple(bad[0])]} vs {want[tuple(bad[0])]}"
    if c.q.bits == 6:
        hi, lo = split_6bit(c.q)
        np.testing.assert_array_equal(dequantize(hi) + dequantize(lo), dequantize(c.q))


def _export(path: Path, out: Path, *, accuracy_level=1, precision="int4"):
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import BASE_RECIPE, RECIPES
    recipe = RECIPES["fp32"] if precision == "fp32" else replace(RECIPES[BASE_RECIPE], accuracy_level=accuracy_level)
    return export_checkpoint(path, out, recipe=recipe)


def _logits_vs_reference(gguf_path: Path, pkg: Path, n: int = 24):
    from edge_llm.export.families import family_for
    from edge_llm.export.families.tensors import CanonicalTensors
    from edge_llm.export.gguf_import import open_gguf
    from edge_llm.export.reference import forward
    from edge_llm.session import ModelSession
    ids = np.random.default_rng(3).integers(0, 200, n)
    with open_gguf(gguf_path) as ck:
        family, cfg = family_for(ck.config)
        ref = forward(cfg, CanonicalTensors(ck, family, cfg).load, ids)
    got = ModelSession(pkg, threads=1).logits_all(ids)
    return got, ref


CASES = {
    "llama-gpt2-mix-tied": TinyGguf(types=MIX),
    "llama-spm-untied-minima": TinyGguf(tokenizer="llama", tied=False, types={
        "token_embd": "Q4_1", "output": "Q4_K", "attn_q": "Q4_0", "attn_k": "Q4_1", "attn_v": "Q4_0",
        "ffn_gate": "Q6_K", "ffn_up": "Q6_K", "ffn_down": "Q8_0", "attn_output": "Q5_K"}),
    "qwen2-bias": TinyGguf(arch="qwen2", default="Q6_K", types={"token_embd": "Q6_K"}),
    "qwen3-qknorm": TinyGguf(arch="qwen3", default="Q5_K", types={"token_embd": "Q5_0"}),
    "minicpm-scales": TinyGguf(arch="minicpm", default="Q4_1", types={"token_embd": "Q4_K"}),
    "gemma3-q4km-mix": TinyGguf(arch="gemma3", tokenizer="llama", default="Q5_0", types={
        "token_embd": "Q8_0", "attn_output": "Q4_K", "ffn_down": "Q6_K", "attn_v": "Q8_0"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_package_equals_the_dequantized_model(case, tmp_path):
    """float32 activations: the package's logits are the exactly dequantized GGUF's (numpy reference)."""
    src = write_tiny(tmp_path / "m.gguf", CASES[case])
    result = _export(src, tmp_path / "pkg")
    got, ref = _logits_vs_reference(src, tmp_path / "pkg")
    diff = float(np.abs(got - ref).max())
    assert diff < 2e-4 * max(1.0, float(np.abs(ref).max())), f"{case}: max |logit diff| {diff:.3g}"
    g = result.manifest["quantization"]["gguf"]
    for ty, how in g["types"].items():
        if ty in CARRIED:
            assert how["carried"].startswith("exact"), (ty, how)
    worst = result.manifest["quantization"]["worst_tensor"]
    if all(t in CARRIED for t in g["types"] if t != "F32"):
        assert worst["max_abs_error"] < 1e-6, worst


def test_int8_activation_package_keeps_float16_scales(tmp_path):
    """With int8 activations the Q4_1/Q8_0 scales stay the GGUF's float16 values (its bytes), and the logits
    stay close to the exact model; Q6_K's d·sc that is not a float16 value is rounded to one, and said."""
    src = write_tiny(tmp_path / "m.gguf", TinyGguf(default="Q4_1", types={"token_embd": "Q8_0"}))
    r = _export(src, tmp_path / "pkg", accuracy_level=4)
    assert r.manifest["quantization"]["scale_dtype"] == "float16"
    g = r.manifest["quantization"]["gguf"]
    # + at most 2 bytes per block of 32: a centred minimum (m + 8d) that is no longer a float16 value
    assert g["package_bits_per_weight"] <= g["gguf_bits_per_weight"] + 0.5 + 1e-3, g
    got, ref = _logits_vs_reference(src, tmp_path / "pkg")
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.9
    src6 = write_tiny(tmp_path / "k.gguf", TinyGguf(default="Q6_K", types={"token_embd": "Q8_0"}))
    r6 = _export(src6, tmp_path / "pkg6", accuracy_level=4)
    assert r6.manifest["quantization"]["scale_dtype"] == "float16"
    assert r6.manifest["quantization"]["gguf"]["types"]["Q6_K"]["carried"].startswith("codes exact, scales rounded")
    assert r6.manifest["quantization"]["gguf"]["types"]["Q8_0"]["carried"].startswith("exact")
    got, ref = _logits_vs_reference(src6, tmp_path / "pkg6")
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.9
    r6x = _export(src6, tmp_path / "pkg6x", accuracy_level=1)       # float32 activations: exact, float32 scales
    assert r6x.manifest["quantization"]["scale_dtype"] == "float32"


def test_summary_and_manifest_name_each_type(tmp_path):
    from edge_llm.export.cli_support import summary
    src = write_tiny(tmp_path / "m.gguf", TinyGguf(types={**MIX, "attn_q": "Q3_K", "attn_output": "F16"}))
    r = _export(src, tmp_path / "pkg")
    types = r.manifest["quantization"]["gguf"]["types"]
    assert types["Q6_K"]["carried"] == "exact: 8-bit block 16"      # not 4+2: 2-bit block 16 is a slow kernel
    assert types["Q4_1"]["carried"] == "exact: 4-bit block 32 + min term"
    assert types["Q3_K"]["carried"] == "dequantized and re-quantized by the recipe"
    text = summary(r)
    assert "note: dequantized and re-quantized (no exact kernel form): Q3_K: 2 tensors (model.layers.0.self_attn" in text
    assert r.manifest["source"]["format"] == "m.gguf"


# ---- tokenizers ---------------------------------------------------------------------------------------

def test_gpt2_tokenizer_digits_merges_specials_and_chat(tmp_path):
    from edge_llm.api import Model
    src = write_tiny(tmp_path / "m.gguf", TinyGguf())
    _export(src, tmp_path / "pkg")
    m = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert m["tokenizer"]["add_bos"] is False and m["chat"]["template"] == CHATML
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(str(tmp_path / "pkg" / "tokenizer.json"))
    enc = tk.encode("<|im_start|>the 2024 thin<|im_end|>")
    assert enc.tokens == ["<|im_start|>", "t", "he", "Ġ", "2", "0", "2", "4", "Ġt", "h", "in", "<|im_end|>"]
    model = Model.load(tmp_path / "pkg", threads=1)
    ids = model.tokenizer.encode("Hello the world")
    assert model.tokenizer.decode(ids) == "Hello the world"


def test_sentencepiece_vocab_matches_sentencepiece(tmp_path):
    """A llama-kind vocabulary (tokens, scores, types, byte pieces) rebuilt as tokenizer.json encodes as
    sentencepiece itself does, and BOS is added as tokenizer.ggml.add_bos_token says."""
    from tokenizers import Tokenizer
    src = write_tiny(tmp_path / "m.gguf", TinyGguf(tokenizer="llama"))
    _export(src, tmp_path / "pkg")
    sp, *_ = spm_vocab(tmp_path)
    tk = Tokenizer.from_file(str(tmp_path / "pkg" / "tokenizer.json"))
    for text in ["the quick brown fox", "hello world, hello there", "  two  spaces", "unseen ✓ bytes ü",
                 "numbers 12345", "the thesis\nnew line"]:
        assert tk.encode(text, add_special_tokens=False).ids == sp.encode(text), text
        assert tk.decode(sp.encode(text)) == sp.decode(sp.encode(text)), text
    m = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert m["tokenizer"]["add_bos"] is True and m["tokenizer"]["bos_id"] == 1


# ---- bad input: one line, exit 1, nothing written ------------------------------------------------------

def _tamper_type(path: Path, tensor: str, new_type: int) -> None:
    r = gguf.GGUFReader(str(path))
    t = next(t for t in r.tensors if t.name == tensor)
    off = int(t.field.parts[4].ctypes.data - r.data.ctypes.data)
    data = bytearray(path.read_bytes())
    data[off:off + 4] = new_type.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _bad(kind: str, tmp: Path) -> Path:
    p = tmp / "bad.gguf"
    if kind == "not-gguf":
        p.write_text("just text")
    elif kind == "v2":
        write_tiny(p, TinyGguf())
        b = bytearray(p.read_bytes())
        b[4:8] = (2).to_bytes(4, "little")
        p.write_bytes(bytes(b))
    elif kind == "truncated-header":
        write_tiny(p, TinyGguf())
        p.write_bytes(p.read_bytes()[:200])
    elif kind == "tensor-past-end":
        write_tiny(p, TinyGguf())
        p.write_bytes(p.read_bytes()[:-1000])
    elif kind == "unknown-type":
        write_tiny(p, TinyGguf())
        _tamper_type(p, "blk.1.ffn_up.weight", 250)
    elif kind == "unknown-arch":
        write_tiny(p, TinyGguf(arch="falcon"))
    elif kind == "no-tokens":
        write_tiny(p, TinyGguf(), skip_keys=("tokenizer.ggml.tokens",))
    elif kind == "no-hidden":
        write_tiny(p, TinyGguf(), skip_keys=("embedding_length",))
    return p


BAD = {
    "not-gguf": "bad.gguf: not a GGUF file",
    "v2": "bad.gguf: GGUF version 2 is not supported",
    "truncated-header": "bad.gguf: not a readable GGUF file",
    "tensor-past-end": "bad.gguf: tensor 'blk.1.",
    "unknown-type": "bad.gguf: tensor 'blk.1.ffn_up.weight' has unknown GGML type 250",
    "unknown-arch": "bad.gguf: general.architecture 'falcon' is not supported",
    "no-tokens": "bad.gguf: metadata key 'tokenizer.ggml.tokens' is missing",
    "no-hidden": "bad.gguf: metadata key 'llama.embedding_length' is missing",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_gguf_is_one_line(kind, tmp_path):
    from click.testing import CliRunner

    from edge_llm.cli import main
    p = _bad(kind, tmp_path)
    res = CliRunner().invoke(main, ["export", str(p), "-o", str(tmp_path / "pkg")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith("tensors")]
    assert len(lines) == 1 and BAD[kind] in lines[0], res.output
    assert not (tmp_path / "pkg").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.gguf"]


def test_tensor_past_end_names_it(tmp_path):
    from edge_llm.export.gguf_import import open_gguf
    p = _bad("tensor-past-end", tmp_path)
    with pytest.raises(CheckpointError, match=r"tensor 'blk\.1\.ffn_down\.weight' \(Q4_0\) runs past the end"):
        open_gguf(p)


def test_min_formats_are_centred_where_exact():
    """Q4_1's d·q + m is carried as d·(q − 8) + (m + 8d) — codes centred for int8 activations, no stored zero
    points — except in a block where m + 8d is not a float32 value, which keeps zero point 0 and m."""
    from edge_llm.export.gguf_blocks import unpack_zero_points
    qs = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)

    def block(d, m):
        return np.concatenate([np.array([d], np.float16).view(np.uint8), np.array([m], np.float16).view(np.uint8), qs])
    even = np.stack([block(0.0625, -0.5), block(0.125, 1.0)])[None].reshape(1, -1)
    c = carry(even, "Q4_1", shape=(1, 64))
    assert c.q.zero_points is None and c.mins.tolist() == [[0.0, 2.0]]
    odd = np.stack([block(0.0625, -0.5), block(6e-8, 1024.0)])[None].reshape(1, -1)   # 1024 + 8·6e-8: inexact
    c = carry(odd, "Q4_1", shape=(1, 64))
    assert unpack_zero_points(c.q).tolist() == [[8, 0]]
    for raw in (even, odd):
        want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_1).reshape(1, 64)
        np.testing.assert_array_equal(dequantize_carried(carry(raw, "Q4_1", shape=(1, 64))), want)


@pytest.mark.parametrize("arch, permuted", [("llama", True), ("minicpm", True), ("qwen2", False)])
def test_qk_rows_are_unpermuted_for_llama_family(arch, permuted, tmp_path):
    """llama.cpp's converter permutes q/k rows for llama-family models (interleaved rotary); the loader and
    the carried tensor undo it, so permute(loaded) is the GGUF's own tensor again. Qwen GGUFs are not permuted."""
    from gguf_helpers import HEADS, KV_HEADS, permute

    from edge_llm.export.gguf_import import open_gguf
    src = write_tiny(tmp_path / "m.gguf", TinyGguf(arch=arch, types={"attn_q": "Q6_K", "attn_k": "Q4_1"}))
    r = gguf.GGUFReader(str(src))
    raw = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in r.tensors}
    with open_gguf(src) as ck:
        for short, heads in (("q", HEADS), ("k", KV_HEADS)):
            name = f"model.layers.1.self_attn.{short}_proj.weight"
            loaded, carried = ck.load(name), dequantize_carried(ck.carried(name))
            np.testing.assert_array_equal(loaded, carried)
            back = permute(loaded, heads) if permuted else loaded
            np.testing.assert_array_equal(back, raw[f"blk.1.attn_{short}.weight"])
            if permuted:
                assert not np.array_equal(loaded, raw[f"blk.1.attn_{short}.weight"])


def test_packed_tensors_of_different_forms_stay_exact():
    """q|k packed from a Q4_0 (implicit zero point 8, no minimum) and a Q4_1 with an explicit zero point and
    minimums: the implicit zero point and a zero minimum are made explicit, the stack dequantizes as before."""
    from gguf_helpers import block_bytes

    from edge_llm.export.gguf_blocks import concat
    a = carry(block_bytes(np.random.default_rng(2), "Q4_0", rows=3, k=64), "Q4_0", shape=(3, 64))
    qs = np.arange(16, dtype=np.uint8)
    odd = np.concatenate([np.array([6e-8, 1024.0], np.float16).view(np.uint8), qs])     # centring inexact: zp 0
    b = carry(np.tile(odd, (2, 2)), "Q4_1", shape=(2, 64))
    assert b.q.zero_points is not None and a.q.zero_points is None and a.mins is None
    for parts in ([a, b], [b, a]):
        c = concat(parts)
        np.testing.assert_array_equal(dequantize_carried(c), np.concatenate([dequantize_carried(p) for p in parts]))


def test_split_gguf_is_one_model(tmp_path):
    """A split GGUF (model-00001-of-0000N.gguf) exports to the same package logits as the whole file; a later
    part or a missing part is one error."""
    from edge_llm.export.gguf_import import open_gguf
    from edge_llm.session import ModelSession
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = write_tiny(tmp_path / "a" / "m.gguf", TinyGguf(types=MIX))
    first = write_tiny(tmp_path / "b" / "m.gguf", TinyGguf(types=MIX), split_max_tensors=8)
    parts = sorted((tmp_path / "b").glob("m-*.gguf"))
    assert first.name == f"m-00001-of-{len(parts):05d}.gguf" and len(parts) > 2
    _export(whole, tmp_path / "pa")
    _export(first, tmp_path / "pb")
    ids = np.arange(5, 40)
    np.testing.assert_array_equal(ModelSession(tmp_path / "pa", threads=1).logits_all(ids),
                                  ModelSession(tmp_path / "pb", threads=1).logits_all(ids))
    with pytest.raises(CheckpointError, match="part 2 of a split GGUF; give the first part"):
        open_gguf(parts[1])
    parts[-1].unlink()
    with pytest.raises(CheckpointError, match=f"{parts[-1].name}: part of the split GGUF {first.name} is missing"):
        open_gguf(first)


def test_bpw_on_a_quantized_gguf_is_one_line(tmp_path):
    """--bpw re-plans bits per tensor; a GGUF's quantized tensors are carried as they are, so it is refused
    by name there — and works on a float GGUF, whose tensors the recipe quantizes."""
    from click.testing import CliRunner

    from edge_llm.cli import main
    src = write_tiny(tmp_path / "q.gguf", TinyGguf(types=MIX))
    res = CliRunner().invoke(main, ["export", str(src), "-o", str(tmp_path / "pkg"), "--bpw", "5"])
    assert res.exit_code == 1 and "q.gguf: --bpw chooses each tensor's bits, but 15 tensors here are already quantized" \
        in res.output.strip().splitlines()[-1], res.output
    assert not (tmp_path / "pkg").exists()
    f16 = write_tiny(tmp_path / "f.gguf", TinyGguf(default="F16", types={"token_embd": "F16"}))
    res = CliRunner().invoke(main, ["export", str(f16), "-o", str(tmp_path / "pkg16"), "--bpw", "5"])
    assert res.exit_code == 0, res.output
    assert "F16" in res.output and "quantized by the recipe" in res.output


def test_fp32_precision_is_the_dequantized_model(tmp_path):
    """--precision fp32: every tensor dequantized by gguf, the reference export (validated within 1e-3)."""
    src = write_tiny(tmp_path / "m.gguf", TinyGguf(types=MIX))
    r = _export(src, tmp_path / "pkg", precision="fp32")
    assert r.manifest["validation"]["max_abs_diff"] < 1e-3
    assert {t["carried"] for ty, t in r.manifest["quantization"]["gguf"]["types"].items() if ty != "F32"} == \
        {"dequantized to float32"}


def test_default_export_of_a_quantized_gguf_carries_it_without_a_budget(tmp_path):
    """The default recipe plans a budget for a Hugging Face folder; a GGUF without --bpw takes the
    base recipe instead (its tensors are carried), so a plain `edge-llm export q.gguf` works."""
    from click.testing import CliRunner

    from edge_llm.cli import main
    from edge_llm.export.recipe import BASE_RECIPE, DEFAULT_RECIPE, RECIPES
    assert RECIPES[DEFAULT_RECIPE].planned and not RECIPES[BASE_RECIPE].planned
    src = write_tiny(tmp_path / "q.gguf", TinyGguf(types=MIX))
    res = CliRunner().invoke(main, ["export", str(src), "-o", str(tmp_path / "pkg")])
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "pkg" / "manifest.json").read_text())["quantization"]
    assert q["bpw"] is None and q["gguf"]


def test_gemma3_norms_and_names_follow_the_converter(tmp_path):
    """conversion/gemma.py stores every RMSNorm weight as 1 + w and names the four layer norms by position:
    the import gives the family w (it adds the 1 back) and maps ffn_norm to pre_feedforward_layernorm."""
    import gguf

    from edge_llm.export.gguf_import import open_gguf
    src = write_tiny(tmp_path / "g.gguf", CASES["gemma3-q4km-mix"])
    raw = {t.name: np.array(t.data, np.float32) for t in gguf.GGUFReader(str(src)).tensors}
    with open_gguf(src) as ck:
        assert ck.config["architectures"] == ["Gemma3ForCausalLM"] and ck.config["sliding_window"] == 8
        for theirs, ours in (("blk.0.attn_norm", "input_layernorm"), ("blk.0.ffn_norm", "pre_feedforward_layernorm"),
                             ("blk.1.post_attention_norm", "post_attention_layernorm"),
                             ("blk.1.post_ffw_norm", "post_feedforward_layernorm"),
                             ("blk.0.attn_q_norm", "self_attn.q_norm")):
            layer = theirs.split(".")[1]
            np.testing.assert_array_equal(ck.load(f"model.layers.{layer}.{ours}.weight") + 1, raw[f"{theirs}.weight"])
        np.testing.assert_array_equal(ck.load("model.norm.weight") + 1, raw["output_norm.weight"])
        assert ck.load("model.layers.0.self_attn.q_proj.weight").shape == (HIDDEN, HIDDEN)
