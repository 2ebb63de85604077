"""Streaming load client: holds C concurrent SSE streams and timestamps every chunk.

Usage: ``python sse_client.py URL --streams C --duration S --chunks N [--warmup S]``; prints one
JSON object on stdout.

Each of the C connections sends a stream request, reads it to the end, and sends the next
(closed loop), on its own keep-alive connection. Connections start spread over one stream's
length, so in steady state chunks arrive evenly rather than in lockstep. A chunk's time is when
its bytes were read (``data_received``: nothing buffered beyond what the socket held). TTFT runs
from sending the request to reading the first event; a gap is the time between two consecutive
events of one stream. Only streams started after the warm-up count. The client's own CPU use is
reported (``client_cpu_pct``, percent of one core) so a run can tell whether the client kept up.

It is a raw asyncio protocol on uvloop with httptools' C parser, every request pre-built, no
task per stream: the aiohttp client it replaced used half a core at 1,000 streams and, sharing
core 0 with the upstream, added its own delays to the gaps it measured (benchmarks/README.md).
"""

import argparse
import asyncio
import gc
import os
import random
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from time import perf_counter
from typing import cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop

from gateway.stats import percentile

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


def request_bytes(url: str, chunks: int) -> bytes:
    parts = urlsplit(url)
    body = request_body(chunks)
    head = (
        f"POST {parts.path.rstrip('/')}/v1/chat/completions HTTP/1.1\r\nhost: {parts.netloc}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    """Samples of the streams that count, and what went wrong."""

    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    streams: int = 0
    errors: int = 0
    short: int = 0  # streams that ended with fewer events than the upstream sends


class StreamLoop(asyncio.Protocol):
    """One connection's closed loop of streams until the end time, all in callbacks."""

    def __init__(
        self, request: bytes, chunks: int, times: tuple[float, float], done: asyncio.Future[None]
    ) -> None:
        self.request, self.chunks, self.times, self.done = request, chunks, times, done
        self.tally = Tally()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.arrivals: list[float] = []
        self.started = 0.0
        self.counted = False
        self.failed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.send()

    def send(self) -> None:
        warm_end, end = self.times
        now = time.monotonic()
        if now >= end or self.transport is None:
            self.finish()
            return
        self.counted = now >= warm_end
        self.arrivals = []
        self.failed = False
        self.started = perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = perf_counter()
        events = data.count(EVENT)
        if events:
            self.arrivals.extend([now] * events)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.record_error()
            self.finish()

    def on_status(self, status: bytes) -> None:
        self.failed = self.parser.get_status_code() != 200

    def on_message_complete(self) -> None:
        if self.failed:
            self.record_error()
        elif self.counted:
            tally, arrivals = self.tally, self.arrivals
            if len(arrivals) < self.chunks:
                tally.short += 1
            if arrivals:
                tally.ttft.append(arrivals[0] - self.started)
                tally.gaps.extend(b - a for a, b in pairwise(arrivals))
            tally.streams += 1
        asyncio.get_running_loop().call_soon(self.send)  # not from inside the parser

    def record_error(self) -> None:
        if self.counted:
            self.tally.errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.started and not self.done.done():
            self.record_error()  # cut mid-stream, or closed by the server between streams
        self.transport = None
        self.finish()

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if not self.done.done():
            self.done.set_result(None)


async def one_connection(
    url: str, request: bytes, chunks: int, spread: float, times: tuple[float, float]
) -> Tally:
    await asyncio.sleep(random.uniform(0.0, spread))
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    protocol = StreamLoop(request, chunks, times, done)
    try:
        await loop.create_connection(
            lambda: protocol, parts.hostname or "127.0.0.1", parts.port or 80
        )
    except OSError:
        protocol.tally.errors += 1
        return protocol.tally
    await done
    return protocol.tally


async def run(args: argparse.Namespace) -> dict[str, object]:
    gc.freeze()  # samples grow to hundreds of thousands of floats: nothing for the collector
    request = request_bytes(args.url, args.chunks)
    warm_end = time.monotonic() + args.warmup
    times = (warm_end, warm_end + args.duration)
    cpu_before, wall_before = os.times(), time.monotonic()
    jobs = [
        one_connection(args.url, request, args.chunks, args.spread, times)
        for _ in range(args.streams)
    ]
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
