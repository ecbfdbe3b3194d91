"""edge-llm eval: the perplexity protocol and agreement figures, checked against direct computation."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, NEEDS_SHARED

from edge_llm.evaluate import _log_softmax, corpus_tokens, evaluate

pytestmark = NEEDS_SHARED
TEXT = FIXTURES / "corpus-valid.txt"


def test_perplexity_matches_direct_computation(fp32_model):
    r = evaluate(fp32_model, TEXT, window=128, max_tokens=300)
    ids = corpus_tokens(fp32_model, TEXT)
    assert ids[0] == 1 and r["tokens_scored"] == 256        # floor(min(300, n-1) / 128) * 128
    nll = []
    for s in (0, 128):
        lp = _log_softmax(fp32_model.session.logits_all(ids[s:s + 128]))
        nll += [-lp[i, ids[s + i + 1]] for i in range(128)]   # the last target is the next window's first token
    assert r["perplexity"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-9)


def test_reference_against_itself_is_perfect(fp32_model):
    r = evaluate(fp32_model, TEXT, reference=fp32_model, window=128, max_tokens=256)
    assert r["top1_agreement"] == 1.0
    assert abs(r["kl_divergence"]) < 1e-9 and abs(r["delta_p"]["mean"]) < 1e-9


def test_int4_against_fp32_reference(int4_model, fp32_model):
    r = evaluate(int4_model, TEXT, reference=fp32_model, window=256, max_tokens=1024)
    fp = evaluate(fp32_model, TEXT, window=256, max_tokens=1024)
    assert 0 < r["kl_divergence"] < 0.5
    assert 0.6 < r["top1_agreement"] < 1.0
    assert r["perplexity"] > fp["perplexity"]                 # quantization costs something
    assert set(r["delta_p"]) >= {"mean", "p1", "p50", "p99"}


def test_cli_json_keys(tiny_int4, tiny_fp32, tmp_path):
    out = tmp_path / "e.json"
    p = subprocess.run([sys.executable, "-m", "edge_llm.cli", "eval", str(tiny_int4), "--text", str(TEXT),
                        "--reference", str(tiny_fp32), "--max-tokens", "600", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert {"perplexity", "top1_agreement", "kl_divergence"} <= set(data)
    assert "| int4 b128 asym" in p.stdout


def test_text_shorter_than_a_window(fp32_model, tmp_path):
    from edge_llm.errors import EdgeLLMError
    short = tmp_path / "short.txt"
    short.write_text("just a few words", encoding="utf-8")
    with pytest.raises(EdgeLLMError, match="shorter than one window"):
        evaluate(fp32_model, short)
