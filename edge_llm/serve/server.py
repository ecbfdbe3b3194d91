"""Uvicorn, held so that stopping is graceful: the listening socket is bound before the model loads
(a port in use is one line, not a banner then uvicorn's error), and on Ctrl-C or SIGTERM every queued
and running request is ended with an OpenAI error object (streams: an error event, then `[DONE]`)
before uvicorn waits for replies — so nothing is cut off, nothing is cancelled mid-handler and no
traceback is printed. The signal is then reported to the caller instead of being re-raised."""
from __future__ import annotations

import contextlib
import errno
import socket

import uvicorn

from ..errors import EdgeLLMError
from .engine import Engine

GRACE_S = 30      # uvicorn's wait for replies after the engine has ended them (a second Ctrl-C skips it)


class PortInUse(EdgeLLMError):
    pass


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (as uvicorn binds it), or one line saying why not."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise EdgeLLMError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use (another server?); choose another with "
                            f"--port") from None
        raise EdgeLLMError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)        # from now on clients queue (not refused) while the model loads; uvicorn accepts them
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn.Server that ends the engine's requests first when shutdown begins; `signals` lists the
    signals that stopped it (uvicorn would re-raise them, which prints a KeyboardInterrupt traceback)."""

    def __init__(self, config: uvicorn.Config, engine: Engine):
        super().__init__(config)
        self.engine = engine
        self.signals: list[int] = []

    async def shutdown(self, sockets=None) -> None:
        self.engine.stop()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            try:
                yield
            finally:
                self.signals, self._captured_signals[:] = list(self._captured_signals), []
