"""One request and its response on a connection of `gateway.http.server.HTTPProtocol`: the ASGI
`receive` and `send` of one task, and how a response head is checked and framed."""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Any, Protocol

from backends.transport.busy_poll import CLIENT, RELAY
from gateway.http.asgi import ClientDisconnected, Message, Receive, Scope, Send
from gateway.logs import frames

App = Any  # an ASGI 3 application: (scope, receive, send) -> None


class Connection(Protocol):
    """What a cycle needs of its connection (`gateway.http.server.HTTPProtocol` is one)."""

    loop: asyncio.AbstractEventLoop
    parsing: Cycle | None  # the request whose bytes are arriving
    write_paused: bool

    def write(self, data: bytes, awaited: int = CLIENT) -> None: ...

    async def drain(self) -> None: ...

    def resume_reading(self) -> None: ...

    def default_head(self) -> bytes: ...

    def answered(self, cycle: Cycle) -> None: ...

    def close(self) -> None: ...


log = logging.getLogger("uvicorn.error")  # beside uvicorn's own messages

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# RFC 9110 token characters for names; for values, anything but control characters (tab allowed).
_NAME_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])


def status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINES = {code: status_line(code) for code in range(100, 600)}


class Cycle:
    """One request and its response: the ASGI `receive` and `send` of one task."""

    __slots__ = (
        "body",
        "buffered",
        "chunked",
        "conn",
        "disconnected",
        "expect_100",
        "head",
        "keep_alive",
        "left",
        "more_body",
        "request_read",
        "response_complete",
        "response_started",
        "scope",
        "waiter",
        "watcher",
    )

    def __init__(self, conn: Connection, scope: Scope, keep_alive: bool, expect_100: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.body: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.request_read = False  # the last `http.request` message has been handed over
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.left: int | None = None  # bytes still owed under the response's Content-Length
        self.head = b""  # the response head, held to leave with the first body bytes
        self.waiter: asyncio.Future[None] | None = None
        # A task to cancel when the client leaves (`gateway.http.asgi.until_disconnect`): the server
        # says so itself, so no task or timer watches `receive` for it.
        self.watcher: asyncio.Task[Any] | None = None

    async def run(self, app: App) -> None:
        receive: Receive = self.receive
        send: Send = self.send
        try:
            result = await app(self.scope, receive, send)
        except ClientDisconnected:
            pass  # the client left: nobody to answer, nothing to report
        except BaseException as exc:  # cancelled at the shutdown deadline, or a bug
            log.error("Exception in ASGI application: %s\n%s", type(exc).__name__, frames(exc))
            if not self.response_started:
                await self._send_500()
            elif not self.response_complete:
                self.conn.close()  # the client cannot be told: a cut answer must look cut
        else:
            if result is not None:
                log.error("ASGI callable returned a value instead of None")
                self.conn.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting a response")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing its response")
                self.conn.close()

    def client_left(self) -> None:
        self.disconnected = True
        self.wake()
        if self.watcher is not None:
            self.watcher.cancel()

    def watch_disconnect(self, task: asyncio.Task[Any] | None) -> None:
        """Until called again with None, `task` is cancelled if the client leaves."""
        self.watcher = task
        if task is not None and self.disconnected:
            task.cancel()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> Message:
        if self.expect_100:
            self.expect_100 = False
            self.conn.write(CONTINUE)
        if self.request_read:  # nothing more to read: only a disconnect can come
            while not (self.disconnected or self.response_complete):
                await self._wait()
            return {"type": "http.disconnect"}
        while not self.body and self.more_body and not self.disconnected:
            if not self.response_complete:
                self.conn.resume_reading()
            await self._wait()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.conn.parsing is self:
            self.conn.resume_reading()
        self.request_read = not self.more_body
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        if self.conn.write_paused and not self.disconnected:
            await self.conn.drain()
        if self.disconnected:
            # Said here too, not only by `receive`: the caller stops (and closes its engine
            # call) at its next write, even if nothing is watching `receive` yet.
            raise ClientDisconnected
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', got '{kind}'")
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', got '{kind}'")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"ASGI message '{kind}' sent after the response was complete")

    def write_body(self, body: bytes, last: bool = False) -> bool:
        """A piece of a started response's body, written at once, without an ASGI message: a
        relay's path for each event (`gateway.http.asgi.body_writer`); `last` ends the body in
        the same write. False when the client can take no more now, its socket full or the
        client gone: await `writable` then."""
        if self.disconnected:
            return False
        if not self.response_started or self.response_complete:
            raise RuntimeError("write_body outside a started response")
        self._body(body, not last)
        return not self.conn.write_paused

    async def writable(self) -> None:
        """Returns once the client can take more; raises `ClientDisconnected` if it left."""
        if self.conn.write_paused and not self.disconnected:
            await self.conn.drain()
        if self.disconnected:
            raise ClientDisconnected

    def _start(self, status: int, headers: Any) -> None:
        lines = [STATUS_LINES.get(status) or status_line(status), self.conn.default_head()]
        length: int | None = None
        chunked = closes = False
        for name, value in headers:
            name = name.lower()
            if name.translate(None, _NAME_BYTES) or not name:
                raise RuntimeError("Invalid HTTP header name.")
            if value.translate(None, _VALUE_BYTES):
                raise RuntimeError("Invalid HTTP header value.")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                closes = b"close" in [token.strip() for token in value.lower().split(b",")]
            lines += (name, b": ", value, b"\r\n")
        # Only now, every header accepted: an app whose headers were refused still gets its 500.
        self.response_started = True
        self.expect_100 = False
        if closes:
            self.keep_alive = False
        has_body = self.scope["method"] != "HEAD" and status >= 200 and status not in (204, 304)
        if length is None and not chunked and has_body:
            if self.scope["http_version"] == "1.0":
                self.keep_alive = False  # HTTP/1.0 has no chunks: the close ends the body
            else:
                chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not closes:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.left, self.chunked = length, chunked
        head = b"".join(lines)
        self.head = head  # leaves with the first body bytes, in one write
        if length is None and has_body:
            # A stream: its first event, when already here, joins the head; if not, the head
            # leaves when the loop next turns, so a slow first token never holds it back.
            self.conn.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        if self.head:
            self.conn.write(self.head, RELAY)  # a stream's head: its first event comes next
            self.head = b""

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            body = b""
        elif self.chunked:
            framed = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            body = framed if more_body else framed + b"0\r\n\r\n"
        elif self.left is not None:
            self.left -= len(body)
            if self.left < 0:
                raise RuntimeError("Response content longer than Content-Length")
        if self.head:
            body, self.head = self.head + body, b""
        if body:  # mid-stream, the loop waits for the next event; at the end, the next request
            self.conn.write(body, RELAY if more_body else CLIENT)
        if more_body:
            return
        if self.left and self.scope["method"] != "HEAD":
            raise RuntimeError("Response content shorter than Content-Length")
        self.response_complete = True
        self.wake()
        self.conn.answered(self)

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def _send_500(self) -> None:
        if self.disconnected:
            return
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
