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
def test_load_script_passes_every_check(tmp_path):
    out = tmp_path / "load.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--clients", "8", "--requests", "6",
                        "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(out.read_text())
    assert s["errors"] == 0 and s["wrong_text"] == 0 and s["completed"] > 0
    assert s["rejected_429"] + s["completed"] + s["disconnected_mid_stream"] == s["requests"] == 48
    assert s["healthy"] and s["idle_after"] and abs(s["rss_change"]) <= 0.05
