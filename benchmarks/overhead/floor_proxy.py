"""The Python floor: the least a proxy can do in Python, for the overhead benchmark's bottom row.

Usage: ``python floor_proxy.py UPSTREAM_URL [--busy-poll-us N]`` (port 0; prints
``listening on PORT``; ``--busy-poll-us``: polls N µs after each write, as the gateway's
``GATEWAY_BUSY_POLL_US`` does)

A raw asyncio protocol on uvloop with httptools' C parser, forwarding each POST body as it is to
the upstream through the gateway's own upstream client (`backends.transport.http1`) and writing the
answer back in one write, gathered per turn of the loop as the gateway's are
(`backends/transport/write_batch.py`). A streamed request (a body with ``"stream":true``, as the SSE
load client writes it) is relayed chunk by chunk as it arrives, in chunked encoding, the head
leaving with the first chunk. No ASGI, no framework, no validation, no routing, no metrics, no
headers of its own: what is left is the loop, the two sockets and the two parsers, the work every
Python proxy on this machine must do. The framework-free ``raw ASGI + aiohttp`` row of
``../upstream_client`` is the floor the issue's reference numbers were taken against; this one is
lower still, so the distance from it to the gateway is the gateway's own cost.
"""

import argparse
import asyncio
import gc
import sys
from pathlib import Path
from typing import cast

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for backends

from backends.transport.busy_poll import BusyPoll
from backends.transport.http1 import HTTPError, Pool
from backends.transport.write_batch import batch_of

BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class FloorProxy(asyncio.Protocol):
    """One client connection; requests are answered in order (one at a time, as wrk sends)."""

    def __init__(self, pool: Pool, head: bytes) -> None:
        self.pool, self.head = pool, head
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.writes = batch_of(asyncio.get_running_loop())  # the loop's one batch, looked up once

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.writes.flush()
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        asyncio.get_running_loop().create_task(self.forward(body))

    async def forward(self, body: bytes) -> None:
        if b'"stream":true' in body:
            await self.relay(body)
            return
        try:
            answer = await self.pool.fetch(self.head, body)
            response = (
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                % (answer.status, len(answer.body), answer.body)
            )
        except HTTPError:
            response = BAD_GATEWAY
        if self.transport is not None:
            self.writes.write(self.transport, response)

    async def relay(self, body: bytes) -> None:
        writes = self.writes
        try:
            answer = await self.pool.open(self.head, body)
        except HTTPError:
            if self.transport is not None:
                writes.write(self.transport, BAD_GATEWAY)
            return
        head = STREAM_HEAD
        try:
            while (chunk := await answer.next_chunk()) is not None:
                if self.transport is None:
                    return
                writes.write(self.transport, head + b"%x\r\n%b\r\n" % (len(chunk), chunk))
                head = b""
            if self.transport is not None:
                writes.write(self.transport, head + b"0\r\n\r\n")
        except HTTPError:
            self.close()  # cut: the client must see it cut
        finally:
            answer.close()


async def serve(upstream: str, busy_poll_us: int) -> None:
    pool = Pool(
        upstream, limit=1100, keepalive=30.0, connect_timeout=2.0, read_timeout=60, total_timeout=60
    )
    head = pool.head("POST", "/v1/chat/completions", {"content-type": "application/json"})
    loop = asyncio.get_running_loop()
    if busy_poll_us:
        batch_of(loop).busy_poll = BusyPoll(busy_poll_us / 1e6)
    server = await loop.create_server(lambda: FloorProxy(pool, head), "127.0.0.1", 0, backlog=4096)
    gc.freeze()  # as the gateway does after its startup
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)  # procs.start_script reads the port here
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="base URL of the upstream")
    parser.add_argument("--busy-poll-us", type=int, default=0, help="µs polled after each write")
    args = parser.parse_args()
    uvloop.run(serve(args.upstream, args.busy_poll_us))
