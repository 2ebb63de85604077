"""Everything off the hot path, on FastAPI: models, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from gateway.errors import GatewayError, InvalidRequest, NotFound

if TYPE_CHECKING:
    from gateway.app import Gateway

HEALTH_TIMEOUT = 3.0


def build_admin(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="pika-gateway", version="0.1.0", docs_url=None, redoc_url=None)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> Response:
        return Response(exc.to_json(), exc.status_code, exc.headers, "application/json")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        route = f"{request.method} {request.url.path}"
        error = (
            NotFound(f"no such route: {route}")
            if exc.status_code == 404
            else InvalidRequest(f"{route}: {str(exc.detail).lower()}")
        )
        return Response(error.to_json(), exc.status_code, exc.headers, "application/json")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return Response(InvalidRequest("invalid request").to_json(), 400, None, "application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (says nothing about the engines)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Each backend's health; 503 when the primary cannot serve."""
        router = gateway.runtime().router
        names = list(router.backends)
        checks = await asyncio.gather(*(_check(router.backends[name].health()) for name in names))
        report: dict[str, Any] = {}
        for name, health in zip(names, checks, strict=True):
            router.note_health(name, health)
            report[name] = {
                "ready": health.ready,
                "detail": health.detail,
                "served_model": health.served_model,
                "role": "primary" if name == router.primary.name else "configured",
            }
        primary_ready = report[router.primary.name]["ready"]
        return JSONResponse(
            {"status": "ready" if primary_ready else "not_ready", "backends": report},
            status_code=200 if primary_ready else 503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        body = gateway.runtime().metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        """The model names clients may send (OpenAI `list` shape)."""
        runtime = gateway.runtime()
        runtime.keys.verify(request.headers.get("authorization", "").encode() or None)
        names = await runtime.router.public_models() + sorted(gateway.tasks)  # task aliases
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": runtime.started_at,
                    "owned_by": "pika-gateway",
                }
                for name in names
            ],
        }

    return app


async def _check(probe: Any) -> Any:
    from backends.base import Health

    try:
        return await asyncio.wait_for(probe, HEALTH_TIMEOUT)
    except TimeoutError:
        return Health(False, f"no answer within {HEALTH_TIMEOUT:.0f} s")
