"""Tokenization, chat rendering and streaming detokenization (Chinese, emoji, byte fallback, spaces)."""
import pytest
from conftest import FIXTURES

from edge_llm.chat_template import chat_ids, render
from edge_llm.cli import BUNDLED
from edge_llm.generate import StopMatcher
from edge_llm.manifest import load_manifest
from edge_llm.tokenizer import Tokenizer

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "  leading spaces and   runs of spaces ",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
    "emoji 🙂🚀 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — byte fallback",
    "mixed 中文 and English\nnew line\ttab",
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_manifest(load_manifest(BUNDLED))


@pytest.mark.parametrize("text", TEXTS)
def test_stream_equals_full_decode_and_never_breaks_characters(tok, text):
    ids = tok.encode(text)
    dec = tok.stream()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces), "a broken character was emitted"


def test_byte_fallback_pieces_are_held_until_complete(tok):
    ids = tok.encode("🙂")
    assert len(ids) > 1, "emoji should need several byte pieces in this 8k vocabulary"
    dec = tok.stream()
    out = [dec.push(i) for i in ids]
    assert out[:-1] == [""] * (len(ids) - 1) and out[-1] == "🙂"


def test_flush_drops_a_cut_character(tok):
    ids = tok.encode("🙂")
    dec = tok.stream()
    for i in ids[:-1]:
        assert dec.push(i) == ""
    assert dec.flush() == ""


def test_reference_input_ids(reference, tok):
    ref, _ = reference
    for case in ref["cases"]:
        assert tok.encode(case["prompt"], bos=True) == case["input_ids"]


def test_chat_rendering_multi_turn(tok):
    """MiniCPM's own chat(): the template's text tokenized whole after BOS, no </s> after assistant turns."""
    chat = load_manifest(BUNDLED).chat
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "你好"}]
    assert render(chat, msgs) == "<用户>Hi<AI>Hello<用户>你好<AI>"
    ids = chat_ids(chat, tok, msgs)
    assert ids == [tok.bos_id] + tok.encode("<用户>Hi<AI>Hello<用户>你好<AI>")
    assert tok.eos_ids[0] not in ids


def test_stop_matcher_holds_back_partial_markers():
    m = StopMatcher(["<用户>"])
    assert m.feed("Hello <") == ("Hello ", False)
    assert m.feed("用") == ("", False)
    assert m.feed("户> more") == ("", True)
    m = StopMatcher(["<用户>"])
    assert m.feed("a < b") == ("a < b", False)
    assert m.flush() == ""


def test_2b_tokenizer_markers_are_not_single_tokens():
    """The real MiniCPM-2B tokenizer splits <用户> into pieces: stop on decoded text, not on one id."""
    import sentencepiece as spm
    path = FIXTURES / "minicpm-2b-tokenizer" / "tokenizer.model"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared is not beside this checkout)")
    sp = spm.SentencePieceProcessor()
    sp.Load(str(path))
    assert sp.EncodeAsIds("<用户>") == [95396, 4194, 95388]
    assert sp.DecodeIds(sp.EncodeAsIds("你好，MiniCPM！")) == "你好，MiniCPM！"
