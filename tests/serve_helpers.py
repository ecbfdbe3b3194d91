"""A real uvicorn server on a free loopback port, in a thread of the test process (tests/test_serve*.py)."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from edge_llm.api import Model
from edge_llm.paths import BUNDLED

GREEDY = {"temperature": 0}
NO_EOS = {"2": -100}     # the bundled model's eos id: ban it to make a reply run to max_tokens


class ServerThread:
    def __init__(self, model: Model | None = None, *, api_key: str | None = None, slots: int = 2, max_queue: int = 4,
                 cache_bytes: int = 64 << 20, max_body_bytes: int = 1 << 20, context_length: int | None = None,
                 allowed_hosts=None, max_tokens: int | None = 1024):
        import uvicorn

        from edge_llm.serve.app import build_app
        from edge_llm.serve.engine import Engine
        self.model = model or Model.load(BUNDLED, threads=1, context_length=context_length)
        self.engine = Engine(self.model, name="tiny", slots=slots, max_queue=max_queue, cache_bytes=cache_bytes)
        app = build_app(self.engine, api_key=api_key, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts,
                        max_tokens=max_tokens)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.engine.start()
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.close()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no request is running or queued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.engine.active and not self.engine.pending:
                return True
            time.sleep(0.01)
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`edge-llm serve` in a subprocess on a free port, as a user starts it."""

    def __init__(self, *args):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_llm", "serve", "--port", str(self.port),
                                      "--threads", "1", "--log-level", "warning", *args],
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self):
        import httpx
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("edge-llm serve did not start: " + self.proc.stderr.read())
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.returncode = self.proc.returncode
