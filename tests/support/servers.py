"""Real servers for tests: any ASGI app under uvicorn, in a thread, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn


class ThreadedServer:
    """Runs an ASGI app with uvicorn (uvloop, httptools) on 127.0.0.1, port 0."""

    def __init__(self, app: Any, **config: Any) -> None:
        self._config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            **config,
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self, timeout: float = 30.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(app: Any, **config: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, **config).start()
    try:
        yield server
    finally:
        server.stop()
