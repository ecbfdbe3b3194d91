"""One manifest schema on both sides: the exporter writes the dataclasses that load_manifest reads."""
import json
import shutil

import pytest

from edge_llm.errors import PackageError
from edge_llm.manifest import KV_DTYPES, AccuracySpec, load_manifest, to_json
from edge_llm.paths import BUNDLED


def test_sections_round_trip_through_their_dataclasses():
    """Written packages (the committed bundled one included) read back to the same JSON."""
    m = load_manifest(BUNDLED)
    data = json.loads((BUNDLED / "manifest.json").read_text(encoding="utf-8"))
    assert to_json(m.model) == data["model"]
    assert to_json(m.kv) == data["kv_cache"]
    assert to_json(m.io) == data["io"]
    assert to_json(m.tokenizer) == data["tokenizer"]
    assert to_json(m.chat) == data["chat"]
    assert m.kv.dtype in KV_DTYPES


@pytest.mark.parametrize("quantization, expect", [
    ({}, AccuracySpec("int4", 4, "float32")),
    ({"precision": "fp32"}, AccuracySpec("fp32", 4, "float32")),
    ({"precision": "int4", "accuracy_level": 0, "scale_dtype": "float16", "block_size": 32},
     AccuracySpec("int4", 0, "float16")),
])
def test_accuracy_settings_are_typed(quantization, expect):
    assert AccuracySpec.of(quantization) == expect


def test_a_mistyped_accuracy_setting_is_a_package_error(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(BUNDLED, pkg)
    data = json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))
    data["quantization"]["accuracy_level"] = "four"
    (pkg / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PackageError, match=r"quantization\.accuracy_level"):
        load_manifest(pkg, check_files=False)
