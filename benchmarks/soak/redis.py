"""The soak's Redis, which holds the gateway's shared rate limits: Debian's redis-server in its
own process, stopped mid-run and started again on the same port (``outage``), as a Redis
restart does. The gateway must keep serving meanwhile, counting its limits alone."""

import asyncio
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.upstream_client.servers import Child, free_port, spawn, stop, wait_for


@dataclass
class RedisProcess:
    """``redis-server`` on 127.0.0.1; ``outages`` lists (down, up) times, monotonic seconds."""

    stack: ExitStack
    tmpdir: Path
    port: int = field(default_factory=free_port)
    child: Child | None = None
    outages: list[tuple[float, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProcess":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing (Debian: apt-get install redis-server)")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.tmpdir)]
        log = self.tmpdir / "redis.log"
        self.child = spawn(self.stack, command, log, {})
        wait_for(lambda: self.port if "Ready to accept" in log.read_text() else None,
                 self.child, log)  # fmt: skip
        return self

    def stop(self) -> None:
        if self.child is not None:
            stop(self.child)
            self.child = None


async def outage(redis: RedisProcess, at: float, seconds: float) -> None:
    """Stop Redis at monotonic time ``at``; start it again ``seconds`` later."""
    await asyncio.sleep(max(at - time.monotonic(), 0.0))
    await asyncio.to_thread(redis.stop)
    down = time.monotonic()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(redis.start)
    redis.outages.append((down, time.monotonic()))
