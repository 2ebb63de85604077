"""Streams in engine steps: every open stream gets its next chunk on the same tick.

vLLM and TensorRT-LLM run every request in one decode step, so at each step every open stream
receives a chunk at the same moment. `Ticker` does that for ``sse_upstream.py --tick-ms``: one
callback per tick writes the next chunk of every stream it holds, on a grid of the monotonic
clock (ticks at whole multiples of the period, so they do not drift). A stream's first chunk
leaves when it opens; the rest leave on ticks. Each chunk's content is ``#<index>@<send
time>`` (``time.monotonic()``, the same clock in every process of this machine), which
``burst_client.py`` reads back with `stamps`.

    >>> chunk = event(b"m", 3, 12.5, last=False, ids=False)
    >>> [(s.index, s.sent) for s in stamps(chunk)]
    [(3, 12.5)]
"""

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

STAMP = re.compile(rb'"content":"#(\d+)@([0-9.]+)"')


@dataclass(frozen=True, slots=True)
class Stamp:
    index: int
    sent: float


def stamps(data: bytes) -> Iterator[Stamp]:
    """The stamps of the events in ``data``, in order."""
    for found in STAMP.finditer(data):
        yield Stamp(int(found[1]), float(found[2]))


def event(model: bytes, index: int, sent: float, last: bool, ids: bool) -> bytes:
    """One chat-completion chunk as vLLM streams it, stamped; with ``ids``, the token ids a
    shadowed request asked for (``return_token_ids``: the prompt's on the first chunk)."""
    finish = b'"length"' if last else b"null"
    token_ids = b"[%d]" % (1000 + index) if ids else b"null"
    prompt = b',"prompt_token_ids":[1,2,3,4,5,6,7,8]' if ids and index == 0 else b""
    return (
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1763700000,'
        b'"model":"%s","choices":[{"index":0,"delta":{"content":"#%d@%.6f"},"logprobs":null,'
        b'"finish_reason":%s,"token_ids":%s}]%s}\n\n'
        % (model, index, sent, finish, token_ids, prompt)
    )


def framed(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


FRAMED_END = framed(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class TickedStream:
    """One response: its chunks, written by the `Ticker` that holds it."""

    def __init__(self, transport: asyncio.Transport, model: bytes, chunks: int, ids: bool):
        self.transport, self.model, self.left, self.ids = transport, model, chunks, ids
        self.index = 0

    def step(self) -> bool:
        """Writes the next chunk (the last with ``[DONE]``); False once nothing is left."""
        if self.transport.is_closing() or self.left <= 0:
            return False
        self.left -= 1
        data = framed(event(self.model, self.index, time.monotonic(), not self.left, self.ids))
        self.transport.write(data + FRAMED_END if not self.left else data)
        self.index += 1
        return self.left > 0

    def cancel(self) -> None:
        self.left = 0


class Ticker:
    """Every ``period`` seconds, the next chunk of every open stream, in one callback."""

    def __init__(self, period: float, model: str, phase: float = 0.0) -> None:
        self.period, self.model = period, model.encode()
        self.phase = phase  # the grid's offset, in periods: another engine's steps
        self.streams: list[TickedStream] = []
        self.timer: asyncio.TimerHandle | None = None
        self.due = 0  # the index of the next tick on the grid

    def open(
        self, transport: asyncio.Transport, head: bytes, chunks: int, ids: bool
    ) -> TickedStream:
        """A stream: its head and first chunk now, the rest on the ticks."""
        stream = TickedStream(transport, self.model, chunks, ids)
        transport.write(head)
        if stream.step():
            self.streams.append(stream)
            if self.timer is None:
                self.schedule(self.ticks_passed() + 1)
        return stream

    def ticks_passed(self) -> int:
        return math.floor(time.monotonic() / self.period - self.phase)

    def schedule(self, due: int) -> None:
        self.due = due
        delay = (due + self.phase) * self.period - time.monotonic()
        self.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self.tick)

    def tick(self) -> None:
        # uvloop's timers have millisecond resolution and may fire early: the grid, not the
        # clock at the callback, names the next tick.
        self.timer = None
        self.streams = [stream for stream in self.streams if stream.step()]
        if self.streams:
            self.schedule(max(self.due + 1, self.ticks_passed() + 1))
