"""Load client for streams in engine steps: opens C streams together, times every chunk's delay.

Usage: ``python burst_client.py URL --streams C --chunks N``; prints ``opened`` once every
stream has its first event, then one JSON object, on stdout.

Against ``sse_upstream.py --tick-ms``, every chunk carries its index and its send time
(``ticks.py``, on the one monotonic clock of this machine); this client times when each is read
(``data_received``), and ``burst_stats.py`` turns that into delays and gaps. Counted are the
chunks the upstream sent after every stream had its first event: the burst of opens is the first
token's business, not the relay's.

Same build as ``sse_client.py``: a raw asyncio protocol on uvloop with httptools' C parser, no
task per stream. Each connection carries one stream.

``--sweep-ms MS``: after its first event, each stream's socket is read only every MS ms (all
that came meanwhile at once), for the reader beside a gateway that asks whether reading in bulk
costs the relay less ("The shadow's floor"); its delays then say when it read, not when the
chunks came.
"""

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools
import orjson
import uvloop
from burst_stats import Arrival, Stream, by_index, summarise
from sse_client import request_bytes
from ticks import stamps


class BurstStream(asyncio.Protocol):
    """Sends one stream request and records every stamped chunk as it is read."""

    def __init__(self, request: bytes, first: "FirstEvents", sweeps: "Sweeps | None") -> None:
        self.request, self.first, self.sweeps = request, first, sweeps
        self.stream = Stream()
        self.parser = httptools.HttpResponseParser(self)
        self.pending = b""  # the start of an event whose end has not come yet
        self.now = 0.0
        self.batch = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.stream.started = time.monotonic()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic()
        self.batch += 1
        if self.sweeps is not None and self.stream.arrivals and self.transport is not None:
            self.sweeps.hold(self.transport)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.finish(error=True)

    def on_status(self, status: bytes) -> None:
        self.stream.error = self.parser.get_status_code() != 200

    def on_body(self, body: bytes) -> None:
        data = self.pending + body
        cut = data.rfind(b"\n\n") + 2
        self.pending = data[cut:]
        arrivals = self.stream.arrivals
        for stamp in stamps(data[:cut]):
            if not arrivals:
                self.first.arrived(self.now)
            arrivals.append(Arrival(stamp.index, stamp.sent, self.now, self.batch))

    def on_message_complete(self) -> None:
        self.stream.complete = True
        self.finish(error=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.finish(error=not self.stream.complete)

    def finish(self, error: bool) -> None:
        self.stream.error = self.stream.error or error
        if not self.stream.arrivals:
            self.first.arrived(self.now)  # it will not come: stop waiting for it
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if not self.done.done():
            self.done.set_result(None)


class Sweeps:
    """Sockets held unread until the next sweep, every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.held: list[asyncio.Transport] = []

    def hold(self, transport: asyncio.Transport) -> None:
        transport.pause_reading()
        self.held.append(transport)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            held, self.held = self.held, []
            for transport in held:
                if not transport.is_closing():
                    transport.resume_reading()


class FirstEvents:
    """Says ``opened`` once every stream has its first event (or ended without one)."""

    def __init__(self, streams: int) -> None:
        self.left = streams
        self.at = 0.0

    def arrived(self, now: float) -> None:
        self.left -= 1
        if self.left == 0:
            self.at = now
            sys.stdout.write("opened\n")
            sys.stdout.flush()


async def one_stream(url: str, request: bytes, first: FirstEvents, sweeps: Sweeps | None) -> Stream:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    protocol = BurstStream(request, first, sweeps)
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        await loop.create_connection(lambda: protocol, host, port)
    except OSError:
        protocol.finish(error=True)
    await protocol.done
    return protocol.stream


async def run(args: argparse.Namespace) -> dict[str, object]:
    gc.freeze()
    gc.disable()  # one round, every sample kept until the end: nothing for the collector
    request = request_bytes(args.url, args.chunks)
    sweeps = Sweeps(args.sweep_ms / 1000.0) if args.sweep_ms > 0 else None
    sweeping = None if sweeps is None else asyncio.create_task(sweeps.run())
    first = FirstEvents(args.streams)
    cpu_before, wall_before = os.times(), time.monotonic()
    streams = await asyncio.gather(
        *(one_stream(args.url, request, first, sweeps) for _ in range(args.streams))
    )
    if sweeping is not None:
        sweeping.cancel()
    cpu_after, wall_after = os.times(), time.monotonic()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    summary = summarise(streams, args.chunks, first.at)
    if args.by_index:
        summary["delay_p99_ms_by_index"] = by_index(streams, first.at)
    summary["client_cpu_pct"] = round(100.0 * cpu / max(wall_after - wall_before, 1e-9), 1)
    summary["opened_s"] = round(first.at - wall_before, 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL, without /v1")
    parser.add_argument("--streams", type=int, default=1000, help="streams opened together")
    parser.add_argument("--chunks", type=int, default=20, help="events the upstream sends")
    parser.add_argument("--by-index", action="store_true", help="delay p99 per chunk index")
    parser.add_argument("--sweep-ms", type=int, default=0, help="read only every MS after a "
                        "stream's first event (0: as chunks come)")  # fmt: skip
    result = uvloop.run(run(parser.parse_args()))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
