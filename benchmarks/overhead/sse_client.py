"""Streaming load client: holds C concurrent SSE streams and timestamps every chunk.

Usage: ``python sse_client.py URL --streams C --duration S --chunks N [--warmup S]``; prints one
JSON object on stdout.

Each of the C workers opens a stream, reads it to the end, and opens the next (closed loop) on
its own keep-alive connection. Workers start spread over one stream's length, so in steady state
chunks arrive evenly rather than in lockstep. A chunk's time is when its bytes were read
(``iter_any``: no buffering beyond what the socket already holds). TTFT runs from sending the
request to reading the first event; a gap is the time between two consecutive events of one
stream. Only streams started after the warm-up count. The client's own CPU use is reported
(``client_cpu_pct``, percent of one core) so a run can tell whether the client kept up.
"""

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter

import aiohttp
import orjson
import uvloop

from gateway.stats import percentile

HEADERS = {"content-type": "application/json"}
EVENT = b"data: {"  # a content event; `data: [DONE]` is not one


def request_body(chunks: int) -> bytes:
    """A streamed chat request; the benchmark's upstream sends ``max_tokens`` events."""
    return orjson.dumps(
        {
            "model": "phi-3-mini-4k-instruct",
            "messages": [{"role": "user", "content": "Tell me a short story."}],
            "max_tokens": chunks,
            "stream": True,
        }
    )


@dataclass
class Tally:
    """Samples of the streams that count, and what went wrong."""

    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    streams: int = 0
    errors: int = 0
    short: int = 0  # streams that ended with fewer events than the upstream sends


async def one_stream(session: aiohttp.ClientSession, url: str, chunks: int, tally: Tally) -> None:
    """Read one stream; record its TTFT and gaps."""
    arrivals: list[float] = []
    body = request_body(chunks)
    started = perf_counter()
    async with session.post(url, data=body, headers=HEADERS) as resp:
        if resp.status != 200:
            await resp.read()
            tally.errors += 1
            return
        async for data in resp.content.iter_any():
            now = perf_counter()
            arrivals.extend([now] * data.count(EVENT))
    if len(arrivals) < chunks:
        tally.short += 1
    if arrivals:
        tally.ttft.append(arrivals[0] - started)
        tally.gaps.extend(b - a for a, b in pairwise(arrivals))
    tally.streams += 1


async def worker(
    session: aiohttp.ClientSession, url: str, chunks: int, spread: float, times: tuple[float, float]
) -> Tally:
    """One connection's closed loop until the end time; counts streams started after warm-up."""
    counted, idle = Tally(), Tally()
    warm_end, end = times
    await asyncio.sleep(random.uniform(0.0, spread))
    while time.monotonic() < end:
        tally = counted if time.monotonic() >= warm_end else idle
        try:
            await one_stream(session, url, chunks, tally)
        except (aiohttp.ClientError, TimeoutError):
            tally.errors += 1
            await asyncio.sleep(0.05)
    return counted


async def run(args: argparse.Namespace) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
    url = args.url.rstrip("/") + "/v1/chat/completions"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm_end = time.monotonic() + args.warmup
        times = (warm_end, warm_end + args.duration)
        cpu_before, wall_before = os.times(), time.monotonic()
        jobs = [worker(session, url, args.chunks, args.spread, times) for _ in range(args.streams)]
        tallies = await asyncio.gather(*jobs)
        cpu_after, wall_after = os.times(), time.monotonic()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return summarise(tallies, 100.0 * cpu / max(wall_after - wall_before, 1e-9))


def summarise(tallies: list[Tally], cpu_pct: float) -> dict[str, object]:
    """Percentiles in milliseconds over every counted stream."""
    ttft = [t for tally in tallies for t in tally.ttft]
    gaps = [g for tally in tallies for g in tally.gaps]

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) * 1000.0, 4) if values else None

    return {
        "streams": sum(t.streams for t in tallies),
        "errors": sum(t.errors for t in tallies),
        "short_streams": sum(t.short for t in tallies),
        "events": len(gaps) + len(ttft),
        "ttft_p50_ms": ms(ttft, 50),
        "ttft_p99_ms": ms(ttft, 99),
        "gap_p50_ms": ms(gaps, 50),
        "gap_p99_ms": ms(gaps, 99),
        "gap_p999_ms": ms(gaps, 99.9),
        "client_cpu_pct": round(cpu_pct, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL, without /v1")
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds counted")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument("--chunks", type=int, default=20, help="events the upstream sends")
    parser.add_argument("--spread", type=float, default=0.0, help="start workers over S seconds")
    result = uvloop.run(run(parser.parse_args()))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
