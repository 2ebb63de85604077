"""One HTTP/1.1 connection of `backends.transport.http1`'s pool, and the errors a call can end in.

HTTPError
├── ConnectFailed (refused or unreachable: nothing was sent, safe to retry)
├── DisconnectedBeforeStatus (closed or reset before any byte of an answer: safe to retry)
├── ProtocolError (a malformed answer, or one cut short)
└── Timeout
    ├── ConnectTimeout (the TCP connect)
    ├── ReadTimeout (the gap between bytes, the first one included)
    └── TotalTimeout (the whole call, waiting for a connection included)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from backends.transport.busy_poll import UPSTREAM
from backends.transport.write_batch import batch_of

# A piped answer's reader: takes each piece of the body as it is read; False when it can take
# no more for now (its own peer is slow), which pauses the reading until the next `pipe`.
Sink = Callable[[bytes], bool]
HIGH_WATER = 64 * 1024  # bytes of a stream left unread before the socket's reading pauses
LOW_WATER = 16 * 1024
SLACK = 0.001  # seconds: uvloop's timers have millisecond resolution and may fire that early


class HTTPError(Exception):
    """Any failure of a call; the message says what happened, for logs only."""


class ConnectFailed(HTTPError):
    """Refused or unreachable: nothing was sent, safe to retry."""


class DisconnectedBeforeStatus(HTTPError):
    """Closed or reset before any byte of an answer: safe to retry."""


class ProtocolError(HTTPError):
    """A malformed answer, or one cut short."""


class Timeout(HTTPError):
    """A timeout of the call: see its subclasses."""


class ConnectTimeout(Timeout):
    """The TCP connect took longer than `connect_timeout`."""


class ReadTimeout(Timeout):
    """No byte for `read_timeout` seconds, the first one included."""


class TotalTimeout(Timeout):
    """The whole call took longer than its total timeout."""


class Connection(asyncio.Protocol):
    """One connection and the state of the call it carries (one at a time, no pipelining)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float,
        on_lost: Callable[[Connection], None],
    ) -> None:
        self.loop = loop
        self._writes = batch_of(loop)
        self.transport: asyncio.Transport | None = None
        self.idle = False
        self.gone = False  # closed and no longer counted by the pool
        self.lost = False
        self.idle_since = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.done = False
        self.error: HTTPError | None = None
        self._read_timeout = read_timeout
        self._on_lost = on_lost  # the pool stops counting a connection the server closed
        self._parser = httptools.HttpResponseParser(self)
        self._active = False  # a call is waiting for bytes of its answer
        self._answered = False  # a byte of the answer came
        self._headers_done = False
        self._stream = False
        self._paused = False
        self._keep_alive = False
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Sink | None = None  # while piped (`pipe`)
        self._read: list[bytes] = []  # the body pieces of the read being parsed, while piped
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._last_read = 0.0

    def closing(self) -> bool:
        return self.lost or self.transport is None or self.transport.is_closing()

    def send(self, data: bytes, deadline: float, stream: bool) -> None:
        transport = self.transport  # `closing()` inlined: this runs on every call
        if transport is None or self.lost or transport.is_closing():
            raise DisconnectedBeforeStatus("the connection closed before the request went")
        self.status, self.headers = 0, {}
        self.chunks.clear()
        self.done = self._answered = self._headers_done = False
        self.error, self._active, self._stream, self._buffered = None, True, stream, 0
        self._deadline = deadline
        self._last_read = now = self.loop.time()
        self._timer = self.loop.call_at(min(now + self._read_timeout, deadline), self._tick)
        # Held to the turn's end when not the turn's first; polled for as an upstream's answer.
        self._writes.write(transport, data, UPSTREAM)

    def reusable(self) -> bool:
        return self.done and self._keep_alive and not self.closing()

    async def wait_headers(self) -> None:
        while not self._headers_done:
            if self.error is not None:
                raise self.error
            await self._arm()

    async def wait_done(self, collect: bool = False) -> None:
        if collect and self._stream:
            self._stream = False
            self._resume()
        while not self.done:
            if self.error is not None:
                raise self.error
            await self._arm()

    async def next_chunk(self) -> bytes | None:
        while not self.chunks:
            if self.done:
                return None
            if self.error is not None:
                raise self.error
            await self._arm()
        chunk = self._pop()
        if self._paused and self._buffered <= LOW_WATER:
            self._resume()
        return chunk

    async def pipe(self, sink: Sink) -> bool:
        """Hands the body to `sink` as it is read, in the protocol's callback, what one read
        brought in one call: no task wakes per piece. True once the answer is whole; False when
        `sink` refused more, with reading paused until the next call. Pieces read before (or
        while paused) go first.
        """
        while self.chunks:
            if not sink(self._pop()):
                self._hold()
                return False
        if self.done:
            return True
        if self.error is not None:
            raise self.error
        self._sink = sink
        self._resume()
        try:
            while self._sink is sink and not self.done:
                if self.error is not None:
                    raise self.error
                await self._arm()
        finally:
            self._sink = None
        if self.chunks:  # the sink refused more, and more was read meanwhile
            return False
        return self.done

    def _pop(self) -> bytes:
        chunk = self.chunks.popleft()
        self._buffered -= len(chunk)
        return chunk

    def _hold(self) -> None:
        """The sink can take no more for now: pause reading, and let `pipe` return."""
        self._sink = None
        # A whole answer leaves nothing to hold back, and a kept-alive connection paused here
        # would never read the answer to its next call (a read timeout, after a client left).
        if not self.done and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _arm(self) -> asyncio.Future[None]:
        """The future the next event of the answer completes, for the caller to await.

        A plain method, not a coroutine: awaiting the future directly spares a frame per wait.
        It stays in `_waiter` once done (or cancelled), where `_wake` skips it.
        """
        self._waiter = self.loop.create_future()
        return self._waiter

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, error: HTTPError) -> None:
        if self._active:
            self._active = False
            self.error = error
            self._stop_timer()
            self._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        """The call's one timer: the total deadline, or the read timeout (re)armed lazily."""
        self._timer = None
        now = self.loop.time() + SLACK
        if now >= self._deadline:
            return self._abort(TotalTimeout("the call took too long"))
        if self._stream and (self.chunks or self._paused):  # the reader is behind, not the server
            self._last_read = now
        due = self._last_read + self._read_timeout
        if now >= due:
            return self._abort(ReadTimeout(f"no byte for {self._read_timeout:.3g} s"))
        self._timer = self.loop.call_at(min(due, self._deadline), self._tick)

    def _abort(self, error: HTTPError) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection cannot be trusted
            cast(asyncio.Transport, self.transport).close()
            return
        self._answered = True
        self._last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._hand_on()  # what came before the fault, as a piece-by-piece reader gets it
            self._abort(ProtocolError(f"malformed answer: {exc}"))
            return
        if self._read:
            self._hand_on()

    def _hand_on(self) -> None:
        """The body pieces one read brought, to the sink in one call: an engine's last event,
        its `[DONE]` and the body's end then leave in one write, not three."""
        pieces, sink = self._read, self._sink
        if not pieces:
            return
        if sink is None:  # not piped any more: kept for the next reader, in order
            self.chunks.extend(pieces)
            pieces.clear()
            return
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        if not sink(body):
            self._hold()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.idle:
            self._on_lost(self)
        elif not self._active:
            return
        elif not self._answered:
            self._fail(DisconnectedBeforeStatus(f"closed before an answer: {exc}"))
        elif self._headers_done and not self._framed():
            self.on_message_complete()  # a body without framing ends when the connection does
        else:
            self._fail(ProtocolError(f"closed in the middle of the answer: {exc}"))

    def _framed(self) -> bool:
        return "content-length" in self.headers or "transfer-encoding" in self.headers

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if not self._active:  # feed_data raises: the connection is closed
            raise ProtocolError("a second answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status >= 200:  # 1xx: an interim answer, the real one follows
            self._headers_done = True
            if self._stream:
                self._wake()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._read.append(body)  # handed on once the read is parsed (`_hand_on`)
            return
        self.chunks.append(body)
        if self._stream:
            self._buffered += len(body)
            if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self._headers_done:
            self.headers = {}
            return
        self.done = True
        self._active = False
        self._keep_alive = self._parser.should_keep_alive()  # reset once this callback returns
        self._stop_timer()
        self._resume()
        self._wake()
