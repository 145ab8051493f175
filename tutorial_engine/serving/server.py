"""Run the app with uvicorn: in the foreground (``python -m tutorial_engine serve``), or
in a background thread on a free loopback port (tests, notebooks, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` at ``url`` (e.g.
    ``http://127.0.0.1:54321``) until the block ends; the app's lifespan runs inside.

    Args:
        app: the ASGI app, e.g. from :func:`build_app`.
        host: the interface to bind; loopback by default, so nothing outside the
            machine can connect.
        port: 0 picks a free port.

    Raises:
        RuntimeError: when the server does not start within ``timeout`` seconds.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> None:
        self.socket = socket.create_server((host, port))  # bound here, so the port is known before serving
        self.url = f"http://{host}:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.timeout = timeout

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
