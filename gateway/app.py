"""The gateway's ASGI application: hot routes served directly, the rest by FastAPI.

Example::

    uvicorn --factory gateway.app:create_app
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from time import perf_counter

from backends import registry
from backends.base import Backend, Route
from gateway.admin import build_admin
from gateway.asgi import Message, Receive, Scope, Send, request_id_from
from gateway.auth import KeyCheck
from gateway.metrics import Metrics
from gateway.proxy import Proxy
from gateway.routing import Router
from gateway.settings import Settings
from gateway.task_config import TaskConfigError
from gateway.tasks import Task, load_tasks

log = logging.getLogger("gateway")

HOT_ROUTES = {route.path: route for route in Route}


@dataclass(slots=True)
class Runtime:
    """What exists only while the app runs: backends (with their pools) and the router."""

    backends: dict[str, Backend]
    router: Router
    proxy: Proxy
    keys: KeyCheck
    metrics: Metrics
    started_at: int


class Gateway:
    """An ASGI app. Built from one `Settings`; owns its backends from startup to shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.keys = KeyCheck(settings.key_digests())
        self.tasks = enabled_tasks(settings)
        self.admin = build_admin(self)
        self._runtime: Runtime | None = None

    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the gateway has not started")
        return self._runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = HOT_ROUTES.get(scope["path"])
            if route is not None and scope["method"] == "POST":
                await self.runtime().proxy(route, scope, receive, send)
                return
            await self.admin(scope, receive, _with_gateway_headers(scope, send))
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.admin(scope, receive, send)

    async def start(self) -> None:
        backends: dict[str, Backend] = {
            name: registry.create(name, config) for name, config in self.settings.backends.items()
        }
        router = Router(self.settings, backends)
        for name, backend in backends.items():
            health = await backend.health()
            router.note_health(name, health)
            log.info(
                "backend %s (%s): %s", name, "ready" if health.ready else "not ready", health.detail
            )
        proxy = Proxy(
            router, self.keys, self.metrics, self.settings.max_body_bytes, tasks=self.tasks
        )
        self._runtime = Runtime(backends, router, proxy, self.keys, self.metrics, int(time.time()))

    async def stop(self) -> None:
        if self._runtime is not None:
            for backend in self._runtime.backends.values():
                await backend.close()
            self._runtime = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def enabled_tasks(settings: Settings) -> dict[str, Task]:
    """The task aliases to serve, read once at start; a bad task file stops the gateway."""
    if not settings.tasks_enabled:
        return {}
    tasks = load_tasks(settings.tasks_dir)
    clash = sorted(set(tasks) & set(settings.models))
    if clash:
        raise TaskConfigError(f"task aliases also in GATEWAY_MODELS: {', '.join(clash)}")
    return tasks


def _with_gateway_headers(scope: Scope, send: Send) -> Send:
    """Adds the gateway's headers to answers that FastAPI produces."""
    started = perf_counter()
    request_id = b""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            request_id = value
    rid = request_id_from(request_id or None).encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            overhead = f"{(perf_counter() - started) * 1000.0:.3f}".encode()
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", rid),
                (b"x-gateway-backend", b"none"),
                (b"x-gateway-overhead-ms", overhead),
            ]
        await send(message)

    return wrapped


def create_app(settings: Settings | None = None) -> Gateway:
    """The app for `uvicorn --factory`; settings come from the environment when not given."""
    return Gateway(settings if settings is not None else Settings())
