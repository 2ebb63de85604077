"""Small ASGI helpers for the hot path, which runs without a framework for speed."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeVar

from backends.errors import BodyTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


class ClientDisconnected(Exception):
    """The client went away before its answer was complete."""


def request_id_from(value: bytes | None) -> str:
    """The client's `x-request-id` when it is a safe token, else a fresh one."""
    if value is not None and _SAFE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    # As random as uuid4().hex, without its system call: os.urandom lets go of the GIL, and
    # with the records writer's thread runnable, the event loop then waits to get it back.
    return f"{random.getrandbits(128):032x}"


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes.

    Counts the bytes that arrive, not the Content-Length a client claims, and refuses as soon
    as they pass the limit, whether the body comes whole or chunked.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    size = len(body)
    if size > limit:
        raise BodyTooLarge(f"the request body is larger than {limit} bytes")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# Under a server other than the gateway's own, a request shorter than this never starts a
# disconnect watcher: a task per request cost the hot path more than parsing and validating
# the body (benchmarks/README.md, optimisation log).
WATCH_AFTER = 0.02  # seconds; a client that hangs up is noticed at most this much later


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """Awaits `work` in this task, cancelling it if the client disconnects first.

    Cancelling closes the upstream call, so the engine stops generating for nobody. Every
    request passes here, so the work runs in the caller's task. The gateway's own server
    (`gateway.http.server`) cancels it itself when the connection is lost; under any other server a
    watcher (a task waiting on `receive`) starts once the work has taken `WATCH_AFTER` seconds.
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always called from a task
        raise RuntimeError("until_disconnect needs a running task")
    cycle = getattr(receive, "__self__", None)  # `receive` of gateway.http.cycle.Cycle
    watch: Callable[[asyncio.Task[Any] | None], None] | None = getattr(
        cycle, "watch_disconnect", None
    )
    if watch is None:
        return await _watching_receive(work, receive, task)
    watch(task)
    try:
        return await work
    except asyncio.CancelledError:
        if getattr(cycle, "disconnected", False) and task.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        watch(None)


async def _watching_receive(work: Awaitable[T], receive: Receive, task: asyncio.Task[Any]) -> T:
    state: dict[str, Any] = {"gone": False, "over": False, "watcher": None}

    def on_message(watcher: asyncio.Future[Message]) -> None:
        # Scheduled callbacks outlive remove_done_callback: `over` keeps a late one quiet.
        if state["over"] or watcher.cancelled():
            return
        state["gone"] = True  # only a disconnect arrives once the body has been read
        task.cancel()

    def watch() -> None:
        watcher = state["watcher"] = asyncio.ensure_future(receive())
        watcher.add_done_callback(on_message)

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if state["gone"] and task.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        state["over"] = True
        timer.cancel()
        if state["watcher"] is not None:
            state["watcher"].cancel()


class BodyWriter(Protocol):
    """The server's own way to write a started response's body, piece by piece, without an
    ASGI message each (`gateway.http.cycle.Cycle`)."""

    def write_body(self, body: bytes, last: bool = False) -> bool:
        """Writes `body` now (`last`: and ends the response); False when the client can take
        no more for now."""
        ...

    async def writable(self) -> None:
        """Returns once the client can take more; raises `ClientDisconnected` if it left."""
        ...


def body_writer(send: Send) -> BodyWriter | None:
    """The writer behind `send` when the server is the gateway's own (`gateway.http.server`), so
    a relay can write each event from a socket's callback (`backends.piping`); None under any
    other server, where every piece goes through `send`."""
    cycle = getattr(send, "__self__", None)  # `send` of gateway.http.cycle.Cycle
    return cycle if callable(getattr(cycle, "write_body", None)) else None


def json_headers(length: int, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        *extra,
    ]
