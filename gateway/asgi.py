"""Small ASGI helpers for the hot path, which runs without a framework for speed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from gateway.errors import BodyTooLarge

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
    return uuid.uuid4().hex


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


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """Awaits `work`, cancelling it if the client disconnects first.

    Cancelling closes the upstream call, so the engine stops generating for nobody.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(receive())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # Shutdown's deadline or a reload cancelled us: end the work before the caller's
        # cleanup runs (closing a generator the work is still iterating would raise).
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    finally:
        if not watcher.done():
            watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # nobody is left to tell
        await task
    raise ClientDisconnected


def json_headers(length: int, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        *extra,
    ]
