"""Property-based fuzzing of the GGUF reader (export/gguf_import.py).

Whatever the bytes, opening a GGUF, loading every tensor and carrying every quantized one either works or
raises CheckpointError: never another exception. What loads has the shape the file promises.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("gguf")

from fuzz_settings import fuzz  # noqa: E402
from gguf_helpers import TinyGguf, write_tiny  # noqa: E402

from edge_llm.errors import CheckpointError  # noqa: E402

_TMP = tempfile.TemporaryDirectory(prefix="edge-llm-fuzz-gguf-")
_SEED = Path(_TMP.name) / "seed.gguf"
write_tiny(_SEED, TinyGguf(types={"attn_q": "Q4_K", "attn_v": "Q6_K", "ffn_gate": "Q4_1", "token_embd": "Q8_0"}))
SEED = _SEED.read_bytes()
HEADER = 4096       # mutations aim at the header and metadata, where the parser lives


def _open_all(data: bytes) -> None:
    from edge_llm.export.gguf_import import open_gguf
    p = Path(_TMP.name) / "x.gguf"
    p.write_bytes(data)
    with open_gguf(p) as ck:
        for name in ck.names():
            a = ck.load(name)
            assert a.dtype == np.float32 and a.shape == ck.shape(name), name
            ck.carried(name)


@fuzz(150)
@given(st.lists(st.tuples(st.integers(0, HEADER - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_open_or_fail_in_one_error(flips):
    data = bytearray(SEED)
    for off, val in flips:
        data[off] = val
    try:
        _open_all(bytes(data))
    except CheckpointError:
        pass


@fuzz(40)
@given(st.integers(0, len(SEED) - 1))
def test_truncation_opens_or_fails_in_one_error(n):
    try:
        _open_all(SEED[:n])
    except CheckpointError:
        pass
