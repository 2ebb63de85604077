"""The soak's upstream: ``tests/support/fake_upstream.py`` under uvicorn, in its own process.

It answers like an OpenAI engine unless a request's cue asks for a fault (see ``plan.py``).
``crash`` kills its process group with SIGKILL, as an engine crash would: the kernel resets every
open connection and new ones are refused until ``restart`` serves again on the same port.
"""

import asyncio
import os
import signal
import sys
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.upstream_client.servers import UVICORN_PORT, Child, spawn, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = ["tests.support.fake_upstream:FakeUpstream", "--factory", "--app-dir", str(ROOT)]
FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "info"]


@dataclass
class FakeUpstreamProcess:
    """The upstream child; ``outages`` lists (down, up) times, monotonic seconds."""

    stack: ExitStack
    tmpdir: Path
    port: int = 0
    child: Child | None = None
    starts: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeUpstreamProcess":
        """Serve on ``port`` (0 at first: the kernel picks, uvicorn logs the choice)."""
        log = self.tmpdir / f"upstream-{self.starts}.log"
        self.starts += 1
        listen = ["--host", "127.0.0.1", "--port", str(self.port)]
        command = [sys.executable, "-m", "uvicorn", *APP, *listen, *FLAGS]
        child = spawn(self.stack, command, log, dict(os.environ))

        def bound_port() -> int | None:
            found = UVICORN_PORT.search(log.read_text(errors="replace"))
            return int(found[1]) if found else None

        self.port = wait_for(bound_port, child, log)
        self.child = child
        return self

    def crash(self) -> None:
        assert self.child is not None
        with suppress(ProcessLookupError):
            os.killpg(self.child.pid, signal.SIGKILL)
        self.child.wait()


async def outage(upstream: FakeUpstreamProcess, at: float, seconds: float) -> None:
    """Kill the upstream at monotonic time ``at``; start it again ``seconds`` later."""
    await asyncio.sleep(max(at - time.monotonic(), 0.0))
    upstream.crash()
    down = time.monotonic()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(upstream.start)
    upstream.outages.append((down, time.monotonic()))
