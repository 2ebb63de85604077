"""A small HTTP/1.1 keep-alive client on asyncio protocols and httptools' C parser.

It does what the gateway's upstream calls need and no more, for a fraction of aiohttp's CPU per
call (benchmarks/upstream_client/README.md): one pool per upstream, each request written
with one `transport.write`, answers framed by Content-Length, chunked encoding or the close of
the connection, and one timer per call for the read and total timeouts.

Its errors are `HTTPError` and its subclasses, drawn in `backends.transport.connection`.

Example::

    pool = Pool("http://127.0.0.1:8000", limit=256, keepalive=30.0,
                connect_timeout=2.0, read_timeout=60.0, total_timeout=600.0)
    head = pool.head("POST", "/v1/completions", {"content-type": "application/json"})
    answer = await pool.fetch(head, body)  # status, headers and the whole body
    answer = await pool.fetch(head, body, header_line("x-request-id", "r1"))  # + its own header
    response = await pool.open(head, body)  # status and headers; the body as it arrives:
    while (chunk := await response.next_chunk()) is not None:
        ...
    # or: ended = await response.pipe(sink)  # each piece to `sink` from the protocol's callback
    response.close()  # back to the pool if read to its end, else the connection is closed
    await pool.close()
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from backends.transport.connection import (
    SLACK,
    ConnectFailed,
    Connection,
    ConnectTimeout,
    DisconnectedBeforeStatus,
    HTTPError,
    ProtocolError,
    ReadTimeout,
    Sink,
    Timeout,
    TotalTimeout,
)

__all__ = [
    "Answer",
    "ConnectFailed",
    "ConnectTimeout",
    "DisconnectedBeforeStatus",
    "HTTPError",
    "Pool",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "Sink",
    "Timeout",
    "TotalTimeout",
    "encode_headers",
    "header_line",
]

# A call's own headers: a mapping, or lines already encoded by `header_line` or `encode_headers`.
Headers = Mapping[str, str] | bytes | None


class Answer(NamedTuple):
    """A whole answer; header names are lower case. Immutable, and a NamedTuple rather than a
    frozen dataclass, whose `__init__` costs more, on every call (benchmarks/README.md,
    "Figures behind the code's choices")."""

    status: int
    headers: dict[str, str]
    body: bytes


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Header lines, refusing a CR or LF that would smuggle in another header or request."""
    text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if text.count("\r") != len(headers) or text.count("\n") != len(headers):
        raise ValueError("a header name or value contains CR or LF")
    return text.encode("latin-1")


def header_line(name: str, value: str) -> bytes:
    """One header line, as `encode_headers` would write it (CR and LF refused), for less: for
    the header a call adds (its request id), encoded on every call."""
    if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
        raise ValueError("a header name or value contains CR or LF")
    return f"{name}: {value}\r\n".encode("latin-1")


def _encoded(headers: Headers) -> bytes:
    """A call's own header lines, whichever form they came in."""
    if isinstance(headers, bytes):
        return headers
    return encode_headers(headers) if headers else b""


