"""edge-llm's runtime on aarch64: run by benchmarks/arm/run_emulated.sh under qemu-aarch64-static.

Imports only the runtime (edge_llm.api / session / tokenizer / generate; never onnx or the exporter)
and exports nothing: the packages are made on the host and passed in by path.

  EDGE_LLM_ARM_FP32_PKG   float32 package   (default: <repo>/scratch/tiny-fp32-arm)
  EDGE_LLM_ARM_INT4_PKG   int4 package      (default: edge_llm/bundled/minicpm-tiny-int4 when present,
                                             else <repo>/scratch/tiny-int4)
  EDGE_LLM_ARM_REFERENCE  fixture references (default: <repo>/../shared/fixtures/minicpm-tiny.reference.json)
  EDGE_LLM_EXPECT_ARCH    when set (aarch64), platform.machine() must equal it
  EDGE_LLM_ARM_THREADS    intra-op threads (default 1)

It also runs on x86 (without EDGE_LLM_EXPECT_ARCH), which is how it was checked before emulation.
Elapsed times printed here come from an emulator: they say nothing about ARM performance.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

from edge_llm.api import Model, _common_prefix
from edge_llm.generate import generate_tokens
from edge_llm.sampling import SamplingParams
from edge_llm.session import ModelSession
from edge_llm.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "edge_llm" / "bundled" / "minicpm-tiny-int4"
FP32_PKG = Path(os.environ.get("EDGE_LLM_ARM_FP32_PKG", REPO / "scratch" / "tiny-fp32-arm"))
INT4_PKG = Path(os.environ.get("EDGE_LLM_ARM_INT4_PKG",
                               BUNDLED if (BUNDLED / "manifest.json").exists() else REPO / "scratch" / "tiny-int4"))
REFERENCE = Path(os.environ.get("EDGE_LLM_ARM_REFERENCE",
                                REPO.parent / "shared" / "fixtures" / "minicpm-tiny.reference.json"))
THREADS = int(os.environ.get("EDGE_LLM_ARM_THREADS", "1"))
MAX_NEW = 32
EMU = "(emulated — not ARM performance)" if os.environ.get("EDGE_LLM_EXPECT_ARCH") else "(host timing)"

# int4 is judged, not matched: its greedy path may leave the float one after a few tokens, and ARM's
# int4 kernels (int8 activations through dotprod/i8mm) round differently from x86's.
MIN_INT4_FIRST_TOKEN = 4 / 6      # first generated token equals the reference's in at least 4 of 6 cases
MIN_INT4_TOP1 = 0.70              # teacher-forced top-1 agreement with the float reference continuation


def _need(path: Path) -> Path:
    if not (path / "manifest.json").exists():
        pytest.fail(f"package not found: {path} (run_emulated.sh exports it on the host first)")
    return path


@pytest.fixture(scope="module")
def reference() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"reference file not found: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def fp32() -> Model:
    return Model.load(_need(FP32_PKG), threads=THREADS)


@pytest.fixture(scope="module")
def int4() -> Model:
    return Model.load(_need(INT4_PKG), threads=THREADS)


def _greedy(model: Model, input_ids: list[int]) -> tuple[list[int], float]:
    t = time.perf_counter()
    ids = [r.token_id for r in model.stream(list(input_ids), max_new_tokens=MAX_NEW)]
    return ids, time.perf_counter() - t


def test_architecture_and_versions():
    import onnxruntime as ort
    expect = os.environ.get("EDGE_LLM_EXPECT_ARCH")
    print(f"\nmachine={platform.machine()} python={platform.python_version()} onnxruntime={ort.__version__} "
          f"numpy={np.__version__} providers={ort.get_available_providers()}")
    if expect:
        assert platform.machine() == expect
    assert "CPUExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("pkg", ["fp32", "int4"])
def test_session_uses_cpu_provider(pkg, request):
    model: Model = request.getfixturevalue(pkg)
    assert model.session.sess.get_providers() == ["CPUExecutionProvider"]
    want = {"fp32": "fp32", "int4": "int4"}[pkg]
    assert (model.manifest.data.get("quantization") or {}).get("precision", "fp32") == want


def test_tokenizer_matches_reference_ids(fp32, reference):
    tok: Tokenizer = fp32.tokenizer
    for case in reference["cases"]:
        assert tok.encode(case["prompt"], bos=True) == case["input_ids"], case["prompt"]


def test_fp32_logits_match_reference(reference):
    """Every position's logits of the fixture prompts against the independent PyTorch reference."""
    npz = REFERENCE.with_name(REFERENCE.name.replace(".reference.json", ".reference_logits.npz"))
    if not npz.exists():
        pytest.skip(f"{npz} not found")
    sess = ModelSession(_need(FP32_PKG), threads=THREADS)
    ref = np.load(npz)
    worst = 0.0
    for i, case in enumerate(reference["cases"]):
        got = sess.logits_all(case["input_ids"])
        want = ref[f"logits_{i}"]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"\nfp32 logits vs reference: max |diff| {worst:.2e} over {len(reference['cases'])} prompts")
    assert worst < 1e-3


