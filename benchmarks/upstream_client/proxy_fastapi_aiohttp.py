"""Row (b): FastAPI route forwarding the chat request through one pooled aiohttp.ClientSession.

Run by run.py as ``uvicorn --factory proxy_fastapi_aiohttp:create_app``; the upstream base URL comes
from the ``UPSTREAM_URL`` environment variable, read once when the app is built.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from fastapi import FastAPI, Request, Response

TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=2.0)


def create_app() -> FastAPI:
    """Build the app; the session needs a running loop, so the lifespan creates and closes it."""
    upstream = os.environ["UPSTREAM_URL"].rstrip("/") + "/v1/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60.0)
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
            sessions.append(session)
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        try:
            orjson.loads(body)  # a gateway must validate before forwarding
        except orjson.JSONDecodeError:
            return Response(b'{"error":"invalid JSON"}', 400, media_type="application/json")
        headers = {"content-type": "application/json"}
        async with sessions[0].post(upstream, data=body, headers=headers) as upstream_response:
            content = await upstream_response.read()
            return Response(content, upstream_response.status, media_type="application/json")

    return app
