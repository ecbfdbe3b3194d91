"""The committed load test (benchmarks/serve_load.py), small: slow, run with `pytest -m slow`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("package", ["bundled", "float32-activations"])
def test_load_script_passes_every_check(tmp_path, package):
    """The bundled package (int8 activations): batched rows may leave the lone text at near-ties (counted,
    not failed); a float32-activation package exported here: every reply equals its lone text."""
    out = tmp_path / "load.json"
    extra = []
    if package != "bundled":
        from edge_llm.export.exporter import export_checkpoint
        from edge_llm.export.recipe import Recipe
        export_checkpoint(ROOT / "tests" / "data" / "tiny-families" / "llama", tmp_path / "pkg",
                          recipe=Recipe(accuracy_level=0))
        extra = ["--package", str(tmp_path / "pkg")]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--clients", "8", "--requests", "6",
                        "--threads", "1", "--json", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(out.read_text())
    assert s["rows_exact"] == (package != "bundled")
    assert s["errors"] == 0 and s["completed"] > 0
    if s["rows_exact"]:
        assert s["wrong_text"] == 0
    assert s["rejected_429"] + s["completed"] + s["disconnected_mid_stream"] == s["requests"] == 48
    assert s["healthy"] and s["idle_after"] and abs(s["rss_change"]) <= 0.05
