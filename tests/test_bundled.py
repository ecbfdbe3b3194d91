"""The bundled package (edge_llm/bundled/minicpm-tiny-int4) is what the current exporter makes of the fixture."""
import json

import numpy as np
from conftest import NEEDS_SHARED

from edge_llm.cli import BUNDLED
from edge_llm.manifest import load_manifest


def test_bundled_package_loads_and_chats():
    from edge_llm.api import Model
    model = Model.load(BUNDLED, threads=1)
    recs = list(model.chat([{"role": "user", "content": "Quote John 3:16."}], max_new_tokens=8))
    assert recs and all(r.finish_reason is None for r in recs[:-1])


@NEEDS_SHARED
def test_bundled_package_in_step_with_exporter(tiny_int4):
    """Same manifest contract and recipe, and the same weights up to float rounding on another CPU."""
    ours, fresh = load_manifest(BUNDLED).data, load_manifest(tiny_int4).data
    for key in ("format_version", "model", "io", "kv_cache", "quantization", "tokenizer", "chat", "generation"):
        a, b = ours[key], fresh[key]
        if key == "quantization":
            a = {k: v for k, v in a.items() if k not in ("worst_tensor", "mean_rel_rms_error")}
            b = {k: v for k, v in b.items() if k not in ("worst_tensor", "mean_rel_rms_error")}
        assert a == b, f"manifest section '{key}' differs: re-export the bundled package (see README)"
    assert ours["source"]["sha256"] == fresh["source"]["sha256"]
    x = np.fromfile(BUNDLED / "model.onnx.data", np.uint8)
    y = np.fromfile(tiny_int4 / "model.onnx.data", np.uint8)
    assert x.shape == y.shape
    assert (x != y).mean() < 0.01, "bundled weights differ from a fresh export"
    g1 = json.loads((BUNDLED / "genai_config.json").read_text())
    g2 = json.loads((tiny_int4 / "genai_config.json").read_text())
    assert g1 == g2
