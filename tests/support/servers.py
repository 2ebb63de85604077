"""Real servers for tests: any ASGI app under uvicorn in a thread (with the gateway's own HTTP
protocol, as `gateway serve` runs), and `gateway serve` as a process, each on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

import httpx
import uvicorn

from gateway.cli import HTTP_PROTOCOL
from tests.engines.vllm_engine import free_port


class ThreadedServer:
    """Runs an ASGI app with uvicorn (uvloop, the gateway's protocol) on 127.0.0.1, port 0 (or
    `port`: a server that appears where a gateway already looks)."""

    def __init__(self, app: Any, port: int = 0, **config: Any) -> None:
        self._config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            log_level="warning",
            access_log=False,
            **{"http": HTTP_PROTOCOL, **config},
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


def until_ready(url: str, timeout: float = 30.0) -> None:
    """Waits (at most `timeout` seconds) for a gateway's `/ready` to answer 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)


@contextlib.contextmanager
def gateway_process(
    env: Mapping[str, str],
    *args: str,
    output: int | IO[str] = subprocess.DEVNULL,
    graceful: bool = True,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python -m gateway serve` on a free port, configured by `env` alone, once ready.

    On exit a process the test has not stopped gets SIGTERM and is waited for (`graceful`), or
    is killed. `output` takes its stdout and stderr: a file, or PIPE for the test to read.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), *args],
        env=dict(env), stdout=output, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        until_ready(url)
        yield url, process
    finally:
        if process.poll() is None:
            if graceful:
                process.send_signal(signal.SIGTERM)
            else:
                process.kill()
            process.wait(timeout=30)