def test_fp32_greedy_matches_reference_exactly(fp32, reference):
    total = 0.0
    for case in reference["cases"]:
        ids, secs = _greedy(fp32, case["input_ids"])
        total += secs
        assert ids == case["greedy_ids"], f"{case['prompt']!r}: diverged at {_common_prefix(ids, case['greedy_ids'])}"
        assert fp32.tokenizer.decode(ids) == case["greedy_text"]
    n = len(reference["cases"])
    print(f"\nfp32 greedy: {n}/{n} cases identical to the reference; {total:.1f} s for all {EMU}")


def test_int4_greedy_mostly_agrees(int4, reference):
    cases = reference["cases"]
    first = 0
    prefixes = []
    total = 0.0
    for case in cases:
        ids, secs = _greedy(int4, case["input_ids"])
        total += secs
        first += ids[:1] == case["greedy_ids"][:1]
        prefixes.append(_common_prefix(ids, case["greedy_ids"]))
    rate = first / len(cases)
    print(f"\nint4 greedy ({INT4_PKG.name}): first token agrees in {first}/{len(cases)} cases ({rate:.0%}); "
          f"matching prefix lengths {prefixes} of {MAX_NEW}; {total:.1f} s for all {EMU}")
    assert rate >= MIN_INT4_FIRST_TOKEN


def test_int4_teacher_forced_top1(int4, reference):
    """Feed prompt + the float reference continuation; how often is int4's argmax the reference's next token."""
    hits = n = 0
    for case in reference["cases"]:
        seq = case["input_ids"] + case["greedy_ids"]
        logits = int4.session.logits_all(seq[:-1])
        start = len(case["input_ids"]) - 1          # the position that predicts the first generated token
        pred = logits[start:].argmax(-1)
        hits += int((pred == np.asarray(seq[start + 1:])).sum())
        n += len(pred)
    rate = hits / n
    print(f"\nint4 teacher-forced top-1 agreement with the float reference: {hits}/{n} = {rate:.1%}")
    assert rate >= MIN_INT4_TOP1


def test_chat_turn_and_sampling(int4):
    """The chat template path and a seeded sampler, a few tokens each (API smoke test)."""
    recs = list(int4.chat([{"role": "user", "content": "What does \"lantern\" mean?"}], max_new_tokens=8))
    assert recs and recs[-1].finish_reason in ("eos", "stop", "length")
    params = int4.sampling(temperature=0.8, top_p=0.8, seed=7)
    a = [r.token_id for r in int4.stream("In the beginning", params=params, max_new_tokens=8)]
    b = [r.token_id for r in int4.stream("In the beginning", params=params, max_new_tokens=8)]
    assert a == b and len(a) >= 1


def test_generate_tokens_directly(fp32, reference):
    """The low-level generator that bench and eval use, on a fresh cache."""
    case = reference["cases"][0]
    cache = fp32.session.new_cache(256)
    recs = list(generate_tokens(fp32.session, fp32.tokenizer, cache, case["input_ids"],
                                params=SamplingParams(), max_new_tokens=MAX_NEW))
    assert [r.token_id for r in recs] == case["greedy_ids"]
    assert recs[0].prompt_tokens == len(case["input_ids"])
    assert "".join(r.text for r in recs) == case["greedy_text"]
