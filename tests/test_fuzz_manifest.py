"""Property-based fuzzing of the package manifest loader (edge_llm/manifest.py).

Whatever `manifest.json` holds (any JSON value anywhere, keys removed or added, bytes flipped, not
UTF-8), `load_manifest` returns a Manifest or raises PackageError: never another exception.
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
from fuzz_settings import fuzz, known_crash
from hypothesis import given
from hypothesis import strategies as st

from edge_llm.errors import PackageError
from edge_llm.manifest import file_entry, load_manifest

_TMP = tempfile.TemporaryDirectory(prefix="edge-llm-fuzz-manifest-")
PKG = Path(_TMP.name)
(PKG / "model.onnx").write_bytes(b"onnx" * 100)
(PKG / "tokenizer.model").write_bytes(b"spm" * 50)

VALID = {
    "format": "edge-llm-package", "format_version": 2,
    "model": {"architecture": "MiniCPMForCausalLM", "family": "minicpm", "hidden_size": 64, "num_layers": 2,
              "num_heads": 4, "num_kv_heads": 2, "head_dim": 16, "intermediate_size": 96, "vocab_size": 128,
              "context_length": 256, "parameters": 12345, "details": {"scale_emb": 12.0}},
    "io": {"input_ids": "input_ids"},
    "kv_cache": {"layout": "BNSH", "dtype": "float32", "num_layers": 2, "num_kv_heads": 2, "head_dim": 16,
                 "max_length": 256},
    "tokenizer": {"backend": "sentencepiece", "file": "tokenizer.model", "add_bos": True, "add_eos": False,
                  "prepend_space": False, "bos_id": 1, "eos_ids": [2]},
    "chat": {"template": "{{ messages }}", "source": "builtin:test", "stop_ids": [2]},
    "files": {"model": file_entry(PKG, "model.onnx"), "tokenizer": file_entry(PKG, "tokenizer.model")},
    "generation": {"temperature": 0.7}, "quantization": {"precision": "int4"},
}

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8), st.sampled_from(["float32", "float16", "model.onnx", "../x", "", "."])),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=5)


# Crashes this fuzzer found in manifest.py, fixed there (the loader type-checks every field); reproducers:
# test_reported_crashes below. Nothing is discarded any more: any crash fails the properties again.
KNOWN: list = []
REPORTED = {
    "files.model.name null": lambda d: d["files"]["model"].update(name=None),
    "files.model.bytes null": lambda d: d["files"]["model"].update(bytes=None),
    "generation true": lambda d: d.update(generation=True),
    "quantization [1]": lambda d: d.update(quantization=[1]),
    "generation 'ab'": lambda d: d.update(generation="ab"),
    "kv_cache.dtype {}": lambda d: d["kv_cache"].update(dtype={}),
}


def _load(text: str | bytes, *, check_files: bool):
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    (PKG / "manifest.json").write_bytes(raw)
    try:
        return load_manifest(PKG, check_files=check_files)
    except PackageError:
        raise
    except Exception as e:          # noqa: BLE001 - the property under test is "nothing but PackageError"
        known_crash(e, KNOWN)


@pytest.mark.parametrize("edit", list(REPORTED.values()), ids=list(REPORTED))
def test_reported_crashes(edit):
    data = copy.deepcopy(VALID)
    edit(data)
    (PKG / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError):
        load_manifest(PKG)


def test_the_fuzzers_starting_point_loads():
    m = _load(json.dumps(VALID), check_files=True)
    assert m.kv.bytes_per_position == 2 * 2 * 2 * 16 * 4 and m.tokenizer.eos_ids == (2,)


@st.composite
def mutated(draw):
    """The valid manifest with 1-3 edits at random places: a value replaced, a key deleted or added."""
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        node = data
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node, key=str)) if isinstance(node, dict) else st.integers(0, len(node) - 1))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node = node[key]
        if isinstance(node, list):
            if node:
                node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
            else:
                node.append(draw(json_values))
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not node:
            node[draw(st.text(max_size=8))] = draw(json_values)
        elif action == "delete":
            del node[draw(st.sampled_from(sorted(node)))]
        else:
            node[draw(st.sampled_from(sorted(node)))] = draw(json_values)
    return data


@fuzz(300)
@given(data=mutated(), check_files=st.booleans())
def test_mutated_manifests_load_or_raise_package_error(data, check_files):
    try:
        m = _load(json.dumps(data), check_files=check_files)
    except PackageError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert m.format_version == 2


@fuzz(150)
@given(edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=5),
       cut=st.one_of(st.none(), st.integers(0, 2000)))
def test_corrupted_bytes_load_or_raise_package_error(edits, cut):
    raw = bytearray(json.dumps(VALID).encode())
    for at, value in edits:
        raw[at % len(raw)] = value
    try:
        _load(bytes(raw[:cut]), check_files=True)
    except PackageError:
        pass


@fuzz(100)
@given(value=json_values)
def test_any_json_document_loads_or_raises_package_error(value):
    try:
        _load(json.dumps(value), check_files=True)
    except PackageError:
        pass
