"""Property-based fuzzing of tokenization and streaming detokenization (edge_llm/tokenizer.py), on the
sentencepiece tokenizer of the trained fixture (skipped when ../shared is absent).

- The streamed pieces of any id sequence, concatenated, equal the full decode (less a trailing cut
  character, which `flush` drops by design), and no piece holds half a character the full text does not.
- Encoding is stable: text -> ids -> text -> ids gives the same ids the second time.
"""
from __future__ import annotations

import pytest
from conftest import TINY
from fuzz_settings import fuzz
from hypothesis import given, reject
from hypothesis import strategies as st

MODEL = TINY / "tokenizer.model"
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"fixture tokenizer {MODEL} not present")


@pytest.fixture(scope="module")
def tok():
    from edge_llm.manifest import TokenizerSpec
    from edge_llm.tokenizer import Tokenizer
    spec = TokenizerSpec(backend="sentencepiece", file=MODEL.name, add_bos=True, add_eos=False, prepend_space=False,
                         bos_id=1, eos_ids=(2,))
    return Tokenizer(spec, MODEL.parent)


# Text the fixture meets: English, Chinese, emoji and rare scripts (byte fallback), whitespace runs,
# control-token look-alikes.
pieces = st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                   st.sampled_from(list("床前明月光 \n\t  🙂𝔘é") + ["<s>", "</s>", "<unk>", "<用户>", "<AI>", "  "]))
texts = st.lists(pieces, max_size=30).map("".join)


def _stream(tok, ids) -> list[str]:
    dec = tok.stream()
    return [dec.push(i) for i in ids] + [dec.flush()]


@fuzz(150)
@given(text=texts)
def test_streamed_text_equals_full_decode(tok, text):
    ids = tok.encode(text)
    pieces = _stream(tok, ids)
    full = tok.decode(ids)
    if full.endswith("\ufffd") and not "".join(pieces).endswith("\ufffd"):
        reject()                  # reported: a real trailing U+FFFD is dropped (test_trailing_replacement_character)
    assert "".join(pieces) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in p for p in pieces)


@fuzz(150)
@given(data=st.data())
def test_stream_of_any_ids_equals_full_decode(tok, data):
    """Random ids, including lone byte pieces that make invalid UTF-8 and control tokens."""
    n = tok.vocab_size
    ids = data.draw(st.lists(st.one_of(st.integers(0, n - 1), st.integers(0, 3), st.integers(3, 300)), max_size=30))
    pieces = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids).rstrip("\ufffd")
    assert all(isinstance(p, str) for p in pieces)


@fuzz(150)
@given(text=texts)
def test_encoding_is_stable_after_one_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    again = tok.encode(tok.decode(ids))
    assert tok.decode(again) == tok.decode(ids)


@fuzz(100)
@given(text=texts, bos=st.booleans())
def test_bos_only_when_asked(tok, text, bos):
    ids = tok.encode(text, bos=bos)
    assert (ids[:1] == [1]) == bos          # "<s>" typed in the text is plain text, never BOS


@pytest.mark.xfail(strict=False, reason="found by the fuzz campaign, reported to the tokenizer owner: StreamDecoder.flush "
                                        "strips a trailing U+FFFD that is a real character of the text, not a cut one")
def test_trailing_replacement_character(tok):
    ids = tok.encode("a\ufffd")
    assert "".join(_stream(tok, ids)) == tok.decode(ids) == "a\ufffd"
