"""Context and memory limits (issue 14's bad input): a KV cache the machine cannot hold is one clear
error before generation starts (CLI: one line, exit 1; server: 503, and it keeps serving), and a
--context past the package's positions is clamped with one note."""
from __future__ import annotations

import pytest
from test_cli_errors import assert_one_line, invoke

import edge_llm.session as session_mod
from edge_llm.api import Model
from edge_llm.errors import OutOfMemoryError
from edge_llm.generate import generate_tokens
from edge_llm.paths import BUNDLED


@pytest.fixture(scope="module")
def model():
    return Model.load(BUNDLED, threads=1, speculate="off")


def test_generation_refuses_a_cache_that_does_not_fit_before_it_starts(model, monkeypatch):
    bpp = model.manifest.kv.bytes_per_position
    cache = model.cache()
    monkeypatch.setattr(session_mod, "available_memory", lambda: 100 * bpp)
    # 100 positions fit; a 30-token prompt + 200 new tokens do not: refused before any forward
    with pytest.raises(OutOfMemoryError, match=r"not enough memory for the KV cache: 2\d\d positions need"):
        next(generate_tokens(model.session, model.tokenizer, cache, list(range(3, 33)), max_new_tokens=200))
    assert cache.length == 0
    recs = list(model.stream(list(range(3, 33)), max_new_tokens=20, ignore_eos=True))   # what fits still runs
    assert len(recs) == 20
    monkeypatch.setattr(session_mod, "available_memory", lambda: None)     # unknown: no check
    assert len(list(model.stream(list(range(3, 33)), max_new_tokens=200, ignore_eos=True))) == 200


def test_cli_out_of_memory_is_one_line(monkeypatch):
    monkeypatch.setattr(session_mod, "available_memory", lambda: 1000)
    r = invoke("generate", "--prompt", "In the beginning", "--max-new-tokens", "8", "--threads", "1")
    assert_one_line(r, 1, "not enough memory for the KV cache")


def test_context_beyond_the_package_is_clamped_and_said_once():
    r = invoke("generate", "--prompt", "In the beginning", "--max-new-tokens", "4", "--context", "1000000",
               "--threads", "1", "--temperature", "0")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("--context 1000000 is beyond this package's") == 1, r.stderr
    r = invoke("generate", "--prompt", "In the beginning", "--max-new-tokens", "4", "--context", "64",
               "--threads", "1", "--temperature", "0")
    assert r.exit_code == 0 and "beyond" not in r.stderr


def test_server_answers_503_when_the_cache_does_not_fit_and_keeps_serving(monkeypatch):
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from serve_helpers import ServerThread
    with ServerThread() as srv:
        bpp = srv.model.manifest.kv.bytes_per_position
        monkeypatch.setattr(session_mod, "available_memory", lambda: 50 * bpp)
        body = {"model": "tiny", "prompt": "In the beginning", "max_tokens": 400, "temperature": 0}
        r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 503 and "not enough memory for the KV cache" in r.text, r.text
        monkeypatch.setattr(session_mod, "available_memory", lambda: 10 ** 12)
        r = httpx.post(srv.url + "/v1/completions", json=body | {"max_tokens": 5}, timeout=60)
        assert r.status_code == 200, r.text
