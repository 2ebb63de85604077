"""The gateway's HTTP/1.1 protocol, which uvicorn's server runs in place of its own.

uvicorn keeps what it does well: sockets, worker processes, signals, the lifespan, the graceful
shutdown and its deadline. This protocol replaces the request-response cycle for less CPU per
request (benchmarks/README.md, optimisation log). It differs from uvicorn's httptools protocol
in these ways:

- a response with a Content-Length leaves in one write (status line, headers and body), not two;
- writes after the first in a turn of the loop are held to the turn's end and leave back to
  back (`backends/transport/write_batch.py`: on a VM, each write that wakes a sleeping reader
  pays for the wake-up);
- a stream's head leaves with its first event when that is already there, else on the loop's
  next turn, so the client wakes once for both;
- response headers are checked with one `bytes.translate` each, not two regular expressions;
- one keep-alive timer per connection, re-armed when it fires, not a new timer per request;
- a request line and headers over `MAX_HEAD` bytes are refused with 431 (uvicorn sets no limit);
- an HTTP/1.0 client's streamed answer ends with the connection, not in chunked encoding,
  which HTTP/1.0 does not know;
- an application error is logged with its type and frames but not its message, which may
  quote a child's text.

Example::

    uvicorn.run(app, loop="uvloop", http="gateway.http.server:HTTPProtocol")

uvicorn's `limit_concurrency` is not honoured: the gateway bounds each backend itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import httptools

from backends.transport.busy_poll import CLIENT
from backends.transport.write_batch import batch_of
from gateway.http.asgi import Scope
from gateway.http.cycle import STATUS_LINES, App, Cycle

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState


MAX_HEAD = 64 * 1024  # bytes of request line and headers; nginx's default allows 32 KiB
READ_HIGH_WATER = 64 * 1024  # request body bytes buffered before the socket stops being read


class HeadTooLarge(Exception):
    """The request line and headers passed `MAX_HEAD` bytes."""


class HTTPProtocol(asyncio.Protocol):
    """One client connection: parses requests, runs each as an ASGI task, writes the answers.

    Requests pipelined behind one still being answered wait their turn, with reading paused.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app: App = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        # uvicorn's shutdown closes and waits for these; its type names only its own protocols.
        self.connections = cast("set[HTTPProtocol]", server_state.connections)
        self.app_state = app_state
        self.writes = batch_of(self.loop)
        self.root_path: str = config.root_path
        self.raw_root_path = self.root_path.encode("ascii")  # once, not per request
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3
            # Answer the first of pipelined requests even when it asked to close.
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.parsing: Cycle | None = None  # the request whose bytes are arriving
        self.serving: Cycle | None = None  # the request being answered
        self.pipeline: deque[Cycle] = deque()  # complete requests waiting for their turn
        self.reading_paused = False
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._idle_since: float | None = None  # when the connection fell silent; None: bytes came
        self._idle_timer: asyncio.TimerHandle | None = None
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._default_head = b""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._expect_100 = False
        self._head_too_large = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not a subclass of asyncio.Transport, but it is one.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self._idle()

    def data_received(self, data: bytes) -> None:
        self._idle_since = None  # not silent: the keep-alive timeout counts from the next check
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrade is supported: the request is answered as plain HTTP, then closed.
            if self.parsing is not None:
                self.parsing.more_body = False
                self.parsing.wake()
            self._close_after_answer()
        except httptools.HttpParserError:
            if self._head_too_large:
                self._refuse(431, "Request header fields too large.")
            else:
                self._refuse(400, "Invalid HTTP request received.")

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.serving is not None:
            self.serving.client_left()
        self.pipeline.clear()
        self.resume_writing()  # a send waiting to drain returns, and sees the disconnect
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed client gets no more answers

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    # --- uvicorn's server calls this on shutdown ---

    def shutdown(self) -> None:
        """Close now if idle; else once the answer in progress is complete."""
        if self.serving is None:
            self.close()
        else:
            self.serving.keep_alive = False

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._expect_100 = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._grow_head(len(name) + len(value))
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_100 = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        url = httptools.parse_url(self._url)
        path = url.path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": self.root_path + path,
            "raw_path": self.raw_root_path + url.path,
            "query_string": url.query or b"",
            "headers": self._headers,
            "state": self.app_state.copy(),
        }
        keep_alive = version != "1.0" and parser.should_keep_alive()
        cycle = Cycle(self, scope, keep_alive, self._expect_100)
        self.parsing = cycle
        if self.serving is None:
            self._serve(cycle)
        else:
            self.pipeline.append(cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.response_complete:
            return  # answered already (a 413, say): the rest of the body is read and dropped
        cycle.body.append(body)
        cycle.buffered += len(body)
        if cycle.buffered > READ_HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is not None:
            cycle.more_body = False
            cycle.wake()

    # --- used by Cycle ---

    def default_head(self) -> bytes:
        """uvicorn's default headers (date, server), encoded when it renews them (each second)."""
        defaults = self.server_state.default_headers
        if defaults is not self._defaults:
            self._defaults = defaults
            self._default_head = b"".join(
                name + b": " + value + b"\r\n" for name, value in defaults
            )
        return self._default_head

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.writes.flush()  # what this connection was given leaves before it closes
            self.transport.close()

    def write(self, data: bytes, awaited: int = CLIENT) -> None:
        """`awaited`: what the connection waits for next (`backends.transport.busy_poll`)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.writes.write(transport, data, awaited)

    async def drain(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()
        await self._writable

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.pipeline and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def answered(self, cycle: Cycle) -> None:
        """`cycle`'s response is complete: close, or serve the next request, or wait idle."""
        self.server_state.total_requests += 1
        self.serving = None  # only the cycle being served has a task that answers
        if not cycle.keep_alive:
            self.close()
            return
        if self.pipeline:
            self._serve(self.pipeline.popleft())
        self.resume_reading()
        if self.serving is None:
            self._idle()

    # --- internals ---

    def _serve(self, cycle: Cycle) -> None:
        self.serving = cycle
        task = self.loop.create_task(cycle.run(self.app))
        task.add_done_callback(self.server_state.tasks.discard)
        self.server_state.tasks.add(task)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            self._head_too_large = True
            raise HeadTooLarge  # httptools stops parsing and raises HttpParserCallbackError

    def _refuse(self, status: int, message: str) -> None:
        if self.serving is not None:  # an answer is in progress: let it finish, then close
            self._close_after_answer()
            return
        body = message.encode("ascii")
        head = (
            STATUS_LINES[status]
            + self.default_head()
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.write(head + body)
        self.close()

    def _close_after_answer(self) -> None:
        self.pause_reading()
        if self.serving is None:
            self.close()
        else:
            self.serving.keep_alive = False

    def _idle(self) -> None:
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.serving is not None:
            return  # answering: `answered` arms the timer again
        now = self.loop.time()
        if self._idle_since is None:  # bytes came since: count the silence from now
            self._idle_since = now
        left = self._idle_since + self.keep_alive_timeout - now
        if left <= 0:
            self.close()
        else:
            self._idle_timer = self.loop.call_later(left, self._idle_check)


def _address(info: Any) -> tuple[str, int | None] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    if isinstance(info, str):  # a unix socket
        return info, None
    return None
