"""MiniCPM-2B's real tokenizer and chat format against transformers' slow LlamaTokenizer and OpenBMB's chat().

References: tests/data/references/minicpm2b_tokenizer.json (benchmarks/references/record_minicpm_tokenizer.py).
The files are ../shared/fixtures/minicpm-2b-tokenizer (skipped without ../shared).

Deliberate difference: text containing `<s>`, `</s>` or `<unk>` is plain text in edge-llm's `encode`
(a user typing "</s>" does not end their prompt); the slow tokenizer turns those into control ids.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES

REF = Path(__file__).parent / "data" / "references" / "minicpm2b_tokenizer.json"
FOLDER = FIXTURES / "minicpm-2b-tokenizer"
CONTROL = ("<s>", "</s>", "<unk>")


@pytest.fixture(scope="module")
def ref():
    return json.loads(REF.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok_and_chat():
    if not FOLDER.is_dir():
        pytest.skip(f"{FOLDER} not found (../shared is not beside this checkout)")
    from edge_llm.export.families import family_for
    from edge_llm.export.tokenizer_meta import chat_spec, tokenizer_spec
    from edge_llm.manifest import ChatSpec
    family, cfg = family_for(json.loads((FOLDER / "config.json").read_text()), source="config.json")
    spec, tok = tokenizer_spec(FOLDER, cfg)
    chat = chat_spec(FOLDER, family, tok, spec)
    return tok, spec, ChatSpec(**{**chat, "stop_ids": tuple(chat["stop_ids"]), "stop_strings": tuple(chat["stop_strings"])})


def test_prepend_space_is_derived_from_sentencepiece_and_legacy(tok_and_chat, ref):
    _, spec, _ = tok_and_chat
    assert ref["tokenizer_config"]["legacy"] is True and ref["sentencepiece_add_dummy_prefix"] is False
    assert spec["prepend_space"] is False and spec["backend"] == "sentencepiece"


def test_plain_encoding_equals_slow_tokenizer(tok_and_chat, ref):
    tok = tok_and_chat[0]
    same = differ = 0
    for case in ref["tokenize"]:
        ours = tok.encode(case["text"])
        if any(c in case["text"] for c in CONTROL):
            assert ours == case["sentencepiece_ids"], case["text"]     # kept as plain text, on purpose
            differ += ours != case["ids"]
        else:
            assert ours == case["ids"], case["text"]
            same += 1
    assert same >= 30 and differ >= 1


def test_chat_ids_equal_openbmb_chat(tok_and_chat, ref):
    from edge_llm.chat_template import chat_ids
    tok, _, chat = tok_and_chat
    for case in ref["chat"]:
        msgs = case["history"] + [{"role": "user", "content": case["query"]}]
        # OpenBMB's chat() renders without a generation prompt (its template has none) and adds BOS
        assert chat_ids(chat, tok, msgs, add_generation_prompt=False) == case["input_ids"], case["name"]
        assert tok.eos_ids[0] not in case["input_ids"][1:], "no </s> after assistant turns"
