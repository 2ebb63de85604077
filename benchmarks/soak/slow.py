"""Slow clients: ``count`` connections open at every moment, each sending its request a byte a
second (half their head, half their body after a whole head), as a slowloris attack does.

The gateway must answer each with 408 at its timeout and close it; a slot whose connection
ends opens a new one at once, so the gateway holds about ``count`` slow connections all run.
"""

import asyncio
import math
import time
from dataclasses import dataclass

from benchmarks.soak.load import MODEL

BODY = b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"slow"}]}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
HEAD += b"Content-Length: %d\r\n\r\n" % len(BODY)


@dataclass(frozen=True)
class SlowResult:
    """One slow connection: what it trickled, when its timeout's clock started, when the
    gateway answered (inf: still open at the end), and the answer's status (0: none)."""

    kind: str  # "head" or "body"
    started: float
    answered: float
    status: int


async def slowloris(url: str, count: int, until: float) -> list[SlowResult]:
    """Keeps ``count`` slow connections open until monotonic ``until``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    results: list[SlowResult] = []

    async def slot(index: int) -> None:
        kind = "head" if index % 2 else "body"
        while time.monotonic() < until:
            results.append(await one(host, int(port), kind, until))

    await asyncio.gather(*(slot(i) for i in range(count)))
    return results


async def one(host: str, port: int, kind: str, until: float) -> SlowResult:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return SlowResult(kind, time.monotonic(), math.inf, 0)
    if kind == "body":
        writer.write(HEAD)
    data = HEAD if kind == "head" else BODY
    started = time.monotonic()
    trickling = asyncio.ensure_future(trickle(writer, data))
    answer, answered = b"", math.inf
    try:
        async with asyncio.timeout(max(until - time.monotonic(), 0.0)):
            answer = await reader.read(64)
            answered = time.monotonic()
            await reader.read()  # to the close
    except (TimeoutError, OSError):
        pass  # still open at the end of the run, or reset after its answer
    finally:
        trickling.cancel()
        writer.close()
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return SlowResult(kind, started, answered, status)


async def lag(until: float, every: float = 0.05) -> list[tuple[float, float]]:
    """How late this client's own loop wakes: (when, seconds late), every ``every`` s. A slow
    client sees its 408 that much after the gateway sent it, which is not the gateway's doing."""
    seen = []
    while (now := time.monotonic()) < until:
        await asyncio.sleep(every)
        woke = time.monotonic()
        seen.append((woke, max(woke - now - every, 0.0)))
    return seen


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await asyncio.sleep(1.0)
