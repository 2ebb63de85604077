"""Everything off the hot path, on FastAPI: models, health, readiness, metrics, the report."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr
from starlette.exceptions import HTTPException

from backends.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    GatewayError,
    InvalidRequest,
    NotFound,
)
from gateway import __version__
from gateway.records.base import StoreError
from gateway.report.command import parse_since
from gateway.report.routes import UnknownRoute, render_routes, summarize_routes
from gateway.runtime import Served

HEALTH_TIMEOUT = 3.0


def build_admin(gateway: Served) -> FastAPI:
    app = FastAPI(title="pika-gateway", version=__version__, docs_url=None, redoc_url=None)

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
        """Each backend's health and each route's; 503 when no route can serve."""
        runtime = gateway.runtime()
        router, names = runtime.router, list(runtime.backends)
        checks = await asyncio.gather(*(_check(runtime.backends[n].health()) for n in names))
        primaries = {route.primary.name for route in router.routes}
        backends: dict[str, Any] = {}
        for name, health in zip(names, checks, strict=True):
            router.note_health(name, health)
            backends[name] = {
                "ready": health.ready,
                "detail": health.detail,
                "served_model": health.served_model,
                "role": "primary" if name in primaries else "configured",
                "conformance": gateway.conformance.detail(name),
            }
        routes = {
            route.label or f"(learning its name from {route.primary.name})": {
                "primary": route.primary.name,
                "ready": any(
                    backend is not None and backends[backend.name]["ready"]
                    for backend in (route.primary, route.fallback)
                ),
            }
            for route in router.routes
        }
        serving = any(route["ready"] for route in routes.values())
        body = {"status": "ready" if serving else "not_ready", "backends": backends}
        body |= {"routes": routes, "rate_limits": gateway.rate_limiter.status()}
        return JSONResponse(body, status_code=200 if serving else 503)

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
        names = runtime.router.public_models() + sorted(runtime.router.tasks)  # task aliases
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

    @app.get("/admin/report")
    async def shadow_report(
        request: Request,
        fmt: str = Query("json", alias="format"),
        since: str | None = None,
        route: str | None = None,
    ) -> Response:
        """The shadow report and cutover verdict of the stored pairs (as `gateway report`)."""
        settings = gateway.settings
        check_admin(settings.admin_token, request.headers.get("authorization"))
        if fmt not in MEDIA_TYPES:
            raise InvalidRequest(f"format must be one of {', '.join(MEDIA_TYPES)}", param="format")
        try:
            start = None if since is None else parse_since(since, time.time())
        except ValueError as exc:
            raise InvalidRequest(str(exc).replace("--since", "since"), param="since") from None
        try:
            pairs = await gateway.recorder.store.read(start)
            probes = await gateway.recorder.store.read_probes()
        except StoreError as exc:
            raise BackendUnavailable("the records store cannot be read", code="records") from exc
        rules, rule = settings.route_rules(), settings.gate_rule()
        try:
            reports = await asyncio.to_thread(
                summarize_routes, pairs, rules, rule, since, probes, route,
                settings.shadowing_routes(),
            )  # fmt: skip
        except UnknownRoute as exc:
            raise NotFound(str(exc), param="route", code="route_not_found") from None
        body = render_routes(reports, fmt)
        return Response(body, media_type=MEDIA_TYPES[fmt], headers={"cache-control": "no-store"})

    @app.post("/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        """Re-reads the configuration (environment and `.env`), as SIGHUP does; in-flight
        requests finish on the configuration they started with. A refused reload answers
        400 (bad setting or task file) or 500 (a backend cannot be built) with the reason,
        and the running configuration keeps serving."""
        check_admin(gateway.settings.admin_token, request.headers.get("authorization"))
        await gateway.reload()  # its GatewayError is rendered by `_gateway_error`
        routes = {route.label: route.primary.name for route in gateway.runtime().router.routes}
        return JSONResponse({"status": "reloaded", "routes": routes})

    return app


MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}


def check_admin(token: SecretStr | None, authorization: str | None) -> None:
    """Admin routes need `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`. Without a configured
    token they do not exist (404), so an unconfigured gateway shows no admin surface."""
    if token is None:
        raise NotFound("no such route: admin routes are off (GATEWAY_ADMIN_TOKEN is unset)")
    presented = b""
    if authorization is not None and authorization[:7].lower() == "bearer ":
        presented = authorization[7:].strip().encode()
    # Digests of equal length, so the comparison's time says nothing about the token.
    expected = hashlib.sha256(token.get_secret_value().encode()).digest()
    if not hmac.compare_digest(expected, hashlib.sha256(presented).digest()):
        raise AuthenticationFailed(
            "an admin token is required: send 'Authorization: Bearer <GATEWAY_ADMIN_TOKEN>'",
            code="invalid_admin_token",
            headers={"www-authenticate": "Bearer"},
        )


async def _check(probe: Any) -> Any:
    from backends.base import Health

    try:
        return await asyncio.wait_for(probe, HEALTH_TIMEOUT)
    except TimeoutError:
        return Health(False, f"no answer within {HEALTH_TIMEOUT:.0f} s")
