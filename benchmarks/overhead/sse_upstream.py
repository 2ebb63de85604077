"""A zero-work OpenAI upstream that streams N chat chunks at a fixed inter-token delay.

Usage: ``python sse_upstream.py [--port P] [--chunks N] [--delay-ms D] [--tick-ms T]``

nginx cannot pace a response (``return`` sends everything at once), so this is a raw asyncio
protocol on uvloop with httptools' C parser: no framework, every byte pre-built, one timer per
chunk scheduled on an absolute clock (``call_at``), so delays do not drift. Each stream sends its
first chunk at once, then one every ``delay`` (vLLM's shape: one event per token, chunked
transfer encoding), then ``[DONE]``; N is the request's ``max_tokens``, else ``--chunks``. A
POST without ``"stream":true`` gets a static completion; ``GET /health`` and ``GET /v1/models``
answer what the gateway's health check reads.

With ``--tick-ms T`` the streams run in engine steps instead (``ticks.py``): after its first
chunk, every open stream gets its next one on the same tick, every T ms, and each chunk carries
its index and its send time, for ``burst_client.py`` to measure each chunk's delay.
"""

import argparse
import asyncio
import re
from typing import cast

import httptools
import uvloop
from ticks import TickedStream, Ticker

MODEL = "phi-3-mini-4k-instruct"
STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')
MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
TOKEN_IDS_FLAG = re.compile(rb'"return_token_ids"\s*:\s*true')  # a shadowed request asks
CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1763700000,'
    b'"model":"' + MODEL.encode() + b'","choices":[{"index":0,"delta":{"content":" ok"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
COMPLETION = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1763700000,"model":"'
    + MODEL.encode()
    + b'","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":96,"completion_tokens":1,'
    b'"total_tokens":97}}'
)
MODELS = b'{"object":"list","data":[{"id":"' + MODEL.encode() + b'","object":"model"}]}'
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
)


def framed(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of the chunked transfer encoding."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def json_response(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


FRAMED_CHUNK = framed(CHUNK)
STREAM_END = framed(DONE) + b"0\r\n\r\n"
RESPONSES = {b"/health": json_response(b"{}"), b"/v1/models": json_response(MODELS)}


class Stream:
    """Paces one response's chunks on ``transport``; stops when the connection goes."""

    def __init__(self, transport: asyncio.Transport, chunks: int, delay: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.left = chunks
        self.delay = delay
        self.next_at = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        transport.write(SSE_HEAD)
        self.tick()

    def tick(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        self.left -= 1
        if self.left <= 0:
            self.transport.write(FRAMED_CHUNK + STREAM_END)
            return
        self.transport.write(FRAMED_CHUNK)
        self.next_at += self.delay
        self.timer = self.loop.call_at(self.next_at, self.tick)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class Upstream(asyncio.Protocol):
    """One keep-alive connection; httptools calls ``on_url``/``on_body``/``on_message_complete``."""

    def __init__(self, chunks: int, delay: float, ticker: Ticker | None) -> None:
        self.chunks = chunks
        self.delay = delay
        self.ticker = ticker
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body = b""
        self.stream: Stream | TickedStream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.stream.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() == b"GET":
            self.transport.write(RESPONSES.get(self.url, RESPONSES[b"/health"]))
        elif STREAM_FLAG.search(self.body):
            asked = MAX_TOKENS.search(self.body)
            chunks = int(asked[1]) if asked else self.chunks
            if self.ticker is not None:
                ids = TOKEN_IDS_FLAG.search(self.body) is not None
                self.stream = self.ticker.open(self.transport, SSE_HEAD, chunks, ids)
            else:
                self.stream = Stream(self.transport, chunks, self.delay)
        else:
            self.transport.write(json_response(COMPLETION))


async def serve(port: int, chunks: int, delay: float, tick: float, phase: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick, MODEL, phase) if tick > 0 else None
    server = await loop.create_server(
        lambda: Upstream(chunks, delay, ticker), "127.0.0.1", port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)  # procs.start_script reads the port here
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: the kernel picks (printed)")
    parser.add_argument("--chunks", type=int, default=20, help="events without max_tokens")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="inter-token delay")
    parser.add_argument("--tick-ms", type=float, default=0.0, help="engine steps (0: paced)")
    parser.add_argument(
        "--tick-phase", type=float, default=0.0, help="the steps' offset, in steps (0 to 1)"
    )
    args = parser.parse_args()
    delay, tick = args.delay_ms / 1000.0, args.tick_ms / 1000.0
    uvloop.run(serve(args.port, max(args.chunks, 1), delay, tick, args.tick_phase))


if __name__ == "__main__":
    main()
