"""Row (c): a bare ASGI callable (no framework) forwarding through one pooled aiohttp session.

Run by run.py as ``uvicorn --factory proxy_asgi_aiohttp:create_app``; the upstream base URL comes
from the ``UPSTREAM_URL`` environment variable, read once when the app is built.
"""

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import orjson

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=2.0)
JSON_HEADERS = [(b"content-type", b"application/json")]


class Proxy:
    """ASGI app: POST /v1/chat/completions is validated and forwarded; anything else is 404."""

    def __init__(self, upstream_base: str) -> None:
        self.upstream = upstream_base.rstrip("/") + "/v1/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Own the session: it needs a running loop, so it is made at startup, closed at exit."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60.0)
                self.session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Message, receive: Receive, send: Send) -> None:
        """Read the whole body, validate it as JSON, forward the raw bytes, relay the answer."""
        if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            await respond(send, 404, b'{"error":"not found"}')
            return
        body = await read_body(receive)
        try:
            orjson.loads(body)  # a gateway must validate before forwarding
        except orjson.JSONDecodeError:
            await respond(send, 400, b'{"error":"invalid JSON"}')
            return
        assert self.session is not None, "lifespan startup did not run"
        async with self.session.post(
            self.upstream, data=body, headers={"content-type": "application/json"}
        ) as upstream_response:
            await respond(send, upstream_response.status, await upstream_response.read())


async def read_body(receive: Receive) -> bytes:
    """Join the request body chunks; ASGI servers may split a body over several messages."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes) -> None:
    """Send a complete JSON response in two ASGI messages."""
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def create_app() -> Proxy:
    """Build the app from ``UPSTREAM_URL``."""
    return Proxy(os.environ["UPSTREAM_URL"])