class Pool:
    """Up to `limit` keep-alive connections to one server, the most recently used reused first."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        keepalive: float,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
    ) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._authority = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._limit = limit
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._total_timeout = total_timeout
        self._idle: list[Connection] = []  # a stack: the last one released is on top
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._open = 0  # connections counted against the limit: connecting, busy or idle
        self._all: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def head(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> bytes:
        """The request line and fixed headers of a kind of call, encoded once."""
        line = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        return line + encode_headers({"host": self._authority, **(headers or {})})

    async def fetch(
        self, head: bytes, body: bytes = b"", headers: Headers = None, *, total: float | None = None
    ) -> Answer:
        """Sends a request and reads its whole answer; `total` overrides the pool's timeout."""
        conn = await self._call(head, body, _encoded(headers), total, stream=False)
        try:
            if not conn.done:  # a short answer often comes whole with its headers
                await conn.wait_done()
        except BaseException:
            self._drop(conn)
            raise
        answer = Answer(conn.status, conn.headers, b"".join(conn.chunks))
        self._release(conn)
        return answer

    async def open(self, head: bytes, body: bytes = b"", headers: Headers = None) -> Response:
        """Sends a request and reads its status and headers; the caller must close the answer."""
        conn = await self._call(head, body, _encoded(headers), None, stream=True)
        return Response(self, conn)

    async def _call(
        self, head: bytes, body: bytes, extra: bytes, total: float | None, stream: bool
    ) -> Connection:
        """Sends on an idle connection or a new one, and waits for the status line and headers.

        A kept-alive connection can be closed by the server just as a request goes out on it
        (its idle timeout): nothing was read then, so the request goes once more, on a new
        connection, as aiohttp and httpcore do. A new connection failing is the caller's.
        """
        data = b"%scontent-length: %d\r\n%s\r\n%s" % (head, len(body), extra, body)
        loop = asyncio.get_running_loop()
        for fresh in (False, True):
            deadline = loop.time() + (self._total_timeout if total is None else total)
            conn = None if fresh else self._reuse_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._acquire(deadline)
            try:
                # `send` refuses a closing connection, and a reused one was just seen open.
                conn.send(data, deadline, stream)
                await conn.wait_headers()
            except DisconnectedBeforeStatus:
                self._drop(conn)
                if reused:  # never on the fresh attempt
                    continue
                raise
            except BaseException:
                self._drop(conn)
                raise
            return conn
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def close(self) -> None:
        """Closes every connection; calls still running fail with ProtocolError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._all):
            self._drop(conn)
        await asyncio.sleep(0)  # lets the transports finish closing

    def _reuse_idle(self) -> Connection | None:
        """The idle connection released last, if one is still open."""
        while self._idle:
            conn = self._idle.pop()
            conn.idle = False
            if not conn.closing():
                return conn
            self._drop(conn)  # the server closed it; its connection_lost is on the way
        return None

    async def _acquire(self, deadline: float) -> Connection:
        """A connection when none is idle: a new one if the limit allows, else the next freed."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ConnectFailed("the pool is closed")
            if self._open < self._limit:
                return await self._connect(deadline)
            waiter: asyncio.Future[Connection | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():  # handed over just too late
                    self._hand_back(waiter.result())
                if isinstance(exc, TimeoutError):
                    raise TotalTimeout("no free connection in time") from None
                raise
            if conn is not None:
                return conn

    async def _connect(self, deadline: float) -> Connection:
        loop = asyncio.get_running_loop()
        self._open += 1
        conn = Connection(loop, self.read_timeout, self._drop)
        budget = min(self._connect_timeout, deadline - loop.time())
        try:
            async with asyncio.timeout(budget):
                await loop.create_connection(lambda: conn, self._host, self._port, ssl=self._ssl)
        except BaseException as exc:
            self._open -= 1
            self._wake_one(None)
            if isinstance(exc, TimeoutError):
                late = TotalTimeout if budget < self._connect_timeout else ConnectTimeout
                raise late(f"no connection to {self._authority} in {budget:.3g} s") from None
            if isinstance(exc, OSError):
                raise ConnectFailed(f"{self._authority}: {exc}") from exc
            raise
        self._all.add(conn)
        return conn

    def _release(self, conn: Connection) -> None:
        """Back to the pool after a whole answer, unless the server or the answer ended it."""
        if not conn.reusable() or self._closed:
            self._drop(conn)
        elif not self._wake_one(conn):
            conn.idle = True
            conn.idle_since = conn.loop.time()
            self._idle.append(conn)
            if self._sweeper is None:
                self._sweeper = conn.loop.call_at(conn.idle_since + self._keepalive, self._sweep)

    def _drop(self, conn: Connection) -> None:
        """Closes a connection (idempotent) and frees its place for a waiting call."""
        if conn.gone:
            return
        conn.gone = True
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if conn.transport is not None:
            conn.transport.close()
        self._open -= 1
        self._all.discard(conn)
        self._wake_one(None)

    def _hand_back(self, conn: Connection | None) -> None:
        if conn is None:
            self._wake_one(None)
        else:
            self._release(conn)

    def _wake_one(self, conn: Connection | None) -> bool:
        """Hands a connection, or a free place (None), to the oldest waiting call."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _sweep(self) -> None:
        """Closes the connections idle for `keepalive` seconds (the bottom of the stack)."""
        self._sweeper = None
        if not self._idle:
            return
        loop = self._idle[0].loop
        expired = loop.time() - self._keepalive + SLACK
        stale = [conn for conn in self._idle if conn.idle_since <= expired]
        for conn in stale:
            self._drop(conn)
        if self._idle:
            self._sweeper = loop.call_at(self._idle[0].idle_since + self._keepalive, self._sweep)


class Response:
    """An answer whose body is read as it arrives; `close()` must follow, whatever happens."""

    def __init__(self, pool: Pool, conn: Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._pool = pool
        self._conn: Connection | None = conn

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as it came off the socket; None at its end."""
        if self._conn is None:
            raise ProtocolError("the answer is closed")
        return await self._conn.next_chunk()

    async def pipe(self, sink: Sink) -> bool:
        """Hands each piece of the body to `sink` as it is read, with no task woken per piece
        (`Connection.pipe`): True at its end; False when `sink` refused more (call again)."""
        if self._conn is None:
            raise ProtocolError("the answer is closed")
        return await self._conn.pipe(sink)

    async def read(self) -> bytes:
        """The rest of the body, whole; the connection goes back to the pool."""
        if self._conn is None:
            raise ProtocolError("the answer is closed")
        try:
            await self._conn.wait_done(collect=True)
            return b"".join(self._conn.chunks)
        finally:
            self.close()

    def close(self) -> None:
        """Returns the connection to the pool if the whole answer came, else closes it: a
        server then sees the client leave (an engine aborts the generation)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool._release(conn)

    def __del__(self) -> None:
        # Dropped unclosed (its caller cancelled at the wrong moment): free its place anyway.
        if self._conn is not None and not self._conn.loop.is_closed():
            conn, self._conn = self._conn, None
            conn.loop.call_soon_threadsafe(self._pool._release, conn)
