"""`edge-llm serve` as a user runs it: a subprocess, the documented curl and Python examples word for
word (only the port changed), --metrics-log, and the warning for a non-loopback bind without a key."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_helpers import Serve, free_port  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


def doc_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_documented_examples_work_as_written(tmp_path):
    log = tmp_path / "replies.jsonl"
    with Serve("--metrics-log", str(log)) as s:
        curls = [b for b in doc_blocks("sh") if b.lstrip().startswith("curl")]
        assert len(curls) >= 4
        for block in curls:
            cmd = block.replace("127.0.0.1:8080", f"127.0.0.1:{s.port}")
            r = subprocess.run(["bash", "-o", "pipefail", "-ec", cmd], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, (block, r.stdout, r.stderr)
            out = r.stdout.strip()
            assert out and "error" not in out.lower(), (block, out)
            if '"stream": true' in block:
                assert out.endswith("data: [DONE]") and '"usage": {' in out
            elif "/metrics" not in block:
                json.loads(out.splitlines()[0])
        py = [b for b in doc_blocks("python") if "OpenAI(" in b][0].replace("127.0.0.1:8080", f"127.0.0.1:{s.port}")
        r = subprocess.run([sys.executable, "-c", py], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 5                                  # chat, stream, completion, ollama, python
    assert all(x["energy"] in ("estimated", "measured") and x["generated_tokens"] > 0 for x in lines)


def test_non_loopback_bind_without_a_key_warns():
    with Serve("--host", "0.0.0.0") as s:
        pass
    assert "WARNING" in s.stderr and "API key" in s.stderr
    env = {**os.environ, "EDGE_LLM_API_KEY": "k"}
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "edge_llm", "serve", "--host", "0.0.0.0", "--port", str(port),
                          "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.status_code == 401                        # the key from the environment is required
    finally:
        p.terminate()
        p.wait(15)
    assert "WARNING" not in p.stderr.read()


def test_prompt_cache_default_is_an_eighth_of_available_memory(monkeypatch):
    from edge_llm import session
    from edge_llm.serve.cli import default_cache_mb
    for avail_mib, want in ((2048, 256), (16384, 1024), (64, 16), (None, 1024)):
        monkeypatch.setattr(session, "available_memory", lambda a=avail_mib: None if a is None else a * 2 ** 20)
        assert default_cache_mb() == want, avail_mib
