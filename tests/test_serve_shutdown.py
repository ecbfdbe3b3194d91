"""Stopping `edge-llm serve` as a user does (Ctrl-C, SIGTERM) while requests run, a port already in
use, and --threads checked as chat's is: one line each, no traceback, OpenAI-shaped errors for the
requests cut short (a stream ends with an error event and [DONE])."""
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_helpers import NO_EOS, Serve, free_port  # noqa: E402

# a plain completion with eos banned runs to the end of the context (2,048 tokens, seconds): no chat
# stop string can end it early, as one may end a sampled (or even a greedy) chat reply
ASK = {"prompt": "In the beginning", "max_tokens": 5000, "temperature": 0, "logit_bias": NO_EOS}


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "edge-llm: interrupted"),
                                             (signal.SIGTERM, 143, "edge-llm: terminated")])
def test_stopping_mid_request_answers_every_client_without_a_traceback(sig, code, said):
    got = {}
    with Serve("--max-tokens", "0") as s:        # 0: replies run to the context (2048 tokens), seconds
        url = f"http://127.0.0.1:{s.port}/v1/completions"

        def plain():
            r = httpx.post(url, json=ASK, timeout=60)
            got["plain"] = (r.status_code, r.json())

        def stream():
            with httpx.stream("POST", url, json={**ASK, "stream": True}, timeout=60) as r:
                got["stream"] = [line for line in r.iter_lines() if line]

        clients = [threading.Thread(target=f) for f in (plain, stream)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{s.port}/health").json()["running"] < 2:
            assert time.monotonic() < deadline, ("the two requests never ran", got.get("plain", (0, {}))[1].get("usage"), len(got.get("stream", [])))
            time.sleep(0.05)
        s.proc.send_signal(sig)
        s.proc.wait(30)
        for c in clients:
            c.join(30)
    status, body = got["plain"]
    assert status == 503 and body["error"]["type"] == "server_error" and "shutting down" in body["error"]["message"]
    events = got["stream"]
    assert events[-1] == "data: [DONE]"
    assert "shutting down" in json.loads(events[-2][len("data: "):])["error"]["message"]
    assert s.returncode == code
    assert "Traceback" not in s.stderr and "Error" not in s.stderr, s.stderr
    assert s.stderr.strip().splitlines()[-1] == said


def test_a_port_in_use_is_one_line_before_the_banner():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "edge_llm", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == f"edge-llm: error: port {port} on 127.0.0.1 is already in use (another server?); " \
                       f"choose another with --port\n"


def test_serve_refuses_thread_counts_as_chat_does(monkeypatch):
    from click.testing import CliRunner

    from edge_llm import api, session
    from edge_llm.cli import main
    monkeypatch.setattr(session, "physical_cores", lambda: 3)
    monkeypatch.setattr(api.Model, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    for flag in ("--threads", "-t"):
        r = CliRunner().invoke(main, ["serve", "--port", str(free_port()), flag, "7"])
        assert r.exit_code == 2 and "7 threads on 3 physical core(s): use 1..6" in r.stderr, r.output
