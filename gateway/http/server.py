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
- framing is strict (RFC 9112): besides what httptools' parser refuses (Content-Length with
  Transfer-Encoding, duplicate lengths, obsolete line folding, bare LF, control bytes, bad
  chunks), a transfer coding other than `chunked`, Transfer-Encoding in HTTP/1.0, and an
  HTTP/1.1 request without exactly one Host get 400; the refused request, and whatever was
  pipelined after it, never reaches the app, and the connection closes;
- slow clients are timed out (408) and connections beyond a cap per worker are closed on
  arrival (`gateway/http/limits.py`);
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
from gateway.http.limits import Phase, guard_in

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState


MAX_HEAD = 64 * 1024  # bytes of request line and headers; nginx's default allows 32 KiB
READ_HIGH_WATER = 64 * 1024  # request body bytes buffered before the socket stops being read
# Where the request being read is; each phase has its own clock (`_check`).
IDLE, HEAD, BODY, READ = 0, 1, 2, 3  # waiting for a request, reading its head, its body; read
TIMED_OUT = b"The request did not arrive in time."
LINGER = 2.0  # seconds a refused connection is read (and dropped) before it is closed


class Malformed(Exception):
    """Raised in a parser callback: the request is refused with `HTTPProtocol._bad_status`."""


class HTTPProtocol(asyncio.Protocol):
    """One client connection: parses requests, runs each as an ASGI task, writes the answers.

    Requests pipelined behind one still being answered wait their turn, with reading paused.
    One timer per connection keeps the clocks of `gateway.http.limits` and the keep-alive.
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
        self.guard = guard_in(app_state)
        self.limits = self.guard.limits
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
        self.parsing: Cycle | None = None  # the request whose body is arriving
        self.serving: Cycle | None = None  # the request being answered
        self.pipeline: deque[Cycle] = deque()  # complete requests waiting for their turn
        self.reading_paused = False
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._admitted = False  # counted open by the guard (not refused at its cap)
        self._phase = IDLE
        self._heard = 0.0  # loop time of the last bytes received, or of the start of a wait
        self._deadline = 0.0  # when the head (HEAD) or the body (BODY) must be complete
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None  # a refusal to send once the answer in progress ends
        self._refusing = False
        self._lingering = False  # refused: reading only to drop, until the client closes
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._default_head = b""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._expect_100 = False
        self._hosts = 0
        self._transfer_encoding = False  # chunked (the only coding accepted)
        self._bad_status = 400

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not a subclass of asyncio.Transport, but it is one.
        self.transport = transport = cast(asyncio.Transport, transport)
        if not self.guard.admits():  # at the cap: closed before a byte is read
            transport.close()
            return
        self._admitted = True
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self._heard = self.loop.time()
        self._arm(self._heard + self.keep_alive_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a refusal: read and dropped
        self._heard = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrade is supported: the request is answered as plain HTTP, then closed.
            if self.parsing is not None:
                self.parsing.more_body = False
                self.parsing.wake()
            self._close_after_answer()
        except httptools.HttpParserError:
            if self._bad_status == 431:
                self._refuse(431, b"Request header fields too large.")
            else:
                self._refuse(400, b"Invalid HTTP request received.")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self.guard.closed()
        self.connections.discard(self)
        if self.serving is not None:
            self.serving.client_left()
        self.pipeline.clear()
        self.resume_writing()  # a send waiting to drain returns, and sees the disconnect
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # The parser holds this protocol (its callbacks), and this protocol its cycles, each
        # holding it back: cycles only the collector frees, which the gateway runs seldom
        # (app.GC_THRESHOLDS). Broken here, a closed connection is freed at once.
        self.parsing = self.serving = None
        del self.parser

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
        self._hosts = 0
        self._transfer_encoding = False
        self.parsing = None
        self._phase = HEAD
        self._deadline = self._heard + self.limits.head_timeout
        self._arm(self._deadline)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._grow_head(len(name) + len(value))
        if self._phase != HEAD:
            return  # a trailer after a chunked body: counted, never merged into the headers
        if name == b"host":
            self._hosts += 1
        elif name == b"transfer-encoding":
            # httptools refuses codings that do not end in chunked; the gateway decodes none.
            if value.strip(b" \t").lower() != b"chunked":
                raise Malformed
            self._transfer_encoding = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_100 = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = parser.get_http_version()
        if self._hosts != 1 and (self._hosts or version != "1.0"):
            raise Malformed  # RFC 9112 3.2: HTTP/1.1 needs exactly one Host, any needs one at most
        if self._transfer_encoding and version == "1.0":
            raise Malformed  # RFC 9112 6.1: HTTP/1.0 has no chunks: the framing is faulty
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
        self._phase = BODY
        self._deadline = self._heard + self.limits.body_timeout
        self._arm(min(self._deadline, self._heard + self.limits.body_read_timeout))
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
        self._phase = READ
        cycle = self.parsing
        if cycle is not None:
            cycle.more_body = False
            cycle.wake()
        if self.serving is None and not self.pipeline:
            self._wait_idle()  # answered before its body was all read (a 413, say)

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
        if (
            self.reading_paused
            and not self.pipeline
            and not self._refusing
            and self.transport is not None
        ):
            self.reading_paused = False
            self.transport.resume_reading()
            if self._phase == HEAD or self._phase == BODY:
                self._restart_clocks()

    def answered(self, cycle: Cycle) -> None:
        """`cycle`'s response is complete: close, or serve the next request, or wait idle."""
        self.server_state.total_requests += 1
        self.serving = None  # only the cycle being served has a task that answers
        if not cycle.keep_alive:
            if self._refusal is not None:  # a request after this one was refused
                self.write(self._refusal)
                self._linger()
            else:
                self.close()
            return
        if self.pipeline:
            self._serve(self.pipeline.popleft())
        self.resume_reading()
        if self.serving is None and self._phase == READ:
            self._wait_idle()

    # --- internals ---

    def _serve(self, cycle: Cycle) -> None:
        self.serving = cycle
        task = self.loop.create_task(cycle.run(self.app))
        task.add_done_callback(self.server_state.tasks.discard)
        self.server_state.tasks.add(task)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            self._bad_status = 431
            raise Malformed  # httptools stops parsing and raises HttpParserCallbackError

    def _refuse(self, status: int, message: bytes) -> None:
        """Answers `status` to the request being read, which the app never gets (or, when it
        already has it, sees its client leave), and closes; an answer in progress ends first."""
        if self._refusing:
            return
        self._refusing = True
        self.pause_reading()
        refusal = _plain(status, message, self.default_head())
        cycle = self.parsing
        if cycle is not None and cycle.response_started:
            self._linger()  # its answer went, or is cut: nothing more can be said
        elif cycle is not None and cycle is self.serving:
            self.write(refusal)  # the app was reading this body: it sees the client leave
            cycle.client_left()
            self._linger()
        elif self.serving is None:
            self.write(refusal)
            self._linger()
        else:  # behind an answer in progress, which ends first
            if cycle is not None and cycle in self.pipeline:
                self.pipeline.remove(cycle)
            self._refusal = refusal
            self.serving.keep_alive = False

    def _linger(self) -> None:
        """Closes after a refusal without losing it: a socket closed with bytes unread sends
        a reset, which can destroy the answer before the client reads it. So this side says
        it is done (FIN), reads and drops whatever still comes for up to `LINGER` seconds,
        and closes then, or as soon as the client closes (nginx's lingering close)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.writes.flush()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self.reading_paused = False
        transport.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER, self.close)

    def _close_after_answer(self) -> None:
        self.pause_reading()
        if self.serving is None:
            self.close()
        else:
            self.serving.keep_alive = False

    def _wait_idle(self) -> None:
        self._phase = IDLE
        self._heard = self.loop.time()
        self._arm(self._heard + self.keep_alive_timeout)

    def _restart_clocks(self) -> None:
        """Reading resumes: the wait was this side's (pipelining, a full buffer), not the
        client's, so the phase's clocks start again."""
        self._heard = now = self.loop.time()
        limits = self.limits
        self._deadline = now + (limits.head_timeout if self._phase == HEAD else limits.body_timeout)
        self._arm(min(self._deadline, now + limits.body_read_timeout))

    def _arm(self, at: float) -> None:
        """The connection's timer fires at `at`, unless it is set to fire sooner."""
        timer = self._timer
        if self._lingering:
            return  # closing
        if timer is not None:
            if timer.when() <= at:
                return
            timer.cancel()
        self._timer = self.loop.call_at(at, self._check)

    def _check(self) -> None:
        """The timer: closes a connection silent past the keep-alive, refuses a request late
        past its phase's timeout, else sets itself for the next moment that could happen."""
        self._timer = None
        phase = self._phase
        if phase == READ or self.reading_paused or self._refusing:
            return  # not waiting on the client; `answered` or `resume_reading` set it again
        now = self.loop.time()
        if phase == IDLE:
            at = self._heard + self.keep_alive_timeout
            if now >= at:
                self.close()
                return
        elif phase == HEAD:
            at = self._deadline
            if now >= at:
                self._time_out("head")
                return
        else:
            at = min(self._deadline, self._heard + self.limits.body_read_timeout)
            if now >= at:
                self._time_out("body" if now >= self._deadline else "body_read")
                return
        self._timer = self.loop.call_at(at, self._check)

    def _time_out(self, phase: Phase) -> None:
        self.guard.timed_out_in(phase)
        self._refuse(408, TIMED_OUT)


def _plain(status: int, message: bytes, default_head: bytes) -> bytes:
    """A plain-text answer that closes the connection, for requests the app never saw."""
    head = (
        STATUS_LINES[status]
        + default_head
        + b"content-type: text/plain; charset=utf-8\r\n"
        + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
    )
    return head + message


def _address(info: Any) -> tuple[str, int | None] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    if isinstance(info, str):  # a unix socket
        return info, None
    return None
