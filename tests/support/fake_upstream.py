"""A fake OpenAI upstream, only for what a real engine cannot show on demand.

The last user message (or the prompt) picks the behaviour: `hang`, `slow:<seconds>`,
`status:<code>`, `garbage`, `stall-after-headers`, `malformed-sse`, `reset-mid-stream`,
`linger-after-done` (a stream whose body ends 2 s after its `[DONE]`); anything else gets a
normal answer. Real-engine behaviour is tested against real vLLM.
`DroppingUpstream` and `MuteUpstream` are raw TCP servers for what ASGI cannot do: hang up
before any answer, or never answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any, Self

import orjson

from gateway.http.asgi import ClientDisconnected

MODEL = "fake-model"


def _answer(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _chunk(text: str) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class FakeUpstream:
    """A raw ASGI app; `calls` counts requests, `cancelled` counts streams cut by the client;
    `/health` answers after `health_delay` seconds (an engine too busy for its probe)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0
        self.health_delay = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/health":
            if self.health_delay:
                await receive()  # the GET's empty body, so `_idle` waits for a disconnect
                await _idle(receive, self.health_delay)
            await _send(send, 200, b"")
            return
        if path == "/v1/models":
            await _send(send, 200, orjson.dumps({"object": "list", "data": [{"id": MODEL}]}))
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.calls += 1
        request = orjson.loads(body)
        await self._behave(_cue(request), bool(request.get("stream")), receive, send)

    async def _behave(self, cue: str, stream: bool, receive: Any, send: Any) -> None:
        if cue == "hang":
            await _idle(receive, 3600)
            return
        if cue.startswith("slow:"):
            await _idle(receive, float(cue.removeprefix("slow:")))
        elif cue.startswith("status:"):
            status = int(cue.removeprefix("status:"))
            error = {
                "error": {
                    "message": f"fake {status}",
                    "type": "BadRequestError",
                    "param": "messages",
                    "code": status,
                }
            }
            await _send(send, status, orjson.dumps(error))
            return
        elif cue == "garbage":
            await _send(send, 200, b"<html>not json")
            return
        if not stream:
            await _send(send, 200, _answer("hello from fake"))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        if cue == "stall-after-headers":
            await _idle(receive, 3600)
            return
        for piece in ("hello", " from", " fake"):
            await send({"type": "http.response.body", "body": _chunk(piece), "more_body": True})
        if cue == "malformed-sse":
            await send({"type": "http.response.body", "body": b"data: {broken", "more_body": False})
            return
        if cue == "reset-mid-stream":
            raise ConnectionResetError("fake reset")
        # uvicorn's send() stays silent once the client is gone; receive() always tells.
        gone = asyncio.ensure_future(receive())
        for _ in range(int(cue.removeprefix("long:")) if cue.startswith("long:") else 0):
            await asyncio.sleep(0.01)
            if gone.done():
                self.cancelled += 1
                return
            try:
                await send({"type": "http.response.body", "body": _chunk("."), "more_body": True})
            except ClientDisconnected:  # the gateway's protocol also says so on send
                self.cancelled += 1
                return
        gone.cancel()
        if cue == "linger-after-done":
            await send(
                {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True}
            )
            await _idle(receive, 2.0)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _idle(receive: Any, seconds: float) -> None:
    """Waits, but no longer than the client does (so the server can shut down)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receive(), seconds)


def _cue(request: dict[str, Any]) -> str:
    if "messages" in request:
        return str(request["messages"][-1].get("content", ""))
    return str(request.get("prompt", ""))


async def _send(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL}]})
_MODELS_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
_MODELS_ANSWER += b"content-length: %d\r\n\r\n%s" % (len(_MODELS), _MODELS)


class RawUpstream:
    """A raw TCP server on 127.0.0.1, port 0, in a thread of its own, for what ASGI cannot do;
    `_serve` handles each connection."""

    def __init__(self) -> None:
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class DroppingUpstream(RawUpstream):
    """Reads each POST whole and hangs up without a byte of answer: an engine that crashed or
    restarted. `posts` counts them; `reset=True` hangs up with a TCP reset. GETs (health,
    models) are answered, so the gateway starts with the backend ready."""

    def __init__(self, reset: bool = False) -> None:
        super().__init__()
        self.posts = 0
        self._reset = reset

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._drop(reader, writer)

    async def _drop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.partition(b":")[2])
            await reader.readexactly(length)
            if not head.startswith(b"POST "):
                writer.write(_MODELS_ANSWER)
                await writer.drain()
            self.posts += head.startswith(b"POST ")
        if self._reset:  # SO_LINGER with a zero timeout: close() sends RST instead of FIN
            linger = struct.pack("ii", 1, 0)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class MuteUpstream(RawUpstream):
    """Accepts connections, reads everything and never answers: a hung engine (a wedged
    process, one hung at start; no engine does that on demand). `connections` counts the
    connections it held, `requests` the request lines it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.requests = 0
        self._open: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._open.add(writer)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.requests += data.count(b" HTTP/1.1\r\n")
        self._open.discard(writer)
        writer.close()

    async def _close(self) -> None:
        for writer in list(self._open):  # or the server would wait for the clients to leave
            writer.close()
        await super()._close()
