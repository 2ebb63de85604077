"""Row (a): FastAPI route forwarding the chat request through one pooled httpx.AsyncClient.

Run by run.py as ``uvicorn --factory proxy_fastapi_httpx:create_app``; the upstream base URL comes
from the ``UPSTREAM_URL`` environment variable, read once when the app is built.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
from fastapi import FastAPI, Request, Response

LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=60.0)
TIMEOUT = httpx.Timeout(10.0, connect=2.0)


def create_app() -> FastAPI:
    """Build the app; the lifespan owns the client so it is created once and closed at exit."""
    upstream = os.environ["UPSTREAM_URL"].rstrip("/") + "/v1/chat/completions"
    client = httpx.AsyncClient(limits=LIMITS, timeout=TIMEOUT)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with client:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        try:
            orjson.loads(body)  # a gateway must validate before forwarding
        except orjson.JSONDecodeError:
            return Response(b'{"error":"invalid JSON"}', 400, media_type="application/json")
        upstream_response = await client.post(
            upstream, content=body, headers={"content-type": "application/json"}
        )
        return Response(
            upstream_response.content, upstream_response.status_code, media_type="application/json"
        )

    return app
